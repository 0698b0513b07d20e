using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
    public static void Forward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW, int padding,
        int outH, int outW, bool relu, Span<float> output, ReadOnlySpan<float> scale = default, PoolWindow? pool = null)
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
                Parallelism.For(batch * pooledBands, (long)2 * BandRows * outW * taps * padded, (shape, x: (nint)x, y: (nint)y, epilogue, window, pooledBands),
                    static (s, start, count) => RunPooledBands(s.shape, (float*)s.x, s.epilogue, (float*)s.y, s.window, s.pooledBands, start, count));
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

    // The calling thread's split rows, panel and edge tile, and (pooling) a band of
    // convolution rows of every output channel with a row of their maxima.
    private static float* Scratch(in Shape s, int pooledRows, out float* split, out float* panel, out float* edge)
    {
        int splitLength = s.CIn * (2 * BandRows + s.KernelH - 2) * 2 * s.RowLength;
        long needed = splitLength + (long)s.Taps * PanelColumns + Rows * PanelColumns + (long)s.Blocks * Rows * pooledRows * s.OutW + s.OutW;
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
        Scratch(s, 0, out float* split, out float* panel, out float* edge);
        long planeOut = (long)s.OutH * s.OutW;
        for (int unit = start; unit < start + count; unit++)
        {
            int image = unit / bands;
            int oy0 = unit % bands * BandRows;
            int oy1 = Math.Min(s.OutH, oy0 + BandRows);
            ComputeRows(s, x, e, image, oy0, oy1, y + image * planeOut + (long)oy0 * s.OutW, s.Batch * planeOut, split, panel, edge);
        }
    }

    // Units [start, start + count): unit = image * bands + band of BandRows pooled rows. Each
    // band computes the convolution rows its windows cover (one row more than twice its own for
    // a 3x3/2 pool: the row its neighbour shares is computed by both).
    private static void RunPooledBands(in Shape s, float* x, in Epilogue e, float* y, PoolWindow pool, int bands, int start, int count)
    {
        int maxRows = (BandRows - 1) * pool.Stride + pool.Kernel;
        float* rows = Scratch(s, maxRows, out float* split, out float* panel, out float* edge);
        float* rowMax = rows + (long)s.Blocks * Rows * maxRows * s.OutW;
        long channelRows = (long)maxRows * s.OutW;
        long pooledPlane = (long)pool.OutH * pool.OutW;
        var maxima = new Span<float>(rowMax, s.OutW);
        for (int unit = start; unit < start + count; unit++)
        {
            int image = unit / bands;
            int py0 = unit % bands * BandRows;
            int py1 = Math.Min(pool.OutH, py0 + BandRows);
            int r0 = Math.Max(0, py0 * pool.Stride - pool.Padding);
            int r1 = Math.Min(s.OutH, (py1 - 1) * pool.Stride - pool.Padding + pool.Kernel);
            for (int oy = r0; oy < r1; oy += BandRows)
            {
                ComputeRows(s, x, e, image, oy, Math.Min(r1, oy + BandRows), rows + (long)(oy - r0) * s.OutW, channelRows, split, panel, edge);
            }
            for (int co = 0; co < s.COut; co++)
            {
                float* channel = rows + co * channelRows;
                float* target = y + ((long)co * s.Batch + image) * pooledPlane;
                for (int py = py0; py < py1; py++)
                {
                    int y0 = Math.Max(py * pool.Stride - pool.Padding, 0);
                    int y1 = Math.Min(py * pool.Stride - pool.Padding + pool.Kernel, s.OutH);
                    new ReadOnlySpan<float>(channel + (long)(y0 - r0) * s.OutW, s.OutW).CopyTo(maxima);
                    for (int iy = y0 + 1; iy < y1; iy++)
                    {
                        TensorPrimitives.Max(maxima, new ReadOnlySpan<float>(channel + (long)(iy - r0) * s.OutW, s.OutW), maxima);
                    }
                    PoolColumns(maxima, pool, new Span<float>(target + (long)py * pool.OutW, pool.OutW));
                }
            }
        }
    }

    // dst[px] = max of row over columns [px * stride - padding, + kernel) inside the row;
    // NaN wins, as in Pooling.MaxForward.
    private static void PoolColumns(ReadOnlySpan<float> row, PoolWindow pool, Span<float> dst)
    {
        (int first, int last) = pool.Stride == 2 ? Pooling.MaxStride2Columns(row, pool.Kernel, pool.Padding, pool.OutW, dst) : (pool.OutW, pool.OutW);
        for (int px = 0; px < pool.OutW; px++)
        {
            if (px == first && last > first)
            {
                px = last - 1;
                continue;
            }
            int x0 = Math.Max(px * pool.Stride - pool.Padding, 0);
            int x1 = Math.Min(px * pool.Stride - pool.Padding + pool.Kernel, row.Length);
            float best = float.NegativeInfinity;
            for (int ix = x0; ix < x1; ix++)
            {
                best = MathF.Max(best, row[ix]);
            }
            dst[px] = best;
        }
    }

    // Output rows [oy0, oy1) (at most BandRows) of one image, all output channels: row oy of
    // channel co goes to target + co * ldc + (oy - oy0) * outW.
    private static void ComputeRows(in Shape s, float* x, in Epilogue e, int image, int oy0, int oy1, float* target, long ldc,
        float* split, float* panel, float* edge)
    {
        int taps = s.Taps;
        int splitRows = 2 * BandRows + s.KernelH - 2;
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
                float* source = plane + (long)iy * s.Width;
                for (int j = 0; j < length; j++)
                {
                    int ix = 2 * j - s.Padding;
                    even[j] = (uint)ix < (uint)s.Width ? source[ix] : 0f;
                    odd[j] = (uint)(ix + 1) < (uint)s.Width ? source[ix + 1] : 0f;
                }
            }
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
