namespace GoogLeNet.Engine.Layers;

/// <summary>
/// A node of a static network. Shapes exclude the batch: (C, H, W) for images, (F) for vectors.
/// A layer sizes its output and input-gradient buffers once per input shape and reuses them;
/// Forward caches what Backward needs, so each Backward follows the Forward it belongs to.
/// </summary>
public abstract class Layer
{
    private int[]? _shapeCheckedFor;
    private int[]? _batchedOutputShape;

    protected Layer(string name)
    {
        Name = name;
    }

    /// <summary>The name inside the parent: parameter paths join these with dots.</summary>
    public string Name { get; }

    public bool IsTraining { get; private set; }

    /// <summary>Short type name for summaries (<c>Conv2d</c>, <c>Inception</c>).</summary>
    public virtual string TypeName => GetType().Name;

    public virtual IEnumerable<Layer> Children => [];

    /// <summary>This layer's own parameters and buffers, without those of its children.</summary>
    public virtual IEnumerable<Parameter> OwnParameters => [];

    /// <summary>
    /// True when this layer's images are stored channel-major: (C, N, H, W) in memory while
    /// shapes still read (N, C, H, W). Each channel then holds the whole batch side by side, so
    /// a convolution is one matrix product over the batch and per-channel work is contiguous.
    /// Layers that work plane by plane or value by value are indifferent to it; Flatten turns a
    /// channel-major image back into ordinary (N, F) rows.
    /// </summary>
    public bool ChannelMajor { get; private set; }

    public void SetChannelMajor(bool channelMajor)
    {
        ChannelMajor = channelMajor;
        foreach (Layer child in Children)
        {
            child.SetChannelMajor(channelMajor);
        }
    }

    public void SetTraining(bool training)
    {
        IsTraining = training;
        foreach (Layer child in Children)
        {
            child.SetTraining(training);
        }
    }

    /// <summary>Parameters and buffers with their dotted paths, in definition order.</summary>
    public IEnumerable<(string Path, Parameter Parameter)> NamedParameters(string prefix = "")
    {
        foreach (Parameter p in OwnParameters)
        {
            yield return (prefix + p.Name, p);
        }
        foreach (Layer child in Children)
        {
            foreach (var item in child.NamedParameters(prefix + child.Name + "."))
            {
                yield return item;
            }
        }
    }

    /// <summary>Output shape for an input shape; throws <see cref="ShapeException"/> when the input does not fit.</summary>
    public abstract int[] OutputShape(int[] inputShape);

    /// <summary>Multiply-accumulates per sample (convolutions and linear layers count; the rest is free).</summary>
    public virtual long Macs(int[] inputShape) => 0;

    public abstract Tensor Forward(Tensor input);

    /// <summary>
    /// Accumulates parameter gradients and returns the gradient with respect to the input of the
    /// last Forward, in a buffer the layer owns (valid until its next Backward). Returns null when
    /// the layer was told not to propagate (the first layer of a network).
    /// </summary>
    public abstract Tensor? Backward(Tensor dOutput);

    // A collection expression passed as the shape lives on the stack, so checking costs nothing.
    protected static Tensor Ensure(ref Tensor? buffer, ReadOnlySpan<int> shape)
    {
        if (buffer is null || !buffer.HasShape(shape))
        {
            buffer = new Tensor(shape.ToArray());
        }
        return buffer;
    }

    /// <summary>A view of <paramref name="source"/>'s values with another shape, made again only when the source or the shape changes.</summary>
    protected static Tensor View(ref Tensor? cached, Tensor source, ReadOnlySpan<int> shape)
    {
        if (cached is null || cached.Data != source.Data || cached.Offset != source.Offset || !cached.HasShape(shape))
        {
            cached = source.Reshape(shape.ToArray());
        }
        return cached;
    }

    /// <summary>
    /// The batched output shape for this input, checked by <see cref="OutputShape"/> once per input
    /// shape: the steady state of a training loop sees the same shapes every step.
    /// </summary>
    protected int[] OutputShapeFor(Tensor input)
    {
        if (_shapeCheckedFor is null || !input.HasShape(_shapeCheckedFor))
        {
            int[] sample = OutputShape(input.Shape[1..]);
            var shape = new int[sample.Length + 1];
            shape[0] = input.Shape[0];
            sample.CopyTo(shape, 1);
            _batchedOutputShape = shape;
            _shapeCheckedFor = (int[])input.Shape.Clone();
        }
        return _batchedOutputShape!;
    }

    protected void ExpectImage(int[] inputShape, int channels)
    {
        if (inputShape.Length != 3)
        {
            throw new ShapeException($"{Name}: expected an image (C, H, W), got {Tensor.Format(inputShape)}.");
        }
        if (channels > 0 && inputShape[0] != channels)
        {
            throw new ShapeException($"{Name}: expected {channels} input channels, got {inputShape[0]} (input {Tensor.Format(inputShape)}).");
        }
    }

    /// <summary>
    /// How kernels written for (N, C, P) storage see this layer's input: (N, P) batch-major, or
    /// (1, N*P) channel-major, where each channel is one run of the whole batch and channel
    /// neighbours are N*P apart, just as in a batch of one.
    /// </summary>
    protected (int Batch, int Pixels) PerChannelRuns(Tensor input)
    {
        int pixels = input.Shape[2] * input.Shape[3];
        return ChannelMajor ? (1, input.Shape[0] * pixels) : (input.Shape[0], pixels);
    }

    protected Tensor RequireForward(Tensor? cached) =>
        cached ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
}

/// <summary>An input whose shape does not fit the network.</summary>
public sealed class ShapeException(string message) : ArgumentException(message);
