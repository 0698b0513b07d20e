using Google.Protobuf;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;
using Onnx;

namespace GoogLeNet.Onnx;

/// <summary>
/// Writes the inference graph of a <see cref="GoogLeNetModel"/> as ONNX (opset 13): input "input"
/// (N, C, H, W) with a symbolic batch, output "logits". Initializers carry the parameter paths of
/// the state dict, so a graph and a safetensors file of the same model name their tensors alike.
/// BatchNorm stays a BatchNormalization node rather than being folded into the convolution, so
/// the exported tensors are the model's own, bit for bit. The aux heads and dropout only act in
/// training and are left out.
/// </summary>
public static class OnnxExporter
{
    public const int Opset = 13;

    /// <summary>IR version 7 is the one that goes with opset 13.</summary>
    public const long IrVersion = 7;

    public const string InputName = "input";

    public const string OutputName = "logits";

    public static ModelProto Build(GoogLeNetModel model)
    {
        var graph = new GraphProto { Name = $"googlenet_{model.Options.Preset.ToName()}" };
        var builder = new GraphBuilder(graph, model.Parameters);
        string x = InputName;
        foreach (Layer layer in model.ModulesInStateDictOrder())
        {
            x = builder.Emit(layer, layer.Name, x);
        }
        builder.RenameLast(x, OutputName);

        graph.Input.Add(ValueInfo(InputName, [null, model.Options.InputChannels, model.Options.InputHeight, model.Options.InputWidth]));
        graph.Output.Add(ValueInfo(OutputName, [null, model.Options.Classes]));
        var proto = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "GoogLeNet.NET",
            ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "",
            Graph = graph,
            DocString = $"GoogLeNet ({model.Options.Preset.ToName()} preset), {model.Options.Classes} classes, inference graph.",
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        return proto;
    }

    /// <summary>Writes the graph to a temporary file beside <paramref name="path"/> and renames it, so a reader never sees half a model.</summary>
    public static void Export(GoogLeNetModel model, string path)
    {
        ModelProto proto = Build(model);
        string full = Path.GetFullPath(path);
        string? directory = Path.GetDirectoryName(full);
        if (directory is not null && !Directory.Exists(directory))
        {
            // Otherwise the error would name the temporary file, which the user never asked for.
            throw new DirectoryNotFoundException($"Cannot write '{path}': the folder '{directory}' does not exist.");
        }
        string temp = full + $".tmp{Environment.ProcessId}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                proto.WriteTo(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }
        }
    }

    private static ValueInfoProto ValueInfo(string name, int?[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (int? d in dims)
        {
            shape.Dim.Add(d is null ? new TensorShapeProto.Types.Dimension { DimParam = "N" } : new TensorShapeProto.Types.Dimension { DimValue = d.Value });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }

    internal static TensorProto FloatTensor(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        foreach (int d in shape)
        {
            tensor.Dims.Add(d);
        }
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
        }
        tensor.RawData = ByteString.CopyFrom(bytes);
        return tensor;
    }

    private sealed class GraphBuilder(GraphProto graph, ParameterStore parameters)
    {
        private readonly HashSet<string> _initializers = [];

        public string Emit(Layer layer, string path, string input)
        {
            switch (layer)
            {
                case InceptionAux:
                    return input;
                case Inception inception:
                    var branches = inception.Children.Select(b => Emit(b, $"{path}.{b.Name}", input)).ToArray();
                    NodeProto concat = Node("Concat", path, branches);
                    concat.Attribute.Add(Int("axis", 1));
                    return concat.Output[0];
                case ConvBlock or Sequential:
                    string x = input;
                    foreach (Layer child in layer.Children)
                    {
                        x = Emit(child, $"{path}.{child.Name}", x);
                    }
                    return x;
                case Conv2d conv:
                    return EmitConv(conv, path, input);
                case BatchNorm2d bn:
                    NodeProto norm = Node("BatchNormalization", path,
                        input, Initializer($"{path}.weight"), Initializer($"{path}.bias"),
                        Initializer($"{path}.running_mean"), Initializer($"{path}.running_var"));
                    norm.Attribute.Add(Float("epsilon", bn.Epsilon));
                    norm.Attribute.Add(Float("momentum", 1f - bn.Momentum));
                    return norm.Output[0];
                case ReLU:
                    return Node("Relu", path, input).Output[0];
                case MaxPool2d pool:
                    NodeProto max = Node("MaxPool", path, input);
                    max.Attribute.Add(Ints("kernel_shape", pool.KernelSize, pool.KernelSize));
                    max.Attribute.Add(Ints("strides", pool.Stride, pool.Stride));
                    max.Attribute.Add(Ints("pads", pool.Padding, pool.Padding, pool.Padding, pool.Padding));
                    max.Attribute.Add(Int("ceil_mode", pool.CeilMode ? 1 : 0));
                    return max.Output[0];
                case LocalResponseNorm lrn:
                    NodeProto node = Node("LRN", path, input);
                    node.Attribute.Add(Int("size", lrn.Size));
                    node.Attribute.Add(Float("alpha", lrn.Alpha));
                    node.Attribute.Add(Float("beta", lrn.Beta));
                    node.Attribute.Add(Float("bias", lrn.K));
                    return node.Output[0];
                case AdaptiveAvgPool2d:
                    return Node("GlobalAveragePool", path, input).Output[0];
                case Flatten:
                    NodeProto flatten = Node("Flatten", path, input);
                    flatten.Attribute.Add(Int("axis", 1));
                    return flatten.Output[0];
                case Dropout:
                    return input;
                case Linear:
                    NodeProto gemm = Node("Gemm", path, input, Initializer($"{path}.weight"), Initializer($"{path}.bias"));
                    gemm.Attribute.Add(Int("transB", 1));
                    return gemm.Output[0];
                case TransformInput:
                    return EmitTransformInput(path, input);
                default:
                    throw new NotSupportedException($"ONNX export has no mapping for layer '{path}' of type {layer.TypeName}.");
            }
        }

        private string EmitConv(Conv2d conv, string path, string input)
        {
            NodeProto node = conv.Bias is null
                ? Node("Conv", path, input, Initializer($"{path}.weight"))
                : Node("Conv", path, input, Initializer($"{path}.weight"), Initializer($"{path}.bias"));
            node.Attribute.Add(Ints("kernel_shape", conv.KernelSize, conv.KernelSize));
            node.Attribute.Add(Ints("strides", conv.Stride, conv.Stride));
            node.Attribute.Add(Ints("pads", conv.Padding, conv.Padding, conv.Padding, conv.Padding));
            return node.Output[0];
        }

        // x * (std / 0.5) + (mean - 0.5) / 0.5 per channel, computed in double then rounded once,
        // exactly as the layer does.
        private string EmitTransformInput(string path, string input)
        {
            double[] mean = [0.485, 0.456, 0.406];
            double[] std = [0.229, 0.224, 0.225];
            float[] scale = [.. std.Select(s => (float)(s / 0.5))];
            float[] shift = [.. mean.Select((m, c) => (float)((m - 0.5) / 0.5))];
            graph.Initializer.Add(FloatTensor($"{path}.scale", scale, [1, 3, 1, 1]));
            graph.Initializer.Add(FloatTensor($"{path}.shift", shift, [1, 3, 1, 1]));
            NodeProto mul = Node("Mul", $"{path}.mul", input, $"{path}.scale");
            return Node("Add", path, mul.Output[0], $"{path}.shift").Output[0];
        }

        public void RenameLast(string from, string to)
        {
            NodeProto last = graph.Node[^1];
            if (last.Output[0] != from)
            {
                throw new InvalidOperationException($"The graph's last node writes '{last.Output[0]}', not the network output '{from}'.");
            }
            last.Output[0] = to;
        }

        private string Initializer(string path)
        {
            if (_initializers.Add(path))
            {
                Tensor value = parameters[path].Value;
                graph.Initializer.Add(FloatTensor(path, value.Span, value.Shape));
            }
            return path;
        }

        private NodeProto Node(string op, string name, params string[] inputs)
        {
            var node = new NodeProto { OpType = op, Name = name };
            node.Input.Add(inputs);
            node.Output.Add(name);
            graph.Node.Add(node);
            return node;
        }

        private static AttributeProto Int(string name, long value) =>
            new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

        private static AttributeProto Float(string name, float value) =>
            new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

        private static AttributeProto Ints(string name, params long[] values)
        {
            var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
            attribute.Ints.Add(values);
            return attribute;
        }
    }
}
