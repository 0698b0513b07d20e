namespace GoogLeNet.Training;

/// <summary>One epoch's row of metrics.csv and metrics.jsonl.</summary>
public sealed record EpochMetrics(
    int Epoch,
    double TrainLoss,
    double TrainAccuracy,
    double TestLoss,
    double TestAccuracy,
    double TestTop5,
    double LearningRate,
    double Seconds,
    double ImagesPerSecond);

/// <summary>
/// Where a run stands, saved in the checkpoint's metadata: with the weights, BatchNorm buffers and
/// SGD velocity it is everything a resumed run needs to continue bit for bit. The data order is
/// a function of (seed, epoch), so the position is just the epoch and the next batch.
/// </summary>
public sealed class TrainingState
{
    /// <summary>The epoch in progress (0-based).</summary>
    public int Epoch { get; set; }

    /// <summary>The next batch of <see cref="Epoch"/> to train on.</summary>
    public int Batch { get; set; }

    /// <summary>Optimizer steps taken since the start of the run.</summary>
    public long Step { get; set; }

    public ulong LoaderSeed { get; set; }

    /// <summary>State of each dropout layer's generator, by layer path.</summary>
    public Dictionary<string, ulong> DropoutStates { get; set; } = [];

    /// <summary>Running sums of the epoch in progress, so its train metrics survive an interruption.</summary>
    public double LossSum { get; set; }

    public long Correct { get; set; }

    public long Seen { get; set; }

    public double Seconds { get; set; }

    public double BestTestAccuracy { get; set; } = -1;

    public List<EpochMetrics> History { get; set; } = [];
}
