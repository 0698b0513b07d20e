using GoogLeNet.Engine.Kernels;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary>The engine's fork-join: every item once, failures surface, nesting and concurrent callers work.</summary>
[Collection(EngineThreadsCollection.Name)]
public class ParallelismTests
{
    private static void WithThreads(int threads, Action action)
    {
        int saved = Gemm.MaxThreads;
        Gemm.MaxThreads = threads;
        try
        {
            action();
        }
        finally
        {
            Gemm.MaxThreads = saved;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(5)]
    public void EveryItemRunsExactlyOnceInContiguousParts(int threads) => WithThreads(threads, () =>
    {
        foreach (int items in new[] { 1, 2, 7, 100, 1001 })
        {
            var hits = new int[items];
            int calls = 0;
            Parallelism.For(items, 1 << 20, (start, count) =>
            {
                Interlocked.Increment(ref calls);
                for (int i = start; i < start + count; i++)
                {
                    Interlocked.Increment(ref hits[i]);
                }
            });
            Assert.All(hits, h => Assert.Equal(1, h));
            Assert.Equal(Math.Min(threads, items), calls);
        }
    });

    [Fact]
    public void AFailureInAnyPartReachesTheCaller() => WithThreads(2, () =>
    {
        var error = Assert.Throws<InvalidOperationException>(() => Parallelism.For(10, 1 << 20, (start, _) =>
        {
            if (start > 0)
            {
                throw new InvalidOperationException("second part");
            }
        }));
        Assert.Equal("second part", error.Message);
        // The pool is free again afterwards.
        int sum = 0;
        Parallelism.For(10, 1 << 20, (start, count) => Interlocked.Add(ref sum, count));
        Assert.Equal(10, sum);
    });

    [Fact]
    public void NestedAndConcurrentCallsComplete() => WithThreads(2, () =>
    {
        long total = 0;
        void Outer() => Parallelism.For(8, 1 << 20, (start, count) =>
        {
            for (int i = start; i < start + count; i++)
            {
                Parallelism.For(16, 1 << 20, (s, c) => Interlocked.Add(ref total, c));
            }
        });
        Task[] callers = [Task.Run(Outer), Task.Run(Outer), Task.Run(Outer)];
        Task.WaitAll(callers);
        Assert.Equal(3 * 8 * 16, total);
    });

    // Jobs that arrive while the workers spin (back to back) and after they have blocked (a pause
    // longer than the spin) both run every part; without spinning every job wakes a blocked worker.
    [Theory]
    [InlineData(0)]
    [InlineData(200)]
    [InlineData(5000)]
    public void WorkersTakeJobsWhetherSpinningOrBlocked(int spinMicroseconds) => WithThreads(3, () =>
    {
        int saved = Parallelism.SpinMicroseconds;
        Parallelism.SpinMicroseconds = spinMicroseconds;
        try
        {
            int pooledJobs = 0;
            for (int job = 0; job < 40; job++)
            {
                var hits = new int[3];
                var threads = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
                Parallelism.For(3, 1 << 20, (start, count) =>
                {
                    threads[Environment.CurrentManagedThreadId] = true;
                    Interlocked.Increment(ref hits[start]);
                });
                Assert.All(hits, h => Assert.Equal(1, h));
                pooledJobs += threads.Count == 3 ? 1 : 0;
                if (job % 10 == 9)
                {
                    Thread.Sleep(2 + spinMicroseconds / 1000);
                }
            }
            // A job finds the pool busy only while another test's job holds it: most use all three.
            Assert.InRange(pooledJobs, 1, 40);
        }
        finally
        {
            Parallelism.SpinMicroseconds = saved;
        }
    });

    // A caller blocks on its workers only when one runs later than the spin; the first time a
    // thread blocks, the runtime builds its wait state, which the pool takes at the thread's
    // first job. So a worker that runs late long after warm-up costs the caller no allocation.
    [Fact]
    public void ACallerWaitingForALateWorkerAllocatesNothingAfterItsFirstJob() => WithThreads(2, () =>
    {
        long allocated = -1;
        var caller = new Thread(() =>
        {
            bool late = false;
            Action<int, int> body = (start, count) =>
            {
                if (start == 1 && Volatile.Read(ref late))
                {
                    Thread.Sleep(8);
                }
            };
            for (int job = 0; job < 5; job++)
            {
                Parallelism.For(2, 1 << 20, body);
            }
            Volatile.Write(ref late, true);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int job = 0; job < 3; job++)
            {
                Parallelism.For(2, 1 << 20, body);
            }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        });
        EngineSetting.With(() => Parallelism.SpinMicroseconds, value => Parallelism.SpinMicroseconds = value, 1000, () =>
        {
            caller.Start();
            caller.Join();
            return 0;
        });
        Assert.Equal(0, allocated);
    });

    [Fact]
    public void SpinTimeRoundTripsAndRejectsNegatives()
    {
        int saved = Parallelism.SpinMicroseconds;
        try
        {
            Parallelism.SpinMicroseconds = 250;
            Assert.InRange(Parallelism.SpinMicroseconds, 249, 250); // tick conversion may round down by one
            Assert.Throws<ArgumentOutOfRangeException>(() => Parallelism.SpinMicroseconds = -1);
            Assert.InRange(Parallelism.SpinMicroseconds, 249, 250);
        }
        finally
        {
            Parallelism.SpinMicroseconds = saved;
        }
    }
}
