using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using Xunit;

using static GoogLeNet.Tests.Layouts;

namespace GoogLeNet.Tests.Kernels;

/// <summary><see cref="DirectConvolution"/> (forward, and the input gradient it runs) against the reference convolution.</summary>
[Collection(EngineThreadsCollection.Name)]
public class DirectConvolutionTests
{
    // Sums of up to ci x 49 (here at most 490) products of values in [-2, 2], one multiply-add
    // chain each; the reference adds in another order. Observed below 2e-7 of the largest output;
    // 1e-5 is the bound the other convolution kernels meet.
    private const double Tolerance = 1e-5;

    // (ci, co, h, w, k, padding, batch): d2l's 3a 5x5 at 12x12; fewer output channels than one
    // vector; more than one 64-channel panel and not a multiple of 16 (70); rows of 13 and 9 whose
    // last six-pixel tile overlaps the one before it; rows of exactly six; a 7x7 kernel; padding
    // under k / 2 (the output narrower than the input) and over it (wider).
    public static TheoryData<int, int, int, int, int, int, int> Shapes => new()
    {
        { 16, 32, 12, 12, 5, 2, 2 },
        { 3, 5, 12, 12, 5, 2, 2 },
        { 5, 70, 7, 13, 5, 2, 2 },
        { 4, 20, 6, 6, 5, 2, 1 },
        { 2, 17, 9, 8, 7, 3, 2 },
        { 3, 9, 10, 11, 5, 1, 1 },
        { 2, 6, 8, 7, 5, 3, 1 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ForwardAndInputGradientMatchTheReference(int ci, int co, int h, int w, int k, int padding, int batch)
    {
        int oh = h + 2 * padding - k + 1;
        int ow = w + 2 * padding - k + 1;
        Assert.True(DirectConvolution.Applies(k, k, 1, padding, ow));
        float[] x = GoldenFill.Fill("direct.x", batch * ci * h * w, 4.0);
        float[] weight = GoldenFill.Fill("direct.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("direct.b", co, 1.0);
        float[] scale = GoldenFill.Fill("direct.s", co, 2.0);
        float[] dy = GoldenFill.Fill("direct.dy", batch * co * oh * ow, 4.0);
        var expected = new float[batch * co * oh * ow];
        ReferenceConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, 1, padding, oh, ow, expected);
        var refDW = new float[weight.Length];
        var refDX = new float[x.Length];
        ReferenceConvolution.Backward(x, batch, ci, h, w, weight, co, k, k, 1, padding, oh, ow, dy, refDW, new float[co], refDX);

        float[] xc = ToChannelMajor(x, batch, ci, h * w);
        float[] dyc = ToChannelMajor(dy, batch, co, oh * ow);
        float[] Forward(int threads, bool relu, bool scaled)
        {
            var y = new float[expected.Length];
            y.AsSpan().Fill(float.NaN); // every output is written
            EngineThreads.With(threads, () =>
            {
                DirectConvolution.ForwardChannelMajor(xc, batch, ci, h, w, weight, bias, co, k, k, padding, relu, y, scaled ? scale : default);
                return y;
            });
            return ToBatchMajor(y, batch, co, oh * ow);
        }
        // The input gradient: dY convolved with the kernels transposed and turned, padded by k - 1 - p.
        float[] InputGradient(int threads)
        {
            var dx = new float[x.Length];
            dx.AsSpan().Fill(float.NaN);
            EngineThreads.With(threads, () =>
            {
                DirectConvolution.ForwardChannelMajor(dyc, batch, co, oh, ow, weight, default, ci, k, k, k - 1 - padding,
                    relu: false, dx, transposeAndRotate: true);
                return dx;
            });
            return ToBatchMajor(dx, batch, ci, h * w);
        }

        float[] plain = Forward(2, relu: false, scaled: false);
        Compare.Close(expected, plain, Tolerance, "forward");
        Assert.True(plain.AsSpan().SequenceEqual(Forward(1, relu: false, scaled: false)), "forward differs between 1 and 2 threads");

        // relu(conv x scale + bias), twice the bound: the scale rounds the rounded sum again.
        var folded = new float[expected.Length];
        ReferenceConvolution.Forward(x, batch, ci, h, w, weight, new float[co], co, k, k, 1, padding, oh, ow, folded);
        for (int i = 0; i < folded.Length; i++)
        {
            int channel = i / (oh * ow) % co;
            folded[i] = Math.Max(0f, folded[i] * scale[channel] + bias[channel]);
        }
        float[] epilogue = Forward(2, relu: true, scaled: true);
        Compare.Close(folded, epilogue, 2 * Tolerance, "scaled forward");
        Assert.Contains(epilogue, v => v == 0f);

        float[] dX = InputGradient(2);
        Compare.Close(refDX, dX, Tolerance, "dInput");
        Assert.True(dX.AsSpan().SequenceEqual(InputGradient(1)), "dInput differs between 1 and 2 threads");
    }

    // Convolution.BackwardChannelMajor sends d2l's 3a input gradient (rows of 12) here, and the
    // result matches the reference; its forward pass too (32 output channels, one panel).
    [Fact]
    public void ConvolutionTakesItForTheD2lFiveByFiveLayers()
    {
        const int ci = 16, co = 32, size = 12, k = 5, padding = 2, batch = 2;
        Assert.True(DirectConvolution.Chosen(batch, co, size, size, k, k, 1, padding));
        Assert.True(DirectConvolution.ChosenForward(batch, ci, size, size, co, k, k, 1, padding));
        float[] x = GoldenFill.Fill("direct.x", batch * ci * size * size, 4.0);
        float[] weight = GoldenFill.Fill("direct.w", co * ci * k * k, 4.0);
        float[] dy = GoldenFill.Fill("direct.dy", batch * co * size * size, 4.0);
        var refDW = new float[weight.Length];
        var refDX = new float[x.Length];
        ReferenceConvolution.Backward(x, batch, ci, size, size, weight, co, k, k, 1, padding, size, size, dy, refDW, new float[co], refDX);
        var dX = new float[x.Length];
        var dW = new float[weight.Length];
        Convolution.BackwardChannelMajor(ToChannelMajor(x, batch, ci, size * size), batch, ci, size, size, weight, co, k, k, 1, padding,
            size, size, ToChannelMajor(dy, batch, co, size * size), default, dW, default, dX);
        Compare.Close(refDX, ToBatchMajor(dX, batch, ci, size * size), Tolerance, "dInput");
        Compare.Close(refDW, dW, Tolerance, "dWeight");
    }

    [Fact]
    public void ChosenOnlyWhereItMeasuredFaster()
    {
        Assert.True(DirectConvolution.Chosen(128, 32, 12, 12, 5, 5, 1, 2));
        Assert.True(DirectConvolution.Chosen(32, 32, 28, 28, 5, 5, 1, 2)); // 5 tiles for 28 pixels
        Assert.False(DirectConvolution.Chosen(32, 32, 14, 14, 5, 5, 1, 2)); // 3 tiles for 14: 18 computed
        Assert.False(DirectConvolution.Chosen(32, 32, 7, 7, 5, 5, 1, 2));
        Assert.False(DirectConvolution.Chosen(128, 32, 12, 12, 3, 3, 1, 1)); // 3x3: Winograd or GEMM
        Assert.False(DirectConvolution.Chosen(128, 32, 12, 12, 5, 5, 2, 2)); // stride 2
        Assert.False(DirectConvolution.Chosen(128, 32, 5, 5, 5, 5, 1, 2)); // rows of 5
        Assert.False(DirectConvolution.Chosen(128, 32, 12, 12, 5, 5, 1, 0)); // unpadded
        Assert.True(DirectConvolution.ChosenForward(128, 16, 12, 12, 64, 5, 5, 1, 2));
        Assert.False(DirectConvolution.ChosenForward(128, 32, 12, 12, 96, 5, 5, 1, 2)); // two panels: the GEMM
        bool saved = DirectConvolution.Enabled;
        try
        {
            DirectConvolution.Enabled = false;
            Assert.False(DirectConvolution.Chosen(128, 32, 12, 12, 5, 5, 1, 2));
            Assert.True(DirectConvolution.Applies(5, 5, 1, 2, 12)); // a direct call still runs
        }
        finally
        {
            DirectConvolution.Enabled = saved;
        }
    }

    [Fact]
    public void ShapesItCannotTakeAreRefused()
    {
        var ex = Assert.Throws<ArgumentException>(() => DirectConvolution.ForwardChannelMajor(new float[9], 1, 1, 3, 3,
            new float[9], default, 1, 3, 3, 1, false, new float[9]));
        Assert.Contains("5x5", ex.Message);
        Assert.Throws<ArgumentException>(() => DirectConvolution.ForwardChannelMajor(new float[143], 1, 1, 12, 12,
            new float[25], default, 1, 5, 5, 2, false, new float[144]));
    }
}
