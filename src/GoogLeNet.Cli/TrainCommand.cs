using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using GoogLeNet.Data;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;
using GoogLeNet.Training;

namespace GoogLeNet.Cli;

internal static class TrainCommand
{
    public static Command Create()
    {
        Option<string> preset = CliSupport.PresetOption("d2l");
        Option<string?> dataset = new("--dataset") { Description = "fashion-mnist, mnist, cifar10 or folder:PATH (default: the preset's recipe)." };
        Option<string?> data = new("--data") { Description = "Dataset folder (default /usr/share/datasets/<name>)." };
        Option<int?> inputSize = new("--input-size") { Description = "Square input side; images are resized bilinearly (d2l: 96, paper/torchvision: 224)." };
        Option<int?> epochs = new("--epochs") { Description = "Epochs (d2l: 10; paper/torchvision: 25)." };
        Option<int?> batch = new("--batch") { Description = "Batch size (d2l: 128; paper/torchvision: 256)." };
        Option<double?> lr = new("--lr") { Description = "Base learning rate (d2l: 0.1; paper/torchvision: 0.01)." };
        Option<double?> momentum = new("--momentum") { Description = "SGD momentum (d2l: 0; paper/torchvision: 0.9)." };
        Option<double> weightDecay = new("--weight-decay") { Description = "L2 weight decay on weights (not biases or BN scales)." };
        Option<bool> nesterov = new("--nesterov") { Description = "Nesterov momentum." };
        Option<string?> schedule = new("--schedule") { Description = "constant, paper (x0.96 every 8 epochs), step:EPOCHS:GAMMA, poly[:POWER], cosine[:MIN], optionally +warmup:EPOCHS." };
        Option<ulong> seed = new("--seed") { Description = "Seed of the initial weights, dropout and data order.", DefaultValueFactory = _ => 1 };
        Option<int> limitTrain = new("--limit-train") { Description = "Train on the first N images only." };
        Option<int> limitTest = new("--limit-test") { Description = "Test on the first N images only." };
        Option<float?> auxWeight = new("--aux-weight") { Description = "Weight of each aux loss (0 turns the aux heads off; default 0.3 for paper/torchvision)." };
        Option<float> labelSmoothing = new("--label-smoothing") { Description = "Label smoothing of the cross-entropy." };
        Option<double> weightAverage = new("--weight-average") { Description = "Evaluate and keep as best a moving average of the weights with this decay (the paper's Polyak averaging; e.g. 0.999)." };
        Option<double> clip = new("--clip") { Description = "Clip the global gradient norm to this value (0: off)." };
        Option<string?> augment = new("--augment") { Description = "Training augmentation: none (default), crop-flip (random crop after padding by 1/8 of the side, horizontal flip), crop-flip-erase (crop-flip, then random erasing of one rectangle of 2-33% of the area with probability 0.5) or paper (random-resized crop, flip, brightness and contrast jitter)." };
        Option<int> checkpointEvery = new("--checkpoint-every") { Description = "Save last.safetensors every N steps (0: at epoch ends only).", DefaultValueFactory = _ => 200 };
        Option<string?> output = new("--out") { Description = "Run folder (default runs/<preset>-<dataset>-<time>)." };
        Option<string?> resume = new("--resume") { Description = "Continue the run in this folder exactly where it stopped (its config.json wins; --epochs may extend it)." };
        Option<int?> threads = new("--threads") { Description = "Worker threads for the kernels (default: all cores)." };
        var command = new Command("train", "Train GoogLeNet with a preset's recipe; writes config, metrics, plot and checkpoints to a run folder.")
        {
            preset, dataset, data, inputSize, epochs, batch, lr, momentum, weightDecay, nesterov, schedule, seed,
            limitTrain, limitTest, auxWeight, labelSmoothing, clip, weightAverage, augment, checkpointEvery, output, resume, threads,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
            string? resumeDirectory = result.GetValue(resume);
            TrainConfig config;
            string directory;
            if (resumeDirectory is not null)
            {
                config = RunFolder.ReadConfig(resumeDirectory);
                if (result.GetValue(epochs) is int moreEpochs)
                {
                    config = config with { Epochs = moreEpochs };
                }
                directory = resumeDirectory;
            }
            else
            {
                TrainConfig recipe = TrainConfig.ForPreset(result.GetValue(preset)!);
                float aux = result.GetValue(auxWeight) ?? (recipe.Aux ? recipe.AuxWeight : 0f);
                config = recipe with
                {
                    Dataset = result.GetValue(dataset) ?? recipe.Dataset,
                    DataDirectory = result.GetValue(data),
                    InputSize = result.GetValue(inputSize) ?? recipe.InputSize,
                    Epochs = result.GetValue(epochs) ?? recipe.Epochs,
                    BatchSize = result.GetValue(batch) ?? recipe.BatchSize,
                    LearningRate = result.GetValue(lr) ?? recipe.LearningRate,
                    Momentum = result.GetValue(momentum) ?? recipe.Momentum,
                    WeightDecay = result.GetValue(weightDecay),
                    Nesterov = result.GetValue(nesterov),
                    Schedule = result.GetValue(schedule) ?? recipe.Schedule,
                    Seed = result.GetValue(seed),
                    LimitTrain = result.GetValue(limitTrain),
                    LimitTest = result.GetValue(limitTest),
                    Aux = aux > 0f,
                    AuxWeight = aux > 0f ? aux : recipe.AuxWeight,
                    LabelSmoothing = result.GetValue(labelSmoothing),
                    ClipNorm = result.GetValue(clip),
                    WeightAverageDecay = result.GetValue(weightAverage),
                    CheckpointEvery = result.GetValue(checkpointEvery),
                    Augment = result.GetValue(augment) ?? recipe.Augment,
                };
                directory = result.GetValue(output) ?? Path.Combine("runs",
                    $"{config.Preset}-{config.Dataset.Replace(':', '-').Replace('/', '-')}-{DateTime.UtcNow:yyyyMMdd-HHmmss}");
            }
            config.Validate();
            if (resumeDirectory is null && RunFolder.ExistingRunFiles(directory) is { Length: > 0 } present)
            {
                throw new IOException(
                    $"'{directory}' already holds a run ({string.Join(", ", present)}); continue it with --resume {directory}, or give another --out. Nothing was changed.");
            }
            if (result.GetValue(threads) is int t)
            {
                Gemm.MaxThreads = t;
            }
            return Train(config, directory, resumeDirectory is not null);
        }));
        return command;
    }

    private static int Train(TrainConfig config, string directory, bool resume)
    {
        IImageDataset train = Datasets.Limit(Datasets.Open(config.Dataset, config.DataDirectory, train: true), config.LimitTrain);
        IImageDataset test = Datasets.Limit(Datasets.Open(config.Dataset, config.DataDirectory, train: false), config.LimitTest);
        var model = new GoogLeNetModel(config.ModelOptions(Datasets.Channels(train), train.ClassCount));
        using var trainLoader = new BatchLoader(train, Datasets.TrainTransform(train, config.InputSize, config.Augment), config.BatchSize, shuffle: true, config.Seed);
        using var testLoader = new BatchLoader(test, Datasets.InputTransform(test, config.InputSize), config.BatchSize, shuffle: false, config.Seed);
        var trainer = new Trainer(model, trainLoader, testLoader, config, directory);
        if (resume)
        {
            trainer.Resume();
            if (config.Epochs < trainer.State.Epoch)
            {
                throw new ArgumentException($"--epochs {config.Epochs} is fewer than the {trainer.State.Epoch} epochs '{directory}' has finished.");
            }
            if (RunFolder.ReadConfig(directory).Epochs != config.Epochs)
            {
                // The folder's configuration describes the run as it now continues, so a later
                // --resume without --epochs keeps the extended length.
                trainer.Folder.WriteConfig(config);
            }
            Console.WriteLine($"resuming {directory} at epoch {trainer.State.Epoch + 1}, batch {trainer.State.Batch}, step {trainer.State.Step}");
        }
        Console.WriteLine(
            $"train {config.Preset} on {config.Dataset}: {train.Count} train / {test.Count} test images at {config.InputSize}x{config.InputSize}, " +
            $"{config.Epochs} epochs, batch {config.BatchSize}, lr {config.BuildSchedule().Describe()}, momentum {config.Momentum}, " +
            $"{CliSupport.Group(model.Parameters.TrainableCount)} parameters, run folder {directory}");

        TrainingProgress progress = TrainingProgress.ForStandardError(config.Epochs, config.BatchSize);
        trainer.StepCompleted = progress.Step;
        trainer.EpochCompleted = m => progress.Line(string.Create(CultureInfo.InvariantCulture,
            $"epoch {m.Epoch}: loss {m.TrainLoss:F3}, train acc {m.TrainAccuracy:F3}, test acc {m.TestAccuracy:F3}, test top-5 {m.TestTop5:F3}, {m.Seconds:F1} s, {m.ImagesPerSecond:F1} img/s"));

        using var cancellation = new CancellationTokenSource();
        // The first Ctrl-C finishes the current step and saves; a second one kills the process.
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = !cancellation.IsCancellationRequested;
            cancellation.Cancel();
            Console.Error.WriteLine();
            Console.Error.WriteLine("stopping after this step to save the run (Ctrl-C again to abort without saving)");
        };
        Console.CancelKeyPress += onCancel;
        // SIGTERM (kill, a job scheduler, a container stopping) saves the same way; a background
        // job started from a script ignores SIGINT, so this is how such a run is stopped.
        bool terminated = false;
        using PosixSignalRegistration onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            terminated = true;
            cancellation.Cancel();
            Console.Error.WriteLine();
            Console.Error.WriteLine("terminated: stopping after this step to save the run");
        });
        TrainingOutcome outcome;
        try
        {
            outcome = progress.Run(() => trainer.Run(cancellation.Token));
        }
        catch (TrainingDivergedException e)
        {
            Console.Error.WriteLine();
            Console.Error.WriteLine($"error: {e.Message}");
            return 3;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (outcome == TrainingOutcome.Interrupted)
        {
            Console.Error.WriteLine();
            Console.WriteLine($"interrupted at epoch {trainer.State.Epoch + 1}, batch {trainer.State.Batch} (step {trainer.State.Step}); saved {trainer.Folder.LastPath}; continue with --resume {directory}");
            return terminated ? 143 : 130;
        }
        EpochMetrics last = trainer.State.History[^1];
        double seconds = trainer.State.History.Sum(m => m.Seconds);
        double images = trainer.State.History.Sum(m => m.Seconds * m.ImagesPerSecond);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"loss {last.TrainLoss:F3}, train acc {last.TrainAccuracy:F3}, test acc {last.TestAccuracy:F3}; {images / Math.Max(seconds, 1e-9):F1} img/s training throughput; {directory}"));
        return 0;
    }
}
