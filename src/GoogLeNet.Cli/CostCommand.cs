using System.CommandLine;
using System.Text.Json;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>The seed's cost argument: what the 1x1 reductions save, for the textbook 5x5 example and every block.</summary>
internal static class CostCommand
{
    public static Command Create()
    {
        Option<string> preset = CliSupport.PresetOption();
        Option<string?> input = new("--input") { Description = "Input shape CxHxW (default per preset)." };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("cost", "Multiply-accumulates of each Inception block with and without its 1x1 reductions.")
        {
            preset, input, json,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
            var model = new GoogLeNetModel(CliSupport.BuildOptions(result.GetValue(preset)!, null, result.GetValue(input), false));
            long naive = InceptionCost.Convolution(28, 28, 192, 32, 5);
            long reduced = InceptionCost.Reduced(28, 28, 192, 16, 32, 5);
            IReadOnlyList<InceptionCost.BlockCost> blocks = InceptionCost.Blocks(model);
            if (result.GetValue(json))
            {
                var document = new
                {
                    preset = model.Options.Preset.ToName(),
                    example = new { description = "5x5 conv 192->32 on 28x28", naive, reduced, reduction = 16 },
                    blocks = blocks.Select(b => new
                    {
                        name = b.Name, input = new[] { b.InChannels, b.Height, b.Width },
                        withReductions = b.WithReductions, withoutReductions = b.WithoutReductions,
                    }),
                };
                Console.WriteLine(JsonSerializer.Serialize(document, CliSupport.Json));
                return 0;
            }
            Console.WriteLine($"5x5 convolution 192 -> 32 channels on 28x28: {CliSupport.Group(naive)} MACs");
            Console.WriteLine($"with a 1x1 reduction to 16 channels first:  {CliSupport.Group(reduced)} MACs ({(double)naive / reduced:F1}x fewer)");
            Console.WriteLine();
            Console.WriteLine($"{"block",-12} {"input",-12} {"with 1x1 reductions",20} {"without",20} {"ratio",7}");
            foreach (var b in blocks)
            {
                Console.WriteLine($"{b.Name,-12} {b.InChannels + "x" + b.Height + "x" + b.Width,-12} {CliSupport.Group(b.WithReductions),20} {CliSupport.Group(b.WithoutReductions),20} {(double)b.WithoutReductions / b.WithReductions,7:F2}");
            }
            return 0;
        }));
        return command;
    }
}
