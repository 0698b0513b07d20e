using GoogLeNet.Models;

namespace GoogLeNet.Training;

/// <summary>
/// Everything that defines a training run; saved as config.json in the run folder so that
/// <c>--resume</c> rebuilds the same run. <see cref="ForPreset"/> gives each preset's recipe.
/// </summary>
public sealed record TrainConfig
{
    public string Preset { get; init; } = "d2l";

    /// <summary>fashion-mnist, mnist, cifar10 or folder:PATH.</summary>
    public string Dataset { get; init; } = "fashion-mnist";

    public string? DataDirectory { get; init; }

    /// <summary>Square side the images are resized to (bilinear), when it differs from the dataset's.</summary>
    public int InputSize { get; init; } = 96;

    public int Epochs { get; init; } = 10;

    public int BatchSize { get; init; } = 128;

    public double LearningRate { get; init; } = 0.1;

    public double Momentum { get; init; }

    public double WeightDecay { get; init; }

    public bool Nesterov { get; init; }

    /// <summary>See <see cref="Schedules.Parse"/>.</summary>
    public string Schedule { get; init; } = "constant";

    /// <summary>Seeds the initial weights, the dropout masks and the data order.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Use only the first N training images (0: all).</summary>
    public int LimitTrain { get; init; }

    /// <summary>Use only the first N test images (0: all).</summary>
    public int LimitTest { get; init; }

    public bool Aux { get; init; }

    public float AuxWeight { get; init; } = 0.3f;

    public float LabelSmoothing { get; init; }

    /// <summary>Global gradient-norm cap (0: off).</summary>
    public double ClipNorm { get; init; }

    /// <summary>
    /// Decay of an exponential moving average of the weights (the paper's Polyak averaging), used
    /// for evaluation and best.safetensors; 0 turns it off, 0.999 is typical.
    /// </summary>
    public double WeightAverageDecay { get; init; }

    /// <summary>
    /// Augmentation of the training images: <c>none</c>; <c>crop-flip</c> (a random crop after
    /// zero padding by an eighth of the side, then a horizontal flip half the time); <c>crop-flip-erase</c>
    /// (crop-flip, then torchvision's random erasing with its defaults, to 0); <c>paper</c>
    /// (the paper's random-resized crop of 8-100% of the area, aspect 3/4-4/3, flip, brightness
    /// and contrast jitter of 0.4). Test images are only resized.
    /// </summary>
    public string Augment { get; init; } = "none";

    /// <summary>Save last.safetensors every N steps besides each epoch's end (0: epoch ends only).</summary>
    public int CheckpointEvery { get; init; } = 200;

    /// <summary>
    /// The recipe of DESIGN.md section 3 for a preset: d2l trains Fashion-MNIST at 96x96 with plain
    /// SGD lr 0.1, batch 128, 10 epochs; paper and torchvision follow the Keras walk-through (aux
    /// losses 0.3, lr 0.01, momentum 0.9, x0.96 every 8 epochs, batch 256, 25 epochs, 224x224).
    /// </summary>
    public static TrainConfig ForPreset(string preset)
    {
        Preset parsed = PresetNames.Parse(preset);
        return parsed == Models.Preset.D2l
            ? new TrainConfig { Preset = "d2l" }
            : new TrainConfig
            {
                Preset = parsed.ToName(),
                Dataset = "cifar10",
                InputSize = 224,
                Epochs = 25,
                BatchSize = 256,
                LearningRate = 0.01,
                Momentum = 0.9,
                Schedule = "paper",
                Aux = true,
            };
    }

    public void Validate()
    {
        Preset preset = PresetNames.Parse(Preset);
        if (preset == Models.Preset.D2l && Aux)
        {
            throw new ArgumentException("The d2l preset has no auxiliary classifiers.");
        }
        Check(InputSize > 0, $"the input size must be positive, got {InputSize}");
        Check(Epochs > 0, $"the number of epochs must be positive, got {Epochs}");
        Check(BatchSize > 0, $"the batch size must be positive, got {BatchSize}");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), $"the learning rate must be positive, got {LearningRate}");
        Check(Momentum >= 0 && Momentum < 1, $"the momentum must be in [0, 1), got {Momentum}");
        Check(WeightDecay >= 0, $"the weight decay must not be negative, got {WeightDecay}");
        Check(LimitTrain >= 0 && LimitTest >= 0, "limits must not be negative");
        Check(LabelSmoothing >= 0 && LabelSmoothing < 1, $"label smoothing must be in [0, 1), got {LabelSmoothing}");
        Check(ClipNorm >= 0, $"the clipping norm must not be negative, got {ClipNorm}");
        Check(WeightAverageDecay >= 0 && WeightAverageDecay < 1, $"the weight-average decay must be in [0, 1), got {WeightAverageDecay}");
        Check(CheckpointEvery >= 0, $"the checkpoint interval must not be negative, got {CheckpointEvery}");
        Check(Augment is "none" or "crop-flip" or "crop-flip-erase" or "paper", $"the augmentation must be none, crop-flip, crop-flip-erase or paper, got '{Augment}'");
        Schedules.Parse(Schedule, LearningRate, Epochs);
    }

    public ILearningRateSchedule BuildSchedule() => Schedules.Parse(Schedule, LearningRate, Epochs);

    public GoogLeNetOptions ModelOptions(int channels, int classes)
    {
        GoogLeNetOptions defaults = GoogLeNetOptions.For(PresetNames.Parse(Preset));
        return defaults with
        {
            Classes = classes,
            InputChannels = channels,
            InputHeight = InputSize,
            InputWidth = InputSize,
            AuxLogits = Aux,
            Seed = Seed,
        };
    }

    private static void Check(bool condition, string message)
    {
        if (!condition)
        {
            throw new ArgumentException($"Invalid training configuration: {message}.");
        }
    }
}
