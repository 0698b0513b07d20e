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
        int[] o = OutputShape(SampleShape(input));
        Tensor output = Ensure(ref _output, WithBatch(input.Shape[0], o));
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = o[1] * o[2];
        int planes = input.Shape[0] * input.Shape[1];
        // Training records where each maximum is, so the backward pass is a scatter.
        _indexed = IsTraining;
        if (_indexed)
        {
            if (_argmax.Length < output.Length)
            {
                _argmax = new int[output.Length];
            }
            int[] argmax = _argmax;
            Parallelism.For(planes, inPlane, (start, count) =>
                Pooling.MaxForwardIndexed(input.Span.Slice(start * inPlane, count * inPlane), count, input.Shape[2], input.Shape[3],
                    KernelSize, Stride, Padding, o[1], o[2], output.Span.Slice(start * outPlane, count * outPlane),
                    argmax.AsSpan(start * outPlane, count * outPlane)));
        }
        else
        {
            Parallelism.For(planes, inPlane, (start, count) =>
                Pooling.MaxForward(input.Span.Slice(start * inPlane, count * inPlane), count, input.Shape[2], input.Shape[3],
                    KernelSize, Stride, Padding, o[1], o[2], output.Span.Slice(start * outPlane, count * outPlane)));
        }
        _input = input;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor input = RequireForward(_input);
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        int inPlane = input.Shape[2] * input.Shape[3];
        int outPlane = dOutput.Shape[2] * dOutput.Shape[3];
        int planes = input.Shape[0] * input.Shape[1];
        if (_indexed)
        {
            int[] argmax = _argmax;
            Parallelism.For(planes, inPlane, (start, count) =>
                Pooling.MaxBackwardIndexed(argmax.AsSpan(start * outPlane, count * outPlane), dOutput.Span.Slice(start * outPlane, count * outPlane),
                    count, inPlane, outPlane, dInput.Span.Slice(start * inPlane, count * inPlane)));
            return dInput;
        }
        Tensor output = _output!;
        Parallelism.For(planes, inPlane, (start, count) =>
            Pooling.MaxBackward(input.Span.Slice(start * inPlane, count * inPlane), output.Span.Slice(start * outPlane, count * outPlane),
                dOutput.Span.Slice(start * outPlane, count * outPlane), count, input.Shape[2], input.Shape[3],
                KernelSize, Stride, Padding, dOutput.Shape[2], dOutput.Shape[3], dInput.Span.Slice(start * inPlane, count * inPlane)));
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
        int[] o = OutputShape(SampleShape(input));
        Tensor output = Ensure(ref _output, WithBatch(input.Shape[0], o));
        Pooling.AverageForward(input.Span, input.Shape[0] * input.Shape[1], input.Shape[2], input.Shape[3],
            KernelSize, Stride, Padding, CountIncludePad, o[1], o[2], output.Span);
        _inputShape = input.Shape;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        int[] shape = _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
        Tensor dInput = Ensure(ref _dInput, shape);
        Pooling.AverageBackward(dOutput.Span, shape[0] * shape[1], shape[2], shape[3],
            KernelSize, Stride, Padding, CountIncludePad, dOutput.Shape[2], dOutput.Shape[3], dInput.Span);
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
        int[] o = OutputShape(SampleShape(input));
        Tensor output = Ensure(ref _output, WithBatch(input.Shape[0], o));
        Pooling.AdaptiveAverageForward(input.Span, input.Shape[0] * input.Shape[1], input.Shape[2], input.Shape[3],
            OutputHeight, OutputWidth, output.Span);
        _inputShape = input.Shape;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        int[] shape = _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
        Tensor dInput = Ensure(ref _dInput, shape);
        Pooling.AdaptiveAverageBackward(dOutput.Span, shape[0] * shape[1], shape[2], shape[3], OutputHeight, OutputWidth, dInput.Span);
        return dInput;
    }
}
