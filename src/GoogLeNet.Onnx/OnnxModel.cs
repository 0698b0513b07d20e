using Google.Protobuf;
using GoogLeNet.Engine;
using Onnx;

namespace GoogLeNet.Onnx;

/// <summary>
/// An ONNX graph run by the engine's kernels: nodes in dependency order, float32 throughout.
/// Loading checks what it reads before it allocates (file size, element counts, stored byte
/// counts) and rejects external data; operators outside the supported set are refused by name.
/// </summary>
public sealed class OnnxModel
{
    /// <summary>A GoogLeNet is about 28 MB; a gigabyte leaves room for larger graphs and stops absurd files early.</summary>
    public const long DefaultMaxFileBytes = 1L << 30;

    /// <summary>Elements of one tensor: 2^28 floats is a gigabyte, far above any weight of these networks.</summary>
    public const long DefaultMaxElements = 1L << 28;

    public static readonly IReadOnlySet<string> SupportedOperators = OnnxOps.Supported;

    private readonly NodeProto[] _order;
    private readonly Dictionary<string, OnnxTensor> _initializers;

    private OnnxModel(ModelProto proto, long maxElements)
    {
        Proto = proto;
        GraphProto graph = proto.Graph ?? throw new InvalidDataException("The ONNX model has no graph.");
        Opset = FindOpset(proto);
        _initializers = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        foreach (TensorProto t in graph.Initializer)
        {
            if (!_initializers.TryAdd(t.Name, OnnxTensor.FromProto(t, maxElements)))
            {
                throw new InvalidDataException($"The ONNX graph has two initializers named '{t.Name}'.");
            }
        }
        if (graph.SparseInitializer.Count > 0)
        {
            throw new NotSupportedException("Sparse initializers are not supported.");
        }
        Inputs = graph.Input.Select(i => i.Name).Where(n => !_initializers.ContainsKey(n)).ToArray();
        Outputs = graph.Output.Select(o => o.Name).ToArray();
        foreach (NodeProto node in graph.Node)
        {
            if (!OnnxOps.Supported.Contains(node.OpType) || (node.Domain != "" && node.Domain != "ai.onnx"))
            {
                string domain = node.Domain is "" or "ai.onnx" ? "" : $" (domain '{node.Domain}')";
                throw new NotSupportedException(
                    $"ONNX operator '{node.OpType}'{domain} in node '{node.Name}' is not supported; supported: {string.Join(", ", OnnxOps.Supported.Order())}.");
            }
        }
        _order = TopologicalOrder(graph.Node, Inputs.Concat(_initializers.Keys));
        MaxElements = maxElements;
    }

    public ModelProto Proto { get; }

    /// <summary>Version of the default ONNX operator set the graph was written for.</summary>
    public long Opset { get; }

    /// <summary>Graph inputs that are not initializers: what <see cref="Run"/> needs.</summary>
    public IReadOnlyList<string> Inputs { get; }

    public IReadOnlyList<string> Outputs { get; }

    public long MaxElements { get; }

    public IReadOnlyDictionary<string, OnnxTensor> Initializers => _initializers;

    /// <summary>The last axis of the single output when the graph declares it: a classifier's number of classes.</summary>
    public int? OutputFeatures =>
        Proto.Graph.Output.Count == 1 && Proto.Graph.Output[0].Type?.TensorType?.Shape is { Dim.Count: > 0 } shape
            && shape.Dim[^1].HasDimValue && shape.Dim[^1].DimValue is > 0 and <= int.MaxValue
            ? (int)shape.Dim[^1].DimValue
            : null;

    /// <summary>The single input's first axis when the graph fixes it (the model zoo's graphs take one image).</summary>
    public int? FixedBatch =>
        Proto.Graph.Input.FirstOrDefault(i => i.Name == Inputs.FirstOrDefault())?.Type?.TensorType?.Shape is { Dim.Count: > 0 } shape
            && shape.Dim[0].HasDimValue && shape.Dim[0].DimValue is > 0 and <= int.MaxValue
            ? (int)shape.Dim[0].DimValue
            : null;

    /// <summary>The single output is a Softmax: the graph gives probabilities, not logits.</summary>
    public bool OutputIsSoftmax => Outputs.Count == 1 && _order.LastOrDefault(n => n.Output.Contains(Outputs[0]))?.OpType == "Softmax";

    public static OnnxModel Load(string path, long maxFileBytes = DefaultMaxFileBytes, long maxElements = DefaultMaxElements)
    {
        long length = new FileInfo(path).Length;
        if (length > maxFileBytes)
        {
            throw new InvalidDataException($"'{path}' is {length} bytes; ONNX models over {maxFileBytes} bytes are refused.");
        }
        try
        {
            return Parse(File.ReadAllBytes(path), maxElements);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
    }

    public static OnnxModel Parse(byte[] bytes, long maxElements = DefaultMaxElements)
    {
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"not a valid ONNX model: {e.Message}", e);
        }
        return new OnnxModel(proto, maxElements);
    }

    /// <summary>Runs a graph of one input and one output.</summary>
    public Tensor Run(Tensor input)
    {
        if (Inputs.Count != 1 || Outputs.Count != 1)
        {
            throw new InvalidOperationException($"The graph has {Inputs.Count} inputs and {Outputs.Count} outputs; name them to run it.");
        }
        return Run(new Dictionary<string, OnnxTensor> { [Inputs[0]] = OnnxTensor.FromTensor(input) })[Outputs[0]].ToTensor();
    }

    public IReadOnlyDictionary<string, OnnxTensor> Run(IReadOnlyDictionary<string, OnnxTensor> inputs)
    {
        var values = new Dictionary<string, OnnxTensor>(_initializers, StringComparer.Ordinal);
        foreach (string name in Inputs)
        {
            values[name] = inputs.TryGetValue(name, out OnnxTensor? value)
                ? value
                : throw new ArgumentException($"The graph input '{name}' was not given.");
        }
        foreach (NodeProto node in _order)
        {
            var args = new OnnxTensor?[node.Input.Count];
            for (int i = 0; i < args.Length; i++)
            {
                if (node.Input[i].Length > 0)
                {
                    args[i] = values[node.Input[i]];
                }
            }
            OnnxTensor[] results;
            try
            {
                results = OnnxOps.Run(node, args, Opset, MaxElements);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or InvalidDataException or OverflowException)
            {
                string name = string.IsNullOrEmpty(node.Name) ? string.Join(",", node.Output) : node.Name;
                throw e is NotSupportedException
                    ? new NotSupportedException($"{node.OpType} node '{name}': {e.Message}", e)
                    : new InvalidDataException($"{node.OpType} node '{name}': {e.Message}", e);
            }
            for (int i = 0; i < results.Length && i < node.Output.Count; i++)
            {
                if (node.Output[i].Length > 0)
                {
                    values[node.Output[i]] = results[i];
                }
            }
        }
        var outputs = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        foreach (string name in Outputs)
        {
            outputs[name] = values.TryGetValue(name, out OnnxTensor? v)
                ? v
                : throw new InvalidDataException($"No node produces the graph output '{name}'.");
        }
        return outputs;
    }

    private static long FindOpset(ModelProto proto)
    {
        foreach (OperatorSetIdProto opset in proto.OpsetImport)
        {
            if (opset.Domain is "" or "ai.onnx")
            {
                return opset.Version;
            }
        }
        throw new InvalidDataException("The ONNX model imports no version of the default operator set.");
    }

    /// <summary>Kahn's algorithm, stable in file order; a node whose input nothing produces is an error.</summary>
    private static NodeProto[] TopologicalOrder(IReadOnlyList<NodeProto> nodes, IEnumerable<string> available)
    {
        var known = new HashSet<string>(available, StringComparer.Ordinal) { "" };
        var producers = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < nodes.Count; i++)
        {
            foreach (string output in nodes[i].Output.Where(o => o.Length > 0))
            {
                if (known.Contains(output) || !producers.TryAdd(output, i))
                {
                    throw new InvalidDataException($"The value '{output}' is produced twice (node '{nodes[i].Name}').");
                }
            }
        }
        var pending = new int[nodes.Count];
        var consumers = new List<int>[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
        {
            consumers[i] = [];
        }
        for (int i = 0; i < nodes.Count; i++)
        {
            foreach (string input in nodes[i].Input)
            {
                if (known.Contains(input))
                {
                    continue;
                }
                if (!producers.TryGetValue(input, out int producer))
                {
                    throw new InvalidDataException($"Node '{nodes[i].Name}' ({nodes[i].OpType}) reads '{input}', which no node, input or initializer provides.");
                }
                pending[i]++;
                consumers[producer].Add(i);
            }
        }
        var ready = new PriorityQueue<int, int>();
        for (int i = 0; i < nodes.Count; i++)
        {
            if (pending[i] == 0)
            {
                ready.Enqueue(i, i);
            }
        }
        var order = new List<NodeProto>(nodes.Count);
        while (ready.TryDequeue(out int i, out _))
        {
            order.Add(nodes[i]);
            foreach (int c in consumers[i])
            {
                if (--pending[c] == 0)
                {
                    ready.Enqueue(c, c);
                }
            }
        }
        if (order.Count != nodes.Count)
        {
            throw new InvalidDataException("The ONNX graph has a cycle.");
        }
        return [.. order];
    }
}
