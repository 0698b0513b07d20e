using System.CommandLine;
using GoogLeNet.Models;
using GoogLeNet.Onnx;

namespace GoogLeNet.Cli;

/// <summary>Writes a preset, with its weights or freshly initialised, as an ONNX inference graph.</summary>
internal static class ExportCommand
{
    // A googlenet train checkpoint keeps the optimizer's state beside the weights; a graph has no use for it.
    private const string OptimizerPrefix = "optimizer.";

    public static Command Create()
    {
        Option<string> preset = CliSupport.PresetOption();
        Option<string?> weights = new("--weights") { Description = "Weights to export (.pth, .safetensors or a googlenet checkpoint); default: seeded initialisation." };
        Option<int?> classes = new("--classes") { Description = "Number of classes (default 1000, 10 for d2l; with --weights, taken from fc.weight)." };
        Option<string?> input = new("--input") { Description = "Input shape CxHxW recorded in the graph (the batch stays symbolic)." };
        Option<bool> noTransformInput = new("--no-transform-input")
        {
            Description = "Leave torchvision's transform_input out of the graph even for .pth weights.",
        };
        Option<string> output = new("--output", "-o") { Description = "The .onnx file to write.", Required = true };
        var command = new Command("export", "Write the inference graph (opset 13) as ONNX: Conv, BatchNormalization, Relu, MaxPool, LRN, Concat, GlobalAveragePool, Flatten, Gemm.")
        {
            preset, weights, classes, input, noTransformInput, output,
        };
        command.SetAction(result => CliSupport.Run(() => Run(
            result.GetValue(preset)!, result.GetValue(weights), result.GetValue(classes), result.GetValue(input),
            result.GetValue(noTransformInput), result.GetValue(output)!, Console.Out)));
        return command;
    }

    public static int Run(string presetName, string? weightsPath, int? classes, string? input, bool noTransformInput, string output, TextWriter stdout)
    {
        if (!string.Equals(Path.GetExtension(output), ".onnx", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"--output must name a .onnx file, got '{output}'.");
        }
        Preset preset = PresetNames.Parse(presetName);
        GoogLeNetOptions options = CliSupport.BuildOptions(presetName, classes, input, aux: false);
        WeightFile? file = null;
        if (weightsPath is not null)
        {
            file = WeightIO.Read(weightsPath);
            if (classes is not null && classes != file.Classes)
            {
                throw new ArgumentException($"--classes {classes} disagrees with the weights, which have {file.Classes} classes.");
            }
            bool transformInput = preset == Preset.Torchvision && !noTransformInput && (file.Format == WeightFormat.PyTorch
                || (file.Metadata.TryGetValue(ImportCommand.TransformInputKey, out string? value) && value == "true"));
            options = options with { Classes = file.Classes, TransformInput = transformInput };
        }
        var model = new GoogLeNetModel(options);
        string loaded = "seeded initialisation";
        if (file is not null)
        {
            WeightLoadReport report = WeightIO.Load(model,
                file.Tensors.Where(t => !t.Name.StartsWith(OptimizerPrefix, StringComparison.Ordinal)).ToList());
            loaded = $"weights from {Path.GetFileName(file.Path)}: {report.Describe()}";
        }
        OnnxExporter.Export(model, output);
        var proto = OnnxExporter.Build(model);
        stdout.WriteLine($"wrote {output}: opset {OnnxExporter.Opset}, {proto.Graph.Node.Count} nodes, {proto.Graph.Initializer.Count} initializers; "
            + $"{OnnxExporter.InputName} [N, {string.Join(", ", model.InputShape)}] -> {OnnxExporter.OutputName} [N, {model.Options.Classes}]");
        stdout.WriteLine($"preset {preset.ToName()}, transform_input {(model.Options.TransformInput ? "on" : "off")}; {loaded}");
        return 0;
    }
}
