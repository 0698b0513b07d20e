using System.Diagnostics;
using GoogLeNet.Engine;
using GoogLeNet.Models;
using GoogLeNet.Onnx;

namespace GoogLeNet.Onnx.Tests;

/// <summary>Every preset exported to ONNX and run again by the importer gives the engine's own logits.</summary>
public class OnnxRoundTripTests
{
    // Same kernels on both sides; only BatchNorm's scale and shift are formed in another order,
    // so differences stay at float rounding of the logits' magnitude.
    private const float Tolerance = 1e-5f;

    internal static GoogLeNetModel SmallModel(string preset, bool transformInput = false)
    {
        GoogLeNetOptions options = GoogLeNetOptions.For(PresetNames.Parse(preset)) with
        {
            Classes = 10,
            InputHeight = 64,
            InputWidth = 64,
            TransformInput = transformInput,
        };
        var model = new GoogLeNetModel(options);
        // Fresh BatchNorm statistics are 0 and 1; give them values so the exported ones matter.
        var rng = new Random(5);
        foreach (var (path, parameter) in model.Parameters.All)
        {
            Span<float> values = parameter.Value.Span;
            if (path.EndsWith(".running_mean", StringComparison.Ordinal) || path.EndsWith(".bias", StringComparison.Ordinal))
            {
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = (float)(rng.NextDouble() - 0.5) * 0.2f;
                }
            }
            else if (path.EndsWith(".running_var", StringComparison.Ordinal) || path.EndsWith(".bn.weight", StringComparison.Ordinal))
            {
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = 0.5f + (float)rng.NextDouble();
                }
            }
        }
        return model;
    }

    internal static Tensor FixedInput(GoogLeNetModel model, int batch = 2)
    {
        var input = new Tensor(batch, model.Options.InputChannels, model.Options.InputHeight, model.Options.InputWidth);
        Span<float> span = input.Span;
        for (int i = 0; i < span.Length; i++)
        {
            span[i] = MathF.Sin(i * 0.37f) * 1.5f;
        }
        return input;
    }

    internal static string TempPath(string name) =>
        Path.Combine(Path.GetTempPath(), $"googlenet-onnx-{Environment.ProcessId}-{Guid.NewGuid():N}-{name}");

    [Theory]
    [InlineData("paper", false)]
    [InlineData("torchvision", false)]
    [InlineData("torchvision", true)]
    [InlineData("d2l", false)]
    public void ExportedGraphReproducesTheEngine(string preset, bool transformInput)
    {
        GoogLeNetModel model = SmallModel(preset, transformInput);
        Tensor input = FixedInput(model);
        float[] expected = model.Forward(input).Logits.Span.ToArray();
        string path = TempPath($"{preset}.onnx");
        try
        {
            OnnxExporter.Export(model, path);
            OnnxModel onnx = OnnxModel.Load(path);
            Assert.Equal([OnnxExporter.InputName], onnx.Inputs);
            Assert.Equal([OnnxExporter.OutputName], onnx.Outputs);
            Tensor actual = onnx.Run(input);
            Assert.Equal([2, 10], actual.Shape);
            float scale = Math.Max(1f, expected.Max(MathF.Abs));
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.True(MathF.Abs(actual.Span[i] - expected[i]) <= Tolerance * scale,
                    $"{preset}: logit {i} is {actual.Span[i]}, the engine gives {expected[i]}");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void InitializersAreTheParametersByPath()
    {
        GoogLeNetModel model = SmallModel("torchvision");
        var proto = OnnxExporter.Build(model);
        var names = proto.Graph.Initializer.Select(t => t.Name).ToHashSet();
        Assert.Contains("conv1.conv.weight", names);
        Assert.Contains("inception5b.branch4.1.bn.running_var", names);
        Assert.Contains("fc.weight", names);
        Assert.DoesNotContain(names, n => n.EndsWith("num_batches_tracked", StringComparison.Ordinal));
        Assert.Equal(13, proto.OpsetImport.Single().Version);
        Assert.DoesNotContain(proto.Graph.Node, n => n.OpType == "Dropout");
        OnnxModel onnx = OnnxModel.Parse(Google.Protobuf.MessageExtensions.ToByteArray(proto));
        foreach (var (path, parameter) in model.Parameters.All.Where(p => names.Contains(p.Path)))
        {
            Assert.Equal(parameter.Value.Span.ToArray(), onnx.Initializers[path].Floats);
        }
    }

    [Theory]
    [InlineData("paper")]
    [InlineData("torchvision")]
    [InlineData("d2l")]
    public void OnnxCheckerAcceptsTheExport(string preset)
    {
        const string python = "/usr/bin/python3";
        bool hasOnnx = File.Exists(python) && RunPython("-c", "import onnx").ExitCode == 0;
        Assert.True(hasOnnx, "This test needs Debian's python3-onnx (apt-get install python3-onnx) for onnx.checker.");
        string path = TempPath($"{preset}-check.onnx");
        try
        {
            OnnxExporter.Export(SmallModel(preset, transformInput: preset == "torchvision"), path);
            var (code, output) = RunPython("-c",
                "import sys, onnx; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); print('ok')", path);
            Assert.True(code == 0 && output.Contains("ok"), $"onnx.checker rejected the {preset} export: {output}");
        }
        finally
        {
            File.Delete(path);
        }

        static (int ExitCode, string Output) RunPython(params string[] args)
        {
            var start = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in args)
            {
                start.ArgumentList.Add(a);
            }
            using Process process = Process.Start(start)!;
            Task<string> output = process.StandardOutput.ReadToEndAsync();
            Task<string> error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(120_000))
            {
                process.Kill(entireProcessTree: true);
                return (-1, "python did not finish in 120 s");
            }
            return (process.ExitCode, output.Result + error.Result);
        }
    }
}
