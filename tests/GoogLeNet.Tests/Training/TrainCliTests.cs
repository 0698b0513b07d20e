using System.Diagnostics;
using System.Text.Json;
using GoogLeNet.Data;
using GoogLeNet.Engine;
using GoogLeNet.Models;
using GoogLeNet.Training;
using Xunit;

namespace GoogLeNet.Tests.Training;

/// <summary><c>googlenet train</c> and <c>googlenet eval</c> as a user runs them, on a few real Fashion-MNIST images.</summary>
[Collection("Training")]
public sealed class TrainCliTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "googlenet-traincli-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private static string[] TinyRun(string directory, int epochs = 1, string lr = "0.01") =>
    [
        "train", "--preset", "torchvision", "--dataset", "fashion-mnist", "--input-size", "32", "--epochs", epochs.ToString(),
        "--batch", "8", "--lr", lr, "--limit-train", "64", "--limit-test", "32", "--out", directory,
    ];

    [Fact]
    public void TrainWritesTheRunFolderAndEvalReadsItsCheckpoint()
    {
        string directory = Path.Combine(_root, "run");
        var (code, output, error) = CliTests.Run(TinyRun(directory));
        Assert.True(code == 0, error);
        string last = output.TrimEnd().Split('\n')[^1];
        Assert.Matches(@"test acc \d\.\d{3}; [\d.]+ img/s", last);
        foreach (string file in new[] { "config.json", "metrics.csv", "metrics.jsonl", "plot.svg", "plot.png", "last.safetensors", "best.safetensors" })
        {
            Assert.True(File.Exists(Path.Combine(directory, file)), file);
        }
        JsonElement metrics = JsonDocument.Parse(File.ReadAllLines(Path.Combine(directory, "metrics.jsonl")).Single()).RootElement;
        Assert.Equal(1, metrics.GetProperty("epoch").GetInt32());

        (code, output, error) = CliTests.Run("eval", "--checkpoint", Path.Combine(directory, "best.safetensors"),
            "--dataset", "fashion-mnist", "--limit", "32", "--json");
        Assert.True(code == 0, error);
        JsonElement result = JsonDocument.Parse(output).RootElement;
        Assert.Equal(32, result.GetProperty("count").GetInt32());
        Assert.Equal(metrics.GetProperty("test_accuracy").GetDouble(), result.GetProperty("top1").GetDouble());
        Assert.InRange(result.GetProperty("top5").GetDouble(), result.GetProperty("top1").GetDouble(), 1.0);
        Assert.True(result.GetProperty("loss").GetDouble() > 0);
        Assert.False(result.GetProperty("mirror").GetBoolean());

        (code, output, error) = CliTests.Run("eval", "--checkpoint", Path.Combine(directory, "best.safetensors"),
            "--dataset", "fashion-mnist", "--limit", "32", "--mirror", "--json");
        Assert.True(code == 0, error);
        JsonElement mirrored = JsonDocument.Parse(output).RootElement;
        Assert.Equal(32, mirrored.GetProperty("count").GetInt32());
        Assert.True(mirrored.GetProperty("mirror").GetBoolean());
        Assert.NotEqual(result.GetProperty("loss").GetDouble(), mirrored.GetProperty("loss").GetDouble());

        (code, _, error) = CliTests.Run("eval", "--checkpoint", Path.Combine(directory, "best.safetensors"),
            "--preset", "d2l", "--dataset", "fashion-mnist", "--limit", "32");
        Assert.Equal(2, code);
        Assert.Contains("is a torchvision checkpoint, but --preset d2l was given", error);
    }

    [Fact]
    public void PredictTakesATrainCheckpointAsItIsAndNamesItsClasses()
    {
        string directory = Path.Combine(_root, "predict");
        var (code, _, error) = CliTests.Run(TinyRun(directory));
        Assert.True(code == 0, error);
        string checkpoint = Path.Combine(directory, "best.safetensors");

        // Three test images as PNG files, grey stored as equal RGB channels.
        IImageDataset test = Datasets.Limit(Datasets.Open("fashion-mnist", null, train: false), 3);
        string images = Path.Combine(_root, "images");
        Directory.CreateDirectory(images);
        var image = new ImageBuffer<byte>();
        for (int i = 0; i < 3; i++)
        {
            test.ReadImage(i, image);
            byte[] rgb = new byte[image.Height * image.Width * 3];
            for (int p = 0; p < image.Height * image.Width; p++)
            {
                rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = image.Data[p];
            }
            File.WriteAllBytes(Path.Combine(images, $"{i}.png"), PngPlot.Encode(image.Width, image.Height, rgb));
        }

        // No --preset: the checkpoint's own (a 1-channel 32x32 torchvision network) and its input.
        (code, string output, error) = CliTests.Run("predict", images, "--weights", checkpoint, "--json", "--logits", "--top", "3");
        Assert.True(code == 0, error);

        GoogLeNetModel model = Checkpoint.LoadModel(checkpoint);
        using var loader = new BatchLoader(test, Datasets.InputTransform(test, 32), 3, shuffle: false, seed: 0);
        loader.StartEpoch(0);
        Batch batch = loader.Next()!;
        float[] expected = model.Forward(new Tensor(batch.Images, 0, [3, 1, 32, 32])).Logits.Span.ToArray();
        JsonElement results = JsonDocument.Parse(output).RootElement;
        Assert.Equal(3, results.GetArrayLength());
        for (int i = 0; i < 3; i++)
        {
            JsonElement result = results[i];
            // The PNG's bytes are the dataset's and go through the same float operations, in a batch of the
            // same shape: the logits are the same numbers.
            Compare.Close(expected.AsSpan(i * 10, 10).ToArray(), GoldenFill.Floats(result.GetProperty("logits")), 0, $"image {i}");
            foreach (JsonElement entry in result.GetProperty("top").EnumerateArray())
            {
                Assert.Equal(test.ClassNames[entry.GetProperty("index").GetInt32()], entry.GetProperty("label").GetString());
            }
        }

        (code, _, error) = CliTests.Run("predict", images, "--weights", checkpoint, "--preset", "d2l");
        Assert.Equal(2, code);
        Assert.Contains("is a torchvision checkpoint, but --preset d2l was given", error);
    }

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public async Task InterruptSavesAndResumeFinishesTheRun(string signal, int exitCode)
    {
        string directory = Path.Combine(_root, "interrupted-" + signal);
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "googlenet.dll"));
        foreach (string arg in TinyRun(directory, epochs: 2))
        {
            start.ArgumentList.Add(arg);
        }
        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        bool signalled = false;
        while (await process.StandardError.ReadLineAsync() is string line)
        {
            if (!signalled && line.Contains("step 3/8", StringComparison.Ordinal))
            {
                using Process kill = Process.Start("kill", ["-" + signal, process.Id.ToString()])!;
                await kill.WaitForExitAsync();
                signalled = true;
            }
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(signalled, "the run never reported step 3");
        Assert.Equal(exitCode, process.ExitCode);
        Assert.Contains("continue with --resume", await output);
        Assert.True(File.Exists(Path.Combine(directory, "last.safetensors")));

        var (code, resumed, error) = CliTests.Run("train", "--resume", directory);
        Assert.True(code == 0, error);
        Assert.Contains("resuming", resumed);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(directory, "metrics.csv")).Length);
    }

    [Fact]
    public void ResumeWithMoreEpochsExtendsTheRunAndRecordsIt()
    {
        string directory = Path.Combine(_root, "extended");
        var (code, _, error) = CliTests.Run(TinyRun(directory, epochs: 1));
        Assert.True(code == 0, error);

        (code, _, error) = CliTests.Run("train", "--resume", directory, "--epochs", "2");
        Assert.True(code == 0, error);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(directory, "metrics.csv")).Length);
        Assert.Equal(2, JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, "config.json"))).RootElement.GetProperty("Epochs").GetInt32());

        // Fewer epochs than the run has done is refused, and the folder is left as it was.
        byte[] config = File.ReadAllBytes(Path.Combine(directory, "config.json"));
        (code, _, error) = CliTests.Run("train", "--resume", directory, "--epochs", "1");
        Assert.Equal(2, code);
        Assert.Contains("--epochs 1 is fewer than the 2 epochs", error);
        Assert.Equal(config, File.ReadAllBytes(Path.Combine(directory, "config.json")));
        Assert.Equal(3, File.ReadAllLines(Path.Combine(directory, "metrics.csv")).Length);
    }

    [Fact]
    public void NewRunIntoAFolderHoldingARunIsRefusedAndTouchesNothing()
    {
        string directory = Path.Combine(_root, "taken");
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), "{\"Epochs\": 7}");
        File.WriteAllBytes(Path.Combine(directory, "last.safetensors"), [1, 2, 3]);

        var (code, _, error) = CliTests.Run(TinyRun(directory));

        Assert.Equal(2, code);
        Assert.Contains("already holds a run (config.json, last.safetensors); continue it with --resume", error);
        Assert.Equal("{\"Epochs\": 7}", File.ReadAllText(Path.Combine(directory, "config.json")));
        Assert.Equal([1, 2, 3], File.ReadAllBytes(Path.Combine(directory, "last.safetensors")));
        Assert.Equal(2, Directory.GetFiles(directory).Length);
    }

    [Fact]
    public void DivergenceExitsWithCode3AndKeepsTheCheckpoint()
    {
        string directory = Path.Combine(_root, "diverged");
        var (code, _, error) = CliTests.Run(TinyRun(directory, lr: "1e30"));
        Assert.Equal(3, code);
        Assert.Contains("The loss became", error);
        Assert.Contains("(step ", error);
        Assert.True(File.Exists(Path.Combine(directory, "last.safetensors")));
    }

    [Fact]
    public void UnknownDatasetIsAUserError()
    {
        var (code, _, error) = CliTests.Run("train", "--dataset", "imagenet-22k", "--out", Path.Combine(_root, "bad"));
        Assert.Equal(2, code);
        Assert.Contains("Unknown dataset 'imagenet-22k'", error);
    }

    [Fact]
    public void AMissingDataFolderIsNamedAndNoRunFolderIsLeft()
    {
        string data = Path.Combine(_root, "no-such-cifar");
        string output = Path.Combine(_root, "cifar-run");

        var (code, _, error) = CliTests.Run("train", "--preset", "d2l", "--dataset", "cifar10", "--data", data, "--out", output);

        Assert.Equal(2, code);
        Assert.Contains($"The --data folder '{data}' for cifar10 does not exist.", error);
        Assert.False(Directory.Exists(output));
    }
}
