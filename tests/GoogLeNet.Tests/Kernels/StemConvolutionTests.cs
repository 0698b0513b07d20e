using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary><see cref="StemConvolution"/> against the reference convolution and the implicit GEMM it replaces.</summary>
[Collection(EngineThreadsCollection.Name)]
public class StemConvolutionTests
{
    // Sums of up to 147 products of values in [-2, 2], as in ChannelMajorTests.
    private const double Tolerance = 1e-5;

    // (ci, co, h, w, k, padding, batch): the torchvision and d2l stems, output widths under, at and
    // past a 64-column panel and not multiples of 16, bands of 8 output rows with a short last
    // one, channel counts with a short last block of six, a 3x3 kernel.
    public static TheoryData<int, int, int, int, int, int, int> Shapes => new()
    {
        { 3, 64, 37, 41, 7, 3, 2 },
        { 1, 64, 96, 96, 7, 3, 1 },
        { 3, 13, 150, 131, 7, 3, 1 },
        { 3, 6, 9, 260, 7, 3, 1 },
        { 2, 7, 20, 33, 3, 1, 3 },
        { 3, 5, 7, 7, 7, 3, 2 },
        { 5, 8, 11, 12, 5, 0, 2 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesReferenceAndTheImplicitGemmExactly(int ci, int co, int h, int w, int k, int padding, int batch)
    {
        Assert.True(StemConvolution.Applies(ci, k, k, 2, padding));
        int oh = WindowMath.OutputSize(h, k, 2, padding, false);
        int ow = WindowMath.OutputSize(w, k, 2, padding, false);
        float[] x = GoldenFill.Fill("stem.x", ci * batch * h * w, 4.0);
        float[] weight = GoldenFill.Fill("stem.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("stem.b", co, 1.0);
        float[] scale = GoldenFill.Fill("stem.s", co, 2.0);
        // The reference works batch-major: the same numbers, laid out (n, c, h, w).
        float[] xBatchMajor = new float[x.Length];
        Layout.ToBatchMajor(x, batch, ci, h * w, xBatchMajor);
        var reference = new float[batch * co * oh * ow];
        ReferenceConvolution.Forward(xBatchMajor, batch, ci, h, w, weight, bias, co, k, k, 2, padding, oh, ow, reference);
        var expected = new float[reference.Length];
        Layout.ToChannelMajor(reference, batch, co, oh * ow, expected);

        float[] Run(bool stem, int threads, bool relu, bool scaled)
        {
            bool savedStem = StemConvolution.Enabled;
            int savedThreads = Gemm.MaxThreads;
            try
            {
                StemConvolution.Enabled = stem;
                Gemm.MaxThreads = threads;
                var y = new float[co * batch * oh * ow];
                y.AsSpan().Fill(float.NaN); // every output is written
                Convolution.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, k, k, 2, padding, oh, ow, relu,
                    new float[ci * k * k * oh * ow * batch], y, scaled ? scale : default);
                return y;
            }
            finally
            {
                StemConvolution.Enabled = savedStem;
                Gemm.MaxThreads = savedThreads;
            }
        }

        float[] plain = Run(stem: true, threads: 2, relu: false, scaled: false);
        Compare.Close(expected, plain, Tolerance, "stem forward");
        Assert.True(plain.AsSpan().SequenceEqual(Run(stem: false, threads: 2, relu: false, scaled: false)), "differs from the implicit GEMM");
        Assert.True(plain.AsSpan().SequenceEqual(Run(stem: true, threads: 1, relu: false, scaled: false)), "differs between 1 and 2 threads");
        // The folded-BatchNorm epilogue, relu(conv x scale + bias), as the GEMM applies it.
        float[] folded = Run(stem: true, threads: 2, relu: true, scaled: true);
        Assert.True(folded.AsSpan().SequenceEqual(Run(stem: false, threads: 2, relu: true, scaled: true)), "epilogue differs from the implicit GEMM");
        Assert.Contains(folded, v => v == 0f);
        Assert.DoesNotContain(folded, v => v < 0f || float.IsNaN(v));
    }

    // The weight gradient: taps as the micro-kernel's rows, output channels as its columns,
    // summed over the batch's pixels in a fixed number of parts (rows of 4, 17, 21, 48, 66 and
    // 130 output pixels: tails past the 8-pixel transposes and the 64-pixel panels; 5, 6, 7, 8,
    // 13 and 64 channels: tails past the 8-channel transposes). Accumulates into dWeight.
    [Theory]
    [MemberData(nameof(Shapes))]
    public void WeightGradientMatchesTheReference(int ci, int co, int h, int w, int k, int padding, int batch)
    {
        int oh = WindowMath.OutputSize(h, k, 2, padding, false);
        int ow = WindowMath.OutputSize(w, k, 2, padding, false);
        Assert.True(StemConvolution.TakesWeightGradient(ci, co, k, k, 2, padding));
        float[] x = GoldenFill.Fill("stem.x", ci * batch * h * w, 4.0);
        float[] dy = GoldenFill.Fill("stem.dy", co * batch * oh * ow, 4.0);
        var expected = new float[co * ci * k * k];
        ReferenceConvolution.Backward(Layouts.ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, new float[expected.Length], co, k, k, 2,
            padding, oh, ow, Layouts.ToBatchMajor(dy, batch, co, oh * ow), expected, new float[co], new float[x.Length]);

        float[] Run(int threads) => EngineThreads.With(threads, () =>
        {
            float[] dw = Enumerable.Repeat(1f, expected.Length).ToArray(); // accumulates
            StemConvolution.BackwardWeights(x, batch, ci, h, w, dy, co, k, k, padding, oh, ow, dw);
            return dw;
        });

        float[] two = Run(2);
        Compare.Close(expected.Select(v => v + 1f).ToArray(), two, WeightGradientTolerance, "dWeight");
        Assert.Equal(two, Run(1));
    }

    // Sums over every output pixel of the batch (up to 4,950 here) of products of values in
    // [-2, 2], in parts: measured below 1e-6 of the largest; the reference adds in another order.
    private const double WeightGradientTolerance = 1e-5;

    // (stem shape, stride-2 pool kernel / padding / ceil): torchvision's and the paper's 3x3/2 in
    // ceil mode, d2l's 3x3/2 padded by one, a 2x2/2 pool; bands of 8 pooled rows with a short
    // last one and a last window past the edge; a NaN in the input must reach the pooled output.
    public static TheoryData<int, int, int, int, int, int, int, int, int, bool> PooledShapes => new()
    {
        { 3, 64, 37, 41, 7, 3, 2, 3, 0, true },
        { 1, 64, 96, 96, 7, 3, 1, 3, 1, false },
        { 3, 13, 150, 131, 7, 3, 1, 3, 0, true },
        { 2, 7, 40, 33, 3, 1, 3, 2, 0, false },
        { 3, 5, 7, 7, 7, 3, 2, 3, 1, false },
    };

    // The stem's output size, its pool's, and an input with a NaN in the last image (for the
    // forward tests to carry to the pooled output).
    private static (int OutH, int OutW, int PooledH, int PooledW, float[] Input) PooledCase(int ci, int h, int w, int k, int padding,
        int batch, int poolKernel, int poolStride, int poolPadding, bool ceil)
    {
        int oh = WindowMath.OutputSize(h, k, 2, padding, false);
        int ow = WindowMath.OutputSize(w, k, 2, padding, false);
        float[] x = GoldenFill.Fill("stempool.x", ci * batch * h * w, 4.0);
        x[(batch - 1) * h * w + h / 2 * w + w / 3] = float.NaN;
        return (oh, ow, WindowMath.OutputSize(oh, poolKernel, poolStride, poolPadding, ceil),
            WindowMath.OutputSize(ow, poolKernel, poolStride, poolPadding, ceil), x);
    }

    [Theory]
    [MemberData(nameof(PooledShapes))]
    public void PooledOutputEqualsConvolutionThenPoolingExactly(int ci, int co, int h, int w, int k, int padding, int batch,
        int poolKernel, int poolPadding, bool ceil)
    {
        const int poolStride = 2;
        (int oh, int ow, int ph, int pw, float[] x) = PooledCase(ci, h, w, k, padding, batch, poolKernel, poolStride, poolPadding, ceil);
        float[] weight = GoldenFill.Fill("stempool.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("stempool.b", co, 1.0);
        float[] scale = GoldenFill.Fill("stempool.s", co, 2.0);
        // Without the ReLU the maxima can be negative, so a window that read past the row's
        // edges would show (the ReLU's zeros could hide it).
        foreach (bool relu in new[] { true, false })
        {
            var convolved = new float[co * batch * oh * ow];
            StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow, relu, convolved, scale);
            var expected = new float[co * batch * ph * pw];
            Pooling.MaxForward(convolved, co * batch, oh, ow, poolKernel, poolStride, poolPadding, ph, pw, expected);
            Assert.Contains(expected, float.IsNaN);

            foreach (int threads in new[] { 1, 2 })
            {
                float[] pooled = EngineThreads.With(threads, () =>
                {
                    var result = new float[expected.Length];
                    result.AsSpan().Fill(-7f); // every output is written
                    StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow, relu, result, scale,
                        new PoolWindow(poolKernel, poolStride, poolPadding, ph, pw));
                    return result;
                });
                Assert.Equal(expected, pooled);
            }
        }
        Assert.Throws<ArgumentException>(() => StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow,
            relu: true, new float[co * batch * ph * pw], scale, new PoolWindow(poolKernel, poolStride, poolPadding, ph + 2, pw)));
    }

    // Training pools the stem's output as it computes it and records each maximum's index: the
    // same maxima and indices as the stem followed by Pooling.MaxForwardIndexed, with both vector
    // widths of the pool and 1 or 2 threads. The ReLU's zeros tie in most windows, which is where
    // the first-maximum rule shows.
    [Theory]
    [MemberData(nameof(PooledShapes))]
    public void IndexedPoolEqualsConvolutionThenIndexedPoolingExactly(int ci, int co, int h, int w, int k, int padding, int batch,
        int poolKernel, int poolPadding, bool ceil)
    {
        const int poolStride = 2;
        (int oh, int ow, int ph, int pw, float[] x) = PooledCase(ci, h, w, k, padding, batch, poolKernel, poolStride, poolPadding, ceil);
        float[] weight = GoldenFill.Fill("stempool.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("stempool.b", co, 1.0);
        var convolved = new float[co * batch * oh * ow];
        StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow, relu: true, convolved);
        var expected = new float[co * batch * ph * pw];
        var expectedIndices = new int[expected.Length];
        Pooling.MaxForwardIndexed(convolved, co * batch, oh, ow, poolKernel, poolStride, poolPadding, ph, pw, expected, expectedIndices);
        Assert.Contains(expected, float.IsNaN);
        Assert.Contains(expected, v => v == 0f);
        var window = new PoolWindow(poolKernel, poolStride, poolPadding, ph, pw);

        foreach (bool wide in new[] { true, false })
        {
            foreach (int threads in new[] { 1, 2 })
            {
                (float[] pooled, int[] indices) = EngineSetting.With(() => Pooling.WideVectors, value => Pooling.WideVectors = value, wide,
                    () => EngineThreads.With(threads, () =>
                    {
                        var values = new float[expected.Length];
                        values.AsSpan().Fill(-7f); // every output is written
                        var argmax = new int[expected.Length];
                        argmax.AsSpan().Fill(-1);
                        StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow, relu: true, values, default,
                            window, argmax);
                        return (values, argmax);
                    }));
                Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), pooled.Select(BitConverter.SingleToInt32Bits));
                Assert.Equal(expectedIndices, indices);
            }
        }
        // Indices need the ReLU (so that the padding's -infinity never ties) and room for every output.
        Assert.Throws<ArgumentException>(() => StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow,
            relu: false, new float[expected.Length], default, window, new int[expected.Length]));
        Assert.Throws<ArgumentException>(() => StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow,
            relu: true, new float[expected.Length], default, window, new int[expected.Length - 1]));
        Assert.Throws<ArgumentException>(() => StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow,
            relu: true, new float[expected.Length], default, null, new int[expected.Length]));
    }

    // The training backward through a fused pool: the weight gradient bit for bit as the
    // pool's scatter through the ReLU (Pooling.MaxBackwardIndexed with the maxima) followed by
    // BackwardWeights, the bias gradient as the channel sums of that scatter within
    // BiasTolerance; against the reference through the scatter as well; 1 and 2 threads alike.
    [Theory]
    [MemberData(nameof(PooledShapes))]
    public void GradientThroughThePoolEqualsScatterThenWeightGradient(int ci, int co, int h, int w, int k, int padding, int batch,
        int poolKernel, int poolPadding, bool ceil)
    {
        const int poolStride = 2;
        (int oh, int ow, int ph, int pw, float[] x) = PooledCase(ci, h, w, k, padding, batch, poolKernel, poolStride, poolPadding, ceil);
        x[Array.FindIndex(x, float.IsNaN)] = 0.5f; // finite gradients, to compare with the reference
        float[] weight = GoldenFill.Fill("stempool.w", co * ci * k * k, 4.0);
        float[] bias = GoldenFill.Fill("stempool.b", co, 1.0);
        var window = new PoolWindow(poolKernel, poolStride, poolPadding, ph, pw);
        var maxima = new float[co * batch * ph * pw];
        var argmax = new int[maxima.Length];
        StemConvolution.Forward(x, batch, ci, h, w, weight, bias, co, k, k, padding, oh, ow, relu: true, maxima, default, window, argmax);
        float[] dPooled = GoldenFill.Fill("stempool.dpooled", maxima.Length, 2.0);
        Assert.Contains(maxima, v => v == 0f); // windows whose gradient the ReLU stops
        Assert.Contains(maxima, v => v > 0f);

        var dy = new float[co * batch * oh * ow];
        Pooling.MaxBackwardIndexed(argmax, dPooled, co * batch, oh * ow, ph * pw, dy, reluPooled: maxima);
        float[] expectedWeight = Enumerable.Repeat(1f, weight.Length).ToArray(); // both accumulate
        StemConvolution.BackwardWeights(x, batch, ci, h, w, dy, co, k, k, padding, oh, ow, expectedWeight);
        float[] expectedBias = Enumerable.Repeat(1f, co).ToArray();
        Elementwise.AddChannelSums(dy, co, batch * oh * ow, expectedBias);
        var referenceWeight = new float[weight.Length];
        var referenceBias = new float[co];
        ReferenceConvolution.Backward(Layouts.ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, new float[weight.Length], co, k, k, 2,
            padding, oh, ow, Layouts.ToBatchMajor(dy, batch, co, oh * ow), referenceWeight, referenceBias, new float[x.Length]);

        (float[] Weight, float[] Bias) Run(int threads) => EngineThreads.With(threads, () =>
        {
            float[] dw = Enumerable.Repeat(1f, weight.Length).ToArray();
            float[] db = Enumerable.Repeat(1f, co).ToArray();
            StemConvolution.BackwardWeightsThroughPool(x, batch, ci, h, w, dPooled, maxima, argmax, window, co, k, k, padding, oh, ow, dw, db);
            return (dw, db);
        });

        (float[] dWeight, float[] dBias) = Run(2);
        Assert.Equal(expectedWeight.Select(BitConverter.SingleToInt32Bits), dWeight.Select(BitConverter.SingleToInt32Bits));
        Compare.Close(expectedBias, dBias, BiasTolerance, "dBias");
        Compare.Close(referenceWeight.Select(v => v + 1f).ToArray(), dWeight, WeightGradientTolerance, "dWeight");
        Compare.Close(referenceBias.Select(v => v + 1f).ToArray(), dBias, BiasTolerance, "dBias");
        (float[] oneWeight, float[] oneBias) = Run(1);
        Assert.Equal(dWeight, oneWeight);
        Assert.Equal(dBias, oneBias);
        Assert.Throws<ArgumentException>(() => StemConvolution.BackwardWeightsThroughPool(x, batch, ci, h, w, dPooled, maxima,
            argmax.AsSpan(1), window, co, k, k, padding, oh, ow, new float[weight.Length], new float[co]));

        // Indices outside the plane (not from Forward) are skipped, never written through: as if
        // those outputs had no gradient.
        int[] corrupt = (int[])argmax.Clone();
        float[] withoutThem = (float[])dPooled.Clone();
        foreach (int o in new[] { 0, corrupt.Length / 2, corrupt.Length - 1 })
        {
            corrupt[o] = o % 2 == 0 ? -1 - o : int.MaxValue - o;
            withoutThem[o] = 0f;
        }
        float[] Weights(int[] indices, float[] gradient)
        {
            var dw = new float[weight.Length];
            StemConvolution.BackwardWeightsThroughPool(x, batch, ci, h, w, gradient, maxima, indices, window, co, k, k, padding, oh, ow, dw, new float[co]);
            return dw;
        }
        Assert.Equal(Weights(argmax, withoutThem), Weights(corrupt, dPooled));
    }

    // Sums of up to 4,950 gradients in [-2, 2] (those of outputs with a positive maximum) in two
    // orders: relative to the largest sum, rounding stays near 1e-7.
    private const double BiasTolerance = 1e-5;

    // Pooling.MaxRowsIndexed, which pools a band of rows of a plane: bands of every size that
    // hold their windows, strides 1 and 2, both vector widths, rows of 5 to 37 outputs (one
    // group, tails of 16- and 8-lane groups), against the whole plane's MaxForwardIndexed; stores
    // stay inside the band's output rows.
    [Theory]
    [InlineData(11, 9, 3, 1, 1)]
    [InlineData(13, 37, 3, 1, 1)]
    [InlineData(12, 48, 3, 2, 1)]
    [InlineData(17, 49, 3, 2, 0)]
    [InlineData(9, 19, 2, 2, 0)]
    public void PoolingABandOfRowsEqualsPoolingThePlane(int height, int width, int kernel, int stride, int padding)
    {
        int outH = WindowMath.OutputSize(height, kernel, stride, padding, false);
        int outW = WindowMath.OutputSize(width, kernel, stride, padding, false);
        float[] plane = GoldenFill.Fill("bandpool.x", height * width, 2.0);
        for (int i = 0; i < plane.Length; i++)
        {
            plane[i] = MathF.Round(plane[i] * 2f) / 2f; // ties
        }
        plane[width + 2] = float.NaN;
        var expected = new float[outH * outW];
        var expectedIndices = new int[expected.Length];
        Pooling.MaxForwardIndexed(plane, 1, height, width, kernel, stride, padding, outH, outW, expected, expectedIndices);
        int pitch = Pooling.PaddedRowsPitch(width, kernel, stride, padding, outW);
        bool savedWide = Pooling.WideVectors;
        try
        {
            foreach (bool wide in new[] { true, false })
            {
                Pooling.WideVectors = wide;
                PoolBands(plane, height, width, kernel, stride, padding, outH, outW, pitch, expected, expectedIndices);
            }
        }
        finally
        {
            Pooling.WideVectors = savedWide;
        }
    }

    private static unsafe void PoolBands(float[] plane, int height, int width, int kernel, int stride, int padding, int outH, int outW,
        int pitch, float[] expected, int[] expectedIndices)
    {
        for (int bandRows = 1; bandRows <= outH; bandRows++)
        {
            var values = new float[expected.Length + 16];
            values.AsSpan().Fill(-7f);
            var indices = new int[expected.Length + 16];
            indices.AsSpan().Fill(-1);
            var padded = new float[height * pitch];
            padded.AsSpan().Fill(float.NegativeInfinity);
            for (int oy0 = 0; oy0 < outH; oy0 += bandRows)
            {
                int oy1 = Math.Min(outH, oy0 + bandRows);
                int r0 = Math.Max(oy0 * stride - padding, 0);
                int r1 = Math.Min((oy1 - 1) * stride - padding + kernel, height);
                // Everything past the band's output rows reads -7 until its own band writes it.
                Assert.All(values.AsSpan(oy0 * outW).ToArray(), v => Assert.Equal(-7f, v));
                fixed (float* rows = plane, y = values, scratch = padded)
                fixed (int* argmax = indices)
                {
                    Pooling.MaxRowsIndexed(rows + r0 * width, r0, r1 - r0, height, width, kernel, stride, padding, oy0, oy1, outW,
                        y, argmax, scratch, pitch);
                }
            }
            Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), values.Take(expected.Length).Select(BitConverter.SingleToInt32Bits));
            Assert.Equal(expectedIndices, indices.Take(expected.Length));
            Assert.All(values.Skip(expected.Length), v => Assert.Equal(-7f, v));
        }
    }

    // Inference runs the stem and its pool as one; with the stem kernel off they run apart. The
    // logits and, through the re-run that Backward makes, the input gradient must not differ.
    [Theory]
    [InlineData(Preset.Torchvision)]
    [InlineData(Preset.D2l)]
    [InlineData(Preset.Paper)]
    public void ModelWithPooledStemEqualsTheLayersApart(Preset preset)
    {
        var options = GoogLeNetOptions.For(preset) with { InputHeight = 53, InputWidth = 50, Classes = 7 };
        int channels = options.InputChannels;
        float[] x = GoldenFill.Fill("stempool.model.x", 2 * channels * 53 * 50, 2.0);
        float[] dLogits = GoldenFill.Fill("stempool.model.dy", 2 * 7, 1.0);

        (float[] Logits, float[] DInput) Run(bool stem)
        {
            bool saved = StemConvolution.Enabled;
            try
            {
                StemConvolution.Enabled = stem;
                var model = new GoogLeNetModel(options) { ComputeInputGradient = true };
                GoldenFill.FillAll(model.Parameters.All);
                Tensor logits = model.Forward(Tensor.FromArray(x, [2, channels, 53, 50])).Logits;
                Tensor dInput = model.Backward(Tensor.FromArray(dLogits, logits.Shape))!;
                return (logits.Span.ToArray(), dInput.Span.ToArray());
            }
            finally
            {
                StemConvolution.Enabled = saved;
            }
        }

        var fused = Run(stem: true);
        var apart = Run(stem: false);
        Assert.Equal(apart.Logits, fused.Logits);
        Assert.Equal(apart.DInput, fused.DInput);
        Assert.Contains(fused.DInput, v => v != 0f);
    }

    [Fact]
    public void TakesOnlyStrideTwoKernelsOfOneKSlice()
    {
        Assert.True(StemConvolution.Applies(3, 7, 7, 2, 3));
        Assert.False(StemConvolution.Applies(3, 7, 7, 1, 3)); // stride 1
        Assert.False(StemConvolution.Applies(6, 7, 7, 2, 3)); // 294 taps: more than one k slice
        Assert.False(StemConvolution.Applies(64, 1, 1, 2, 0)); // a strided 1x1 is a plain GEMM
        Assert.False(StemConvolution.Applies(3, 3, 3, 2, 3)); // padding as large as the kernel
        Assert.Throws<ArgumentException>(() => StemConvolution.Forward(new float[3 * 16 * 16], 1, 3, 16, 16,
            new float[4 * 3 * 49], default, 4, 7, 7, 3, 9, 8, false, new float[4 * 9 * 8]));
    }
}
