namespace GoogLeNet.Engine.Layers;

/// <summary>Layers run one after another; children are named by their position unless named.</summary>
public sealed class Sequential(string name, params Layer[] layers) : Layer(name)
{
    private readonly Layer[] _layers = layers;

    public IReadOnlyList<Layer> Layers => _layers;

    public override IEnumerable<Layer> Children => _layers;

    public override int[] OutputShape(int[] inputShape)
    {
        foreach (Layer layer in _layers)
        {
            inputShape = layer.OutputShape(inputShape);
        }
        return inputShape;
    }

    public override long Macs(int[] inputShape)
    {
        long macs = 0;
        foreach (Layer layer in _layers)
        {
            macs += layer.Macs(inputShape);
            inputShape = layer.OutputShape(inputShape);
        }
        return macs;
    }

    public override Tensor Forward(Tensor input)
    {
        foreach (Layer layer in _layers)
        {
            input = layer.Forward(input);
        }
        return input;
    }

    public override Tensor? Backward(Tensor dOutput)
    {
        Tensor? d = dOutput;
        for (int i = _layers.Length - 1; i >= 0 && d is not null; i--)
        {
            d = _layers[i].Backward(d);
        }
        return d;
    }
}
