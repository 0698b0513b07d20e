namespace GoogLeNet.Engine.Layers;

/// <summary>(C, H, W) to (C*H*W): a view, no copy.</summary>
public sealed class Flatten(string name) : Layer(name)
{
    private int[]? _inputShape;

    public override int[] OutputShape(int[] inputShape) => [checked((int)Tensor.ShapeSize(inputShape))];

    public override Tensor Forward(Tensor input)
    {
        _inputShape = input.Shape;
        return input.Reshape(input.Shape[0], input.Length / Math.Max(input.Shape[0], 1));
    }

    public override Tensor Backward(Tensor dOutput) =>
        dOutput.Reshape(_inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward."));
}
