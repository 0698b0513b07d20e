using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace GoogLeNet.Engine.Kernels;

/// <summary>ReLU, dropout and channel concatenation.</summary>
public static class Elementwise
{
    public static void ReluForward(ReadOnlySpan<float> input, Span<float> output) => TensorPrimitives.Max(input, 0f, output);

    /// <summary>dx = dy where y > 0 (the subgradient at 0 is 0, as in PyTorch). Overwrites dInput.</summary>
    public static void ReluBackward(ReadOnlySpan<float> output, ReadOnlySpan<float> dOutput, Span<float> dInput)
    {
        if (dOutput.Length < output.Length || dInput.Length < output.Length)
        {
            throw new ArgumentException($"ReLU backward needs {output.Length} gradient values, got {dOutput.Length} and {dInput.Length}.");
        }
        WherePositive(output, dOutput, default, dInput);
    }

    /// <summary>
    /// sum = ReLU backward of (sum + addend) through a ReLU whose output is <paramref name="output"/>:
    /// the sum where the output is positive, else zero; bit for bit the addition followed by
    /// <see cref="ReluBackward"/>, in one pass.
    /// </summary>
    public static void AddReluBackward(ReadOnlySpan<float> output, ReadOnlySpan<float> addend, Span<float> sum)
    {
        if (addend.Length < output.Length || sum.Length < output.Length)
        {
            throw new ArgumentException($"ReLU backward of a sum needs {output.Length} values in each term, got {sum.Length} and {addend.Length}.");
        }
        WherePositive(output, sum, addend, sum);
    }

    // result = a (+ b, unless b is empty) where output > 0, else 0.
    private static void WherePositive(ReadOnlySpan<float> output, ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> result)
    {
        bool add = !b.IsEmpty;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float y = ref MemoryMarshal.GetReference(output);
            ref float first = ref MemoryMarshal.GetReference(a);
            ref float second = ref MemoryMarshal.GetReference(b);
            ref float target = ref MemoryMarshal.GetReference(result);
            for (; i + Vector256<float>.Count <= output.Length; i += Vector256<float>.Count)
            {
                Vector256<float> positive = Vector256.GreaterThan(Vector256.LoadUnsafe(ref y, (nuint)i), Vector256<float>.Zero);
                Vector256<float> value = Vector256.LoadUnsafe(ref first, (nuint)i);
                if (add)
                {
                    value += Vector256.LoadUnsafe(ref second, (nuint)i);
                }
                (value & positive).StoreUnsafe(ref target, (nuint)i);
            }
        }
        for (; i < output.Length; i++)
        {
            result[i] = output[i] > 0f ? (add ? a[i] + b[i] : a[i]) : 0f;
        }
    }

    /// <summary>
    /// sums[c] += the sum of channel c's values, for channels runs of length values back to back
    /// (a channel-major gradient: its bias gradient). The channels are shared among the engine's
    /// threads, each summed whole by one, so the sums do not depend on the thread count.
    /// </summary>
    public static unsafe void AddChannelSums(ReadOnlySpan<float> values, int channels, int length, Span<float> sums)
    {
        if (values.Length < (long)channels * length || sums.Length < channels)
        {
            throw new ArgumentException($"Sums of {channels} channels of {length} values need {(long)channels * length} values and {channels} sums, got {values.Length} and {sums.Length}.");
        }
        fixed (float* v = values, s = sums)
        {
            Parallelism.For(channels, length, (values: (nint)v, sums: (nint)s, length), static (t, start, count) =>
            {
                for (int c = start; c < start + count; c++)
                {
                    ((float*)t.sums)[c] += TensorPrimitives.Sum(new ReadOnlySpan<float>((float*)t.values + (long)c * t.length, t.length));
                }
            });
        }
    }

    /// <summary>Inverted dropout: mask holds 0 or 1/(1-p) so inference needs no rescaling.</summary>
    public static void DropoutForward(ReadOnlySpan<float> input, float probability, Rng rng, Span<float> mask, Span<float> output)
    {
        float keep = 1f / (1f - probability);
        for (int i = 0; i < mask.Length; i++)
        {
            mask[i] = rng.NextFloat() < probability ? 0f : keep;
        }
        TensorPrimitives.Multiply(input, mask, output);
    }

    public static void DropoutBackward(ReadOnlySpan<float> mask, ReadOnlySpan<float> dOutput, Span<float> dInput) =>
        TensorPrimitives.Multiply(dOutput, mask, dInput);

    // part (n, partChannels, pixels) is copied into output (n, totalChannels, pixels) at channelOffset.
    public static void CopyChannels(
        ReadOnlySpan<float> part, int batch, int partChannels, int pixels, int totalChannels, int channelOffset, Span<float> output)
    {
        int block = partChannels * pixels;
        for (int n = 0; n < batch; n++)
        {
            part.Slice(n * block, block).CopyTo(output.Slice((n * totalChannels + channelOffset) * pixels, block));
        }
    }

    // The inverse: reads the channel slice of whole (n, totalChannels, pixels) into part.
    public static void SliceChannels(
        ReadOnlySpan<float> whole, int batch, int partChannels, int pixels, int totalChannels, int channelOffset, Span<float> part)
    {
        int block = partChannels * pixels;
        for (int n = 0; n < batch; n++)
        {
            whole.Slice((n * totalChannels + channelOffset) * pixels, block).CopyTo(part.Slice(n * block, block));
        }
    }
}
