using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>Max, average and adaptive-average pooling over NCHW planes, with PyTorch's window rules.</summary>
public static class Pooling
{
    // input (planes, h, w); output (planes, oh, ow). Padding never wins (it is -infinity), and a
    // NaN anywhere in the window makes the output NaN, as in PyTorch (Max propagates NaN).
    // Strides 1 and 2 pool a group of outputs per step from a padded copy of the plane
    // (MaxPlanesVector): on the Cascade Lake VM, alternating, it beat the separable passes below
    // on wide rows too (torchvision's maxpool2 at batch 32, 56 columns: 10.5 -> 8.8 ms; d2l's
    // maxpool1 in inference, 48 columns: 13.7 -> 8.6). Other strides are separable: the window's
    // rows are reduced first with whole-row vector maxima, then each output takes the maximum of
    // its columns in that row.
    public static unsafe void MaxForward(
        ReadOnlySpan<float> input, int planes, int height, int width,
        int kernel, int stride, int padding, int outH, int outW, Span<float> output)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        if (input.Length < planes * inPlane || output.Length < planes * outPlane)
        {
            throw new ArgumentException($"Max pooling over {planes} planes of {height}x{width} -> {outH}x{outW} got spans that are too short.");
        }
        if (Avx2.IsSupported && IsCentred(kernel, stride, padding))
        {
            fixed (float* inputPointer = input, outputPointer = output)
            {
                MaxPlanesCentred(inputPointer, planes, height, width, kernel, padding, outputPointer);
            }
            return;
        }
        if (Avx2.IsSupported && (stride == 1 || stride == 2))
        {
            fixed (float* inputPointer = input, outputPointer = output)
            {
                MaxPlanesVector<WithoutArgmax>(inputPointer, planes, height, width, kernel, stride, padding, outH, outW, outputPointer, null);
            }
            return;
        }
        Span<float> rowMax = width <= 1024 ? stackalloc float[width] : new float[width];
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<float> x = input.Slice(p * inPlane, inPlane);
            Span<float> y = output.Slice(p * outPlane, outPlane);
            for (int oy = 0; oy < outH; oy++)
            {
                int y0 = Math.Max(oy * stride - padding, 0);
                int y1 = Math.Min(oy * stride - padding + kernel, height);
                x.Slice(y0 * width, width).CopyTo(rowMax);
                for (int iy = y0 + 1; iy < y1; iy++)
                {
                    TensorPrimitives.Max(rowMax, x.Slice(iy * width, width), rowMax);
                }
                Span<float> dst = y.Slice(oy * outW, outW);
                // Outputs whose window lies inside the row: [first, last).
                int first = stride == 1 ? Math.Min(padding, outW) : outW;
                int last = stride == 1 ? Math.Max(first, Math.Min(outW, width - kernel + padding + 1)) : outW;
                if (last > first)
                {
                    Span<float> inner = dst.Slice(first, last - first);
                    rowMax.Slice(first - padding, inner.Length).CopyTo(inner);
                    for (int j = 1; j < kernel; j++)
                    {
                        TensorPrimitives.Max(inner, rowMax.Slice(first - padding + j, inner.Length), inner);
                    }
                }
                for (int ox = 0; ox < outW; ox++)
                {
                    if (ox == first && last > first)
                    {
                        ox = last - 1;
                        continue;
                    }
                    int x0 = Math.Max(ox * stride - padding, 0);
                    int x1 = Math.Min(ox * stride - padding + kernel, width);
                    float best = float.NegativeInfinity;
                    for (int ix = x0; ix < x1; ix++)
                    {
                        best = MathF.Max(best, rowMax[ix]);
                    }
                    dst[ox] = best;
                }
            }
        }
    }

    // Stride 1 with the window centred on its output (the Inception blocks' pool branch, 3x3
    // padding 1): output planes have the input's shape.
    private static bool IsCentred(int kernel, int stride, int padding) => stride == 1 && kernel == 2 * padding + 1;

    [ThreadStatic]
    private static float[]? t_centredPlanes;

    [ThreadStatic]
    private static int[]? t_centredMasks;

    // A centred window pools each plane as one flat run of vectors that ignores row ends: first
    // over the window's rows (whole rows apart in the run), then over its columns, where taps
    // that would cross a row end are masked to -infinity. Every lane of the run is an output
    // whatever the width (rows of 12 cost two groups of eight row by row, 7 cost one for 7 outputs),
    // and nothing is done per row. The passes use the plain max instruction; a plane holding a
    // NaN is pooled by the row-by-row kernel instead, which propagates it.
    private static unsafe void MaxPlanesCentred(float* input, int planes, int height, int width, int kernel, int padding, float* output)
    {
        int plane = height * width;
        int run = (plane + 7) / 8 * 8;
        int reach = padding * width;
        // The plane's copy with -infinity rows above and below it (and past its end), and the
        // row maxima with room for the column taps either side.
        float[] scratch = CentredScratch(run, reach, padding, out int copyStart, out int rowsStart, out int size);
        int taps = kernel - 1;
        int[] masks = ColumnTapMasks(width, padding, run);
        Vector256<float> negativeInfinity = Vector256.Create(float.NegativeInfinity);
        fixed (float* scratchPointer = scratch)
        fixed (int* maskPointer = masks)
        {
            new Span<float>(scratchPointer, size).Fill(float.NegativeInfinity);
            float* copy = scratchPointer + copyStart;
            float* rows = scratchPointer + rowsStart;
            for (int p = 0; p < planes; p++)
            {
                float* x = input + (long)p * plane;
                float* y = output + (long)p * plane;
                if (CopyFindingNaN(x, plane, copy))
                {
                    MaxPlanesVector<WithoutArgmax>(x, 1, height, width, kernel, 1, padding, height, width, y, null);
                    continue;
                }
                for (int i = 0; i < run; i += 8)
                {
                    Vector256<float> best = Avx.LoadVector256(copy + i);
                    for (int shift = width; shift <= reach; shift += width)
                    {
                        best = Vector256.MaxNative(best, Avx.LoadVector256(copy + i - shift));
                        best = Vector256.MaxNative(best, Avx.LoadVector256(copy + i + shift));
                    }
                    best.Store(rows + i);
                }
                for (int i = 0; i < run; i += 8)
                {
                    Vector256<float> best = Avx.LoadVector256(rows + i);
                    for (int t = 0; t < taps; t++)
                    {
                        int dx = ColumnTap(t, padding);
                        Vector256<float> inside = Avx.LoadVector256(maskPointer + t * run + i).AsSingle();
                        best = Vector256.MaxNative(best, Vector256.ConditionalSelect(inside, Avx.LoadVector256(rows + i + dx), negativeInfinity));
                    }
                    if (i + 8 <= plane)
                    {
                        best.Store(y + i);
                    }
                    else
                    {
                        Avx.MaskStore(y + i, LanesBelow(plane - i).AsSingle(), best);
                    }
                }
            }
        }
    }

    // copy[0, plane) = x, then -infinity up to the next whole vector; whether x holds a NaN.
    private static unsafe bool CopyFindingNaN(float* x, int plane, float* copy)
    {
        Vector256<float> nan = Vector256<float>.Zero;
        for (int i = 0; i < plane; i += 8)
        {
            Vector256<float> v = i + 8 <= plane
                ? Avx.LoadVector256(x + i)
                : Vector256.ConditionalSelect(LanesBelow(plane - i).AsSingle(),
                    Avx.MaskLoad(x + i, LanesBelow(plane - i).AsSingle()), Vector256.Create(float.NegativeInfinity));
            nan |= Vector256.IsNaN(v);
            v.Store(copy + i);
        }
        return nan != Vector256<float>.Zero;
    }

    // The calling thread's scratch for the two passes of a centred window: the plane's copy and
    // then the first pass's result, each a run with its slack (and a vector) before and after it.
    private static float[] CentredScratch(int run, int copySlack, int rowsSlack, out int copyStart, out int rowsStart, out int size)
    {
        copyStart = copySlack + 8;
        rowsStart = copyStart + run + copySlack + 8 + rowsSlack + 8;
        size = rowsStart + run + rowsSlack + 8;
        return t_centredPlanes is { } cached && cached.Length >= size
            ? cached
            : t_centredPlanes = GC.AllocateUninitializedArray<float>(Math.Max(size, 4096));
    }

    // Column tap t of a centred window (its columns but the centre: leftwards from the centre,
    // then rightwards) is dx away.
    private static int ColumnTap(int t, int padding) => t < padding ? -(t + 1) : t - padding + 1;

    // masks[t * run + i]: -1 where column tap t of output i of a flat run lies inside i's row.
    private static int[] ColumnTapMasks(int width, int padding, int run)
    {
        int taps = 2 * padding;
        int[] masks = t_centredMasks is { } cached && cached.Length >= taps * run
            ? cached
            : t_centredMasks = new int[Math.Max(taps * run, 1024)];
        for (int t = 0; t < taps; t++)
        {
            int dx = ColumnTap(t, padding);
            for (int i = 0; i < run; i++)
            {
                int column = i % width + dx;
                masks[t * run + i] = column >= 0 && column < width ? -1 : 0;
            }
        }
        return masks;
    }

    [ThreadStatic]
    private static int[]? t_centredIndices;

    // The centred window with the first maximum's index, as MaxPlanesVector<WithArgmax> records
    // it: the first in row-major order. Columns are pooled first, then rows, so that the row
    // decides first and the column within it second. Each pass starts from the window's centre
    // (always inside the plane), takes taps before the centre on ties (>=, nearest first, so the
    // furthest of equal ones wins) and taps after it only when greater. Taps outside the plane
    // read NaN, which no comparison takes; NaN planes go to the row-by-row kernel.
    private static unsafe void MaxPlanesCentredIndexed(float* input, int planes, int height, int width, int kernel, int padding, float* output, int* indices)
    {
        int plane = height * width;
        int run = (plane + 7) / 8 * 8;
        int reach = padding * width;
        float[] scratch = CentredScratch(run, padding, reach, out int copyStart, out int rowsStart, out int size);
        int[] rowIndices = t_centredIndices is { } cachedIndices && cachedIndices.Length >= size
            ? cachedIndices
            : t_centredIndices = GC.AllocateUninitializedArray<int>(Math.Max(size, 4096));
        int taps = kernel - 1;
        int[] masks = ColumnTapMasks(width, padding, run);
        Vector256<float> notANumber = Vector256.Create(float.NaN);
        Vector256<int> lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        fixed (float* scratchPointer = scratch)
        fixed (int* maskPointer = masks, rowIndexPointer = rowIndices)
        {
            new Span<float>(scratchPointer, size).Fill(float.NaN);
            float* copy = scratchPointer + copyStart;
            float* rows = scratchPointer + rowsStart;
            int* where = rowIndexPointer + rowsStart;
            for (int p = 0; p < planes; p++)
            {
                float* x = input + (long)p * plane;
                float* y = output + (long)p * plane;
                int* argmax = indices + (long)p * plane;
                if (CopyFindingNaN(x, plane, copy))
                {
                    MaxPlanesVector<WithArgmax>(x, 1, height, width, kernel, 1, padding, height, width, y, argmax);
                    continue;
                }
                // Each row's window: its best value and the flat index of its first maximum.
                for (int i = 0; i < run; i += 8)
                {
                    Vector256<float> best = Avx.LoadVector256(copy + i);
                    Vector256<int> at = lanes + Vector256.Create(i);
                    for (int t = 0; t < taps; t++)
                    {
                        int dx = ColumnTap(t, padding);
                        Vector256<float> inside = Avx.LoadVector256(maskPointer + t * run + i).AsSingle();
                        Vector256<float> v = Vector256.ConditionalSelect(inside, Avx.LoadVector256(copy + i + dx), notANumber);
                        Vector256<float> take = dx < 0 ? Vector256.GreaterThanOrEqual(v, best) : Vector256.GreaterThan(v, best);
                        best = Vector256.ConditionalSelect(take, v, best);
                        at = Vector256.ConditionalSelect(take.AsInt32(), lanes + Vector256.Create(i + dx), at);
                    }
                    if (i + 8 > plane)
                    {
                        // Past the plane's end: rows that the row pass must not take.
                        best = Vector256.ConditionalSelect(LanesBelow(plane - i).AsSingle(), best, notANumber);
                    }
                    best.Store(rows + i);
                    at.Store(where + i);
                }
                for (int i = 0; i < run; i += 8)
                {
                    Vector256<float> best = Avx.LoadVector256(rows + i);
                    Vector256<int> at = Avx.LoadVector256(where + i);
                    for (int shift = -width; shift >= -reach; shift -= width)
                    {
                        Vector256<float> v = Avx.LoadVector256(rows + i + shift);
                        Vector256<float> take = Vector256.GreaterThanOrEqual(v, best);
                        best = Vector256.ConditionalSelect(take, v, best);
                        at = Vector256.ConditionalSelect(take.AsInt32(), Avx.LoadVector256(where + i + shift), at);
                    }
                    for (int shift = width; shift <= reach; shift += width)
                    {
                        Vector256<float> v = Avx.LoadVector256(rows + i + shift);
                        Vector256<float> take = Vector256.GreaterThan(v, best);
                        best = Vector256.ConditionalSelect(take, v, best);
                        at = Vector256.ConditionalSelect(take.AsInt32(), Avx.LoadVector256(where + i + shift), at);
                    }
                    if (i + 8 <= plane)
                    {
                        best.Store(y + i);
                        at.Store(argmax + i);
                    }
                    else
                    {
                        Vector256<int> mask = LanesBelow(plane - i);
                        Avx.MaskStore(y + i, mask.AsSingle(), best);
                        Avx2.MaskStore(argmax + i, mask, at);
                    }
                }
            }
        }
    }

    // [s0 s2 s4 ... s14]
    internal static unsafe Vector256<float> Evens(float* s)
    {
        Vector256<float> evens = Avx.Shuffle(Avx.LoadVector256(s), Avx.LoadVector256(s + 8), 0b10_00_10_00);
        return Avx2.Permute4x64(evens.AsDouble(), 0b11_01_10_00).AsSingle();
    }

    /// <summary>
    /// Max pooling that also records, for each output, the in-plane index of the first maximum
    /// of its window in row-major order (a NaN counts as the maximum), so the backward pass is a
    /// scatter. Same outputs as <see cref="MaxForward"/>.
    /// </summary>
    public static unsafe void MaxForwardIndexed(
        ReadOnlySpan<float> input, int planes, int height, int width,
        int kernel, int stride, int padding, int outH, int outW, Span<float> output, Span<int> indices)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        if (input.Length < planes * inPlane || output.Length < planes * outPlane || indices.Length < planes * outPlane)
        {
            throw new ArgumentException($"Max pooling over {planes} planes of {height}x{width} -> {outH}x{outW} got spans that are too short.");
        }
        fixed (float* inputPointer = input, outputPointer = output)
        fixed (int* indexPointer = indices)
        {
            if (Avx2.IsSupported && IsCentred(kernel, stride, padding))
            {
                MaxPlanesCentredIndexed(inputPointer, planes, height, width, kernel, padding, outputPointer, indexPointer);
                return;
            }
            if (Avx2.IsSupported && (stride == 1 || stride == 2))
            {
                MaxPlanesVector<WithArgmax>(inputPointer, planes, height, width, kernel, stride, padding, outH, outW, outputPointer, indexPointer);
                return;
            }
            for (int p = 0; p < planes; p++)
            {
                float* x = inputPointer + (long)p * inPlane;
                float* y = outputPointer + (long)p * outPlane;
                int* argmax = indexPointer + (long)p * outPlane;
                for (int oy = 0; oy < outH; oy++)
                {
                    int y0 = Math.Max(oy * stride - padding, 0);
                    int y1 = Math.Min(oy * stride - padding + kernel, height);
                    for (int ox = 0; ox < outW; ox++)
                    {
                        int x0 = Math.Max(ox * stride - padding, 0);
                        int x1 = Math.Min(ox * stride - padding + kernel, width);
                        int where = y0 * width + x0;
                        float best = x[where];
                        for (int iy = y0; iy < y1 && !float.IsNaN(best); iy++)
                        {
                            float* row = x + iy * width;
                            for (int ix = x0; ix < x1; ix++)
                            {
                                float v = row[ix];
                                if (v > best || float.IsNaN(v))
                                {
                                    best = v;
                                    where = iy * width + ix;
                                    if (float.IsNaN(v))
                                    {
                                        break;
                                    }
                                }
                            }
                        }
                        y[oy * outW + ox] = best;
                        argmax[oy * outW + ox] = where;
                    }
                }
            }
        }
    }

    private interface IArgmax
    {
        static abstract bool Records { get; }
    }

    private readonly struct WithArgmax : IArgmax
    {
        public static bool Records => true;
    }

    private readonly struct WithoutArgmax : IArgmax
    {
        public static bool Records => false;
    }

    [ThreadStatic]
    private static float[]? t_paddedPlane;

    // Stride 1 or 2: every output row is computed a group of outputs at a time (16 with AVX-512
    // on rows of more than 8, else 8), the last group partial, from a copy of the plane with -infinity beyond its left and right edges. The loads
    // of every window then stay inside the copy whatever the row's width (the 6x6 and 7x7 planes
    // of the last stages have no window away from an edge), and padding never wins a window:
    // each output starts from the first real cell of its window, which is also PyTorch's argmax
    // when all of them are -infinity.
    private static unsafe void MaxPlanesVector<TArgmax>(
        float* input, int planes, int height, int width, int kernel, int stride, int padding,
        int outH, int outW, float* output, int* indices) where TArgmax : struct, IArgmax
    {
        // Rows of up to eight outputs fit one AVX2 group; a 16-lane group would be half empty.
        bool wide = WideVectors && Avx512F.IsSupported && outW > 8;
        int pitch = wide ? PaddedPitch512(width, kernel, stride, padding, outW) : PaddedPitch256(width, kernel, stride, padding, outW);
        int size = height * pitch;
        float[] scratch = PaddedPlaneScratch(size);
        int inPlane = height * width;
        int outPlane = outH * outW;
        // Whole-vector stores may run past a row's end into outputs written later; only the
        // last row of the last plane must stop at the end.
        long outputEnd = (long)planes * outPlane;
        fixed (float* padded = scratch)
        {
            new Span<float>(padded, size).Fill(float.NegativeInfinity);
            for (int p = 0; p < planes; p++)
            {
                CopyPaddedRows(input + (long)p * inPlane, height, width, pitch, padding, padded);
                float* y = output + (long)p * outPlane;
                int* argmax = TArgmax.Records ? indices + (long)p * outPlane : null;
                long storeEnd = outputEnd - (long)p * outPlane;
                if (wide)
                {
                    MaxRows512<TArgmax>(padded, 0, pitch, height, width, kernel, stride, padding, 0, outH, outW, y, argmax, storeEnd);
                }
                else
                {
                    MaxRows256<TArgmax>(padded, 0, pitch, height, width, kernel, stride, padding, 0, outH, outW, y, argmax, storeEnd);
                }
            }
        }
    }

    /// <summary>
    /// Whether the windowed max pools take 16 outputs a step with AVX-512 where the CPU has it and
    /// rows have more than 8 outputs (default true) rather than 8 with AVX2; the same maxima and
    /// indices either way.
    /// </summary>
    public static bool WideVectors { get; set; } = true;

    // Room for the loads of the last group (two vectors past its first tap with stride 2) and
    // for whole-vector copies of the rows.
    private static int PaddedPitch512(int width, int kernel, int stride, int padding, int outW) =>
        Math.Max((outW - 1) / 16 * 16 * stride + kernel - 1 + 2 * 16, padding + (width + 7) / 8 * 8);

    // Output rows [oy0, oy1) of one plane (height x width) from padded, a copy of its rows from
    // firstRow on (row iy at padded + (iy - firstRow) * pitch, its column 0 padding floats in,
    // -infinity around it). Whole-vector stores may run past a row's end into outputs written
    // later while they stay below storeEnd outputs from y. 16 outputs a step: stride 2 takes the
    // even lanes of two loads with one permutation. On the Cascade Lake VM (two threads, best of
    // 10, alternating with the AVX2 path) the training pools with indices: d2l (batch 128)
    // maxpool1 12.5 -> 11.4 ms, maxpool2 11.5 -> 8.7, torchvision (batch 32) maxpool1 16.7 ->
    // 14.1; torchvision's inference maxpool3 6.7 -> 5.7. Rows of 3 to 7 outputs (d2l maxpool3 and
    // 4, torchvision maxpool4) ran 12-17% slower, so they keep the AVX2 path.
    private static unsafe void MaxRows512<TArgmax>(
        float* padded, int firstRow, int pitch, int height, int width, int kernel, int stride, int padding,
        int oy0, int oy1, int outW, float* y, int* argmax, long storeEnd) where TArgmax : struct, IArgmax
    {
        const int Group = 16;
        Vector512<int> lanes = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) * stride;
        Vector512<int> evenLanes = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        Vector512<float> negativeInfinity = Vector512.Create(float.NegativeInfinity);
        for (int oy = oy0; oy < oy1; oy++)
        {
            int y0 = Math.Max(oy * stride - padding, 0);
            int y1 = Math.Min(oy * stride - padding + kernel, height);
            for (int ox = 0; ox < outW; ox += Group)
            {
                // Window column of lane 0's first tap; in the copy it sits at ox * stride.
                int column = ox * stride - padding;
                Vector512<float> best = negativeInfinity;
                Vector512<float> nan = Vector512<float>.Zero;
                Vector512<int> where = TArgmax.Records
                    ? Vector512.Create(y0 * width) + Vector512.Max(Vector512.Create(column) + lanes, Vector512<int>.Zero)
                    : default;
                for (int iy = y0; iy < y1; iy++)
                {
                    float* row = padded + (iy - firstRow) * pitch + ox * stride;
                    int rowStart = iy * width + column;
                    for (int j = 0; j < kernel; j++)
                    {
                        Vector512<float> v = stride == 1
                            ? Vector512.Load(row + j)
                            : Avx512F.PermuteVar16x32x2(Vector512.Load(row + j), evenLanes, Vector512.Load(row + j + Group));
                        if (TArgmax.Records)
                        {
                            // v > best, or v is the window's first NaN
                            Vector512<float> take = Vector512.GreaterThan(v, best) |
                                Vector512.AndNot(~Vector512.Equals(v, v), ~Vector512.Equals(best, best));
                            best = Vector512.ConditionalSelect(take, v, best);
                            where = Vector512.ConditionalSelect(take.AsInt32(), Vector512.Create(rowStart + j) + lanes, where);
                        }
                        else
                        {
                            best = Vector512.MaxNative(best, v);
                            nan |= Vector512.IsNaN(v);
                        }
                    }
                }
                if (!TArgmax.Records)
                {
                    best = Vector512.ConditionalSelect(nan, Vector512.Create(float.NaN), best);
                }
                int o = oy * outW + ox;
                if (ox + Group <= outW || o + Group <= storeEnd)
                {
                    best.Store(y + o);
                    if (TArgmax.Records)
                    {
                        where.Store(argmax + o);
                    }
                }
                else
                {
                    Vector512<float> mask = Vector512.LessThan(Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                        Vector512.Create(outW - ox)).AsSingle();
                    Avx512F.MaskStore(y + o, mask, best);
                    if (TArgmax.Records)
                    {
                        Avx512F.MaskStore(argmax + o, mask.AsInt32(), where);
                    }
                }
            }
        }
    }

    // Room for the loads of the last group and for whole-vector copies of the rows.
    private static int PaddedPitch256(int width, int kernel, int stride, int padding, int outW) =>
        Math.Max((outW - 1) / 8 * 8 * stride + kernel - 1 + 8 * stride, padding + (width + 7) / 8 * 8);

    // MaxRows512 with 8 outputs a step.
    private static unsafe void MaxRows256<TArgmax>(
        float* padded, int firstRow, int pitch, int height, int width, int kernel, int stride, int padding,
        int oy0, int oy1, int outW, float* y, int* argmax, long storeEnd) where TArgmax : struct, IArgmax
    {
        Vector256<int> lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * stride;
        Vector256<float> negativeInfinity = Vector256.Create(float.NegativeInfinity);
        for (int oy = oy0; oy < oy1; oy++)
        {
            int y0 = Math.Max(oy * stride - padding, 0);
            int y1 = Math.Min(oy * stride - padding + kernel, height);
            for (int ox = 0; ox < outW; ox += 8)
            {
                // Window column of lane 0's first tap; in the copy it sits at ox * stride.
                int column = ox * stride - padding;
                Vector256<float> best = negativeInfinity;
                Vector256<float> nan = Vector256<float>.Zero;
                Vector256<int> where = TArgmax.Records
                    ? Vector256.Create(y0 * width) + Vector256.Max(Vector256.Create(column) + lanes, Vector256<int>.Zero)
                    : default;
                for (int iy = y0; iy < y1; iy++)
                {
                    float* row = padded + (iy - firstRow) * pitch + ox * stride;
                    int rowStart = iy * width + column;
                    for (int j = 0; j < kernel; j++)
                    {
                        Vector256<float> v = stride == 1 ? Avx.LoadVector256(row + j) : Evens(row + j);
                        if (TArgmax.Records)
                        {
                            // v > best, or v is the window's first NaN
                            Vector256<float> take = Vector256.GreaterThan(v, best) |
                                Vector256.AndNot(~Vector256.Equals(v, v), ~Vector256.Equals(best, best));
                            best = Vector256.ConditionalSelect(take, v, best);
                            where = Vector256.ConditionalSelect(take.AsInt32(), Vector256.Create(rowStart + j) + lanes, where);
                        }
                        else
                        {
                            // The plain instruction, with NaNs tracked on the side:
                            // Vector256.Max's IEEE rules cost four more instructions
                            // on the window's chain of maxima.
                            best = Vector256.MaxNative(best, v);
                            nan |= Vector256.IsNaN(v);
                        }
                    }
                }
                if (!TArgmax.Records)
                {
                    best = Vector256.ConditionalSelect(nan, Vector256.Create(float.NaN), best);
                }
                int o = oy * outW + ox;
                if (ox + 8 <= outW || o + 8 <= storeEnd)
                {
                    best.Store(y + o);
                    if (TArgmax.Records)
                    {
                        where.Store(argmax + o);
                    }
                }
                else
                {
                    Vector256<int> mask = LanesBelow(outW - ox);
                    Avx.MaskStore(y + o, mask.AsSingle(), best);
                    if (TArgmax.Records)
                    {
                        Avx2.MaskStore(argmax + o, mask, where);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Output rows [oy0, oy1) of <see cref="MaxForwardIndexed"/> (stride 1 or 2) for one plane of
    /// which only rows [firstRow, firstRow + rowCount) are at hand, width apart from
    /// <paramref name="rows"/>; they must hold every window of those outputs. For a layer that
    /// pools its output while it is in cache (StemConvolution): the same maxima and indices, by
    /// the same code, as pooling the whole plane. padded (pitch from <see cref="PaddedRowsPitch"/>,
    /// rowCount rows) must be filled with -infinity before the first call; calls keep its edges.
    /// Stores stay inside output rows [oy0, oy1). Needs AVX2.
    /// </summary>
    internal static unsafe void MaxRowsIndexed(
        float* rows, int firstRow, int rowCount, int height, int width, int kernel, int stride, int padding,
        int oy0, int oy1, int outW, float* output, int* indices, float* padded, int pitch)
    {
        Debug.Assert(Avx2.IsSupported && (stride == 1 || stride == 2));
        Debug.Assert(Math.Max(oy0 * stride - padding, 0) >= firstRow
            && Math.Min((oy1 - 1) * stride - padding + kernel, height) <= firstRow + rowCount);
        CopyPaddedRows(rows, rowCount, width, pitch, padding, padded);
        if (WideVectors && Avx512F.IsSupported && outW > 8)
        {
            MaxRows512<WithArgmax>(padded, firstRow, pitch, height, width, kernel, stride, padding, oy0, oy1, outW, output, indices, (long)oy1 * outW);
            return;
        }
        MaxRows256<WithArgmax>(padded, firstRow, pitch, height, width, kernel, stride, padding, oy0, oy1, outW, output, indices, (long)oy1 * outW);
    }

    /// <summary>The row pitch <see cref="MaxRowsIndexed"/> needs.</summary>
    internal static int PaddedRowsPitch(int width, int kernel, int stride, int padding, int outW) =>
        Math.Max(PaddedPitch512(width, kernel, stride, padding, outW), PaddedPitch256(width, kernel, stride, padding, outW));

    // The calling thread's copy of one plane for MaxPlanesVector, filled with -infinity by the caller.
    private static float[] PaddedPlaneScratch(int size) =>
        t_paddedPlane is { } cached && cached.Length >= size
            ? cached
            : t_paddedPlane = GC.AllocateUninitializedArray<float>(Math.Max(size, 4096));

    // The plane's rows into the copy, pitch floats apart and padding floats in; lanes past a row's
    // end load as -infinity, so the copy keeps its edges.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void CopyPaddedRows(float* x, int height, int width, int pitch, int padding, float* padded)
    {
        Vector256<float> negativeInfinity = Vector256.Create(float.NegativeInfinity);
        for (int iy = 0; iy < height; iy++)
        {
            float* source = x + iy * width;
            float* target = padded + iy * pitch + padding;
            for (int c = 0; c < width; c += 8)
            {
                Vector256<float> values = c + 8 <= width
                    ? Avx.LoadVector256(source + c)
                    : Vector256.ConditionalSelect(LanesBelow(width - c).AsSingle(),
                        Avx.MaskLoad(source + c, LanesBelow(width - c).AsSingle()), negativeInfinity);
                values.Store(target + c);
            }
        }
    }

    // All ones in lanes [0, count), zero above.
    private static Vector256<int> LanesBelow(int count) =>
        Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(count));

    /// <summary>
    /// dInput (overwritten) receives each output's gradient at the index MaxForwardIndexed
    /// recorded. With <paramref name="reluPooled"/> (the pooled maxima of a pool whose input is a
    /// ReLU's output) dInput is the gradient with respect to the ReLU's input instead: an output
    /// whose maximum is not positive passes nothing, as the ReLU's gradient at its argmax is zero.
    /// That equals the scatter followed by <see cref="Elementwise.ReluBackward"/> bit for bit,
    /// without its pass over the larger tensor.
    /// </summary>
    public static void MaxBackwardIndexed(
        ReadOnlySpan<int> indices, ReadOnlySpan<float> dOutput, int planes, int inPlane, int outPlane, Span<float> dInput,
        ReadOnlySpan<float> reluPooled = default)
    {
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<int> argmax = indices.Slice(p * outPlane, outPlane);
            ReadOnlySpan<float> dy = dOutput.Slice(p * outPlane, outPlane);
            Span<float> dx = dInput.Slice(p * inPlane, inPlane);
            // Cleared plane by plane, so that the scatter finds it in cache: clearing the whole
            // span first sent it to memory and back (d2l's maxpool1 at batch 128, 75 MB: 13.6 ->
            // 11.3 ms, all four pools 31.5 -> 25.1).
            dx.Clear();
            if (reluPooled.IsEmpty)
            {
                for (int o = 0; o < argmax.Length; o++)
                {
                    dx[argmax[o]] += dy[o];
                }
                continue;
            }
            ReadOnlySpan<float> maxima = reluPooled.Slice(p * outPlane, outPlane);
            for (int o = 0; o < argmax.Length; o++)
            {
                dx[argmax[o]] += maxima[o] > 0f ? dy[o] : 0f;
            }
        }
    }

    /// <summary>
    /// Routes each output gradient to the first input of its window that equals the output (the
    /// first maximum, PyTorch's choice; NaN matches NaN). Overwrites dInput.
    /// </summary>
    public static unsafe void MaxBackward(
        ReadOnlySpan<float> input, ReadOnlySpan<float> output, ReadOnlySpan<float> dOutput, int planes, int height, int width,
        int kernel, int stride, int padding, int outH, int outW, Span<float> dInput)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        if (input.Length < planes * inPlane || dInput.Length < planes * inPlane || output.Length < planes * outPlane || dOutput.Length < planes * outPlane)
        {
            throw new ArgumentException($"Max-pool backward over {planes} planes of {height}x{width} -> {outH}x{outW} got spans that are too short.");
        }
        // Window columns of each output, clipped to the row.
        Span<int> columnStart = outW <= 512 ? stackalloc int[outW] : new int[outW];
        Span<int> columnEnd = outW <= 512 ? stackalloc int[outW] : new int[outW];
        for (int ox = 0; ox < outW; ox++)
        {
            columnStart[ox] = Math.Max(ox * stride - padding, 0);
            columnEnd[ox] = Math.Min(ox * stride - padding + kernel, width);
        }
        fixed (float* inputPointer = input, outputPointer = output, dOutputPointer = dOutput, dInputPointer = dInput)
        fixed (int* x0s = columnStart, x1s = columnEnd)
        {
            for (int p = 0; p < planes; p++)
            {
                float* x = inputPointer + (long)p * inPlane;
                float* dx = dInputPointer + (long)p * inPlane;
                new Span<float>(dx, inPlane).Clear(); // plane by plane, as MaxBackwardIndexed
                float* y = outputPointer + (long)p * outPlane;
                float* dy = dOutputPointer + (long)p * outPlane;
                for (int oy = 0; oy < outH; oy++)
                {
                    int y0 = Math.Max(oy * stride - padding, 0);
                    int y1 = Math.Min(oy * stride - padding + kernel, height);
                    for (int ox = 0; ox < outW; ox++)
                    {
                        int o = oy * outW + ox;
                        int at = FirstMaximum(x, width, y0, y1, x0s[ox], x1s[ox], y[o]);
                        if (at >= 0)
                        {
                            dx[at] += dy[o];
                        }
                    }
                }
            }
        }
    }

    // Index of the first value of the window (row-major) equal to best (NaN matches NaN); -1 if none.
    private static unsafe int FirstMaximum(float* x, int width, int y0, int y1, int x0, int x1, float best)
    {
        if (!float.IsNaN(best))
        {
            for (int iy = y0; iy < y1; iy++)
            {
                float* row = x + (long)iy * width;
                for (int ix = x0; ix < x1; ix++)
                {
                    if (row[ix] == best)
                    {
                        return iy * width + ix;
                    }
                }
            }
            return -1;
        }
        for (int iy = y0; iy < y1; iy++)
        {
            float* row = x + (long)iy * width;
            for (int ix = x0; ix < x1; ix++)
            {
                if (float.IsNaN(row[ix]))
                {
                    return iy * width + ix;
                }
            }
        }
        return -1;
    }

    /// <summary>
    /// Divisor of one average window, PyTorch's way: with count_include_pad the window is clipped
    /// to the padded input (so ceil-mode overhang is not counted), otherwise to the input itself.
    /// </summary>
    private static int AverageDivisor(int o, int stride, int padding, int kernel, int size, bool countIncludePad, out int start, out int end)
    {
        start = o * stride - padding;
        end = Math.Min(start + kernel, size + padding);
        int padded = end - start;
        start = Math.Max(start, 0);
        end = Math.Min(end, size);
        return countIncludePad ? padded : end - start;
    }

    // input (planes, h, w); output (planes, oh, ow)
    public static void AverageForward(
        ReadOnlySpan<float> input, int planes, int height, int width,
        int kernel, int stride, int padding, bool countIncludePad, int outH, int outW, Span<float> output)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<float> x = input.Slice(p * inPlane, inPlane);
            for (int oy = 0; oy < outH; oy++)
            {
                int dy = AverageDivisor(oy, stride, padding, kernel, height, countIncludePad, out int y0, out int y1);
                for (int ox = 0; ox < outW; ox++)
                {
                    int dx = AverageDivisor(ox, stride, padding, kernel, width, countIncludePad, out int x0, out int x1);
                    float sum = 0f;
                    for (int iy = y0; iy < y1; iy++)
                    {
                        for (int ix = x0; ix < x1; ix++)
                        {
                            sum += x[iy * width + ix];
                        }
                    }
                    output[p * outPlane + oy * outW + ox] = sum / (dy * dx);
                }
            }
        }
    }

    /// <summary>Overwrites dInput.</summary>
    public static void AverageBackward(
        ReadOnlySpan<float> dOutput, int planes, int height, int width,
        int kernel, int stride, int padding, bool countIncludePad, int outH, int outW, Span<float> dInput)
    {
        dInput.Clear();
        int inPlane = height * width;
        int outPlane = outH * outW;
        for (int p = 0; p < planes; p++)
        {
            Span<float> dx = dInput.Slice(p * inPlane, inPlane);
            for (int oy = 0; oy < outH; oy++)
            {
                int divY = AverageDivisor(oy, stride, padding, kernel, height, countIncludePad, out int y0, out int y1);
                for (int ox = 0; ox < outW; ox++)
                {
                    int divX = AverageDivisor(ox, stride, padding, kernel, width, countIncludePad, out int x0, out int x1);
                    float g = dOutput[p * outPlane + oy * outW + ox] / (divY * divX);
                    for (int iy = y0; iy < y1; iy++)
                    {
                        for (int ix = x0; ix < x1; ix++)
                        {
                            dx[iy * width + ix] += g;
                        }
                    }
                }
            }
        }
    }

    /// <summary>PyTorch's adaptive window: [floor(o*in/out), ceil((o+1)*in/out)).</summary>
    public static (int Start, int End) AdaptiveWindow(int o, int inSize, int outSize) =>
        (o * inSize / outSize, ((o + 1) * inSize + outSize - 1) / outSize);

    // input (planes, h, w); output (planes, oh, ow)
    public static void AdaptiveAverageForward(
        ReadOnlySpan<float> input, int planes, int height, int width, int outH, int outW, Span<float> output)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        if (outPlane == 1)
        {
            // Global pooling: the window is the whole plane, one contiguous sum.
            for (int p = 0; p < planes; p++)
            {
                output[p] = System.Numerics.Tensors.TensorPrimitives.Sum(input.Slice(p * inPlane, inPlane)) / inPlane;
            }
            return;
        }
        // The windows are the same for every plane; working them out per output took longer than the sums.
        Span<int> windows = outH + outW <= MaxStackWindows ? stackalloc int[2 * (outH + outW)] : new int[2 * (outH + outW)];
        AdaptiveWindows(height, outH, windows[..(2 * outH)]);
        AdaptiveWindows(width, outW, windows[(2 * outH)..]);
        ReadOnlySpan<int> rows = windows[..(2 * outH)], columns = windows[(2 * outH)..];
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<float> x = input.Slice(p * inPlane, inPlane);
            Span<float> y = output.Slice(p * outPlane, outPlane);
            for (int oy = 0; oy < outH; oy++)
            {
                int y0 = rows[2 * oy], y1 = rows[2 * oy + 1];
                for (int ox = 0; ox < outW; ox++)
                {
                    int x0 = columns[2 * ox], x1 = columns[2 * ox + 1];
                    float sum = 0f;
                    for (int iy = y0; iy < y1; iy++)
                    {
                        for (int ix = x0; ix < x1; ix++)
                        {
                            sum += x[iy * width + ix];
                        }
                    }
                    y[oy * outW + ox] = sum / ((y1 - y0) * (x1 - x0));
                }
            }
        }
    }

    /// <summary>Overwrites dInput.</summary>
    public static void AdaptiveAverageBackward(
        ReadOnlySpan<float> dOutput, int planes, int height, int width, int outH, int outW, Span<float> dInput)
    {
        int inPlane = height * width;
        int outPlane = outH * outW;
        if (outPlane == 1)
        {
            for (int p = 0; p < planes; p++)
            {
                dInput.Slice(p * inPlane, inPlane).Fill(dOutput[p] / inPlane);
            }
            return;
        }
        Span<int> windows = outH + outW <= MaxStackWindows ? stackalloc int[2 * (outH + outW)] : new int[2 * (outH + outW)];
        AdaptiveWindows(height, outH, windows[..(2 * outH)]);
        AdaptiveWindows(width, outW, windows[(2 * outH)..]);
        ReadOnlySpan<int> rows = windows[..(2 * outH)], columns = windows[(2 * outH)..];
        dInput[..(planes * inPlane)].Clear();
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<float> dy = dOutput.Slice(p * outPlane, outPlane);
            Span<float> dx = dInput.Slice(p * inPlane, inPlane);
            for (int oy = 0; oy < outH; oy++)
            {
                int y0 = rows[2 * oy], y1 = rows[2 * oy + 1];
                for (int ox = 0; ox < outW; ox++)
                {
                    int x0 = columns[2 * ox], x1 = columns[2 * ox + 1];
                    float g = dy[oy * outW + ox] / ((y1 - y0) * (x1 - x0));
                    for (int iy = y0; iy < y1; iy++)
                    {
                        for (int ix = x0; ix < x1; ix++)
                        {
                            dx[iy * width + ix] += g;
                        }
                    }
                }
            }
        }
    }

    private const int MaxStackWindows = 128;

    // windows[2o], windows[2o + 1] = AdaptiveWindow(o, inSize, outSize).
    private static void AdaptiveWindows(int inSize, int outSize, Span<int> windows)
    {
        for (int o = 0; o < outSize; o++)
        {
            (windows[2 * o], windows[2 * o + 1]) = AdaptiveWindow(o, inSize, outSize);
        }
    }
}
