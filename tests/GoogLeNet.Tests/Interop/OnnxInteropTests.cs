using System.Text.Json;
using Google.Protobuf;
using GoogLeNet.Cli;
using GoogLeNet.Engine;
using GoogLeNet.Models;
using GoogLeNet.Onnx;
using Xunit;
using Proto = global::Onnx;

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

    private static JsonElement Predict(string weights)
    {
        var stdout = new StringWriter();
        PredictCommand.Run(new PredictCommand.Settings([PthFixture.ImagePath], "torchvision", weights, null, 3, true, true, true, 2), stdout);
        return JsonDocument.Parse(stdout.ToString()).RootElement[0];
    }

    private static void AssertSamePrediction(JsonElement expected, JsonElement actual, float tolerance)
    {
        float[] Probabilities(JsonElement p) => [.. p.GetProperty("top").EnumerateArray().Select(t => t.GetProperty("probability").GetSingle())];
        Assert.Equal(expected.GetProperty("top").EnumerateArray().Select(t => t.GetProperty("index").GetInt32()),
            actual.GetProperty("top").EnumerateArray().Select(t => t.GetProperty("index").GetInt32()));
        Assert.All(Probabilities(expected).Zip(Probabilities(actual)), p => Assert.True(MathF.Abs(p.First - p.Second) <= tolerance, $"{p.Second} vs {p.First}"));
    }

    [Fact]
    public void PredictRunsAnExportedGraphLikeItsWeights()
    {
        string path = Path.Combine(fixture.Folder, "predict.onnx");
        OnnxExporter.Export(fixture.LoadModel(fixture.PthPath), path);
        AssertSamePrediction(Predict(fixture.PthPath), Predict(path), 1e-5f);
    }

    [Fact]
    public void PredictTakesProbabilitiesFromAGraphEndingInSoftmaxWithOneImagePerRun()
    {
        Proto.ModelProto proto = OnnxExporter.Build(fixture.LoadModel(fixture.PthPath));
        proto.Graph.Node[^1].Output[0] = "fc_logits";
        var softmax = new Proto.NodeProto { OpType = "Softmax", Name = "prob" };
        softmax.Input.Add("fc_logits");
        softmax.Output.Add(OnnxExporter.OutputName);
        softmax.Attribute.Add(new Proto.AttributeProto { Name = "axis", Type = Proto.AttributeProto.Types.AttributeType.Int, I = 1 });
        proto.Graph.Node.Add(softmax);
        proto.Graph.Input[0].Type.TensorType.Shape.Dim[0] = new Proto.TensorShapeProto.Types.Dimension { DimValue = 1 };
        string path = Path.Combine(fixture.Folder, "zoo-like.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        AssertSamePrediction(Predict(fixture.PthPath), Predict(path), 1e-5f);
    }
}
