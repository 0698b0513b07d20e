using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>Cross-channel local response normalisation: y = x (k + alpha/size * sum x^2)^-beta (PyTorch and Caffe).</summary>
public sealed class LocalResponseNorm(string name, int size, float alpha = 1e-4f, float beta = 0.75f, float k = 1f) : Layer(name)
{
    private Tensor? _input;
    private Tensor? _scale;
    private Tensor? _output;
    private Tensor? _dInput;

    public int Size { get; } = size;

    public float Alpha { get; } = alpha;

    public float Beta { get; } = beta;

    public float K { get; } = k;

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, 0);
        return inputShape;
    }

    public override Tensor Forward(Tensor input)
    {
        OutputShapeFor(input);
        Tensor output = Ensure(ref _output, input.Shape);
        Tensor scale = Ensure(ref _scale, input.Shape);
        (int batch, int pixels) = PerChannelRuns(input);
        Normalization.LrnForward(input.Span, batch, input.Shape[1], pixels,
            Size, Alpha, Beta, K, scale.Span, output.Span);
        _input = input;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor input = RequireForward(_input);
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        (int batch, int pixels) = PerChannelRuns(input);
        Normalization.LrnBackward(input.Span, _output!.Span, _scale!.Span, dOutput.Span,
            batch, input.Shape[1], pixels, Size, Alpha, Beta, dInput.Span);
        return dInput;
    }
}
