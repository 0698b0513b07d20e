using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using GoogLeNet.Data;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;
using GoogLeNet.Training;

namespace GoogLeNet.Cli;

internal static class EvalCommand
{
    public static Command Create()
    {
        Option<string?> checkpoint = new("--checkpoint") { Description = "A .safetensors file saved by googlenet train (last or best)." };
        Option<string?> weights = new("--weights")
        {
            Description = "Instead of --checkpoint: .pth (PyTorch state_dict), .safetensors, or an ONNX classifier graph (.onnx), "
                + "fed the preset's preprocessing as predict does.",
        };
        Option<string> preset = CliSupport.PresetOption();
        Option<bool> noTransformInput = new("--no-transform-input")
        {
            Description = "With --weights: do not apply torchvision's transform_input (on by default for torchvision .pth weights).",
        };
        Option<int> crops = new("--crops")
        {
            Description = "With --weights, crops per image whose probabilities are averaged: 1 (center), 10 (corners, center and mirrors) or 144 (the paper's).",
            DefaultValueFactory = _ => 1,
        };
        Option<bool> mirror = new("--mirror")
        {
            Description = "With --checkpoint, also run each image mirrored left to right and average the two softmax distributions (test-time flip).",
        };
        Option<string> dataset = new("--dataset") { Description = "fashion-mnist, mnist, cifar10 or folder:PATH.", DefaultValueFactory = _ => "fashion-mnist" };
        Option<string?> data = new("--data") { Description = "Dataset folder (default /usr/share/datasets/<name>)." };
        Option<int> batch = new("--batch") { Description = "Batch size (with --weights: network inputs, images or crops, per forward pass).", DefaultValueFactory = _ => 128 };
        Option<int> limit = new("--limit") { Description = "Evaluate the first N test images only." };
        Option<int?> threads = new("--threads") { Description = "Worker threads for the kernels (default: all cores)." };
        Option<bool> json = CliSupport.JsonOption();
        var command = new Command("eval", "Test-set loss, top-1 and top-5 accuracy, and per-class accuracy of a checkpoint or of weights (multi-crop with --crops).")
        {
            checkpoint, weights, preset, noTransformInput, crops, mirror, dataset, data, batch, limit, threads, json,
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
            int cropCount = result.GetValue(crops);
            if (cropCount is not (1 or 10 or 144))
            {
                throw new ArgumentException($"--crops must be 1, 10 or 144, got {cropCount}.");
            }
            string? checkpointPath = result.GetValue(checkpoint);
            string? weightsPath = result.GetValue(weights);
            if ((checkpointPath is null) == (weightsPath is null))
            {
                throw new ArgumentException("Give exactly one of --checkpoint (a googlenet train checkpoint) and --weights (.pth, .safetensors or .onnx).");
            }
            if (weightsPath is not null && result.GetValue(mirror))
            {
                throw new ArgumentException("--mirror goes with --checkpoint; with --weights, --crops 10 and 144 include mirrored crops.");
            }
            if (checkpointPath is not null && cropCount != 1)
            {
                // A train checkpoint saw its dataset's images resized to its input, not a preset's crops.
                throw new ArgumentException("--crops 10 and 144 need --weights and a preset: a --checkpoint is evaluated on whole images.");
            }
            IImageDataset test = Datasets.Limit(Datasets.Open(result.GetValue(dataset)!, result.GetValue(data), train: false), result.GetValue(limit));
            EvaluationResult r;
            if (checkpointPath is not null)
            {
                GoogLeNetModel model = Checkpoint.LoadModel(checkpointPath);
                if (result.GetResult(preset) is { Implicit: false } && PresetNames.Parse(result.GetValue(preset)!) != model.Options.Preset)
                {
                    // A checkpoint records the preset it was trained as; a different --preset is a mistake, not an override.
                    throw new ArgumentException(
                        $"'{checkpointPath}' is a {model.Options.Preset.ToName()} checkpoint, but --preset {result.GetValue(preset)} was given; leave --preset out with --checkpoint.");
                }
                int channels = Datasets.Channels(test);
                if (channels != model.Options.InputChannels || test.ClassCount != model.Options.Classes)
                {
                    throw new ArgumentException(
                        $"The checkpoint takes {model.Options.InputChannels}-channel images and {model.Options.Classes} classes; the dataset has {channels} channels and {test.ClassCount} classes.");
                }
                using var loader = new BatchLoader(test, Datasets.InputTransform(test, model.Options.InputHeight), result.GetValue(batch), shuffle: false, seed: 0);
                r = new Evaluator { AverageWithMirror = result.GetValue(mirror) }.Evaluate(model, loader);
            }
            else
            {
                r = EvaluateWeights(test, weightsPath!, PresetNames.Parse(result.GetValue(preset)!), result.GetValue(noTransformInput), cropCount, result.GetValue(batch));
            }
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { top1 = r.Top1, top5 = r.Top5, loss = r.Loss, count = r.Count, crops = result.GetValue(crops), mirror = result.GetValue(mirror) }, CliSupport.Json));
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

    /// <summary>
    /// Weights outside a train checkpoint, run on each test image through the preset's preprocessing with
    /// <paramref name="crops"/> crops, as predict does; top-1, top-5 and the loss use the probabilities averaged
    /// over the crops, which for one crop are the plain softmax.
    /// </summary>
    public static EvaluationResult EvaluateWeights(IImageDataset test, string weights, Preset preset, bool noTransformInput, int crops, int batchSize)
    {
        if (test.Count == 0)
        {
            throw new InvalidOperationException("The evaluation set is empty.");
        }
        var preprocessor = new ImagePreprocessor(preset, crops);
        (Func<Tensor, Tensor> forward, int classes) = PredictCommand.LoadNetwork(weights, preset, noTransformInput);
        if (test.ClassCount != classes)
        {
            throw new ArgumentException($"The weights have {classes} classes; the dataset has {test.ClassCount}.");
        }
        // Image folders are read from their files, as predict reads them, so both give the same inputs.
        ImageFolderDataset? folder = test switch
        {
            ImageFolderDataset f => f,
            SubsetDataset { Inner: ImageFolderDataset f } => f,
            _ => null,
        };
        var image = new ImageBuffer<byte>();
        var confusion = new long[classes, classes];
        double lossSum = 0;
        long top5 = 0;
        new CropAverager(forward, classes, preprocessor, batchSize).Run(
            test.Count,
            (index, destination) =>
            {
                if (folder is not null)
                {
                    preprocessor.Load(folder.Paths[index], destination);
                    return true;
                }
                test.ReadImage(index, image);
                preprocessor.Load(image, destination);
                return true;
            },
            (index, probabilities, _) =>
            {
                int label = test.GetLabel(index);
                lossSum -= Math.Log(Math.Max(probabilities[label], float.Epsilon));
                int best = 0;
                int ahead = 0;
                for (int c = 0; c < classes; c++)
                {
                    if (probabilities[c] > probabilities[best])
                    {
                        best = c;
                    }
                    if (probabilities[c] > probabilities[label] || (probabilities[c] == probabilities[label] && c < label))
                    {
                        ahead++;
                    }
                }
                confusion[label, best]++;
                if (ahead < 5)
                {
                    top5++;
                }
            });
        int count = test.Count;
        return EvaluationResult.FromCounts(lossSum, top5, count, confusion);
    }

    private static string Truncate(string name) => name.Length <= 16 ? name : name[..16];
}
