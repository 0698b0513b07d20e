using System.Numerics;

namespace GoogLeNet.Data;

/// <summary>
/// Pillow's bilinear resampling (ImagingResample, filter support 1) in floating point: separable,
/// horizontal pass then vertical, each output pixel a normalised triangle-weighted sum whose
/// support widens with the downscale factor, so downscaling is antialiased exactly as PIL (and so
/// torchvision on PIL images) does it. Pillow rounds the intermediate and the result to 8 bits;
/// this keeps floats, so it differs from Pillow by at most one 8-bit step.
/// Keeps its coefficient and intermediate buffers between calls; one thread at a time.
/// </summary>
public sealed class BilinearResampler
{
    private readonly Coefficients _horizontalCoefficients = new();
    private readonly Coefficients _verticalCoefficients = new();
    private readonly ImageBuffer<float> _horizontal = new();

    /// <summary>
    /// Resamples the box (top, left, boxHeight, boxWidth) of <paramref name="source"/> to
    /// <paramref name="height"/> x <paramref name="width"/>; only pixels inside the box are read,
    /// as when torchvision crops and then resizes.
    /// </summary>
    public void Resample(ImageBuffer<float> source, int top, int left, int boxHeight, int boxWidth, ImageBuffer<float> destination, int height, int width)
    {
        if (top < 0 || left < 0 || boxHeight <= 0 || boxWidth <= 0 || top + boxHeight > source.Height || left + boxWidth > source.Width)
        {
            throw new ArgumentOutOfRangeException(nameof(top), $"Box ({top}, {left}, {boxHeight}x{boxWidth}) is not inside the {source.Height}x{source.Width} image.");
        }

        int channels = source.Channels;
        Coefficients xk = _horizontalCoefficients;
        Coefficients yk = _verticalCoefficients;
        xk.Compute(boxWidth, width);
        yk.Compute(boxHeight, height);

        _horizontal.Reshape(channels, boxHeight, width);
        for (int c = 0; c < channels; c++)
        {
            ReadOnlySpan<float> input = source.Plane(c);
            Span<float> output = _horizontal.Plane(c);
            for (int y = 0; y < boxHeight; y++)
            {
                ReadOnlySpan<float> row = input.Slice((top + y) * source.Width + left, boxWidth);
                for (int x = 0; x < width; x++)
                {
                    int start = xk.Start[x];
                    int count = xk.Count[x];
                    ReadOnlySpan<float> k = xk.Weights.AsSpan(x * xk.Taps, count);
                    float sum = 0;
                    for (int t = 0; t < count; t++)
                    {
                        sum += row[start + t] * k[t];
                    }

                    output[y * width + x] = sum;
                }
            }
        }

        destination.Reshape(channels, height, width);
        for (int c = 0; c < channels; c++)
        {
            ReadOnlySpan<float> input = _horizontal.Plane(c);
            Span<float> output = destination.Plane(c);
            for (int y = 0; y < height; y++)
            {
                int start = yk.Start[y];
                int count = yk.Count[y];
                ReadOnlySpan<float> k = yk.Weights.AsSpan(y * yk.Taps, count);
                Span<float> outRow = output.Slice(y * width, width);
                outRow.Clear();
                for (int t = 0; t < count; t++)
                {
                    MultiplyAdd(input.Slice((start + t) * width, width), k[t], outRow);
                }
            }
        }
    }

    // Separate multiply and add (the JIT does not fuse them), so vector and scalar lanes round alike.
    private static void MultiplyAdd(ReadOnlySpan<float> x, float w, Span<float> sum)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var weight = new Vector<float>(w);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                (new Vector<float>(sum[i..]) + new Vector<float>(x[i..]) * weight).CopyTo(sum[i..]);
            }
        }

        for (; i < x.Length; i++)
        {
            sum[i] += x[i] * w;
        }
    }

    /// <summary>Per output pixel: the first input pixel, how many follow, and their weights (Pillow's precompute_coeffs).</summary>
    private sealed class Coefficients
    {
        public int[] Start = [];
        public int[] Count = [];
        public float[] Weights = [];
        public int Taps;

        public void Compute(int inSize, int outSize)
        {
            double scale = (double)inSize / outSize;
            double filterScale = Math.Max(scale, 1.0);
            double support = filterScale;
            Taps = (int)Math.Ceiling(support) * 2 + 1;
            if (Start.Length < outSize)
            {
                Start = new int[outSize];
                Count = new int[outSize];
            }

            if (Weights.Length < outSize * Taps)
            {
                Weights = new float[outSize * Taps];
            }

            double inverse = 1.0 / filterScale;
            for (int o = 0; o < outSize; o++)
            {
                double center = (o + 0.5) * scale;
                int min = Math.Max((int)(center - support + 0.5), 0);
                int count = Math.Min((int)(center + support + 0.5), inSize) - min;
                double total = 0;
                for (int t = 0; t < count; t++)
                {
                    total += Triangle((t + min - center + 0.5) * inverse);
                }

                Span<float> weights = Weights.AsSpan(o * Taps, Taps);
                weights.Clear();
                for (int t = 0; t < count; t++)
                {
                    weights[t] = total != 0 ? (float)(Triangle((t + min - center + 0.5) * inverse) / total) : 0f;
                }

                Start[o] = min;
                Count[o] = count;
            }
        }

        private static double Triangle(double x)
        {
            x = Math.Abs(x);
            return x < 1.0 ? 1.0 - x : 0.0;
        }
    }
}
