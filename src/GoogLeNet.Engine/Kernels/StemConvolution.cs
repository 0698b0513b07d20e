using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// The stride-2 stem convolution (7x7 over 1 or 3 channels) of a channel-major batch, as the GEMM
/// micro-kernel over panels built from the image with whole-vector copies.
/// </summary>
/// <remarks>
/// The implicit GEMM generates each im2col row with a stride-2 gather and serves each generated
/// value to only co = 64 multiply-adds, so generating them cost about as much as multiplying
/// (76-105 GFLOP/s at batch 32). Here every input row the band of output rows needs is split once
/// into its even and odd columns, zero-padded: for output columns ox..ox+63 and tap (ky, kx) the
/// inputs are then 64 consecutive values of one such row, so a panel of 64 output columns and all
/// ci*kh*kw taps is a few hundred vector copies, and it serves all output channels while in L1. The
/// weights are packed once per call. The k sum (one slice of at most 384 taps) runs in the same
/// order and with the same epilogue as the GEMM path, so the results are identical to it.
/// </remarks>
public static unsafe class StemConvolution
{
    private const int Rows = Gemm.TileRows;
    private const int PanelColumns = Gemm.TileColumns * Gemm.MaxTilePanels;

    // Output rows per unit of work: the split input rows are rebuilt per band, (kh - 2) of every
    // 2 x BandRows + kh - 2 of them twice.
    private const int BandRows = 8;

    // One k slice of the GEMM path (its shortest KC), so the sums match it.
    private const int MaxTaps = 256;

    /// <summary>Whether <see cref="Convolution.ForwardChannelMajor"/> takes this kernel.</summary>
    public static bool Enabled { get; set; } = true;

    public static bool Applies(int inChannels, int kernelH, int kernelW, int stride, int padding) =>
        Enabled && stride == 2 && kernelH >= 3 && kernelW >= 3 && padding < kernelW && padding < kernelH
        && inChannels * kernelH * kernelW <= MaxTaps;

    [ThreadStatic]
    private static float[]? t_scratch;

    // input (ci, n, h, w); weight (co, ci, kh, kw); bias and scale (co) or empty;
    // output (co, n, oh, ow) = relu?(conv(input, weight) * scale + bias), stride 2.
    //
    // With a pool, output is instead (co, n, ph, pw), the max pooling of that result: bands of
    // pooled rows compute the convolution rows they need into cache and pool them there, so the
    // convolution's output (the network's largest tensor) is never written out and read back.
    // With indices as well (training; relu, a pool of stride 1 or 2, AVX2), each pooled output's
    // argmax goes there as Pooling.MaxForwardIndexed records it (MaxRowsIndexed), so that the
    // pool's backward pass is the usual scatter.
    public static void Forward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW, int padding,
        int outH, int outW, bool relu, Span<float> output, ReadOnlySpan<float> scale = default, PoolWindow? pool = null,
        Span<int> indices = default)
    {
        if (!Applies(inChannels, kernelH, kernelW, 2, padding))
        {
            throw new ArgumentException($"The stem kernel takes stride-2 kernels of 3x3 and more with padding under the kernel and at most {MaxTaps} taps; got {inChannels} x {kernelH} x {kernelW}, padding {padding}.");
        }
        int taps = inChannels * kernelH * kernelW;
        long outputPlane = pool is { } pooled ? (long)pooled.OutH * pooled.OutW : (long)outH * outW;
        if (input.Length < (long)inChannels * batch * height * width
            || weight.Length < (long)outChannels * taps
            || output.Length < outChannels * batch * outputPlane
            || (!bias.IsEmpty && bias.Length < outChannels) || (!scale.IsEmpty && scale.Length < outChannels))
        {
            throw new ArgumentException($"The stem convolution {inChannels} x {batch} x {height} x {width} -> {outChannels} x {outH} x {outW} got too short a span.");
        }
        if (outH != WindowMath.OutputSize(height, kernelH, 2, padding, false) || outW != WindowMath.OutputSize(width, kernelW, 2, padding, false))
        {
            throw new ArgumentException($"A {kernelH}x{kernelW} stride-2 convolution with padding {padding} of {height} x {width} gives {WindowMath.OutputSize(height, kernelH, 2, padding, false)} x {WindowMath.OutputSize(width, kernelW, 2, padding, false)}, not {outH} x {outW}.");
        }
        pool?.Check(outH, outW);
        if (!indices.IsEmpty && (pool is not { } indexed || !CanIndexPool(indexed, relu) || indices.Length < outChannels * batch * outputPlane))
        {
            throw new ArgumentException($"Pooling indices need a pool of stride 1 or 2 after the ReLU on an AVX2 CPU and {outChannels * batch * outputPlane} entries; got {indices.Length}.");
        }

        // Weights as A panels of six output channels (a[p * 6 + r]), the channel count rounded up
        // with zero rows, and the epilogue's per-channel values padded alike.
        int blocks = (outChannels + Rows - 1) / Rows;
        int padded = blocks * Rows;
        int packedLength = padded * taps + 2 * padded;
        if (t_scratch is null || t_scratch.Length < packedLength)
        {
            t_scratch = GC.AllocateUninitializedArray<float>(packedLength, pinned: true);
        }
        fixed (float* packed = t_scratch, w = weight, x = input, y = output, pBias = bias, pScale = scale)
        fixed (int* argmax = indices)
        {
            float* paddedScale = packed + padded * taps;
            float* paddedBias = paddedScale + padded;
            for (int co = 0; co < padded; co++)
            {
                int block = co / Rows, r = co % Rows;
                for (int p = 0; p < taps; p++)
                {
                    packed[(long)block * Rows * taps + p * Rows + r] = co < outChannels ? w[(long)co * taps + p] : 0f;
                }
                paddedScale[co] = co < outChannels && !scale.IsEmpty ? pScale[co] : 1f;
                paddedBias[co] = co < outChannels && !bias.IsEmpty ? pBias[co] : 0f;
            }
            var shape = new Shape(batch, inChannels, height, width, outChannels, kernelH, kernelW, padding, outH, outW,
                blocks, SplitRowLength(width, kernelW, padding, outW));
            var epilogue = new Epilogue((nint)packed, scale.IsEmpty ? 0 : (nint)paddedScale, bias.IsEmpty ? 0 : (nint)paddedBias, relu);
            if (pool is { } window)
            {
                int pooledBands = (window.OutH + BandRows - 1) / BandRows;
                Parallelism.For(batch * pooledBands, (long)2 * BandRows * outW * taps * padded,
                    (shape, x: (nint)x, y: (nint)y, argmax: (nint)argmax, epilogue, window, pooledBands),
                    static (s, start, count) => RunPooledBands(s.shape, (float*)s.x, s.epilogue, (float*)s.y, (int*)s.argmax, s.window, s.pooledBands, start, count));
                return;
            }
            int bands = (outH + BandRows - 1) / BandRows;
            Parallelism.For(batch * bands, (long)BandRows * outW * taps * padded, (shape, x: (nint)x, y: (nint)y, epilogue, bands),
                static (s, start, count) => RunBands(s.shape, (float*)s.x, s.epilogue, (float*)s.y, s.bands, start, count));
        }
    }

    private readonly record struct Shape(
        int Batch, int CIn, int Height, int Width, int COut, int KernelH, int KernelW, int Padding, int OutH, int OutW,
        int Blocks, int RowLength)
    {
        public int Taps => CIn * KernelH * KernelW;
    }

    /// <summary>Whether <see cref="Forward"/> can record <paramref name="pool"/>'s argmax: after the ReLU, stride 1 or 2, on an AVX2 CPU.</summary>
    public static bool CanIndexPool(PoolWindow pool, bool relu) =>
        relu && (pool.Stride == 1 || pool.Stride == 2) && Avx2.IsSupported;

    // Even and odd columns of a padded input row: element j of half q is column 2j + q - padding.
    // A panel starting at output column ox reads columns ox + kx / 2 .. + 63 of half kx % 2.
    private static int SplitRowLength(int width, int kernelW, int padding, int outW)
    {
        int panels = (outW + PanelColumns - 1) / PanelColumns;
        return Math.Max((width + 2 * padding + 1) / 2, panels * PanelColumns + (kernelW - 1) / 2);
    }

    // The packed weights and the epilogue's padded per-channel values (0 where absent).
    private readonly record struct Epilogue(nint Weights, nint Scale, nint Bias, bool Relu);

    [ThreadStatic]
    private static float[]? t_band;

    /// <summary>Whether <see cref="Convolution.BackwardChannelMajor"/> takes <see cref="BackwardWeights"/> for this layer.</summary>
    public static bool TakesWeightGradient(int inChannels, int outChannels, int kernelH, int kernelW, int stride, int padding) =>
        Applies(inChannels, kernelH, kernelW, stride, padding) && outChannels <= PanelColumns;

    // The weight gradient sums over the batch's pixels in this many parts, each its own pixels
    // in order, then adds the parts in order: the result does not depend on the thread count.
    private const int Parts = 16;

    [ThreadStatic]
    private static float[]? t_parts;

    [ThreadStatic]
    private static float[]? t_operands;

    // input (ci, n, h, w); dOutput (co, n, oh, ow); dWeight (co, ci, kh, kw) += the weight
    // gradient of the stride-2 convolution.
    //
    // The implicit GEMM ran this as dY (co, pixels) col^T with k = every pixel of the batch
    // (401408 at torchvision's batch 32) and packed both operands for a 64 x 147 (or 64 x 49)
    // result: 91-93 and 55-56 GFLOP/s. Here the taps are the micro-kernel's rows and the output
    // channels its columns, so C^T (taps, co) stays a few tiles that every pixel adds to: for
    // each output row the split input rows give each tap's pixels as one run (FillPanel), six
    // taps are interleaved pixel by pixel into the A panel, dY's row is transposed into the B
    // panel (pixels, co), and the micro-kernel accumulates.
    public static void BackwardWeights(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> dOutput, int outChannels, int kernelH, int kernelW, int padding, int outH, int outW, Span<float> dWeight)
    {
        CheckWeightGradient(input, batch, inChannels, height, width, outChannels, kernelH, kernelW, padding, outH, outW, dWeight);
        if (dOutput.Length < (long)outChannels * batch * outH * outW)
        {
            throw new ArgumentException($"The stem weight gradient {inChannels} x {batch} x {height} x {width} -> {outChannels} x {outH} x {outW} got too short a span.");
        }
        fixed (float* dy = dOutput)
        {
            AccumulateWeightGradient(input, batch, inChannels, height, width, new OutputGradient((nint)dy, 0, 0, 0, default),
                outChannels, kernelH, kernelW, padding, outH, outW, dWeight, default);
        }
    }

    // input (ci, n, h, w); dPooled, maxima, argmax (co, n, ph, pw); dWeight (co, ci, kh, kw) and
    // dBias (co, or empty) += the gradients.
    /// <summary>
    /// The weight and bias gradients of a stem whose ReLU output went through a max pool that
    /// recorded its argmax (<see cref="Forward"/> with indices), from the pool's output gradient:
    /// the pool's scatter and the ReLU's gradient are applied as each product's operand is
    /// built, so the gradient with respect to the stem's output (the size of that output) is
    /// never stored. The weight gradient equals <see cref="BackwardWeights"/> of
    /// Pooling.MaxBackwardIndexed's result (with the maxima) bit for bit; the bias gradient sums
    /// the same values in another order than Elementwise.AddChannelSums.
    /// </summary>
    public static void BackwardWeightsThroughPool(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> dPooled, ReadOnlySpan<float> maxima, ReadOnlySpan<int> argmax, PoolWindow pool,
        int outChannels, int kernelH, int kernelW, int padding, int outH, int outW, Span<float> dWeight, Span<float> dBias)
    {
        CheckWeightGradient(input, batch, inChannels, height, width, outChannels, kernelH, kernelW, padding, outH, outW, dWeight);
        pool.Check(outH, outW);
        long pooled = (long)outChannels * batch * pool.OutH * pool.OutW;
        if (dPooled.Length < pooled || maxima.Length < pooled || argmax.Length < pooled || (!dBias.IsEmpty && dBias.Length < outChannels))
        {
            throw new ArgumentException($"The stem gradient through a pool to {outChannels} x {batch} x {pool.OutH} x {pool.OutW} got too short a span.");
        }
        fixed (float* dy = dPooled, m = maxima)
        fixed (int* index = argmax)
        {
            AccumulateWeightGradient(input, batch, inChannels, height, width, new OutputGradient(0, (nint)dy, (nint)m, (nint)index, pool),
                outChannels, kernelH, kernelW, padding, outH, outW, dWeight, dBias);
        }
    }

    private static void CheckWeightGradient(ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        int outChannels, int kernelH, int kernelW, int padding, int outH, int outW, Span<float> dWeight)
    {
        if (!TakesWeightGradient(inChannels, outChannels, kernelH, kernelW, 2, padding))
        {
            throw new ArgumentException($"The stem weight gradient takes stride-2 kernels of 3x3 and more with padding under the kernel, at most {MaxTaps} taps and {PanelColumns} output channels; got {inChannels} x {kernelH} x {kernelW} -> {outChannels}, padding {padding}.");
        }
        if (outH != WindowMath.OutputSize(height, kernelH, 2, padding, false) || outW != WindowMath.OutputSize(width, kernelW, 2, padding, false))
        {
            throw new ArgumentException($"A {kernelH}x{kernelW} stride-2 convolution with padding {padding} of {height} x {width} gives {WindowMath.OutputSize(height, kernelH, 2, padding, false)} x {WindowMath.OutputSize(width, kernelW, 2, padding, false)}, not {outH} x {outW}.");
        }
        if (input.Length < (long)inChannels * batch * height * width || dWeight.Length < outChannels * inChannels * kernelH * kernelW)
        {
            throw new ArgumentException($"The stem weight gradient {inChannels} x {batch} x {height} x {width} -> {outChannels} x {outH} x {outW} got too short a span.");
        }
    }

    // The gradient with respect to the stem's output: stored (Dy, (co, n, oh, ow)), or the
    // pool's (DPooled, Maxima, Argmax, (co, n, ph, pw)) to scatter through the ReLU.
    private readonly record struct OutputGradient(nint Dy, nint DPooled, nint Maxima, nint Argmax, PoolWindow Pool);

    // dWeight (co, taps) and dBias (co, or empty) += the parts' C^T (taps, co), in part order;
    // with a bias, A has one more row, of ones, whose products are the bias's sums.
    private static void AccumulateWeightGradient(ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        OutputGradient gradient, int outChannels, int kernelH, int kernelW, int padding, int outH, int outW, Span<float> dWeight, Span<float> dBias)
    {
        int taps = inChannels * kernelH * kernelW;
        int productRows = taps + (dBias.IsEmpty ? 0 : 1);
        int blocks = (productRows + Rows - 1) / Rows;
        int tapRows = blocks * Rows;
        var shape = new Shape(batch, inChannels, height, width, outChannels, kernelH, kernelW, padding, outH, outW,
            blocks, SplitRowLength(width, kernelW, padding, outW));
        int bands = (outH + BandRows - 1) / BandRows;
        int units = batch * bands;
        int parts = Math.Min(Parts, units);
        int partLength = tapRows * PanelColumns;
        if (t_parts is null || t_parts.Length < parts * partLength)
        {
            t_parts = GC.AllocateUninitializedArray<float>(Parts * partLength, pinned: true);
        }
        fixed (float* x = input, dw = dWeight, db = dBias, sums = t_parts)
        {
            Parallelism.For(parts, (long)units / parts * BandRows * outW * taps * outChannels,
                (shape, x: (nint)x, gradient, sums: (nint)sums, parts, units, partLength, biasRow: !dBias.IsEmpty),
                static (t, start, count) =>
                {
                    for (int part = start; part < start + count; part++)
                    {
                        float* sum = (float*)t.sums + (long)part * t.partLength;
                        new Span<float>(sum, t.partLength).Clear();
                        int bandCount = (t.shape.OutH + BandRows - 1) / BandRows;
                        for (int unit = (int)((long)part * t.units / t.parts); unit < (int)((long)(part + 1) * t.units / t.parts); unit++)
                        {
                            AccumulateBand(t.shape, (float*)t.x, t.gradient, t.biasRow, unit / bandCount, unit % bandCount * BandRows, sum);
                        }
                    }
                });
            for (int part = 0; part < parts; part++)
            {
                float* sum = sums + (long)part * partLength;
                for (int tap = 0; tap < taps; tap++)
                {
                    for (int co = 0; co < outChannels; co++)
                    {
                        dw[(long)co * taps + tap] += sum[tap * PanelColumns + co];
                    }
                }
                if (!dBias.IsEmpty)
                {
                    for (int co = 0; co < outChannels; co++)
                    {
                        db[co] += sum[taps * PanelColumns + co];
                    }
                }
            }
        }
    }

    // Pixels per product of the weight gradient: its A (all taps) and B (all output channels)
    // for this many pixels stay within the L2 (230 and 98 KB for torchvision's 147 taps).
    private const int GradientPixels = 384;

    // C^T (tapRows, 64) += the products of output rows [oy0, oy0 + BandRows) of one image, in
    // chunks of whole rows of at most GradientPixels pixels (at least one row). With biasRow,
    // A's row past the taps is ones.
    private static void AccumulateBand(in Shape s, float* x, in OutputGradient gradient, bool biasRow, int image, int oy0, float* sum)
    {
        int tapRows = s.Blocks * Rows;
        int chunkRows = Math.Max(1, GradientPixels / s.OutW);
        int maxPixels = chunkRows * s.OutW;
        Scratch(s, BandRows, 0, 0, out float* split, out float* panel, out float* _);
        // Each block's A ends in the eight floats that the last pixel's interleaving store reaches.
        int blockStride = Rows * maxPixels + 8;
        // Through a pool, the band's gradient rows of every channel are scattered first.
        int bandPixels = BandRows * s.OutW;
        int operandLength = s.Blocks * blockStride + maxPixels * PanelColumns + (gradient.Argmax == 0 ? 0 : s.COut * bandPixels);
        if (t_operands is null || t_operands.Length < operandLength)
        {
            t_operands = GC.AllocateUninitializedArray<float>(operandLength, pinned: true);
        }
        float* a = (float*)Unsafe.AsPointer(ref t_operands[0]);
        float* b = a + (long)s.Blocks * blockStride;
        int splitRows = SplitRowCount(s, BandRows);
        int oy1 = Math.Min(s.OutH, oy0 + BandRows);
        SplitRows(s, x, image, 2 * oy0 - s.Padding, 2 * (oy1 - oy0 - 1) + s.KernelH, splitRows, split);
        int vectors = (s.COut + Gemm.TileColumns - 1) / Gemm.TileColumns;
        long channelStride = (long)s.Batch * s.OutH * s.OutW;
        float* gradientRows = (float*)gradient.Dy + (long)image * s.OutH * s.OutW;
        if (gradient.Argmax != 0)
        {
            // (co, band pixels), in L2; the products read it as they would dY.
            gradientRows = b + maxPixels * PanelColumns;
            channelStride = (oy1 - oy0) * s.OutW;
            ScatterPooled(s, gradient, image, oy0, oy1, gradientRows);
            gradientRows -= (long)oy0 * s.OutW;
        }
        for (int first = oy0; first < oy1; first += chunkRows)
        {
            int last = Math.Min(oy1, first + chunkRows);
            int pixels = (last - first) * s.OutW;
            for (int oy = first; oy < last; oy++)
            {
                for (int ox = 0; ox < s.OutW; ox += PanelColumns)
                {
                    int columns = Math.Min(PanelColumns, s.OutW - ox);
                    FillPanel(s, split, splitRows, 2 * (oy - oy0), ox, (columns + Gemm.TileColumns - 1) / Gemm.TileColumns * Gemm.TileColumns, panel);
                    // Rows past the taps are zero rows of A, or the bias's ones (the panel's last
                    // block runs into the edge tile after it, unused here).
                    for (int tap = s.Taps; tap < tapRows; tap++)
                    {
                        new Span<float>(panel + tap * PanelColumns, columns).Fill(biasRow && tap == s.Taps ? 1f : 0f);
                    }
                    int k0 = (oy - first) * s.OutW + ox;
                    for (int block = 0; block < s.Blocks; block++)
                    {
                        Interleave(panel + block * Rows * PanelColumns, columns, a + (long)block * blockStride + k0 * Rows);
                    }
                }
            }
            // The chunk's rows are one run of each channel's plane (or band).
            Transpose(gradientRows + (long)first * s.OutW, channelStride, s.COut, pixels, b);
            for (int block = 0; block < s.Blocks; block++)
            {
                Gemm.MicroKernel(vectors, pixels, a + (long)block * blockStride, b, PanelColumns, sum + block * Rows * PanelColumns,
                    PanelColumns, accumulate: true);
            }
        }
    }

    // rows (co, pixels of output rows [first, last)) = the gradient of one image as
    // Pooling.MaxBackwardIndexed with the maxima leaves it: each pooled output whose window reaches
    // those rows, in the pooled plane's order, adds its gradient at its argmax where its maximum is
    // positive. A whole band at a time: a chunk of a few rows (the paper's 112-wide rows) would
    // visit most pooled rows twice.
    private static void ScatterPooled(in Shape s, in OutputGradient g, int image, int first, int last, float* rows)
    {
        int pixels = (last - first) * s.OutW;
        PoolWindow pool = g.Pool;
        // Pooled rows [py0, py1) have windows that reach rows [first, last). Every argmax is
        // checked against the band, also those of windows inside it: a caller's indices are not
        // trusted to stay in the plane (skipping the check measured no faster).
        int py0 = Math.Max(0, (first + pool.Padding - pool.Kernel + pool.Stride) / pool.Stride);
        int py1 = Math.Min(pool.OutH, (last - 1 + pool.Padding) / pool.Stride + 1);
        long pooledPlane = (long)pool.OutH * pool.OutW;
        int start = first * s.OutW;
        new Span<float>(rows, s.COut * pixels).Clear();
        for (int c = 0; c < s.COut; c++)
        {
            long plane = ((long)c * s.Batch + image) * pooledPlane;
            float* dy = (float*)g.DPooled + plane;
            float* maxima = (float*)g.Maxima + plane;
            int* argmax = (int*)g.Argmax + plane;
            float* row = rows + c * pixels - start;
            if (Sse.IsSupported)
            {
                // The next band's pooled rows of this channel (its planes lie far apart, more
                // streams than the prefetchers follow).
                for (int o = py1 * pool.OutW; o < Math.Min(pool.OutH, 2 * py1 - py0) * pool.OutW; o += 16)
                {
                    Sse.Prefetch0(dy + o);
                    Sse.Prefetch0(maxima + o);
                    Sse.Prefetch0(argmax + o);
                }
            }
            for (int o = py0 * pool.OutW; o < py1 * pool.OutW; o++)
            {
                int k = argmax[o];
                if ((uint)(k - start) < (uint)pixels)
                {
                    row[k] += maxima[o] > 0f ? dy[o] : 0f;
                }
            }
        }
    }

    // a[k * 6 + r] = rows[r * 64 + k] for k < count: six rows of a panel, pixel by pixel.
    private static void Interleave(float* rows, int count, float* a)
    {
        int k = 0;
        if (Avx.IsSupported)
        {
            for (; k + 8 <= count; k += 8)
            {
                // Eight floats where six belong: each store's last two are the next pixel's to overwrite.
                Gemm.TransposeBlock(rows + k, PanelColumns, Rows, a + k * Rows, Rows);
            }
        }
        for (; k < count; k++)
        {
            for (int r = 0; r < Rows; r++)
            {
                a[k * Rows + r] = rows[r * PanelColumns + k];
            }
        }
    }

    // b[k * 64 + co] = dy[co * channelStride + k] for co < channels, k < count: one output row's
    // pixels of every output channel, pixel by pixel. Columns past the channels keep whatever
    // they held: the sums they feed are never read.
    private static void Transpose(float* dy, long channelStride, int channels, int count, float* b)
    {
        int co = 0;
        if (Avx.IsSupported)
        {
            for (; co + 8 <= channels; co += 8)
            {
                float* source = dy + co * channelStride;
                int k = 0;
                for (; k + 8 <= count; k += 8)
                {
                    Gemm.TransposeBlock(source + k, channelStride, 8, b + k * PanelColumns + co, PanelColumns);
                }
                for (; k < count; k++)
                {
                    for (int c = co; c < co + 8; c++)
                    {
                        b[k * PanelColumns + c] = dy[c * channelStride + k];
                    }
                }
            }
        }
        for (; co < channels; co++)
        {
            for (int k = 0; k < count; k++)
            {
                b[k * PanelColumns + co] = dy[co * channelStride + k];
            }
        }
    }

    // Split input rows for convRows output rows of every input channel.
    private static int SplitRowCount(in Shape s, int convRows) => 2 * convRows + s.KernelH - 2;

    // The calling thread's split rows for up to convRows output rows, panel and edge tile, and
    // (pooling) a band of pooledRows convolution rows of every output channel with a row of their
    // maxima (maxRowLength floats, MaxRowLength).
    private static float* Scratch(in Shape s, int convRows, int pooledRows, int maxRowLength, out float* split, out float* panel, out float* edge)
    {
        int splitLength = s.CIn * SplitRowCount(s, convRows) * 2 * s.RowLength;
        long needed = splitLength + (long)s.Taps * PanelColumns + Rows * PanelColumns + (long)s.Blocks * Rows * pooledRows * s.OutW
            + maxRowLength;
        if (t_band is null || t_band.Length < needed)
        {
            t_band = GC.AllocateUninitializedArray<float>(checked((int)needed), pinned: true);
        }
        float* scratch = (float*)Unsafe.AsPointer(ref t_band[0]);
        split = scratch;
        panel = split + splitLength;
        edge = panel + s.Taps * PanelColumns;
        return edge + Rows * PanelColumns;
    }

    // Units [start, start + count): unit = image * bands + band of BandRows output rows.
    private static void RunBands(in Shape s, float* x, in Epilogue e, float* y, int bands, int start, int count)
    {
        Scratch(s, BandRows, 0, 0, out float* split, out float* panel, out float* edge);
        int splitRows = SplitRowCount(s, BandRows);
        long planeOut = (long)s.OutH * s.OutW;
        for (int unit = start; unit < start + count; unit++)
        {
            int image = unit / bands;
            int oy0 = unit % bands * BandRows;
            int oy1 = Math.Min(s.OutH, oy0 + BandRows);
            ComputeRows(s, x, e, image, oy0, oy1, y + image * planeOut + (long)oy0 * s.OutW, s.Batch * planeOut, split, splitRows, panel, edge);
        }
    }

    // The row of maxima with -infinity either side: pool.Padding floats before it and, after it,
    // enough for whole-vector loads of the last group of outputs (the last window reads at most
    // padding + 2 past the row's end; a vector's loads 31 past its first tap): no window, not
    // even one that reaches past the row's end (ceil mode), is left to a scalar loop. The edges
    // never win a window: each starts inside the row.
    private static int MaxRowLength(in Shape s, PoolWindow pool) => 2 * pool.Padding + s.OutW + pool.Kernel + 16;

    // With indices, that room holds a padded copy of one channel's band of rows instead (Pooling.MaxRowsIndexed).
    private static int PaddedRowsLength(int rows, in Shape s, PoolWindow pool) =>
        rows * Pooling.PaddedRowsPitch(s.OutW, pool.Kernel, pool.Stride, pool.Padding, pool.OutW);

    // Units [start, start + count): unit = image * bands + band of BandRows pooled rows. Each
    // band computes the convolution rows its windows cover (one row more than twice its own for
    // a 3x3/2 pool: the row its neighbour shares is computed by both).
    private static void RunPooledBands(in Shape s, float* x, in Epilogue e, float* y, int* indices, PoolWindow pool, int bands, int start, int count)
    {
        int maxRows = (BandRows - 1) * pool.Stride + pool.Kernel;
        int edgesLength = indices == null ? MaxRowLength(s, pool) : PaddedRowsLength(maxRows, s, pool);
        int pitch = Pooling.PaddedRowsPitch(s.OutW, pool.Kernel, pool.Stride, pool.Padding, pool.OutW);
        // All of a band's convolution rows in one pass, so the input rows they share are split once.
        float* rows = Scratch(s, maxRows, maxRows, edgesLength, out float* split, out float* panel, out float* edge);
        int splitRows = SplitRowCount(s, maxRows);
        float* rowMax = rows + (long)s.Blocks * Rows * maxRows * s.OutW;
        new Span<float>(rowMax, edgesLength).Fill(float.NegativeInfinity);
        float* padded = rowMax;
        rowMax += pool.Padding;
        long channelRows = (long)maxRows * s.OutW;
        long pooledPlane = (long)pool.OutH * pool.OutW;
        for (int unit = start; unit < start + count; unit++)
        {
            int image = unit / bands;
            int py0 = unit % bands * BandRows;
            int py1 = Math.Min(pool.OutH, py0 + BandRows);
            int r0 = Math.Max(0, py0 * pool.Stride - pool.Padding);
            int r1 = Math.Min(s.OutH, (py1 - 1) * pool.Stride - pool.Padding + pool.Kernel);
            ComputeRows(s, x, e, image, r0, r1, rows, channelRows, split, splitRows, panel, edge);
            for (int co = 0; co < s.COut; co++)
            {
                float* channel = rows + co * channelRows;
                float* target = y + ((long)co * s.Batch + image) * pooledPlane;
                if (indices != null)
                {
                    Pooling.MaxRowsIndexed(channel, r0, r1 - r0, s.OutH, s.OutW, pool.Kernel, pool.Stride, pool.Padding, py0, py1, pool.OutW,
                        target, indices + ((long)co * s.Batch + image) * pooledPlane, padded, pitch);
                    continue;
                }
                for (int py = py0; py < py1; py++)
                {
                    int y0 = Math.Max(py * pool.Stride - pool.Padding, 0);
                    int y1 = Math.Min(py * pool.Stride - pool.Padding + pool.Kernel, s.OutH);
                    MaxOfRows(channel + (long)(y0 - r0) * s.OutW, y1 - y0, s.OutW, rowMax);
                    PoolColumns(rowMax, pool, target + (long)py * pool.OutW);
                }
            }
        }
    }

    // dst[i] = max over rows r < count of first[r * width + i]; NaN wins (IEEE maximum, as
    // Pooling.MaxForward).
    private static void MaxOfRows(float* first, int count, int width, float* dst)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            for (; i + 16 <= width; i += 16)
            {
                Vector512<float> best = Vector512.Load(first + i);
                for (int r = 1; r < count; r++)
                {
                    best = Vector512.Max(best, Vector512.Load(first + (long)r * width + i));
                }
                best.Store(dst + i);
            }
        }
        for (; i + 8 <= width; i += 8)
        {
            Vector256<float> best = Vector256.Load(first + i);
            for (int r = 1; r < count; r++)
            {
                best = Vector256.Max(best, Vector256.Load(first + (long)r * width + i));
            }
            best.Store(dst + i);
        }
        for (; i < width; i++)
        {
            float best = first[i];
            for (int r = 1; r < count; r++)
            {
                best = MathF.Max(best, first[(long)r * width + i]);
            }
            dst[i] = best;
        }
    }

    // dst[px] = max of row over columns [px * stride - padding, + kernel), px < pool.OutW; row
    // has -infinity either side (MaxRowLength). NaN wins, as in Pooling.MaxForward. Stride 2
    // takes the even lanes of each tap's loads, 16 outputs a step (AVX-512) or 8 (AVX2).
    private static void PoolColumns(float* row, PoolWindow pool, float* dst)
    {
        int px = 0;
        if (pool.Stride == 2 && Avx512F.IsSupported)
        {
            Vector512<int> evenLanes = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            for (; px + 16 <= pool.OutW; px += 16)
            {
                float* start = row + 2 * px - pool.Padding;
                Vector512<float> best = Avx512F.PermuteVar16x32x2(Vector512.Load(start), evenLanes, Vector512.Load(start + 16));
                for (int j = 1; j < pool.Kernel; j++)
                {
                    best = Vector512.Max(best, Avx512F.PermuteVar16x32x2(Vector512.Load(start + j), evenLanes, Vector512.Load(start + j + 16)));
                }
                best.Store(dst + px);
            }
        }
        if (pool.Stride == 2 && Avx2.IsSupported)
        {
            for (; px + 8 <= pool.OutW; px += 8)
            {
                float* start = row + 2 * px - pool.Padding;
                Vector256<float> best = Pooling.Evens(start);
                for (int j = 1; j < pool.Kernel; j++)
                {
                    best = Vector256.Max(best, Pooling.Evens(start + j));
                }
                best.Store(dst + px);
            }
        }
        for (; px < pool.OutW; px++)
        {
            float* start = row + px * pool.Stride - pool.Padding;
            float best = start[0];
            for (int j = 1; j < pool.Kernel; j++)
            {
                best = MathF.Max(best, start[j]);
            }
            dst[px] = best;
        }
    }

    // Output rows [oy0, oy1) of one image, all output channels: row oy of channel co goes to
    // target + co * ldc + (oy - oy0) * outW. split holds splitRows rows per input channel, enough
    // for the band (SplitRowCount).
    private static void ComputeRows(in Shape s, float* x, in Epilogue e, int image, int oy0, int oy1, float* target, long ldc,
        float* split, int splitRows, float* panel, float* edge)
    {
        int taps = s.Taps;
        int ldcInt = checked((int)ldc);
        float* a = (float*)e.Weights;
        float* scale = (float*)e.Scale;
        float* bias = (float*)e.Bias;
        // Padded input rows 2 * oy0 .. 2 * (oy1 - 1) + kh - 1, i.e. image rows from 2 * oy0 - padding.
        int rows = 2 * (oy1 - oy0 - 1) + s.KernelH;
        SplitRows(s, x, image, 2 * oy0 - s.Padding, rows, splitRows, split);
        for (int oy = oy0; oy < oy1; oy++)
        {
            for (int ox = 0; ox < s.OutW; ox += PanelColumns)
            {
                int columns = Math.Min(PanelColumns, s.OutW - ox);
                int vectors = (columns + Gemm.TileColumns - 1) / Gemm.TileColumns;
                FillPanel(s, split, splitRows, 2 * (oy - oy0), ox, vectors * Gemm.TileColumns, panel);
                float* c = target + (long)(oy - oy0) * s.OutW + ox;
                for (int block = 0; block < s.Blocks; block++)
                {
                    int channels = Math.Min(Rows, s.COut - block * Rows);
                    float* blockScale = scale == null ? null : scale + block * Rows;
                    float* blockBias = bias == null ? null : bias + block * Rows;
                    float* aPanel = a + (long)block * Rows * taps;
                    float* cBlock = c + block * Rows * ldc;
                    if (channels == Rows && columns == vectors * Gemm.TileColumns)
                    {
                        Gemm.MicroKernel(vectors, taps, aPanel, panel, PanelColumns, cBlock, ldcInt, blockScale, blockBias, e.Relu);
                        continue;
                    }
                    Gemm.MicroKernel(vectors, taps, aPanel, panel, PanelColumns, edge, PanelColumns, blockScale, blockBias, e.Relu);
                    for (int r = 0; r < channels; r++)
                    {
                        new ReadOnlySpan<float>(edge + r * PanelColumns, columns).CopyTo(new Span<float>(cBlock + r * ldc, columns));
                    }
                }
            }
        }
    }

    // split[ci][row][q][j] for the band's rows: image row firstRow + row, zero outside the image.
    private static void SplitRows(in Shape s, float* x, int image, int firstRow, int rows, int splitRows, float* split)
    {
        int length = s.RowLength;
        for (int ci = 0; ci < s.CIn; ci++)
        {
            float* plane = x + ((long)ci * s.Batch + image) * s.Height * s.Width;
            for (int row = 0; row < rows; row++)
            {
                float* even = split + ((long)(ci * splitRows + row) * 2) * length;
                float* odd = even + length;
                int iy = firstRow + row;
                if ((uint)iy >= (uint)s.Height)
                {
                    new Span<float>(even, 2 * length).Clear();
                    continue;
                }
                SplitRow(plane + (long)iy * s.Width, s.Width, s.Padding, length, even, odd);
            }
        }
    }

    // even[j] = row[2j - padding], odd[j] = row[2j + 1 - padding] for j in [0, length), zero
    // outside [0, width). Whole vectors wherever all their reads lie inside the row, a
    // permutation splitting each pair of loads; the padded ends one value at a time.
    private static void SplitRow(float* row, int width, int padding, int length, float* even, float* odd)
    {
        int j = Math.Min((padding + 1) / 2, length); // the first j whose reads start inside the row
        SplitScalar(row, width, padding, 0, j, even, odd);
        if (Avx512F.IsSupported)
        {
            Vector512<int> evenLanes = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            Vector512<int> oddLanes = evenLanes + Vector512<int>.One;
            for (; j + 16 <= length && 2 * j - padding + 32 <= width; j += 16)
            {
                float* from = row + 2 * j - padding;
                Vector512<float> low = Vector512.Load(from), high = Vector512.Load(from + 16);
                Avx512F.PermuteVar16x32x2(low, evenLanes, high).Store(even + j);
                Avx512F.PermuteVar16x32x2(low, oddLanes, high).Store(odd + j);
            }
        }
        if (Avx2.IsSupported)
        {
            for (; j + 8 <= length && 2 * j - padding + 16 <= width; j += 8)
            {
                float* from = row + 2 * j - padding;
                Vector256<float> a = Vector256.Load(from), b = Vector256.Load(from + 8);
                // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], likewise the odd lanes.
                Vector256<float> evens = Avx.Shuffle(a, b, 0b10_00_10_00);
                Vector256<float> odds = Avx.Shuffle(a, b, 0b11_01_11_01);
                Avx2.Permute4x64(evens.AsDouble(), 0b11_01_10_00).AsSingle().Store(even + j);
                Avx2.Permute4x64(odds.AsDouble(), 0b11_01_10_00).AsSingle().Store(odd + j);
            }
        }
        SplitScalar(row, width, padding, j, length, even, odd);
    }

    private static void SplitScalar(float* row, int width, int padding, int from, int to, float* even, float* odd)
    {
        for (int j = from; j < to; j++)
        {
            int ix = 2 * j - padding;
            even[j] = (uint)ix < (uint)width ? row[ix] : 0f;
            odd[j] = (uint)(ix + 1) < (uint)width ? row[ix + 1] : 0f;
        }
    }

    // panel[p][0 .. width) for tap p = (ci, ky, kx): split row (row0 + ky) of channel ci, half
    // kx % 2, from column ox + kx / 2.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FillPanel(in Shape s, float* split, int splitRows, int row0, int ox, int width, float* panel)
    {
        int length = s.RowLength;
        float* d = panel;
        for (int ci = 0; ci < s.CIn; ci++)
        {
            for (int ky = 0; ky < s.KernelH; ky++)
            {
                float* rowPair = split + ((long)(ci * splitRows + row0 + ky) * 2) * length + ox;
                for (int kx = 0; kx < s.KernelW; kx++)
                {
                    float* source = rowPair + (kx & 1) * length + (kx >> 1);
                    for (int v = 0; v < width; v += 8)
                    {
                        Vector256.Store(Vector256.Load(source + v), d + v);
                    }
                    d += PanelColumns;
                }
            }
        }
    }
}

/// <summary>A max pooling window applied to a convolution's output (see <see cref="StemConvolution.Forward"/>): square, with the pooled size.</summary>
public readonly record struct PoolWindow(int Kernel, int Stride, int Padding, int OutH, int OutW)
{
    internal void Check(int height, int width)
    {
        if (Kernel < 1 || Stride < 1 || Padding < 0 || Padding > Kernel / 2 || OutH < 1 || OutW < 1
            || (OutH - 1) * Stride - Padding >= height || (OutW - 1) * Stride - Padding >= width)
        {
            throw new ArgumentException($"Pooling {height} x {width} with a {Kernel}x{Kernel}/{Stride} window, padding {Padding}, cannot give {OutH} x {OutW}.");
        }
    }
}
