using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Stride-1 convolutions with large kernels (the 5x5 layers of the paper and d2l presets) over a
/// channel-major batch, with output pixels as the GEMM micro-kernel's rows and output channels
/// as its columns: the weights, transposed once per call, are the B panels, and six consecutive
/// pixels of an output row are the A panel, one six-float copy per tap out of a zero-padded
/// copy of the input.
/// </summary>
/// <remarks>
/// The implicit GEMM takes channels as rows and pixels as columns, so its packed operand is the
/// im2col matrix, ci*kh*kw x 64 values per panel generated for every 64 pixels and read by only
/// co / 6 micro-tiles (16 at co = 96); with ci x 25 taps and rows of 12 or 6 pixels that
/// generation and its k slices (C read back every 384 taps) held the 5x5 layers at 100-150
/// GFLOP/s. Here the large operand is the weights, packed once, and the whole k sum of a tile
/// stays in registers. The same kernel runs the input gradient as the forward convolution of
/// the output gradient with the kernels transposed and rotated by 180 degrees. Each output is
/// one chain of multiply-adds over (ky, ci, kx) in order, so results do not depend on the
/// thread count; kernel rows that fall in the padding above or below the image are left out of
/// the chain (on 6x6 and 7x7 planes a fifth of the taps: d2l 4a-4e and the paper's 5a-5b forward
/// and input gradients 10-15% faster on the Cascade Lake VM, 12x12 planes 1-2%).
/// </remarks>
public static unsafe class DirectConvolution
{
    private const int Rows = Gemm.TileRows;
    private const int Lanes = Gemm.TileColumns;
    private const int MaxColumns = Gemm.TileColumns * Gemm.MaxTilePanels;

    /// <summary>Whether <see cref="Convolution.ForwardChannelMajor"/> and its input gradient take this kernel where it applies.</summary>
    public static bool Enabled { get; set; } = true;

    // Whether ForwardChannelMajor can run this shape at all (whatever Enabled says). 5x5 and
    // larger: the 3x3 layers run as Winograd or, on planes too small for its tiles, as GEMMs
    // whose im2col is only nine taps deep. Rows of at least six pixels fill the A panel;
    // narrower planes (3x3) would waste half of it.
    public static bool Applies(int kernelH, int kernelW, int stride, int padding, int outW) =>
        stride == 1 && kernelH >= 5 && kernelW >= 5 && padding > 0 && padding < kernelH && padding < kernelW && outW >= Rows;

    /// <summary>
    /// Whether <see cref="Convolution.BackwardChannelMajor"/> runs an input gradient through this
    /// kernel (as the forward convolution of dY, whose shape the arguments give), and, with
    /// <see cref="ChosenForward"/>, whether the forward pass does.
    /// </summary>
    /// <remarks>
    /// Against the implicit GEMM with col2im, on the 2-core Cascade Lake VM (batch 128, d2l's
    /// 5x5 layers): input gradients 50 against 75-77 ms summed over 3a-4e, 3a 5.9 against 12.1.
    /// A row of outW pixels takes ceil(outW / 6) tiles, the last overlapping its neighbour; where
    /// that recomputes more than a tenth (rows of 7, 13, 14) the GEMM measured faster (the paper
    /// preset's 14x14 4e at batch 32: 18.4 against 13.4 ms).
    /// </remarks>
    public static bool Chosen(int batch, int inChannels, int height, int width, int kernelH, int kernelW, int stride, int padding)
    {
        int outW = width + 2 * padding - kernelW + 1;
        return Enabled && Applies(kernelH, kernelW, stride, padding, outW)
            && 10L * ((outW + Rows - 1) / Rows * Rows) <= 11L * outW
            && PaddedFits(batch, inChannels, height, width, padding);
    }

    /// <summary>
    /// <see cref="Chosen"/> for a forward pass to <paramref name="outChannels"/> channels: at
    /// most one 64-channel panel, so each tile is one micro-kernel call. With more, the implicit
    /// GEMM's packed im2col serves enough micro-tiles to beat it (d2l 3b, 32 -> 96 channels:
    /// 18.5-18.8 against 20.7-21.4 ms; 3a, 16 -> 32: 4.2 against 5.3-5.6).
    /// </summary>
    public static bool ChosenForward(int batch, int inChannels, int height, int width, int outChannels, int kernelH, int kernelW, int stride, int padding) =>
        outChannels <= MaxColumns && Chosen(batch, inChannels, height, width, kernelH, kernelW, stride, padding);

    // The zero-padded copy of the input (and its overrun) within one array.
    private static bool PaddedFits(int batch, int inChannels, int height, int width, int padding) =>
        (long)inChannels * batch * (height + 2 * padding) * (width + 2 * padding) + Convolution.ImplicitColumns.Overrun <= Array.MaxLength;

    [ThreadStatic]
    private static float[]? t_weights;

    [ThreadStatic]
    private static float[]? t_tile;

    // input (ci, n, h, w); weight (co, ci, kh, kw), or with transposeAndRotate (ci, co, kh, kw)
    // read as its transposed, 180-degree-rotated kernels; bias and scale (co) or empty;
    // output (co, n, oh, ow) = relu?(conv(input, weight) * scale + bias), stride 1.
    public static void ForwardChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW, int padding,
        bool relu, Span<float> output, ReadOnlySpan<float> scale = default, bool transposeAndRotate = false)
    {
        int outH = height + 2 * padding - kernelH + 1;
        int outW = width + 2 * padding - kernelW + 1;
        if (!Applies(kernelH, kernelW, 1, padding, outW))
        {
            throw new ArgumentException($"The direct kernel takes stride-1 kernels of 5x5 and more with padding under the kernel and output rows of {Rows} or more; got {kernelH}x{kernelW}, padding {padding}, {outW} columns.");
        }
        int taps = inChannels * kernelH * kernelW;
        if (input.Length < (long)inChannels * batch * height * width
            || weight.Length < (long)outChannels * taps
            || output.Length < (long)outChannels * batch * outH * outW
            || (!bias.IsEmpty && bias.Length < outChannels) || (!scale.IsEmpty && scale.Length < outChannels))
        {
            throw new ArgumentException($"The direct convolution {inChannels} x {batch} x {height} x {width} -> {outChannels} x {outH} x {outW} got too short a span.");
        }
        if (!PaddedFits(batch, inChannels, height, width, padding))
        {
            throw new ArgumentException($"The zero-padded copy of a {inChannels} x {batch} x {height} x {width} input (padding {padding}) would exceed one array.");
        }

        // B (taps, columns): row p = (ky, ci, kx) holds that tap's weight for every output
        // channel, zero past the last.
        int columns = (outChannels + Lanes - 1) / Lanes * Lanes;
        long packedLength = (long)taps * columns;
        if (t_weights is null || t_weights.Length < packedLength)
        {
            t_weights = GC.AllocateUninitializedArray<float>(checked((int)packedLength), pinned: true);
        }
        fixed (float* x = input, w = weight, y = output, pBias = bias, pScale = scale)
        {
            float* b = (float*)Unsafe.AsPointer(ref t_weights[0]);
            PackWeights(w, outChannels, inChannels, kernelH, kernelW, transposeAndRotate, columns, b);
            float* padded = Convolution.PadImages(x, batch, inChannels, height, width, 1, padding, force: true);
            var s = new Shape(batch, inChannels, height + 2 * padding, width + 2 * padding, padding, outChannels, kernelH, kernelW,
                outH, outW, columns, (nint)b, bias.IsEmpty ? 0 : (nint)pBias, scale.IsEmpty ? 0 : (nint)pScale, relu);
            Parallelism.For(batch * outH, (long)outW * taps * columns, (s, padded: (nint)padded, y: (nint)y),
                static (t, start, count) => RunRows(t.s, (float*)t.padded, (float*)t.y, start, count));
        }
    }

    private readonly record struct Shape(
        int Batch, int CIn, int PaddedH, int PaddedW, int Padding, int COut, int KernelH, int KernelW, int OutH, int OutW,
        int Columns, nint Weights, nint Bias, nint Scale, bool Relu)
    {
        public int Taps => CIn * KernelH * KernelW;
    }

    // b[p * columns + co] = w[co][ci][ky][kx] for p = (ky, ci, kx); transposed and rotated,
    // w[ci][co][kh - 1 - ky][kw - 1 - kx] with co counting the stored kernels' input channels.
    // Kernel rows outermost, so that the taps of the kernel rows an output row keeps inside the
    // image are one run of k.
    private static void PackWeights(float* w, int outChannels, int inChannels, int kernelH, int kernelW, bool transposeAndRotate,
        int columns, float* b)
    {
        int window = kernelH * kernelW;
        for (int ky = 0; ky < kernelH; ky++)
        {
            for (int ci = 0; ci < inChannels; ci++)
            {
                for (int kx = 0; kx < kernelW; kx++)
                {
                    int tap = ky * kernelW + kx;
                    float* row = b + (((long)ky * inChannels + ci) * kernelW + kx) * columns;
                    for (int co = 0; co < outChannels; co++)
                    {
                        row[co] = transposeAndRotate
                            ? w[((long)ci * outChannels + co) * window + window - 1 - tap]
                            : w[((long)co * inChannels + ci) * window + tap];
                    }
                    new Span<float>(row + outChannels, columns - outChannels).Clear();
                }
            }
        }
    }

    // Units [start, start + count): unit = image * outH + output row.
    private static void RunRows(in Shape s, float* padded, float* y, int start, int count)
    {
        int taps = s.Taps;
        // A panel: six pixels' values per tap, plus the slack of the last eight-float copy.
        int tileLength = taps * Rows + 8 + Rows * MaxColumns;
        if (t_tile is null || t_tile.Length < tileLength)
        {
            t_tile = GC.AllocateUninitializedArray<float>(tileLength, pinned: true);
        }
        float* a = (float*)Unsafe.AsPointer(ref t_tile[0]);
        float* c = a + taps * Rows + 8;
        float* b = (float*)s.Weights;
        float* bias = (float*)s.Bias;
        float* scale = (float*)s.Scale;
        long paddedPlane = (long)s.PaddedH * s.PaddedW;
        long outPlane = (long)s.OutH * s.OutW;
        int rowTaps = s.CIn * s.KernelW;
        int padding = s.Padding;
        for (int unit = start; unit < start + count; unit++)
        {
            int image = unit / s.OutH;
            int oy = unit % s.OutH;
            // Kernel rows [ky0, ky1) fall inside the image; the others multiply the zero border
            // and are skipped (on the 6x6 planes of d2l's 4a-4e, a fifth of the taps).
            int ky0 = Math.Max(0, padding - oy);
            int ky1 = Math.Min(s.KernelH, s.PaddedH - padding - oy);
            int k = (ky1 - ky0) * rowTaps;
            float* rowWeights = b + (long)ky0 * rowTaps * s.Columns;
            // The last tile of a row starts early enough to stay inside it (6 <= outW), so it
            // recomputes a few pixels rather than reading past the row.
            for (int ox = 0; ox < s.OutW; ox += Rows)
            {
                int ox0 = Math.Min(ox, s.OutW - Rows);
                PackPixels(s, padded + (long)image * paddedPlane + (long)(oy + ky0) * s.PaddedW + ox0, paddedPlane * s.Batch, ky1 - ky0, a);
                for (int co0 = 0; co0 < s.COut; co0 += MaxColumns)
                {
                    int width = Math.Min(MaxColumns, s.Columns - co0);
                    Gemm.MicroKernel(width / Lanes, k, a, rowWeights + co0, s.Columns, c, MaxColumns);
                    Store(s, c, Math.Min(MaxColumns, s.COut - co0), co0, y + (long)image * outPlane + (long)oy * s.OutW, outPlane * s.Batch,
                        ox0, ox - ox0, bias, scale);
                }
            }
        }
    }

    // a[p * 6 + r] = the input under tap p = (ky, ci, kx) of pixel r, ky < kernelRows counted from
    // the first row packed: padded[ci][oy + ky][ox0 + r + kx], six consecutive values of a padded
    // row (origin points at [0][oy][ox0] of the image, oy that first row's). Read a channel at a
    // time: the channels' planes lie a page or more apart, and walking them once per kernel row
    // missed the TLB (d2l 3b's 96-channel input gradient ran 3% slower).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackPixels(in Shape s, float* origin, long channelStride, int kernelRows, float* a)
    {
        long kernelRowStride = (long)s.CIn * s.KernelW * Rows;
        for (int ci = 0; ci < s.CIn; ci++)
        {
            float* channel = origin + ci * channelStride;
            float* target = a + ci * s.KernelW * Rows;
            for (int ky = 0; ky < kernelRows; ky++)
            {
                float* row = channel + (long)ky * s.PaddedW;
                float* d = target + ky * kernelRowStride;
                for (int kx = 0; kx < s.KernelW - 1; kx++)
                {
                    // Eight floats where six are needed: the next tap overwrites the two extra.
                    Vector256.Store(Vector256.Load(row + kx), d);
                    d += Rows;
                }
                // The row's last tap: its next tap is the next channel's, written later, but the
                // last channel's is the next kernel row's first, written already.
                float* last = row + s.KernelW - 1;
                Vector128.Store(Vector128.Load(last), d);
                d[4] = last[4];
                d[5] = last[5];
            }
        }
    }

    // Pixels [first, 6) of the tile c (6 x 64, pixel-major) to channels [co0, co0 + channels) of
    // the output row, through the epilogue.
    private static void Store(in Shape s, float* c, int channels, int co0, float* rowOrigin, long channelStride, int ox0, int first,
        float* bias, float* scale)
    {
        for (int j = 0; j < channels; j++)
        {
            int co = co0 + j;
            float multiply = scale == null ? 1f : scale[co];
            float add = bias == null ? 0f : bias[co];
            float* target = rowOrigin + co * channelStride + ox0;
            for (int r = first; r < Rows; r++)
            {
                float v = c[r * MaxColumns + j] * multiply + add;
                target[r] = s.Relu ? MathF.Max(v, 0f) : v;
            }
        }
    }
}
