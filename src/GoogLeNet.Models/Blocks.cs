using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Layers;

namespace GoogLeNet.Models;

/// <summary>
/// Convolution then ReLU; torchvision puts BatchNorm (eps 1e-3) between them and drops the bias.
/// Children are named conv and bn so paths read <c>conv1.conv.weight</c>, <c>conv1.bn.running_var</c>.
/// </summary>
public sealed class ConvBlock : Layer
{
    private readonly Sequential _body;
    private readonly ReLU _relu = new("relu");
    private Tensor? _foldedInput;
    private (MaxPool2d Pool, Tensor Input)? _pooledFoldedInput;
    private Tensor? _pooledTrainingInput;

    public ConvBlock(string name, int inChannels, int outChannels, int kernelSize, int stride, int padding, bool batchNorm)
        : base(name)
    {
        Conv = new Conv2d("conv", inChannels, outChannels, kernelSize, stride, padding, bias: !batchNorm);
        Norm = batchNorm ? new BatchNorm2d("bn", outChannels, epsilon: 1e-3f) : null;
        _body = Norm is null
            ? new Sequential(name, Conv, _relu)
            : new Sequential(name, Conv, Norm, _relu);
    }

    public Conv2d Conv { get; }

    public BatchNorm2d? Norm { get; }

    public override string TypeName => Norm is null ? "Conv2d+ReLU" : "Conv2d+BN+ReLU";

    public override IEnumerable<Layer> Children => _body.Children;

    public override int[] OutputShape(int[] inputShape) => _body.OutputShape(inputShape);

    public override long Macs(int[] inputShape) => _body.Macs(inputShape);

    public override Tensor Forward(Tensor input) => ForwardInto(input, null);

    /// <summary>
    /// Forward; in inference the BatchNorm and ReLU are folded into the convolution (one pass),
    /// which then writes <paramref name="destination"/> when given.
    /// </summary>
    public Tensor ForwardInto(Tensor input, Tensor? destination)
    {
        _pooledFoldedInput = null;
        _pooledTrainingInput = null;
        if (IsTraining)
        {
            _foldedInput = null;
            if (Norm is null)
            {
                // Without BatchNorm the ReLU runs in the convolution's epilogue, straight into
                // the destination; its backward needs only that output.
                Tensor fused = Conv.ForwardWithRelu(input, destination);
                _relu.AdoptOutput(fused);
                return fused;
            }
            Tensor output = _body.Forward(input);
            if (destination is null)
            {
                return output;
            }
            CopyInParallel(output, destination.Data.AsMemory(destination.Offset, destination.Length));
            return destination;
        }
        _foldedInput = input;
        return Conv.ForwardFolded(input, Norm, destination);
    }

    /// <summary>
    /// Inference: this block then <paramref name="pool"/> in one pass where the convolution can
    /// pool its own output (the stem, <see cref="Conv2d.CanFusePool"/>); null where it cannot.
    /// </summary>
    internal Tensor? TryForwardPooled(Tensor input, MaxPool2d pool)
    {
        if (IsTraining || !Conv.CanFusePool(pool))
        {
            return null;
        }
        _foldedInput = input;
        _pooledFoldedInput = null;
        _pooledTrainingInput = null;
        return Conv.ForwardFoldedPooled(input, Norm, pool);
    }

    /// <summary>
    /// Training: this block then <paramref name="pool"/> in one pass where the convolution can
    /// pool its own output and record the argmax (the stem without BatchNorm,
    /// <see cref="Conv2d.CanFusePoolInTraining"/>); null where it cannot. The block's output is
    /// never stored: <see cref="TryBackwardThroughPool"/> goes back through the two in one pass,
    /// or the pool's <see cref="MaxPool2d.BackwardThroughRelu"/> and then <see cref="BackwardBelowRelu"/>
    /// (plain Backward computes the output again).
    /// </summary>
    internal Tensor? TryForwardPooledInTraining(Tensor input, MaxPool2d pool)
    {
        if (!IsTraining || Norm is not null || !pool.IsTraining || !Conv.CanFusePoolInTraining(pool))
        {
            return null;
        }
        _foldedInput = null;
        _pooledFoldedInput = null;
        _pooledTrainingInput = input;
        return Conv.ForwardWithReluPooled(input, pool);
    }

    /// <summary>
    /// Inference: this block on <paramref name="pool"/>'s output, with the pooling done as the
    /// convolution reads its input (<see cref="Conv2d.CanFuseAfterPool"/>), into
    /// <paramref name="destination"/>; null where it cannot (nothing has run then).
    /// </summary>
    internal Tensor? TryForwardAfterPool(Tensor input, MaxPool2d pool, Tensor destination)
    {
        if (IsTraining || pool.IsTraining || !Conv.CanFuseAfterPool(pool))
        {
            return null;
        }
        _foldedInput = null;
        _pooledFoldedInput = (pool, input);
        _pooledTrainingInput = null;
        return Conv.ForwardFoldedAfterPool(input, Norm, pool, destination);
    }

    /// <summary>
    /// Marks a forward pass that ran outside this block (the Inception block's stacked 1x1 GEMM):
    /// Backward then runs the layers again on this input, as after a folded forward.
    /// </summary>
    internal void RememberFoldedInput(Tensor input)
    {
        _foldedInput = input;
        _pooledFoldedInput = null;
        _pooledTrainingInput = null;
    }

    /// <summary>
    /// Training, for a caller that ran this block's convolution itself (the Inception block's
    /// stacked 1x1 GEMM): BatchNorm and ReLU on the convolution's output; without BatchNorm the
    /// caller applied the ReLU in its epilogue, and <paramref name="convolved"/> is the output.
    /// </summary>
    internal Tensor ForwardAfterConvolution(Tensor convolved)
    {
        _foldedInput = null;
        _pooledFoldedInput = null;
        _pooledTrainingInput = null;
        if (Norm is null)
        {
            _relu.AdoptOutput(convolved);
            return convolved;
        }
        return _relu.Forward(Norm.Forward(convolved));
    }

    /// <summary>
    /// The gradient with respect to the convolution's output, the inverse of <see cref="ForwardAfterConvolution"/>,
    /// written to <paramref name="destination"/> (without BatchNorm straight from the ReLU's mask).
    /// </summary>
    internal void BackwardToConvolution(Tensor dOutput, Memory<float> destination)
    {
        if (Norm is null)
        {
            _relu.BackwardInto(dOutput, destination);
            return;
        }
        CopyInParallel(Norm.Backward(_relu.Backward(dOutput)), destination);
    }

    /// <summary>
    /// <see cref="BackwardToConvolution"/> from the gradient with respect to the ReLU's input
    /// (a caller applied the ReLU's gradient): BatchNorm's backward, if any, else a copy.
    /// </summary>
    internal void BackwardToConvolutionBelowRelu(Tensor dPreActivation, Memory<float> destination) =>
        CopyInParallel(Norm is null ? dPreActivation : Norm.Backward(dPreActivation), destination);

    /// <summary>
    /// After <see cref="TryForwardPooledInTraining"/>: the parameter gradients from the pool's
    /// output gradient in one pass (<see cref="Conv2d.BackwardThroughPool"/>), where no input
    /// gradient is wanted; false (nothing done) otherwise, and the pool's backward then runs.
    /// </summary>
    internal bool TryBackwardThroughPool(MaxPool2d pool, Tensor dPooled)
    {
        if (_pooledTrainingInput is null || Norm is not null || !Conv.BackwardThroughPool(pool, dPooled))
        {
            return false;
        }
        _pooledTrainingInput = null;
        return true;
    }

    public override Tensor? Backward(Tensor dOutput)
    {
        if (_pooledTrainingInput is { } input)
        {
            // The pooled forward stored no output for the ReLU's backward: compute it.
            _relu.AdoptOutput(Conv.ForwardWithRelu(input));
            _pooledTrainingInput = null;
        }
        RerunFoldedForward();
        return _body.Backward(dOutput);
    }

    // Block outputs run to tens of megabytes: both threads copy.
    internal static void CopyInParallel(Tensor source, Memory<float> destination) =>
        Parallelism.For(source.Length, 1, (source, destination), static (s, start, count) =>
            s.source.Span.Slice(start, count).CopyTo(s.destination.Span.Slice(start, count)));

    /// <summary>
    /// Backward from the gradient with respect to the ReLU's input, for a caller that applied the
    /// ReLU's gradient itself (<see cref="MaxPool2d.BackwardThroughRelu"/>): BatchNorm (if any)
    /// and the convolution.
    /// </summary>
    internal Tensor? BackwardBelowRelu(Tensor dPreActivation)
    {
        _pooledTrainingInput = null;
        RerunFoldedForward();
        return Conv.Backward(Norm is null ? dPreActivation : Norm.Backward(dPreActivation));
    }

    // The folded forward kept nothing for the backward pass: run the layers one by one (after a
    // fused pool, the pool first, so that its own Backward finds its forward pass).
    private void RerunFoldedForward()
    {
        if (_pooledFoldedInput is { } pooled)
        {
            _body.Forward(pooled.Pool.Forward(pooled.Input));
            _pooledFoldedInput = null;
        }
        if (_foldedInput is not null)
        {
            _body.Forward(_foldedInput);
            _foldedInput = null;
        }
    }
}

/// <summary>
/// The Inception module: four parallel branches (1x1; 1x1 then 3x3; 1x1 then "5x5"; 3x3 max-pool
/// then 1x1) concatenated along channels. torchvision's "5x5" branch is a 3x3 convolution, a known
/// deviation kept so its weights load.
/// </summary>
public sealed class Inception : Layer
{
    private readonly Layer[] _branches;
    private readonly int[] _branchChannels;
    private Tensor? _output;
    private Tensor? _dInput;
    private readonly Tensor?[] _dBranch = new Tensor?[4];
    private readonly Layer?[] _branchHeads;
    private readonly ConvBlock[] _branchTails;
    // The 1x1 convolutions that read the block input, in the order of the stacked rows.
    private readonly ConvBlock[] _stackedBlocks;
    private readonly Tensor?[] _outputSlices = new Tensor?[4];
    private readonly Tensor?[] _gradientSlices = new Tensor?[4];
    private float[] _stacked = [];
    private float[] _stackedGradient = [];
    private float[] _stackedWeightGradient = [];
    private Tensor? _stackedInput;
    private float[] _stackedWeight = [];
    private float[] _stackedScale = [];
    private float[] _stackedBias = [];
    private Tensor? _stackedOutput;
    private Tensor? _convolvedBranch1;
    private readonly Tensor?[] _stackedSlices = new Tensor?[4];
    private Tensor? _reduced3x3;
    private Tensor? _reduced5x5;

    public Inception(InceptionSpec spec, int kernel5x5, bool batchNorm, bool ceilPool)
        : base(spec.Name)
    {
        Spec = spec;
        Kernel5x5 = kernel5x5;
        ConvBlock Block(string name, int inC, int outC, int k) => new(name, inC, outC, k, 1, k / 2, batchNorm);
        ConvBlock branch1 = Block("branch1", spec.InChannels, spec.Ch1x1, 1);
        ConvBlock reduce3x3 = Block("0", spec.InChannels, spec.Ch3x3Reduce, 1);
        ConvBlock conv3x3 = Block("1", spec.Ch3x3Reduce, spec.Ch3x3, 3);
        ConvBlock reduce5x5 = Block("0", spec.InChannels, spec.Ch5x5Reduce, 1);
        ConvBlock conv5x5 = Block("1", spec.Ch5x5Reduce, spec.Ch5x5, kernel5x5);
        var pool = new MaxPool2d("0", 3, 1, 1, ceilPool);
        ConvBlock poolProjection = Block("1", spec.InChannels, spec.PoolProj, 1);
        _branches =
        [
            branch1,
            new Sequential("branch2", reduce3x3, conv3x3),
            new Sequential("branch3", reduce5x5, conv5x5),
            new Sequential("branch4", pool, poolProjection),
        ];
        // What feeds each branch's last convolution, and that convolution.
        _branchHeads = [null, reduce3x3, reduce5x5, pool];
        _branchTails = [branch1, conv3x3, conv5x5, poolProjection];
        _branchChannels = [spec.Ch1x1, spec.Ch3x3, spec.Ch5x5, spec.PoolProj];
        _stackedBlocks = [reduce3x3, reduce5x5, branch1];
    }

    public InceptionSpec Spec { get; }

    public int Kernel5x5 { get; }

    public override IEnumerable<Layer> Children => _branches;

    public override int[] OutputShape(int[] inputShape)
    {
        int channels = 0;
        int[] first = [];
        foreach (Layer branch in _branches)
        {
            int[] o = branch.OutputShape(inputShape);
            if (first.Length == 0)
            {
                first = o;
            }
            channels += o[0];
        }
        return [channels, first[1], first[2]];
    }

    public override long Macs(int[] inputShape) => _branches.Sum(b => b.Macs(inputShape));

    public override Tensor Forward(Tensor input)
    {
        if (ChannelMajor && IsTraining)
        {
            return ForwardStackedTraining(input);
        }
        _stackedInput = null;
        int batchPixels = input.Shape[0] * input.Shape[2] * input.Shape[3];
        if (ChannelMajor && StackingPays(batchPixels))
        {
            return ForwardStacked(input);
        }
        Tensor output = Ensure(ref _output, OutputShapeFor(input));
        (int runs, int pixels) = PerChannelRuns(output);
        if (ChannelMajor)
        {
            // Each branch's channels are one contiguous run of the output: its last convolution
            // writes there directly.
            for (int b = 0; b < _branches.Length; b++)
            {
                Layer? head = _branchHeads[b];
                _branchTails[b].ForwardInto(head is null ? input : head.Forward(input), OutputSlice(b, output, pixels));
            }
            return output;
        }
        int offset = 0;
        for (int b = 0; b < _branches.Length; b++)
        {
            Tensor y = _branches[b].Forward(input);
            int channels = _branchChannels[b];
            Parallelism.For(runs, channels * pixels, (y, output, channels, pixels, at: offset), static (s, start, count) =>
            {
                int total = s.output.Shape[1];
                Elementwise.CopyChannels(s.y.Span.Slice(start * s.channels * s.pixels, count * s.channels * s.pixels), count,
                    s.channels, s.pixels, total, s.at, s.output.Span.Slice(start * total * s.pixels, count * total * s.pixels));
            });
            offset += channels;
        }
        return output;
    }

    /// <summary>
    /// Inference, channel-major: the three 1x1 convolutions that read the block input (the two
    /// reductions and branch 1) run as one GEMM over their stacked weights, BatchNorm and ReLU
    /// folded in, so the input is packed once and the small reductions share a large M. The
    /// stacked rows land in one buffer laid out [reduce3x3 | reduce5x5 | block output]: the
    /// reductions are scratch that the 3x3 and "5x5" convolutions read, and branch 1's rows are
    /// the first channels of the block output. Every other branch writes its slice directly.
    /// </summary>
    private Tensor ForwardStacked(Tensor input)
    {
        int[] shape = OutputShapeFor(input);
        int batch = input.Shape[0], height = input.Shape[2], width = input.Shape[3];
        int pixels = batch * height * width;
        int inChannels = Spec.InChannels;
        int scratchRows = Spec.Ch3x3Reduce + Spec.Ch5x5Reduce;
        int rows = StackWeights();
        long size = (long)(scratchRows + shape[1]) * pixels;
        if (_stacked.Length < size)
        {
            _stacked = new float[size];
        }
        bool scaled = false;
        int row = 0;
        foreach (ConvBlock block in _stackedBlocks)
        {
            int count = block.Conv.OutChannels;
            scaled |= block.Conv.Fold(block.Norm, _stackedScale.AsSpan(row, count), _stackedBias.AsSpan(row, count));
            block.RememberFoldedInput(input);
            row += count;
        }
        Convolution.ForwardChannelMajor(input.Span, batch, inChannels, height, width, _stackedWeight, _stackedBias,
            rows, 1, 1, 1, 0, height, width, relu: true, default, _stacked.AsSpan(0, rows * pixels),
            scaled ? _stackedScale : default);

        Tensor output = StackedView(ref _stackedOutput, scratchRows * pixels, shape);
        Tensor reduced3x3 = StackedView(ref _reduced3x3, 0, [batch, Spec.Ch3x3Reduce, height, width]);
        Tensor reduced5x5 = StackedView(ref _reduced5x5, Spec.Ch3x3Reduce * pixels, [batch, Spec.Ch5x5Reduce, height, width]);
        // Views of the stacked buffer have their own cache: training's output is another buffer.
        _branchTails[1].ForwardInto(reduced3x3, Slice(_stackedSlices, 1, output, pixels));
        _branchTails[2].ForwardInto(reduced5x5, Slice(_stackedSlices, 2, output, pixels));
        // The pool branch's 1x1 convolution pools as it reads the block input.
        Tensor poolSlice = Slice(_stackedSlices, 3, output, pixels);
        var pool = (MaxPool2d)_branchHeads[3]!;
        if (_branchTails[3].TryForwardAfterPool(input, pool, poolSlice) is null)
        {
            _branchTails[3].ForwardInto(pool.Forward(input), poolSlice);
        }
        return output;
    }

    // Stacking the 1x1 convolutions saves packing the input more than once, but when each of them
    // alone is narrow enough to read the input in place (a small batch: few pixels) and the
    // stack is not, it would add the packing: measured 10% slower at batch 1.
    internal bool StackingPays(int batchPixels)
    {
        int rows = Spec.Ch3x3Reduce + Spec.Ch5x5Reduce + Spec.Ch1x1;
        bool eachInPlace = Gemm.ReadsBInPlace(Spec.Ch1x1, batchPixels) && Gemm.ReadsBInPlace(Spec.Ch3x3Reduce, batchPixels)
            && Gemm.ReadsBInPlace(Spec.Ch5x5Reduce, batchPixels);
        return Gemm.ReadsBInPlace(rows, batchPixels) || !eachInPlace;
    }

    // Copies the stacked blocks' weights (rows x in) into one matrix; returns the row count.
    // They are copied on every call (a few hundred KiB against a GEMM of millions of MACs per
    // image) so that nothing goes stale when the weights change.
    private int StackWeights()
    {
        int inChannels = Spec.InChannels;
        int rows = Spec.Ch3x3Reduce + Spec.Ch5x5Reduce + Spec.Ch1x1;
        if (_stackedWeight.Length != rows * inChannels)
        {
            _stackedWeight = new float[rows * inChannels];
            _stackedScale = new float[rows];
            _stackedBias = new float[rows];
        }
        int row = 0;
        foreach (ConvBlock block in _stackedBlocks)
        {
            block.Conv.Weight.Value.Span.CopyTo(_stackedWeight.AsSpan(row * inChannels));
            block.Conv.Bias?.Value.Span.CopyTo(_stackedBias.AsSpan(row));
            row += block.Conv.OutChannels;
        }
        return rows;
    }

    /// <summary>
    /// Training, channel-major: the stacked 1x1 GEMM (bias, if the convolutions have one, in its
    /// epilogue) writes the three convolutions' outputs as rows of one buffer; each block's
    /// BatchNorm and ReLU then run on its rows. Backward runs the weight and input gradients of
    /// the three as one GEMM each.
    /// </summary>
    private Tensor ForwardStackedTraining(Tensor input)
    {
        int[] shape = OutputShapeFor(input);
        Tensor output = Ensure(ref _output, shape);
        int batch = input.Shape[0], height = input.Shape[2], width = input.Shape[3];
        int pixels = batch * height * width;
        int rows = StackWeights();
        if (_stacked.Length < (long)rows * pixels)
        {
            _stacked = new float[(long)rows * pixels];
        }
        bool biased = _branchTails[0].Conv.Bias is not null;
        // Without BatchNorm the blocks' ReLUs run in the GEMM's epilogue (ForwardAfterConvolution).
        bool relu = _branchTails[0].Norm is null;
        Convolution.ForwardChannelMajor(input.Span, batch, Spec.InChannels, height, width, _stackedWeight,
            biased ? _stackedBias : default, rows, 1, 1, 1, 0, height, width, relu, default,
            _stacked.AsSpan(0, rows * pixels));
        _stackedInput = input;

        Tensor reduced3x3 = StackedView(ref _reduced3x3, 0, [batch, Spec.Ch3x3Reduce, height, width]);
        Tensor reduced5x5 = StackedView(ref _reduced5x5, Spec.Ch3x3Reduce * pixels, [batch, Spec.Ch5x5Reduce, height, width]);
        Tensor branch1 = StackedView(ref _convolvedBranch1, (Spec.Ch3x3Reduce + Spec.Ch5x5Reduce) * pixels, [batch, Spec.Ch1x1, height, width]);
        ConvBlock[] blocks = _stackedBlocks;
        _branchTails[1].ForwardInto(blocks[0].ForwardAfterConvolution(reduced3x3), OutputSlice(1, output, pixels));
        _branchTails[2].ForwardInto(blocks[1].ForwardAfterConvolution(reduced5x5), OutputSlice(2, output, pixels));
        Tensor branch0 = OutputSlice(0, output, pixels);
        ConvBlock.CopyInParallel(blocks[2].ForwardAfterConvolution(branch1), branch0.Data.AsMemory(branch0.Offset, branch0.Length));
        _branchTails[3].ForwardInto(_branchHeads[3]!.Forward(input), OutputSlice(3, output, pixels));
        return output;
    }

    // belowRelu: dOutput is the gradient below the branches' closing ReLUs (a max pool or the
    // block above applied them). reluInput: the input is a ReLU's output, and dInput comes back
    // through that ReLU's gradient as well, applied in the pass that sums the branches.
    private Tensor BackwardStackedTraining(Tensor input, Tensor dOutput, bool belowRelu, bool reluInput)
    {
        int batch = input.Shape[0];
        int pixels = batch * input.Shape[2] * input.Shape[3];
        int inChannels = Spec.InChannels;
        int rows = Spec.Ch3x3Reduce + Spec.Ch5x5Reduce + Spec.Ch1x1;
        if (_stackedGradient.Length < (long)rows * pixels)
        {
            _stackedGradient = new float[(long)rows * pixels];
        }
        if (_stackedWeightGradient.Length != rows * inChannels)
        {
            _stackedWeightGradient = new float[rows * inChannels];
        }
        ConvBlock[] blocks = _stackedBlocks;
        Tensor dReduced3x3 = TailBackward(1, GradientSlice(1, dOutput, pixels), belowRelu);
        Tensor dReduced5x5 = TailBackward(2, GradientSlice(2, dOutput, pixels), belowRelu);
        Memory<float> stacked = _stackedGradient.AsMemory(0, rows * pixels);
        blocks[0].BackwardToConvolution(dReduced3x3, stacked.Slice(0, Spec.Ch3x3Reduce * pixels));
        blocks[1].BackwardToConvolution(dReduced5x5, stacked.Slice(Spec.Ch3x3Reduce * pixels, Spec.Ch5x5Reduce * pixels));
        Memory<float> branch1 = stacked.Slice((Spec.Ch3x3Reduce + Spec.Ch5x5Reduce) * pixels);
        if (belowRelu)
        {
            blocks[2].BackwardToConvolutionBelowRelu(GradientSlice(0, dOutput, pixels), branch1);
        }
        else
        {
            blocks[2].BackwardToConvolution(GradientSlice(0, dOutput, pixels), branch1);
        }
        Span<float> dStacked = stacked.Span;

        // dW (rows, in) = dS (rows, n*p) X^T; dX (in, n*p) = W^T dS, over all three at once.
        Gemm.Multiply(false, true, rows, inChannels, pixels, dStacked, pixels, input.Span, pixels,
            _stackedWeightGradient, inChannels, accumulate: false);
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        Gemm.Multiply(true, false, inChannels, pixels, rows, _stackedWeight, inChannels, dStacked, pixels,
            dInput.Span, pixels, accumulate: false);
        int row = 0;
        foreach (ConvBlock block in blocks)
        {
            int count = block.Conv.OutChannels;
            Span<float> dWeight = block.Conv.Weight.Grad!.Span;
            System.Numerics.Tensors.TensorPrimitives.Add(dWeight, _stackedWeightGradient.AsSpan(row * inChannels, count * inChannels), dWeight);
            if (block.Conv.Bias is { } bias)
            {
                Elementwise.AddChannelSums(dStacked.Slice(row * pixels, count * pixels), count, pixels, bias.Grad!.Span);
            }
            row += count;
        }

        Tensor dPool = _branchHeads[3]!.Backward(TailBackward(3, GradientSlice(3, dOutput, pixels), belowRelu))!;
        if (reluInput)
        {
            Parallelism.For(dInput.Length, 1, (sum: dInput, dPool, input), static (s, start, count) =>
                Elementwise.AddReluBackward(s.input.Span.Slice(start, count), s.dPool.Span.Slice(start, count), s.sum.Span.Slice(start, count)));
            return dInput;
        }
        Parallelism.For(dInput.Length, 1, (sum: dInput, dPool), static (s, start, count) =>
            System.Numerics.Tensors.TensorPrimitives.Add(s.sum.Span.Slice(start, count), s.dPool.Span.Slice(start, count),
                s.sum.Span.Slice(start, count)));
        return dInput;
    }

    private Tensor TailBackward(int branch, Tensor dOutput, bool belowRelu) =>
        (belowRelu ? _branchTails[branch].BackwardBelowRelu(dOutput) : _branchTails[branch].Backward(dOutput))!;

    private Tensor StackedView(ref Tensor? view, int offset, ReadOnlySpan<int> shape)
    {
        if (view is null || view.Data != _stacked || view.Offset != offset || !view.HasShape(shape))
        {
            view = new Tensor(_stacked, offset, shape.ToArray());
        }
        return view;
    }

    private Tensor OutputSlice(int branch, Tensor output, int pixels) => Slice(_outputSlices, branch, output, pixels);

    private Tensor GradientSlice(int branch, Tensor dOutput, int pixels) => Slice(_gradientSlices, branch, dOutput, pixels);

    // A view of branch b's channels in a channel-major tensor, made once per buffer.
    private Tensor Slice(Tensor?[] slices, int branch, Tensor whole, int pixels)
    {
        int channelOffset = 0;
        for (int b = 0; b < branch; b++)
        {
            channelOffset += _branchChannels[b];
        }
        int offset = whole.Offset + channelOffset * pixels;
        Tensor? slice = slices[branch];
        if (slice is null || slice.Data != whole.Data || slice.Offset != offset || !slice.HasShape(whole.Shape[0], _branchChannels[branch], whole.Shape[2], whole.Shape[3]))
        {
            slice = new Tensor(whole.Data, offset, [whole.Shape[0], _branchChannels[branch], whole.Shape[2], whole.Shape[3]]);
            slices[branch] = slice;
        }
        return slice;
    }

    /// <summary>The input feeds four branches, so its gradient is the sum of theirs.</summary>
    public override Tensor Backward(Tensor dOutput) => Backward(dOutput, belowRelu: false, reluInput: false).DInput;

    /// <summary>
    /// Backward from the gradient with respect to the branches' outputs before their closing
    /// ReLUs (<paramref name="belowRelu"/>: a max pool above, or the block above, applied them),
    /// and with <paramref name="reluInput"/> the input gradient taken back through the ReLU whose
    /// output the input is (the block below's), which the training pass does while it sums the
    /// branches: one pass over the output and one over the input fewer, bit for bit the same.
    /// ThroughInputRelu tells whether that was done; where not, the caller applies it.
    /// </summary>
    internal (Tensor DInput, bool ThroughInputRelu) Backward(Tensor dOutput, bool belowRelu, bool reluInput)
    {
        if (_stackedInput is not null)
        {
            return (BackwardStackedTraining(_stackedInput, dOutput, belowRelu, reluInput), reluInput);
        }
        // The ReLUs' gradients are idempotent: a gradient they have passed passes them again unchanged.
        return (BackwardBranches(dOutput), false);
    }

    private Tensor BackwardBranches(Tensor dOutput)
    {
        int batch = dOutput.Shape[0];
        (int runs, int pixels) = PerChannelRuns(dOutput);
        int offset = 0;
        Tensor? dInput = null;
        for (int b = 0; b < _branches.Length; b++)
        {
            int channels = _branchChannels[b];
            Tensor dBranch;
            if (ChannelMajor)
            {
                // The branch's channels are one contiguous run: a view, no copy.
                dBranch = GradientSlice(b, dOutput, pixels);
            }
            else
            {
                dBranch = Ensure(ref _dBranch[b], [batch, channels, dOutput.Shape[2], dOutput.Shape[3]]);
                Parallelism.For(runs, channels * pixels, (dOutput, dBranch, channels, pixels, at: offset), static (s, start, count) =>
                {
                    int total = s.dOutput.Shape[1];
                    Elementwise.SliceChannels(s.dOutput.Span.Slice(start * total * s.pixels, count * total * s.pixels), count,
                        s.channels, s.pixels, total, s.at, s.dBranch.Span.Slice(start * s.channels * s.pixels, count * s.channels * s.pixels));
                });
            }
            offset += channels;
            Tensor dx = _branches[b].Backward(dBranch)!;
            if (dInput is null)
            {
                dInput = Ensure(ref _dInput, dx.Shape);
                dx.Span.CopyTo(dInput.Span);
            }
            else
            {
                Parallelism.For(dInput.Length, 1, (sum: dInput, dx), static (s, start, count) =>
                    System.Numerics.Tensors.TensorPrimitives.Add(s.sum.Span.Slice(start, count), s.dx.Span.Slice(start, count),
                        s.sum.Span.Slice(start, count)));
            }
        }
        return dInput!;
    }
}

/// <summary>
/// An auxiliary classifier on an intermediate Inception output: pool to 4x4, 1x1 conv to 128,
/// FC 1024, ReLU, dropout 0.7, FC. torchvision pools adaptively; Caffe uses a 5x5/3 average pool.
/// </summary>
public sealed class InceptionAux : Layer
{
    private readonly Sequential _body;

    public InceptionAux(string name, int inChannels, int classes, bool torchvisionStyle, int inputSize, float dropout, ulong seed)
        : base(name)
    {
        Layer pool = torchvisionStyle
            ? new AdaptiveAvgPool2d("pool", 4, 4)
            : new AvgPool2d("pool", 5, 3, ceilMode: true);
        int pooled = torchvisionStyle ? 4 : WindowMath.OutputSize(inputSize, 5, 3, 0, true);
        if (pooled < 1)
        {
            throw new ShapeException($"{name}: its 5x5 average pool needs a feature map of at least 5x5, got {inputSize}x{inputSize}.");
        }
        _body = new Sequential(name,
            pool,
            new ConvBlock("conv", inChannels, 128, 1, 1, 0, batchNorm: torchvisionStyle),
            new Flatten("flatten"),
            new Linear("fc1", 128 * pooled * pooled, 1024),
            new ReLU("relu"),
            new Dropout("dropout", dropout, seed),
            new Linear("fc2", 1024, classes));
    }

    public override IEnumerable<Layer> Children => _body.Children;

    public override int[] OutputShape(int[] inputShape) => _body.OutputShape(inputShape);

    public override long Macs(int[] inputShape) => _body.Macs(inputShape);

    public override Tensor Forward(Tensor input) => _body.Forward(input);

    public override Tensor Backward(Tensor dOutput) => _body.Backward(dOutput)!;
}

/// <summary>torchvision's transform_input: re-normalises ImageNet-normalised input to the (x-0.5)/0.5 its weights saw.</summary>
public sealed class TransformInput(string name) : Layer(name)
{
    private static readonly double[] s_mean = [0.485, 0.456, 0.406];
    private static readonly double[] s_std = [0.229, 0.224, 0.225];
    private Tensor? _output;
    private Tensor? _dInput;

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, 3);
        return inputShape;
    }

    public override Tensor Forward(Tensor input)
    {
        OutputShapeFor(input);
        Tensor output = Ensure(ref _output, input.Shape);
        (int runs, int pixels) = PerChannelRuns(input);
        for (int n = 0; n < runs; n++)
        {
            for (int c = 0; c < 3; c++)
            {
                int o = (n * 3 + c) * pixels;
                float scale = (float)(s_std[c] / 0.5);
                float shift = (float)((s_mean[c] - 0.5) / 0.5);
                System.Numerics.Tensors.TensorPrimitives.Multiply(input.Span.Slice(o, pixels), scale, output.Span.Slice(o, pixels));
                System.Numerics.Tensors.TensorPrimitives.Add(output.Span.Slice(o, pixels), shift, output.Span.Slice(o, pixels));
            }
        }
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor dInput = Ensure(ref _dInput, dOutput.Shape);
        (int runs, int pixels) = PerChannelRuns(dOutput);
        for (int n = 0; n < runs; n++)
        {
            for (int c = 0; c < 3; c++)
            {
                int o = (n * 3 + c) * pixels;
                System.Numerics.Tensors.TensorPrimitives.Multiply(dOutput.Span.Slice(o, pixels), (float)(s_std[c] / 0.5), dInput.Span.Slice(o, pixels));
            }
        }
        return dInput;
    }
}
