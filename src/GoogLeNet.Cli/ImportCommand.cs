using System.CommandLine;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>Converts a PyTorch checkpoint to safetensors after checking that it maps onto a preset, key by key.</summary>
internal static class ImportCommand
{
    /// <summary>Metadata key recording whether the weights expect torchvision's transform_input.</summary>
    public const string TransformInputKey = "transform_input";

    public static Command Create()
    {
        Argument<string> input = new("FILE") { Description = "PyTorch checkpoint (.pth) holding a googlenet state_dict." };
        Option<string> output = new("--output", "-o") { Description = "The .safetensors file to write.", Required = true };
        Option<string> preset = CliSupport.PresetOption();
        Option<bool> noTransformInput = new("--no-transform-input")
        {
            Description = "Record that the weights take plain ImageNet-normalised input (torchvision's pretrained weights need transform_input).",
        };
        var command = new Command("import", "Convert a PyTorch .pth state_dict to safetensors, checking every key and shape against the preset.")
        {
            input, output, preset, noTransformInput,
        };
        command.SetAction(result => CliSupport.Run(() => Run(
            result.GetValue(input)!, result.GetValue(output)!, result.GetValue(preset)!, result.GetValue(noTransformInput), Console.Out)));
        return command;
    }

    public static int Run(string input, string output, string presetName, bool noTransformInput, TextWriter stdout)
    {
        Preset preset = PresetNames.Parse(presetName);
        if (!string.Equals(Path.GetExtension(output), ".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"--output must name a .safetensors file, got '{output}'.");
        }
        if (string.Equals(Path.GetFullPath(input), Path.GetFullPath(output), StringComparison.Ordinal))
        {
            throw new ArgumentException($"--output '{output}' is the input file; import never overwrites its input.");
        }
        WeightFile file = WeightIO.Read(input);
        if (file.Format != WeightFormat.PyTorch)
        {
            throw new ArgumentException($"import reads PyTorch checkpoints (.pth), got '{input}'.");
        }
        var model = new GoogLeNetModel(WeightIO.OptionsFor(file, preset));
        WeightLoadReport report = WeightIO.Load(model, file.Tensors);
        bool transformInput = preset == Preset.Torchvision && !noTransformInput;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["preset"] = preset.ToName(),
            ["source"] = Path.GetFileName(input),
            [TransformInputKey] = transformInput ? "true" : "false",
        };
        WeightIO.SaveSafeTensors(model, output, metadata);
        long elements = model.Parameters.All.Sum(p => (long)p.Parameter.Value.Length);
        stdout.WriteLine($"wrote {output}: {model.Parameters.All.Count} tensors ({CliSupport.Group(elements)} values), "
            + $"{CliSupport.Group(model.Parameters.TrainableCount)} parameters");
        stdout.WriteLine($"preset {preset.ToName()}, {model.Options.Classes} classes{(model.HasAux ? ", aux heads" : "")}, "
            + $"transform_input {(transformInput ? "on" : "off")}; {report.Describe()}");
        return 0;
    }
}
