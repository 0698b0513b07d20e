using System.Runtime.ExceptionServices;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Splits independent work (image planes, whole images, flat ranges) across the engine's threads.
/// Each part computes exactly what the single-threaded loop would, so results do not depend on
/// the thread count.
/// </summary>
/// <remarks>
/// Parts run on a few long-lived threads woken by semaphores rather than on Parallel.For, whose
/// bookkeeping allocated on every call (a training step makes hundreds of calls). A call made
/// while the pool is busy (from inside a part, or from another thread) runs its parts in order
/// on its own thread.
/// </remarks>
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
        if (!Pool.TryRun(body, items, parts))
        {
            for (int part = 0; part < parts; part++)
            {
                RunPart(body, items, part, parts);
            }
        }
    }

    private static void RunPart(Action<int, int> body, int items, int part, int parts)
    {
        int start = (int)((long)items * part / parts);
        int end = (int)((long)items * (part + 1) / parts);
        body(start, end - start);
    }

    private static class Pool
    {
        private static readonly ManualResetEventSlim s_done = new(false, 1000);
        private static SemaphoreSlim[] s_starts = [];
        private static int s_busy;
        private static Action<int, int>? s_body;
        private static int s_items;
        private static int s_parts;
        private static int s_pending;
        private static ExceptionDispatchInfo? s_failure;

        public static bool TryRun(Action<int, int> body, int items, int parts)
        {
            if (Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
            {
                return false;
            }
            try
            {
                EnsureWorkers(parts - 1);
                s_body = body;
                s_items = items;
                s_parts = parts;
                s_pending = parts - 1;
                s_failure = null;
                s_done.Reset();
                for (int w = 0; w < parts - 1; w++)
                {
                    s_starts[w].Release();
                }
                try
                {
                    RunPart(body, items, 0, parts);
                }
                finally
                {
                    s_done.Wait();
                }
                s_failure?.Throw();
                return true;
            }
            finally
            {
                s_body = null;
                s_failure = null;
                Volatile.Write(ref s_busy, 0);
            }
        }

        private static void EnsureWorkers(int count)
        {
            if (s_starts.Length >= count)
            {
                return;
            }
            var starts = new SemaphoreSlim[count];
            Array.Copy(s_starts, starts, s_starts.Length);
            for (int w = s_starts.Length; w < count; w++)
            {
                var start = new SemaphoreSlim(0);
                starts[w] = start;
                int part = w + 1;
                new Thread(() => WorkerLoop(start, part)) { IsBackground = true, Name = $"Parallelism worker {part}" }.Start();
            }
            s_starts = starts;
        }

        private static void WorkerLoop(SemaphoreSlim start, int part)
        {
            while (true)
            {
                start.Wait();
                try
                {
                    RunPart(s_body!, s_items, part, s_parts);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref s_failure, ExceptionDispatchInfo.Capture(e), null);
                }
                finally
                {
                    if (Interlocked.Decrement(ref s_pending) == 0)
                    {
                        s_done.Set();
                    }
                }
            }
        }
    }
}
