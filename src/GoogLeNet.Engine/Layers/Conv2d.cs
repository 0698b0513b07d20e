using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>2-D convolution, square kernel, symmetric padding, optional bias. Weight is (co, ci, k, k).</summary>
public sealed class Conv2d : Layer
{
    private readonly Parameter _weight;
    private readonly Parameter? _bias;
    private Tensor? _input;
    private Tensor? _output;
    private Tensor? _dInput;
    private float[] _col = [];
    private Tensor? _pooledOutput;
    private float[] _foldedScale = [];
    private float[] _foldedBias = [];
    private WinogradWeights? _winogradWeights;

    // A channel-major batch im2cols up to this many floats at a time (16 MiB): enough columns
    // for an efficient GEMM, and one buffer per thread serves every layer.
    private const int ChannelMajorColumnBudget = 1 << 22;

    [ThreadStatic]
    private static float[]? t_sharedCol;

    public Conv2d(string name, int inChannels, int outChannels, int kernelSize, int stride = 1, int padding = 0, bool bias = true)
        : base(name)
    {
        if (inChannels <= 0 || outChannels <= 0 || kernelSize <= 0 || stride <= 0 || padding < 0)
        {
            throw new ArgumentException($"{name}: invalid convolution {inChannels}->{outChannels}, kernel {kernelSize}, stride {stride}, padding {padding}.");
        }
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        Stride = stride;
        Padding = padding;
        _weight = new Parameter("weight", [outChannels, inChannels, kernelSize, kernelSize]);
        _bias = bias ? new Parameter("bias", [outChannels]) { NoDecay = true } : null;
    }

    public int InChannels { get; }

    public int OutChannels { get; }

    public int KernelSize { get; }

    public int Stride { get; }

    public int Padding { get; }

    public Parameter Weight => _weight;

    public Parameter? Bias => _bias;

    /// <summary>False for the first layer of a network: its input gradient is not needed.</summary>
    public bool PropagateDown { get; set; } = true;

    public override IEnumerable<Parameter> OwnParameters => _bias is null ? [_weight] : [_weight, _bias];

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, InChannels);
        int oh = WindowMath.OutputSize(inputShape[1], KernelSize, Stride, Padding, false);
        int ow = WindowMath.OutputSize(inputShape[2], KernelSize, Stride, Padding, false);
        if (oh < 1 || ow < 1)
        {
            throw new ShapeException($"{Name}: input {Tensor.Format(inputShape)} is smaller than the {KernelSize}x{KernelSize} kernel with padding {Padding}.");
        }
        return [OutChannels, oh, ow];
    }

    public override long Macs(int[] inputShape)
    {
        int[] o = OutputShape(inputShape);
        return (long)o[0] * o[1] * o[2] * InChannels * KernelSize * KernelSize;
    }

    public override Tensor Forward(Tensor input)
    {
        Tensor output = Ensure(ref _output, OutputShapeFor(input));
        Run(input, _weight.Value.Span, _bias is null ? default : _bias.Value.Span, relu: false, output);
        _input = input;
        return output;
    }

    /// <summary>
    /// Forward with the ReLU that follows applied in the epilogue, relu(conv(x) + bias), for
    /// training as well: the input is kept for Backward, which takes the gradient with respect
    /// to the convolution's output (the caller's ReLU backward, from the output written here).
    /// Writes <paramref name="destination"/> when given (a slice of a concatenation), else the
    /// layer's own buffer.
    /// </summary>
    public Tensor ForwardWithRelu(Tensor input, Tensor? destination = null)
    {
        Tensor output = OutputFor(input, destination);
        Run(input, _weight.Value.Span, _bias is null ? default : _bias.Value.Span, relu: true, output);
        _input = input;
        return output;
    }

    /// <summary>
    /// Whether <see cref="ForwardWithReluPooled"/> can fuse <paramref name="pool"/>: a
    /// channel-major stride-2 stem (<see cref="StemConvolution"/>) and a pool of stride 1 or 2 on
    /// an AVX2 CPU.
    /// </summary>
    public bool CanFusePoolInTraining(MaxPool2d pool) =>
        CanFusePool(pool) && StemConvolution.CanIndexPool(new PoolWindow(pool.KernelSize, pool.Stride, pool.Padding, 1, 1), relu: true);

    /// <summary>
    /// Training: <see cref="ForwardWithRelu"/> then <paramref name="pool"/> (in training) in one
    /// pass that writes only the pool's output and argmax (<see cref="MaxPool2d.BeginFusedForward"/>),
    /// the same values as the two apart; returns the pool's output. The convolution's output is
    /// never stored: <see cref="BackwardThroughPool"/> goes back from the pool's output gradient,
    /// or Backward from the gradient the pool's <see cref="MaxPool2d.BackwardThroughRelu"/> gives;
    /// the input is kept for either.
    /// </summary>
    public Tensor ForwardWithReluPooled(Tensor input, MaxPool2d pool)
    {
        if (!CanFusePoolInTraining(pool) || !pool.IsTraining)
        {
            throw new InvalidOperationException($"{Name}: only a channel-major stride-2 stem convolution can run with its pool (of stride 1 or 2, in training, on an AVX2 CPU).");
        }
        int[] shape = OutputShapeFor(input); // checked and cached per input shape
        (Tensor pooled, int[] argmax) = pool.BeginFusedForward(shape);
        StemConvolution.Forward(input.Span, input.Shape[0], InChannels, input.Shape[2], input.Shape[3], _weight.Value.Span,
            _bias is null ? default : _bias.Value.Span, OutChannels, KernelSize, KernelSize, Padding, shape[2], shape[3], relu: true,
            pooled.Span, default, new PoolWindow(pool.KernelSize, pool.Stride, pool.Padding, pooled.Shape[2], pooled.Shape[3]),
            argmax.AsSpan(0, pooled.Length));
        _input = input;
        return pooled;
    }

    /// <summary>
    /// Backward after <see cref="ForwardWithReluPooled"/> from the pool's output gradient: the
    /// weight and bias gradients with the pool's scatter and the ReLU's gradient folded in
    /// (<see cref="StemConvolution.BackwardWeightsThroughPool"/>), so the gradient with respect to
    /// this layer's output is never stored. The pool's Backward is not run. Returns false (and
    /// does nothing) where it cannot: the input gradient is wanted (<see cref="PropagateDown"/>),
    /// or the last forward pass was not <see cref="ForwardWithReluPooled"/> with this pool.
    /// </summary>
    public bool BackwardThroughPool(MaxPool2d pool, Tensor dPooled)
    {
        if (PropagateDown || _input is not { } input || pool.FusedForwardRecord() is not { } record
            || !StemConvolution.TakesWeightGradient(InChannels, OutChannels, KernelSize, KernelSize, Stride, Padding)
            || !dPooled.HasShape(record.Maxima.Shape))
        {
            return false;
        }
        int oh = WindowMath.OutputSize(input.Shape[2], KernelSize, Stride, Padding, false);
        int ow = WindowMath.OutputSize(input.Shape[3], KernelSize, Stride, Padding, false);
        StemConvolution.BackwardWeightsThroughPool(input.Span, input.Shape[0], InChannels, input.Shape[2], input.Shape[3],
            dPooled.Span, record.Maxima.Span, record.Argmax, new PoolWindow(pool.KernelSize, pool.Stride, pool.Padding, dPooled.Shape[2], dPooled.Shape[3]),
            OutChannels, KernelSize, KernelSize, Padding, oh, ow, _weight.Grad!.Span, _bias is null ? default : _bias.Grad!.Span);
        return true;
    }

    /// <summary>
    /// Inference with the BatchNorm that follows (its running statistics) and the ReLU after it
    /// folded into this convolution's epilogue: relu(conv(x; w) * s + b * s + beta - mean * s),
    /// s = gamma / sqrt(var + eps), in one pass over the output. The weights are read as they are,
    /// not scaled copies; a 3x3 stride-1 layer keeps their Winograd transform together with the
    /// values it came from and compares them on every call, so a change to them is seen by the
    /// next call. Writes
    /// <paramref name="destination"/> when given (a slice of a concatenation), else the layer's
    /// own buffer. Caches nothing for Backward; the caller runs the unfused layers again if it
    /// needs gradients.
    /// </summary>
    public Tensor ForwardFolded(Tensor input, BatchNorm2d? norm, Tensor? destination = null)
    {
        Tensor output = OutputFor(input, destination);
        if (_foldedBias.Length != OutChannels)
        {
            _foldedBias = new float[OutChannels];
            _foldedScale = new float[OutChannels];
        }
        bool scaled = Fold(norm, _foldedScale, _foldedBias);
        if (Winograd.Applies(KernelSize, KernelSize, Stride, Padding))
        {
            _winogradWeights ??= new WinogradWeights();
        }
        Run(input, _weight.Value.Span, _foldedBias, relu: true, output, scaled ? _foldedScale : default, _winogradWeights);
        _input = null;
        return output;
    }

    /// <summary>Whether <see cref="ForwardFoldedPooled"/> can fuse <paramref name="pool"/>: a channel-major stride-2 stem (<see cref="StemConvolution"/>).</summary>
    public bool CanFusePool(MaxPool2d pool) =>
        ChannelMajor && StemConvolution.Applies(InChannels, KernelSize, KernelSize, Stride, Padding);

    /// <summary>
    /// <see cref="ForwardFolded"/> followed by <paramref name="pool"/> in one pass: the
    /// convolution's rows are pooled while in cache and only the pooled tensor is written (to
    /// this layer's buffer, not the pool's). Inference only: neither layer keeps anything for
    /// Backward.
    /// </summary>
    public Tensor ForwardFoldedPooled(Tensor input, BatchNorm2d? norm, MaxPool2d pool)
    {
        if (!CanFusePool(pool))
        {
            throw new InvalidOperationException($"{Name}: only a channel-major stride-2 stem convolution can run with its pool.");
        }
        int[] shape = OutputShapeFor(input); // checked and cached per input shape
        int oh = shape[2], ow = shape[3];
        int ph = WindowMath.OutputSize(oh, pool.KernelSize, pool.Stride, pool.Padding, pool.CeilMode);
        int pw = WindowMath.OutputSize(ow, pool.KernelSize, pool.Stride, pool.Padding, pool.CeilMode);
        if (ph < 1 || pw < 1)
        {
            throw new ShapeException($"{pool.Name}: the {Name} output {oh}x{ow} is smaller than the {pool.KernelSize}x{pool.KernelSize} pooling window.");
        }
        Tensor output = Ensure(ref _pooledOutput, stackalloc int[] { input.Shape[0], OutChannels, ph, pw });
        if (_foldedBias.Length != OutChannels)
        {
            _foldedBias = new float[OutChannels];
            _foldedScale = new float[OutChannels];
        }
        bool scaled = Fold(norm, _foldedScale, _foldedBias);
        StemConvolution.Forward(input.Span, input.Shape[0], InChannels, input.Shape[2], input.Shape[3], _weight.Value.Span, _foldedBias,
            OutChannels, KernelSize, KernelSize, Padding, oh, ow, relu: true, output.Span, scaled ? _foldedScale : default,
            new PoolWindow(pool.KernelSize, pool.Stride, pool.Padding, ph, pw));
        _input = null;
        return output;
    }

    /// <summary>
    /// Whether <see cref="ForwardFoldedAfterPool"/> can take <paramref name="pool"/>'s input: a
    /// channel-major 1x1 convolution after a 3x3, stride-1, padding-1 max pool (the Inception
    /// block's pool branch).
    /// </summary>
    public bool CanFuseAfterPool(MaxPool2d pool) =>
        ChannelMajor && Convolution.IsPointwise(KernelSize, KernelSize, Stride, Padding)
        && pool.KernelSize == 3 && pool.Stride == 1 && pool.Padding == 1;

    /// <summary>
    /// <see cref="ForwardFolded"/> of the 3x3, stride-1 max pooling of <paramref name="input"/>
    /// (see <see cref="CanFuseAfterPool"/>), the pooled values generated as the product reads
    /// them rather than stored. Inference only: neither the pool nor this layer keeps anything for
    /// Backward.
    /// </summary>
    public Tensor ForwardFoldedAfterPool(Tensor input, BatchNorm2d? norm, MaxPool2d pool, Tensor? destination = null)
    {
        if (!CanFuseAfterPool(pool))
        {
            throw new InvalidOperationException($"{Name}: only a channel-major 1x1 convolution can read a 3x3 stride-1 max pool's input.");
        }
        Tensor output = OutputFor(input, destination); // a pool of this kind keeps the input's shape
        if (_foldedBias.Length != OutChannels)
        {
            _foldedBias = new float[OutChannels];
            _foldedScale = new float[OutChannels];
        }
        bool scaled = Fold(norm, _foldedScale, _foldedBias);
        Convolution.ForwardMaxPooledPointwise(input.Span, input.Shape[0], InChannels, input.Shape[2], input.Shape[3],
            _weight.Value.Span, _foldedBias, OutChannels, relu: true, output.Span, scaled ? _foldedScale : default);
        _input = null;
        return output;
    }

    /// <summary>
    /// Writes the per-output-channel epilogue of <see cref="ForwardFolded"/>: scale s = gamma /
    /// sqrt(var + eps) and bias b * s + beta - mean * s. Returns false when there is no BatchNorm,
    /// where the scale is 1 and the epilogue needs only the bias.
    /// </summary>
    public bool Fold(BatchNorm2d? norm, Span<float> scale, Span<float> bias)
    {
        if (scale.Length < OutChannels || bias.Length < OutChannels)
        {
            throw new ArgumentException($"{Name}: the folded scale and bias need {OutChannels} values each, got {scale.Length} and {bias.Length}.");
        }
        ReadOnlySpan<float> ownBias = _bias is null ? default : _bias.Value.Span;
        for (int co = 0; co < OutChannels; co++)
        {
            float s = 1f;
            float shift = 0f;
            if (norm is not null)
            {
                s = norm.Weight.Value.Span[co] / MathF.Sqrt(norm.RunningVar.Value.Span[co] + norm.Epsilon);
                shift = norm.BiasParameter.Value.Span[co] - norm.RunningMean.Value.Span[co] * s;
            }
            scale[co] = s;
            bias[co] = (ownBias.IsEmpty ? 0f : ownBias[co] * s) + shift;
        }
        return norm is not null;
    }

    private void Run(Tensor input, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, bool relu, Tensor output,
        ReadOnlySpan<float> scale = default, WinogradWeights? winogradWeights = null)
    {
        int batch = input.Shape[0];
        int oh = output.Shape[2];
        int ow = output.Shape[3];
        if (ChannelMajor)
        {
            Convolution.ForwardChannelMajor(input.Span, batch, InChannels, input.Shape[2], input.Shape[3],
                weight, bias, OutChannels, KernelSize, KernelSize, Stride, Padding, oh, ow, relu,
                SharedCol(batch, oh, ow), output.Span, scale, winogradWeights);
            return;
        }
        EnsureCol(oh, ow);
        Convolution.Forward(input.Span, batch, InChannels, input.Shape[2], input.Shape[3],
            weight, bias, OutChannels, KernelSize, KernelSize, Stride, Padding, oh, ow, relu, _col, output.Span, scale);
    }

    public override Tensor? Backward(Tensor dOutput)
    {
        Tensor input = RequireForward(_input);
        int batch = input.Shape[0];
        Span<float> dInput = default;
        if (PropagateDown)
        {
            dInput = Ensure(ref _dInput, input.Shape).Span;
        }
        if (ChannelMajor)
        {
            Convolution.BackwardChannelMajor(input.Span, batch, InChannels, input.Shape[2], input.Shape[3],
                _weight.Value.Span, OutChannels, KernelSize, KernelSize, Stride, Padding,
                dOutput.Shape[2], dOutput.Shape[3], dOutput.Span, SharedCol(batch, dOutput.Shape[2], dOutput.Shape[3]),
                _weight.Grad!.Span, _bias is null ? default : _bias.Grad!.Span, dInput);
            return PropagateDown ? _dInput : null;
        }
        Convolution.Backward(input.Span, batch, InChannels, input.Shape[2], input.Shape[3],
            _weight.Value.Span, OutChannels, KernelSize, KernelSize, Stride, Padding,
            dOutput.Shape[2], dOutput.Shape[3], dOutput.Span, _col,
            _weight.Grad!.Span, _bias is null ? default : _bias.Grad!.Span, dInput);
        return PropagateDown ? _dInput : null;
    }

    // The destination when given (a slice of a concatenation, checked against the output
    // shape), else the layer's own buffer.
    private Tensor OutputFor(Tensor input, Tensor? destination)
    {
        int[] shape = OutputShapeFor(input);
        Tensor output = destination ?? Ensure(ref _output, shape);
        if (!output.HasShape(shape))
        {
            throw new ShapeException($"{Name}: destination {Tensor.Format(output.Shape)} does not match the output {Tensor.Format(shape)}.");
        }
        return output;
    }

    // The calling thread's im2col scratch, grown to what this layer's column pass needs.
    private Span<float> SharedCol(int batch, int outH, int outW)
    {
        if (Convolution.IsPointwise(KernelSize, KernelSize, Stride, Padding))
        {
            return default;
        }
        int images = Convolution.ImagesPerColumnPass(batch, InChannels, KernelSize, KernelSize, outH, outW, ChannelMajorColumnBudget);
        int size = checked(images * InChannels * KernelSize * KernelSize * outH * outW);
        if (t_sharedCol is null || t_sharedCol.Length < size)
        {
            t_sharedCol = new float[Math.Max(size, ChannelMajorColumnBudget)];
        }
        return t_sharedCol.AsSpan(0, size);
    }

    private void EnsureCol(int outH, int outW)
    {
        if (Convolution.IsPointwise(KernelSize, KernelSize, Stride, Padding))
        {
            return;
        }
        int size = InChannels * KernelSize * KernelSize * outH * outW;
        if (_col.Length < size)
        {
            _col = new float[size];
        }
    }
}
