using System.Text.Json;
using GoogLeNet.Cli;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests.Interop;

/// <summary>Known answers for each preset's preprocessing on a one-colour image (R 200, G 100, B 50).</summary>
public class ImagePreprocessorTests
{
    private static string SolidPath => Path.Combine(PthFixture.Source, "solid.png");

    private static float[] Load(Preset preset, out ImagePreprocessor preprocessor)
    {
        preprocessor = new ImagePreprocessor(preset);
        var input = new float[preprocessor.Length];
        preprocessor.Load(SolidPath, input);
        return input;
    }

    private static void AssertPlane(float[] input, int plane, int size, float expected, float tolerance)
    {
        ReadOnlySpan<float> values = input.AsSpan(plane * size * size, size * size);
        for (int i = 0; i < values.Length; i++)
        {
            Assert.True(Math.Abs(values[i] - expected) <= tolerance, $"plane {plane}, pixel {i}: expected {expected}, got {values[i]}");
        }
    }

    [Fact]
    public void TorchvisionScalesTo01AndNormalisesWithImageNetStatistics()
    {
        float[] input = Load(Preset.Torchvision, out ImagePreprocessor p);
        Assert.Equal((3, 224), (p.Channels, p.Size));
        AssertPlane(input, 0, 224, (200f / 255f - 0.485f) / 0.229f, 1e-6f);
        AssertPlane(input, 1, 224, (100f / 255f - 0.456f) / 0.224f, 1e-6f);
        AssertPlane(input, 2, 224, (50f / 255f - 0.406f) / 0.225f, 1e-6f);
    }

    [Fact]
    public void PaperIsCaffeStyleBgrWithMeansSubtracted()
    {
        float[] input = Load(Preset.Paper, out ImagePreprocessor p);
        Assert.Equal((3, 224), (p.Channels, p.Size));
        AssertPlane(input, 0, 224, 50f - 104f, 0f);
        AssertPlane(input, 1, 224, 100f - 117f, 0f);
        AssertPlane(input, 2, 224, 200f - 123f, 0f);
    }

    [Fact]
    public void D2lIsPillowGreyAt96()
    {
        float[] input = Load(Preset.D2l, out ImagePreprocessor p);
        Assert.Equal((1, 96), (p.Channels, p.Size));
        // Pillow's "L": (200 * 19595 + 100 * 38470 + 50 * 7471 + 32768) >> 16 = 124.
        AssertPlane(input, 0, 96, 124f / 255f, 0f);
    }

    [Fact]
    public void PredictRunsThePaperPresetFromATrainingCheckpoint()
    {
        string folder = Path.Combine(Path.GetTempPath(), "googlenet-paper-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            string weights = Path.Combine(folder, "paper.safetensors");
            var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Paper) with { Classes = 7 });
            // As googlenet train saves it: the optimizer's velocity rides along with the weights.
            GoogLeNet.Training.Checkpoint.Save(weights, model, new GoogLeNet.Engine.Optim.Sgd(model.Parameters, momentum: 0.9f));
            var stdout = new StringWriter();
            PredictCommand.Run(new PredictCommand.Settings([SolidPath], "paper", weights, null, 10, true, false, false, 16), stdout);

            JsonElement result = JsonDocument.Parse(stdout.ToString()).RootElement[0];
            Assert.Equal(7, result.GetProperty("top").GetArrayLength());
            Assert.False(result.TryGetProperty("logits", out _));
            double total = result.GetProperty("top").EnumerateArray().Sum(e => e.GetProperty("probability").GetDouble());
            Assert.Equal(1.0, total, 1e-5);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
