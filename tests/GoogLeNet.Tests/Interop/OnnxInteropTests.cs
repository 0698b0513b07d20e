using GoogLeNet.Engine;
using GoogLeNet.Models;
using GoogLeNet.Onnx;
using Xunit;

namespace GoogLeNet.Tests.Interop;

/// <summary>The PyTorch-saved torchvision googlenet, exported to ONNX and run again, still gives PyTorch's logits.</summary>
public class OnnxInteropTests(PthFixture fixture) : IClassFixture<PthFixture>
{
    // As for the .pth itself: the same input on both sides, float32 summation order apart.
    private const float FixedInputTolerance = 1e-4f;

    private void AssertPyTorchLogits(string onnxPath)
    {
        float[] expected = fixture.ExpectedArray("fixed_logits");
        float[] actual = OnnxModel.Load(onnxPath).Run(fixture.FixedInput()).Span.ToArray();
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(MathF.Abs(actual[i] - expected[i]) <= FixedInputTolerance,
                $"logit {i}: {actual[i]} through ONNX, PyTorch gives {expected[i]}");
        }
    }

    [Fact]
    public void ExportOfThePthMatchesPyTorch()
    {
        string path = Path.Combine(fixture.Folder, "api.onnx");
        OnnxExporter.Export(fixture.LoadModel(fixture.PthPath), path);
        AssertPyTorchLogits(path);
    }

    [Fact]
    public void CliExportOfThePthMatchesPyTorch()
    {
        string path = Path.Combine(fixture.Folder, "cli.onnx");
        var (code, output, error) = CliTests.Run("export", "--preset", "torchvision", "--weights", fixture.PthPath,
            "--no-transform-input", "-o", path);
        Assert.True(code == 0, error);
        Assert.Contains("logits [N, 10]", output);
        Assert.Contains("transform_input off", output);
        AssertPyTorchLogits(path);
    }

    [Fact]
    public void CliExportOfAPthKeepsTransformInputByDefault()
    {
        string path = Path.Combine(fixture.Folder, "transform.onnx");
        var (code, output, error) = CliTests.Run("export", "--preset", "torchvision", "--weights", fixture.PthPath, "-o", path);
        Assert.True(code == 0, error);
        Assert.Contains("transform_input on", output);
        GoogLeNetModel model = new(WeightIO.OptionsFor(fixture.Weights, Preset.Torchvision) with { AuxLogits = false, TransformInput = true });
        WeightIO.Load(model, fixture.Weights.Tensors);
        Tensor input = fixture.FixedInput();
        float[] expected = model.Forward(input).Logits.Span.ToArray();
        float[] actual = OnnxModel.Load(path).Run(input).Span.ToArray();
        // The engine's own kernels on both sides: only rounding, relative to the largest logit.
        float scale = Math.Max(1f, expected.Max(MathF.Abs));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(MathF.Abs(actual[i] - expected[i]) <= 1e-5f * scale,
                $"logit {i}: {actual[i]} through ONNX, the engine gives {expected[i]}");
        }
    }
}
