using System.CommandLine;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using GoogLeNet.Engine;
using GoogLeNet.Models;
using GoogLeNet.Onnx;
using GoogLeNet.Training;

namespace GoogLeNet.Cli;

/// <summary>Classifies image files with a preset and its weights: top-k classes with softmax probabilities.</summary>
internal static class PredictCommand
{
    private const string OptimizerPrefix = "optimizer.";

    private static readonly string[] s_imageExtensions = [".jpg", ".jpeg", ".png"];

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>What predict was asked to do; a null <paramref name="Preset"/> means none was given: a googlenet
    /// train checkpoint's own preset, torchvision otherwise.</summary>
    public sealed record Settings(
        IReadOnlyList<string> Inputs, string? Preset, string Weights, string? Labels, int Top, bool Json, bool Logits,
        bool NoTransformInput, int BatchSize, int Crops = 1);

    public sealed record TopEntry(int Index, string Label, float Probability);

    public sealed record Prediction(string File, IReadOnlyList<TopEntry> Top, float[]? Logits);

    public static Command Create()
    {
        Argument<string[]> inputs = new("FILE|DIR") { Description = "Images (JPEG or PNG) or folders of them.", Arity = ArgumentArity.OneOrMore };
        Option<string> preset = CliSupport.PresetOption();
        Option<string> weights = new("--weights") { Description = "Weights: .pth (PyTorch state_dict), .safetensors, or an ONNX classifier graph (.onnx) run as it is.", Required = true };
        Option<string?> labels = new("--labels")
        {
            Description = "Class names: 'imagenet' (the default for 1000 classes) or a file with one name per line.",
        };
        Option<int> top = new("--top") { Description = "How many classes to show per image.", DefaultValueFactory = _ => 5 };
        Option<bool> json = CliSupport.JsonOption();
        Option<bool> logits = new("--logits") { Description = "With --json, include each image's logits." };
        Option<bool> noTransformInput = new("--no-transform-input")
        {
            Description = "Do not apply torchvision's transform_input (on by default for torchvision .pth weights).",
        };
        Option<int> batchSize = new("--batch-size") { Description = "Network inputs (images or crops) per forward pass.", DefaultValueFactory = _ => 16 };
        Option<int> crops = new("--crops")
        {
            Description = "Crops per image, whose probabilities are averaged: 1 (center), 10 (corners, center and mirrors) or 144 (the paper's).",
            DefaultValueFactory = _ => 1,
        };
        var command = new Command("predict",
            "Classify images: top-k classes with probabilities, per image. An image that cannot be read is reported on stderr and skipped; the exit code is then 1.")
        {
            inputs, preset, weights, labels, top, json, logits, noTransformInput, batchSize, crops,
        };
        command.SetAction(result => CliSupport.Run(() => Run(
            new Settings(
                result.GetValue(inputs)!, result.GetResult(preset) is { Implicit: false } ? result.GetValue(preset) : null,
                result.GetValue(weights)!, result.GetValue(labels),
                result.GetValue(top), result.GetValue(json), result.GetValue(logits), result.GetValue(noTransformInput),
                result.GetValue(batchSize), result.GetValue(crops)),
            Console.Out,
            Console.Error)));
        return command;
    }

    /// <summary>
    /// Classifies the images and writes the results to <paramref name="stdout"/>. Returns 0, or 1 when some
    /// images could not be read: each is named on <paramref name="stderr"/>, the others are classified, since one
    /// bad file in a folder of thousands should not cost the rest.
    /// </summary>
    public static int Run(Settings settings, TextWriter stdout, TextWriter? stderr = null)
    {
        if (settings.Top < 1)
        {
            throw new ArgumentException($"--top must be at least 1, got {settings.Top}.");
        }
        if (settings.BatchSize < 1)
        {
            throw new ArgumentException($"--batch-size must be at least 1, got {settings.BatchSize}.");
        }
        Preset? givenPreset = settings.Preset is null ? null : PresetNames.Parse(settings.Preset);
        List<string> files = ExpandInputs(settings.Inputs);
        ImagePreprocessor preprocessor;
        Func<Tensor, Tensor> forward;
        int classes;
        IReadOnlyList<string>? labels;
        bool onnx = IsOnnx(settings.Weights);
        WeightFile? weights = onnx ? null : WeightIO.Read(settings.Weights);
        if (weights is not null && ReadTrainCheckpoint(weights) is { } trained)
        {
            GoogLeNetOptions options = trained.Model.Options;
            if (givenPreset is Preset p && p != options.Preset)
            {
                throw new ArgumentException(
                    $"'{settings.Weights}' is a {options.Preset.ToName()} checkpoint, but --preset {settings.Preset} was given; leave --preset out with a googlenet train checkpoint.");
            }
            if (settings.Crops != 1)
            {
                throw new ArgumentException("--crops 10 and 144 need weights trained on a preset's crops; a googlenet train checkpoint saw whole images.");
            }
            preprocessor = ImagePreprocessor.ForTrainedInput(options.InputChannels, options.InputHeight);
            forward = x => trained.Model.Forward(x).Logits;
            classes = options.Classes;
            labels = ReadLabels(settings.Labels, classes) ?? trained.ClassNames;
        }
        else
        {
            Preset preset = givenPreset ?? Preset.Torchvision;
            preprocessor = new ImagePreprocessor(preset, settings.Crops);
            (forward, classes) = weights is null
                ? OnnxForward(settings.Weights)
                : NetworkOf(weights, preset, settings.NoTransformInput);
            labels = ReadLabels(settings.Labels, classes);
        }
        int k = Math.Min(settings.Top, classes);

        var predictions = new List<Prediction>(files.Count);
        int unreadable = 0;
        new CropAverager(forward, classes, preprocessor, settings.BatchSize).Run(
            files.Count,
            (image, crops) =>
            {
                try
                {
                    preprocessor.Load(files[image], crops);
                    return true;
                }
                catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
                {
                    (stderr ?? Console.Error).WriteLine($"error: {e.Message} (skipped)");
                    unreadable++;
                    return false;
                }
            },
            (image, probability, logits) =>
            {
                TopEntry[] best = Enumerable.Range(0, classes)
                    .OrderByDescending(c => probability[c]).ThenByDescending(c => logits[c]).ThenBy(c => c)
                    .Take(k)
                    .Select(c => new TopEntry(c, labels?[c] ?? c.ToString(System.Globalization.CultureInfo.InvariantCulture), probability[c]))
                    .ToArray();
                predictions.Add(new Prediction(files[image], best, settings.Logits ? logits : null));
            });

        if (settings.Json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(predictions, s_json));
        }
        else
        {
            foreach (Prediction prediction in predictions)
            {
                stdout.WriteLine(prediction.File);
                foreach (TopEntry entry in prediction.Top)
                {
                    stdout.WriteLine($"  {entry.Probability,7:F4}  {entry.Index,4}  {entry.Label}");
                }
            }
        }
        if (unreadable > 0)
        {
            (stderr ?? Console.Error).WriteLine($"error: {unreadable} of {files.Count} images could not be read; the other {files.Count - unreadable} were classified.");
            return 1;
        }
        return 0;
    }

    /// <summary>
    /// The network and class names of a googlenet train checkpoint (a .safetensors file whose metadata describes its
    /// network), or null for any other weights, which need a preset.
    /// </summary>
    private static (GoogLeNetModel Model, IReadOnlyList<string>? ClassNames)? ReadTrainCheckpoint(WeightFile file)
    {
        if (!Checkpoint.IsCheckpoint(file.Metadata))
        {
            return null;
        }
        GoogLeNetModel model = Checkpoint.LoadModel(file.Tensors, file.Metadata, file.Path);
        IReadOnlyList<string>? names = Checkpoint.ReadClassNames(file.Metadata, file.Path);
        if (names is not null && names.Count != model.Options.Classes)
        {
            throw new InvalidDataException($"'{file.Path}' names {names.Count} classes, but its network has {model.Options.Classes}.");
        }
        return (model, names);
    }

    /// <summary>The network behind a weights file: an ONNX graph run as it is, or the preset built around .pth or .safetensors weights.</summary>
    public static (Func<Tensor, Tensor> Forward, int Classes) LoadNetwork(string weights, Preset preset, bool noTransformInput) =>
        IsOnnx(weights) ? OnnxForward(weights) : NetworkOf(WeightIO.Read(weights), preset, noTransformInput);

    private static bool IsOnnx(string weights) => string.Equals(Path.GetExtension(weights), ".onnx", StringComparison.OrdinalIgnoreCase);

    private static (Func<Tensor, Tensor> Forward, int Classes) NetworkOf(WeightFile weights, Preset preset, bool noTransformInput)
    {
        GoogLeNetModel model = BuildModel(weights, preset, noTransformInput);
        return (x => model.Forward(x).Logits, model.Options.Classes);
    }

    /// <summary>
    /// An ONNX graph as the network: it already holds whatever its model did to the input, so only
    /// the preset's preprocessing comes before it. A graph ending in Softmax (the model zoo's) gives
    /// probabilities; their logarithm stands in for logits, whose softmax gives them back. A graph
    /// with a fixed batch runs one input at a time.
    /// </summary>
    private static (Func<Tensor, Tensor> Forward, int Classes) OnnxForward(string path)
    {
        OnnxModel graph = OnnxModel.Load(path);
        int classes = graph.OutputFeatures
            ?? throw new InvalidDataException($"'{path}': the graph's output does not declare its number of classes.");
        bool probabilities = graph.OutputIsSoftmax;
        int? fixedBatch = graph.FixedBatch;
        Tensor Forward(Tensor input)
        {
            int batch = input.Shape[0];
            int step = fixedBatch == 1 ? 1 : batch;
            int sample = input.Length / Math.Max(batch, 1);
            var output = new float[batch * classes];
            for (int start = 0; start < batch; start += step)
            {
                var slice = new Tensor(input.Data, input.Offset + start * sample, [step, .. input.Shape[1..]]);
                Tensor result = graph.Run(slice);
                if (result.Length != step * classes)
                {
                    throw new InvalidDataException($"'{path}': the graph gave {Tensor.Format(result.Shape)} for {step} inputs, expected [{step}, {classes}].");
                }
                result.Span.CopyTo(output.AsSpan(start * classes));
            }
            if (probabilities)
            {
                for (int i = 0; i < output.Length; i++)
                {
                    output[i] = MathF.Log(output[i]);
                }
            }
            return Tensor.FromArray(output, batch, classes);
        }
        return (Forward, classes);
    }

    /// <summary>
    /// The model the weights were made for: classes from fc.weight, no aux heads (inference never runs them),
    /// and for torchvision weights from a .pth the transform_input its pretrained builder turns on.
    /// </summary>
    public static GoogLeNetModel BuildModel(WeightFile weights, Preset preset, bool noTransformInput)
    {
        bool transformInput = preset == Preset.Torchvision && !noTransformInput && (weights.Format == WeightFormat.PyTorch
            || (weights.Metadata.TryGetValue(ImportCommand.TransformInputKey, out string? value) && value == "true"));
        var model = new GoogLeNetModel(WeightIO.OptionsFor(weights, preset) with { AuxLogits = false, TransformInput = transformInput });
        // A googlenet train checkpoint also holds the optimizer's state, which inference has no use for.
        WeightIO.Load(model, weights.Tensors.Where(t => !t.Name.StartsWith(OptimizerPrefix, StringComparison.Ordinal)).ToList());
        return model;
    }

    public static IReadOnlyList<string>? ReadLabels(string? spec, int classes)
    {
        IReadOnlyList<string>? labels = spec switch
        {
            null => classes == 1000 ? ImageNetLabels() : null,
            "imagenet" => ImageNetLabels(),
            _ => File.Exists(spec)
                ? File.ReadAllLines(spec).Reverse().SkipWhile(string.IsNullOrWhiteSpace).Reverse().ToArray()
                : throw new FileNotFoundException($"Labels file '{spec}' does not exist (use 'imagenet' for ImageNet's class names).", spec),
        };
        if (labels is not null && labels.Count != classes)
        {
            throw new ArgumentException($"--labels gives {labels.Count} names, but the weights have {classes} classes.");
        }
        return labels;
    }

    public static IReadOnlyList<string> ImageNetLabels()
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("GoogLeNet.Cli.imagenet_classes.txt")
            ?? throw new InvalidOperationException("The ImageNet class names are missing from this build.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    private static List<string> ExpandInputs(IReadOnlyList<string> inputs)
    {
        var files = new List<string>();
        foreach (string input in inputs)
        {
            if (Directory.Exists(input))
            {
                files.AddRange(Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories)
                    .Where(f => s_imageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                    .Order(StringComparer.Ordinal));
            }
            else if (File.Exists(input))
            {
                files.Add(input);
            }
            else
            {
                throw new FileNotFoundException($"'{input}' is neither an image file nor a folder.", input);
            }
        }
        if (files.Count == 0)
        {
            throw new ArgumentException($"No .jpg, .jpeg or .png images found in {string.Join(", ", inputs)}.");
        }
        return files;
    }
}
