using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using GoogLeNet.Data;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;
using GoogLeNet.Training;

namespace GoogLeNet.Cli;

internal static class EvalCommand
{
    public static Command Create()
    {
        Option<string> checkpoint = new("--checkpoint") { Description = "A .safetensors file saved by googlenet train (last or best).", Required = true };
        Option<string> dataset = new("--dataset") { Description = "fashion-mnist, mnist, cifar10 or folder:PATH.", DefaultValueFactory = _ => "fashion-mnist" };
        Option<string?> data = new("--data") { Description = "Dataset folder (default /usr/share/datasets/<name>)." };
        Option<int> batch = new("--batch") { Description = "Batch size.", DefaultValueFactory = _ => 128 };
        Option<int> limit = new("--limit") { Description = "Evaluate the first N test images only." };
        Option<int?> threads = new("--threads") { Description = "Worker threads for the kernels (default: all cores)." };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("eval", "Test-set loss, top-1 and top-5 accuracy, and per-class accuracy of a checkpoint.")
        {
            checkpoint, dataset, data, batch, limit, threads, json,
        };
        command.SetAction(result => CliSupport.Run(() =>
        {
            if (result.GetValue(threads) is int t)
            {
                Gemm.MaxThreads = t;
            }
            if (result.GetValue(batch) < 1)
            {
                throw new ArgumentException($"--batch must be at least 1, got {result.GetValue(batch)}.");
            }
            GoogLeNetModel model = Checkpoint.LoadModel(result.GetValue(checkpoint)!);
            IImageDataset test = Datasets.Limit(Datasets.Open(result.GetValue(dataset)!, result.GetValue(data), train: false), result.GetValue(limit));
            int channels = Datasets.Channels(test);
            if (channels != model.Options.InputChannels || test.ClassCount != model.Options.Classes)
            {
                throw new ArgumentException(
                    $"The checkpoint takes {model.Options.InputChannels}-channel images and {model.Options.Classes} classes; the dataset has {channels} channels and {test.ClassCount} classes.");
            }
            using var loader = new BatchLoader(test, Datasets.InputTransform(test, model.Options.InputHeight), result.GetValue(batch), shuffle: false, seed: 0);
            EvaluationResult r = new Evaluator().Evaluate(model, loader);
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { top1 = r.Top1, top5 = r.Top5, loss = r.Loss, count = r.Count }, CliSupport.Json));
                return 0;
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Count} images: top-1 {r.Top1:F4}, top-5 {r.Top5:F4}, loss {r.Loss:F4}"));
            Console.WriteLine("class            accuracy  predictions (confusion row)");
            for (int c = 0; c < r.PerClassAccuracy.Length; c++)
            {
                string row = string.Join(" ", Enumerable.Range(0, r.PerClassAccuracy.Length).Select(p => r.Confusion[c, p].ToString(CultureInfo.InvariantCulture).PadLeft(5)));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{Truncate(test.ClassNames[c]),-16} {r.PerClassAccuracy[c],8:F4}  {row}"));
            }
            return 0;
        }));
        return command;
    }

    private static string Truncate(string name) => name.Length <= 16 ? name : name[..16];
}
