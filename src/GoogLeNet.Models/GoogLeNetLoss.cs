using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Models;

/// <summary>
/// The training objective: cross-entropy of the main logits plus the aux heads' cross-entropies,
/// weighted 1, 0.3, 0.3 by default (the paper's discount). Owns the logit-gradient buffers.
/// </summary>
public sealed class GoogLeNetLoss
{
    private Tensor? _dLogits;
    private Tensor? _dAux1;
    private Tensor? _dAux2;
    private bool _hasAux;

    public float MainWeight { get; init; } = 1f;

    public float Aux1Weight { get; init; } = 0.3f;

    public float Aux2Weight { get; init; } = 0.3f;

    public float LabelSmoothing { get; init; }

    /// <summary>Weighted total loss and its parts (the main one is what accuracy curves compare).</summary>
    public readonly record struct Result(double Total, double Main, double Aux1, double Aux2);

    public Result Compute(GoogLeNetOutput output, ReadOnlySpan<int> labels)
    {
        int batch = output.Logits.Shape[0];
        if (labels.Length != batch)
        {
            throw new ArgumentException($"Expected {batch} labels, got {labels.Length}.");
        }
        double main = Term(output.Logits, labels, MainWeight, ref _dLogits);
        double aux1 = output.Aux1 is null ? 0 : Term(output.Aux1, labels, Aux1Weight, ref _dAux1);
        double aux2 = output.Aux2 is null ? 0 : Term(output.Aux2, labels, Aux2Weight, ref _dAux2);
        double total = MainWeight * main + Aux1Weight * aux1 + Aux2Weight * aux2;
        _hasAux = output.Aux1 is not null;
        return new Result(total, main, aux1, aux2);
    }

    /// <summary>Runs the model's backward pass from the gradients of the last <see cref="Compute"/>.</summary>
    public Tensor? Backward(GoogLeNetModel model) =>
        model.Backward(_dLogits ?? throw new InvalidOperationException("Compute the loss before its backward pass."),
            _hasAux ? _dAux1 : null, _hasAux ? _dAux2 : null);

    private double Term(Tensor logits, ReadOnlySpan<int> labels, float weight, ref Tensor? gradient)
    {
        if (gradient is null || !gradient.HasShape(logits.Shape))
        {
            gradient = new Tensor(logits.Shape);
        }
        return Loss.SoftmaxCrossEntropy(logits.Span, labels, logits.Shape[0], logits.Shape[1], LabelSmoothing, weight, gradient.Span);
    }
}
