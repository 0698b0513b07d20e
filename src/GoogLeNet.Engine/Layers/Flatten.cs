using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>
/// (C, H, W) to (C*H*W) in PyTorch's order: a view of a batch-major input, a transposing copy of
/// a channel-major one.
/// </summary>
public sealed class Flatten(string name) : Layer(name)
{
    private int[]? _inputShape;
    private Tensor? _output;
    private Tensor? _dInput;
    private Tensor? _outputView;
    private Tensor? _dInputView;

    public override int[] OutputShape(int[] inputShape) => [checked((int)Tensor.ShapeSize(inputShape))];

    public override Tensor Forward(Tensor input)
    {
        _inputShape = input.Shape;
        int batch = input.Shape[0];
        int features = input.Length / Math.Max(batch, 1);
        if (!ChannelMajor || input.Rank != 4 || batch == 1)
        {
            return View(ref _outputView, input, [batch, features]);
        }
        Tensor output = Ensure(ref _output, [batch, features]);
        Layout.ToBatchMajor(input.Span, batch, input.Shape[1], input.Shape[2] * input.Shape[3], output.Span);
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        int[] shape = _inputShape ?? throw new InvalidOperationException($"{Name}: Backward was called before Forward.");
        if (!ChannelMajor || shape.Length != 4 || shape[0] == 1)
        {
            return View(ref _dInputView, dOutput, shape);
        }
        Tensor dInput = Ensure(ref _dInput, shape);
        Layout.ToChannelMajor(dOutput.Span, shape[0], shape[1], shape[2] * shape[3], dInput.Span);
        return dInput;
    }
}
