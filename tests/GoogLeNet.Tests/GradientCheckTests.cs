using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Layers;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>
/// Backward of every layer against central finite differences of L = sum(y * g), Caffe-style in
/// float32: step 1e-2, and |analytic - numeric| <= 1e-2 * max(|analytic|, |numeric|, 1). The loss
/// is summed in double, so its float32 rounding costs about 1e-7 * sum|y g| / 2e-2 < 1e-3 here;
/// the truncation error of a smooth layer is O(h^2) = 1e-4. Inputs keep clear of kinks: ReLU
/// inputs stay away from 0 and max-pool inputs are distinct by more than two steps.
/// </summary>
public class GradientCheckTests
{
    private const float Step = 1e-2f;
    private const double Tolerance = 1e-2;

    private static float[] Distinct(int count, int seed)
    {
        // A shuffled grid with spacing 0.05 > 2 * Step: no ties, no value within a step of 0.
        var rng = new Rng((ulong)seed);
        var values = Enumerable.Range(0, count).Select(i => (i - count / 2 + 0.5f) * 0.05f).ToArray();
        for (int i = count - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (values[i], values[j]) = (values[j], values[i]);
        }
        return values;
    }

    // Composite blocks have ReLUs inside whose inputs are not controlled; a 1e-3 step makes a
    // kink crossing ten times less likely and costs 5e-3 of float32 noise, still inside Tolerance.
    private const float CompositeStep = 1e-3f;

    private static IEnumerable<ReLU> Relus(Layer layer) =>
        layer is ReLU relu ? [relu] : layer.Children.SelectMany(Relus);

    /// <summary>Which units of every ReLU inside the layer are active after the last forward.</summary>
    private static bool[] KinkSignature(Layer layer) =>
        Relus(layer).SelectMany(r => r.LastOutput is null ? [] : r.LastOutput.Span.ToArray().Select(v => v > 0f)).ToArray();

    private static double Objective(Layer layer, Tensor input, float[] g, Action? beforeForward)
    {
        beforeForward?.Invoke();
        Tensor y = layer.Forward(input);
        double sum = 0;
        for (int i = 0; i < g.Length; i++)
        {
            sum += (double)y.Span[i] * g[i];
        }
        return sum;
    }

    private static void Check(Layer layer, int[] inputShape, float[]? inputValues = null, Action? beforeForward = null, float step = Step)
    {
        GoldenFill.FillAll(layer.NamedParameters());
        float[] x = inputValues ?? Distinct((int)Tensor.ShapeSize(inputShape), 11);
        var input = Tensor.FromArray(x, inputShape);
        beforeForward?.Invoke();
        Tensor y = layer.Forward(input);
        float[] g = GoldenFill.Fill("g." + layer.Name, y.Length, 2.0);
        foreach (var (_, p) in layer.NamedParameters().Where(p => p.Parameter.IsTrainable))
        {
            p.Grad!.Span.Clear();
        }
        float[] analytic = layer.Backward(Tensor.FromArray((float[])g.Clone(), y.Shape))!.Span.ToArray();

        var targets = new List<(string Name, float[] Values, float[] Analytic)> { ("input", x, analytic) };
        foreach (var (path, p) in layer.NamedParameters().Where(p => p.Parameter.IsTrainable))
        {
            targets.Add((path, p.Value.Data, p.Grad!.Span.ToArray()));
        }
        bool composite = layer.Children.Any();
        bool[] baseSignature = KinkSignature(layer);
        int checkedCount = 0, skipped = 0;
        foreach (var (name, values, grads) in targets)
        {
            int offset = name == "input" ? 0 : layer.NamedParameters().Single(p => p.Path == name).Parameter.Value.Offset;
            // Large tensors (the aux head's FC) are sampled at 97 evenly spread elements.
            int stride = Math.Max(1, grads.Length / 97);
            for (int i = 0; i < grads.Length; i += stride)
            {
                float saved = values[offset + i];
                values[offset + i] = saved + step;
                double plus = Objective(layer, input, g, beforeForward);
                bool crossed = composite && !KinkSignature(layer).SequenceEqual(baseSignature);
                values[offset + i] = saved - step;
                double minus = Objective(layer, input, g, beforeForward);
                crossed |= composite && !KinkSignature(layer).SequenceEqual(baseSignature);
                values[offset + i] = saved;
                if (crossed)
                {
                    // A ReLU inside the block switched between the two evaluations: the central
                    // difference straddles a kink and says nothing about the derivative.
                    skipped++;
                    continue;
                }
                checkedCount++;
                double numeric = (plus - minus) / (2 * step);
                double scale = Math.Max(Math.Max(Math.Abs(numeric), Math.Abs(grads[i])), 1.0);
                Assert.True(Math.Abs(numeric - grads[i]) <= Tolerance * scale,
                    $"{layer.Name}: d/d{name}[{i}] analytic {grads[i]} vs numeric {numeric}");
            }
        }
        Assert.True(skipped <= checkedCount / 4, $"{layer.Name}: {skipped} of {skipped + checkedCount} checks straddled a kink");
    }

    [Theory]
    [InlineData(3, 4, 3, 2, 1, true)]
    [InlineData(5, 3, 1, 1, 0, false)]
    [InlineData(2, 3, 5, 1, 2, true)]
    [InlineData(2, 2, 7, 2, 3, false)]
    public void Conv2d(int inChannels, int outChannels, int kernel, int stride, int padding, bool bias) =>
        Check(new Conv2d($"conv{kernel}", inChannels, outChannels, kernel, stride, padding, bias), [2, inChannels, 7, 6]);

    [Theory]
    [InlineData(3, 2, 0, true)]
    [InlineData(3, 1, 1, true)]
    [InlineData(3, 2, 1, false)]
    [InlineData(2, 2, 0, true)]
    public void MaxPool2d(int kernel, int stride, int padding, bool ceil) =>
        Check(new MaxPool2d("pool", kernel, stride, padding, ceil), [2, 2, 7, 8]);

    [Theory]
    [InlineData(5, 3, 0, true, true)]
    [InlineData(3, 2, 1, true, true)]
    [InlineData(3, 2, 1, true, false)]
    public void AvgPool2d(int kernel, int stride, int padding, bool ceil, bool countPad) =>
        Check(new AvgPool2d("avg", kernel, stride, padding, ceil, countPad), [1, 2, 9, 8]);

    [Theory]
    [InlineData(4, 4, 7, 6)]
    [InlineData(4, 4, 3, 5)]
    [InlineData(1, 1, 5, 5)]
    public void AdaptiveAvgPool2d(int oh, int ow, int h, int w) =>
        Check(new AdaptiveAvgPool2d("adaptive", oh, ow), [2, 2, h, w]);

    [Fact]
    public void LocalResponseNorm() => Check(new LocalResponseNorm("lrn", 5, 0.5f, 0.75f, 1f), [2, 7, 2, 3]);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BatchNorm2d(bool training)
    {
        var bn = new BatchNorm2d("bn", 3, epsilon: 1e-3f, momentum: 0f);
        bn.SetTraining(training);
        Check(bn, [3, 3, 2, 3]);
    }

    [Fact]
    public void ReLU() => Check(new ReLU("relu"), [2, 3, 4, 5]);

    [Fact]
    public void Linear() => Check(new Linear("fc", 9, 4), [3, 9]);

    [Fact]
    public void Flatten() => Check(new Flatten("flatten"), [2, 3, 2, 2]);

    [Fact]
    public void DropoutWithAFixedMask()
    {
        var dropout = new Dropout("dropout", 0.4f, seed: 5);
        dropout.SetTraining(true);
        ulong state = dropout.Generator.State;
        Check(dropout, [2, 3, 4, 4], beforeForward: () => dropout.Generator.State = state);
    }

    [Fact]
    public void TransformInput() => Check(new TransformInput("transform"), [2, 3, 3, 2]);

    [Theory]
    [InlineData(3, false)]
    [InlineData(5, false)]
    [InlineData(3, true)]
    public void InceptionBlock(int kernel5x5, bool batchNorm)
    {
        var block = new Inception(new InceptionSpec("block", 4, 2, 2, 3, 1, 2, 2), kernel5x5, batchNorm, ceilPool: true);
        block.SetTraining(true);
        Check(block, [2, 4, 4, 3], step: CompositeStep);
    }

    [Fact]
    public void AuxHead()
    {
        var aux = new InceptionAux("aux", 3, 4, torchvisionStyle: false, 8, 0f, 1);
        aux.SetTraining(true);
        Check(aux, [2, 3, 8, 8], step: CompositeStep);
    }

    [Fact]
    public void SoftmaxCrossEntropy()
    {
        float[] logits = GoldenFill.Fill("fd.logits", 12, 6.0);
        int[] labels = [2, 0, 3];
        var analytic = new float[12];
        Loss.SoftmaxCrossEntropy(logits, labels, 3, 4, 0.1f, 1f, analytic);
        for (int i = 0; i < logits.Length; i++)
        {
            float saved = logits[i];
            logits[i] = saved + Step;
            double plus = Loss.SoftmaxCrossEntropy(logits, labels, 3, 4, 0.1f, 1f, default);
            logits[i] = saved - Step;
            double minus = Loss.SoftmaxCrossEntropy(logits, labels, 3, 4, 0.1f, 1f, default);
            logits[i] = saved;
            Assert.Equal((plus - minus) / (2 * Step), analytic[i], 1e-4);
        }
    }
}
