using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

public sealed class ReLU(string name) : Layer(name)
{
    private Tensor? _output;
    private Tensor? _dInput;

    /// <summary>The last forward output; gradient checks read it to skip steps that cross the kink.</summary>
    internal Tensor? LastOutput => _output;

    public override int[] OutputShape(int[] inputShape) => inputShape;

    public override Tensor Forward(Tensor input)
    {
        Tensor output = Ensure(ref _output, input.Shape);
        Elementwise.ReluForward(input.Span, output.Span);
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor output = RequireForward(_output);
        Tensor dInput = Ensure(ref _dInput, output.Shape);
        Elementwise.ReluBackward(output.Span, dOutput.Span, dInput.Span);
        return dInput;
    }
}
