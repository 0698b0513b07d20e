using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using GoogLeNet.Engine.Layers;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>
/// Pooling, LRN and BatchNorm layers against the reference definitions over swept odd sizes,
/// paddings and ceil-mode edges. Pooling moves values or sums at most 25 of them in float32:
/// 1e-6 of the largest value covers that; LRN and BatchNorm differ by float32 rounding of a few
/// operations: 1e-5.
/// </summary>
public class ReferenceLayerTests
{
    private const double PoolingTolerance = 1e-6;
    private const double NormalizationTolerance = 1e-5;

    public static TheoryData<int, int, int, bool, int, int> PoolShapes()
    {
        var data = new TheoryData<int, int, int, bool, int, int>();
        foreach (var (k, s, p) in new[] { (3, 2, 0), (3, 1, 1), (5, 1, 2), (3, 2, 1), (2, 2, 0), (5, 3, 0), (5, 3, 2), (3, 3, 1) })
        {
            foreach (bool ceil in new[] { false, true })
            {
                // Centred stride-1 windows (3/1/1, 5/1/2) pool each plane as one flat run whatever its
                // width. Other stride-1 and stride-2 rows are pooled 8 or 16 outputs at a time with a
                // partial last group (widths 4 to 56); stride 3 takes the separable path.
                foreach (var (h, w) in new[] { (5, 5), (7, 6), (6, 6), (7, 7), (12, 12), (14, 14), (9, 11), (3, 4), (4, 17), (5, 9), (5, 37), (4, 56) })
                {
                    if (WindowMath.OutputSize(h, k, s, p, ceil) > 0 && WindowMath.OutputSize(w, k, s, p, ceil) > 0)
                    {
                        data.Add(k, s, p, ceil, h, w);
                    }
                }
            }
        }
        return data;
    }

    // The windowed max pools run 16 outputs a step with AVX-512 and 8 with AVX2: both are tested
    // wherever the CPU has AVX-512 (elsewhere the two runs take the AVX2 path).
    private static void BothVectorWidths(Action run)
    {
        foreach (bool wide in new[] { true, false })
        {
            EngineSetting.With(() => Pooling.WideVectors, value => Pooling.WideVectors = value, wide, () => { run(); return 0; });
        }
    }

    [Theory]
    [MemberData(nameof(PoolShapes))]
    public void MaxAndAveragePoolingMatchTheirDefinitions(int kernel, int stride, int padding, bool ceil, int h, int w) =>
        BothVectorWidths(() => MaxAndAveragePoolingMatchTheirDefinitionsOnce(kernel, stride, padding, ceil, h, w));

    private static void MaxAndAveragePoolingMatchTheirDefinitionsOnce(int kernel, int stride, int padding, bool ceil, int h, int w)
    {
        var input = GoldenFill.Tensor($"pool{kernel}{stride}{padding}{h}{w}", [2, 3, h, w], 4.0);
        int oh = WindowMath.OutputSize(h, kernel, stride, padding, ceil);
        int ow = WindowMath.OutputSize(w, kernel, stride, padding, ceil);
        var expected = new float[2 * 3 * oh * ow];

        Tensor max = new MaxPool2d("max", kernel, stride, padding, ceil).Forward(input);
        Assert.Equal([2, 3, oh, ow], max.Shape);
        ReferenceLayers.MaxPool(input.Span, 6, h, w, kernel, stride, padding, oh, ow, expected);
        Compare.Close(expected, max.Span, PoolingTolerance, "max pool");

        foreach (bool countPad in new[] { true, false })
        {
            Tensor avg = new AvgPool2d("avg", kernel, stride, padding, ceil, countPad).Forward(input);
            ReferenceLayers.AvgPool(input.Span, 6, h, w, kernel, stride, padding, countPad, oh, ow, expected);
            Compare.Close(expected, avg.Span, PoolingTolerance, $"average pool, count_include_pad {countPad}");
        }
    }

    // Training pools record the first maximum in forward; inference searches for it in backward.
    // Values rounded to halves make ties common, so "first" is tested, and one NaN per plane
    // (in some shapes) tests that it wins its windows. Both must agree exactly.
    [Theory]
    [MemberData(nameof(PoolShapes))]
    public void IndexedMaxPoolingMatchesTheSearchingBackward(int kernel, int stride, int padding, bool ceil, int h, int w) =>
        BothVectorWidths(() => IndexedMaxPoolingMatchesTheSearchingBackwardOnce(kernel, stride, padding, ceil, h, w));

    private static void IndexedMaxPoolingMatchesTheSearchingBackwardOnce(int kernel, int stride, int padding, bool ceil, int h, int w)
    {
        const int planes = 3;
        float[] x = GoldenFill.Fill($"ties{kernel}{stride}{padding}{h}{w}", planes * h * w, 6.0).Select(v => MathF.Round(v * 2f) / 2f).ToArray();
        if (w > 6)
        {
            x[h * w + (h / 2) * w + 3] = float.NaN;
        }
        // A plane of -infinity: padding must not win, the first real cell of each window does.
        x.AsSpan(2 * h * w, h * w).Fill(float.NegativeInfinity);
        int oh = WindowMath.OutputSize(h, kernel, stride, padding, ceil);
        int ow = WindowMath.OutputSize(w, kernel, stride, padding, ceil);
        var searched = new float[planes * oh * ow];
        var indexed = new float[searched.Length];
        var argmax = new int[searched.Length];
        Pooling.MaxForward(x, planes, h, w, kernel, stride, padding, oh, ow, searched);
        Pooling.MaxForwardIndexed(x, planes, h, w, kernel, stride, padding, oh, ow, indexed, argmax);
        Assert.Equal(searched, indexed);
        var expected = new float[searched.Length];
        ReferenceLayers.MaxPool(x, planes, h, w, kernel, stride, padding, oh, ow, expected);
        Assert.Equal(expected, searched);

        float[] dy = GoldenFill.Fill("ties.dy", searched.Length, 2.0);
        var dxSearched = new float[x.Length];
        var dxIndexed = new float[x.Length];
        dxIndexed.AsSpan().Fill(float.NaN); // overwritten
        Pooling.MaxBackward(x, searched, dy, planes, h, w, kernel, stride, padding, oh, ow, dxSearched);
        Pooling.MaxBackwardIndexed(argmax, dy, planes, h * w, oh * ow, dxIndexed);
        Assert.Equal(dxSearched, dxIndexed);
    }

    [Theory]
    [InlineData(1, 0, 7)]
    [InlineData(2, 1, 7)]
    [InlineData(2, 0, 40)]
    public void MaxPoolingPropagatesNaNLikePyTorch(int stride, int padding, int width) =>
        BothVectorWidths(() => MaxPoolingPropagatesNaNLikePyTorchOnce(stride, padding, width));

    private static void MaxPoolingPropagatesNaNLikePyTorchOnce(int stride, int padding, int width)
    {
        var input = GoldenFill.Tensor("nan", [1, 1, 6, width], 4.0);
        input.Span[2 * width + 3] = float.NaN;
        var pool = new MaxPool2d("max", 3, stride, padding, ceilMode: true);
        Tensor output = pool.Forward(input);
        var expected = new float[output.Length];
        ReferenceLayers.MaxPool(input.Span, 1, 6, width, 3, stride, padding, output.Shape[2], output.Shape[3], expected);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(float.IsNaN(expected[i]), float.IsNaN(output.Span[i]));
        }
        Assert.Contains(float.NaN, output.Span.ToArray());
        // The gradient of a NaN output goes to the NaN input, the first "maximum" of its window.
        Tensor dInput = pool.Backward(GoldenFill.Tensor("nan.g", output.Shape, 2.0));
        Assert.NotEqual(0f, dInput.Span[2 * width + 3]);
    }

    [Theory]
    [InlineData(7, 7, 4, 4)]
    [InlineData(6, 6, 4, 4)]
    [InlineData(14, 13, 4, 4)]
    [InlineData(3, 5, 4, 4)]
    [InlineData(9, 7, 1, 1)]
    [InlineData(5, 5, 2, 3)]
    public void AdaptiveAveragePoolingMatchesItsDefinition(int h, int w, int oh, int ow)
    {
        var input = GoldenFill.Tensor($"adaptive{h}{w}", [2, 3, h, w], 4.0);
        var expected = new float[2 * 3 * oh * ow];
        ReferenceLayers.AdaptiveAvgPool(input.Span, 6, h, w, oh, ow, expected);
        Compare.Close(expected, new AdaptiveAvgPool2d("adaptive", oh, ow).Forward(input).Span, PoolingTolerance, "adaptive pool");
    }

    [Theory]
    [InlineData(5, 7, 1e-4, 0.75, 1.0)]
    [InlineData(5, 3, 0.5, 0.75, 1.0)]
    [InlineData(4, 6, 0.5, 0.6, 2.0)]
    [InlineData(1, 4, 0.1, 0.5, 1.0)]
    public void LocalResponseNormMatchesItsDefinition(int size, int channels, double alpha, double beta, double k)
    {
        var input = GoldenFill.Tensor($"lrn{size}{channels}", [2, channels, 3, 5], 4.0);
        var expected = new float[input.Length];
        ReferenceLayers.Lrn(input.Span, 2, channels, 15, size, alpha, beta, k, expected);
        Tensor actual = new LocalResponseNorm("lrn", size, (float)alpha, (float)beta, (float)k).Forward(input);
        Compare.Close(expected, actual.Span, NormalizationTolerance, "LRN");
    }

    // Runs of 1517 and 2279 values cover the vector sums' 1024-value blocks and their tails; an
    // offset mean (+3) checks that the centred sums do not cancel.
    [Theory]
    [InlineData(1, 3, 2, 3, 0.0)]
    [InlineData(4, 5, 7, 7, 0.0)]
    [InlineData(3, 2, 1, 1, 0.0)]
    [InlineData(2, 3, 37, 41, 3.0)]
    [InlineData(1, 2, 43, 53, 0.0)]
    public void BatchNormMatchesItsDefinition(int batch, int channels, int h, int w, double offset)
    {
        var bn = new BatchNorm2d("bn", channels, epsilon: 1e-3f);
        GoldenFill.FillAll(bn.NamedParameters());
        bn.SetTraining(true);
        var input = GoldenFill.Tensor($"bn{batch}{channels}", [batch, channels, h, w], 4.0);
        foreach (ref float v in input.Span)
        {
            v += (float)offset;
        }
        var expected = new float[input.Length];
        ReferenceLayers.BatchNormTrain(input.Span, batch, channels, h * w, bn.Weight.Value.Span, bn.BiasParameter.Value.Span, 1e-3, expected);
        Compare.Close(expected, bn.Forward(input).Span, NormalizationTolerance, "batch norm");

        Tensor dOutput = GoldenFill.Tensor($"bn{batch}{channels}.dy", [batch, channels, h, w], 1.0);
        var dInput = new float[input.Length];
        var dGamma = new float[channels];
        var dBeta = new float[channels];
        ReferenceLayers.BatchNormTrainBackward(input.Span, dOutput.Span, batch, channels, h * w, bn.Weight.Value.Span, 1e-3,
            dInput, dGamma, dBeta);
        bn.Weight.Grad!.Span.Clear();
        bn.BiasParameter.Grad!.Span.Clear();
        Compare.Close(dInput, bn.Backward(dOutput).Span, NormalizationTolerance, "batch norm input gradient");
        // Parameter gradients are sums over a whole channel (up to 2,279 terms of float rounding).
        Compare.Close(dGamma, bn.Weight.Grad.Span, NormalizationTolerance * 10, "batch norm weight gradient");
        Compare.Close(dBeta, bn.BiasParameter.Grad.Span, NormalizationTolerance * 10, "batch norm bias gradient");
    }
}
