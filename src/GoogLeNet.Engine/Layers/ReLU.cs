using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

public sealed class ReLU(string name) : Layer(name)
{
    private Tensor? _output;
    private Tensor? _adopted;
    private Tensor? _dInput;

    /// <summary>The last forward output; gradient checks read it to skip steps that cross the kink.</summary>
    internal Tensor? LastOutput => _adopted ?? _output;

    /// <summary>
    /// Takes <paramref name="output"/> as this layer's forward result, for a caller that applied
    /// the ReLU itself (in a convolution's epilogue): Backward then reads its mask from it. The
    /// tensor must keep its values until Backward; the next Forward forgets it.
    /// </summary>
    public void AdoptOutput(Tensor output) => _adopted = output;

    public override int[] OutputShape(int[] inputShape) => inputShape;

    public override Tensor Forward(Tensor input)
    {
        _adopted = null;
        Tensor output = Ensure(ref _output, input.Shape);
        Parallelism.For(input.Length, 1, (input, output), static (s, start, count) =>
            Elementwise.ReluForward(s.input.Span.Slice(start, count), s.output.Span.Slice(start, count)));
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor output = RequireForward(_adopted ?? _output);
        Tensor dInput = Ensure(ref _dInput, output.Shape);
        BackwardInto(dOutput, dInput.Data.AsMemory(dInput.Offset, dInput.Length));
        return dInput;
    }

    /// <summary>Backward into a caller's buffer (a slice of a larger gradient) instead of this layer's own.</summary>
    public void BackwardInto(Tensor dOutput, Memory<float> dInput)
    {
        Tensor output = RequireForward(_adopted ?? _output);
        if (dInput.Length != output.Length)
        {
            throw new ArgumentException($"{Name}: the input gradient needs {output.Length} values, got {dInput.Length}.");
        }
        Parallelism.For(output.Length, 1, (output, dOutput, dInput), static (s, start, count) =>
            Elementwise.ReluBackward(s.output.Span.Slice(start, count), s.dOutput.Span.Slice(start, count), s.dInput.Span.Slice(start, count)));
    }
}
