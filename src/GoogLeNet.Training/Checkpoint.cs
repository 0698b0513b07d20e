using System.Text.Json;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Interop;
using GoogLeNet.Models;

namespace GoogLeNet.Training;

/// <summary>
/// Checkpoints as safetensors: the model's parameters and buffers under their torchvision paths,
/// the model options in the metadata (so a file alone rebuilds its network), and for training
/// checkpoints the SGD velocity as one more tensor and the <see cref="TrainingState"/> as metadata.
/// One file per checkpoint, written atomically, so weights and state can never disagree.
/// </summary>
public static class Checkpoint
{
    public const string VelocityName = "optimizer.velocity";

    public const string WeightAverageName = "optimizer.weight_average";

    private const string FormatKey = "format";
    private const string FormatValue = "googlenet-net-checkpoint-1";
    private const string OptionsKey = "model_options";
    private const string StateKey = "training_state";
    private const string ClassNamesKey = "class_names";

    private static readonly JsonSerializerOptions s_json = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>
    /// Writes the model (and, for a training checkpoint, the optimizer state); <paramref name="classNames"/>, the
    /// dataset's, go into the metadata so that predict can name its classes.
    /// </summary>
    public static void Save(string path, GoogLeNetModel model, Sgd? optimizer = null, TrainingState? state = null, float[]? weightAverage = null,
        IReadOnlyList<string>? classNames = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tensors = new List<NamedTensor>();
        foreach (var (name, parameter) in model.Parameters.All)
        {
            long[] shape = parameter.Value.Shape.Select(d => (long)d).ToArray();
            TensorDType dtype = parameter.Name == "num_batches_tracked" ? TensorDType.I64 : TensorDType.F32;
            tensors.Add(new NamedTensor(name, shape, parameter.Value.Span.ToArray(), dtype));
        }
        if (optimizer is not null)
        {
            tensors.Add(new NamedTensor(VelocityName, [optimizer.Velocity.Length], (float[])optimizer.Velocity.Clone()));
        }
        if (weightAverage is not null)
        {
            tensors.Add(new NamedTensor(WeightAverageName, [weightAverage.Length], (float[])weightAverage.Clone()));
        }
        var metadata = new Dictionary<string, string>
        {
            [FormatKey] = FormatValue,
            [OptionsKey] = JsonSerializer.Serialize(model.Options, s_json),
        };
        if (state is not null)
        {
            metadata[StateKey] = JsonSerializer.Serialize(state, s_json);
        }
        if (classNames is not null)
        {
            metadata[ClassNamesKey] = JsonSerializer.Serialize(classNames, s_json);
        }
        SafeTensors.Write(path, tensors, metadata);
    }

    /// <summary>The options of the network a checkpoint was saved from.</summary>
    public static GoogLeNetOptions ReadOptions(IReadOnlyDictionary<string, string> metadata, string path)
    {
        if (!metadata.TryGetValue(OptionsKey, out string? json))
        {
            throw new InvalidDataException($"'{path}' has no '{OptionsKey}' metadata; it was not saved by googlenet train.");
        }
        return JsonSerializer.Deserialize<GoogLeNetOptions>(json, s_json)
            ?? throw new InvalidDataException($"'{path}': the '{OptionsKey}' metadata is empty.");
    }

    /// <summary>True when the metadata is that of a googlenet train checkpoint (it describes its network).</summary>
    public static bool IsCheckpoint(IReadOnlyDictionary<string, string> metadata) => metadata.ContainsKey(OptionsKey);

    /// <summary>The class names of the dataset a checkpoint was trained on, or null when it does not record them.</summary>
    public static IReadOnlyList<string>? ReadClassNames(IReadOnlyDictionary<string, string> metadata, string path)
    {
        if (!metadata.TryGetValue(ClassNamesKey, out string? json))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize<string[]>(json, s_json)
                ?? throw new InvalidDataException($"'{path}': the '{ClassNamesKey}' metadata is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}': the '{ClassNamesKey}' metadata is not a list of names: {e.Message}", e);
        }
    }

    /// <summary>Builds the network a checkpoint describes and loads its weights.</summary>
    public static GoogLeNetModel LoadModel(string path)
    {
        SafeTensorsFile file = SafeTensors.Read(path);
        return LoadModel(file.Tensors, file.Metadata, path);
    }

    /// <summary>As <see cref="LoadModel(string)"/>, for a file already read.</summary>
    public static GoogLeNetModel LoadModel(IReadOnlyList<NamedTensor> tensors, IReadOnlyDictionary<string, string> metadata, string path)
    {
        var model = new GoogLeNetModel(ReadOptions(metadata, path));
        LoadWeights(tensors, path, model);
        return model;
    }

    /// <summary>Copies every parameter and buffer of the model from the file; names and shapes must match.</summary>
    public static void LoadWeights(IReadOnlyList<NamedTensor> tensors, string path, GoogLeNetModel model)
    {
        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var (name, parameter) in model.Parameters.All)
        {
            if (!byName.TryGetValue(name, out NamedTensor? tensor))
            {
                throw new InvalidDataException($"'{path}' has no tensor '{name}' that the model needs.");
            }
            if (!tensor.Shape.SequenceEqual(parameter.Value.Shape.Select(d => (long)d)))
            {
                throw new InvalidDataException(
                    $"'{path}': tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], the model expects {Tensor.Format(parameter.Value.Shape)}.");
            }
            tensor.Values.CopyTo(parameter.Value.Span);
        }
    }

    /// <summary>
    /// Restores weights, velocity, dropout generators and, when <paramref name="weightAverage"/> is
    /// given, the weight average; returns the saved training state.
    /// </summary>
    public static TrainingState LoadTraining(string path, GoogLeNetModel model, Sgd optimizer, float[]? weightAverage = null)
    {
        SafeTensorsFile file = SafeTensors.Read(path);
        LoadWeights(file.Tensors, path, model);
        LoadFlat(file, path, VelocityName, optimizer.Velocity, "it holds weights only, not a training state");
        if (weightAverage is not null)
        {
            LoadFlat(file, path, WeightAverageName, weightAverage, "the run was saved without weight averaging");
        }
        if (!file.Metadata.TryGetValue(StateKey, out string? json))
        {
            throw new InvalidDataException($"'{path}' has no '{StateKey}' metadata.");
        }
        TrainingState state = JsonSerializer.Deserialize<TrainingState>(json, s_json)
            ?? throw new InvalidDataException($"'{path}': the '{StateKey}' metadata is empty.");
        foreach (var (name, dropout) in DropoutLayers(model))
        {
            if (!state.DropoutStates.TryGetValue(name, out ulong generator))
            {
                throw new InvalidDataException($"'{path}' has no generator state for the dropout layer '{name}'.");
            }
            dropout.Generator.State = generator;
        }
        return state;
    }

    private static void LoadFlat(SafeTensorsFile file, string path, string name, float[] destination, string whyMissing)
    {
        NamedTensor tensor = file.Tensors.FirstOrDefault(t => t.Name == name)
            ?? throw new InvalidDataException($"'{path}' has no '{name}': {whyMissing}.");
        if (tensor.Values.Length != destination.Length)
        {
            throw new InvalidDataException(
                $"'{path}': '{name}' has {tensor.Values.Length} values, the model has {destination.Length} trainable values.");
        }
        tensor.Values.CopyTo(destination, 0);
    }

    /// <summary>The model's dropout layers by path; their generators are part of the training state.</summary>
    public static IEnumerable<(string Path, Dropout Layer)> DropoutLayers(GoogLeNetModel model)
    {
        static IEnumerable<(string, Dropout)> Walk(Layer layer, string path)
        {
            if (layer is Dropout dropout)
            {
                yield return (path, dropout);
            }
            foreach (Layer child in layer.Children)
            {
                foreach (var item in Walk(child, path + "." + child.Name))
                {
                    yield return item;
                }
            }
        }
        return model.ModulesInStateDictOrder().SelectMany(m => Walk(m, m.Name));
    }
}
