using GoogLeNet.Engine.Kernels;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary>
/// Implicit im2col from the zero-padded copy of the batch (<see cref="Convolution.PaddedColumns"/>)
/// against the clamping generator it replaces: the same col values feed the same GEMM, so forward
/// outputs and weight gradients must be identical bit for bit.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class PaddedColumnsTests
{
    // (ci, co, h, w, k, padding, batch): 5x5 over rows of 45 (several vectors and an overrun each),
    // a 3x3 on 3x3 planes, rows of 12 as in d2l's 3b; all past the GEMM's in-place limit.
    [Theory]
    [InlineData(3, 40, 45, 45, 5, 2, 3)]
    [InlineData(5, 161, 3, 3, 3, 1, 4)]
    [InlineData(8, 48, 12, 12, 5, 2, 30)]
    public void PaddedCopyGivesTheClampedColumnsResults(int ci, int co, int h, int w, int k, int padding, int batch)
    {
        float[] x = GoldenFill.Fill("padded.x", ci * batch * h * w, 4.0);
        float[] weight = GoldenFill.Fill("padded.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("padded.b", co, 1.0);
        float[] dy = GoldenFill.Fill("padded.dy", co * batch * h * w, 2.0);

        (float[] Y, float[] DW) Run(bool padded)
        {
            bool saved = Convolution.PaddedColumns;
            try
            {
                Convolution.PaddedColumns = padded;
                var y = new float[co * batch * h * w];
                Convolution.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, k, k, 1, padding, h, w, relu: false,
                    new float[ci * k * k * h * w * batch], y);
                var dw = new float[weight.Length];
                Convolution.BackwardChannelMajor(x, batch, ci, h, w, weight, co, k, k, 1, padding, h, w, dy,
                    new float[ci * k * k * h * w * batch], dw, default, default);
                return (y, dw);
            }
            finally
            {
                Convolution.PaddedColumns = saved;
            }
        }

        var padded = Run(padded: true);
        var clamped = Run(padded: false);
        Assert.Equal(clamped.Y, padded.Y);
        Assert.Equal(clamped.DW, padded.DW);
        Assert.Contains(padded.DW, v => v != 0f);
    }
}
