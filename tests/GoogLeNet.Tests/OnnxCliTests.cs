using System.Text.Json;
using GoogLeNet.Models;
using GoogLeNet.Onnx;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>googlenet export and onnx-suite as a user runs them.</summary>
public class OnnxCliTests
{
    [Fact]
    public void ExportWritesAGraphThatRunsLikeTheWeights()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"googlenet-onnx-cli-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Paper) with { Classes = 7, InputHeight = 64, InputWidth = 64 });
            string weights = Path.Combine(dir, "w.safetensors");
            WeightIO.SaveSafeTensors(model, weights);
            string onnx = Path.Combine(dir, "paper.onnx");
            var (code, output, error) = CliTests.Run("export", "--preset", "paper", "--weights", weights, "--input", "3x64x64", "-o", onnx);
            Assert.True(code == 0, error);
            Assert.Contains("opset 13", output);
            Assert.Contains("logits [N, 7]", output);
            Assert.Empty(Directory.GetFiles(dir, "*.tmp*"));

            var input = new Engine.Tensor(1, 3, 64, 64);
            for (int i = 0; i < input.Length; i++)
            {
                input.Span[i] = MathF.Cos(i * 0.11f);
            }
            float[] expected = model.Forward(input).Logits.Span.ToArray();
            float[] actual = OnnxModel.Load(onnx).Run(input).Span.ToArray();
            float scale = Math.Max(1f, expected.Max(MathF.Abs));
            Assert.All(expected.Zip(actual), p => Assert.True(MathF.Abs(p.First - p.Second) <= 1e-5f * scale, $"{p.Second} vs {p.First}"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ExportRejectsAnotherExtension()
    {
        var (code, _, error) = CliTests.Run("export", "--preset", "d2l", "-o", "model.bin");
        Assert.Equal(2, code);
        Assert.Contains(".onnx", error);
    }

    [Fact]
    public void ExportIntoAMissingFolderNamesTheFolder()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"googlenet-absent-{Guid.NewGuid():N}");
        var (code, _, error) = CliTests.Run("export", "--preset", "d2l", "-o", Path.Combine(missing, "model.onnx"));
        Assert.Equal(2, code);
        Assert.Contains($"the folder '{missing}' does not exist", error);
        Assert.DoesNotContain(".tmp", error);
    }

    [Fact]
    public void OnnxSuiteJsonHasTheContractFields()
    {
        const string nodeTests = "/usr/share/libonnx-testdata/data/node";
        if (!Directory.Exists(nodeTests))
        {
            // Off CI the check is optional; on CI (.ci/run installs it) a missing dependency fails.
            Assert.False(Environment.GetEnvironmentVariable("CI") == "true", "ONNX's node tests (Debian package libonnx-testdata) is required on CI.");
            return;
        }
        var (code, output, error) = CliTests.Run("onnx-suite", nodeTests, "--json");
        Assert.True(code == 0, output + error);
        using JsonDocument document = JsonDocument.Parse(output);
        Assert.True(document.RootElement.GetProperty("passed").GetInt32() > 80);
        Assert.Equal(0, document.RootElement.GetProperty("failed").GetInt32());
        foreach (JsonElement skip in document.RootElement.GetProperty("skipped").EnumerateArray())
        {
            Assert.False(string.IsNullOrEmpty(skip.GetProperty("test").GetString()));
            Assert.False(string.IsNullOrEmpty(skip.GetProperty("reason").GetString()));
        }
    }
}
