using GoogLeNet.Engine.Kernels;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary>
/// <see cref="Convolution.ForwardMaxPooledPointwise"/> (the pool branch of an Inception block in
/// inference, pooling as the product reads its input) against the max pool and the 1x1
/// convolution run apart: the same maxima and the same sums, so equal bit for bit.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class MaxPooledPointwiseTests
{
    // (batch, ci, co, h, w): torchvision's 7x7, 14x14 and 28x28 planes (runs that span planes
    // and the GEMM's 1024-column blocks), widths that are not multiples of the 8-lane vectors, a
    // single pixel, a single row and a single column (no neighbour above, below or beside),
    // few output rows (B read in place when run apart) and many (B packed); a 4x5 plane, whose
    // last row's first pixel closes a whole vector from the plane's start.
    public static TheoryData<int, int, int, int, int> Shapes => new()
    {
        { 3, 5, 7, 7, 7 },
        { 2, 16, 32, 14, 14 },
        { 2, 9, 20, 28, 28 },
        { 3, 4, 6, 5, 11 },
        { 2, 3, 13, 1, 1 },
        { 2, 4, 6, 1, 9 },
        { 2, 4, 6, 9, 1 },
        { 4, 24, 200, 6, 6 },
        { 3, 4, 6, 4, 5 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void EqualsPoolingThenConvolutionExactly(int batch, int ci, int co, int h, int w)
    {
        float[] x = GoldenFill.Fill("pooledpw.x", batch * ci * h * w, 4.0);
        float[] weight = GoldenFill.Fill("pooledpw.w", co * ci, 2.0);
        float[] bias = GoldenFill.Fill("pooledpw.b", co, 1.0);
        float[] scale = GoldenFill.Fill("pooledpw.s", co, 2.0);
        foreach (bool relu in new[] { true, false })
        {
            foreach (bool scaled in new[] { true, false })
            {
                float[] expected = PoolThenConvolve(x, batch, ci, h, w, weight, bias, co, relu, scaled ? scale : default);
                AssertFusedEquals(expected, x, batch, ci, h, w, weight, bias, co, relu, scaled ? scale : default);
            }
        }
    }

    // Each plane's values above every earlier plane's: a window that read a neighbour across
    // a plane's first or last row (the previous or next image or channel) would take it.
    [Theory]
    [MemberData(nameof(Shapes))]
    public void WindowsStayInsideTheirPlane(int batch, int ci, int co, int h, int w)
    {
        float[] x = GoldenFill.Fill("pooledpw.rising.x", batch * ci * h * w, 1.0);
        for (int i = 0; i < x.Length; i++)
        {
            x[i] += 4f * (i / (h * w));
        }
        float[] weight = GoldenFill.Fill("pooledpw.w", co * ci, 2.0);
        float[] bias = GoldenFill.Fill("pooledpw.b", co, 1.0);
        float[] expected = PoolThenConvolve(x, batch, ci, h, w, weight, bias, co, relu: false, default);
        AssertFusedEquals(expected, x, batch, ci, h, w, weight, bias, co, relu: false, default);
    }

    // The fused maxima are the plain max instruction, which keeps its second operand when the
    // first is a NaN; the product must still come out as the NaN-propagating pool's (a window
    // holding a NaN pools to NaN, as in PyTorch), wherever the NaN sits: the centre, an edge, a
    // corner, the plane's last pixel.
    [Theory]
    [InlineData(0, 0)]
    [InlineData(3, 4)]
    [InlineData(0, 5)]
    [InlineData(6, 6)]
    [InlineData(2, 0)]
    public void NaNInTheInputReachesTheOutputsWhoseWindowsHoldIt(int y, int x0)
    {
        const int batch = 2, ci = 5, co = 7, h = 7, w = 7;
        float[] x = GoldenFill.Fill("pooledpw.nan.x", batch * ci * h * w, 4.0);
        x[(3 * batch + 1) * h * w + y * w + x0] = float.NaN; // channel 3 of image 1
        float[] weight = GoldenFill.Fill("pooledpw.w", co * ci, 2.0);
        float[] bias = GoldenFill.Fill("pooledpw.b", co, 1.0);
        float[] expected = PoolThenConvolve(x, batch, ci, h, w, weight, bias, co, relu: false, default);
        // Every output channel of image 1 mixes channel 3, so the NaN's window (up to 3 x 3
        // pixels) is NaN in all of them and nowhere else.
        int windowPixels = (Math.Min(y + 2, h) - Math.Max(y - 1, 0)) * (Math.Min(x0 + 2, w) - Math.Max(x0 - 1, 0));
        Assert.Equal(co * windowPixels, expected.Count(float.IsNaN));
        AssertFusedEquals(expected, x, batch, ci, h, w, weight, bias, co, relu: false, default);
    }

    [Fact]
    public void ShortInputIsRefused()
    {
        var ex = Assert.Throws<ArgumentException>(() => Convolution.ForwardMaxPooledPointwise(new float[2 * 3 * 4 * 4 - 1], 2, 3, 4, 4,
            new float[5 * 3], default, 5, true, new float[5 * 2 * 4 * 4]));
        Assert.Contains("needs 96 values", ex.Message);
    }

    private static float[] PoolThenConvolve(float[] x, int batch, int ci, int h, int w, float[] weight, float[] bias, int co,
        bool relu, ReadOnlySpan<float> scale)
    {
        var pooled = new float[x.Length];
        Pooling.MaxForward(x, ci * batch, h, w, 3, 1, 1, h, w, pooled);
        var expected = new float[co * batch * h * w];
        Convolution.ForwardChannelMajor(pooled, batch, ci, h, w, weight, bias, co, 1, 1, 1, 0, h, w, relu, default, expected, scale);
        return expected;
    }

    private static void AssertFusedEquals(float[] expected, float[] x, int batch, int ci, int h, int w, float[] weight, float[] bias,
        int co, bool relu, ReadOnlySpan<float> scale)
    {
        float[] scaleCopy = scale.ToArray();
        foreach (int threads in new[] { 1, 2 })
        {
            float[] actual = EngineThreads.With(threads, () =>
            {
                var result = new float[expected.Length];
                result.AsSpan().Fill(-7f); // every output is written
                Convolution.ForwardMaxPooledPointwise(x, batch, ci, h, w, weight, bias, co, relu, result, scaleCopy);
                return result;
            });
            Assert.Equal(expected, actual);
        }
    }
}
