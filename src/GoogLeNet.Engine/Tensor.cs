namespace GoogLeNet.Engine;

/// <summary>
/// A float32 tensor: a shape over a slice of a flat array. Views share the array, which is how
/// parameters live in one block and how a flatten costs nothing.
/// </summary>
public sealed class Tensor
{
    public Tensor(params int[] shape)
        : this(new float[checked((int)ShapeSize(shape))], 0, shape)
    {
    }

    public Tensor(float[] data, int offset, int[] shape)
    {
        long length = ShapeSize(shape);
        if (offset < 0 || offset + length > data.Length)
        {
            throw new ArgumentException(
                $"A tensor of shape {Format(shape)} needs {length} values from offset {offset}, but the array has {data.Length}.");
        }
        Data = data;
        Offset = offset;
        Shape = (int[])shape.Clone();
        Length = (int)length;
    }

    public float[] Data { get; private set; }

    public int Offset { get; private set; }

    public int[] Shape { get; private set; }

    public int Length { get; }

    public int Rank => Shape.Length;

    public Span<float> Span => Data.AsSpan(Offset, Length);

    public static Tensor FromArray(float[] values, params int[] shape)
    {
        if (ShapeSize(shape) != values.Length)
        {
            throw new ArgumentException($"{values.Length} values do not fill a tensor of shape {Format(shape)}.");
        }
        return new Tensor(values, 0, shape);
    }

    /// <summary>A view of the same values with another shape of the same size.</summary>
    public Tensor Reshape(params int[] shape)
    {
        if (ShapeSize(shape) != Length)
        {
            throw new ArgumentException($"Cannot view a tensor of shape {Format(Shape)} as {Format(shape)}.");
        }
        return new Tensor(Data, Offset, shape);
    }

    /// <summary>Moves the tensor onto another array (used to gather parameters into one block).</summary>
    internal void Rebind(float[] data, int offset)
    {
        Span.CopyTo(data.AsSpan(offset, Length));
        Data = data;
        Offset = offset;
    }

    public bool HasShape(params ReadOnlySpan<int> shape) => Shape.AsSpan().SequenceEqual(shape);

    public static long ShapeSize(ReadOnlySpan<int> shape)
    {
        long size = 1;
        foreach (int d in shape)
        {
            if (d < 0)
            {
                throw new ArgumentException($"Negative dimension {d} in shape {Format(shape)}.");
            }
            size = checked(size * d);
        }
        return size;
    }

    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public override string ToString() => $"Tensor{Format(Shape)}";
}
