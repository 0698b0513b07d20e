using GoogLeNet.Data;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Interop;
using GoogLeNet.Models;
using GoogLeNet.Training;
using Xunit;

namespace GoogLeNet.Tests.Training;

/// <summary>
/// Checkpoints and resumption on a tiny synthetic task: torchvision's net (BatchNorm buffers,
/// main and aux dropout, aux heads) at its smallest input, so every kind of state is exercised.
/// </summary>
[Collection("Training")]
public sealed class TrainerTests : IDisposable
{
    private const int Side = 32;
    private const int Classes = 4;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "googlenet-trainer-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private static TrainConfig TinyConfig => new()
    {
        Preset = "torchvision",
        Dataset = "synthetic",
        InputSize = Side,
        Epochs = 2,
        BatchSize = 4,
        LearningRate = 0.05,
        Momentum = 0.9,
        WeightDecay = 1e-4,
        Schedule = "cosine",
        Seed = 7,
        Aux = true,
        ClipNorm = 5,
        LabelSmoothing = 0.1f,
        WeightAverageDecay = 0.9,
        CheckpointEvery = 0,
    };

    /// <summary>Images whose brightness pattern depends on the label, so a few steps learn something.</summary>
    private static ImageDataset Synthetic(int count, int seed)
    {
        var rng = new Rng((ulong)seed);
        var pixels = new byte[count * Side * Side];
        var labels = new byte[count];
        for (int i = 0; i < count; i++)
        {
            int label = i % Classes;
            labels[i] = (byte)label;
            for (int p = 0; p < Side * Side; p++)
            {
                int quadrant = (p / Side >= Side / 2 ? 2 : 0) + (p % Side >= Side / 2 ? 1 : 0);
                int value = (quadrant == label ? 200 : 40) + rng.NextInt(40);
                pixels[i * Side * Side + p] = (byte)value;
            }
        }
        return new ImageDataset(1, Side, Side, pixels, labels, ["a", "b", "c", "d"]);
    }

    private sealed class Setup : IDisposable
    {
        public Setup(TrainConfig config, string directory)
        {
            Model = new GoogLeNetModel(config.ModelOptions(1, Classes));
            TrainLoader = new BatchLoader(Synthetic(16, 1), null, config.BatchSize, shuffle: true, config.Seed);
            TestLoader = new BatchLoader(Synthetic(8, 2), null, config.BatchSize, shuffle: false, config.Seed);
            Trainer = new Trainer(Model, TrainLoader, TestLoader, config, directory);
        }

        public GoogLeNetModel Model { get; }

        public BatchLoader TrainLoader { get; }

        public BatchLoader TestLoader { get; }

        public Trainer Trainer { get; }

        public void Dispose()
        {
            TrainLoader.Dispose();
            TestLoader.Dispose();
        }
    }

    private static void AssertBitIdentical(Setup expected, Setup actual)
    {
        var want = expected.Model.Parameters.All;
        var got = actual.Model.Parameters.All;
        Assert.Equal(want.Count, got.Count);
        for (int i = 0; i < want.Count; i++)
        {
            Assert.Equal(want[i].Path, got[i].Path);
            AssertSameBits(want[i].Path, want[i].Parameter.Value.Span, got[i].Parameter.Value.Span);
        }
        AssertSameBits("velocity", expected.Trainer.Optimizer.Velocity, actual.Trainer.Optimizer.Velocity);
        AssertSameBits("weight average", expected.Trainer.WeightAverage!, actual.Trainer.WeightAverage!);
        Assert.Equal(expected.Trainer.State.Step, actual.Trainer.State.Step);
        Assert.Equal(
            expected.Trainer.State.History.Select(m => (m.TrainLoss, m.TrainAccuracy, m.TestLoss, m.TestAccuracy)),
            actual.Trainer.State.History.Select(m => (m.TrainLoss, m.TrainAccuracy, m.TestLoss, m.TestAccuracy)));
    }

    private static void AssertSameBits(string name, ReadOnlySpan<float> want, ReadOnlySpan<float> got)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(want[i]) != BitConverter.SingleToInt32Bits(got[i]))
            {
                Assert.Fail($"{name}[{i}]: expected {want[i]:R}, got {got[i]:R}");
            }
        }
    }

    [Fact]
    public void StopMidEpochAndResumeEndsBitIdentical()
    {
        using var uninterrupted = new Setup(TinyConfig, Path.Combine(_root, "a"));
        Assert.Equal(TrainingOutcome.Completed, uninterrupted.Trainer.Run());
        Assert.Equal(8, uninterrupted.Trainer.State.Step);

        string directory = Path.Combine(_root, "b");
        using (var first = new Setup(TinyConfig, directory))
        {
            using var stop = new CancellationTokenSource();
            first.Trainer.StepCompleted = s =>
            {
                if (s.Step == 6)
                {
                    stop.Cancel();
                }
            };
            Assert.Equal(TrainingOutcome.Interrupted, first.Trainer.Run(stop.Token));
            Assert.Equal((1, 2, 6L), (first.Trainer.State.Epoch, first.Trainer.State.Batch, first.Trainer.State.Step));
        }
        using var resumed = new Setup(TinyConfig, directory);
        resumed.Trainer.Resume();
        Assert.Equal(TrainingOutcome.Completed, resumed.Trainer.Run());
        AssertBitIdentical(uninterrupted, resumed);
        Assert.True(File.Exists(Path.Combine(directory, "best.safetensors")));
        Assert.Equal(3, File.ReadAllLines(Path.Combine(directory, "metrics.csv")).Length);
        Assert.Equal(2, File.ReadAllLines(Path.Combine(directory, "metrics.jsonl")).Length);
        Assert.StartsWith("<svg", File.ReadAllText(Path.Combine(directory, "plot.svg")));
    }

    [Fact]
    public void CrashAfterAPeriodicCheckpointResumesBitIdentical()
    {
        TrainConfig config = TinyConfig with { CheckpointEvery = 3 };
        using var uninterrupted = new Setup(config, Path.Combine(_root, "a"));
        uninterrupted.Trainer.Run();

        string directory = Path.Combine(_root, "b");
        using (var first = new Setup(config, directory))
        {
            first.Trainer.StepCompleted = s =>
            {
                if (s.Step == 7)
                {
                    throw new IOException("simulated crash");
                }
            };
            Assert.Throws<IOException>(() => first.Trainer.Run());
        }
        using var resumed = new Setup(config, directory);
        resumed.Trainer.Resume();
        Assert.Equal((1, 2, 6L), (resumed.Trainer.State.Epoch, resumed.Trainer.State.Batch, resumed.Trainer.State.Step));
        resumed.Trainer.Run();
        AssertBitIdentical(uninterrupted, resumed);
    }

    // The layers still allocate small closures and shape arrays per call, which is the engine's
    // to remove; this pins that the training loop itself (input copy, loss, accuracy, schedule,
    // progress) adds nothing per batch on top of forward, backward and step. One engine thread
    // keeps every allocation on this thread: with two, the share of the work (and of the
    // fork-join bookkeeping) that lands on the calling thread varies from run to run.
    [Fact]
    public void TrainingLoopAddsNoAllocationsPerBatch()
    {
        int threads = Gemm.MaxThreads;
        Gemm.MaxThreads = 1;
        try
        {
            MeasureTrainingLoopAllocations();
        }
        finally
        {
            Gemm.MaxThreads = threads;
        }
    }

    private void MeasureTrainingLoopAllocations()
    {
        using var setup = new Setup(TinyConfig with { Epochs = 1, BatchSize = 2, Aux = false }, Path.Combine(_root, "a"));
        long before = 0;
        long after = 0;
        setup.Trainer.StepCompleted = s =>
        {
            if (s.Step == 3)
            {
                before = GC.GetAllocatedBytesForCurrentThread();
            }
            else if (s.Step == 7)
            {
                after = GC.GetAllocatedBytesForCurrentThread();
            }
        };
        setup.Trainer.Run();
        // The model's step allocates nothing (SteadyStateAllocationTests); neither may the loop around it.
        Assert.Equal(0, after - before);
    }

    [Fact]
    public void WeightAverageIsWhatBestHoldsWhileTrainingKeepsTheRawWeights()
    {
        string directory = Path.Combine(_root, "average");
        using var setup = new Setup(TinyConfig with { Epochs = 1 }, directory);
        setup.Trainer.Run();
        float[] average = setup.Trainer.WeightAverage!;
        Assert.False(average.AsSpan().SequenceEqual(setup.Model.Parameters.Values));
        GoogLeNetModel best = Checkpoint.LoadModel(Path.Combine(directory, "best.safetensors"));
        AssertSameBits("best", average, best.Parameters.Values);
    }

    [Fact]
    public void CheckpointRoundTripIsBitExact()
    {
        using var setup = new Setup(TinyConfig, Path.Combine(_root, "a"));
        var rng = new Rng(3);
        foreach (var (_, parameter) in setup.Model.Parameters.All)
        {
            Span<float> values = parameter.Value.Span;
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = parameter.Name == "num_batches_tracked" ? 12345 : (float)rng.NextNormal();
            }
        }
        float[] velocity = setup.Trainer.Optimizer.Velocity;
        for (int i = 0; i < velocity.Length; i++)
        {
            velocity[i] = (float)rng.NextNormal();
        }
        var dropouts = Checkpoint.DropoutLayers(setup.Model).ToArray();
        Assert.Equal(3, dropouts.Length);
        var state = new TrainingState
        {
            Epoch = 3, Batch = 17, Step = 123_456_789_012, LoaderSeed = ulong.MaxValue, LossSum = Math.PI, Correct = 5, Seen = 9,
            Seconds = 1.0 / 3, BestTestAccuracy = 0.1 + 0.2,
            History = [new EpochMetrics(1, 0.1, 0.2, double.NaN, 0.4, 0.5, 1e-300, 6, 7)],
        };
        foreach (var (path, dropout) in dropouts)
        {
            dropout.Generator.NextUInt64();
            state.DropoutStates[path] = dropout.Generator.State;
        }
        string file = Path.Combine(_root, "round.safetensors");
        Checkpoint.Save(file, setup.Model, setup.Trainer.Optimizer, state);

        var options = setup.Model.Options with { Seed = 99 };
        var model = new GoogLeNetModel(options);
        var optimizer = new Sgd(model.Parameters, 0.9f);
        TrainingState loaded = Checkpoint.LoadTraining(file, model, optimizer);
        for (int i = 0; i < model.Parameters.All.Count; i++)
        {
            AssertSameBits(model.Parameters.All[i].Path, setup.Model.Parameters.All[i].Parameter.Value.Span, model.Parameters.All[i].Parameter.Value.Span);
        }
        AssertSameBits("velocity", velocity, optimizer.Velocity);
        Assert.Equal((state.Epoch, state.Batch, state.Step, state.LoaderSeed), (loaded.Epoch, loaded.Batch, loaded.Step, loaded.LoaderSeed));
        Assert.Equal((state.LossSum, state.Correct, state.Seen, state.Seconds, state.BestTestAccuracy),
            (loaded.LossSum, loaded.Correct, loaded.Seen, loaded.Seconds, loaded.BestTestAccuracy));
        Assert.Equal(state.History, loaded.History);
        foreach (var (path, dropout) in Checkpoint.DropoutLayers(model))
        {
            Assert.Equal(state.DropoutStates[path], dropout.Generator.State);
        }

        GoogLeNetModel fromFile = Checkpoint.LoadModel(file);
        Assert.Equal(setup.Model.Options, fromFile.Options);
        var same = new GoogLeNetModel(setup.Model.Options);
        var sameOptimizer = new Sgd(same.Parameters, 0.9f);
        TrainingState reloaded = Checkpoint.LoadTraining(file, same, sameOptimizer);
        string again = Path.Combine(_root, "again.safetensors");
        Checkpoint.Save(again, same, sameOptimizer, reloaded);
        Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(again));
    }

    [Fact]
    public void WeightsOnlyCheckpointIsRejectedForResume()
    {
        using var setup = new Setup(TinyConfig, Path.Combine(_root, "a"));
        string file = Path.Combine(_root, "weights.safetensors");
        Checkpoint.Save(file, setup.Model);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadTraining(file, setup.Model, setup.Trainer.Optimizer));
        Assert.Contains(Checkpoint.VelocityName, e.Message);
    }

    [Fact]
    public void NonFiniteLossStopsNamingTheStepAndKeepsTheLastGoodCheckpoint()
    {
        string directory = Path.Combine(_root, "nan");
        using var setup = new Setup(TinyConfig with { CheckpointEvery = 2 }, directory);
        setup.Trainer.StepCompleted = s =>
        {
            if (s.Step == 2)
            {
                setup.Model.Parameters["fc.weight"].Value.Span[0] = float.NaN;
            }
        };
        var e = Assert.Throws<TrainingDivergedException>(() => setup.Trainer.Run());
        Assert.Contains("at step 3 (epoch 1, batch 3 of 4", e.Message);
        Assert.Contains($"'{Path.Combine(directory, "last.safetensors")}' (step 2)", e.Message);

        using var check = new Setup(TinyConfig, directory);
        check.Trainer.Resume();
        Assert.Equal(2, check.Trainer.State.Step);
        Assert.All(check.Model.Parameters.All, p => Assert.True(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(p.Parameter.Value.Span) is float m && float.IsFinite(m), p.Path));
    }

    [Fact]
    public void EvaluationCountsTopOneTopFiveAndConfusion()
    {
        using var setup = new Setup(TinyConfig, Path.Combine(_root, "a"));
        EvaluationResult result = new Evaluator().Evaluate(setup.Model, setup.TestLoader);
        Assert.Equal(8, result.Count);
        Assert.Equal(1.0, result.Top5);
        long total = 0;
        long diagonal = 0;
        for (int i = 0; i < Classes; i++)
        {
            for (int j = 0; j < Classes; j++)
            {
                total += result.Confusion[i, j];
            }
            diagonal += result.Confusion[i, i];
        }
        Assert.Equal(8, total);
        Assert.Equal(diagonal / 8.0, result.Top1);
        Assert.True(double.IsFinite(result.Loss) && result.Loss > 0);
        Assert.False(setup.Model.IsTraining);
    }

    // The mirror evaluation against the same figures worked out by hand in double: each image and
    // its left-right mirror run separately, softmax averaged. The loss is compared to 1e-5
    // relative (float32 softmax and log against double); top-1 and top-5 exactly.
    [Fact]
    public void MirrorEvaluationAveragesEachImageWithItsMirror()
    {
        using var setup = new Setup(TinyConfig, Path.Combine(_root, "a"));
        EvaluationResult plain = new Evaluator().Evaluate(setup.Model, setup.TestLoader);
        EvaluationResult mirrored = new Evaluator { AverageWithMirror = true }.Evaluate(setup.Model, setup.TestLoader);

        GoogLeNetModel model = setup.Model;
        model.SetTraining(false);
        double lossSum = 0;
        int correct = 0, top5 = 0, count = 0;
        setup.TestLoader.StartEpoch(0);
        while (setup.TestLoader.Next() is Batch batch)
        {
            var input = new Tensor(batch.Count, batch.Channels, batch.Height, batch.Width);
            batch.Images.AsSpan(0, input.Length).CopyTo(input.Span);
            double[] first = Softmax(model.Forward(input).Logits.Span.ToArray());
            var flipped = new Tensor(input.Shape);
            int w = batch.Width;
            for (int i = 0; i < input.Length; i++)
            {
                flipped.Span[i] = input.Span[i - i % w + (w - 1 - i % w)];
            }
            double[] second = Softmax(model.Forward(flipped).Logits.Span.ToArray());
            for (int n = 0; n < batch.Count; n++)
            {
                double[] mean = Enumerable.Range(0, Classes).Select(c => (first[n * Classes + c] + second[n * Classes + c]) / 2).ToArray();
                int label = batch.Labels[n];
                lossSum -= Math.Log(mean[label]);
                correct += Array.IndexOf(mean, mean.Max()) == label ? 1 : 0;
                top5 += mean.Count(p => p > mean[label]) < 5 ? 1 : 0;
                count++;
            }
        }

        Assert.Equal(count, mirrored.Count);
        Assert.Equal((double)correct / count, mirrored.Top1);
        Assert.Equal((double)top5 / count, mirrored.Top5);
        Assert.True(Math.Abs(mirrored.Loss - lossSum / count) <= 1e-5 * lossSum / count, $"loss {mirrored.Loss}, by hand {lossSum / count}");
        // The synthetic images are not symmetric, so the mirror changes the figures.
        Assert.NotEqual(plain.Loss, mirrored.Loss);
    }

    private static double[] Softmax(float[] logits)
    {
        var result = new double[logits.Length];
        for (int start = 0; start < logits.Length; start += Classes)
        {
            double max = logits.Skip(start).Take(Classes).Max();
            double sum = Enumerable.Range(start, Classes).Sum(i => Math.Exp(logits[i] - max));
            for (int i = start; i < start + Classes; i++)
            {
                result[i] = Math.Exp(logits[i] - max) / sum;
            }
        }
        return result;
    }
}
