using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Winograd transforms on narrow planes with the tiles of eight images in the lanes of a vector.
/// </summary>
/// <remarks>
/// In image-row order (<see cref="Segment"/>) a vector holds eight tiles of one tile row, so a
/// 12-wide plane fills six of its lanes with 2x2 tiles and three with 4x4 ones, a 6-wide plane
/// three, and the row splits that feed it run scalar below 16 columns. Interleaved, tile t is
/// (image block, ty, tx, lane) with image = block * 8 + lane: a channel's planes of eight images
/// are transposed a row at a time into a padded plane of vectors (one per pixel, a lane per
/// image), where every tile's inputs are whole vectors at fixed offsets, and the outputs come
/// back through a plane of vectors transposed the other way. The products do not care about the
/// order of the tiles, so only the transforms differ.
/// </remarks>
public static unsafe partial class Winograd
{
    private const int ImageLanes = 8;

    // Interleaving needs whole blocks of eight images and the 8 x 8 transposes (AVX2). The
    // forward pass and input gradient take it on planes at most this wide, the weight gradient
    // on every plane it is possible on. On the Cascade Lake VM (best of 10, alternating) the
    // forward pass, input and weight gradient went: d2l conv3 (64 -> 192, 24x24, batch 128)
    // 47.5, 71.0, 81.5 ms -> 44.5, 64.0, 50.8; torchvision conv3 (56x56, batch 32) 59.3, 87.7,
    // 105.0 -> 71.5, 104.8, 71.5; torchvision 3b (128 -> 192, 28x28) 34.4, 42.9, 46.9 -> 37.5,
    // 44.2, 33.2 (its weight gradient on 4x4 tiles, which interleaved tiles fill).
    internal static int InterleaveMaxWidth { get; set; } = 24;

    /// <summary>Forces interleaved tiles on (true) or off (false) wherever they are possible; null chooses by the width.</summary>
    internal static bool? InterleaveForced { get; set; }

    // The padded planes are held per thread: interleaving is possible on planes up to this side.
    private const int InterleaveMaxSide = 64;

    /// <summary>Whether tiles of this batch and plane run interleaved (for tests).</summary>
    internal static bool Interleaves(int batch, int height, int width, bool weightGradient = false) =>
        LanesFor(batch, height, width, weightGradient) != 0;

    private static int LanesFor(int batch, int height, int width, bool weightGradient = false)
    {
        bool possible = Avx2.IsSupported && batch % ImageLanes == 0 && height <= InterleaveMaxSide && width <= InterleaveMaxSide;
        bool wanted = InterleaveForced ?? (weightGradient || width <= InterleaveMaxWidth);
        return possible && wanted ? ImageLanes : 0;
    }

    [ThreadStatic]
    private static float[]? t_interleavedPlane;

    [ThreadStatic]
    private static float[]? t_interleavedOutput;

    // A plane of vectors for a channel's eight images: pixel (iy, ix) at (iy + Pad) * PlaneWidth
    // + ix + Pad, zero outside the image. Pad 2 covers every tile origin (-1 for 3x3 kernels, -2
    // for 5x5); the width also covers the eight-column stores of GatherRows.
    private const int Pad = 2;

    private static int PlaneWidth(in Shape s, int size) => Math.Max(size * s.TilesWide + 2 * Pad, (s.Width + 7) / 8 * 8 + Pad);

    private static int PlaneRows(in Shape s, int size) => size * s.TilesHigh + 2 * Pad;

    // The calling thread's input plane, cleared: rows and columns outside the image are never
    // written after this, so they stay zero for the whole call.
    private static float[] InterleavedPlane(in Shape s, int size)
    {
        int length = PlaneRows(s, size) * PlaneWidth(s, size) * ImageLanes;
        if (t_interleavedPlane is null || t_interleavedPlane.Length < length)
        {
            t_interleavedPlane = new float[length];
        }
        t_interleavedPlane.AsSpan(0, length).Clear();
        return t_interleavedPlane;
    }

    // Outputs wait here, (oy, ox) at oy * OutputWidth + ox, for their transpose back.
    private static int OutputWidth(in Shape s, int size) => size * s.TilesWide + ImageLanes;

    private static float[] InterleavedOutput(in Shape s, int size)
    {
        int length = size * s.TilesHigh * OutputWidth(s, size) * ImageLanes;
        if (t_interleavedOutput is null || t_interleavedOutput.Length < length)
        {
            t_interleavedOutput = new float[length];
        }
        return t_interleavedOutput;
    }

    // The tiles [first, first + count) (multiples of eight) as runs of tile positions [p0, p1)
    // within one image block; at is the run's first tile less first.
    private static (int Block, int P0, int P1) VectorSegment(in Shape s, int q, int qEnd)
    {
        int positions = s.TilesHigh * s.TilesWide;
        int block = q / positions;
        int p0 = q - block * positions;
        return (block, p0, Math.Min(positions, p0 + qEnd - q));
    }

    // Rows [iy0, iy1) (clipped to the image) of channel c's eight images of the block into the plane.
    private static void GatherRows(in Shape s, float* x, int c, int block, int iy0, int iy1, Vector256<float>* plane, int planeWidth)
    {
        long imagePlane = s.Height * s.Width;
        float* source = x + ((long)c * s.Batch + (long)block * ImageLanes) * imagePlane;
        int last = (s.Width - 1) / 8 * 8;
        // Masked-off columns load as zero and land in the padding, which stays zero.
        Vector256<float> mask = Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(s.Width - last)).AsSingle();
        for (int iy = Math.Max(iy0, 0); iy < Math.Min(iy1, s.Height); iy++)
        {
            float* row = source + (long)iy * s.Width;
            Vector256<float>* target = plane + (iy + Pad) * planeWidth + Pad;
            for (int ix = 0; ix < last; ix += 8)
            {
                float* p = row + ix;
                Vector256<float> r0 = Avx.LoadVector256(p), r1 = Avx.LoadVector256(p + imagePlane);
                Vector256<float> r2 = Avx.LoadVector256(p + 2 * imagePlane), r3 = Avx.LoadVector256(p + 3 * imagePlane);
                Vector256<float> r4 = Avx.LoadVector256(p + 4 * imagePlane), r5 = Avx.LoadVector256(p + 5 * imagePlane);
                Vector256<float> r6 = Avx.LoadVector256(p + 6 * imagePlane), r7 = Avx.LoadVector256(p + 7 * imagePlane);
                Transpose8((float*)(target + ix), 8, r0, r1, r2, r3, r4, r5, r6, r7);
            }
            {
                float* p = row + last;
                Vector256<float> r0 = Avx.MaskLoad(p, mask), r1 = Avx.MaskLoad(p + imagePlane, mask);
                Vector256<float> r2 = Avx.MaskLoad(p + 2 * imagePlane, mask), r3 = Avx.MaskLoad(p + 3 * imagePlane, mask);
                Vector256<float> r4 = Avx.MaskLoad(p + 4 * imagePlane, mask), r5 = Avx.MaskLoad(p + 5 * imagePlane, mask);
                Vector256<float> r6 = Avx.MaskLoad(p + 6 * imagePlane, mask), r7 = Avx.MaskLoad(p + 7 * imagePlane, mask);
                Transpose8((float*)(target + last), 8, r0, r1, r2, r3, r4, r5, r6, r7);
            }
        }
    }

    // Columns [ox0, ox1) of output row oy, from the output plane row, into channel c's eight images of the block.
    private static void ScatterRow(in Shape s, Vector256<float>* outputRow, float* y, int c, int block, int oy, int ox0, int ox1)
    {
        long imagePlane = s.Height * s.Width;
        float* target = y + ((long)c * s.Batch + (long)block * ImageLanes) * imagePlane + (long)oy * s.Width;
        Vector256<float>* r = stackalloc Vector256<float>[ImageLanes];
        for (int ox = ox0; ox < ox1; ox += 8)
        {
            Vector256<float>* o = outputRow + ox;
            int n = Math.Min(8, ox1 - ox);
            float* p = target + ox;
            if (n == 8)
            {
                Transpose8(p, imagePlane, o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]);
                continue;
            }
            Transpose8((float*)r, 8, o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]);
            Vector256<float> mask = Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(n)).AsSingle();
            for (int l = 0; l < ImageLanes; l++)
            {
                Avx.MaskStore(p + l * imagePlane, mask, r[l]);
            }
        }
    }

    // The output rows of tile rows ty0..ty1 that positions [p0, p1) produced, `size` image rows per tile row.
    private static void ScatterTiles(in Shape s, int size, Vector256<float>* output, int outputWidth, float* y, int c, int block, int p0, int p1)
    {
        int ty0 = p0 / s.TilesWide, ty1 = (p1 - 1) / s.TilesWide;
        for (int ty = ty0; ty <= ty1; ty++)
        {
            int tx0 = ty == ty0 ? p0 - ty0 * s.TilesWide : 0;
            int tx1 = ty == ty1 ? p1 - ty1 * s.TilesWide : s.TilesWide;
            for (int row = 0; row < size && size * ty + row < s.Height; row++)
            {
                int oy = size * ty + row;
                ScatterRow(s, output + oy * outputWidth, y, c, block, oy, size * tx0, Math.Min(size * tx1, s.Width));
            }
        }
    }

    // d[k * stride + l] = r_l[k]: the 8 x 8 block transposed, its rows stride floats apart.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(float* d, long stride,
        Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7)
    {
        Gemm.Transpose8x8(r0, r1, r2, r3, r4, r5, r6, r7,
            out var o0, out var o1, out var o2, out var o3, out var o4, out var o5, out var o6, out var o7);
        Avx.Store(d, o0);
        Avx.Store(d + stride, o1);
        Avx.Store(d + 2 * stride, o2);
        Avx.Store(d + 3 * stride, o3);
        Avx.Store(d + 4 * stride, o4);
        Avx.Store(d + 5 * stride, o5);
        Avx.Store(d + 6 * stride, o6);
        Avx.Store(d + 7 * stride, o7);
    }

    // A transform of one vector of tiles read from the interleaved plane: Rows rows and columns
    // from (Step * ty + Origin, Step * tx + Origin) give the positions at `at`, positionStride
    // apart; scratch holds 36 vectors.
    private interface IGatheredTiles
    {
        int Step { get; }

        int Origin { get; }

        int Rows { get; }

        void Transform(Vector256<float>* d, int planeWidth, float* at, long positionStride, Vector256<float>* scratch);
    }

    // The tiles [first, first + count) of channels [channel, channel + channels): each channel's
    // rows of a segment gathered once, then every tile of the segment transformed from them.
    private static void GatherAndTransform<TTiles>(in Shape s, TTiles tiles, float* x, float* v, long positionStride,
        int first, int count, int channel, int channels) where TTiles : struct, IGatheredTiles
    {
        int step = tiles.Step, origin = tiles.Origin;
        int planeWidth = PlaneWidth(s, step);
        Vector256<float>* scratch = stackalloc Vector256<float>[36];
        fixed (float* buffer = InterleavedPlane(s, step))
        {
            var plane = (Vector256<float>*)buffer;
            for (int q = first / ImageLanes; q < (first + count) / ImageLanes;)
            {
                var (block, p0, p1) = VectorSegment(s, q, (first + count) / ImageLanes);
                int ty0 = p0 / s.TilesWide, ty1 = (p1 - 1) / s.TilesWide;
                for (int c = channel; c < channel + channels; c++)
                {
                    GatherRows(s, x, c, block, step * ty0 + origin, step * ty1 + origin + tiles.Rows, plane, planeWidth);
                    float* target = v + (long)c * s.Ld + (q * ImageLanes - first);
                    for (int p = p0; p < p1; p++)
                    {
                        int ty = p / s.TilesWide, tx = p - ty * s.TilesWide;
                        Vector256<float>* d = plane + (step * ty + origin + Pad) * planeWidth + step * tx + origin + Pad;
                        tiles.Transform(d, planeWidth, target + (p - p0) * ImageLanes, positionStride, scratch);
                    }
                }
                q += p1 - p0;
            }
        }
    }

    // A transform of one vector of tiles' products into their Size x Size outputs (epilogue
    // applied) in the output plane at d; scratch holds 24 vectors.
    private interface IScatteredTiles
    {
        int Size { get; }

        void Transform(float* at, long positionStride, Vector256<float>* d, int outputWidth,
            Vector256<float> scale, Vector256<float> bias, bool relu, Vector256<float>* scratch);
    }

    // Output channels [channel, channel + channels) of tiles [first, first + count) from their
    // products m[xi][r][t - first]: each segment's outputs transformed into the output plane,
    // then transposed back into the images.
    private static void TransformAndScatter<TTiles>(in Shape s, TTiles tiles, float* m, float* y, int first, int count,
        int channel, int channels, float* bias, float* scale, bool relu) where TTiles : struct, IScatteredTiles
    {
        int size = tiles.Size;
        int outputWidth = OutputWidth(s, size);
        Vector256<float>* scratch = stackalloc Vector256<float>[24];
        fixed (float* buffer = InterleavedOutput(s, size))
        {
            var output = (Vector256<float>*)buffer;
            for (int r = 0; r < channels; r++)
            {
                int c = channel + r;
                Vector256<float> channelScale = Vector256.Create(scale is null ? 1f : scale[c]);
                Vector256<float> channelBias = Vector256.Create(bias is null ? 0f : bias[c]);
                for (int q = first / ImageLanes; q < (first + count) / ImageLanes;)
                {
                    var (block, p0, p1) = VectorSegment(s, q, (first + count) / ImageLanes);
                    float* source = m + (long)r * s.Ld + (q * ImageLanes - first);
                    for (int p = p0; p < p1; p++)
                    {
                        int ty = p / s.TilesWide, tx = p - ty * s.TilesWide;
                        tiles.Transform(source + (p - p0) * ImageLanes, s.MStride, output + size * ty * outputWidth + size * tx, outputWidth,
                            channelScale, channelBias, relu, scratch);
                    }
                    ScatterTiles(s, size, output, outputWidth, y, c, block, p0, p1);
                    q += p1 - p0;
                }
            }
        }
    }

    // F(2x2, 3x3): V = B^T d B for 4 x 4 input tiles at (2ty - 1, 2tx - 1).
    private readonly struct SmallInputTiles : IGatheredTiles
    {
        public int Step => 2;

        public int Origin => -1;

        public int Rows => 4;

        public void Transform(Vector256<float>* d, int planeWidth, float* at, long positionStride, Vector256<float>* scratch)
        {
            // Rows first (B^T d) on the tile's four columns, then columns (. B).
            Small.Vertical(d, planeWidth, out var e0, out var e1, out var e2, out var e3);
            Small.Vertical(d + 2, planeWidth, out var f0, out var f1, out var f2, out var f3);
            Small.Vertical(d + 1, planeWidth, out var o0, out var o1, out var o2, out var o3);
            Small.Vertical(d + 3, planeWidth, out var g0, out var g1, out var g2, out var g3);
            Small.Horizontal(at, positionStride, e0, f0, o0, g0);
            Small.Horizontal(at + 4 * positionStride, positionStride, e1, f1, o1, g1);
            Small.Horizontal(at + 8 * positionStride, positionStride, e2, f2, o2, g2);
            Small.Horizontal(at + 12 * positionStride, positionStride, e3, f3, o3, g3);
        }
    }

    // F(2x2, 3x3) weight gradient: dM = A dY A^T for dY's 2 x 2 tiles at (2ty, 2tx).
    private readonly struct SmallGradientTiles : IGatheredTiles
    {
        public int Step => 2;

        public int Origin => 0;

        public int Rows => 2;

        public void Transform(Vector256<float>* d, int planeWidth, float* at, long positionStride, Vector256<float>* scratch)
        {
            // Row a of the tile: A y = (y0, y0 + y1, y0 - y1, -y1); then the rows likewise.
            Vector256<float> a0 = d[0], a1 = d[1], b0 = d[planeWidth], b1 = d[planeWidth + 1];
            Vector256<float> p0 = a0, p1 = a0 + a1, p2 = a0 - a1, p3 = -a1;
            Vector256<float> q0 = b0, q1 = b0 + b1, q2 = b0 - b1, q3 = -b1;
            GradientRow(at, positionStride, p0, p1, p2, p3);
            GradientRow(at + 4 * positionStride, positionStride, p0 + q0, p1 + q1, p2 + q2, p3 + q3);
            GradientRow(at + 8 * positionStride, positionStride, p0 - q0, p1 - q1, p2 - q2, p3 - q3);
            GradientRow(at + 12 * positionStride, positionStride, -q0, -q1, -q2, -q3);
        }
    }

    // 6 x 6 input tiles: F(4x4, 3x3) steps 4 from -1, F(2x2, 5x5) steps 2 from -2.
    private readonly struct SixInputTiles(int step, int origin) : IGatheredTiles
    {
        public int Step => step;

        public int Origin => origin;

        public int Rows => 6;

        public void Transform(Vector256<float>* d, int planeWidth, float* at, long positionStride, Vector256<float>* rows)
        {
            for (int column = 0; column < 6; column++)
            {
                Vector256<float>* e = d + column;
                Large.InputRows(e[0], e[planeWidth], e[2 * planeWidth], e[3 * planeWidth], e[4 * planeWidth], e[5 * planeWidth],
                    out rows[column], out rows[6 + column], out rows[12 + column],
                    out rows[18 + column], out rows[24 + column], out rows[30 + column]);
            }
            Large.StoreInputColumns(rows, at, positionStride);
        }
    }

    // F(4x4, 3x3) weight gradient: dM = A dY A^T for dY's 4 x 4 tiles at (4ty, 4tx).
    private readonly struct LargeGradientTiles : IGatheredTiles
    {
        public int Step => 4;

        public int Origin => 0;

        public int Rows => 4;

        public void Transform(Vector256<float>* d, int planeWidth, float* at, long positionStride, Vector256<float>* rows)
        {
            for (int r = 0; r < 4; r++)
            {
                Vector256<float>* e = d + r * planeWidth;
                Large.GradientRows(e[0], e[1], e[2], e[3],
                    out rows[6 * r], out rows[6 * r + 1], out rows[6 * r + 2], out rows[6 * r + 3], out rows[6 * r + 4], out rows[6 * r + 5]);
            }
            Large.StoreGradientColumns(rows, at, positionStride);
        }
    }

    // F(2x2, 3x3): Y = A^T M A.
    private readonly struct SmallOutputTiles : IScatteredTiles
    {
        public int Size => 2;

        public void Transform(float* at, long positionStride, Vector256<float>* d, int outputWidth,
            Vector256<float> scale, Vector256<float> bias, bool relu, Vector256<float>* scratch)
        {
            Small.Column(at, positionStride, 0, out var a0, out var b0);
            Small.Column(at, positionStride, 1, out var a1, out var b1);
            Small.Column(at, positionStride, 2, out var a2, out var b2);
            Small.Column(at, positionStride, 3, out var a3, out var b3);
            d[0] = Epilogue(a0 + a1 + a2, scale, bias, relu);
            d[1] = Epilogue(a1 - a2 - a3, scale, bias, relu);
            d[outputWidth] = Epilogue(b0 + b1 + b2, scale, bias, relu);
            d[outputWidth + 1] = Epilogue(b1 - b2 - b3, scale, bias, relu);
        }
    }

    // Y = A^T M A for 6 x 6 tiles giving T.Size x T.Size outputs (4: Large, 2: Five).
    private readonly struct SixOutputTiles<T> : IScatteredTiles where T : struct, ITiles
    {
        public int Size => T.Size;

        public void Transform(float* at, long positionStride, Vector256<float>* d, int outputWidth,
            Vector256<float> scale, Vector256<float> bias, bool relu, Vector256<float>* columns)
        {
            int size = T.Size;
            Large.OutputColumns(size, at, positionStride, columns);
            for (int row = 0; row < size; row++)
            {
                Vector256<float>* z = columns + 6 * row;
                Vector256<float>* o = d + row * outputWidth;
                if (size == 4)
                {
                    Large.OutputRows(z[0], z[1], z[2], z[3], z[4], z[5], out var y0, out var y1, out var y2, out var y3);
                    o[0] = Epilogue(y0, scale, bias, relu);
                    o[1] = Epilogue(y1, scale, bias, relu);
                    o[2] = Epilogue(y2, scale, bias, relu);
                    o[3] = Epilogue(y3, scale, bias, relu);
                }
                else
                {
                    Five.OutputRows(z[0], z[1], z[2], z[3], z[4], z[5], out var y0, out var y1);
                    o[0] = Epilogue(y0, scale, bias, relu);
                    o[1] = Epilogue(y1, scale, bias, relu);
                }
            }
        }
    }
}
