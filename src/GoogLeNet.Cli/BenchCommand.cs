using System.CommandLine;
using System.Diagnostics;
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
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("bench", "Images per second of a training step or of inference, median over iterations.")
        {
            preset, mode, batch, input, aux, threads, warmup, iterations, profile, json,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
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
                    imagesPerSecond,
                    medianMilliseconds = median,
                    peakWorkingSetBytes = peak,
                }, CliSupport.Json));
            }
            else
            {
                Console.WriteLine($"{options.Preset.ToName()} {modeName} batch {batchSize} input {string.Join("x", model.InputShape)} threads {threadCount}: " +
                    $"{imagesPerSecond:F1} img/s, median {median:F1} ms per iteration, peak working set {peak / (1024.0 * 1024.0):F0} MiB");
            }
            return 0;
        }));
        return command;
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
        Array.Sort(times);
        return iterations % 2 == 1 ? times[iterations / 2] : (times[iterations / 2 - 1] + times[iterations / 2]) / 2;
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
