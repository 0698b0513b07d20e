using System.Globalization;
using System.Text;
using System.Text.Json;

namespace GoogLeNet.Training;

/// <summary>
/// One run's folder: config.json, metrics.csv and metrics.jsonl (one row per epoch), plot.svg,
/// last.safetensors (weights and training state) and best.safetensors (weights of the best test
/// accuracy). Metrics files are rewritten whole from the checkpoint's history, so after a resume
/// they agree with the weights.
/// </summary>
public sealed class RunFolder
{
    private static readonly JsonSerializerOptions s_indented = new() { WriteIndented = true };
    private static readonly JsonSerializerOptions s_line = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public RunFolder(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        Path = directory;
    }

    public string Path { get; }

    public string LastPath => System.IO.Path.Combine(Path, "last.safetensors");

    public string BestPath => System.IO.Path.Combine(Path, "best.safetensors");

    public string ConfigPath => System.IO.Path.Combine(Path, "config.json");

    public string PlotPath => System.IO.Path.Combine(Path, "plot.svg");

    public string PngPlotPath => System.IO.Path.Combine(Path, "plot.png");

    /// <summary>Every file a run writes into its folder.</summary>
    public static IReadOnlyList<string> FileNames { get; } =
        ["config.json", "metrics.csv", "metrics.jsonl", "plot.svg", "plot.png", "last.safetensors", "best.safetensors"];

    /// <summary>The files of <see cref="FileNames"/> that <paramref name="directory"/> already holds: a new run there would overwrite them.</summary>
    public static string[] ExistingRunFiles(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        return FileNames.Where(name => File.Exists(System.IO.Path.Combine(directory, name))).ToArray();
    }

    public void WriteConfig(TrainConfig config) => WriteAtomically(ConfigPath, JsonSerializer.Serialize(config, s_indented) + "\n");

    public static TrainConfig ReadConfig(string directory)
    {
        string path = System.IO.Path.Combine(directory, "config.json");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"'{directory}' is not a run folder: it has no config.json.", path);
        }
        try
        {
            return JsonSerializer.Deserialize<TrainConfig>(File.ReadAllText(path))
                ?? throw new InvalidDataException($"'{path}' is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid run configuration: {e.Message}", e);
        }
    }

    public void WriteMetrics(IReadOnlyList<EpochMetrics> history)
    {
        var csv = new StringBuilder("epoch,train_loss,train_acc,test_loss,test_acc,test_top5,lr,seconds,img_per_s\n");
        var jsonl = new StringBuilder();
        foreach (EpochMetrics m in history)
        {
            csv.Append(CultureInfo.InvariantCulture,
                $"{m.Epoch},{F(m.TrainLoss)},{F(m.TrainAccuracy)},{F(m.TestLoss)},{F(m.TestAccuracy)},{F(m.TestTop5)},{F(m.LearningRate)},{F(m.Seconds)},{F(m.ImagesPerSecond)}\n");
            jsonl.Append(JsonSerializer.Serialize(m, s_line)).Append('\n');
        }
        WriteAtomically(System.IO.Path.Combine(Path, "metrics.csv"), csv.ToString());
        WriteAtomically(System.IO.Path.Combine(Path, "metrics.jsonl"), jsonl.ToString());
        WriteAtomically(PlotPath, SvgPlot.Render(history));
        WriteAtomically(PngPlotPath, PngPlot.Render(history));
    }

    private static string F(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    internal static void WriteAtomically(string path, string text) => WriteAtomically(path, Encoding.UTF8.GetBytes(text));

    internal static void WriteAtomically(string path, byte[] bytes)
    {
        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            stream.Write(bytes);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }
}
