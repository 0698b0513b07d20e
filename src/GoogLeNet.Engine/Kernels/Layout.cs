namespace GoogLeNet.Engine.Kernels;

/// <summary>Moves images between batch-major (N, C, P) and channel-major (C, N, P) storage.</summary>
public static class Layout
{
    // source (n, c, p) -> destination (c, n, p)
    public static void ToChannelMajor(ReadOnlySpan<float> source, int batch, int channels, int pixels, Span<float> destination)
    {
        for (int n = 0; n < batch; n++)
        {
            for (int c = 0; c < channels; c++)
            {
                source.Slice((n * channels + c) * pixels, pixels).CopyTo(destination.Slice((c * batch + n) * pixels, pixels));
            }
        }
    }

    // source (c, n, p) -> destination (n, c, p)
    public static void ToBatchMajor(ReadOnlySpan<float> source, int batch, int channels, int pixels, Span<float> destination)
    {
        for (int n = 0; n < batch; n++)
        {
            for (int c = 0; c < channels; c++)
            {
                source.Slice((c * batch + n) * pixels, pixels).CopyTo(destination.Slice((n * channels + c) * pixels, pixels));
            }
        }
    }
}
