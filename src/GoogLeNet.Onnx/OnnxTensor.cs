using System.Buffers.Binary;
using GoogLeNet.Engine;
using Onnx;

namespace GoogLeNet.Onnx;

/// <summary>
/// A value flowing through an ONNX graph: float32 for activations and weights, int64 for shapes
/// (Reshape's second input). Exactly one of the two arrays is set.
/// </summary>
public sealed class OnnxTensor
{
    private OnnxTensor(int[] shape, float[]? floats, long[]? longs)
    {
        Shape = shape;
        Floats = floats;
        Longs = longs;
    }

    public int[] Shape { get; }

    public float[]? Floats { get; }

    public long[]? Longs { get; }

    public int Length => Floats?.Length ?? Longs!.Length;

    public int Rank => Shape.Length;

    public static OnnxTensor FromFloats(float[] values, int[] shape)
    {
        if (Tensor.ShapeSize(shape) != values.Length)
        {
            throw new ArgumentException($"{values.Length} values do not fill shape {Tensor.Format(shape)}.");
        }
        return new OnnxTensor(shape, values, null);
    }

    public static OnnxTensor FromLongs(long[] values, int[] shape)
    {
        if (Tensor.ShapeSize(shape) != values.Length)
        {
            throw new ArgumentException($"{values.Length} values do not fill shape {Tensor.Format(shape)}.");
        }
        return new OnnxTensor(shape, null, values);
    }

    public static OnnxTensor FromTensor(Tensor tensor) => FromFloats(tensor.Span.ToArray(), tensor.Shape);

    public float[] RequireFloats(string what) =>
        Floats ?? throw new NotSupportedException($"{what}: expected a float tensor, got int64.");

    public long[] RequireLongs(string what) =>
        Longs ?? throw new NotSupportedException($"{what}: expected an int64 tensor, got float.");

    public Tensor ToTensor() => Tensor.FromArray(RequireFloats("tensor"), Shape);

    /// <summary>
    /// Decodes a TensorProto after checking, before allocating anything, that its data lives in the
    /// file, its element count is under <paramref name="maxElements"/>, and the stored bytes or
    /// values match that count exactly.
    /// </summary>
    public static OnnxTensor FromProto(TensorProto proto, long maxElements)
    {
        string name = string.IsNullOrEmpty(proto.Name) ? "(unnamed tensor)" : $"'{proto.Name}'";
        if (proto.HasDataLocation && proto.DataLocation == TensorProto.Types.DataLocation.External)
        {
            throw new InvalidDataException($"Tensor {name} keeps its data in an external file; external data is not supported.");
        }
        if (proto.ExternalData.Count > 0)
        {
            throw new InvalidDataException($"Tensor {name} has external-data entries; external data is not supported.");
        }
        if (proto.Segment is not null)
        {
            throw new InvalidDataException($"Tensor {name} is segmented; segmented tensors are not supported.");
        }
        var shape = new int[proto.Dims.Count];
        long count = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            long d = proto.Dims[i];
            if (d < 0 || d > maxElements)
            {
                throw new InvalidDataException($"Tensor {name} has dimension {i} of size {d}; expected 0 to {maxElements}.");
            }
            count *= d;
            if (count > maxElements)
            {
                throw new InvalidDataException($"Tensor {name} declares more than {maxElements} elements (dims [{string.Join(", ", proto.Dims)}]).");
            }
            shape[i] = (int)d;
        }
        var type = (TensorProto.Types.DataType)proto.DataType;
        bool raw = proto.HasRawData;
        switch (type)
        {
            case TensorProto.Types.DataType.Float:
            {
                long stored = raw ? proto.RawData.Length : proto.FloatData.Count;
                long expected = raw ? count * sizeof(float) : count;
                CheckStored(name, raw, stored, expected);
                var values = new float[count];
                if (raw)
                {
                    ReadOnlySpan<byte> bytes = proto.RawData.Span;
                    for (int i = 0; i < values.Length; i++)
                    {
                        values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * sizeof(float)));
                    }
                }
                else
                {
                    proto.FloatData.CopyTo(values, 0);
                }
                return FromFloats(values, shape);
            }
            case TensorProto.Types.DataType.Int64:
            {
                long stored = raw ? proto.RawData.Length : proto.Int64Data.Count;
                long expected = raw ? count * sizeof(long) : count;
                CheckStored(name, raw, stored, expected);
                var values = new long[count];
                if (raw)
                {
                    ReadOnlySpan<byte> bytes = proto.RawData.Span;
                    for (int i = 0; i < values.Length; i++)
                    {
                        values[i] = BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice(i * sizeof(long)));
                    }
                }
                else
                {
                    proto.Int64Data.CopyTo(values, 0);
                }
                return FromLongs(values, shape);
            }
            default:
                throw new NotSupportedException($"Tensor {name} has element type {type}; only float32 and int64 are supported.");
        }
    }

    private static void CheckStored(string name, bool raw, long stored, long expected)
    {
        if (stored != expected)
        {
            throw new InvalidDataException(raw
                ? $"Tensor {name}: its shape needs {expected} bytes of raw data, the file holds {stored}."
                : $"Tensor {name}: its shape needs {expected} values, the file holds {stored}.");
        }
    }
}
