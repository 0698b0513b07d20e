using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>Inverted dropout, active only in training, with its own seeded generator.</summary>
public sealed class Dropout : Layer
{
    private Tensor? _output;
    private Tensor? _mask;
    private Tensor? _dInput;
    private bool _masked;

    public Dropout(string name, float probability, ulong seed = 0)
        : base(name)
    {
        if (!(probability >= 0f && probability < 1f))
        {
            throw new ArgumentOutOfRangeException(nameof(probability), probability, $"{name}: dropout probability must be in [0, 1).");
        }
        Probability = probability;
        Generator = Rng.ForName(seed, name);
    }

    public float Probability { get; }

    /// <summary>The mask generator; its state is part of a training checkpoint.</summary>
    public Rng Generator { get; }

    public override int[] OutputShape(int[] inputShape) => inputShape;

    public override Tensor Forward(Tensor input)
    {
        _masked = IsTraining && Probability > 0f;
        if (!_masked)
        {
            return input;
        }
        Tensor output = Ensure(ref _output, input.Shape);
        Tensor mask = Ensure(ref _mask, input.Shape);
        Elementwise.DropoutForward(input.Span, Probability, Generator, mask.Span, output.Span);
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        if (!_masked)
        {
            return dOutput;
        }
        Tensor dInput = Ensure(ref _dInput, dOutput.Shape);
        Elementwise.DropoutBackward(_mask!.Span, dOutput.Span, dInput.Span);
        return dInput;
    }
}
