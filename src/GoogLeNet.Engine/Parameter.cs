namespace GoogLeNet.Engine;

/// <summary>
/// A named tensor of a layer: trainable (with a gradient) or a buffer such as BatchNorm's running
/// statistics, which is saved with the weights but never updated by the optimizer.
/// </summary>
public sealed class Parameter
{
    public Parameter(string name, int[] shape, bool trainable = true)
    {
        Name = name;
        Value = new Tensor(shape);
        Grad = trainable ? new Tensor(shape) : null;
    }

    /// <summary>The name inside its layer (<c>weight</c>, <c>running_mean</c>); models prefix the path.</summary>
    public string Name { get; }

    public Tensor Value { get; }

    public Tensor? Grad { get; }

    public bool IsTrainable => Grad is not null;

    /// <summary>Excluded from weight decay (biases and normalisation scales, as is customary).</summary>
    public bool NoDecay { get; init; }
}
