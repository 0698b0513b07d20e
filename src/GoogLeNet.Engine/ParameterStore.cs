namespace GoogLeNet.Engine;

/// <summary>
/// All trainable parameters of a network moved into one value block and one gradient block
/// (buffers such as running statistics stay where they are), so zeroing the gradients is one
/// clear and the optimizer is one loop.
/// </summary>
public sealed class ParameterStore
{
    private readonly (int Offset, int Length)[] _decayRanges;
    private readonly float[] _values;
    private readonly float[] _grads;

    public ParameterStore(IEnumerable<(string Path, Parameter Parameter)> parameters)
    {
        All = parameters.ToArray();
        var trainable = All.Where(p => p.Parameter.IsTrainable).ToArray();
        long total = trainable.Sum(p => (long)p.Parameter.Value.Length);
        _values = new float[checked((int)total)];
        _grads = new float[_values.Length];
        var decay = new List<(int, int)>();
        int offset = 0;
        foreach (var (_, p) in trainable)
        {
            p.Value.Rebind(_values, offset);
            p.Grad!.Rebind(_grads, offset);
            if (!p.NoDecay)
            {
                decay.Add((offset, p.Value.Length));
            }
            offset += p.Value.Length;
        }
        _decayRanges = [.. decay];
        Trainable = trainable;
    }

    /// <summary>Every parameter and buffer by path, in definition order (the state_dict order).</summary>
    public IReadOnlyList<(string Path, Parameter Parameter)> All { get; }

    public IReadOnlyList<(string Path, Parameter Parameter)> Trainable { get; }

    public Span<float> Values => _values;

    public Span<float> Grads => _grads;

    /// <summary>Ranges of the block that weight decay applies to (weights, not biases or BN scales).</summary>
    public ReadOnlySpan<(int Offset, int Length)> DecayRanges => _decayRanges;

    public long TrainableCount => _values.Length;

    public void ZeroGrad() => Array.Clear(_grads);

    public Parameter this[string path] =>
        All.FirstOrDefault(p => p.Path == path).Parameter ?? throw new KeyNotFoundException($"No parameter named '{path}'.");
}
