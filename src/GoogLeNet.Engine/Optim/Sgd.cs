using System.Numerics.Tensors;

namespace GoogLeNet.Engine.Optim;

/// <summary>
/// SGD with momentum, Nesterov and decoupled-from-nothing (L2) weight decay, PyTorch's update rule:
/// g += wd * w; v = momentum * v + g; w -= lr * (nesterov ? g + momentum * v : v).
/// One flat loop over the parameter block.
/// </summary>
public sealed class Sgd
{
    private readonly ParameterStore _store;
    private readonly float[] _velocity;

    public Sgd(ParameterStore store, float momentum = 0f, float weightDecay = 0f, bool nesterov = false)
    {
        if (nesterov && momentum <= 0f)
        {
            throw new ArgumentException("Nesterov momentum needs a momentum above zero.");
        }
        _store = store;
        Momentum = momentum;
        WeightDecay = weightDecay;
        Nesterov = nesterov;
        _velocity = new float[store.Values.Length];
    }

    public float Momentum { get; }

    public float WeightDecay { get; }

    public bool Nesterov { get; }

    /// <summary>The momentum buffer, one value per trainable parameter value; saved in checkpoints.</summary>
    public float[] Velocity => _velocity;

    public void Step(float learningRate)
    {
        Span<float> w = _store.Values;
        Span<float> g = _store.Grads;
        Span<float> v = _velocity;
        if (WeightDecay != 0f)
        {
            foreach (var (offset, length) in _store.DecayRanges)
            {
                TensorPrimitives.MultiplyAdd(w.Slice(offset, length), WeightDecay, g.Slice(offset, length), g.Slice(offset, length));
            }
        }
        if (Momentum == 0f)
        {
            TensorPrimitives.MultiplyAdd(g, -learningRate, w, w);
            return;
        }
        TensorPrimitives.MultiplyAdd(v, Momentum, g, v);
        if (Nesterov)
        {
            // g + momentum * v, kept in g (the gradient is cleared before the next step anyway).
            TensorPrimitives.MultiplyAdd(v, Momentum, g, g);
            TensorPrimitives.MultiplyAdd(g, -learningRate, w, w);
        }
        else
        {
            TensorPrimitives.MultiplyAdd(v, -learningRate, w, w);
        }
    }
}
