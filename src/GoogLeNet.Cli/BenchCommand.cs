using System.CommandLine;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>
/// Throughput of a whole network: a training step (forward, backward, SGD) or inference, timed per
/// iteration after warm-up; the median is reported because shared machines have outliers.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        Option<string> preset = CliSupport.PresetOption();
        Option<string> mode = new("--mode") { Description = "train or infer.", DefaultValueFactory = _ => "infer" };
        Option<int> batch = new("--batch") { Description = "Images per iteration.", DefaultValueFactory = _ => 32 };
        Option<string?> input = new("--input") { Description = "Input shape CxHxW (default per preset)." };
        Option<bool> aux = new("--aux") { Description = "Train with the auxiliary classifiers." };
        Option<int> threads = new("--threads") { Description = "Worker threads (default: all cores).", DefaultValueFactory = _ => Environment.ProcessorCount };
        Option<int> warmup = new("--warmup") { Description = "Untimed iterations first.", DefaultValueFactory = _ => 2 };
        Option<int> iterations = new("--iters") { Description = "Timed iterations.", DefaultValueFactory = _ => 5 };
        Option<bool> profile = new("--profile") { Description = "Also print each top-level module's forward and backward milliseconds per timed iteration (to stderr)." };
        Option<string?> gemm = new("--gemm") { Description = "Time one matrix product MxNxK (row-major, no transposes) instead of the network; prints GFLOP/s." };
        Option<bool> fmaPeak = new("--fma-peak")
        {
            Description = "Time multiply-adds on registers alone on --threads threads instead of the network: the GFLOP/s this machine attains, the ceiling for --gemm.",
        };
        Option<string> conv3x3 = new("--conv3x3")
        {
            Description = "Algorithm of the 3x3, stride-1 convolutions: winograd (F(2x2,3x3), the default) or gemm (implicit im2col GEMM).",
            DefaultValueFactory = _ => "winograd",
        };
        Option<int> spin = new("--spin-us")
        {
            Description = "Microseconds the engine's idle threads spin before they sleep (0: sleep at once).",
            DefaultValueFactory = _ => Parallelism.SpinMicroseconds,
        };
        Option<int> vectorBits = new("--vector-bits")
        {
            Description = "Vector width of the matrix-product kernel: 512 (AVX-512, the default where the CPU has it) or 256 (AVX2).",
            DefaultValueFactory = _ => Gemm.VectorBits,
        };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("bench", "Images per second of a training step or of inference, median over iterations.")
        {
            preset, mode, batch, input, aux, threads, warmup, iterations, profile, gemm, fmaPeak, conv3x3, spin, vectorBits, json,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
            int bits = result.GetValue(vectorBits);
            if (bits is not (256 or 512))
            {
                throw new ArgumentException($"--vector-bits expects 256 or 512, got {bits}.");
            }
            if (bits == 512 && !Avx512F.IsSupported)
            {
                throw new ArgumentException("--vector-bits 512 needs a CPU with AVX-512F; this one has none.");
            }
            Gemm.VectorBits = bits;
            if (result.GetValue(spin) < 0)
            {
                throw new ArgumentException($"--spin-us must be at least 0, got {result.GetValue(spin)}.");
            }
            Parallelism.SpinMicroseconds = result.GetValue(spin);
            if (result.GetValue(gemm) is { } gemmShape)
            {
                return MeasureGemm(gemmShape, result.GetValue(threads), result.GetValue(warmup), result.GetValue(iterations), result.GetValue(json));
            }
            if (result.GetValue(fmaPeak))
            {
                return MeasureFmaPeak(result.GetValue(threads), result.GetValue(warmup), result.GetValue(iterations), result.GetValue(json));
            }
            string modeName = result.GetValue(mode)!;
            if (modeName is not ("train" or "infer"))
            {
                throw new ArgumentException($"--mode expects train or infer, got '{modeName}'.");
            }
            int batchSize = result.GetValue(batch);
            int threadCount = result.GetValue(threads);
            int iterationCount = result.GetValue(iterations);
            if (batchSize < 1 || threadCount < 1 || iterationCount < 1 || result.GetValue(warmup) < 0)
            {
                throw new ArgumentException("--batch, --threads and --iters must be at least 1, --warmup at least 0.");
            }
            string algorithm = result.GetValue(conv3x3)!;
            if (algorithm is not ("winograd" or "gemm"))
            {
                throw new ArgumentException($"--conv3x3 expects winograd or gemm, got '{algorithm}'.");
            }
            Winograd.Enabled = algorithm == "winograd";
            Gemm.MaxThreads = threadCount;
            bool train = modeName == "train";
            var options = CliSupport.BuildOptions(result.GetValue(preset)!, null, result.GetValue(input), train && result.GetValue(aux));
            var model = new GoogLeNetModel(options);
            var moduleProfile = result.GetValue(profile) ? new ModuleProfile() : null;
            double median = Measure(model, train, batchSize, result.GetValue(warmup), iterationCount, moduleProfile);
            if (moduleProfile is not null)
            {
                PrintProfile(model, moduleProfile, batchSize);
            }
            long peak = Process.GetCurrentProcess().PeakWorkingSet64;
            double imagesPerSecond = batchSize / (median / 1000.0);
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    preset = options.Preset.ToName(),
                    mode = modeName,
                    batch = batchSize,
                    input = model.InputShape,
                    threads = threadCount,
                    conv3x3 = algorithm,
                    vectorBits = Gemm.VectorBits,
                    spinMicroseconds = Parallelism.SpinMicroseconds,
                    imagesPerSecond,
                    medianMilliseconds = median,
                    peakWorkingSetBytes = peak,
                }, CliSupport.Json));
            }
            else
            {
                Console.WriteLine($"{options.Preset.ToName()} {modeName} batch {batchSize} input {string.Join("x", model.InputShape)} threads {threadCount} conv3x3 {algorithm} vectors {Gemm.VectorBits}-bit: " +
                    $"{imagesPerSecond:F1} img/s, median {median:F1} ms per iteration, peak working set {peak / (1024.0 * 1024.0):F0} MiB");
            }
            return 0;
        }));
        return command;
    }

    private static int MeasureGemm(string shape, int threads, int warmup, int iterations, bool json)
    {
        int[] size = shape.Split('x').Select(t => int.TryParse(t, out int v) && v > 0 ? v : 0).ToArray();
        if (size.Length != 3 || size.Contains(0) || threads < 1 || iterations < 1 || warmup < 0)
        {
            throw new ArgumentException($"--gemm expects MxNxK with positive sizes (e.g. 4096x4096x4096), got '{shape}'; --threads and --iters at least 1.");
        }
        (int m, int n, int k) = (size[0], size[1], size[2]);
        Gemm.MaxThreads = threads;
        var rng = new Rng(1);
        float[] a = new float[(long)m * k], b = new float[(long)k * n], c = new float[(long)m * n];
        for (int i = 0; i < a.Length; i++)
        {
            a[i] = rng.NextFloat() - 0.5f;
        }
        for (int i = 0; i < b.Length; i++)
        {
            b[i] = rng.NextFloat() - 0.5f;
        }
        var times = new double[iterations];
        for (int i = -warmup; i < iterations; i++)
        {
            long start = Stopwatch.GetTimestamp();
            Gemm.Multiply(false, false, m, n, k, a, k, b, n, c, n, accumulate: false);
            if (i >= 0)
            {
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }
        double median = Median(times);
        double gflops = 2.0 * m * n * k / (median * 1e6);
        Console.WriteLine(json
            ? JsonSerializer.Serialize(new { gemm = size, threads, vectorBits = Gemm.VectorBits, gflops, medianMilliseconds = median }, CliSupport.Json)
            : $"gemm {m}x{n}x{k} threads {threads}, {Gemm.VectorBits}-bit vectors: {gflops:F1} GFLOP/s, median {median:F2} ms");
        return 0;
    }

    // The nominal peak (cores x FMA units x lanes x 2 x clock) assumes a clock that a shared VM
    // may not give; this measures what the cores deliver on independent chains that touch no memory.
    private static int MeasureFmaPeak(int threads, int warmup, int iterations, bool json)
    {
        if (threads < 1 || iterations < 1 || warmup < 0)
        {
            throw new ArgumentException("--threads and --iters must be at least 1, --warmup at least 0.");
        }
        const long Steps = 60_000_000;
        bool wide = Gemm.VectorBits == 512;
        int lanes = wide ? Vector512<float>.Count : Vector256<float>.Count;
        var times = new double[iterations];
        for (int i = -warmup; i < iterations; i++)
        {
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            float sink = 0;
            for (int t = 0; t < threads; t++)
            {
                workers[t] = new Thread(() =>
                {
                    start.SignalAndWait();
                    float value = wide ? FmaChains512(Steps) : FmaChains256(Steps);
                    Interlocked.Exchange(ref sink, value);
                });
                workers[t].Start();
            }
            start.SignalAndWait();
            long begin = Stopwatch.GetTimestamp();
            foreach (Thread worker in workers)
            {
                worker.Join();
            }
            if (i >= 0)
            {
                times[i] = Stopwatch.GetElapsedTime(begin).TotalMilliseconds;
            }
            GC.KeepAlive(sink);
        }
        double median = Median(times);
        double gflops = 2.0 * FmaChainCount * lanes * Steps * threads / (median * 1e6);
        Console.WriteLine(json
            ? JsonSerializer.Serialize(new { fmaPeak = true, threads, vectorBits = lanes * 32, gflops, medianMilliseconds = median }, CliSupport.Json)
            : $"fma peak threads {threads}, {lanes * 32}-bit vectors: {gflops:F1} GFLOP/s, median {median:F2} ms");
        return 0;
    }

    // Twelve independent accumulators cover the FMA latency (4-5 cycles) on two pipes.
    private const int FmaChainCount = 12;

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaChains256(long steps)
    {
        Vector256<float> x = Vector256.Create(0.999999f), y = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(0f), a1 = Vector256.Create(1f), a2 = Vector256.Create(2f), a3 = Vector256.Create(3f);
        Vector256<float> a4 = Vector256.Create(4f), a5 = Vector256.Create(5f), a6 = Vector256.Create(6f), a7 = Vector256.Create(7f);
        Vector256<float> a8 = Vector256.Create(8f), a9 = Vector256.Create(9f), a10 = Vector256.Create(10f), a11 = Vector256.Create(11f);
        for (long n = 0; n < steps; n++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, x, y); a1 = Vector256.FusedMultiplyAdd(a1, x, y);
            a2 = Vector256.FusedMultiplyAdd(a2, x, y); a3 = Vector256.FusedMultiplyAdd(a3, x, y);
            a4 = Vector256.FusedMultiplyAdd(a4, x, y); a5 = Vector256.FusedMultiplyAdd(a5, x, y);
            a6 = Vector256.FusedMultiplyAdd(a6, x, y); a7 = Vector256.FusedMultiplyAdd(a7, x, y);
            a8 = Vector256.FusedMultiplyAdd(a8, x, y); a9 = Vector256.FusedMultiplyAdd(a9, x, y);
            a10 = Vector256.FusedMultiplyAdd(a10, x, y); a11 = Vector256.FusedMultiplyAdd(a11, x, y);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaChains512(long steps)
    {
        Vector512<float> x = Vector512.Create(0.999999f), y = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(0f), a1 = Vector512.Create(1f), a2 = Vector512.Create(2f), a3 = Vector512.Create(3f);
        Vector512<float> a4 = Vector512.Create(4f), a5 = Vector512.Create(5f), a6 = Vector512.Create(6f), a7 = Vector512.Create(7f);
        Vector512<float> a8 = Vector512.Create(8f), a9 = Vector512.Create(9f), a10 = Vector512.Create(10f), a11 = Vector512.Create(11f);
        for (long n = 0; n < steps; n++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, x, y); a1 = Vector512.FusedMultiplyAdd(a1, x, y);
            a2 = Vector512.FusedMultiplyAdd(a2, x, y); a3 = Vector512.FusedMultiplyAdd(a3, x, y);
            a4 = Vector512.FusedMultiplyAdd(a4, x, y); a5 = Vector512.FusedMultiplyAdd(a5, x, y);
            a6 = Vector512.FusedMultiplyAdd(a6, x, y); a7 = Vector512.FusedMultiplyAdd(a7, x, y);
            a8 = Vector512.FusedMultiplyAdd(a8, x, y); a9 = Vector512.FusedMultiplyAdd(a9, x, y);
            a10 = Vector512.FusedMultiplyAdd(a10, x, y); a11 = Vector512.FusedMultiplyAdd(a11, x, y);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static double Median(double[] times)
    {
        Array.Sort(times);
        int count = times.Length;
        return count % 2 == 1 ? times[count / 2] : (times[count / 2 - 1] + times[count / 2]) / 2;
    }

    private static double Measure(GoogLeNetModel model, bool train, int batch, int warmup, int iterations, ModuleProfile? profile)
    {
        var input = new Tensor([batch, .. model.InputShape]);
        var rng = new Rng(1);
        Span<float> x = input.Span;
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = rng.NextFloat() * 2f - 1f;
        }
        int[] labels = Enumerable.Range(0, batch).Select(i => i % model.Options.Classes).ToArray();
        var loss = new GoogLeNetLoss();
        var sgd = new Sgd(model.Parameters, momentum: 0.9f);
        model.SetTraining(train);
        var times = new double[iterations];
        for (int i = -warmup; i < iterations; i++)
        {
            if (i == 0)
            {
                profile?.Clear();
                model.Profile = profile;
            }
            long start = Stopwatch.GetTimestamp();
            GoogLeNetOutput output = model.Forward(input);
            if (train)
            {
                model.Parameters.ZeroGrad();
                loss.Compute(output, labels);
                loss.Backward(model);
                sgd.Step(0.001f);
            }
            if (i >= 0)
            {
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }
        return Median(times);
    }

    // Milliseconds per iteration and the forward GFLOP/s of modules that multiply (2 FLOPs a MAC).
    private static void PrintProfile(GoogLeNetModel model, ModuleProfile profile, int batch)
    {
        var macs = model.Summary().ToDictionary(r => r.Name, r => r.Macs);
        int passes = Math.Max(profile.ForwardPasses, 1);
        double forwardTotal = 0;
        double backwardTotal = 0;
        Console.Error.WriteLine($"{"module",-16} {"forward ms",11} {"GFLOP/s",8} {"backward ms",12}");
        foreach (var (module, forward, backward) in profile.Rows)
        {
            double f = forward / passes;
            double b = backward / passes;
            forwardTotal += f;
            backwardTotal += b;
            string rate = macs.TryGetValue(module, out long m) && m > 0 ? (2.0 * m * batch / (f * 1e6)).ToString("F1") : "";
            Console.Error.WriteLine($"{module,-16} {f,11:F1} {rate,8} {b,12:F1}");
        }
        Console.Error.WriteLine($"{"total",-16} {forwardTotal,11:F1} {"",8} {backwardTotal,12:F1}");
    }
}
