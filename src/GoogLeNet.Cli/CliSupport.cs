using System.CommandLine;
using System.Text.Json;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>Options shared by several commands, and the one place exceptions become exit codes.</summary>
internal static class CliSupport
{
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    public static Option<string> PresetOption(string defaultPreset = "torchvision") => new("--preset")
    {
        Description = "Network variant: paper, torchvision or d2l.",
        DefaultValueFactory = _ => defaultPreset,
    };

    public static Option<bool> JsonOption() => new("--json") { Description = "Print JSON instead of a table." };

    /// <summary>Parses "CxHxW" (e.g. 3x224x224).</summary>
    public static int[] ParseInput(string text)
    {
        string[] parts = text.Split('x', 'X');
        if (parts.Length != 3 || !parts.All(p => int.TryParse(p, out int v) && v > 0))
        {
            throw new ArgumentException($"--input expects CxHxW with positive integers (e.g. 3x224x224), got '{text}'.");
        }
        return parts.Select(int.Parse).ToArray();
    }

    public static GoogLeNetOptions BuildOptions(string preset, int? classes, string? input, bool aux)
    {
        GoogLeNetOptions options = GoogLeNetOptions.For(PresetNames.Parse(preset));
        if (classes is not null)
        {
            if (classes < 1)
            {
                throw new ArgumentException($"--classes must be at least 1, got {classes}.");
            }
            options = options with { Classes = classes.Value };
        }
        if (input is not null)
        {
            int[] shape = ParseInput(input);
            options = options with { InputChannels = shape[0], InputHeight = shape[1], InputWidth = shape[2] };
        }
        return options with { AuxLogits = aux };
    }

    /// <summary>Runs a command body; user errors print one line and exit 2, as scripts expect.</summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or FileNotFoundException
            or DirectoryNotFoundException or ShapeException or KeyNotFoundException or InvalidOperationException or IOException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    public static string Group(long value) => value.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
}
