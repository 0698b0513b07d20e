namespace GoogLeNet.Interop;

/// <summary>
/// A named tensor read from or written to a checkpoint. <see cref="Values"/> are row-major float32 whatever the
/// file's element type; <see cref="DType"/> keeps that type so integer tensors (BatchNorm's num_batches_tracked)
/// are written back as integers.
/// </summary>
public sealed class NamedTensor
{
    public NamedTensor(string name, long[] shape, float[] values, TensorDType dtype = TensorDType.F32)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(values);
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0)
            {
                throw new ArgumentException($"tensor '{name}': dimension {d} is negative", nameof(shape));
            }
            count = checked(count * d);
        }
        if (count != values.Length)
        {
            throw new ArgumentException(
                $"tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} elements but {values.Length} values were given",
                nameof(values));
        }
        Name = name;
        Shape = shape;
        Values = values;
        DType = dtype;
    }

    public string Name { get; }

    public TensorDType DType { get; }

    public long[] Shape { get; }

    public float[] Values { get; }

    public override string ToString() => $"{Name} {DType}[{string.Join(", ", Shape)}]";
}
