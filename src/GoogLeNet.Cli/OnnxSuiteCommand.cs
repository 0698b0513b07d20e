using System.CommandLine;
using System.Text.Json;
using GoogLeNet.Onnx;

namespace GoogLeNet.Cli;

/// <summary>The ONNX backend node tests of the operators we implement, run through the importer.</summary>
internal static class OnnxSuiteCommand
{
    public const string DebianTestData = "/usr/share/libonnx-testdata/data/node";

    public static Command Create()
    {
        Argument<string> directory = new("DIR")
        {
            Description = $"Folder of node tests (Debian's libonnx-testdata: {DebianTestData}).",
            DefaultValueFactory = _ => DebianTestData,
        };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("onnx-suite", $"Run the ONNX node tests of the supported operators at rtol {OnnxSuite.RelativeTolerance}, atol {OnnxSuite.AbsoluteTolerance}.")
        {
            directory, json,
        };
        command.SetAction(result => CliSupport.Run(() => Run(result.GetValue(directory)!, result.GetValue(json), Console.Out)));
        return command;
    }

    public static int Run(string directory, bool json, TextWriter stdout)
    {
        OnnxSuiteResult result = OnnxSuite.Run(directory);
        if (json)
        {
            var document = new
            {
                passed = result.Passed,
                failed = result.Failed,
                skipped = result.Skipped.Select(s => new { test = s.Test, reason = s.Reason }),
                failures = result.Failures.Select(f => new { test = f.Test, reason = f.Reason }),
            };
            stdout.WriteLine(JsonSerializer.Serialize(document, CliSupport.Json));
        }
        else
        {
            foreach (OnnxSuiteNote failure in result.Failures)
            {
                stdout.WriteLine($"FAIL {failure.Test}: {failure.Reason}");
            }
            foreach (OnnxSuiteNote skip in result.Skipped)
            {
                stdout.WriteLine($"skip {skip.Test}: {skip.Reason}");
            }
            stdout.WriteLine($"{result.Passed} passed, {result.Failed} failed, {result.Skipped.Count} skipped");
        }
        return result.Failed == 0 ? 0 : 1;
    }
}
