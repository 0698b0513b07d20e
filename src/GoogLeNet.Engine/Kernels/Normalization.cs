using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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
                sum += Sum(input.Slice((n * channels + c) * pixels, pixels));
            }
            double m = sum / count;
            double squares = 0;
            for (int n = 0; n < batch; n++)
            {
                squares += SumSquaredDeviations(input.Slice((n * channels + c) * pixels, pixels), (float)m);
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
                ScaleShift(input.Slice(o, pixels), scale, shift, output.Slice(o, pixels));
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
                ScaleShift(input.Slice(o, pixels), scale, shift, output.Slice(o, pixels));
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
            double sumDyCentered = 0;
            float m = mean[c];
            float s = invStd[c];
            for (int n = 0; n < batch; n++)
            {
                int o = (n * channels + c) * pixels;
                (double dy, double dyCentered) = GradientSums(input.Slice(o, pixels), dOutput.Slice(o, pixels), m);
                sumDy += dy;
                sumDyCentered += dyCentered;
            }
            double sumDyXhat = sumDyCentered * s;
            dGamma[c] += (float)sumDyXhat;
            dBeta[c] += (float)sumDy;
            // dx = g (dy - mean(dy) - xhat mean(dy xhat)) with xhat = (x - m) s, as two multiply-adds
            // per value: dx = g dy + (b (x - m) + a).
            float g = gamma[c] * s;
            float meanDy = batchStatistics ? (float)(sumDy / count) : 0f;
            float meanDyXhat = batchStatistics ? (float)(sumDyXhat / count) : 0f;
            float b = -g * s * meanDyXhat;
            float a = -g * meanDy;
            for (int n = 0; n < batch; n++)
            {
                int o = (n * channels + c) * pixels;
                InputGradient(input.Slice(o, pixels), dOutput.Slice(o, pixels), m, g, b, a, dInput.Slice(o, pixels));
            }
        }
    }

    // Sums run in float vectors over blocks of this many values and in double across blocks:
    // vector speed with close to a double sum's accuracy over a channel of a whole batch.
    private const int SumBlock = 1024;

    private static double Sum(ReadOnlySpan<float> x)
    {
        double total = 0;
        for (int start = 0; start < x.Length; start += SumBlock)
        {
            total += TensorPrimitives.Sum(x.Slice(start, Math.Min(SumBlock, x.Length - start)));
        }
        return total;
    }

    // sum((x - m)^2)
    private static double SumSquaredDeviations(ReadOnlySpan<float> x, float m)
    {
        double total = 0;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xs = ref MemoryMarshal.GetReference(x);
            Vector256<float> center = Vector256.Create(m);
            while (x.Length - i >= 32)
            {
                int end = i + Math.Min(SumBlock, (x.Length - i) / 32 * 32);
                Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
                for (; i < end; i += 32)
                {
                    Vector256<float> d0 = Vector256.LoadUnsafe(ref xs, (nuint)i) - center;
                    Vector256<float> d1 = Vector256.LoadUnsafe(ref xs, (nuint)i + 8) - center;
                    Vector256<float> d2 = Vector256.LoadUnsafe(ref xs, (nuint)i + 16) - center;
                    Vector256<float> d3 = Vector256.LoadUnsafe(ref xs, (nuint)i + 24) - center;
                    s0 = Vector256.FusedMultiplyAdd(d0, d0, s0);
                    s1 = Vector256.FusedMultiplyAdd(d1, d1, s1);
                    s2 = Vector256.FusedMultiplyAdd(d2, d2, s2);
                    s3 = Vector256.FusedMultiplyAdd(d3, d3, s3);
                }
                total += Vector256.Sum((s0 + s1) + (s2 + s3));
            }
        }
        for (; i < x.Length; i++)
        {
            double d = x[i] - m;
            total += d * d;
        }
        return total;
    }

    // sum(dy) and sum(dy (x - m))
    private static (double Dy, double DyCentered) GradientSums(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, float m)
    {
        double sumDy = 0;
        double sumDyCentered = 0;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xs = ref MemoryMarshal.GetReference(x);
            ref float dys = ref MemoryMarshal.GetReference(dy);
            Vector256<float> center = Vector256.Create(m);
            while (x.Length - i >= 16)
            {
                int end = i + Math.Min(SumBlock, (x.Length - i) / 16 * 16);
                Vector256<float> g0 = default, g1 = default, c0 = default, c1 = default;
                for (; i < end; i += 16)
                {
                    Vector256<float> dy0 = Vector256.LoadUnsafe(ref dys, (nuint)i);
                    Vector256<float> dy1 = Vector256.LoadUnsafe(ref dys, (nuint)i + 8);
                    g0 += dy0;
                    g1 += dy1;
                    c0 = Vector256.FusedMultiplyAdd(dy0, Vector256.LoadUnsafe(ref xs, (nuint)i) - center, c0);
                    c1 = Vector256.FusedMultiplyAdd(dy1, Vector256.LoadUnsafe(ref xs, (nuint)i + 8) - center, c1);
                }
                sumDy += Vector256.Sum(g0 + g1);
                sumDyCentered += Vector256.Sum(c0 + c1);
            }
        }
        for (; i < x.Length; i++)
        {
            sumDy += dy[i];
            sumDyCentered += dy[i] * (x[i] - m);
        }
        return (sumDy, sumDyCentered);
    }

    // dx = g dy + (b (x - m) + a)
    private static void InputGradient(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, float m, float g, float b, float a, Span<float> dx)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xs = ref MemoryMarshal.GetReference(x);
            ref float dys = ref MemoryMarshal.GetReference(dy);
            ref float dxs = ref MemoryMarshal.GetReference(dx);
            Vector256<float> vg = Vector256.Create(g);
            Vector256<float> vb = Vector256.Create(b);
            Vector256<float> va = Vector256.Create(a);
            Vector256<float> center = Vector256.Create(m);
            for (; i + 8 <= x.Length; i += 8)
            {
                Vector256<float> v = Vector256.FusedMultiplyAdd(vb, Vector256.LoadUnsafe(ref xs, (nuint)i) - center, va);
                Vector256.FusedMultiplyAdd(vg, Vector256.LoadUnsafe(ref dys, (nuint)i), v).StoreUnsafe(ref dxs, (nuint)i);
            }
        }
        for (; i < x.Length; i++)
        {
            dx[i] = MathF.FusedMultiplyAdd(g, dy[i], MathF.FusedMultiplyAdd(b, x[i] - m, a));
        }
    }

    // y = x scale + shift
    private static void ScaleShift(ReadOnlySpan<float> x, float scale, float shift, Span<float> y)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xs = ref MemoryMarshal.GetReference(x);
            ref float ys = ref MemoryMarshal.GetReference(y);
            Vector256<float> vs = Vector256.Create(scale);
            Vector256<float> vt = Vector256.Create(shift);
            for (; i + 8 <= x.Length; i += 8)
            {
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xs, (nuint)i), vs, vt).StoreUnsafe(ref ys, (nuint)i);
            }
        }
        for (; i < x.Length; i++)
        {
            y[i] = MathF.FusedMultiplyAdd(x[i], scale, shift);
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
