namespace GoogLeNet.Engine.Kernels.Reference;

/// <summary>Direct convolution loops in double precision: the oracle for <see cref="Convolution"/>.</summary>
public static class ReferenceConvolution
{
    // input (n, ci, h, w); weight (co, ci, kh, kw); bias (co) or empty; output (n, co, oh, ow).
    public static void Forward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW,
        int stride, int padding, int outH, int outW, Span<float> output)
    {
        for (int n = 0; n < batch; n++)
        for (int co = 0; co < outChannels; co++)
        for (int oy = 0; oy < outH; oy++)
        for (int ox = 0; ox < outW; ox++)
        {
            double sum = bias.IsEmpty ? 0 : bias[co];
            for (int ci = 0; ci < inChannels; ci++)
            for (int ky = 0; ky < kernelH; ky++)
            for (int kx = 0; kx < kernelW; kx++)
            {
                int iy = oy * stride - padding + ky;
                int ix = ox * stride - padding + kx;
                if (iy < 0 || iy >= height || ix < 0 || ix >= width)
                {
                    continue;
                }
                sum += (double)input[((n * inChannels + ci) * height + iy) * width + ix]
                    * weight[((co * inChannels + ci) * kernelH + ky) * kernelW + kx];
            }
            output[((n * outChannels + co) * outH + oy) * outW + ox] = (float)sum;
        }
    }

    /// <summary>Overwrites dWeight, dBias and dInput.</summary>
    public static void Backward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, int kernelH, int kernelW, int stride, int padding,
        int outH, int outW, ReadOnlySpan<float> dOutput, Span<float> dWeight, Span<float> dBias, Span<float> dInput)
    {
        var dW = new double[dWeight.Length];
        var dX = new double[dInput.Length];
        var dB = new double[outChannels];
        for (int n = 0; n < batch; n++)
        for (int co = 0; co < outChannels; co++)
        for (int oy = 0; oy < outH; oy++)
        for (int ox = 0; ox < outW; ox++)
        {
            double g = dOutput[((n * outChannels + co) * outH + oy) * outW + ox];
            dB[co] += g;
            for (int ci = 0; ci < inChannels; ci++)
            for (int ky = 0; ky < kernelH; ky++)
            for (int kx = 0; kx < kernelW; kx++)
            {
                int iy = oy * stride - padding + ky;
                int ix = ox * stride - padding + kx;
                if (iy < 0 || iy >= height || ix < 0 || ix >= width)
                {
                    continue;
                }
                int xi = ((n * inChannels + ci) * height + iy) * width + ix;
                int wi = ((co * inChannels + ci) * kernelH + ky) * kernelW + kx;
                dW[wi] += g * input[xi];
                dX[xi] += g * weight[wi];
            }
        }
        for (int i = 0; i < dW.Length; i++) dWeight[i] = (float)dW[i];
        for (int i = 0; i < dX.Length; i++) dInput[i] = (float)dX[i];
        if (!dBias.IsEmpty)
        {
            for (int i = 0; i < outChannels; i++) dBias[i] = (float)dB[i];
        }
    }
}
