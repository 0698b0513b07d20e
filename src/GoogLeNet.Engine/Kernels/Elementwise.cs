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
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float y = ref MemoryMarshal.GetReference(output);
            ref float dy = ref MemoryMarshal.GetReference(dOutput);
            ref float dx = ref MemoryMarshal.GetReference(dInput);
            for (; i + Vector256<float>.Count <= output.Length; i += Vector256<float>.Count)
            {
                Vector256<float> positive = Vector256.GreaterThan(Vector256.LoadUnsafe(ref y, (nuint)i), Vector256<float>.Zero);
                (Vector256.LoadUnsafe(ref dy, (nuint)i) & positive).StoreUnsafe(ref dx, (nuint)i);
            }
        }
        for (; i < output.Length; i++)
        {
            dInput[i] = output[i] > 0f ? dOutput[i] : 0f;
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
