using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>What max and average pooling share: a square window, its stride and padding, and PyTorch's output size.</summary>
public abstract class WindowPool2d : Layer
{
    protected WindowPool2d(string name, int kernelSize, int stride, int padding, bool ceilMode)
        : base(name)
    {
        if (kernelSize <= 0 || stride <= 0 || padding < 0 || padding > kernelSize / 2)
        {
            throw new ArgumentException($"{name}: invalid pooling kernel {kernelSize}, stride {stride}, padding {padding} (padding must be at most half the kernel).");
        }
        KernelSize = kernelSize;
        Stride = stride;
        Padding = padding;
        CeilMode = ceilMode;
    }

    public int KernelSize { get; }

    public int Stride { get; }

    public int Padding { get; }

    public bool CeilMode { get; }

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, 0);
        int oh = WindowMath.OutputSize(inputShape[1], KernelSize, Stride, Padding, CeilMode);
        int ow = WindowMath.OutputSize(inputShape[2], KernelSize, Stride, Padding, CeilMode);
        if (oh < 1 || ow < 1)
        {
            throw new ShapeException($"{Name}: input {Tensor.Format(inputShape)} is smaller than the {KernelSize}x{KernelSize} pooling window.");
        }
        return [inputShape[0], oh, ow];
    }
}

/// <summary>Square max pooling with PyTorch's padding and ceil-mode rules.</summary>
public sealed class MaxPool2d : WindowPool2d
{
    private Tensor? _input;
    private int[]? _inputShape;
    private Tensor? _output;
    private Tensor? _dInput;
    private int[] _argmax = [];
    private bool _indexed;

    public MaxPool2d(string name, int kernelSize, int stride, int padding = 0, bool ceilMode = false)
        : base(name, kernelSize, stride, padding, ceilMode)
    {
    }

    public override Tensor Forward(Tensor input)
    {
        Tensor output = Ensure(ref _output, OutputShapeFor(input));
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = output.Shape[2] * output.Shape[3];
        int planes = input.Shape[0] * input.Shape[1];
        // Training records where each maximum is, so the backward pass is a scatter.
        _indexed = IsTraining;
        if (_indexed)
        {
            if (_argmax.Length < output.Length)
            {
                _argmax = new int[output.Length];
            }
            Parallelism.For(planes, inPlane, (self: this, input, output, inPlane, outPlane), static (s, start, count) =>
                Pooling.MaxForwardIndexed(s.input.Span.Slice(start * s.inPlane, count * s.inPlane), count, s.input.Shape[2], s.input.Shape[3],
                    s.self.KernelSize, s.self.Stride, s.self.Padding, s.output.Shape[2], s.output.Shape[3],
                    s.output.Span.Slice(start * s.outPlane, count * s.outPlane), s.self._argmax.AsSpan(start * s.outPlane, count * s.outPlane)));
        }
        else
        {
            Parallelism.For(planes, inPlane, (self: this, input, output, inPlane, outPlane), static (s, start, count) =>
                Pooling.MaxForward(s.input.Span.Slice(start * s.inPlane, count * s.inPlane), count, s.input.Shape[2], s.input.Shape[3],
                    s.self.KernelSize, s.self.Stride, s.self.Padding, s.output.Shape[2], s.output.Shape[3],
                    s.output.Span.Slice(start * s.outPlane, count * s.outPlane)));
        }
        _input = input;
        _inputShape = input.Shape;
        return output;
    }

    /// <summary>
    /// Training, for a layer that pools its own output as it computes it
    /// (<see cref="Conv2d.ForwardWithReluPooled"/>): this pool's output and argmax buffers for an
    /// input of <paramref name="inputShape"/>, to be filled as <see cref="Forward"/> fills them;
    /// Backward then scatters as after Forward. The input itself is never stored.
    /// </summary>
    internal (Tensor Output, int[] Argmax) BeginFusedForward(int[] inputShape)
    {
        // Not OutputShape, which allocates: the training step allocates nothing.
        int oh = WindowMath.OutputSize(inputShape[2], KernelSize, Stride, Padding, CeilMode);
        int ow = WindowMath.OutputSize(inputShape[3], KernelSize, Stride, Padding, CeilMode);
        if (oh < 1 || ow < 1)
        {
            throw new ShapeException($"{Name}: input {Tensor.Format(inputShape)} is smaller than the {KernelSize}x{KernelSize} pooling window.");
        }
        Tensor output = Ensure(ref _output, stackalloc int[] { inputShape[0], inputShape[1], oh, ow });
        if (_argmax.Length < output.Length)
        {
            _argmax = new int[output.Length];
        }
        _indexed = true;
        _input = null;
        _inputShape = inputShape;
        return (output, _argmax);
    }

    /// <summary>
    /// After <see cref="BeginFusedForward"/>: the maxima and argmax that a layer going back
    /// through this pool itself (<see cref="Conv2d.BackwardThroughPool"/>) scatters from; null
    /// after any other forward pass.
    /// </summary>
    internal (Tensor Maxima, int[] Argmax)? FusedForwardRecord() =>
        _indexed && _input is null && _inputShape is not null && _output is not null ? (_output, _argmax) : null;

    public override Tensor Backward(Tensor dOutput)
    {
        if (_indexed)
        {
            return Scatter(RequireShape(), dOutput, throughRelu: false);
        }
        Tensor input = RequireForward(_input);
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = dOutput.Shape[2] * dOutput.Shape[3];
        int planes = input.Shape[0] * input.Shape[1];
        Tensor output = _output!;
        Parallelism.For(planes, inPlane, (self: this, input, output, dOutput, dInput, inPlane, outPlane), static (s, start, count) =>
            Pooling.MaxBackward(s.input.Span.Slice(start * s.inPlane, count * s.inPlane), s.output.Span.Slice(start * s.outPlane, count * s.outPlane),
                s.dOutput.Span.Slice(start * s.outPlane, count * s.outPlane), count, s.input.Shape[2], s.input.Shape[3],
                s.self.KernelSize, s.self.Stride, s.self.Padding, s.dOutput.Shape[2], s.dOutput.Shape[3],
                s.dInput.Span.Slice(start * s.inPlane, count * s.inPlane)));
        return dInput;
    }

    /// <summary>
    /// Backward for a pool whose input is the output of a ReLU: returns the gradient with respect
    /// to the ReLU's input (the ReLU's own backward is then skipped), equal bit for bit to
    /// Backward followed by the ReLU's. Null when the last forward kept no argmax (inference
    /// mode), where the caller runs the two apart.
    /// </summary>
    public Tensor? BackwardThroughRelu(Tensor dOutput)
    {
        int[] inputShape = RequireShape();
        return _indexed ? Scatter(inputShape, dOutput, throughRelu: true) : null;
    }

    private int[] RequireShape() => _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");

    // The training backward: each output's gradient to its recorded argmax (Pooling.MaxBackwardIndexed).
    private Tensor Scatter(int[] inputShape, Tensor dOutput, bool throughRelu)
    {
        Tensor dInput = Ensure(ref _dInput, inputShape);
        int inPlane = inputShape[2] * inputShape[3];
        int outPlane = dOutput.Shape[2] * dOutput.Shape[3];
        int planes = inputShape[0] * inputShape[1];
        Parallelism.For(planes, inPlane, (argmax: _argmax, pooled: throughRelu ? _output : null, dOutput, dInput, inPlane, outPlane),
            static (s, start, count) => Pooling.MaxBackwardIndexed(s.argmax.AsSpan(start * s.outPlane, count * s.outPlane),
                s.dOutput.Span.Slice(start * s.outPlane, count * s.outPlane), count, s.inPlane, s.outPlane,
                s.dInput.Span.Slice(start * s.inPlane, count * s.inPlane),
                s.pooled is null ? default : s.pooled.Span.Slice(start * s.outPlane, count * s.outPlane)));
        return dInput;
    }
}

/// <summary>Square average pooling; count_include_pad and ceil mode follow PyTorch.</summary>
public sealed class AvgPool2d : WindowPool2d
{
    private int[]? _inputShape;
    private Tensor? _output;
    private Tensor? _dInput;

    public AvgPool2d(string name, int kernelSize, int stride, int padding = 0, bool ceilMode = false, bool countIncludePad = true)
        : base(name, kernelSize, stride, padding, ceilMode)
    {
        CountIncludePad = countIncludePad;
    }

    public bool CountIncludePad { get; }

    public override Tensor Forward(Tensor input)
    {
        Tensor output = Ensure(ref _output, OutputShapeFor(input));
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = output.Shape[2] * output.Shape[3];
        Parallelism.For(input.Shape[0] * input.Shape[1], inPlane, (self: this, input, output, inPlane, outPlane), static (s, start, count) =>
            Pooling.AverageForward(s.input.Span.Slice(start * s.inPlane, count * s.inPlane), count, s.input.Shape[2], s.input.Shape[3],
                s.self.KernelSize, s.self.Stride, s.self.Padding, s.self.CountIncludePad, s.output.Shape[2], s.output.Shape[3],
                s.output.Span.Slice(start * s.outPlane, count * s.outPlane)));
        _inputShape = input.Shape;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        int[] shape = _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
        Tensor dInput = Ensure(ref _dInput, shape);
        int inPlane = shape[2] * shape[3];
        int outPlane = dOutput.Shape[2] * dOutput.Shape[3];
        Parallelism.For(shape[0] * shape[1], inPlane, (self: this, dOutput, dInput, inPlane, outPlane), static (s, start, count) =>
            Pooling.AverageBackward(s.dOutput.Span.Slice(start * s.outPlane, count * s.outPlane), count, s.dInput.Shape[2], s.dInput.Shape[3],
                s.self.KernelSize, s.self.Stride, s.self.Padding, s.self.CountIncludePad, s.dOutput.Shape[2], s.dOutput.Shape[3],
                s.dInput.Span.Slice(start * s.inPlane, count * s.inPlane)));
        return dInput;
    }
}

/// <summary>Average pooling to a fixed output size with PyTorch's adaptive windows (1x1 is global pooling).</summary>
public sealed class AdaptiveAvgPool2d(string name, int outputHeight, int outputWidth) : Layer(name)
{
    private int[]? _inputShape;
    private Tensor? _output;
    private Tensor? _dInput;

    public int OutputHeight { get; } = outputHeight;

    public int OutputWidth { get; } = outputWidth;

    public override string TypeName => OutputHeight == 1 && OutputWidth == 1 ? "GlobalAvgPool2d" : "AdaptiveAvgPool2d";

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, 0);
        if (inputShape[1] < 1 || inputShape[2] < 1)
        {
            throw new ShapeException($"{Name}: empty input {Tensor.Format(inputShape)}.");
        }
        return [inputShape[0], OutputHeight, OutputWidth];
    }

    public override Tensor Forward(Tensor input)
    {
        Tensor output = Ensure(ref _output, OutputShapeFor(input));
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = OutputHeight * OutputWidth;
        Parallelism.For(input.Shape[0] * input.Shape[1], inPlane, (self: this, input, output, inPlane, outPlane), static (s, start, count) =>
            Pooling.AdaptiveAverageForward(s.input.Span.Slice(start * s.inPlane, count * s.inPlane), count, s.input.Shape[2], s.input.Shape[3],
                s.self.OutputHeight, s.self.OutputWidth, s.output.Span.Slice(start * s.outPlane, count * s.outPlane)));
        _inputShape = input.Shape;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        int[] shape = _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
        Tensor dInput = Ensure(ref _dInput, shape);
        int inPlane = shape[2] * shape[3];
        int outPlane = OutputHeight * OutputWidth;
        Parallelism.For(shape[0] * shape[1], inPlane, (self: this, dOutput, dInput, inPlane, outPlane), static (s, start, count) =>
            Pooling.AdaptiveAverageBackward(s.dOutput.Span.Slice(start * s.outPlane, count * s.outPlane), count, s.dInput.Shape[2], s.dInput.Shape[3],
                s.self.OutputHeight, s.self.OutputWidth, s.dInput.Span.Slice(start * s.inPlane, count * s.inPlane)));
        return dInput;
    }
}
