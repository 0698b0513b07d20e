using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>A max pool applying the gradient of the ReLU before it (MaxPool2d.BackwardThroughRelu) changes no bit of any gradient.</summary>
[Collection(EngineThreadsCollection.Name)]
public class ReluPoolBackwardTests
{
    // Planes of 7x6 pooled 3x3/2 (overlapping windows share inputs) with ties, zeros, negative
    // maxima and a NaN: the folded scatter equals the scatter followed by the ReLU's backward.
    [Fact]
    public void KernelEqualsScatterThenReluBackward()
    {
        const int planes = 3, h = 7, w = 6, k = 3, stride = 2, oh = 3, ow = 3;
        float[] x = GoldenFill.Fill("relupool.x", planes * h * w, 2.0);
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = MathF.Round(x[i] * 2f) / 2f; // ties and exact zeros
        }
        x[5] = float.NaN;
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = float.IsNaN(x[i]) ? x[i] : MathF.Max(x[i], 0f); // a ReLU's output
        }
        // The second plane's first three rows negative: windows whose maximum is below zero.
        x.AsSpan(h * w, 3 * w).Fill(-1f);
        x[h * w + 1] = -0.5f;
        var pooled = new float[planes * oh * ow];
        var argmax = new int[pooled.Length];
        Pooling.MaxForwardIndexed(x, planes, h, w, k, stride, 0, oh, ow, pooled, argmax);
        float[] dy = GoldenFill.Fill("relupool.dy", pooled.Length, 1.0);

        var scattered = new float[x.Length];
        Pooling.MaxBackwardIndexed(argmax, dy, planes, h * w, oh * ow, scattered);
        var expected = new float[x.Length];
        Elementwise.ReluBackward(x, scattered, expected);
        var actual = new float[x.Length];
        actual.AsSpan().Fill(float.NaN);
        Pooling.MaxBackwardIndexed(argmax, dy, planes, h * w, oh * ow, actual, reluPooled: pooled);

        Assert.Contains(pooled, v => v <= 0f);
        Assert.Contains(pooled, float.IsNaN);
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
    }

    // Whole training steps of the three presets (conv1 -> maxpool1, and conv3 -> maxpool2 where
    // no LRN sits between them), fold on and off: every parameter gradient bit for bit.
    [Theory]
    [InlineData(Preset.Torchvision)]
    [InlineData(Preset.D2l)]
    [InlineData(Preset.Paper)]
    public void TrainingGradientsAreUnchanged(Preset preset)
    {
        var options = GoogLeNetOptions.For(preset) with { InputHeight = 61, InputWidth = 58, Classes = 5 };
        int channels = options.InputChannels;
        float[] x = GoldenFill.Fill("relupool.model.x", 2 * channels * 61 * 58, 2.0);
        float[] dLogits = GoldenFill.Fill("relupool.model.dy", 2 * 5, 1.0);

        float[][] Gradients(bool fold)
        {
            bool saved = GoogLeNetModel.FoldReluIntoPoolBackward;
            try
            {
                GoogLeNetModel.FoldReluIntoPoolBackward = fold;
                var model = new GoogLeNetModel(options);
                GoldenFill.FillAll(model.Parameters.All);
                model.SetTraining(true);
                model.Parameters.ZeroGrad();
                Tensor logits = model.Forward(Tensor.FromArray(x, [2, channels, 61, 58])).Logits;
                model.Backward(Tensor.FromArray(dLogits, logits.Shape));
                return model.Parameters.All.Where(p => p.Parameter.Grad is not null).Select(p => p.Parameter.Grad!.Span.ToArray()).ToArray();
            }
            finally
            {
                GoogLeNetModel.FoldReluIntoPoolBackward = saved;
            }
        }

        float[][] folded = Gradients(fold: true);
        float[][] apart = Gradients(fold: false);
        Assert.Equal(apart.Length, folded.Length);
        for (int i = 0; i < apart.Length; i++)
        {
            Assert.Equal(apart[i], folded[i]);
        }
        Assert.Contains(folded[0], v => v != 0f); // conv1's weight gradient: the fold's own layer
    }
}
