using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Tests;

/// <summary>Copies between the batch-major (N, C, P) layout of the reference kernels and the engine's channel-major (C, N, P).</summary>
internal static class Layouts
{
    public static float[] ToChannelMajor(ReadOnlySpan<float> x, int batch, int channels, int pixels)
    {
        var y = new float[x.Length];
        Layout.ToChannelMajor(x, batch, channels, pixels, y);
        return y;
    }

    public static float[] ToBatchMajor(ReadOnlySpan<float> x, int batch, int channels, int pixels)
    {
        var y = new float[x.Length];
        Layout.ToBatchMajor(x, batch, channels, pixels, y);
        return y;
    }
}

/// <summary>Runs engine code with one of the engine's static settings changed, then restores it.</summary>
internal static class EngineSetting
{
    public static T With<TValue, T>(Func<TValue> get, Action<TValue> set, TValue value, Func<T> run)
    {
        TValue saved = get();
        try
        {
            set(value);
            return run();
        }
        finally
        {
            set(saved);
        }
    }
}

/// <summary>Runs engine code on a given number of threads and restores the setting (tests in <see cref="EngineThreadsCollection"/>).</summary>
internal static class EngineThreads
{
    public static T With<T>(int threads, Func<T> run) =>
        EngineSetting.With(() => Gemm.MaxThreads, value => Gemm.MaxThreads = value, threads, run);
}
