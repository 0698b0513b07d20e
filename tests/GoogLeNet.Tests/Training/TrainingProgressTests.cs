using GoogLeNet.Cli;
using GoogLeNet.Training;
using Spectre.Console;
using Xunit;

namespace GoogLeNet.Tests.Training;

/// <summary>The live progress bar a terminal gets while training: what it shows per epoch.</summary>
public class TrainingProgressTests
{
    [Fact]
    public void TerminalBarShowsEpochStepLossAccuracyAndThroughput()
    {
        var output = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.Yes,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.Yes,
            Out = new AnsiConsoleOutput(output),
        });
        var progress = new TrainingProgress(console, epochs: 2, batchSize: 4);
        int result = progress.Run(() =>
        {
            progress.Step(new StepInfo(0, 5, 5, 5, 1.25, 0.5, 0.1, 321.5));
            progress.Step(new StepInfo(1, 2, 5, 7, 0.75, 0.625, 0.05, 300));
            return 42;
        });

        Assert.Equal(42, result);
        // The live display redraws with cursor movements; the text between them is what shows.
        string text = System.Text.RegularExpressions.Regex.Replace(output.ToString(), "\u001b\\[[0-9;?]*[A-Za-z]", "");
        Assert.Contains("epoch 1/2 step 5/5 loss 1.2500 acc 0.5000 lr 0.1 321.5 img/s", text);
        Assert.Contains("epoch 2/2 step 2/5 loss 0.7500 acc 0.6250 lr 0.05 300.0 img/s", text);
        Assert.Contains("100%", text); // the finished first epoch
        Assert.Contains("40%", text);  // two of five steps of the second
    }
}
