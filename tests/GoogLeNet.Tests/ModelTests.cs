using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

public class ModelTests
{
    [Theory]
    [InlineData(Preset.Paper, false, 6_998_552L, 1_582_671_872L)]
    [InlineData(Preset.Paper, true, 13_378_280L, -1L)]
    [InlineData(Preset.Torchvision, false, 6_624_904L, 1_498_376_192L)]
    [InlineData(Preset.Torchvision, true, 13_004_888L, -1L)]
    [InlineData(Preset.D2l, false, 5_977_530L, 276_066_304L)]
    public void ParameterAndMacTotalsAreExact(Preset preset, bool aux, long parameters, long macs)
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = aux });
        Assert.Equal(parameters, model.Parameters.TrainableCount);
        Assert.Equal(parameters, model.Summary().Sum(r => r.Parameters));
        if (macs >= 0)
        {
            Assert.Equal(macs, model.Summary().Sum(r => r.Macs));
        }
    }

    [Theory]
    [InlineData(Preset.Paper)]
    [InlineData(Preset.Torchvision)]
    [InlineData(Preset.D2l)]
    public void ParameterNamesFollowTheModulePath(Preset preset)
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = preset != Preset.D2l });
        var names = model.Parameters.All.Select(p => p.Path).ToHashSet();
        Assert.Contains("conv1.conv.weight", names);
        Assert.Contains("inception3a.branch2.1.conv.weight", names);
        Assert.Contains("inception5b.branch4.1.conv.weight", names);
        Assert.Contains("fc.weight", names);
        Assert.Contains("fc.bias", names);
        Assert.Equal(preset != Preset.Torchvision, names.Contains("conv1.conv.bias"));
        Assert.Equal(preset == Preset.Torchvision, names.Contains("conv1.bn.running_var"));
        Assert.Equal(preset != Preset.D2l, names.Contains("aux1.fc2.bias"));
        Assert.Equal(preset != Preset.D2l, names.Contains("aux2.conv.conv.weight"));
        int[] branch3 = model.Parameters["inception3a.branch3.1.conv.weight"].Value.Shape;
        Assert.Equal(preset == Preset.Torchvision ? 3 : 5, branch3[3]);
    }

    [Theory]
    [InlineData(Preset.Torchvision, 224, new[] { 112, 56, 28, 14, 7 })]
    [InlineData(Preset.Paper, 224, new[] { 112, 56, 28, 14, 7 })]
    [InlineData(Preset.D2l, 96, new[] { 48, 24, 12, 6, 3 })]
    public void StageSizes(Preset preset, int size, int[] expected)
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset));
        int[] input = model.InputShape;
        string[] stages = ["conv1", "maxpool1", "maxpool2", "maxpool3", "maxpool4"];
        Assert.Equal(size, input[1]);
        Assert.Equal(expected, stages.Select(s => model.ShapeAfter(s, input)[1]).ToArray());
        Assert.Equal([1024, 1, 1], model.ShapeAfter("avgpool", input));
    }

    [Fact]
    public void AuxHeadsRunOnlyInTraining()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 5, AuxLogits = true, InputHeight = 64, InputWidth = 64 });
        var input = new Tensor(2, 3, 64, 64);
        GoogLeNetOutput inference = model.Forward(input);
        Assert.Null(inference.Aux1);
        Assert.Null(inference.Aux2);
        model.SetTraining(true);
        GoogLeNetOutput training = model.Forward(input);
        Assert.Equal([2, 5], training.Aux1!.Shape);
        Assert.Equal([2, 5], training.Aux2!.Shape);
    }

    [Fact]
    public void InitialisationIsSeededAndDeterministic()
    {
        float[] Weights(ulong seed) => new GoogLeNetModel(GoogLeNetOptions.For(Preset.D2l) with { Seed = seed }).Parameters.Values.ToArray();
        Assert.Equal(Weights(7), Weights(7));
        Assert.NotEqual(Weights(7), Weights(8));
    }

    [Theory]
    [InlineData(Preset.D2l)]
    [InlineData(Preset.Paper)]
    [InlineData(Preset.Torchvision)]
    public void InitialisationFollowsThePreset(Preset preset)
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = preset != Preset.D2l });
        ReadOnlySpan<float> w = model.Parameters["inception4a.branch2.1.conv.weight"].Value.Span; // 208 x 96 x 3 x 3
        double mean = 0, square = 0, max = 0;
        foreach (float v in w)
        {
            mean += v;
            square += v * v;
            max = Math.Max(max, Math.Abs(v));
        }
        mean /= w.Length;
        double std = Math.Sqrt(square / w.Length - mean * mean);
        // Xavier-uniform: bound sqrt(6/(fan_in+fan_out)), std bound/sqrt(3); Caffe xavier: bound sqrt(3/fan_in);
        // torchvision: normal std 0.01. Sample std over 180k values is within 1% of the true one.
        double expectedStd = preset switch
        {
            Preset.D2l => Math.Sqrt(6.0 / (96 * 9 + 208 * 9)) / Math.Sqrt(3),
            Preset.Paper => Math.Sqrt(3.0 / (96 * 9)) / Math.Sqrt(3),
            _ => 0.01,
        };
        Assert.InRange(std, expectedStd * 0.99, expectedStd * 1.01);
        Assert.InRange(Math.Abs(mean), 0, expectedStd * 0.02);
        if (preset == Preset.Paper)
        {
            Assert.All(model.Parameters["conv1.conv.bias"].Value.Span.ToArray(), b => Assert.Equal(0.2f, b));
            Assert.All(model.Parameters["fc.bias"].Value.Span.ToArray(), b => Assert.Equal(0f, b));
        }
        if (preset == Preset.Torchvision)
        {
            Assert.All(model.Parameters["conv1.bn.weight"].Value.Span.ToArray(), b => Assert.Equal(1f, b));
            Assert.All(model.Parameters["conv1.bn.bias"].Value.Span.ToArray(), b => Assert.Equal(0f, b));
        }
    }

    [Fact]
    public void WrongChannelCountIsNamed()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.D2l));
        var e = Assert.Throws<ShapeException>(() => model.Forward(new Tensor(1, 3, 96, 96)));
        Assert.Contains("(N, 1, H, W)", e.Message);
        Assert.Contains("[1, 3, 96, 96]", e.Message);
    }

    [Theory]
    [InlineData(Preset.Torchvision, false)]
    [InlineData(Preset.D2l, false)]
    [InlineData(Preset.Paper, true)]
    public void TooSmallInputNamesTheMinimum(Preset preset, bool aux)
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = aux });
        int min = model.MinimumInputSize;
        Assert.InRange(min, 1, 200);
        var e = Assert.Throws<ShapeException>(() => model.Forward(new Tensor(1, model.InputShape[0], min - 1, min - 1)));
        Assert.Contains($"at least {min}x{min}", e.Message);
        var ok = new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = aux, InputHeight = min, InputWidth = min });
        ok.SetTraining(true);
        Assert.Equal(10 + (preset == Preset.D2l ? 0 : 990), ok.Forward(new Tensor(2, model.InputShape[0], min, min)).Logits.Shape[1]);
        Assert.Throws<ShapeException>(() => new GoogLeNetModel(GoogLeNetOptions.For(preset) with { AuxLogits = aux, InputHeight = min - 1 }));
    }

    [Fact]
    public void NaNInTheInputIsRejected()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.D2l));
        var input = new Tensor(1, 1, 96, 96);
        input.Span[1234] = float.NaN;
        var e = Assert.Throws<ArgumentException>(() => model.Forward(input));
        Assert.Contains("non-finite", e.Message);
        Assert.Contains("1234", e.Message);
    }

    [Fact]
    public void UnknownPresetIsNamed()
    {
        var e = Assert.Throws<ArgumentException>(() => PresetNames.Parse("inception-v3"));
        Assert.Contains("inception-v3", e.Message);
        Assert.Contains("paper, torchvision or d2l", e.Message);
    }

    [Fact]
    public void OverfitsOneSmallBatch()
    {
        // The BatchNorm preset with its own initialisation learns 8 random images with 8 labels.
        var options = GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 8, InputHeight = 48, InputWidth = 48, Dropout = 0f, Seed = 3 };
        var model = new GoogLeNetModel(options);
        model.SetTraining(true);
        Tensor input = GoldenFill.Tensor("overfit", [8, 3, 48, 48], 2.0);
        int[] labels = [0, 1, 2, 3, 4, 5, 6, 7];
        var sgd = new Sgd(model.Parameters, momentum: 0.9f);
        var loss = new GoogLeNetLoss();
        double first = 0, last = 0;
        for (int step = 0; step < 40; step++)
        {
            model.Parameters.ZeroGrad();
            last = loss.Compute(model.Forward(input), labels).Total;
            first = step == 0 ? last : first;
            loss.Backward(model);
            sgd.Step(0.05f);
        }
        Assert.InRange(first, 1.5, 2.6); // about ln 8 = 2.08 at the start
        Assert.True(last < 0.02, $"loss after 40 steps is {last}");
    }
}

/// <summary>
/// Gemm.MaxThreads is process-wide: tests that change it run alone (no other test class in
/// parallel), so a comparison of 1 and 2 threads really compares them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EngineThreadsCollection
{
    public const string Name = "Engine threads";
}

[Collection(EngineThreadsCollection.Name)]
public class ThreadCountTests
{
    [Fact]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        float[] Run(int threads)
        {
            int saved = GoogLeNet.Engine.Kernels.Gemm.MaxThreads;
            GoogLeNet.Engine.Kernels.Gemm.MaxThreads = threads;
            try
            {
                var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 7, AuxLogits = true, InputHeight = 80, InputWidth = 80, Dropout = 0f, AuxDropout = 0f });
                model.SetTraining(true);
                model.ComputeInputGradient = true;
                var loss = new GoogLeNetLoss();
                loss.Compute(model.Forward(GoldenFill.Tensor("threads", [4, 3, 80, 80], 2.0)), [0, 1, 2, 3]);
                Tensor dInput = loss.Backward(model)!;
                return [.. dInput.Span.ToArray(), .. model.Parameters.Grads.ToArray()];
            }
            finally
            {
                GoogLeNet.Engine.Kernels.Gemm.MaxThreads = saved;
            }
        }
        Assert.Equal(Run(1), Run(2));
    }

    // Large enough (100,352 values) that the plane loop splits across two threads.
    [Theory]
    [InlineData("adaptive")]
    [InlineData("global")]
    [InlineData("avgpool")]
    public void AveragePoolsSplitOverPlanesGiveTheSingleThreadResult(string kind)
    {
        Tensor input = GoldenFill.Tensor($"pool-threads-{kind}", [8, 64, 14, 14], 2.0);
        float[] Run(int threads, bool backward)
        {
            int saved = GoogLeNet.Engine.Kernels.Gemm.MaxThreads;
            GoogLeNet.Engine.Kernels.Gemm.MaxThreads = threads;
            try
            {
                Layer pool = kind switch
                {
                    "adaptive" => new AdaptiveAvgPool2d("pool", 4, 4),
                    "global" => new AdaptiveAvgPool2d("pool", 1, 1),
                    _ => new AvgPool2d("pool", 5, 3, ceilMode: true),
                };
                Tensor output = pool.Forward(input);
                if (!backward)
                {
                    return output.Span.ToArray();
                }
                Tensor dOutput = GoldenFill.Tensor($"pool-threads-grad-{kind}", output.Shape, 1.0);
                return pool.Backward(dOutput)!.Span.ToArray();
            }
            finally
            {
                GoogLeNet.Engine.Kernels.Gemm.MaxThreads = saved;
            }
        }

        float[] forward = Run(2, backward: false);
        Assert.Equal(Run(1, backward: false), forward);
        Assert.Equal(Run(1, backward: true), Run(2, backward: true));
        if (kind != "avgpool")
        {
            int side = kind == "global" ? 1 : 4;
            var expected = new float[forward.Length];
            GoogLeNet.Engine.Kernels.Reference.ReferenceLayers.AdaptiveAvgPool(input.Span, 8 * 64, 14, 14, side, side, expected);
            // Float sums of at most 196 values in (-2, 2) against the double reference.
            Compare.Close(expected, forward, 1e-5, kind);
        }
    }
}

/// <summary>
/// Buffers are sized once per input shape, so after the first steps a training step or an
/// inference pass allocates nothing: no per-batch garbage for the GC to chase. Counted on the
/// calling thread, which is where the fork-join and every layer's bookkeeping run.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class SteadyStateAllocationTests
{
    [Theory]
    [InlineData(Preset.D2l, false, 1)]
    [InlineData(Preset.D2l, false, 2)]
    [InlineData(Preset.Torchvision, true, 1)]
    [InlineData(Preset.Torchvision, true, 2)]
    [InlineData(Preset.Paper, true, 2)]
    public void TrainingStepsAndInferenceAllocateNothingAfterWarmUp(Preset preset, bool aux, int threads)
    {
        int saved = GoogLeNet.Engine.Kernels.Gemm.MaxThreads;
        GoogLeNet.Engine.Kernels.Gemm.MaxThreads = threads;
        try
        {
            GoogLeNetOptions defaults = GoogLeNetOptions.For(preset);
            var model = new GoogLeNetModel(defaults with { Classes = 10, AuxLogits = aux, InputHeight = 96, InputWidth = 96 });
            var input = GoldenFill.Tensor("allocation", [4, defaults.InputChannels, 96, 96], 1.0);
            int[] labels = [0, 1, 2, 3];
            var sgd = new Sgd(model.Parameters, momentum: 0.9f, weightDecay: 5e-4f, nesterov: true);
            var loss = new GoogLeNetLoss { LabelSmoothing = 0.1f };
            void TrainStep()
            {
                model.Parameters.ZeroGrad();
                loss.Compute(model.Forward(input), labels);
                loss.Backward(model);
                sgd.Step(0.01f);
            }

            model.SetTraining(true);
            TrainStep();
            TrainStep();
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int step = 0; step < 3; step++)
            {
                TrainStep();
            }
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

            model.SetTraining(false);
            model.Forward(input);
            before = GC.GetAllocatedBytesForCurrentThread();
            model.Forward(input);
            model.Forward(input);
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        finally
        {
            GoogLeNet.Engine.Kernels.Gemm.MaxThreads = saved;
        }
    }
}
