namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Splits independent work (image planes, whole images, flat ranges) across the engine's threads.
/// Each part computes exactly what the single-threaded loop would, so results do not depend on
/// the thread count.
/// </summary>
public static class Parallelism
{
    // Below this many values the fork-join costs more than it saves.
    private const long MinimumValuesPerPart = 1 << 15;

    /// <summary>Runs body(start, count) over [0, items) in at most Gemm.MaxThreads contiguous parts.</summary>
    public static void For(int items, long valuesPerItem, Action<int, int> body)
    {
        long total = items * Math.Max(valuesPerItem, 1);
        int parts = (int)Math.Min(Math.Min(Gemm.MaxThreads, items), Math.Max(1, total / MinimumValuesPerPart));
        if (parts <= 1)
        {
            body(0, items);
            return;
        }
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, part =>
        {
            int start = (int)((long)items * part / parts);
            int end = (int)((long)items * (part + 1) / parts);
            body(start, end - start);
        });
    }
}
