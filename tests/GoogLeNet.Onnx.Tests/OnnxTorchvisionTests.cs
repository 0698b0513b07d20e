using System.Diagnostics;
using System.Runtime.InteropServices;
using GoogLeNet.Engine;
using GoogLeNet.Onnx;

namespace GoogLeNet.Onnx.Tests;

/// <summary>PyTorch's own ONNX export of torchvision's googlenet, run by the importer, gives PyTorch's logits.</summary>
public class OnnxTorchvisionTests
{
    // Same float32 arithmetic in another order through 57 layers.
    private const float Tolerance = 1e-4f;

    private const string Python = "/usr/bin/python3";

    [Fact]
    public void TorchOnnxExportRunsWithPyTorchsLogits()
    {
        // The graphs are generated here rather than committed (25 MB each); without Debian's
        // python3-torch and python3-torchvision there is nothing to compare against.
        if (!File.Exists(Python) || RunPython(["-c", "import torch, torchvision, onnx"]).ExitCode != 0)
        {
            // Off CI the check is optional; on CI (.ci/run installs it) a missing dependency fails.
            Assert.False(Environment.GetEnvironmentVariable("CI") == "true", "PyTorch, torchvision and onnx for /usr/bin/python3 (Debian python3-torch, python3-torchvision, python3-onnx) is required on CI.");
            return;
        }
        string dir = Path.Combine(Path.GetTempPath(), $"googlenet-tv-onnx-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string script = Path.Combine(AppContext.BaseDirectory, "Scripts", "torchvision_export.py");
            var (code, output) = RunPython([script, dir]);
            Assert.True(code == 0, $"torchvision_export.py failed: {output}");
            float[] input = ReadFloats(Path.Combine(dir, "input.bin"));
            string[] graphs = Directory.GetFiles(dir, "tv*_opset*.onnx").Order(StringComparer.Ordinal).ToArray();
            Assert.Equal(5, graphs.Length);
            foreach (string graph in graphs)
            {
                string name = Path.GetFileNameWithoutExtension(graph);
                OnnxModel model = OnnxModel.Load(graph);
                float[] expected = ReadFloats(Path.Combine(dir, $"{name[..3]}.logits.bin"));
                float[] actual = model.Run(Tensor.FromArray(input, 2, 3, 64, 64)).Span.ToArray();
                Assert.Equal(expected.Length, actual.Length);
                for (int i = 0; i < expected.Length; i++)
                {
                    Assert.True(MathF.Abs(actual[i] - expected[i]) <= Tolerance,
                        $"{name}: logit {i} is {actual[i]}, PyTorch gives {expected[i]}");
                }
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static float[] ReadFloats(string path) => MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(path)).ToArray();

    private static (int ExitCode, string Output) RunPython(string[] args)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }
        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(300_000))
        {
            process.Kill(entireProcessTree: true);
            return (-1, "python did not finish in 300 s");
        }
        return (process.ExitCode, output.Result + error.Result);
    }
}
