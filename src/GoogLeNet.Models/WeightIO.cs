using GoogLeNet.Engine;
using GoogLeNet.Interop;

namespace GoogLeNet.Models;

/// <summary>The tensors of a weights file and what the file says about itself.</summary>
public sealed record WeightFile(string Path, WeightFormat Format, IReadOnlyList<NamedTensor> Tensors, IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>The aux heads' keys are present (torchvision's pretrained files keep them).</summary>
    public bool HasAux => Tensors.Any(t => WeightIO.IsAuxKey(t.Name));

    /// <summary>Rows of fc.weight: the number of classes the weights were trained for.</summary>
    public int Classes
    {
        get
        {
            NamedTensor fc = Tensors.FirstOrDefault(t => t.Name == "fc.weight")
                ?? throw new InvalidDataException($"'{Path}' has no fc.weight, so the number of classes is unknown.");
            if (fc.Shape.Length != 2 || fc.Shape[0] < 1 || fc.Shape[0] > int.MaxValue)
            {
                throw new InvalidDataException($"'{Path}': expected fc.weight of shape [classes, 1024], found [{string.Join(", ", fc.Shape)}].");
            }
            return (int)fc.Shape[0];
        }
    }
}

public enum WeightFormat
{
    PyTorch,
    SafeTensors,
}

/// <summary>
/// What loading a state dict did: keys copied, and the differences between the file and the model.
/// Aux keys are ignored, not unexpected, when the model was built without aux heads.
/// </summary>
public sealed record WeightLoadReport(
    int Loaded,
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> Unexpected,
    IReadOnlyList<string> ShapeMismatches,
    IReadOnlyList<string> IgnoredAux,
    IReadOnlyList<string> DefaultedBatchCounters)
{
    public bool IsClean => Missing.Count == 0 && Unexpected.Count == 0 && ShapeMismatches.Count == 0;

    public string Describe() => string.Join(Environment.NewLine, Details().Prepend($"{Loaded} tensors loaded"));

    /// <summary>One line per kind of difference between the file and the model, naming the tensors.</summary>
    public IEnumerable<string> Details()
    {
        var lines = new List<string>(Problems());
        if (IgnoredAux.Count > 0)
        {
            lines.Add($"{IgnoredAux.Count} aux-head tensors ignored: the model has no aux heads");
        }
        if (DefaultedBatchCounters.Count > 0)
        {
            lines.Add($"{DefaultedBatchCounters.Count} num_batches_tracked counters absent from the file, left at 0");
        }
        return lines;
    }

    /// <summary>The differences that make a strict load fail: missing, unexpected and misshapen tensors.</summary>
    public IReadOnlyList<string> Problems()
    {
        var lines = new List<string>();
        if (Missing.Count > 0)
        {
            lines.Add($"missing from the file ({Missing.Count}): {FirstFew(Missing, ", ")}");
        }
        if (Unexpected.Count > 0)
        {
            lines.Add($"unexpected in the file ({Unexpected.Count}): {FirstFew(Unexpected, ", ")}");
        }
        if (ShapeMismatches.Count > 0)
        {
            lines.Add($"shape mismatches ({ShapeMismatches.Count}): {FirstFew(ShapeMismatches, "; ")}");
        }
        return lines;
    }

    // A file for another preset differs in hundreds of keys; the first few say what is wrong, the count says how much.
    private const int NamesShown = 10;

    private static string FirstFew(IReadOnlyList<string> names, string separator) =>
        names.Count <= NamesShown
            ? string.Join(separator, names)
            : $"{string.Join(separator, names.Take(NamesShown))}{separator}... and {names.Count - NamesShown} more";
}

/// <summary>
/// State dicts in and out of a <see cref="GoogLeNetModel"/>: keys are torchvision's module paths, so a
/// torchvision googlenet checkpoint maps onto the torchvision preset by name alone.
/// </summary>
public static class WeightIO
{
    public static bool IsAuxKey(string name) =>
        name.StartsWith("aux1.", StringComparison.Ordinal) || name.StartsWith("aux2.", StringComparison.Ordinal);

    /// <summary>Reads a <c>.pth</c> (PyTorch zip checkpoint) or <c>.safetensors</c> file, chosen by extension.</summary>
    public static WeightFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Weights file '{path}' does not exist.", path);
        }
        string extension = Path.GetExtension(path).ToLowerInvariant();
        return extension switch
        {
            ".pth" or ".pt" => new WeightFile(path, WeightFormat.PyTorch, PyTorchCheckpoint.Read(path), new Dictionary<string, string>()),
            ".safetensors" => ReadSafeTensors(path),
            _ => throw new ArgumentException($"Cannot tell the format of '{path}': expected a .pth or .safetensors file."),
        };
    }

    /// <summary>The options that fit a file's tensors: the preset's defaults, aux heads when the file has them, classes from fc.weight.</summary>
    public static GoogLeNetOptions OptionsFor(WeightFile file, Preset preset) =>
        GoogLeNetOptions.For(preset) with { Classes = file.Classes, AuxLogits = file.HasAux && preset != Preset.D2l };

    /// <summary>Reads <paramref name="path"/> and loads it into <paramref name="model"/> (see <see cref="Load"/>).</summary>
    public static WeightLoadReport LoadWeights(GoogLeNetModel model, string path, bool strict = true) =>
        Load(model, Read(path).Tensors, strict);

    /// <summary>
    /// Copies tensors into the model's parameters and buffers by name. When strict (the default), any missing
    /// key, unexpected key or shape mismatch throws one <see cref="InvalidDataException"/> naming them all and
    /// the model is left untouched; otherwise the matching tensors are copied and the report lists the rest.
    /// A num_batches_tracked counter missing from the file is not an error (PyTorch's BatchNorm tolerates that too).
    /// </summary>
    public static WeightLoadReport Load(GoogLeNetModel model, IReadOnlyList<NamedTensor> stateDict, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(stateDict);
        var byName = new Dictionary<string, NamedTensor>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        var ignoredAux = new List<string>();
        foreach (NamedTensor tensor in stateDict)
        {
            if (!byName.TryAdd(tensor.Name, tensor))
            {
                unexpected.Add(tensor.Name + " (duplicate)");
            }
        }

        var matches = new List<(Parameter Parameter, NamedTensor Tensor)>();
        var missing = new List<string>();
        var mismatches = new List<string>();
        var defaulted = new List<string>();
        var known = new HashSet<string>(StringComparer.Ordinal);
        foreach ((string path, Parameter parameter) in model.Parameters.All)
        {
            known.Add(path);
            if (!byName.TryGetValue(path, out NamedTensor? tensor))
            {
                if (path.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
                {
                    defaulted.Add(path);
                }
                else
                {
                    missing.Add(path);
                }
                continue;
            }
            if (!SameShape(tensor.Shape, parameter.Value.Shape))
            {
                mismatches.Add($"{path}: file [{string.Join(", ", tensor.Shape)}], model {Tensor.Format(parameter.Value.Shape)}");
                continue;
            }
            matches.Add((parameter, tensor));
        }
        foreach (NamedTensor tensor in byName.Values)
        {
            if (known.Contains(tensor.Name))
            {
                continue;
            }
            if (!model.HasAux && IsAuxKey(tensor.Name))
            {
                ignoredAux.Add(tensor.Name);
            }
            else
            {
                unexpected.Add(tensor.Name);
            }
        }

        var report = new WeightLoadReport(matches.Count, missing, unexpected, mismatches, ignoredAux, defaulted);
        if (strict && !report.IsClean)
        {
            throw new InvalidDataException(
                $"The weights do not fit this GoogLeNet ({model.Options.Preset.ToName()}, {model.Options.Classes} classes{(model.HasAux ? ", aux heads" : "")}):"
                + Environment.NewLine + string.Join(Environment.NewLine, report.Problems())
                + Environment.NewLine + OtherPresetThatFits(model.Options.Preset, byName) switch
                {
                    Preset other => $"They fit the {other.ToName()} preset. Nothing was loaded.",
                    null => "Nothing was loaded.",
                });
        }
        foreach ((Parameter parameter, NamedTensor tensor) in matches)
        {
            tensor.Values.CopyTo(parameter.Value.Span);
        }
        return report;
    }

    /// <summary>
    /// The preset other than <paramref name="tried"/> whose model takes exactly these keys and shapes (aux heads
    /// and batch counters optional), or null: turns "228 keys missing" into which --preset the file was made for.
    /// </summary>
    private static Preset? OtherPresetThatFits(Preset tried, IReadOnlyDictionary<string, NamedTensor> byName)
    {
        if (!byName.TryGetValue("fc.weight", out NamedTensor? fc) || fc.Shape.Length != 2 || fc.Shape[0] is < 1 or > 100_000)
        {
            return null;
        }
        foreach (Preset preset in Enum.GetValues<Preset>())
        {
            if (preset == tried)
            {
                continue;
            }
            var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { Classes = (int)fc.Shape[0], AuxLogits = false });
            var paths = new HashSet<string>(StringComparer.Ordinal);
            bool fits = true;
            foreach ((string path, Parameter parameter) in model.Parameters.All)
            {
                paths.Add(path);
                bool optional = path.EndsWith(".num_batches_tracked", StringComparison.Ordinal);
                if (byName.TryGetValue(path, out NamedTensor? tensor) ? !SameShape(tensor.Shape, parameter.Value.Shape) : !optional)
                {
                    fits = false;
                    break;
                }
            }
            if (fits && byName.Keys.All(name => IsAuxKey(name) || paths.Contains(name)))
            {
                return preset;
            }
        }
        return null;
    }

    /// <summary>The model's parameters and buffers in state_dict order; values are copies.</summary>
    public static IReadOnlyList<NamedTensor> StateDict(GoogLeNetModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Parameters.All
            .Select(p => new NamedTensor(
                p.Path,
                p.Parameter.Value.Shape.Select(d => (long)d).ToArray(),
                p.Parameter.Value.Span.ToArray(),
                p.Path.EndsWith(".num_batches_tracked", StringComparison.Ordinal) ? TensorDType.I64 : TensorDType.F32))
            .ToList();
    }

    /// <summary>Writes the model's state dict as safetensors (F32, counters I64), atomically.</summary>
    public static void SaveSafeTensors(GoogLeNetModel model, string path, IReadOnlyDictionary<string, string>? metadata = null) =>
        SafeTensors.Write(path, StateDict(model), metadata);

    private static WeightFile ReadSafeTensors(string path)
    {
        SafeTensorsFile file = SafeTensors.Read(path);
        return new WeightFile(path, WeightFormat.SafeTensors, file.Tensors, file.Metadata);
    }

    private static bool SameShape(long[] file, int[] model)
    {
        if (file.Length != model.Length)
        {
            return false;
        }
        for (int i = 0; i < file.Length; i++)
        {
            if (file[i] != model[i])
            {
                return false;
            }
        }
        return true;
    }
}
