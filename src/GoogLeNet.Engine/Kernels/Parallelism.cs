using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace GoogLeNet.Engine.Kernels;

/// <summary>A job split into numbered parts that may run on different threads.</summary>
public interface IParallelWork
{
    /// <summary>Runs part <paramref name="part"/> of <paramref name="parts"/>; parts must not depend on each other.</summary>
    void RunPart(int part, int parts);
}

/// <summary>
/// Splits independent work (image planes, whole images, flat ranges, matrix tiles) across the
/// engine's threads. Each part computes exactly what the single-threaded loop would, so results
/// do not depend on the thread count.
/// </summary>
/// <remarks>
/// Parts run on a few long-lived threads woken by semaphores rather than on Parallel.For, whose
/// bookkeeping allocated on every call (a training step makes hundreds of calls). The job travels
/// as a struct through a static slot of its own type, so a call allocates nothing when its body
/// is a static lambda and its state a value tuple. A call made while the pool is busy (from inside
/// a part, or from another thread) runs on its own thread. Between jobs the workers, and the
/// caller waiting for them, spin for up to <see cref="SpinMicroseconds"/> before they block: a
/// blocked thread took tens of microseconds to wake on our VMs, and a forward pass at batch 1 makes
/// about sixty calls a few hundred microseconds apart.
/// </remarks>
public static class Parallelism
{
    // Below this many values the fork-join costs more than it saves.
    private const long MinimumValuesPerPart = 1 << 15;

    private static long s_spinTicks = Stopwatch.Frequency / 1000;

    /// <summary>How long an idle worker, or a caller waiting for its workers, spins before it blocks (default 1000).</summary>
    public static int SpinMicroseconds
    {
        get => (int)(Volatile.Read(ref s_spinTicks) * 1_000_000 / Stopwatch.Frequency);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Volatile.Write(ref s_spinTicks, value * Stopwatch.Frequency / 1_000_000);
        }
    }

    // Spins until done() or the spin time is over; returns done().
    private static bool SpinUntil<TState>(TState state, Func<TState, bool> done)
    {
        long until = Stopwatch.GetTimestamp() + Volatile.Read(ref s_spinTicks);
        while (!done(state))
        {
            if (Stopwatch.GetTimestamp() >= until)
            {
                return false;
            }
            Thread.SpinWait(16);
        }
        return true;
    }

    /// <summary>Runs body(start, count) over [0, items) in at most Gemm.MaxThreads contiguous parts.</summary>
    public static void For(int items, long valuesPerItem, Action<int, int> body) =>
        For(items, valuesPerItem, body, static (run, start, count) => run(start, count));

    /// <summary>
    /// Runs body(state, start, count) over [0, items) in at most Gemm.MaxThreads contiguous parts;
    /// with a static lambda and a value-tuple state nothing is allocated.
    /// </summary>
    public static void For<TState>(int items, long valuesPerItem, TState state, Action<TState, int, int> body)
    {
        long total = items * Math.Max(valuesPerItem, 1);
        int parts = (int)Math.Min(Math.Min(Gemm.MaxThreads, items), Math.Max(1, total / MinimumValuesPerPart));
        if (parts <= 1 || !TryRun(new Range<TState>(items, state, body), parts))
        {
            body(state, 0, items);
        }
    }

    /// <summary>
    /// Runs every part of <paramref name="work"/>, part 0 on the calling thread and the others on
    /// the pool. Returns false, having run nothing, when the pool is busy.
    /// </summary>
    public static bool TryRun<TWork>(in TWork work, int parts) where TWork : struct, IParallelWork =>
        Pool.TryRun(in work, parts);

    private readonly struct Range<TState>(int items, TState state, Action<TState, int, int> body) : IParallelWork
    {
        public void RunPart(int part, int parts)
        {
            int start = (int)((long)items * part / parts);
            int end = (int)((long)items * (part + 1) / parts);
            body(state, start, end - start);
        }
    }

    private static class Pool
    {
        // No spinning of its own: callers spin in SpinUntil before they wait on it (its spin
        // would sleep and yield, whose first use on a thread allocates).
        private static readonly ManualResetEventSlim s_done = new(false, 0);
        private static readonly object s_warmUp = new();
        private static SemaphoreSlim[] s_starts = [];
        private static int s_busy;
        private static Action<int, int>? s_runPart;
        private static int s_parts;
        private static int s_pending;
        private static ExceptionDispatchInfo? s_failure;

        // One job at a time holds the pool, so one slot per job type is enough.
        private static class Slot<TWork> where TWork : struct, IParallelWork
        {
            public static TWork Work;
            public static readonly Action<int, int> RunPart = static (part, parts) => Work.RunPart(part, parts);
        }

        // A thread's first blocking wait allocates the runtime's wait state for it (some 600 bytes
        // on .NET 10), and s_done builds its lock on its first blocking wait. A caller blocks only
        // when a worker runs late, which on a busy host may be any job long after warm-up, so
        // both are taken up front: s_done's lock before the first job, each thread's wait state
        // at its first call here (a 1 ms wait, once). Steady-state steps then allocate nothing
        // however late the workers are.
        static Pool()
        {
            s_done.Wait(1);
        }

        [ThreadStatic]
        private static bool t_waitsWarm;

        public static bool TryRun<TWork>(in TWork work, int parts) where TWork : struct, IParallelWork
        {
            if (!t_waitsWarm)
            {
                t_waitsWarm = true;
                lock (s_warmUp)
                {
                    Monitor.Wait(s_warmUp, 1);
                }
            }
            if (Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
            {
                return false;
            }
            try
            {
                EnsureWorkers(parts - 1);
                Slot<TWork>.Work = work;
                s_runPart = Slot<TWork>.RunPart;
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
                    work.RunPart(0, parts);
                }
                finally
                {
                    // Spinning on the event rather than the count: the last worker sets it just
                    // after the count reaches zero, and a wait that found it unset would block.
                    SpinUntil(0, static _ => s_done.IsSet);
                    s_done.Wait();
                }
                s_failure?.Throw();
                return true;
            }
            finally
            {
                Slot<TWork>.Work = default;
                s_runPart = null;
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
                new Thread(() => WorkerLoop(start, part)) { IsBackground = true, Name = $"Engine worker {part}" }.Start();
            }
            s_starts = starts;
        }

        private static void WorkerLoop(SemaphoreSlim start, int part)
        {
            while (true)
            {
                if (!SpinUntil(start, static s => s.CurrentCount > 0 && s.Wait(0)))
                {
                    start.Wait();
                }
                try
                {
                    s_runPart!(part, s_parts);
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
