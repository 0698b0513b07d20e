using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;
using Xunit;

using static GoogLeNet.Tests.Layouts;

namespace GoogLeNet.Tests;

/// <summary>
/// Channel-major storage (C, N, H, W) against batch-major (N, C, H, W): the convolution kernels
/// against the direct reference, and every layer the network stores channel-major against its
/// batch-major twin on the transposed data.
/// </summary>
public class ChannelMajorTests
{
    // Same bound as ConvolutionKernelTests: float32 sums of up to 147 products of values in
    // [-2, 2] stay below 1e-5 of the largest output, in whatever order they are added.
    private const double ConvolutionTolerance = 1e-5;

    // Layers compared with their batch-major twin: the only difference is the order in which
    // float32 sums (batch statistics, GEMM reductions over the batch) are added, about 1e-6
    // relative for these sizes; 1e-5 leaves room and still catches any wrong element.
    private const double LayerTolerance = 1e-5;


    [Fact]
    public void LayoutRoundTripIsExactAndPutsEachChannelsImagesSideBySide()
    {
        float[] x = Enumerable.Range(0, 2 * 3 * 4).Select(i => (float)i).ToArray();
        float[] channelMajor = ToChannelMajor(x, 2, 3, 4);
        // (n=1, c=0) starts at 12 in (N, C, P) and lands at plane c*N + n = 1.
        Assert.Equal([0f, 1f, 2f, 3f, 12f, 13f, 14f, 15f, 4f], channelMajor.AsSpan(0, 9).ToArray());
        Assert.Equal(x, ToBatchMajor(channelMajor, 2, 3, 4));
    }

    public static TheoryData<int, int, int, int, int, int, int, int> Shapes()
    {
        var data = new TheoryData<int, int, int, int, int, int, int, int>();
        foreach (var (k, s, p) in new[] { (1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (7, 2, 3), (2, 2, 0) })
        {
            foreach (var (h, w) in new[] { (1, 1), (5, 7), (13, 11) })
            {
                if (h + 2 * p >= k && w + 2 * p >= k)
                {
                    // im2col passes of one image, two (the last pass holds one) and all three.
                    foreach (int images in new[] { 1, 2, 3 })
                    {
                        data.Add(3, 5, h, w, k, s, p, images);
                    }
                }
            }
        }
        data.Add(17, 33, 6, 5, 3, 1, 1, 2);
        // Forward reads col implicitly (generated while packing) when the GEMM would pack a stored
        // one: more than 32 output channels with more than 4096 columns, or more than 160
        // channels. Past 4080 columns the GEMM's column blocks (and its threads' strips) start in
        // the middle of an image's row, where the generated rows must pick up.
        data.Add(3, 40, 45, 45, 3, 1, 1, 3);
        data.Add(3, 40, 75, 75, 7, 2, 3, 1);
        data.Add(4, 170, 5, 7, 3, 1, 1, 1);
        // Stride 1 with padding reads a zero-padded copy of the batch: a 5x5 kernel over rows
        // of 45 (three whole-vector copies with an overrun each) and a 3x3 plane narrower
        // than any vector.
        data.Add(3, 40, 45, 45, 5, 1, 2, 1);
        data.Add(5, 161, 3, 3, 3, 1, 1, 1);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ConvolutionMatchesReference(int ci, int co, int h, int w, int k, int stride, int padding, int imagesPerPass)
    {
        const int batch = 3;
        int oh = WindowMath.OutputSize(h, k, stride, padding, false);
        int ow = WindowMath.OutputSize(w, k, stride, padding, false);
        float[] x = GoldenFill.Fill("cm.x", batch * ci * h * w, 4.0);
        float[] weight = GoldenFill.Fill("cm.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("cm.b", co, 1.0);
        float[] dy = GoldenFill.Fill("cm.dy", batch * co * oh * ow, 4.0);
        var col = new float[imagesPerPass * ci * k * k * oh * ow];
        Assert.Equal(imagesPerPass, Convolution.ImagesPerColumnPass(batch, ci, k, k, oh, ow, col.Length));

        var expected = new float[batch * co * oh * ow];
        ReferenceConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, stride, padding, oh, ow, expected);
        var actual = new float[expected.Length];
        Convolution.ForwardChannelMajor(ToChannelMajor(x, batch, ci, h * w), batch, ci, h, w, weight, bias, co, k, k,
            stride, padding, oh, ow, relu: false, col, actual);
        Compare.Close(expected, ToBatchMajor(actual, batch, co, oh * ow), ConvolutionTolerance, "forward");

        // The folded-BatchNorm epilogue, relu(conv(x) x scale + bias), on the same GEMM path; twice
        // the bound because the scale rounds the already rounded sum once more.
        float[] channelScale = GoldenFill.Fill("cm.s", co, 2.0);
        var unbiased = new float[expected.Length];
        ReferenceConvolution.Forward(x, batch, ci, h, w, weight, new float[co], co, k, k, stride, padding, oh, ow, unbiased);
        for (int i = 0; i < unbiased.Length; i++)
        {
            int channel = i / (oh * ow) % co;
            unbiased[i] = Math.Max(0f, unbiased[i] * channelScale[channel] + bias[channel]);
        }
        Convolution.ForwardChannelMajor(ToChannelMajor(x, batch, ci, h * w), batch, ci, h, w, weight, bias, co, k, k,
            stride, padding, oh, ow, relu: true, col, actual, channelScale);
        Compare.Close(unbiased, ToBatchMajor(actual, batch, co, oh * ow), 2 * ConvolutionTolerance, "scaled forward");

        var refDW = new float[weight.Length];
        var refDB = new float[co];
        var refDX = new float[x.Length];
        ReferenceConvolution.Backward(x, batch, ci, h, w, weight, co, k, k, stride, padding, oh, ow, dy, refDW, refDB, refDX);
        var dW = new float[weight.Length];
        var dB = new float[co];
        var dX = new float[x.Length];
        dX.AsSpan().Fill(float.NaN); // overwritten, never read
        Convolution.BackwardChannelMajor(ToChannelMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, k, k, stride, padding,
            oh, ow, ToChannelMajor(dy, batch, co, oh * ow), col, dW, dB, dX);
        Compare.Close(refDW, dW, ConvolutionTolerance, "dWeight");
        Compare.Close(refDB, dB, ConvolutionTolerance, "dBias");
        Compare.Close(refDX, ToBatchMajor(dX, batch, ci, h * w), ConvolutionTolerance, "dInput");
    }

    // A weight gradient whose k (the batch's pixels, 9 x 32 x 32) dwarfs co and ci*kh*kw: the GEMM
    // sums it in k chunks, each generating its own stretch of col's rows from the image.
    [Theory]
    [InlineData(2, 5, 7, 2, 3, 64)]
    [InlineData(3, 7, 5, 1, 2, 32)]
    public void TallWeightGradientMatchesReference(int ci, int co, int k, int stride, int padding, int size)
    {
        const int batch = 9;
        int o = WindowMath.OutputSize(size, k, stride, padding, false);
        Assert.True(Gemm.DepthChunks(co, ci * k * k, batch * o * o) > 1);
        float[] x = GoldenFill.Fill("cm.tall.x", batch * ci * size * size, 4.0);
        float[] weight = GoldenFill.Fill("cm.tall.w", co * ci * k * k, 4.0);
        float[] dy = GoldenFill.Fill("cm.tall.dy", batch * co * o * o, 4.0);
        var refDW = new float[weight.Length];
        ReferenceConvolution.Backward(x, batch, ci, size, size, weight, co, k, k, stride, padding, o, o, dy, refDW, new float[co], new float[x.Length]);
        var dW = new float[weight.Length];
        Convolution.BackwardChannelMajor(ToChannelMajor(x, batch, ci, size * size), batch, ci, size, size, weight, co, k, k, stride, padding,
            o, o, ToChannelMajor(dy, batch, co, o * o), new float[ci * k * k * o * o], dW, new float[co], default);
        // Each dW entry sums 9216 products: the bound grows with sqrt(k) as the GEMM tests' does.
        Compare.Close(refDW, dW, ConvolutionTolerance * Math.Sqrt(batch * o * o / 100.0), "dWeight");
    }

    public static TheoryData<string> LayerNames() =>
        ["conv3x3", "conv1x1", "conv7x7s2", "batchnorm_train", "batchnorm_eval", "lrn", "maxpool", "avgpool", "adaptive",
         "relu", "flatten", "inception_bn_train", "inception_bn_eval", "inception_wide_eval", "inception_paper", "inception_paper_train", "aux_torchvision_train", "transform_input"];

    private static Layer MakeLayer(string name) => name switch
    {
        "conv3x3" => new Conv2d("conv", 4, 6, 3, 1, 1),
        "conv1x1" => new Conv2d("conv", 4, 6, 1),
        "conv7x7s2" => new Conv2d("conv", 4, 6, 7, 2, 3, bias: false),
        "batchnorm_train" or "batchnorm_eval" => new BatchNorm2d("bn", 4, 1e-3f),
        "lrn" => new LocalResponseNorm("lrn", 5, 1e-2f, 0.75f, 1f),
        "maxpool" => new MaxPool2d("pool", 3, 2, 0, ceilMode: true),
        "avgpool" => new AvgPool2d("pool", 3, 2, ceilMode: true),
        "adaptive" => new AdaptiveAvgPool2d("pool", 2, 2),
        "relu" => new ReLU("relu"),
        "flatten" => new Flatten("flatten"),
        "inception_bn_train" or "inception_bn_eval" => new Inception(new InceptionSpec("block", 4, 2, 2, 3, 1, 2, 2), 3, batchNorm: true, ceilPool: true),
        // 168 stacked rows at 126 pixels: each 1x1 alone reads its input in place, the stack would
        // not, so inference runs the branches one by one.
        "inception_wide_eval" => new Inception(new InceptionSpec("block", 4, 64, 64, 8, 40, 8, 4), 3, batchNorm: true, ceilPool: true),
        "inception_paper" or "inception_paper_train" => new Inception(new InceptionSpec("block", 4, 2, 2, 3, 1, 2, 2), 5, batchNorm: false, ceilPool: true),
        "aux_torchvision_train" => new InceptionAux("aux", 4, 5, torchvisionStyle: true, inputSize: 7, dropout: 0f, seed: 1),
        "transform_input" => new TransformInput("transform_input"),
        _ => throw new ArgumentException(name),
    };

    // A 5x5 convolution of one small image reads a stored im2col matrix in place, and backward
    // stores one for the input gradient: a scratch shorter than one image's matrix (16 x 25 rows
    // of 25 pixels) is refused instead of written past. (Rows of 5 pixels are too short for
    // DirectConvolution, which needs no scratch.)
    [Fact]
    public void ShortColumnScratchIsRefused()
    {
        const int ci = 16, co = 8, size = 5, k = 5, padding = 2;
        var x = new float[ci * size * size];
        var w = new float[co * ci * k * k];
        var y = new float[co * size * size];
        var shortCol = new float[ci * k * k * size * size - 1];
        var ex = Assert.Throws<ArgumentException>(() => Convolution.ForwardChannelMajor(x, 1, ci, size, size, w, default, co, k, k, 1, padding,
            size, size, false, shortCol, y));
        Assert.Contains("10000 floats", ex.Message);
        Assert.Throws<ArgumentException>(() => Convolution.BackwardChannelMajor(x, 1, ci, size, size, w, co, k, k, 1, padding, size, size,
            y, shortCol, new float[w.Length], default, new float[x.Length]));
        Assert.Throws<ArgumentException>(() => Convolution.Forward(x, 1, ci, size, size, w, default, co, k, k, 1, padding, size, size,
            false, shortCol, y));
        // One image's matrix is enough.
        Convolution.ForwardChannelMajor(x, 1, ci, size, size, w, default, co, k, k, 1, padding, size, size, false, new float[shortCol.Length + 1], y);
    }

    [Theory]
    [MemberData(nameof(LayerNames))]
    public void LayerMatchesItsBatchMajorTwin(string name)
    {
        const int batch = 3;
        int channels = name == "transform_input" ? 3 : 4;
        int[] shape = [batch, channels, 7, 6];
        int pixels = shape[2] * shape[3];
        bool training = name.EndsWith("_train", StringComparison.Ordinal);
        Layer batchMajor = MakeLayer(name);
        Layer channelMajor = MakeLayer(name);
        channelMajor.SetChannelMajor(true);
        foreach (Layer layer in new[] { batchMajor, channelMajor })
        {
            GoldenFill.FillAll(layer.NamedParameters());
            layer.SetTraining(training);
        }
        Assert.True(channelMajor.ChannelMajor);
        if (channelMajor is Inception block)
        {
            // Both inference paths are covered: the stacked 1x1 GEMM and the branches one by one.
            Assert.Equal(name != "inception_wide_eval", block.StackingPays(batch * shape[2] * shape[3]));
        }
        Assert.All(channelMajor.Children, child => Assert.True(child.ChannelMajor));

        float[] x = GoldenFill.Fill("cm.layer.x", (int)Tensor.ShapeSize(shape), 4.0);
        Tensor expected = batchMajor.Forward(Tensor.FromArray(x, shape));
        Tensor actual = channelMajor.Forward(Tensor.FromArray(ToChannelMajor(x, batch, channels, pixels), shape));
        Assert.Equal(expected.Shape, actual.Shape);
        // Images stay channel-major; Flatten (and the aux head that ends in linear layers) hand back (N, F) rows.
        float[] actualBatchMajor = actual.Rank == 4
            ? ToBatchMajor(actual.Span, batch, actual.Shape[1], actual.Shape[2] * actual.Shape[3])
            : actual.Span.ToArray();
        Compare.Close(expected.Span, actualBatchMajor, LayerTolerance, name + " forward");

        float[] dy = GoldenFill.Fill("cm.layer.dy", expected.Length, 4.0);
        float[] dyChannelMajor = actual.Rank == 4 ? ToChannelMajor(dy, batch, actual.Shape[1], actual.Shape[2] * actual.Shape[3]) : dy;
        Tensor dxExpected = batchMajor.Backward(Tensor.FromArray(dy, expected.Shape))!;
        Tensor dxActual = channelMajor.Backward(Tensor.FromArray(dyChannelMajor, actual.Shape))!;
        Compare.Close(dxExpected.Span, ToBatchMajor(dxActual.Span, batch, channels, pixels), LayerTolerance, name + " dInput");

        var gradients = channelMajor.NamedParameters().Where(p => p.Parameter.IsTrainable).ToDictionary(p => p.Path, p => p.Parameter);
        foreach (var (path, parameter) in batchMajor.NamedParameters())
        {
            if (parameter.IsTrainable)
            {
                Compare.Close(parameter.Grad!.Span, gradients[path].Grad!.Span, LayerTolerance, name + " d" + path);
            }
            else
            {
                // Running statistics follow the same batch statistics.
                Compare.Close(parameter.Value.Span, channelMajor.NamedParameters().Single(p => p.Path == path).Parameter.Value.Span,
                    LayerTolerance, name + " " + path);
            }
        }
    }

    [Fact]
    public void ModelInputGradientComesBackBatchMajor()
    {
        var options = GoogLeNetOptions.For(Preset.D2l) with { InputHeight = 32, InputWidth = 32 };
        var model = new GoogLeNetModel(options) { ComputeInputGradient = true };
        GoldenFill.FillAll(model.Parameters.All);
        int[] shape = [2, 1, 32, 32];
        float[] x = GoldenFill.Fill("cm.model.x", 2 * 32 * 32, 2.0);
        float[] secondImage = x.AsSpan(32 * 32).ToArray();
        Tensor logits = model.Forward(Tensor.FromArray(x, shape)).Logits;
        float[] dLogits = new float[logits.Length];
        dLogits[1 * 10 + 3] = 1f; // only the second image's class 3
        Tensor dInput = model.Backward(Tensor.FromArray(dLogits, logits.Shape))!;

        // The same image alone (a batch of one is stored the same either way) gives the second half.
        var single = new GoogLeNetModel(options) { ComputeInputGradient = true };
        GoldenFill.FillAll(single.Parameters.All);
        Tensor singleLogits = single.Forward(Tensor.FromArray(secondImage, [1, 1, 32, 32])).Logits;
        Compare.Close(logits.Span.Slice(10, 10), singleLogits.Span, LayerTolerance, "logits of image 2");
        float[] dSingle = new float[10];
        dSingle[3] = 1f;
        Tensor dSingleInput = single.Backward(Tensor.FromArray(dSingle, [1, 10]))!;
        Compare.Close(dSingleInput.Span, dInput.Span.Slice(32 * 32), LayerTolerance, "input gradient of image 2");
        Assert.All(dInput.Span.Slice(0, 32 * 32).ToArray(), v => Assert.Equal(0f, v));
    }
}
