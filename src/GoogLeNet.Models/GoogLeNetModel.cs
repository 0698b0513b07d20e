using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;

namespace GoogLeNet.Models;

/// <summary>Main logits, and in training with aux heads on, the logits of aux1 (on 4a) and aux2 (on 4d).</summary>
public readonly record struct GoogLeNetOutput(Tensor Logits, Tensor? Aux1, Tensor? Aux2);

/// <summary>One row of a model summary: a top-level module of the network.</summary>
public sealed record LayerSummary(string Name, string Type, int[] Output, long Parameters, long Macs);

/// <summary>
/// GoogLeNet as a static graph: the trunk runs top to bottom, the aux heads tap 4a and 4d in
/// training only, and Backward walks the trunk in reverse adding the aux gradients at the taps.
/// </summary>
public sealed class GoogLeNetModel
{
    private readonly Layer[] _trunk;
    private readonly int _aux1Tap;
    private readonly int _aux2Tap;
    private readonly InceptionAux? _aux1;
    private readonly InceptionAux? _aux2;
    private readonly Conv2d _firstConv;
    private Tensor? _channelMajorInput;
    private Tensor? _inputGradient;

    public GoogLeNetModel(GoogLeNetOptions options)
    {
        if (options.InputChannels < 1 || options.Classes < 1)
        {
            throw new ArgumentException($"A GoogLeNet needs at least one input channel and one class, got {options.InputChannels} and {options.Classes}.");
        }
        if (options.AuxLogits && options.Preset == Preset.D2l)
        {
            throw new ArgumentException("The d2l preset has no auxiliary classifiers.");
        }
        Options = options;
        bool bn = options.Preset == Preset.Torchvision;
        bool caffePooling = options.Preset != Preset.D2l;
        int kernel5x5 = options.Preset == Preset.Torchvision ? 3 : 5;
        ConvBlock Conv(string name, int inC, int outC, int k, int stride = 1) => new(name, inC, outC, k, stride, k / 2, bn);
        // Caffe and torchvision pool 3x3/2 in ceil mode; d2l pads by one in floor mode.
        MaxPool2d Pool(string name, int k = 3) => caffePooling ? new MaxPool2d(name, k, 2, 0, ceilMode: true) : new MaxPool2d(name, 3, 2, 1);
        Inception Block(int index) => new(InceptionSpec.Table1[index], kernel5x5, bn, ceilPool: caffePooling);
        LocalResponseNorm? Lrn(string name) => options.Preset == Preset.Paper ? new LocalResponseNorm(name, 5, 1e-4f, 0.75f, 1f) : null;

        ConvBlock conv1 = Conv("conv1", options.InputChannels, 64, 7, 2);
        _firstConv = conv1.Conv;
        var trunk = new List<Layer?>
        {
            options.TransformInput ? new TransformInput("transform_input") : null,
            conv1,                                   // N x 64 x 112 x 112
            Pool("maxpool1"),                        // N x 64 x 56 x 56
            Lrn("lrn1"),
            Conv("conv2", 64, 64, 1),
            Conv("conv3", 64, 192, 3),               // N x 192 x 56 x 56
            Lrn("lrn2"),
            Pool("maxpool2"),                        // N x 192 x 28 x 28
            Block(0),                                // 3a: N x 256 x 28 x 28
            Block(1),                                // 3b: N x 480 x 28 x 28
            Pool("maxpool3"),                        // N x 480 x 14 x 14
            Block(2),                                // 4a: N x 512 x 14 x 14
            Block(3),                                // 4b
            Block(4),                                // 4c
            Block(5),                                // 4d: N x 528 x 14 x 14
            Block(6),                                // 4e: N x 832 x 14 x 14
            // torchvision pools 2x2 here; the paper and Caffe use 3x3/2.
            options.Preset == Preset.Torchvision ? new MaxPool2d("maxpool4", 2, 2, 0, ceilMode: true) : Pool("maxpool4"), // N x 832 x 7 x 7
            Block(7),                                // 5a
            Block(8),                                // 5b: N x 1024 x 7 x 7
            new AdaptiveAvgPool2d("avgpool", 1, 1),  // N x 1024 x 1 x 1
            new Flatten("flatten"),
            options.Dropout > 0f ? new Dropout("dropout", options.Dropout, options.Seed) : null,
            new Linear("fc", 1024, options.Classes),
        };
        _trunk = trunk.Where(l => l is not null).ToArray()!;
        _firstConv.PropagateDown = false;
        InputShape = [options.InputChannels, options.InputHeight, options.InputWidth];
        MinimumInputSize = FindMinimumInputSize();
        CheckInputSize(options.InputHeight, options.InputWidth);

        _aux1Tap = Array.FindIndex(_trunk, l => l.Name == "inception4a");
        _aux2Tap = Array.FindIndex(_trunk, l => l.Name == "inception4d");
        if (options.AuxLogits)
        {
            int[] tap1 = ShapeAfter(_aux1Tap, InputShape);
            int[] tap2 = ShapeAfter(_aux2Tap, InputShape);
            _aux1 = new InceptionAux("aux1", tap1[0], options.Classes, bn, tap1[1], options.AuxDropout, options.Seed);
            _aux2 = new InceptionAux("aux2", tap2[0], options.Classes, bn, tap2[1], options.AuxDropout, options.Seed);
        }
        foreach (Layer module in ModulesInStateDictOrder())
        {
            module.SetChannelMajor(true);
        }
        Parameters = new ParameterStore(ModulesInStateDictOrder().SelectMany(m => m.NamedParameters(m.Name + ".")));
        Initializer.Initialize(this);
        SetTraining(false);
    }

    public GoogLeNetOptions Options { get; }

    /// <summary>(C, H, W) the model was built for; any size of at least <see cref="MinimumInputSize"/> runs.</summary>
    public int[] InputShape { get; }

    public int MinimumInputSize { get; }

    public ParameterStore Parameters { get; }

    public bool IsTraining { get; private set; }

    public bool HasAux => _aux1 is not null;

    /// <summary>When set, Forward and Backward add each top-level module's wall time to it.</summary>
    public ModuleProfile? Profile { get; set; }

    /// <summary>When true, Backward also returns the gradient with respect to the input (off by default: training does not need it).</summary>
    public bool ComputeInputGradient
    {
        get => _firstConv.PropagateDown;
        set => _firstConv.PropagateDown = value;
    }

    /// <summary>Top-level modules in torchvision's registration order, which fixes the state_dict order.</summary>
    public IEnumerable<Layer> ModulesInStateDictOrder()
    {
        foreach (Layer layer in _trunk)
        {
            if (layer.Name == "avgpool")
            {
                if (_aux1 is not null)
                {
                    yield return _aux1;
                    yield return _aux2!;
                }
            }
            yield return layer;
        }
    }

    public void SetTraining(bool training)
    {
        IsTraining = training;
        foreach (Layer layer in ModulesInStateDictOrder())
        {
            layer.SetTraining(training);
        }
    }

    private Tensor? _pooledStemInput;
    private int _pooledStemIndex;

    public GoogLeNetOutput Forward(Tensor input)
    {
        ValidateInput(input);
        bool aux = IsTraining && _aux1 is not null;
        // Every layer stores its images channel-major (see Layer.ChannelMajor); a batch of one
        // is the same either way.
        Tensor x = input;
        if (input.Shape[0] > 1)
        {
            x = EnsureShape(ref _channelMajorInput, input.Shape);
            Engine.Kernels.Layout.ToChannelMajor(input.Span, input.Shape[0], input.Shape[1], input.Shape[2] * input.Shape[3], x.Span);
        }
        Tensor? aux1 = null;
        Tensor? aux2 = null;
        ModuleProfile? profile = Profile;
        profile?.CountForwardPass();
        _pooledStemInput = null;
        for (int i = 0; i < _trunk.Length; i++)
        {
            if (_trunk[i] is ConvBlock stem && i + 1 < _trunk.Length && _trunk[i + 1] is MaxPool2d pool
                && (!IsTraining || (FuseStemPool && FoldReluBackward && !(aux && (i == _aux1Tap || i == _aux2Tap))))
                && RunPooled(stem, pool, x, IsTraining, profile) is { } pooled)
            {
                // The stem and its pool ran as one. In inference the pool layer kept nothing (a
                // Backward runs the two apart first); in training it kept its maxima and argmax and
                // the stem no output, and Backward goes through the two in one pass.
                if (!IsTraining)
                {
                    _pooledStemInput = x;
                    _pooledStemIndex = i;
                }
                x = pooled;
                i++;
                continue;
            }
            x = Run(_trunk[i], x, profile);
            if (aux && i == _aux1Tap)
            {
                aux1 = Run(_aux1!, x, profile);
            }
            else if (aux && i == _aux2Tap)
            {
                aux2 = Run(_aux2!, x, profile);
            }
        }
        return new GoogLeNetOutput(x, aux1, aux2);
    }

    /// <summary>
    /// Accumulates parameter gradients from the gradients of the outputs of the last Forward;
    /// returns the input gradient when <see cref="ComputeInputGradient"/> is on, else null.
    /// </summary>
    public Tensor? Backward(Tensor dLogits, Tensor? dAux1 = null, Tensor? dAux2 = null)
    {
        Tensor? d = dLogits;
        ModuleProfile? profile = Profile;
        if (_pooledStemInput is { } stemInput)
        {
            // After an inference forward that fused the stem with its pool, the pool has no
            // forward of its own to go back through: run the two apart once.
            _trunk[_pooledStemIndex + 1].Forward(_trunk[_pooledStemIndex].Forward(stemInput));
            _pooledStemInput = null;
        }
        // Whether d is the gradient below the ReLUs that close _trunk[i] (an Inception block's).
        bool belowRelu = false;
        for (int i = _trunk.Length - 1; i >= 0 && d is not null; i--)
        {
            if (i == _aux2Tap && dAux2 is not null)
            {
                AddInPlace(d, RunBackward(RequireAux(_aux2), dAux2, profile)!);
            }
            else if (i == _aux1Tap && dAux1 is not null)
            {
                AddInPlace(d, RunBackward(RequireAux(_aux1), dAux1, profile)!);
            }
            // A layer below may take the ReLU gradient of its output from the layer above, where
            // no auxiliary classifier adds to that gradient in between.
            bool foldsBelow = FoldReluBackward && i > 0 && !AuxAddsAt(i - 1, dAux1, dAux2);
            if (_trunk[i] is Inception block && (belowRelu || foldsBelow))
            {
                // Inception -> Inception (3a -> 3b, 4a -> ... -> 4e, 5a -> 5b): the block above
                // applies the gradient of the ReLUs below while it sums its branches.
                (d, belowRelu) = RunBackward(block, d, belowRelu, foldsBelow && _trunk[i - 1] is Inception, profile);
                continue;
            }
            if (foldsBelow && _trunk[i] is MaxPool2d stemPool && _trunk[i - 1] is ConvBlock stem
                && RunBackwardThroughPool(stem, stemPool, d, profile))
            {
                // The stem and its pool ran as one: the stem's parameter gradients come straight
                // from the pool's output gradient (no input gradient is wanted below it).
                d = null;
                i--;
                continue;
            }
            if (foldsBelow && _trunk[i] is MaxPool2d pool && _trunk[i - 1] is ConvBlock or Inception
                && RunBackwardThroughRelu(pool, d, profile) is { } dPreActivation)
            {
                // The pool applied the ReLU gradient of the layer below in its scatter (conv1 ->
                // maxpool1, conv3 -> maxpool2, 3b -> maxpool3, 4e -> maxpool4): one pass over that
                // layer's output fewer.
                if (_trunk[i - 1] is ConvBlock below)
                {
                    d = RunBackwardBelowRelu(below, dPreActivation, profile);
                    i--;
                }
                else
                {
                    d = dPreActivation;
                    belowRelu = true;
                }
                continue;
            }
            d = RunBackward(_trunk[i], d, profile);
        }
        if (d is null || d.Shape[0] == 1)
        {
            return d;
        }
        Tensor dInput = EnsureShape(ref _inputGradient, d.Shape);
        Engine.Kernels.Layout.ToBatchMajor(d.Span, d.Shape[0], d.Shape[1], d.Shape[2] * d.Shape[3], dInput.Span);
        return dInput;
    }

    // The stem's time goes to its row of the profile; the pool's row stays empty.
    private static Tensor? RunPooled(ConvBlock stem, MaxPool2d pool, Tensor input, bool training, ModuleProfile? profile)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Tensor? output = training ? stem.TryForwardPooledInTraining(input, pool) : stem.TryForwardPooled(input, pool);
        if (output is not null)
        {
            profile?.Add(stem.Name, start, backward: false);
        }
        return output;
    }

    private static Tensor Run(Layer layer, Tensor input, ModuleProfile? profile)
    {
        if (profile is null)
        {
            return layer.Forward(input);
        }
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Tensor output = layer.Forward(input);
        profile.Add(layer.Name, start, backward: false);
        return output;
    }

    private static Tensor? RunBackward(Layer layer, Tensor dOutput, ModuleProfile? profile)
    {
        if (profile is null)
        {
            return layer.Backward(dOutput);
        }
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Tensor? dInput = layer.Backward(dOutput);
        profile.Add(layer.Name, start, backward: true);
        return dInput;
    }

    /// <summary>
    /// Whether Backward lets the layer above a ReLU apply its gradient (on by default; off to
    /// compare): a max pool over a ConvBlock or an Inception block, or an Inception block over another.
    /// </summary>
    internal static bool FoldReluBackward { get; set; } = true;

    /// <summary>
    /// Whether a training Forward runs a stem without BatchNorm and the max pool after it as one
    /// (<see cref="ConvBlock.TryForwardPooledInTraining"/>; on by default, with
    /// <see cref="FoldReluBackward"/>; off to compare): the stem's output, the network's largest
    /// tensor, is then neither written nor read back.
    /// </summary>
    internal static bool FuseStemPool { get; set; } = true;

    private bool AuxAddsAt(int layer, Tensor? dAux1, Tensor? dAux2) =>
        (layer == _aux1Tap && dAux1 is not null) || (layer == _aux2Tap && dAux2 is not null);

    private static (Tensor DInput, bool BelowRelu) RunBackward(Inception block, Tensor dOutput, bool belowRelu, bool reluInput,
        ModuleProfile? profile)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        (Tensor dInput, bool throughInputRelu) = block.Backward(dOutput, belowRelu, reluInput);
        profile?.Add(block.Name, start, backward: true);
        return (dInput, throughInputRelu);
    }

    private static Tensor? RunBackwardThroughRelu(MaxPool2d pool, Tensor dOutput, ModuleProfile? profile)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Tensor? dInput = pool.BackwardThroughRelu(dOutput);
        if (dInput is not null)
        {
            profile?.Add(pool.Name, start, backward: true);
        }
        return dInput;
    }

    // The time goes to the stem's row of the profile.
    private static bool RunBackwardThroughPool(ConvBlock stem, MaxPool2d pool, Tensor dPooled, ModuleProfile? profile)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        if (!stem.TryBackwardThroughPool(pool, dPooled))
        {
            return false;
        }
        profile?.Add(stem.Name, start, backward: true);
        return true;
    }

    private static Tensor? RunBackwardBelowRelu(ConvBlock block, Tensor dPreActivation, ModuleProfile? profile)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Tensor? dInput = block.BackwardBelowRelu(dPreActivation);
        profile?.Add(block.Name, start, backward: true);
        return dInput;
    }

    private static Tensor EnsureShape(ref Tensor? buffer, int[] shape)
    {
        if (buffer is null || !buffer.HasShape(shape))
        {
            buffer = new Tensor(shape);
        }
        return buffer;
    }

    public IReadOnlyList<LayerSummary> Summary()
    {
        var rows = new List<LayerSummary>();
        int[] shape = InputShape;
        int[] Add(Layer layer, int[] input)
        {
            int[] output = layer.OutputShape(input);
            long parameters = layer.NamedParameters().Where(p => p.Parameter.IsTrainable).Sum(p => (long)p.Parameter.Value.Length);
            rows.Add(new LayerSummary(layer.Name, layer.TypeName, output, parameters, layer.Macs(input)));
            return output;
        }
        for (int i = 0; i < _trunk.Length; i++)
        {
            shape = Add(_trunk[i], shape);
            if (i == _aux1Tap && _aux1 is not null)
            {
                Add(_aux1, shape);
            }
            else if (i == _aux2Tap && _aux2 is not null)
            {
                Add(_aux2, shape);
            }
        }
        return rows;
    }

    /// <summary>Output shape after each named top-level module, for a given input (the stage sizes).</summary>
    public int[] ShapeAfter(string moduleName, int[] inputShape) =>
        ShapeAfter(Array.FindIndex(_trunk, l => l.Name == moduleName), inputShape);

    private int[] ShapeAfter(int index, int[] inputShape)
    {
        if (index < 0)
        {
            throw new ArgumentException("No such module in this network.");
        }
        for (int i = 0; i <= index; i++)
        {
            inputShape = _trunk[i].OutputShape(inputShape);
        }
        return inputShape;
    }

    private void ValidateInput(Tensor input)
    {
        if (input.Rank != 4 || input.Shape[1] != Options.InputChannels)
        {
            throw new ShapeException($"Expected input (N, {Options.InputChannels}, H, W), got {Tensor.Format(input.Shape)}.");
        }
        if (input.Shape[0] < 1)
        {
            throw new ShapeException("The batch is empty.");
        }
        CheckInputSize(input.Shape[2], input.Shape[3]);
        float magnitude = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(input.Span);
        if (!float.IsFinite(magnitude))
        {
            int index = FirstNonFinite(input.Span);
            throw new ArgumentException($"The input contains a non-finite value ({input.Span[index]}) at flat index {index}.");
        }
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }
        return -1;
    }

    private void CheckInputSize(int height, int width)
    {
        if (height < MinimumInputSize || width < MinimumInputSize)
        {
            throw new ShapeException(
                $"GoogLeNet ({Options.Preset.ToName()}) needs inputs of at least {MinimumInputSize}x{MinimumInputSize}; got {height}x{width}.");
        }
    }

    private int FindMinimumInputSize()
    {
        for (int size = 1; size <= 4096; size++)
        {
            try
            {
                int[] shape = [Options.InputChannels, size, size];
                foreach (Layer layer in _trunk)
                {
                    shape = layer.OutputShape(shape);
                }
                // The Caffe-style aux pool needs a 5x5 map at 4a and 4d.
                if (Options.AuxLogits && Options.Preset == Preset.Paper)
                {
                    int[] tap = ShapeAfter(Array.FindIndex(_trunk, l => l.Name == "inception4d"), [Options.InputChannels, size, size]);
                    if (tap[1] < 5 || tap[2] < 5)
                    {
                        continue;
                    }
                }
                return size;
            }
            catch (ShapeException)
            {
            }
        }
        throw new InvalidOperationException("No input size up to 4096 fits this network.");
    }

    private static InceptionAux RequireAux(InceptionAux? aux) =>
        aux ?? throw new InvalidOperationException("An aux gradient was given, but the model has no aux heads.");

    private static void AddInPlace(Tensor target, Tensor addend)
    {
        if (!target.HasShape(addend.Shape))
        {
            throw new ShapeException($"Cannot add an aux gradient of shape {Tensor.Format(addend.Shape)} to {Tensor.Format(target.Shape)}.");
        }
        System.Numerics.Tensors.TensorPrimitives.Add(target.Span, addend.Span, target.Span);
    }
}
