using System.Numerics.Tensors;

namespace GoogLeNet.Engine.Kernels;

/// <summary>BatchNorm2d and cross-channel LocalResponseNorm over NCHW.</summary>
public static class Normalization
{
    // input (n, c, hw); mean and invStd (c) are written (batch statistics); output (n, c, hw).
    // Batch variance is the biased one (what normalises); the running update uses the unbiased one.
    // Only channels [channelStart, channelEnd) are touched, so threads can split the channels.
    public static void BatchNormTrainForward(
        ReadOnlySpan<float> input, int batch, int channels, int pixels,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, float epsilon, float momentum,
        Span<float> runningMean, Span<float> runningVar, Span<float> mean, Span<float> invStd, Span<float> output,
        int channelStart, int channelEnd)
    {
        long count = (long)batch * pixels;
        for (int c = channelStart; c < channelEnd; c++)
        {
            double sum = 0;
            for (int n = 0; n < batch; n++)
            {
                sum += TensorPrimitives.Sum(input.Slice((n * channels + c) * pixels, pixels));
            }
            double m = sum / count;
            double squares = 0;
            for (int n = 0; n < batch; n++)
            {
                ReadOnlySpan<float> x = input.Slice((n * channels + c) * pixels, pixels);
                for (int i = 0; i < x.Length; i++)
                {
                    double d = x[i] - m;
                    squares += d * d;
                }
            }
            double variance = squares / count;
            mean[c] = (float)m;
            invStd[c] = (float)(1.0 / Math.Sqrt(variance + epsilon));
            double unbiased = count > 1 ? squares / (count - 1) : variance;
            runningMean[c] = (float)((1 - momentum) * runningMean[c] + momentum * m);
            runningVar[c] = (float)((1 - momentum) * runningVar[c] + momentum * unbiased);
            float scale = gamma[c] * invStd[c];
            float shift = beta[c] - mean[c] * scale;
            for (int n = 0; n < batch; n++)
            {
                int o = (n * channels + c) * pixels;
                TensorPrimitives.Multiply(input.Slice(o, pixels), scale, output.Slice(o, pixels));
                TensorPrimitives.Add(output.Slice(o, pixels), shift, output.Slice(o, pixels));
            }
        }
    }

    // y = (x - mean) * invStd * gamma + beta, per channel.
    public static void BatchNormApply(
        ReadOnlySpan<float> input, int batch, int channels, int pixels,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd,
        Span<float> output)
    {
        for (int n = 0; n < batch; n++)
        {
            for (int c = 0; c < channels; c++)
            {
                float scale = gamma[c] * invStd[c];
                float shift = beta[c] - mean[c] * scale;
                int o = (n * channels + c) * pixels;
                TensorPrimitives.Multiply(input.Slice(o, pixels), scale, output.Slice(o, pixels));
                TensorPrimitives.Add(output.Slice(o, pixels), shift, output.Slice(o, pixels));
            }
        }
    }

    /// <summary>
    /// Backward of batch normalisation. With batch statistics the mean and variance depend on the
    /// input; in inference mode (running statistics) they are constants. Accumulates dGamma and
    /// dBeta; overwrites dInput.
    /// </summary>
    public static void BatchNormBackward(
        ReadOnlySpan<float> input, ReadOnlySpan<float> dOutput, int batch, int channels, int pixels,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> mean, ReadOnlySpan<float> invStd, bool batchStatistics,
        Span<float> dGamma, Span<float> dBeta, Span<float> dInput, int channelStart, int channelEnd)
    {
        long count = (long)batch * pixels;
        for (int c = channelStart; c < channelEnd; c++)
        {
            double sumDy = 0;
            double sumDyXhat = 0;
            float m = mean[c];
            float s = invStd[c];
            for (int n = 0; n < batch; n++)
            {
                int o = (n * channels + c) * pixels;
                ReadOnlySpan<float> x = input.Slice(o, pixels);
                ReadOnlySpan<float> dy = dOutput.Slice(o, pixels);
                for (int i = 0; i < pixels; i++)
                {
                    sumDy += dy[i];
                    sumDyXhat += dy[i] * ((x[i] - m) * s);
                }
            }
            dGamma[c] += (float)sumDyXhat;
            dBeta[c] += (float)sumDy;
            float g = gamma[c] * s;
            float meanDy = batchStatistics ? (float)(sumDy / count) : 0f;
            float meanDyXhat = batchStatistics ? (float)(sumDyXhat / count) : 0f;
            for (int n = 0; n < batch; n++)
            {
                int o = (n * channels + c) * pixels;
                ReadOnlySpan<float> x = input.Slice(o, pixels);
                ReadOnlySpan<float> dy = dOutput.Slice(o, pixels);
                Span<float> dx = dInput.Slice(o, pixels);
                for (int i = 0; i < pixels; i++)
                {
                    float xhat = (x[i] - m) * s;
                    dx[i] = g * (dy[i] - meanDy - xhat * meanDyXhat);
                }
            }
        }
    }

    // Channel window of LRN around c: [c - size/2, c + (size-1)/2], as PyTorch pads it.
    private static (int Start, int End) LrnWindow(int c, int size, int channels) =>
        (Math.Max(c - size / 2, 0), Math.Min(c + (size - 1) / 2, channels - 1));

    // input (n, c, hw); scale (n, c, hw) keeps k + alpha/size * sum(x^2) for backward; output (n, c, hw).
    // y = x * scale^-beta
    public static void LrnForward(
        ReadOnlySpan<float> input, int batch, int channels, int pixels,
        int size, float alpha, float beta, float k, Span<float> scale, Span<float> output)
    {
        float alphaOverSize = alpha / size;
        for (int n = 0; n < batch; n++)
        {
            int image = n * channels * pixels;
            for (int c = 0; c < channels; c++)
            {
                var (c0, c1) = LrnWindow(c, size, channels);
                Span<float> s = scale.Slice(image + c * pixels, pixels);
                s.Fill(0f);
                for (int j = c0; j <= c1; j++)
                {
                    ReadOnlySpan<float> xj = input.Slice(image + j * pixels, pixels);
                    TensorPrimitives.MultiplyAdd(xj, xj, s, s);
                }
                TensorPrimitives.Multiply(s, alphaOverSize, s);
                TensorPrimitives.Add(s, k, s);
                ReadOnlySpan<float> x = input.Slice(image + c * pixels, pixels);
                Span<float> y = output.Slice(image + c * pixels, pixels);
                for (int i = 0; i < pixels; i++)
                {
                    y[i] = x[i] * MathF.Pow(s[i], -beta);
                }
            }
        }
    }

    /// <summary>
    /// dx_c = dy_c * scale_c^-beta - 2 alpha beta / size * x_c * sum over windows containing c of
    /// dy_j * y_j / scale_j. Overwrites dInput.
    /// </summary>
    public static void LrnBackward(
        ReadOnlySpan<float> input, ReadOnlySpan<float> output, ReadOnlySpan<float> scale, ReadOnlySpan<float> dOutput,
        int batch, int channels, int pixels, int size, float alpha, float beta, Span<float> dInput)
    {
        float factor = 2f * alpha * beta / size;
        for (int n = 0; n < batch; n++)
        {
            int image = n * channels * pixels;
            for (int c = 0; c < channels; c++)
            {
                // j's window contains c when j - size/2 <= c <= j + (size-1)/2.
                int j0 = Math.Max(c - (size - 1) / 2, 0);
                int j1 = Math.Min(c + size / 2, channels - 1);
                int o = image + c * pixels;
                Span<float> dx = dInput.Slice(o, pixels);
                for (int i = 0; i < pixels; i++)
                {
                    float acc = 0f;
                    for (int j = j0; j <= j1; j++)
                    {
                        int q = image + j * pixels + i;
                        acc += dOutput[q] * output[q] / scale[q];
                    }
                    dx[i] = dOutput[o + i] * MathF.Pow(scale[o + i], -beta) - factor * input[o + i] * acc;
                }
            }
        }
    }
}
