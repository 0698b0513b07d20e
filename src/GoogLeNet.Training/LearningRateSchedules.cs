namespace GoogLeNet.Training;

/// <summary>
/// A learning rate as a function of training progress in epochs (epoch + fraction of it done), so
/// epoch-based recipes (x0.96 every 8 epochs) and per-iteration ones (Caffe's poly) share one clock.
/// </summary>
public interface ILearningRateSchedule
{
    double At(double epochProgress);

    /// <summary>A short description for config files and logs.</summary>
    string Describe();
}

public sealed class ConstantSchedule(double learningRate) : ILearningRateSchedule
{
    public double At(double epochProgress) => learningRate;

    public string Describe() => $"constant {learningRate}";
}

/// <summary>lr * gamma^floor(epoch / stepEpochs); the paper's recipe is gamma 0.96 every 8 epochs.</summary>
public sealed class StepSchedule : ILearningRateSchedule
{
    public StepSchedule(double learningRate, int stepEpochs, double gamma)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(stepEpochs);
        LearningRate = learningRate;
        StepEpochs = stepEpochs;
        Gamma = gamma;
    }

    public double LearningRate { get; }

    public int StepEpochs { get; }

    public double Gamma { get; }

    /// <summary>Szegedy et al.: decrease by 4% every 8 epochs.</summary>
    public static StepSchedule Paper(double learningRate) => new(learningRate, 8, 0.96);

    // Whole epochs only: the drop happens at the start of epoch 8, 16, ..., as the recipe counts.
    public double At(double epochProgress) => LearningRate * Math.Pow(Gamma, Math.Floor(Math.Floor(epochProgress) / StepEpochs));

    public string Describe() => $"step {LearningRate} x{Gamma} every {StepEpochs} epochs";
}

/// <summary>Caffe's "poly": lr * (1 - progress / total)^power, zero at the end.</summary>
public sealed class PolySchedule : ILearningRateSchedule
{
    public PolySchedule(double learningRate, double totalEpochs, double power)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalEpochs);
        LearningRate = learningRate;
        TotalEpochs = totalEpochs;
        Power = power;
    }

    public double LearningRate { get; }

    public double TotalEpochs { get; }

    public double Power { get; }

    public double At(double epochProgress) =>
        LearningRate * Math.Pow(Math.Max(0.0, 1.0 - epochProgress / TotalEpochs), Power);

    public string Describe() => $"poly {LearningRate} power {Power} over {TotalEpochs} epochs";
}

/// <summary>Half a cosine from lr down to a floor over the run (SGDR without restarts).</summary>
public sealed class CosineSchedule : ILearningRateSchedule
{
    public CosineSchedule(double learningRate, double totalEpochs, double minimum = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalEpochs);
        LearningRate = learningRate;
        TotalEpochs = totalEpochs;
        Minimum = minimum;
    }

    public double LearningRate { get; }

    public double TotalEpochs { get; }

    public double Minimum { get; }

    public double At(double epochProgress)
    {
        double t = Math.Clamp(epochProgress / TotalEpochs, 0.0, 1.0);
        return Minimum + (LearningRate - Minimum) * 0.5 * (1.0 + Math.Cos(Math.PI * t));
    }

    public string Describe() => $"cosine {LearningRate} to {Minimum} over {TotalEpochs} epochs";
}

/// <summary>
/// Scales another schedule linearly from <c>startFactor</c> to 1 over the first epochs, which keeps
/// large learning rates from blowing up a freshly initialised network.
/// </summary>
public sealed class WarmupSchedule : ILearningRateSchedule
{
    public WarmupSchedule(ILearningRateSchedule inner, double warmupEpochs, double startFactor = 0)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(warmupEpochs);
        Inner = inner;
        WarmupEpochs = warmupEpochs;
        StartFactor = startFactor;
    }

    public ILearningRateSchedule Inner { get; }

    public double WarmupEpochs { get; }

    public double StartFactor { get; }

    public double At(double epochProgress)
    {
        double inner = Inner.At(epochProgress);
        if (epochProgress >= WarmupEpochs)
        {
            return inner;
        }
        return inner * (StartFactor + (1.0 - StartFactor) * epochProgress / WarmupEpochs);
    }

    public string Describe() => $"{Inner.Describe()}, linear warm-up over {WarmupEpochs} epochs from x{StartFactor}";
}

public static class Schedules
{
    /// <summary>
    /// Parses a schedule name: constant, step:EPOCHS:GAMMA, paper, poly[:POWER], cosine[:MIN],
    /// each optionally followed by +warmup:EPOCHS.
    /// </summary>
    public static ILearningRateSchedule Parse(string text, double learningRate, double totalEpochs)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] parts = text.Split('+');
        ILearningRateSchedule schedule = ParseOne(parts[0], learningRate, totalEpochs, text);
        for (int i = 1; i < parts.Length; i++)
        {
            string[] fields = parts[i].Split(':');
            if (fields.Length != 2 || fields[0] != "warmup" || !TryDouble(fields[1], out double epochs) || epochs <= 0)
            {
                throw new ArgumentException($"Bad schedule '{text}': expected +warmup:EPOCHS after the schedule, got '+{parts[i]}'.");
            }
            schedule = new WarmupSchedule(schedule, epochs);
        }
        return schedule;
    }

    private static ILearningRateSchedule ParseOne(string text, double lr, double totalEpochs, string whole)
    {
        string[] f = text.Split(':');
        ArgumentException Bad() => new($"Bad schedule '{whole}': expected constant, paper, step:EPOCHS:GAMMA, poly[:POWER] or cosine[:MIN].");
        switch (f[0])
        {
            case "constant" when f.Length == 1:
                return new ConstantSchedule(lr);
            case "paper" when f.Length == 1:
                return StepSchedule.Paper(lr);
            case "step" when f.Length == 3 && int.TryParse(f[1], out int every) && every > 0 && TryDouble(f[2], out double gamma):
                return new StepSchedule(lr, every, gamma);
            case "poly" when f.Length == 1:
                return new PolySchedule(lr, totalEpochs, 0.5);
            case "poly" when f.Length == 2 && TryDouble(f[1], out double power):
                return new PolySchedule(lr, totalEpochs, power);
            case "cosine" when f.Length == 1:
                return new CosineSchedule(lr, totalEpochs);
            case "cosine" when f.Length == 2 && TryDouble(f[1], out double minimum):
                return new CosineSchedule(lr, totalEpochs, minimum);
            default:
                throw Bad();
        }
    }

    private static bool TryDouble(string text, out double value) =>
        double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out value);
}
