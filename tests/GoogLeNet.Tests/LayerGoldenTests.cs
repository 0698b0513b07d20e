using System.Text.Json;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>Each layer type against PyTorch 1.13 on fixed inputs: output, input gradient, parameter gradients.</summary>
public class LayerGoldenTests
{
    // Float32 kernels that sum in a different order than PyTorch's: a few ulps of the largest
    // value, times the number of terms in the longest sum (<= 250 here), stays below 1e-5.
    private const double LayerTolerance = 1e-5;

    public static TheoryData<string> Cases => new()
    {
        "conv_3x3_s2_p1", "conv_1x1_nobias", "conv_7x7_s2_p3", "conv_5x5_p2",
        "maxpool_3_2_ceil", "maxpool_3_1_p1_ceil", "maxpool_3_2_p1", "maxpool_2_2_ceil",
        "avgpool_5_3_ceil", "avgpool_3_2_p1_ceil", "avgpool_3_2_p1_ceil_nopad",
        "adaptive_4x4_from_7x7", "adaptive_4x4_from_3x5", "adaptive_1x1",
        "lrn_5", "lrn_4_strong", "batchnorm_train", "batchnorm_eval", "linear", "relu",
        "inception_torchvision_train", "inception_paper", "aux_torchvision_train_6x6",
    };

    private static Layer Create(string name) => name switch
    {
        "conv_3x3_s2_p1" => new Conv2d("conv", 3, 4, 3, 2, 1),
        "conv_1x1_nobias" => new Conv2d("conv", 5, 6, 1, bias: false),
        "conv_7x7_s2_p3" => new Conv2d("conv", 2, 3, 7, 2, 3),
        "conv_5x5_p2" => new Conv2d("conv", 3, 2, 5, 1, 2),
        "maxpool_3_2_ceil" => new MaxPool2d("pool", 3, 2, 0, ceilMode: true),
        "maxpool_3_1_p1_ceil" => new MaxPool2d("pool", 3, 1, 1, ceilMode: true),
        "maxpool_3_2_p1" => new MaxPool2d("pool", 3, 2, 1),
        "maxpool_2_2_ceil" => new MaxPool2d("pool", 2, 2, 0, ceilMode: true),
        "avgpool_5_3_ceil" => new AvgPool2d("pool", 5, 3, 0, ceilMode: true),
        "avgpool_3_2_p1_ceil" => new AvgPool2d("pool", 3, 2, 1, ceilMode: true),
        "avgpool_3_2_p1_ceil_nopad" => new AvgPool2d("pool", 3, 2, 1, ceilMode: true, countIncludePad: false),
        "adaptive_4x4_from_7x7" or "adaptive_4x4_from_3x5" => new AdaptiveAvgPool2d("pool", 4, 4),
        "adaptive_1x1" => new AdaptiveAvgPool2d("pool", 1, 1),
        "lrn_5" => new LocalResponseNorm("lrn", 5, 1e-4f, 0.75f, 1f),
        "lrn_4_strong" => new LocalResponseNorm("lrn", 4, 0.5f, 0.6f, 2f),
        "batchnorm_train" or "batchnorm_eval" => new BatchNorm2d("bn", 4, epsilon: 1e-3f),
        "linear" => new Linear("fc", 7, 5),
        "relu" => new ReLU("relu"),
        "inception_torchvision_train" => new Inception(new InceptionSpec("block", 8, 4, 3, 5, 2, 3, 2), 3, batchNorm: true, ceilPool: true),
        "inception_paper" => new Inception(new InceptionSpec("block", 8, 4, 3, 5, 2, 3, 2), 5, batchNorm: false, ceilPool: true),
        "aux_torchvision_train_6x6" => new InceptionAux("aux", 8, 10, torchvisionStyle: true, 6, 0f, 1),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesPyTorch(string name)
    {
        JsonElement golden = GoldenFill.Layer(name);
        Layer layer = Create(name);
        var parameters = layer.NamedParameters().ToList();
        GoldenFill.FillAll(parameters);
        layer.SetTraining(golden.GetProperty("train").GetBoolean());

        int[] inputShape = GoldenFill.Ints(golden.GetProperty("input"));
        Tensor input = GoldenFill.Tensor(name + ".input", inputShape, 4.0);
        Tensor output = layer.Forward(input);
        Assert.Equal(GoldenFill.Ints(golden.GetProperty("output_shape")), output.Shape);
        Compare.Close(GoldenFill.Floats(golden.GetProperty("output")), output.Span, LayerTolerance, name + " output");

        Tensor dOutput = GoldenFill.Tensor(name + ".dout", output.Shape, 2.0);
        Tensor dInput = layer.Backward(dOutput)!;
        Compare.Close(GoldenFill.Floats(golden.GetProperty("dinput")), dInput.Span, LayerTolerance, name + " input gradient");

        foreach (JsonProperty grad in golden.GetProperty("grads").EnumerateObject())
        {
            Parameter p = parameters.Single(x => x.Path == grad.Name).Parameter;
            Compare.Close(GoldenFill.Floats(grad.Value), p.Grad!.Span, LayerTolerance, $"{name} gradient of {grad.Name}");
        }
        foreach (JsonProperty state in golden.GetProperty("state").EnumerateObject())
        {
            Parameter p = parameters.Single(x => x.Path == state.Name).Parameter;
            Compare.Close(GoldenFill.Floats(state.Value), p.Value.Span, LayerTolerance, $"{name} state {state.Name} after forward");
        }
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.1)]
    public void CrossEntropyMatchesPyTorch(double smoothing)
    {
        JsonElement golden = GoldenFill.Layer($"cross_entropy_{smoothing:0.0}");
        float[] logits = GoldenFill.Fill("ce.logits", 24, 8.0);
        int[] labels = GoldenFill.Ints(golden.GetProperty("labels"));
        var dLogits = new float[24];
        double loss = Loss.SoftmaxCrossEntropy(logits, labels, 4, 6, (float)smoothing, 1f, dLogits);
        Assert.Equal(golden.GetProperty("loss").GetDouble(), loss, 1e-6);
        Compare.Close(GoldenFill.Floats(golden.GetProperty("dinput")), dLogits, LayerTolerance, "cross-entropy gradient");
    }
}
