using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>y = x W^T + b with W (out, in), as PyTorch stores it.</summary>
public sealed class Linear : Layer
{
    private readonly Parameter _weight;
    private readonly Parameter _bias;
    private Tensor? _input;
    private Tensor? _output;
    private Tensor? _dInput;

    public Linear(string name, int inFeatures, int outFeatures)
        : base(name)
    {
        if (inFeatures <= 0 || outFeatures <= 0)
        {
            throw new ArgumentException($"{name}: invalid linear layer {inFeatures}->{outFeatures}.");
        }
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        _weight = new Parameter("weight", [outFeatures, inFeatures]);
        _bias = new Parameter("bias", [outFeatures]) { NoDecay = true };
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public Parameter Weight => _weight;

    public Parameter Bias => _bias;

    public override IEnumerable<Parameter> OwnParameters => [_weight, _bias];

    public override int[] OutputShape(int[] inputShape)
    {
        if (inputShape.Length != 1 || inputShape[0] != InFeatures)
        {
            throw new ShapeException($"{Name}: expected {InFeatures} features, got {Tensor.Format(inputShape)}.");
        }
        return [OutFeatures];
    }

    public override long Macs(int[] inputShape) => (long)InFeatures * OutFeatures;

    public override Tensor Forward(Tensor input)
    {
        OutputShapeFor(input);
        int batch = input.Shape[0];
        Tensor output = Ensure(ref _output, [batch, OutFeatures]);
        Gemm.Multiply(false, true, batch, OutFeatures, InFeatures, input.Span, InFeatures, _weight.Value.Span, InFeatures,
            output.Span, OutFeatures, accumulate: false);
        ReadOnlySpan<float> bias = _bias.Value.Span;
        for (int n = 0; n < batch; n++)
        {
            System.Numerics.Tensors.TensorPrimitives.Add(output.Span.Slice(n * OutFeatures, OutFeatures), bias,
                output.Span.Slice(n * OutFeatures, OutFeatures));
        }
        _input = input;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor input = RequireForward(_input);
        int batch = input.Shape[0];
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        // dW (out, in) += dY^T (out, n) X (n, in)
        Gemm.Multiply(true, false, OutFeatures, InFeatures, batch, dOutput.Span, OutFeatures, input.Span, InFeatures,
            _weight.Grad!.Span, InFeatures, accumulate: true);
        Span<float> dBias = _bias.Grad!.Span;
        for (int n = 0; n < batch; n++)
        {
            System.Numerics.Tensors.TensorPrimitives.Add(dBias, dOutput.Span.Slice(n * OutFeatures, OutFeatures), dBias);
        }
        // dX (n, in) = dY (n, out) W (out, in)
        Gemm.Multiply(false, false, batch, InFeatures, OutFeatures, dOutput.Span, OutFeatures, _weight.Value.Span, InFeatures,
            dInput.Span, InFeatures, accumulate: false);
        return dInput;
    }
}
