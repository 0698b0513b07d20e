using System.CommandLine;
using System.Text.Json;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

internal static class SummaryCommand
{
    public static Command Create()
    {
        Option<string> preset = CliSupport.PresetOption();
        Option<int?> classes = new("--classes") { Description = "Number of classes (default 1000; 10 for d2l)." };
        Option<string?> input = new("--input") { Description = "Input shape CxHxW (default 3x224x224; 1x96x96 for d2l)." };
        Option<bool> aux = new("--aux") { Description = "Include the auxiliary classifiers (training-time heads)." };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("summary", "Per-layer output shapes, parameters and multiply-accumulates, with totals.")
        {
            preset, classes, input, aux, json,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
            var options = CliSupport.BuildOptions(result.GetValue(preset)!, result.GetValue(classes), result.GetValue(input), result.GetValue(aux));
            var model = new GoogLeNetModel(options);
            Print(model, result.GetValue(json));
            return 0;
        }));
        return command;
    }

    private static void Print(GoogLeNetModel model, bool json)
    {
        IReadOnlyList<LayerSummary> rows = model.Summary();
        long parameters = model.Parameters.TrainableCount;
        long macs = rows.Sum(r => r.Macs);
        if (json)
        {
            var document = new
            {
                preset = model.Options.Preset.ToName(),
                input = model.InputShape,
                classes = model.Options.Classes,
                aux = model.HasAux,
                parameters,
                macs,
                layers = rows.Select(r => new { name = r.Name, type = r.Type, output = r.Output, parameters = r.Parameters, macs = r.Macs }),
            };
            Console.WriteLine(JsonSerializer.Serialize(document, CliSupport.Json));
            return;
        }
        Console.WriteLine($"GoogLeNet, preset {model.Options.Preset.ToName()}, input {string.Join("x", model.InputShape)}, {model.Options.Classes} classes{(model.HasAux ? ", aux heads (training only)" : "")}");
        Console.WriteLine($"{"layer",-16} {"type",-18} {"output",-16} {"parameters",12} {"MACs",16}");
        foreach (LayerSummary row in rows)
        {
            Console.WriteLine($"{row.Name,-16} {row.Type,-18} {string.Join("x", row.Output),-16} {CliSupport.Group(row.Parameters),12} {CliSupport.Group(row.Macs),16}");
        }
        Console.WriteLine($"{"total",-16} {"",-18} {"",-16} {CliSupport.Group(parameters),12} {CliSupport.Group(macs),16}");
    }
}
