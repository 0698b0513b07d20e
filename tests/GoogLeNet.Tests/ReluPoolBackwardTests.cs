using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>
/// The layer above a ReLU applying its gradient (a max pool in its scatter, MaxPool2d.BackwardThroughRelu;
/// an Inception block while it sums its branches, Elementwise.AddReluBackward) changes no bit of any gradient.
/// </summary>
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

    // A sum of two gradients through a ReLU: zeros, negative and positive outputs, a NaN, and a
    // tail past the vectors; against the addition followed by ReluBackward.
    [Fact]
    public void SumThroughReluEqualsAdditionThenReluBackward()
    {
        const int n = 37;
        float[] y = GoldenFill.Fill("relusum.y", n, 2.0);
        y[0] = 0f;
        y[3] = -0f;
        y[9] = float.NaN;
        y[n - 1] = 1f;
        float[] a = GoldenFill.Fill("relusum.a", n, 1.0);
        float[] b = GoldenFill.Fill("relusum.b", n, 1.0);
        b[n - 1] = float.NaN; // passes where the output is positive
        var sum = new float[n];
        System.Numerics.Tensors.TensorPrimitives.Add(a, b, sum);
        var expected = new float[n];
        Elementwise.ReluBackward(y, sum, expected);
        float[] actual = (float[])a.Clone();
        Elementwise.AddReluBackward(y, b, actual);
        Assert.Contains(y, v => v > 0f);
        Assert.Contains(y, v => v < 0f);
        Assert.True(float.IsNaN(actual[n - 1]));
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
        Assert.Throws<ArgumentException>(() => Elementwise.AddReluBackward(y, b.AsSpan(1), new float[n]));
    }

    // Whole training steps of the three presets, fold on and off: every parameter gradient bit for
    // bit. The folds: conv1 -> maxpool1, conv3 -> maxpool2 where no LRN sits between them, 3b ->
    // maxpool3, 4e -> maxpool4, and each Inception block over another; with the auxiliary
    // classifiers' gradients, none below 4b and 4e (the classifiers add to 4a's and 4d's).
    [Theory]
    [InlineData(Preset.Torchvision, false)]
    [InlineData(Preset.Torchvision, true)]
    [InlineData(Preset.D2l, false)]
    [InlineData(Preset.Paper, false)]
    [InlineData(Preset.Paper, true)]
    public void TrainingGradientsAreUnchanged(Preset preset, bool aux)
    {
        // The paper's auxiliary classifiers pool 5x5/3 from 4a's output: 79x79 inputs or more.
        (int h, int w) = preset == Preset.Paper && aux ? (80, 79) : (61, 58);
        var options = GoogLeNetOptions.For(preset) with { InputHeight = h, InputWidth = w, Classes = 5, AuxLogits = aux, AuxDropout = 0f };
        int channels = options.InputChannels;
        float[] x = GoldenFill.Fill("relupool.model.x", 2 * channels * h * w, 2.0);
        float[] dLogits = GoldenFill.Fill("relupool.model.dy", 2 * 5, 1.0);
        float[] dAux1 = GoldenFill.Fill("relupool.model.daux1", 2 * 5, 1.0);
        float[] dAux2 = GoldenFill.Fill("relupool.model.daux2", 2 * 5, 1.0);

        float[][] Gradients(bool fold)
        {
            bool saved = GoogLeNetModel.FoldReluBackward;
            try
            {
                GoogLeNetModel.FoldReluBackward = fold;
                var model = new GoogLeNetModel(options);
                GoldenFill.FillAll(model.Parameters.All);
                model.SetTraining(true);
                model.Parameters.ZeroGrad();
                GoogLeNetOutput output = model.Forward(Tensor.FromArray(x, [2, channels, h, w]));
                Assert.Equal(aux, output.Aux1 is not null && output.Aux2 is not null);
                model.Backward(Tensor.FromArray(dLogits, output.Logits.Shape),
                    aux ? Tensor.FromArray(dAux1, output.Logits.Shape) : null, aux ? Tensor.FromArray(dAux2, output.Logits.Shape) : null);
                return model.Parameters.All.Where(p => p.Parameter.Grad is not null).Select(p => p.Parameter.Grad!.Span.ToArray()).ToArray();
            }
            finally
            {
                GoogLeNetModel.FoldReluBackward = saved;
            }
        }

        float[][] folded = Gradients(fold: true);
        float[][] apart = Gradients(fold: false);
        AssertSameGradients(new GoogLeNetModel(options), apart, folded);
        Assert.Contains(folded[0], v => v != 0f); // conv1's weight gradient: the fold's own layer
    }

    // Training runs a stem without BatchNorm and its pool as one (GoogLeNetModel.FuseStemPool):
    // the logits and every parameter gradient bit for bit as with the two apart (the stem's bias
    // within rounding where Backward goes through the pool in one pass), whichever way Backward
    // goes back through them: in one pass to the stem's parameter gradients; through the pool's
    // scatter with the ReLU folded in where the input gradient is wanted; or (the fold switched
    // off after the forward pass) through the stem block's own backward, which computes its
    // output again. The profile shows that the fusion ran: maxpool1 has no forward time of its own.
    [Theory]
    [InlineData(Preset.D2l, true, false)]
    [InlineData(Preset.D2l, true, true)]
    [InlineData(Preset.D2l, false, false)]
    [InlineData(Preset.Paper, true, false)]
    [InlineData(Preset.Paper, true, true)]
    public void FusedStemPoolKeepsEveryGradient(Preset preset, bool foldBackward, bool inputGradient)
    {
        const int h = 61, w = 58;
        var options = GoogLeNetOptions.For(preset) with { InputHeight = h, InputWidth = w, Classes = 5, AuxLogits = false };
        int channels = options.InputChannels;
        float[] x = GoldenFill.Fill("stempool.train.x", 2 * channels * h * w, 2.0);
        float[] dLogits = GoldenFill.Fill("stempool.train.dy", 2 * 5, 1.0);

        (float[] Logits, float[][] Gradients, float[]? InputGradient, double PoolForward) Step(bool fuse)
        {
            bool savedFold = GoogLeNetModel.FoldReluBackward, savedFuse = GoogLeNetModel.FuseStemPool;
            try
            {
                GoogLeNetModel.FoldReluBackward = true;
                GoogLeNetModel.FuseStemPool = fuse;
                var model = new GoogLeNetModel(options) { Profile = new ModuleProfile(), ComputeInputGradient = inputGradient };
                GoldenFill.FillAll(model.Parameters.All);
                model.SetTraining(true);
                model.Parameters.ZeroGrad();
                GoogLeNetOutput output = model.Forward(Tensor.FromArray(x, [2, channels, h, w]));
                GoogLeNetModel.FoldReluBackward = foldBackward;
                Tensor? dInput = model.Backward(Tensor.FromArray(dLogits, output.Logits.Shape));
                Assert.Equal(inputGradient, dInput is not null);
                return (output.Logits.Span.ToArray(),
                    model.Parameters.All.Where(p => p.Parameter.Grad is not null).Select(p => p.Parameter.Grad!.Span.ToArray()).ToArray(),
                    dInput?.Span.ToArray(),
                    model.Profile.Rows.Where(r => r.Module == "maxpool1").Sum(r => r.ForwardMilliseconds));
            }
            finally
            {
                GoogLeNetModel.FoldReluBackward = savedFold;
                GoogLeNetModel.FuseStemPool = savedFuse;
            }
        }

        var fused = Step(fuse: true);
        var apart = Step(fuse: false);
        Assert.Equal(0.0, fused.PoolForward);
        Assert.True(apart.PoolForward > 0.0);
        Assert.Equal(apart.Logits.Select(BitConverter.SingleToInt32Bits), fused.Logits.Select(BitConverter.SingleToInt32Bits));
        if (foldBackward && !inputGradient)
        {
            AssertSameGradients(new GoogLeNetModel(options), apart.Gradients, fused.Gradients);
        }
        else
        {
            // The pool's own scatter ran: nothing differs at all.
            Assert.Equal(apart.Gradients.Length, fused.Gradients.Length);
            for (int i = 0; i < apart.Gradients.Length; i++)
            {
                Assert.Equal(apart.Gradients[i].Select(BitConverter.SingleToInt32Bits), fused.Gradients[i].Select(BitConverter.SingleToInt32Bits));
            }
        }
        Assert.Equal(apart.InputGradient?.Select(BitConverter.SingleToInt32Bits), fused.InputGradient?.Select(BitConverter.SingleToInt32Bits));
        Assert.Contains(fused.Gradients[0], v => v != 0f); // conv1's weight gradient
    }

    // Every gradient bit for bit but the stem's bias where training ran the stem and its pool as
    // one (no BatchNorm): that one sums the same values in another order (StemConvolution.BackwardWeightsThroughPool).
    private static void AssertSameGradients(GoogLeNetModel model, float[][] expected, float[][] actual)
    {
        string[] paths = model.Parameters.All.Where(p => p.Parameter.Grad is not null).Select(p => p.Path).ToArray();
        Assert.Equal(paths.Length, expected.Length);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (paths[i] == "conv1.conv.bias")
            {
                Compare.Close(expected[i], actual[i], StemBiasTolerance, paths[i]);
                continue;
            }
            Assert.True(expected[i].Select(BitConverter.SingleToInt32Bits).SequenceEqual(actual[i].Select(BitConverter.SingleToInt32Bits)),
                $"{paths[i]} differs");
        }
    }

    // The stem's bias gradient: sums of a few thousand gradients in two orders, rounding near 1e-7
    // of the largest; the scale of Compare.Close is at least 1.
    private const double StemBiasTolerance = 1e-6;
}
