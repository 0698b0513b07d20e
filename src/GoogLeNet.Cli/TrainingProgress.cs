using System.Globalization;
using GoogLeNet.Training;
using Spectre.Console;

namespace GoogLeNet.Cli;

/// <summary>
/// Training progress on stderr: on a terminal a live Spectre.Console bar per epoch (step, loss,
/// accuracy, learning rate, img/s, ETA); otherwise one plain line every twentieth of an epoch, which
/// is what logs and scripts read.
/// </summary>
internal sealed class TrainingProgress
{
    private readonly IAnsiConsole? _console;
    private readonly int _epochs;
    private readonly int _batchSize;
    private ProgressContext? _context;
    private ProgressTask? _task;
    private int _taskEpoch = -1;

    public TrainingProgress(IAnsiConsole? console, int epochs, int batchSize)
    {
        _console = console;
        _epochs = epochs;
        _batchSize = batchSize;
    }

    /// <summary>A live bar when stderr is a terminal, plain lines when it is redirected.</summary>
    public static TrainingProgress ForStandardError(int epochs, int batchSize) =>
        new(Console.IsErrorRedirected ? null : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }),
            epochs, batchSize);

    /// <summary>Runs <paramref name="training"/> inside the live display (or directly without one).</summary>
    public T Run<T>(Func<T> training)
    {
        if (_console is null)
        {
            return training();
        }
        return _console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                _context = context;
                try
                {
                    return training();
                }
                finally
                {
                    _context = null;
                }
            });
    }

    public void Step(StepInfo s)
    {
        string numbers = string.Create(CultureInfo.InvariantCulture,
            $"loss {s.Loss:F4} acc {s.Accuracy:F4} lr {s.LearningRate:G4} {s.ImagesPerSecond:F1} img/s");
        if (_context is null)
        {
            int reportEvery = Math.Max(1, s.BatchesPerEpoch / 20);
            if (s.Batch % reportEvery == 0 || s.Batch == s.BatchesPerEpoch)
            {
                double eta = (s.BatchesPerEpoch - s.Batch) * (double)_batchSize / Math.Max(s.ImagesPerSecond, 1e-9);
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"epoch {s.Epoch + 1}/{_epochs} step {s.Batch}/{s.BatchesPerEpoch} {numbers} ETA {eta:F0}s"));
            }
            return;
        }
        // Descriptions are Spectre markup; these hold no brackets, but escape them all the same.
        string description = Markup.Escape($"epoch {s.Epoch + 1}/{_epochs} step {s.Batch}/{s.BatchesPerEpoch} {numbers}");
        if (_task is null || _taskEpoch != s.Epoch)
        {
            _task = _context.AddTask(description, maxValue: s.BatchesPerEpoch);
            _taskEpoch = s.Epoch;
        }
        _task.Description = description;
        _task.Value = s.Batch;
    }

    /// <summary>A line on stdout; above the live display when both are the terminal.</summary>
    public void Line(string text)
    {
        if (_console is null || Console.IsOutputRedirected)
        {
            Console.WriteLine(text);
        }
        else
        {
            _console.WriteLine(text);
        }
    }
}
