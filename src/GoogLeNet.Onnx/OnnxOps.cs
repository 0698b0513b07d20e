using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using Onnx;

namespace GoogLeNet.Onnx;

/// <summary>
/// The ONNX operators GoogLeNet graphs use, on top of the engine's kernels. Configurations the
/// kernels do not cover (grouped or dilated convolutions, non-square pooling windows, auto_pad)
/// are refused with a <see cref="NotSupportedException"/> naming the attribute.
/// </summary>
internal static class OnnxOps
{
    public static readonly IReadOnlySet<string> Supported = new HashSet<string>(StringComparer.Ordinal)
    {
        "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "LRN", "Concat", "Flatten", "Gemm", "MatMul",
        "Add", "Mul", "Softmax", "Dropout", "BatchNormalization", "Reshape", "Identity", "Constant",
        "Gather", "Unsqueeze",
    };

    public static OnnxTensor[] Run(NodeProto node, OnnxTensor?[] inputs, long opset, long maxElements)
    {
        var a = new Attributes(node);
        OnnxTensor Input(int i) => i < inputs.Length && inputs[i] is not null
            ? inputs[i]!
            : throw new ArgumentException($"input {i} is missing.");
        return node.OpType switch
        {
            "Conv" => [Conv(Input(0), Input(1), inputs.Length > 2 ? inputs[2] : null, a)],
            "Relu" => [Map(Input(0), (x, y) => Elementwise.ReluForward(x, y))],
            "MaxPool" => [Pool(Input(0), a, max: true, node.Output.Count)],
            "AveragePool" => [Pool(Input(0), a, max: false, node.Output.Count)],
            "GlobalAveragePool" => [GlobalAveragePool(Input(0))],
            "LRN" => [Lrn(Input(0), a)],
            // Before opset 4 Concat's axis defaulted to 1, and the model zoo's oldest graphs rely on it.
            "Concat" => [Concat(inputs.Select((t, i) => Input(i)).ToArray(), a.Int("axis") ?? (opset < 4 ? 1 : throw new ArgumentException("Concat needs an axis.")))],
            "Flatten" => [Flatten(Input(0), (int)(a.Int("axis") ?? 1))],
            "Gemm" => [GemmOp(Input(0), Input(1), inputs.Length > 2 ? inputs[2] : null, a)],
            "MatMul" => [MatMul(Input(0), Input(1))],
            "Add" => [Broadcast(Input(0), Input(1), (x, y, z) => TensorPrimitives.Add(x, y, z), (x, y, z) => TensorPrimitives.Add(x, y, z))],
            "Mul" => [Broadcast(Input(0), Input(1), (x, y, z) => TensorPrimitives.Multiply(x, y, z), (x, y, z) => TensorPrimitives.Multiply(x, y, z))],
            "Softmax" => [Softmax(Input(0), a, opset)],
            "Dropout" => Dropout(Input(0), inputs, a, node.Output.Count),
            "BatchNormalization" => [BatchNorm(Input(0), Input(1), Input(2), Input(3), Input(4), a, node.Output.Count)],
            // Before opset 5 the target shape was an attribute rather than an input.
            "Reshape" => [Reshape(Input(0), opset < 5
                ? OnnxTensor.FromLongs(a.Ints("shape") ?? throw new ArgumentException("Reshape needs a shape."), [a.Ints("shape")!.Length])
                : Input(1), (a.Int("allowzero") ?? 0) != 0, maxElements)],
            "Identity" => [Input(0)],
            "Gather" => [Gather(Input(0), Input(1), a.Int("axis") ?? 0)],
            "Unsqueeze" => [Unsqueeze(Input(0), opset >= 13 ? Input(1).RequireLongs("axes") : a.Ints("axes") ?? throw new ArgumentException("Unsqueeze needs axes."))],
            "Constant" => [a.Tensor("value", maxElements) ?? throw new NotSupportedException("only Constant's 'value' attribute is supported.")],
            _ => throw new NotSupportedException($"operator '{node.OpType}' is not supported."),
        };
    }

    /// <summary>
    /// Every intermediate is allocated here, under the same cap as stored tensors, so a graph whose
    /// attributes blow a shape up fails with a message rather than exhausting memory.
    /// </summary>
    private static float[] Floats(long count) =>
        count <= OnnxModel.DefaultMaxElements
            ? new float[count]
            : throw new InvalidDataException($"an intermediate of {count} values exceeds the cap of {OnnxModel.DefaultMaxElements}.");

    private static OnnxTensor Map(OnnxTensor x, SpanAction op)
    {
        float[] input = x.RequireFloats("input");
        var output = new float[input.Length];
        op(input, output);
        return OnnxTensor.FromFloats(output, x.Shape);
    }

    private delegate void SpanAction(ReadOnlySpan<float> input, Span<float> output);

    private delegate void SpanBinary(ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> output);

    private delegate void ScalarBinary(ReadOnlySpan<float> x, float y, Span<float> output);

    /// <summary>
    /// Spatial attributes of Conv and the pools for 2-D inputs: equal strides, no dilation, pads as
    /// (top, left, bottom, right) with auto_pad resolved the way ONNX defines it.
    /// </summary>
    private static (int KernelH, int KernelW, int Stride, int[] Pads) Window(Attributes a, OnnxTensor x, long[]? kernel, bool square)
    {
        if (x.Rank != 4)
        {
            throw new NotSupportedException($"only 2-D (NCHW) inputs are supported, got rank {x.Rank}.");
        }
        kernel = a.Ints("kernel_shape") ?? kernel ?? throw new ArgumentException("kernel_shape is missing.");
        long[] strides = a.Ints("strides") ?? [1, 1];
        long[] pads = a.Ints("pads") ?? [0, 0, 0, 0];
        long[] dilations = a.Ints("dilations") ?? [1, 1];
        if (kernel.Length != 2 || strides.Length != 2 || pads.Length != 4 || dilations.Length != 2)
        {
            throw new ArgumentException("kernel_shape, strides, pads and dilations must describe two spatial axes.");
        }
        if (dilations.Any(d => d != 1))
        {
            throw new NotSupportedException($"dilations [{string.Join(", ", dilations)}] are not supported.");
        }
        if (strides[0] != strides[1] || strides[0] < 1 || strides[0] > int.MaxValue)
        {
            throw new NotSupportedException($"strides [{string.Join(", ", strides)}]: only equal positive strides are supported.");
        }
        if (kernel[0] < 1 || kernel[1] < 1 || kernel[0] > int.MaxValue || kernel[1] > int.MaxValue || (square && kernel[0] != kernel[1]))
        {
            throw new NotSupportedException($"kernel_shape [{string.Join(", ", kernel)}]: only square windows are supported.");
        }
        int stride = (int)strides[0];
        string autoPad = a.String("auto_pad") ?? "NOTSET";
        int[] resolved;
        switch (autoPad)
        {
            case "NOTSET":
                // Padding wider than the window would only add outputs that see no input.
                if (pads.Any(p => p < 0) || pads[0] > kernel[0] || pads[2] > kernel[0] || pads[1] > kernel[1] || pads[3] > kernel[1])
                {
                    throw new ArgumentException($"pads [{string.Join(", ", pads)}] must be between 0 and the window [{string.Join(", ", kernel)}].");
                }
                resolved = [.. pads.Select(p => (int)p)];
                break;
            case "VALID":
                resolved = [0, 0, 0, 0];
                break;
            case "SAME_UPPER" or "SAME_LOWER":
                resolved = new int[4];
                for (int axis = 0; axis < 2; axis++)
                {
                    int size = x.Shape[2 + axis];
                    int total = Math.Max(((size + stride - 1) / stride - 1) * stride + (int)kernel[axis] - size, 0);
                    int small = total / 2;
                    resolved[axis] = autoPad == "SAME_UPPER" ? small : total - small;
                    resolved[axis + 2] = total - resolved[axis];
                }
                break;
            default:
                throw new ArgumentException($"auto_pad '{autoPad}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID.");
        }
        return ((int)kernel[0], (int)kernel[1], stride, resolved);
    }

    private static bool Symmetric(int[] pads) => pads.All(p => p == pads[0]);

    /// <summary>Copies NCHW planes into larger ones filled with <paramref name="fill"/>, for padding the kernels cannot express.</summary>
    private static (float[] Values, int Height, int Width) PadPlanes(float[] x, int planes, int height, int width, int[] pads, float fill)
    {
        int h = height + pads[0] + pads[2];
        int w = width + pads[1] + pads[3];
        var padded = Floats((long)planes * h * w);
        padded.AsSpan().Fill(fill);
        for (int p = 0; p < planes; p++)
        {
            for (int y = 0; y < height; y++)
            {
                Array.Copy(x, (p * height + y) * width, padded, (p * h + y + pads[0]) * w + pads[1], width);
            }
        }
        return (padded, h, w);
    }

    private static OnnxTensor Conv(OnnxTensor x, OnnxTensor w, OnnxTensor? b, Attributes a)
    {
        if ((a.Int("group") ?? 1) != 1)
        {
            throw new NotSupportedException($"group {a.Int("group")} is not supported; only group 1.");
        }
        if (w.Rank != 4 || x.Rank != 4 || w.Shape[1] != x.Shape[1])
        {
            throw new ArgumentException($"weight {Tensor.Format(w.Shape)} does not fit input {Tensor.Format(x.Shape)}.");
        }
        var (kh, kw, stride, pads) = Window(a, x, [w.Shape[2], w.Shape[3]], square: false);
        if (kh != w.Shape[2] || kw != w.Shape[3])
        {
            throw new ArgumentException($"kernel_shape [{kh}, {kw}] disagrees with the weight {Tensor.Format(w.Shape)}.");
        }
        int batch = x.Shape[0], ci = x.Shape[1], h = x.Shape[2], width = x.Shape[3], co = w.Shape[0];
        if (b is not null && (b.Rank != 1 || b.Shape[0] != co))
        {
            throw new ArgumentException($"bias {Tensor.Format(b.Shape)} does not match {co} output channels.");
        }
        float[] input = x.RequireFloats("X");
        int padding = pads[0];
        if (!Symmetric(pads))
        {
            (input, h, width) = PadPlanes(input, batch * ci, h, width, pads, 0f);
            padding = 0;
        }
        int oh = WindowMath.OutputSize(h, kh, stride, padding, false);
        int ow = WindowMath.OutputSize(width, kw, stride, padding, false);
        if (oh < 1 || ow < 1)
        {
            throw new ArgumentException($"input {Tensor.Format(x.Shape)} is smaller than the kernel.");
        }
        var output = Floats((long)batch * co * oh * ow);
        float[] col = Convolution.IsPointwise(kh, kw, stride, padding) ? [] : Floats((long)ci * kh * kw * oh * ow);
        Convolution.Forward(input, batch, ci, h, width, w.RequireFloats("W"), b is null ? default : b.RequireFloats("B"),
            co, kh, kw, stride, padding, oh, ow, relu: false, col, output);
        return OnnxTensor.FromFloats(output, [batch, co, oh, ow]);
    }

    private static OnnxTensor Pool(OnnxTensor x, Attributes a, bool max, int outputs)
    {
        if (max && (outputs > 1 || (a.Int("storage_order") ?? 0) != 0))
        {
            throw new NotSupportedException("MaxPool's Indices output and storage_order are not supported.");
        }
        var (k, _, stride, pads) = Window(a, x, null, square: true);
        bool ceil = (a.Int("ceil_mode") ?? 0) != 0;
        bool includePad = (a.Int("count_include_pad") ?? 0) != 0;
        int batch = x.Shape[0], c = x.Shape[1], h = x.Shape[2], w = x.Shape[3];
        int planes = batch * c;
        float[] input = x.RequireFloats("X");
        if (Symmetric(pads) && pads[0] <= k / 2)
        {
            int padding = pads[0];
            int oh = WindowMath.OutputSize(h, k, stride, padding, ceil);
            int ow = WindowMath.OutputSize(w, k, stride, padding, ceil);
            CheckPooled(x, k, oh, ow);
            var output = Floats((long)planes * oh * ow);
            if (max)
            {
                Pooling.MaxForward(input, planes, h, w, k, stride, padding, oh, ow, output);
            }
            else
            {
                Pooling.AverageForward(input, planes, h, w, k, stride, padding, includePad, oh, ow, output);
            }
            return OnnxTensor.FromFloats(output, [batch, c, oh, ow]);
        }
        if (ceil)
        {
            throw new NotSupportedException($"ceil_mode with pads [{string.Join(", ", pads)}] is not supported.");
        }
        // Uneven or wide padding: pad explicitly and pool without padding. Max pads with -infinity;
        // average pads with zeros and, without count_include_pad, divides by the pooled share of
        // real pixels (a plane of ones padded the same way).
        var (padded, ph, pw) = PadPlanes(input, planes, h, w, pads, max ? float.NegativeInfinity : 0f);
        int outH = WindowMath.OutputSize(ph, k, stride, 0, false);
        int outW = WindowMath.OutputSize(pw, k, stride, 0, false);
        CheckPooled(x, k, outH, outW);
        var result = Floats((long)planes * outH * outW);
        if (max)
        {
            Pooling.MaxForward(padded, planes, ph, pw, k, stride, 0, outH, outW, result);
            return OnnxTensor.FromFloats(result, [batch, c, outH, outW]);
        }
        Pooling.AverageForward(padded, planes, ph, pw, k, stride, 0, true, outH, outW, result);
        if (!includePad)
        {
            float[] ones = new float[h * w];
            ones.AsSpan().Fill(1f);
            var (mask, _, _) = PadPlanes(ones, 1, h, w, pads, 0f);
            var share = new float[outH * outW];
            Pooling.AverageForward(mask, 1, ph, pw, k, stride, 0, true, outH, outW, share);
            for (int p = 0; p < planes; p++)
            {
                Span<float> plane = result.AsSpan(p * share.Length, share.Length);
                TensorPrimitives.Divide(plane, share, plane);
            }
        }
        return OnnxTensor.FromFloats(result, [batch, c, outH, outW]);
    }

    private static void CheckPooled(OnnxTensor x, int k, int oh, int ow)
    {
        if (oh < 1 || ow < 1)
        {
            throw new ArgumentException($"input {Tensor.Format(x.Shape)} is smaller than the {k}x{k} window.");
        }
    }

    private static OnnxTensor GlobalAveragePool(OnnxTensor x)
    {
        if (x.Rank < 3)
        {
            throw new ArgumentException($"expected (N, C, spatial...), got {Tensor.Format(x.Shape)}.");
        }
        int planes = x.Shape[0] * x.Shape[1];
        int pixels = x.Length / Math.Max(planes, 1);
        float[] input = x.RequireFloats("X");
        var output = new float[planes];
        for (int p = 0; p < planes; p++)
        {
            output[p] = TensorPrimitives.Sum(input.AsSpan(p * pixels, pixels)) / pixels;
        }
        int[] shape = [.. x.Shape];
        shape.AsSpan(2).Fill(1);
        return OnnxTensor.FromFloats(output, shape);
    }

    private static OnnxTensor Lrn(OnnxTensor x, Attributes a)
    {
        long size = a.Int("size") ?? throw new ArgumentException("LRN needs a size.");
        if (size < 1 || size % 2 == 0)
        {
            // ONNX centres an even window one channel later than PyTorch, whose window the kernel uses.
            throw new NotSupportedException($"size {size}: only odd window sizes are supported.");
        }
        if (x.Rank < 2)
        {
            throw new ArgumentException($"expected (N, C, ...), got {Tensor.Format(x.Shape)}.");
        }
        int batch = x.Shape[0], c = x.Shape[1];
        int pixels = x.Length / Math.Max(batch * c, 1);
        var output = new float[x.Length];
        var scale = new float[x.Length];
        Normalization.LrnForward(x.RequireFloats("X"), batch, c, pixels, (int)size,
            a.Float("alpha") ?? 1e-4f, a.Float("beta") ?? 0.75f, a.Float("bias") ?? 1f, scale, output);
        return OnnxTensor.FromFloats(output, x.Shape);
    }

    private static int Axis(long axis, int rank, string what)
    {
        long resolved = axis < 0 ? axis + rank : axis;
        if (resolved < 0 || resolved >= Math.Max(rank, 1))
        {
            throw new ArgumentException($"{what} {axis} is outside a tensor of rank {rank}.");
        }
        return (int)resolved;
    }

    private static OnnxTensor Concat(OnnxTensor[] inputs, long axisAttribute)
    {
        OnnxTensor first = inputs[0];
        int axis = Axis(axisAttribute, first.Rank, "axis");
        foreach (OnnxTensor t in inputs)
        {
            if (t.Rank != first.Rank || Enumerable.Range(0, t.Rank).Any(d => d != axis && t.Shape[d] != first.Shape[d]))
            {
                throw new ArgumentException($"cannot concatenate {Tensor.Format(t.Shape)} with {Tensor.Format(first.Shape)} on axis {axis}.");
            }
        }
        int outer = (int)Tensor.ShapeSize(first.Shape.AsSpan(0, axis));
        int inner = (int)Tensor.ShapeSize(first.Shape.AsSpan(axis + 1));
        int[] shape = [.. first.Shape];
        shape[axis] = inputs.Sum(t => t.Shape[axis]);
        bool floats = first.Floats is not null;
        var output = floats ? (Array)Floats(Tensor.ShapeSize(shape)) : new long[Tensor.ShapeSize(shape)];
        int rowOut = shape[axis] * inner;
        int offset = 0;
        foreach (OnnxTensor t in inputs)
        {
            int row = t.Shape[axis] * inner;
            Array source = floats ? t.RequireFloats("input") : t.RequireLongs("input");
            for (int o = 0; o < outer; o++)
            {
                Array.Copy(source, o * row, output, o * rowOut + offset, row);
            }
            offset += row;
        }
        return floats ? OnnxTensor.FromFloats((float[])output, shape) : OnnxTensor.FromLongs((long[])output, shape);
    }

    private static OnnxTensor Flatten(OnnxTensor x, int axisAttribute)
    {
        int axis = axisAttribute < 0 ? axisAttribute + x.Rank : axisAttribute;
        if (axis < 0 || axis > x.Rank)
        {
            throw new ArgumentException($"axis {axisAttribute} is outside a tensor of rank {x.Rank}.");
        }
        int rows = (int)Tensor.ShapeSize(x.Shape.AsSpan(0, axis));
        int columns = (int)Tensor.ShapeSize(x.Shape.AsSpan(axis));
        return x.Floats is not null ? OnnxTensor.FromFloats(x.Floats, [rows, columns]) : OnnxTensor.FromLongs(x.Longs!, [rows, columns]);
    }

    private static OnnxTensor GemmOp(OnnxTensor a, OnnxTensor b, OnnxTensor? c, Attributes attributes)
    {
        bool transA = (attributes.Int("transA") ?? 0) != 0;
        bool transB = (attributes.Int("transB") ?? 0) != 0;
        float alpha = attributes.Float("alpha") ?? 1f;
        float beta = attributes.Float("beta") ?? 1f;
        if (a.Rank != 2 || b.Rank != 2)
        {
            throw new ArgumentException($"Gemm takes matrices, got {Tensor.Format(a.Shape)} and {Tensor.Format(b.Shape)}.");
        }
        int m = transA ? a.Shape[1] : a.Shape[0];
        int k = transA ? a.Shape[0] : a.Shape[1];
        int kb = transB ? b.Shape[1] : b.Shape[0];
        int n = transB ? b.Shape[0] : b.Shape[1];
        if (k != kb)
        {
            throw new ArgumentException($"inner dimensions differ: A {Tensor.Format(a.Shape)}{(transA ? "^T" : "")}, B {Tensor.Format(b.Shape)}{(transB ? "^T" : "")}.");
        }
        var y = Floats((long)m * n);
        Gemm.Multiply(transA, transB, m, n, k, a.RequireFloats("A"), a.Shape[1], b.RequireFloats("B"), b.Shape[1], y, n, accumulate: false);
        if (alpha != 1f)
        {
            TensorPrimitives.Multiply(y, alpha, y);
        }
        OnnxTensor result = OnnxTensor.FromFloats(y, [m, n]);
        if (c is null || beta == 0f)
        {
            return result;
        }
        OnnxTensor scaledC = beta == 1f ? c : Map(c, (x, o) => TensorPrimitives.Multiply(x, beta, o));
        OnnxTensor sum = Broadcast(result, scaledC, (x, z, o) => TensorPrimitives.Add(x, z, o), (x, z, o) => TensorPrimitives.Add(x, z, o));
        if (!sum.Shape.AsSpan().SequenceEqual(result.Shape))
        {
            throw new ArgumentException($"C {Tensor.Format(c.Shape)} does not broadcast to ({m}, {n}).");
        }
        return sum;
    }

    /// <summary>Matrix products over the last two axes; leading axes must agree, or B is a single matrix.</summary>
    private static OnnxTensor MatMul(OnnxTensor a, OnnxTensor b)
    {
        if (a.Rank < 2 || b.Rank < 2)
        {
            throw new NotSupportedException($"one-dimensional MatMul operands are not supported ({Tensor.Format(a.Shape)}, {Tensor.Format(b.Shape)}).");
        }
        int m = a.Shape[^2], k = a.Shape[^1], n = b.Shape[^1];
        if (b.Shape[^2] != k)
        {
            throw new ArgumentException($"inner dimensions differ: {Tensor.Format(a.Shape)} x {Tensor.Format(b.Shape)}.");
        }
        bool shared = b.Rank == 2;
        if (!shared && !a.Shape.AsSpan(0, a.Rank - 2).SequenceEqual(b.Shape.AsSpan(0, b.Rank - 2)))
        {
            throw new NotSupportedException($"broadcast batch axes are not supported ({Tensor.Format(a.Shape)} x {Tensor.Format(b.Shape)}).");
        }
        int batches = (int)Tensor.ShapeSize(a.Shape.AsSpan(0, a.Rank - 2));
        float[] x = a.RequireFloats("A"), w = b.RequireFloats("B");
        var y = Floats((long)batches * m * n);
        for (int i = 0; i < batches; i++)
        {
            Gemm.Multiply(false, false, m, n, k, x.AsSpan(i * m * k, m * k), k, shared ? w : w.AsSpan(i * k * n, k * n), n,
                y.AsSpan(i * m * n, m * n), n, accumulate: false);
        }
        return OnnxTensor.FromFloats(y, [.. a.Shape[..^1], n]);
    }

    /// <summary>NumPy broadcasting; the innermost run of equal axes goes to one vector call.</summary>
    private static OnnxTensor Broadcast(OnnxTensor left, OnnxTensor right, SpanBinary both, ScalarBinary scalar)
    {
        float[] x = left.RequireFloats("A"), y = right.RequireFloats("B");
        int rank = Math.Max(left.Rank, right.Rank);
        int[] ls = Pad(left.Shape, rank), rs = Pad(right.Shape, rank);
        var shape = new int[rank];
        for (int d = 0; d < rank; d++)
        {
            if (ls[d] != rs[d] && ls[d] != 1 && rs[d] != 1)
            {
                throw new ArgumentException($"shapes {Tensor.Format(left.Shape)} and {Tensor.Format(right.Shape)} do not broadcast.");
            }
            shape[d] = ls[d] == 1 ? rs[d] : ls[d];
        }
        var output = Floats(Tensor.ShapeSize(shape));
        if (ls.AsSpan().SequenceEqual(rs))
        {
            both(x, y, output);
            return OnnxTensor.FromFloats(output, shape);
        }
        if (y.Length == 1)
        {
            scalar(x, y[0], output);
            return OnnxTensor.FromFloats(output, shape);
        }
        long[] lStride = Strides(ls), rStride = Strides(rs);
        var index = new int[rank];
        var lone = new float[1];
        var rone = new float[1];
        var one = new float[1];
        for (int i = 0; i < output.Length; i++)
        {
            long li = 0, ri = 0;
            for (int d = 0; d < rank; d++)
            {
                li += index[d] * lStride[d];
                ri += index[d] * rStride[d];
            }
            lone[0] = x[li];
            rone[0] = y[ri];
            both(lone, rone, one);
            output[i] = one[0];
            for (int d = rank - 1; d >= 0 && ++index[d] == shape[d]; d--)
            {
                index[d] = 0;
            }
        }
        return OnnxTensor.FromFloats(output, shape);

        static int[] Pad(int[] s, int rank) => [.. Enumerable.Repeat(1, rank - s.Length), .. s];

        // Broadcast axes get stride 0, so one index walks both operands.
        static long[] Strides(int[] s)
        {
            var strides = new long[s.Length];
            long step = 1;
            for (int d = s.Length - 1; d >= 0; d--)
            {
                strides[d] = s[d] == 1 ? 0 : step;
                step *= s[d];
            }
            return strides;
        }
    }

    /// <summary>Opset 13 normalises along one axis; earlier opsets over everything from the axis on (default 1).</summary>
    private static OnnxTensor Softmax(OnnxTensor x, Attributes a, long opset)
    {
        float[] input = x.RequireFloats("input");
        var output = new float[input.Length];
        if (x.Length == 0)
        {
            return OnnxTensor.FromFloats(output, x.Shape);
        }
        int axis = Axis(a.Int("axis") ?? (opset >= 13 ? -1 : 1), x.Rank, "axis");
        if (opset < 13)
        {
            int row = (int)Tensor.ShapeSize(x.Shape.AsSpan(axis));
            for (int r = 0; r < input.Length / row; r++)
            {
                StableSoftmax(input.AsSpan(r * row, row), output.AsSpan(r * row, row));
            }
            return OnnxTensor.FromFloats(output, x.Shape);
        }
        int outer = (int)Tensor.ShapeSize(x.Shape.AsSpan(0, axis));
        int length = x.Shape[axis];
        int inner = (int)Tensor.ShapeSize(x.Shape.AsSpan(axis + 1));
        var line = new float[length];
        var result = new float[length];
        for (int o = 0; o < outer; o++)
        {
            for (int i = 0; i < inner; i++)
            {
                int start = o * length * inner + i;
                for (int j = 0; j < length; j++)
                {
                    line[j] = input[start + j * inner];
                }
                StableSoftmax(line, result);
                for (int j = 0; j < length; j++)
                {
                    output[start + j * inner] = result[j];
                }
            }
        }
        return OnnxTensor.FromFloats(output, x.Shape);
    }

    // TensorPrimitives.SoftMax exponentiates as is, so large inputs overflow to NaN; shifting by
    // the maximum first leaves the result unchanged and keeps every exponent at most 1.
    private static void StableSoftmax(ReadOnlySpan<float> x, Span<float> y)
    {
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, y);
        TensorPrimitives.SoftMax(y, y);
    }

    private static OnnxTensor[] Dropout(OnnxTensor x, OnnxTensor?[] inputs, Attributes a, int outputs)
    {
        if (inputs.Length > 2 && inputs[2] is { } training && (training.Floats?.Any(v => v != 0f) == true || training.Longs?.Any(v => v != 0) == true))
        {
            throw new NotSupportedException("training_mode true is not supported; only inference (identity).");
        }
        if (outputs > 1)
        {
            throw new NotSupportedException("the mask output is not supported (boolean tensors).");
        }
        return [x];
    }

    private static OnnxTensor BatchNorm(OnnxTensor x, OnnxTensor scale, OnnxTensor bias, OnnxTensor mean, OnnxTensor variance, Attributes a, int outputs)
    {
        if (outputs > 1 || (a.Int("training_mode") ?? 0) != 0)
        {
            throw new NotSupportedException("only inference BatchNormalization (one output, running statistics) is supported.");
        }
        if (x.Rank < 2)
        {
            throw new ArgumentException($"expected (N, C, ...), got {Tensor.Format(x.Shape)}.");
        }
        int batch = x.Shape[0], c = x.Shape[1];
        int pixels = (int)Tensor.ShapeSize(x.Shape.AsSpan(2));
        foreach (var (t, what) in new[] { (scale, "scale"), (bias, "B"), (mean, "mean"), (variance, "var") })
        {
            if (t.Rank != 1 || t.Shape[0] != c)
            {
                throw new ArgumentException($"{what} {Tensor.Format(t.Shape)} does not match {c} channels.");
            }
        }
        float epsilon = a.Float("epsilon") ?? 1e-5f;
        float[] v = variance.RequireFloats("var");
        var invStd = new float[c];
        for (int i = 0; i < c; i++)
        {
            invStd[i] = 1f / MathF.Sqrt(v[i] + epsilon);
        }
        var output = new float[x.Length];
        Normalization.BatchNormApply(x.RequireFloats("X"), batch, c, pixels, scale.RequireFloats("scale"), bias.RequireFloats("B"),
            mean.RequireFloats("mean"), invStd, output);
        return OnnxTensor.FromFloats(output, x.Shape);
    }

    private static OnnxTensor Reshape(OnnxTensor x, OnnxTensor shapeTensor, bool allowZero, long maxElements)
    {
        long[] requested = shapeTensor.RequireLongs("shape");
        var shape = new int[requested.Length];
        int inferred = -1;
        long known = 1;
        for (int i = 0; i < requested.Length; i++)
        {
            long d = requested[i];
            if (d == -1)
            {
                if (inferred >= 0)
                {
                    throw new ArgumentException("shape has more than one -1.");
                }
                inferred = i;
                continue;
            }
            if (d == 0 && !allowZero)
            {
                d = i < x.Rank ? x.Shape[i] : throw new ArgumentException($"shape copies axis {i}, which the input lacks.");
            }
            if (d < 0 || d > maxElements)
            {
                throw new ArgumentException($"shape [{string.Join(", ", requested)}] has an invalid dimension {d}.");
            }
            shape[i] = (int)d;
            known *= d;
            if (known > maxElements)
            {
                throw new ArgumentException($"shape [{string.Join(", ", requested)}] exceeds {maxElements} elements.");
            }
        }
        if (inferred >= 0)
        {
            if (known == 0 || x.Length % known != 0)
            {
                throw new ArgumentException($"cannot infer the -1 of [{string.Join(", ", requested)}] for {x.Length} elements.");
            }
            shape[inferred] = (int)(x.Length / known);
        }
        if (Tensor.ShapeSize(shape) != x.Length)
        {
            throw new ArgumentException($"cannot reshape {Tensor.Format(x.Shape)} to [{string.Join(", ", requested)}].");
        }
        return x.Floats is not null ? OnnxTensor.FromFloats(x.Floats, shape) : OnnxTensor.FromLongs(x.Longs!, shape);
    }

    /// <summary>Takes the slices at the given indices along one axis (PyTorch exports x[:, c] this way).</summary>
    private static OnnxTensor Gather(OnnxTensor data, OnnxTensor indices, long axisAttribute)
    {
        int axis = Axis(axisAttribute, data.Rank, "axis");
        long[] index = indices.RequireLongs("indices");
        float[] x = data.RequireFloats("data");
        int outer = (int)Tensor.ShapeSize(data.Shape.AsSpan(0, axis));
        int extent = data.Shape[axis];
        int inner = (int)Tensor.ShapeSize(data.Shape.AsSpan(axis + 1));
        int[] shape = [.. data.Shape[..axis], .. indices.Shape, .. data.Shape[(axis + 1)..]];
        var output = Floats(Tensor.ShapeSize(shape));
        for (int o = 0; o < outer; o++)
        {
            for (int j = 0; j < index.Length; j++)
            {
                long i = index[j] < 0 ? index[j] + extent : index[j];
                if (i < 0 || i >= extent)
                {
                    throw new ArgumentException($"index {index[j]} is outside an axis of {extent}.");
                }
                Array.Copy(x, (o * extent + i) * inner, output, (o * index.Length + j) * inner, inner);
            }
        }
        return OnnxTensor.FromFloats(output, shape);
    }

    private static OnnxTensor Unsqueeze(OnnxTensor x, long[] axes)
    {
        int rank = x.Rank + axes.Length;
        var inserted = new bool[rank];
        foreach (long axis in axes)
        {
            int a = Axis(axis, rank, "axis");
            if (inserted[a])
            {
                throw new ArgumentException($"axis {axis} is given twice.");
            }
            inserted[a] = true;
        }
        var shape = new int[rank];
        for (int d = 0, source = 0; d < rank; d++)
        {
            shape[d] = inserted[d] ? 1 : x.Shape[source++];
        }
        return x.Floats is not null ? OnnxTensor.FromFloats(x.Floats, shape) : OnnxTensor.FromLongs(x.Longs!, shape);
    }

    /// <summary>A node's attributes by name, with the types checked.</summary>
    private sealed class Attributes(NodeProto node)
    {
        private AttributeProto? Find(string name, AttributeProto.Types.AttributeType type)
        {
            AttributeProto? attribute = node.Attribute.FirstOrDefault(a => a.Name == name);
            if (attribute is not null && attribute.Type != type)
            {
                throw new ArgumentException($"attribute '{name}' should be {type}, got {attribute.Type}.");
            }
            return attribute;
        }

        public long? Int(string name) => Find(name, AttributeProto.Types.AttributeType.Int)?.I;

        public float? Float(string name) => Find(name, AttributeProto.Types.AttributeType.Float)?.F;

        public long[]? Ints(string name) => Find(name, AttributeProto.Types.AttributeType.Ints)?.Ints.ToArray();

        public string? String(string name) => Find(name, AttributeProto.Types.AttributeType.String)?.S.ToStringUtf8();

        public OnnxTensor? Tensor(string name, long maxElements) =>
            Find(name, AttributeProto.Types.AttributeType.Tensor) is { } a ? OnnxTensor.FromProto(a.T, maxElements) : null;
    }
}
