using System.Text.Json;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>Whole networks against PyTorch: logits, aux logits, loss, input and parameter gradients.</summary>
public class ModelGoldenTests
{
    // Logits pass through 57 float32 layers whose sums are ordered differently from oneDNN's;
    // measured errors are below 1e-5 of the largest logit, 1e-4 leaves room for other CPUs'
    // vector widths without hiding a wrong layer (which shows up as O(1) errors).
    private const double ModelTolerance = 1e-4;

    // Gradients flow back through the same depth again, and conv1's weight gradient at 224 sums
    // 12544 products per element through ReLU masks that rounding can flip: PyTorch's own float32
    // run is 2e-4 (scaled) from the float64 golden there (make_golden.py). Ours measured 1.9e-4
    // with BatchNorm folded into the weights and 2.7e-4 with it applied in the GEMM's epilogue
    // (same logits to 2e-7); 5e-4, 2.5x PyTorch's own spread, still fails a wrong layer by far.
    private const double GradientTolerance = 5e-4;

    // In training, BatchNorm normalises late 3x3 maps with batch statistics of 27 values, and a
    // max-pool whose two largest inputs differ by less than float32 rounding routes its gradient
    // to the other input: the gradients become sensitive to rounding. PyTorch's own float32 run of
    // this network, fed batch 8 at 96x96 or batch 4 at 128x128, leaves its float64 run by 1.1e-3
    // and 1.8e-3 on conv1's gradient; ours measures 1.6e-3 on this case, hence 3e-3.
    private const double TrainingGradientTolerance = 3e-3;

    private static GoogLeNetModel Build(string key, int[] input)
    {
        Preset preset = key.StartsWith("torchvision", StringComparison.Ordinal) ? Preset.Torchvision
            : key.StartsWith("paper", StringComparison.Ordinal) ? Preset.Paper : Preset.D2l;
        var options = GoogLeNetOptions.For(preset) with
        {
            Classes = 10, InputChannels = input[1], InputHeight = input[2], InputWidth = input[3],
            AuxLogits = key.Contains("aux"), Dropout = 0f, AuxDropout = 0f,
        };
        var model = new GoogLeNetModel(options);
        GoldenFill.FillAll(model.Parameters.All);
        return model;
    }

    [Theory]
    [InlineData("torchvision_eval_112")]
    [InlineData("torchvision_eval_224")]
    [InlineData("torchvision_train_aux_96")]
    [InlineData("d2l_96")]
    [InlineData("paper_eval_112")]
    public void MatchesPyTorch(string key)
    {
        JsonElement golden = GoldenFill.Model(key);
        int[] inputShape = GoldenFill.Ints(golden.GetProperty("input"));
        GoogLeNetModel model = Build(key, inputShape);
        model.SetTraining(golden.GetProperty("train").GetBoolean());
        model.ComputeInputGradient = true;
        Tensor input = GoldenFill.Tensor(key + ".input", inputShape, 2.0);
        int[] labels = GoldenFill.Ints(golden.GetProperty("labels"));

        GoogLeNetOutput output = model.Forward(input);
        var loss = new GoogLeNetLoss();
        GoogLeNetLoss.Result result = loss.Compute(output, labels);
        Tensor dInput = loss.Backward(model)!;

        Compare.Close(GoldenFill.ModelArray(key, "logits"), output.Logits.Span, ModelTolerance, key + " logits");
        if (golden.TryGetProperty("aux1", out _))
        {
            Compare.Close(GoldenFill.ModelArray(key, "aux1"), output.Aux1!.Span, ModelTolerance, key + " aux1");
            Compare.Close(GoldenFill.ModelArray(key, "aux2"), output.Aux2!.Span, ModelTolerance, key + " aux2");
            Compare.Close(GoldenFill.ModelArray(key, "conv1.bn.running_mean"),
                model.Parameters["conv1.bn.running_mean"].Value.Span, ModelTolerance, key + " running mean");
        }
        else
        {
            Assert.Null(output.Aux1);
        }
        Assert.Equal(golden.GetProperty("loss").GetDouble(), result.Total, 1e-4);
        double gradientTolerance = golden.GetProperty("train").GetBoolean() ? TrainingGradientTolerance : GradientTolerance;
        Compare.Close(GoldenFill.ModelArray(key, "dinput"), dInput.Span, gradientTolerance, key + " input gradient");
        foreach (JsonProperty grad in golden.GetProperty("grads").EnumerateObject())
        {
            Compare.Close(GoldenFill.ModelArray(key, "grad." + grad.Name), model.Parameters[grad.Name].Grad!.Span,
                gradientTolerance, $"{key} gradient of {grad.Name}");
        }
    }

    // Tolerances start from 6x PyTorch's own float32-vs-float64 spread on the same run (printed by
    // make_golden.py): 2e-6 for paper, 1.5e-4 for d2l, whose first steps are steeper. With the 3x3
    // convolutions as Winograd F(2x2, 3x3) in both the forward pass and the input gradient (each
    // output a few roundings further from the exact sum), the paper run stays within 6.2e-7 of
    // PyTorch for four steps, then drifts by 3-7x a step to 4.2e-4 at step 9. Either Winograd pass
    // alone stays within 6.1e-7 for all ten steps, the kernels match the double-precision
    // reference to 2.6e-7 (WinogradTests), and fresh scratch memory on every call changes
    // nothing, so the drift is the run's sensitivity to where its rounding lands, not a wrong
    // sum. The first four steps keep the tight bound, the later ones 1e-3: an input gradient with
    // unrotated kernels (tried) leaves the paper run by 2.6e-4 at step 1 and the d2l run by 2.6e-3
    // at step 2. The direct kernels keep 1e-5 throughout (DirectKernelTrajectoryTests).
    private const int TightSteps = 4;

    [Theory]
    [InlineData("trajectory_paper", Preset.Paper, 1e-5, 1e-3)]
    [InlineData("trajectory_d2l", Preset.D2l, 1e-3, 1e-3)]
    public void TenSgdStepsFollowPyTorchsLossTrajectory(string key, Preset preset, double tightTolerance, double laterTolerance) =>
        FollowTrajectory(key, preset, tightTolerance, laterTolerance);

    internal static void FollowTrajectory(string key, Preset preset, double tightTolerance, double laterTolerance)
    {
        JsonElement golden = GoldenFill.Model(key);
        int[] inputShape = GoldenFill.Ints(golden.GetProperty("input"));
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with
        {
            Classes = 10, InputChannels = inputShape[1], InputHeight = inputShape[2], InputWidth = inputShape[3], Dropout = 0f,
        });
        GoldenFill.FillAll(model.Parameters.All);
        model.SetTraining(true);
        var sgd = new Sgd(model.Parameters, momentum: (float)golden.GetProperty("momentum").GetDouble());
        var loss = new GoogLeNetLoss();
        Tensor input = GoldenFill.Tensor(key + ".input", inputShape, 2.0);
        int[] labels = GoldenFill.Ints(golden.GetProperty("labels"));
        double[] expected = golden.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        float learningRate = (float)golden.GetProperty("lr").GetDouble();
        for (int step = 0; step < expected.Length; step++)
        {
            model.Parameters.ZeroGrad();
            double value = loss.Compute(model.Forward(input), labels).Total;
            loss.Backward(model);
            sgd.Step(learningRate);
            double relativeTolerance = step < TightSteps ? tightTolerance : laterTolerance;
            Assert.True(Math.Abs(value - expected[step]) <= relativeTolerance * expected[step],
                $"step {step}: loss {value} vs PyTorch {expected[step]}");
        }
    }

    [Fact]
    public void ParameterNamesAndShapesAreTorchvisions()
    {
        var expected = GoldenFill.Model("torchvision_state_dict").EnumerateArray()
            .Select(e => (e[0].GetString()!, GoldenFill.Ints(e[1]))).ToList();
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { AuxLogits = true });
        var actual = model.Parameters.All.Select(p => (p.Path, p.Parameter.Value.Shape)).ToList();
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Item1, actual[i].Path);
            Assert.Equal(expected[i].Item2, actual[i].Shape);
        }
    }
}

/// <summary>
/// The direct (im2col GEMM) 3x3 convolutions, which the Winograd kernel replaces by default, kept
/// to PyTorch's trajectory at the original bound. Winograd.Enabled is process-wide, hence the
/// collection that runs alone.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class DirectKernelTrajectoryTests
{
    [Fact]
    public void PaperTrajectoryWithDirectConvolutionsStaysWithinSixTimesPyTorchsOwnSpread()
    {
        bool saved = GoogLeNet.Engine.Kernels.Winograd.Enabled;
        GoogLeNet.Engine.Kernels.Winograd.Enabled = false;
        try
        {
            ModelGoldenTests.FollowTrajectory("trajectory_paper", Preset.Paper, 1e-5, 1e-5);
        }
        finally
        {
            GoogLeNet.Engine.Kernels.Winograd.Enabled = saved;
        }
    }
}
