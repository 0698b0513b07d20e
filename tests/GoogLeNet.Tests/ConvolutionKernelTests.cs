using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>im2col + GEMM convolution against the direct double-precision loops, over swept shapes.</summary>
public class ConvolutionKernelTests
{
    // Float32 sums of up to ci*k*k = 147 products of values in [-2, 2]: rounding stays below
    // 1e-5 of the largest output.
    private const double Tolerance = 1e-5;

    public static TheoryData<int, int, int, int, int, int, int> Shapes()
    {
        var data = new TheoryData<int, int, int, int, int, int, int>();
        foreach (var (k, s, p) in new[] { (1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (7, 2, 3), (3, 1, 0), (2, 2, 0) })
        {
            foreach (var (h, w) in new[] { (1, 1), (5, 7), (8, 8), (13, 11) })
            {
                if (h + 2 * p >= k && w + 2 * p >= k)
                {
                    data.Add(3, 5, h, w, k, s, p);
                }
            }
        }
        data.Add(17, 33, 6, 5, 3, 1, 1);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ForwardAndBackwardMatchReference(int ci, int co, int h, int w, int k, int stride, int padding)
    {
        const int batch = 2;
        int oh = WindowMath.OutputSize(h, k, stride, padding, false);
        int ow = WindowMath.OutputSize(w, k, stride, padding, false);
        float[] x = GoldenFill.Fill("conv.x", batch * ci * h * w, 4.0);
        float[] weight = GoldenFill.Fill("conv.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("conv.b", co, 1.0);
        float[] dy = GoldenFill.Fill("conv.dy", batch * co * oh * ow, 4.0);
        var col = new float[ci * k * k * oh * ow];

        var expected = new float[batch * co * oh * ow];
        var actual = new float[expected.Length];
        ReferenceConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, stride, padding, oh, ow, expected);
        Convolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, stride, padding, oh, ow, relu: false, col, actual);
        Compare.Close(expected, actual, Tolerance, "forward");

        var dW = new float[weight.Length];
        var dB = new float[co];
        var dX = new float[x.Length];
        var refDW = new float[weight.Length];
        var refDB = new float[co];
        var refDX = new float[x.Length];
        ReferenceConvolution.Backward(x, batch, ci, h, w, weight, co, k, k, stride, padding, oh, ow, dy, refDW, refDB, refDX);
        Convolution.Backward(x, batch, ci, h, w, weight, co, k, k, stride, padding, oh, ow, dy, col, dW, dB, dX);
        Compare.Close(refDW, dW, Tolerance, "dWeight");
        Compare.Close(refDB, dB, Tolerance, "dBias");
        Compare.Close(refDX, dX, Tolerance, "dInput");
    }
}
