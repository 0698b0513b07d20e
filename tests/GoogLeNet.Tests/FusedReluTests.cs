using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>
/// Training without BatchNorm runs a block's ReLU in its convolution's epilogue. The fused block
/// must compute what Conv2d then ReLU compute, bit for bit: the epilogue takes max(sum + bias, 0)
/// of the same sums, and the backward reads the same mask.
/// </summary>
public class FusedReluTests
{
    [Theory]
    [InlineData(false, 3)]
    [InlineData(true, 3)]
    [InlineData(false, 1)]
    [InlineData(true, 5)]
    public void ConvBlockEqualsConvolutionThenReluExactly(bool channelMajor, int kernel)
    {
        var block = new ConvBlock("block", 3, 5, kernel, 1, kernel / 2, batchNorm: false);
        var conv = new Conv2d("conv", 3, 5, kernel, 1, kernel / 2, bias: true);
        var relu = new ReLU("relu");
        foreach (Layer layer in new Layer[] { block, conv, relu })
        {
            layer.SetTraining(true);
            layer.SetChannelMajor(channelMajor);
        }
        GoldenFill.Fill("fused.w", conv.Weight.Value.Length, 0.5).CopyTo(conv.Weight.Value.Span);
        GoldenFill.Fill("fused.b", conv.Bias!.Value.Length, 0.5).CopyTo(conv.Bias.Value.Span);
        conv.Weight.Value.Span.CopyTo(block.Conv.Weight.Value.Span);
        conv.Bias.Value.Span.CopyTo(block.Conv.Bias!.Value.Span);
        Tensor input = GoldenFill.Tensor("fused.x", [2, 3, 9, 8], 1.0);

        float[] expected = relu.Forward(conv.Forward(input)).Span.ToArray();
        var destination = new Tensor([2, 5, 9, 8]);
        Tensor fused = block.ForwardInto(input, destination);
        Assert.Same(destination, fused);
        Assert.Equal(expected, destination.Span.ToArray());
        Assert.Contains(expected, v => v == 0f); // the mask has both sides
        Assert.Contains(expected, v => v > 0f);

        Tensor dOutput = GoldenFill.Tensor("fused.dy", [2, 5, 9, 8], 1.0);
        float[] dInputExpected = conv.Backward(relu.Backward(dOutput))!.Span.ToArray();
        float[] dInput = block.Backward(dOutput)!.Span.ToArray();
        Assert.Equal(dInputExpected, dInput);
        Assert.Equal(conv.Weight.Grad!.Span.ToArray(), block.Conv.Weight.Grad!.Span.ToArray());
        Assert.Equal(conv.Bias.Grad!.Span.ToArray(), block.Conv.Bias.Grad!.Span.ToArray());
    }

    [Fact]
    public void AWrongDestinationIsRefusedWithBothShapes()
    {
        var conv = new Conv2d("conv", 3, 5, 3, 1, 1, bias: true);
        conv.SetTraining(true);
        Tensor input = GoldenFill.Tensor("fused.bad.x", [2, 3, 9, 8], 1.0);
        var wrong = new Tensor([2, 4, 9, 8]);
        var error = Assert.Throws<ShapeException>(() => conv.ForwardWithRelu(input, wrong));
        Assert.Contains("does not match the output", error.Message);
        Assert.Contains(Tensor.Format([2, 5, 9, 8]), error.Message);
        Assert.Throws<ShapeException>(() => conv.ForwardFolded(input, null, wrong));
        Assert.Equal(new float[wrong.Length], wrong.Span.ToArray()); // nothing written
    }

    [Fact]
    public void AnAdoptedOutputGivesTheMaskUntilTheNextForward()
    {
        var relu = new ReLU("relu");
        relu.SetTraining(true);
        var adopted = Tensor.FromArray([0f, 2f, 0f, 3f], [1, 1, 2, 2]);
        relu.AdoptOutput(adopted);
        var dOutput = Tensor.FromArray([10f, 20f, 30f, 40f], [1, 1, 2, 2]);
        Assert.Equal([0f, 20f, 0f, 40f], relu.Backward(dOutput).Span.ToArray());

        // A forward of its own replaces the adopted tensor, which it leaves untouched.
        relu.Forward(Tensor.FromArray([1f, -1f, 1f, -1f], [1, 1, 2, 2]));
        Assert.Equal([10f, 0f, 30f, 0f], relu.Backward(dOutput).Span.ToArray());
        Assert.Equal([0f, 2f, 0f, 3f], adopted.Span.ToArray());
    }
}
