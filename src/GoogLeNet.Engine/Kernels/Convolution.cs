using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>Output size of a convolution or pooling window along one axis (PyTorch's formula).</summary>
public static class WindowMath
{
    public static int OutputSize(int input, int kernel, int stride, int padding, bool ceilMode)
    {
        int span = input + 2 * padding - kernel;
        if (span < 0)
        {
            return 0;
        }
        int output = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1;
        // A window that would start entirely in the right padding is dropped, as in PyTorch.
        if (ceilMode && (output - 1) * stride >= input + padding)
        {
            output--;
        }
        return output;
    }
}

/// <summary>
/// Convolution of one NCHW image as im2col + GEMM: Y[co, p] = W[co, ci*kh*kw] col[ci*kh*kw, p].
/// A 1x1 convolution with stride 1 and no padding reads the image as col directly.
/// </summary>
public static unsafe class Convolution
{
    // Channels are independent in im2col and col2im, so the engine's threads split them.
    private static void Im2ColParallel(
        ReadOnlySpan<float> image, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col)
    {
        int plane = height * width;
        int rows = kernelH * kernelW * outH * outW;
        fixed (float* imagePointer = image)
        fixed (float* colPointer = col)
        {
            Parallelism.For(channels, rows,
                (src: (nint)imagePointer, dst: (nint)colPointer, plane, rows, height, width, kernelH, kernelW, stride, padding, outH, outW),
                static (s, start, count) => Im2Col(
                    new ReadOnlySpan<float>((float*)s.src + (long)start * s.plane, count * s.plane), count, s.height, s.width,
                    s.kernelH, s.kernelW, s.stride, s.padding, s.outH, s.outW,
                    new Span<float>((float*)s.dst + (long)start * s.rows, count * s.rows)));
        }
    }

    private static void Col2ImParallel(
        ReadOnlySpan<float> col, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> image)
    {
        int plane = height * width;
        int rows = kernelH * kernelW * outH * outW;
        fixed (float* imagePointer = image)
        fixed (float* colPointer = col)
        {
            Parallelism.For(channels, rows,
                (dst: (nint)imagePointer, src: (nint)colPointer, plane, rows, height, width, kernelH, kernelW, stride, padding, outH, outW),
                static (s, start, count) =>
                {
                    var part = new Span<float>((float*)s.dst + (long)start * s.plane, count * s.plane);
                    part.Clear();
                    Col2ImAccumulate(new ReadOnlySpan<float>((float*)s.src + (long)start * s.rows, count * s.rows), count,
                        s.height, s.width, s.kernelH, s.kernelW, s.stride, s.padding, s.outH, s.outW, part);
                });
        }
    }

    public static bool IsPointwise(int kernelH, int kernelW, int stride, int padding) =>
        kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0;

    // image is (c, h, w); col is (c*kh*kw, oh*ow), zero where the window is in the padding.
    public static void Im2Col(
        ReadOnlySpan<float> image, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col)
    {
        int plane = height * width;
        int outPixels = outH * outW;
        for (int c = 0; c < channels; c++)
        {
            Im2ColPlane(image.Slice(c * plane, plane), height, width, kernelH, kernelW, stride, padding, outH, outW,
                col.Slice(c * kernelH * kernelW * outPixels), outPixels);
        }
    }

    /// <summary>Scatters col back onto the image; accumulates into <paramref name="image"/>.</summary>
    public static void Col2ImAccumulate(
        ReadOnlySpan<float> col, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> image)
    {
        int plane = height * width;
        int outPixels = outH * outW;
        for (int c = 0; c < channels; c++)
        {
            Col2ImPlaneAccumulate(col.Slice(c * kernelH * kernelW * outPixels), outPixels, height, width,
                kernelH, kernelW, stride, padding, outH, outW, image.Slice(c * plane, plane));
        }
    }

    // Output columns [lo, hi) of a row read input columns ox*stride + ix0 inside [0, width);
    // the rest of the row lies in the padding.
    private static (int Lo, int Hi) InsideColumns(int ix0, int stride, int width, int outW)
    {
        int lo = ix0 >= 0 ? 0 : (-ix0 + stride - 1) / stride;
        int hi = width - 1 - ix0 < 0 ? 0 : Math.Min(outW, (width - 1 - ix0) / stride + 1);
        return (Math.Min(lo, outW), Math.Max(hi, Math.Min(lo, outW)));
    }

    /// <summary>
    /// The im2col matrix of a channel-major batch, (ci*kh*kw) x (images*oh*ow), read a row segment
    /// at a time instead of being stored: the GEMM packs its panels of B straight from the image.
    /// </summary>
    /// <remarks>
    /// With <c>maxPooled</c> (a flag the rows set when they meet a NaN) the matrix is instead the
    /// batch max-pooled 3x3, stride 1, padding 1 (channels x images*h*w: the input of the 1x1
    /// convolution after the Inception block's pool), generated as the GEMM packs it, so the
    /// pooled tensor is never written out and read back.
    /// </remarks>
    internal readonly struct ImplicitColumns(
        float* image, int batch, int first, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, float* padded = null, int* maxPooled = null)
    {
        /// <summary>Floats that <see cref="FillRow"/> may write past dst + count (whole-vector copies of a row's end).</summary>
        public const int Overrun = 16;

        public int Rows => channels * kernelH * kernelW;

        // dst[0, count) = col[k, j0 .. j0 + count); dst[count, count + Overrun) may be
        // overwritten. Called once per row of every packed block, so it walks the output rows by
        // increments and copies with inline vector loops: the rows are short (56 columns and
        // less) and calls or divisions per row would dominate.
        public void FillRow(int k, int j0, int count, float* dst)
        {
            if (maxPooled != null)
            {
                FillRowMaxPooled(k, j0, count, dst);
                return;
            }
            if (padded != null)
            {
                FillRowPadded(k, j0, count, dst);
                return;
            }
            int taps = kernelH * kernelW;
            int ci = k / taps;
            int ky = k % taps / kernelW;
            int kx = k % kernelW;
            int outPixels = outH * outW;
            int ix0 = kx - padding;
            var (lo, hi) = InsideColumns(ix0, stride, width, outW);
            int n = j0 / outPixels;
            int oy = j0 % outPixels / outW;
            int ox0 = j0 % outW;
            float* end = dst + count;
            // d[ox] is output column ox of the current output row.
            float* d = dst - ox0;
            while (d + ox0 < end)
            {
                int ox1 = (int)Math.Min(outW, end - d);
                int iy = oy * stride - padding + ky;
                if ((uint)iy >= (uint)height)
                {
                    Zero(d, ox0, ox1);
                }
                else
                {
                    float* src = image + ((long)(ci * batch + first + n) * height + iy) * width + ix0;
                    int a = Math.Clamp(lo, ox0, ox1);
                    int b = Math.Clamp(hi, a, ox1);
                    Zero(d, ox0, a);
                    if (stride == 1)
                    {
                        int ox = a;
                        for (; ox + 8 <= b; ox += 8)
                        {
                            Vector256.Store(Vector256.Load(src + ox), d + ox);
                        }
                        for (; ox < b; ox++)
                        {
                            d[ox] = src[ox];
                        }
                    }
                    else
                    {
                        GatherStrided(src, stride, d, a, b);
                    }
                    Zero(d, b, ox1);
                }
                d += outW;
                ox0 = 0;
                if (++oy == outH)
                {
                    oy = 0;
                    n++;
                }
            }
        }

        // Stride 1 from the zero-padded copy of the batch (PadImages): every output row of col's
        // row k is outW consecutive floats of one padded row, copied in whole vectors that may
        // run past the row (the next row's copy, or the caller's Overrun, takes the excess).
        private void FillRowPadded(int k, int j0, int count, float* dst)
        {
            int taps = kernelH * kernelW;
            int ci = k / taps;
            int ky = k % taps / kernelW;
            int kx = k % kernelW;
            int outPixels = outH * outW;
            int paddedW = width + 2 * padding;
            int paddedPlane = (height + 2 * padding) * paddedW;
            int n = j0 / outPixels;
            int oy = j0 % outPixels / outW;
            int ox = j0 % outW;
            float* plane = padded + (long)(ci * batch + first + n) * paddedPlane + ky * paddedW + kx;
            float* end = dst + count;
            while (dst < end)
            {
                int length = (int)Math.Min(outW - ox, end - dst);
                float* src = plane + oy * paddedW + ox;
                if (Vector512.IsHardwareAccelerated || Avx512F.IsSupported)
                {
                    for (int c = 0; c < length; c += 16)
                    {
                        Vector512.Store(Vector512.Load(src + c), dst + c);
                    }
                }
                else
                {
                    for (int c = 0; c < length; c += 8)
                    {
                        Vector256.Store(Vector256.Load(src + c), dst + c);
                    }
                }
                dst += length;
                ox = 0;
                if (++oy == outH)
                {
                    oy = 0;
                    plane += paddedPlane;
                }
            }
        }

        // Row k is channel k max-pooled, a plane's run of pixels at a time. With the plain max
        // instruction, which drops a NaN in its first operand: a NaN met in the input raises the
        // flag, and the caller pools that product again with NaN-propagating maxima.
        private void FillRowMaxPooled(int k, int j0, int count, float* dst)
        {
            int plane = height * width;
            int n = j0 / plane;
            int q = j0 % plane;
            float* end = dst + count;
            while (dst < end)
            {
                int run = (int)Math.Min(plane - q, end - dst);
                if (MaxPool3x3Run(image + (long)(k * batch + first + n) * plane, height, width, q, run, dst))
                {
                    *maxPooled = 1;
                }
                dst += run;
                q = 0;
                n++;
            }
        }

        private static void Zero(float* d, int from, int to)
        {
            for (int i = from; i < to; i++)
            {
                d[i] = 0f;
            }
        }
    }

    [ThreadStatic]
    private static float[]? t_padded;

    [ThreadStatic]
    private static float[]? t_poolRun;

    [ThreadStatic]
    private static int[]? t_poolMasks;

    [ThreadStatic]
    private static int t_poolMaskWidth, t_poolMaskPlane;

    // dst[i] = the 3x3 maximum (stride 1, padding 1) around pixel q0 + i of plane (height x width),
    // i < run, with whole-vector stores that may write 7 floats past the run. Returns whether
    // the plane's pixels the run centres on hold a NaN (then dst is not the IEEE maximum).
    // The order of the maxima is Pooling.MaxForward's for a centred window: rows, then columns.
    private static bool MaxPool3x3Run(float* plane, int height, int width, int q0, int run, float* dst)
    {
        int size = height * width;
        int vector = Vector256<float>.Count;
        if (!Avx2.IsSupported)
        {
            return MaxPool3x3RunScalar(plane, height, width, q0, run, dst);
        }
        // maxima[i] = the column maximum at pixel q0 - 1 + i, for i in [0, run + 2).
        int length = run + 2 + 2 * vector;
        if (t_poolRun is null || t_poolRun.Length < length)
        {
            t_poolRun = GC.AllocateUninitializedArray<float>(Math.Max(length, 1024), pinned: true);
        }
        int* masks = PoolMasks(height, width);
        int maskStride = size + vector;
        Vector256<float> negativeInfinity = Vector256.Create(float.NegativeInfinity);
        Vector256<int> lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        Vector256<float> nan = Vector256<float>.Zero;
        float* maxima = (float*)Unsafe.AsPointer(ref t_poolRun[0]);
        int from = Math.Max(q0 - 1, 0);
        int to = Math.Min(q0 + run + 1, size);
        float* m = maxima - (q0 - 1);
        for (int q = from; q < to; q += vector)
        {
            Vector256<float> best;
            if (q >= width && q + vector + width <= size)
            {
                best = Avx.LoadVector256(plane + q);
                nan |= Vector256.IsNaN(best);
                best = Vector256.MaxNative(best, Avx.LoadVector256(plane + q - width));
                best = Vector256.MaxNative(best, Avx.LoadVector256(plane + q + width));
            }
            else
            {
                // The first and last rows: masked loads, which read nothing outside the plane.
                Vector256<int> at = lanes + Vector256.Create(q);
                Vector256<float> inside = Vector256.LessThan(at, Vector256.Create(size)).AsSingle();
                Vector256<float> above = (inside.AsInt32() & Vector256.GreaterThanOrEqual(at, Vector256.Create(width))).AsSingle();
                Vector256<float> below = Vector256.LessThan(at, Vector256.Create(size - width)).AsSingle();
                best = Avx.MaskLoad(plane + q, inside);
                nan |= Vector256.IsNaN(best);
                best = Vector256.MaxNative(best, Vector256.ConditionalSelect(above, Avx.MaskLoad(plane + q - width, above), negativeInfinity));
                best = Vector256.MaxNative(best, Vector256.ConditionalSelect(below, Avx.MaskLoad(plane + q + width, below), negativeInfinity));
            }
            best.Store(m + q);
        }
        for (int i = 0; i < run; i += vector)
        {
            int q = q0 + i;
            Vector256<float> best = Avx.LoadVector256(m + q);
            best = Vector256.MaxNative(best, Vector256.ConditionalSelect(Avx.LoadVector256(masks + q).AsSingle(), Avx.LoadVector256(m + q - 1), negativeInfinity));
            best = Vector256.MaxNative(best, Vector256.ConditionalSelect(Avx.LoadVector256(masks + maskStride + q).AsSingle(), Avx.LoadVector256(m + q + 1), negativeInfinity));
            best.Store(dst + i);
        }
        return nan != Vector256<float>.Zero;
    }

    // Two masks per pixel of a plane (and a vector past it): masks[q] is -1 where pixel q has a
    // left neighbour in its row, masks[stride + q] where it has a right one, stride = size + 8.
    // Rebuilt when the plane's shape changes.
    private static int* PoolMasks(int height, int width)
    {
        int size = height * width;
        int stride = size + Vector256<float>.Count;
        if (t_poolMasks is null || t_poolMasks.Length < 2 * stride || t_poolMaskWidth != width || t_poolMaskPlane != size)
        {
            if (t_poolMasks is null || t_poolMasks.Length < 2 * stride)
            {
                t_poolMasks = GC.AllocateUninitializedArray<int>(2 * stride, pinned: true);
            }
            for (int q = 0; q < stride; q++)
            {
                int column = q % width;
                t_poolMasks[q] = column > 0 ? -1 : 0;
                t_poolMasks[stride + q] = column < width - 1 ? -1 : 0;
            }
            t_poolMaskWidth = width;
            t_poolMaskPlane = size;
        }
        return (int*)Unsafe.AsPointer(ref t_poolMasks[0]);
    }

    private static bool MaxPool3x3RunScalar(float* plane, int height, int width, int q0, int run, float* dst)
    {
        bool nan = false;
        for (int i = 0; i < run; i++)
        {
            int q = q0 + i;
            int y = q / width, x = q % width;
            float best = float.NegativeInfinity;
            for (int iy = Math.Max(y - 1, 0); iy < Math.Min(y + 2, height); iy++)
            {
                for (int ix = Math.Max(x - 1, 0); ix < Math.Min(x + 2, width); ix++)
                {
                    best = MathF.Max(best, plane[iy * width + ix]);
                }
            }
            nan |= float.IsNaN(plane[q]);
            dst[i] = best;
        }
        return nan;
    }

    /// <summary>Whether implicit columns read a zero-padded copy of the batch (stride 1 with padding, the 5x5 layers).</summary>
    public static bool PaddedColumns { get; set; } = true;

    // Stride 1 with padding: the batch (c, n, h, w) copied into zero-bordered planes
    // (c, n, h + 2p, w + 2p) of the calling thread's pinned scratch, so that every output row of
    // col is a plain run of a padded row; ImplicitColumns.Overrun floats past the last plane are
    // readable. Null when the copy does not apply (force: whatever PaddedColumns says).
    internal static float* PadImages(float* image, int batch, int channels, int height, int width, int stride, int padding, bool force = false)
    {
        if ((!PaddedColumns && !force) || stride != 1 || padding == 0)
        {
            return null;
        }
        int paddedW = width + 2 * padding;
        int paddedPlane = (height + 2 * padding) * paddedW;
        long size = (long)channels * batch * paddedPlane + ImplicitColumns.Overrun;
        if (size > Array.MaxLength)
        {
            return null;
        }
        if (t_padded is null || t_padded.Length < size)
        {
            t_padded = GC.AllocateUninitializedArray<float>((int)Math.Max(size, 1 << 16), pinned: true);
        }
        float* padded = (float*)Unsafe.AsPointer(ref t_padded[0]);
        var state = (image: (nint)image, padded: (nint)padded, height, width, padding, paddedW, paddedPlane);
        Parallelism.For(channels * batch, paddedPlane, state, static (s, start, count) =>
        {
            for (int plane = start; plane < start + count; plane++)
            {
                float* target = (float*)s.padded + (long)plane * s.paddedPlane;
                float* source = (float*)s.image + (long)plane * s.height * s.width;
                // Border rows, then each row's left and right borders around its copy.
                new Span<float>(target, s.padding * s.paddedW).Clear();
                new Span<float>(target + (long)(s.height + s.padding) * s.paddedW, s.padding * s.paddedW).Clear();
                for (int y = 0; y < s.height; y++)
                {
                    float* row = target + (long)(y + s.padding) * s.paddedW;
                    new Span<float>(row, s.padding).Clear();
                    new ReadOnlySpan<float>(source + (long)y * s.width, s.width).CopyTo(new Span<float>(row + s.padding, s.width));
                    new Span<float>(row + s.padding + s.width, s.padding).Clear();
                }
            }
        });
        return padded;
    }

    // One channel plane (h, w) into the kh*kw rows of col that belong to it; the rows are
    // colRowStride apart, so a channel-major batch can lay its images side by side in each row.
    private static void Im2ColPlane(
        ReadOnlySpan<float> plane, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col, int colRowStride)
    {
        fixed (float* planePointer = plane)
        fixed (float* colPointer = col)
        {
            for (int ky = 0; ky < kernelH; ky++)
            {
                for (int kx = 0; kx < kernelW; kx++)
                {
                    float* row = colPointer + (long)(ky * kernelW + kx) * colRowStride;
                    int ix0 = kx - padding;
                    var (lo, hi) = InsideColumns(ix0, stride, width, outW);
                    for (int oy = 0; oy < outH; oy++)
                    {
                        int iy = oy * stride - padding + ky;
                        float* dst = row + oy * outW;
                        if ((uint)iy >= (uint)height)
                        {
                            new Span<float>(dst, outW).Clear();
                            continue;
                        }
                        float* src = planePointer + (long)iy * width + ix0;
                        for (int ox = 0; ox < lo; ox++)
                        {
                            dst[ox] = 0f;
                        }
                        if (stride == 1)
                        {
                            new ReadOnlySpan<float>(src + lo, hi - lo).CopyTo(new Span<float>(dst + lo, hi - lo));
                        }
                        else
                        {
                            GatherStrided(src, stride, dst, lo, hi);
                        }
                        for (int ox = hi; ox < outW; ox++)
                        {
                            dst[ox] = 0f;
                        }
                    }
                }
            }
        }
    }

    // dst[ox] = src[ox * stride] for ox in [lo, hi); stride 2 (the 7x7 stem) picks the even
    // lanes of two vectors at a time.
    private static void GatherStrided(float* src, int stride, float* dst, int lo, int hi)
    {
        int ox = lo;
        if (stride == 2 && Avx2.IsSupported)
        {
            for (; ox + 8 <= hi; ox += 8)
            {
                Vector256<float> a = Avx.LoadVector256(src + 2 * ox);
                Vector256<float> b = Avx.LoadVector256(src + 2 * ox + 8);
                // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
                Vector256<float> evens = Avx.Shuffle(a, b, 0b10_00_10_00);
                Avx.Store(dst + ox, Avx2.Permute4x64(evens.AsDouble(), 0b11_01_10_00).AsSingle());
            }
        }
        for (; ox < hi; ox++)
        {
            dst[ox] = src[(long)ox * stride];
        }
    }

    private static void Col2ImPlaneAccumulate(
        ReadOnlySpan<float> col, int colRowStride, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> plane)
    {
        fixed (float* planePointer = plane)
        fixed (float* colPointer = col)
        {
            for (int ky = 0; ky < kernelH; ky++)
            {
                for (int kx = 0; kx < kernelW; kx++)
                {
                    float* row = colPointer + (long)(ky * kernelW + kx) * colRowStride;
                    int ix0 = kx - padding;
                    var (lo, hi) = InsideColumns(ix0, stride, width, outW);
                    for (int oy = 0; oy < outH; oy++)
                    {
                        int iy = oy * stride - padding + ky;
                        if ((uint)iy >= (uint)height)
                        {
                            continue;
                        }
                        float* dst = planePointer + (long)iy * width + ix0;
                        float* src = row + oy * outW;
                        if (stride == 1)
                        {
                            var target = new Span<float>(dst + lo, hi - lo);
                            System.Numerics.Tensors.TensorPrimitives.Add(target, new ReadOnlySpan<float>(src + lo, hi - lo), target);
                            continue;
                        }
                        for (int ox = lo; ox < hi; ox++)
                        {
                            dst[(long)ox * stride] += src[ox];
                        }
                    }
                }
            }
        }
    }

    // input is (n, ci, h, w); weight is (co, ci, kh, kw); bias is (co) or empty; output is (n, co, oh, ow);
    // scale, when not empty, is (co) and multiplies each output channel before the bias.
    // col is scratch of ci*kh*kw*oh*ow floats (unused for pointwise convolutions).
    public static void Forward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW,
        int stride, int padding, int outH, int outW, bool relu, Span<float> col, Span<float> output,
        ReadOnlySpan<float> scale = default)
    {
        int inSize = inChannels * height * width;
        int outPixels = outH * outW;
        int k = inChannels * kernelH * kernelW;
        bool pointwise = IsPointwise(kernelH, kernelW, stride, padding);
        for (int n = 0; n < batch; n++)
        {
            ReadOnlySpan<float> image = input.Slice(n * inSize, inSize);
            ReadOnlySpan<float> b = image;
            if (!pointwise)
            {
                RequireColumns(col, k, outPixels);
                Im2ColParallel(image, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, col);
                b = col.Slice(0, k * outPixels);
            }
            Gemm.Multiply(false, false, outChannels, outPixels, k, weight, k, b, outPixels,
                output.Slice(n * outChannels * outPixels, outChannels * outPixels), outPixels,
                accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
        }
    }

    /// <summary>
    /// Accumulates dWeight and dBias; overwrites dInput unless it is empty (the first layer
    /// needs no input gradient).
    /// </summary>
    public static void Backward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, int kernelH, int kernelW, int stride, int padding,
        int outH, int outW, ReadOnlySpan<float> dOutput, Span<float> col,
        Span<float> dWeight, Span<float> dBias, Span<float> dInput)
    {
        int inSize = inChannels * height * width;
        int outPixels = outH * outW;
        int k = inChannels * kernelH * kernelW;
        bool pointwise = IsPointwise(kernelH, kernelW, stride, padding);
        for (int n = 0; n < batch; n++)
        {
            ReadOnlySpan<float> image = input.Slice(n * inSize, inSize);
            ReadOnlySpan<float> dY = dOutput.Slice(n * outChannels * outPixels, outChannels * outPixels);
            ReadOnlySpan<float> colOfImage = image;
            if (!pointwise)
            {
                RequireColumns(col, k, outPixels);
                Im2ColParallel(image, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, col);
                colOfImage = col.Slice(0, k * outPixels);
            }
            // dW (co, k) += dY (co, p) col^T (p, k)
            Gemm.Multiply(false, true, outChannels, k, outPixels, dY, outPixels, colOfImage, outPixels,
                dWeight, k, accumulate: true);
            if (!dBias.IsEmpty)
            {
                for (int co = 0; co < outChannels; co++)
                {
                    dBias[co] += System.Numerics.Tensors.TensorPrimitives.Sum(dY.Slice(co * outPixels, outPixels));
                }
            }
            if (dInput.IsEmpty)
            {
                continue;
            }
            Span<float> dImage = dInput.Slice(n * inSize, inSize);
            if (pointwise)
            {
                // dX (ci, p) = W^T (ci, co) dY (co, p)
                Gemm.Multiply(true, false, k, outPixels, outChannels, weight, k, dY, outPixels, dImage, outPixels, accumulate: false);
            }
            else
            {
                Gemm.Multiply(true, false, k, outPixels, outChannels, weight, k, dY, outPixels, col, outPixels, accumulate: false);
                Col2ImParallel(col, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, dImage);
            }
        }
    }

    // The im2col passes write col through pointers: a scratch shorter than one image's matrix
    // must be refused before they run.
    private static void RequireColumns(Span<float> col, int rows, int outPixels)
    {
        long needed = (long)rows * outPixels;
        if (col.Length < needed)
        {
            throw new ArgumentException($"The convolution's col scratch must hold one image's im2col matrix, {rows} x {outPixels} = {needed} floats; got {col.Length}.", nameof(col));
        }
    }

    /// <summary>Images of a channel-major batch that one im2col pass of <paramref name="colLength"/> floats holds (at least one).</summary>
    public static int ImagesPerColumnPass(int batch, int inChannels, int kernelH, int kernelW, int outH, int outW, int colLength)
    {
        long perImage = (long)inChannels * kernelH * kernelW * outH * outW;
        return (int)Math.Clamp(colLength / perImage, 1, batch);
    }

    // Channel-major: input is (ci, n, h, w), output (co, n, oh, ow), so the whole batch is one
    // GEMM Y (co, n*oh*ow) = W (co, ci*kh*kw) col (ci*kh*kw, n*oh*ow); the 1x1 convolution reads
    // the input as col. Other kernels read col through ImplicitColumns without storing it, unless
    // the product is narrow enough for the GEMM to read a stored col in place. 3x3 stride-1
    // convolutions run as Winograd F(2x2, 3x3) or F(4x4, 3x3), and 5x5 ones as F(2x2, 5x5),
    // when it pays; winogradWeights (inference) keeps the weights' transform between calls.
    public static void ForwardChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW,
        int stride, int padding, int outH, int outW, bool relu, Span<float> col, Span<float> output,
        ReadOnlySpan<float> scale = default, WinogradWeights? winogradWeights = null)
    {
        int outPixels = outH * outW;
        int columns = batch * outPixels;
        int k = inChannels * kernelH * kernelW;
        if (IsPointwise(kernelH, kernelW, stride, padding))
        {
            Gemm.Multiply(false, false, outChannels, columns, k, weight, k, input, columns, output, columns,
                accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
            return;
        }
        if (input.Length < (long)inChannels * batch * height * width)
        {
            throw new ArgumentException($"A channel-major input of {inChannels} x {batch} x {height} x {width} needs {(long)inChannels * batch * height * width} values, got {input.Length}.");
        }
        if (Winograd.Chosen(kernelH, kernelW, stride, padding, batch, height, width, winogradWeights is not null, inChannels, outChannels))
        {
            Winograd.ForwardChannelMajor(input, batch, inChannels, height, width, weight, bias, outChannels, relu, output, scale, winogradWeights, kernelH);
            return;
        }
        if (DirectConvolution.ChosenForward(batch, inChannels, height, width, outChannels, kernelH, kernelW, stride, padding))
        {
            DirectConvolution.ForwardChannelMajor(input, batch, inChannels, height, width, weight, bias, outChannels, kernelH, kernelW, padding,
                relu, output, scale);
            return;
        }
        if (StemConvolution.Applies(inChannels, kernelH, kernelW, stride, padding))
        {
            StemConvolution.Forward(input, batch, inChannels, height, width, weight, bias, outChannels, kernelH, kernelW, padding,
                outH, outW, relu, output, scale);
            return;
        }
        if (Gemm.ReadsBInPlace(outChannels, columns))
        {
            // Few columns (a small batch): a stored col is read in place, unpacked, which beats
            // generating packed panels.
            RequireColumns(col, k, outPixels);
            int chunk = ImagesPerColumnPass(batch, inChannels, kernelH, kernelW, outH, outW, col.Length);
            for (int n0 = 0; n0 < batch; n0 += chunk)
            {
                int count = Math.Min(chunk, batch - n0);
                Im2ColChannelMajor(input, batch, n0, count, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, col);
                Gemm.Multiply(false, false, outChannels, count * outPixels, k, weight, k, col, count * outPixels,
                    output.Slice(n0 * outPixels), columns, accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
            }
            return;
        }
        fixed (float* image = input)
        {
            float* padded = PadImages(image, batch, inChannels, height, width, stride, padding);
            var source = new ImplicitColumns(image, batch, 0, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, padded);
            Gemm.MultiplyImplicit(outChannels, columns, k, weight, k, source, output, columns, accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
        }
    }

    /// <summary>
    /// A 1x1 convolution of the channel-major batch max-pooled 3x3, stride 1, padding 1 (the
    /// Inception block's pool branch in inference): output (co, n, h, w) = relu?(W (co, ci)
    /// maxpool(input) * scale + bias). The pooled values are generated as the product packs its
    /// panels, never stored; the result equals <see cref="Pooling.MaxForward"/> followed by
    /// <see cref="ForwardChannelMajor"/> bit for bit.
    /// </summary>
    public static void ForwardMaxPooledPointwise(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, bool relu, Span<float> output,
        ReadOnlySpan<float> scale = default)
    {
        long pixels = (long)batch * height * width;
        if (input.Length < inChannels * pixels)
        {
            throw new ArgumentException($"A channel-major input of {inChannels} x {batch} x {height} x {width} needs {inChannels * pixels} values, got {input.Length}.");
        }
        int columns = checked((int)pixels);
        int nanSeen = 0;
        fixed (float* image = input)
        {
            var pooled = new ImplicitColumns(image, batch, 0, inChannels, height, width, 1, 1, 1, 0, height, width, maxPooled: &nanSeen);
            Gemm.MultiplyImplicit(outChannels, columns, inChannels, weight, inChannels, pooled, output, columns,
                accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
        }
        if (Volatile.Read(ref nanSeen) != 0)
        {
            // The plain maxima may have dropped a NaN: pool with the NaN-propagating kernel.
            var pooledInput = new float[inChannels * pixels];
            Pooling.MaxForward(input, inChannels * batch, height, width, 3, 1, 1, height, width, pooledInput);
            Gemm.Multiply(false, false, outChannels, columns, inChannels, weight, inChannels, pooledInput, columns, output, columns,
                accumulate: false, rowBias: bias, relu: relu, rowScale: scale);
        }
    }

    /// <summary>
    /// Backward of <see cref="ForwardChannelMajor"/>: accumulates dWeight and dBias; overwrites
    /// dInput unless it is empty.
    /// </summary>
    public static void BackwardChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, int kernelH, int kernelW, int stride, int padding,
        int outH, int outW, ReadOnlySpan<float> dOutput, Span<float> col,
        Span<float> dWeight, Span<float> dBias, Span<float> dInput)
    {
        int outPixels = outH * outW;
        int columns = batch * outPixels;
        int k = inChannels * kernelH * kernelW;
        if (!dBias.IsEmpty)
        {
            Elementwise.AddChannelSums(dOutput, outChannels, columns, dBias);
        }
        if (IsPointwise(kernelH, kernelW, stride, padding))
        {
            // dW (co, ci) += dY (co, n*p) X^T (n*p, ci); dX (ci, n*p) = W^T (ci, co) dY (co, n*p)
            Gemm.Multiply(false, true, outChannels, k, columns, dOutput, columns, input, columns, dWeight, k, accumulate: true);
            if (!dInput.IsEmpty)
            {
                Gemm.Multiply(true, false, k, columns, outChannels, weight, k, dOutput, columns, dInput, columns, accumulate: false);
            }
            return;
        }
        bool winograd = Winograd.Chosen(kernelH, kernelW, stride, padding, batch, height, width, inChannels: inChannels, outChannels: outChannels);
        if (input.Length < (long)inChannels * batch * height * width)
        {
            throw new ArgumentException($"A channel-major input of {inChannels} x {batch} x {height} x {width} needs {(long)inChannels * batch * height * width} values, got {input.Length}.");
        }
        if (winograd && Winograd.TakesWeightGradient(kernelH, kernelW))
        {
            Winograd.BackwardWeightsChannelMajor(input, batch, inChannels, height, width, dOutput, outChannels, dWeight);
        }
        else if (StemConvolution.TakesWeightGradient(inChannels, outChannels, kernelH, kernelW, stride, padding))
        {
            StemConvolution.BackwardWeights(input, batch, inChannels, height, width, dOutput, outChannels, kernelH, kernelW, padding,
                outH, outW, dWeight);
        }
        else
        {
            // dW (co, ci*kh*kw) += dY (co, n*oh*ow) col^T, col's rows generated while the GEMM
            // packs them rather than written out and read back.
            fixed (float* image = input)
            {
                float* padded = PadImages(image, batch, inChannels, height, width, stride, padding);
                var source = new ImplicitColumns(image, batch, 0, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, padded);
                Gemm.MultiplyImplicitTransposed(outChannels, k, columns, dOutput, columns, source, dWeight, k, accumulate: true);
            }
        }
        if (dInput.IsEmpty)
        {
            return;
        }
        if (winograd)
        {
            Winograd.BackwardDataChannelMajor(dOutput, batch, inChannels, height, width, weight, outChannels, dInput, kernelH);
            return;
        }
        // dX is the forward convolution of dY with the kernels transposed and turned by 180
        // degrees, padded by k - 1 - p, where the direct kernel takes it.
        if (kernelH == kernelW && DirectConvolution.Chosen(batch, outChannels, outH, outW, kernelH, kernelW, stride, kernelH - 1 - padding))
        {
            DirectConvolution.ForwardChannelMajor(dOutput, batch, outChannels, outH, outW, weight, default, inChannels, kernelH, kernelW,
                kernelH - 1 - padding, relu: false, dInput, transposeAndRotate: true);
            return;
        }
        RequireColumns(col, k, outPixels);
        int chunk = ImagesPerColumnPass(batch, inChannels, kernelH, kernelW, outH, outW, col.Length);
        for (int n0 = 0; n0 < batch; n0 += chunk)
        {
            int count = Math.Min(chunk, batch - n0);
            int chunkColumns = count * outPixels;
            ReadOnlySpan<float> dY = dOutput.Slice(n0 * outPixels);
            Gemm.Multiply(true, false, k, chunkColumns, outChannels, weight, k, dY, columns, col, chunkColumns, accumulate: false);
            Col2ImChannelMajor(col, batch, n0, count, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, dInput);
        }
    }

    // Images [first, first + count) of a channel-major (c, n, h, w) input into col
    // (c*kh*kw, count*oh*ow).
    private static void Im2ColChannelMajor(
        ReadOnlySpan<float> input, int batch, int first, int count, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col)
    {
        fixed (float* inputPointer = input)
        fixed (float* colPointer = col)
        {
            ChannelMajorColumns(toColumns: true, inputPointer, input.Length, batch, first, count, channels, height, width,
                kernelH, kernelW, stride, padding, outH, outW, colPointer);
        }
    }

    // The inverse of Im2ColChannelMajor: overwrites the planes of images [first, first + count).
    private static void Col2ImChannelMajor(
        ReadOnlySpan<float> col, int batch, int first, int count, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> image)
    {
        fixed (float* imagePointer = image)
        fixed (float* colPointer = col)
        {
            ChannelMajorColumns(toColumns: false, imagePointer, image.Length, batch, first, count, channels, height, width,
                kernelH, kernelW, stride, padding, outH, outW, colPointer);
        }
    }

    // Both directions walk the same (channel, image) planes; they are independent, and splitting
    // them rather than channels keeps both threads busy when there are few channels (the stem).
    private static void ChannelMajorColumns(
        bool toColumns, float* image, int imageLength, int batch, int first, int count, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, float* col)
    {
        int plane = height * width;
        int outPixels = outH * outW;
        int rowStride = count * outPixels;
        int channelRows = kernelH * kernelW * rowStride;
        var state = (image: (nint)image, imageLength, col: (nint)col, toColumns, batch, first, count, plane, outPixels, rowStride,
            channelRows, height, width, kernelH, kernelW, stride, padding, outH, outW);
        Parallelism.For(channels * count, kernelH * kernelW * outPixels, state, static (s, start, planes) =>
        {
            var whole = new Span<float>((float*)s.image, s.imageLength);
            for (int item = start; item < start + planes; item++)
            {
                int c = item / s.count;
                int i = item % s.count;
                var rows = new Span<float>((float*)s.col + (long)c * s.channelRows + i * s.outPixels, s.channelRows - i * s.outPixels);
                Span<float> target = whole.Slice((c * s.batch + s.first + i) * s.plane, s.plane);
                if (s.toColumns)
                {
                    Im2ColPlane(target, s.height, s.width, s.kernelH, s.kernelW, s.stride, s.padding, s.outH, s.outW, rows, s.rowStride);
                }
                else
                {
                    target.Clear();
                    Col2ImPlaneAccumulate(rows, s.rowStride, s.height, s.width, s.kernelH, s.kernelW, s.stride, s.padding, s.outH, s.outW, target);
                }
            }
        });
    }
}
