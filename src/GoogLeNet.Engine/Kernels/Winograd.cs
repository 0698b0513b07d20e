using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// 3x3 convolution with stride 1 and padding 1 by Winograd's minimal filtering F(2x2, 3x3)
/// (Lavin and Gray, 2015): each 2x2 output tile costs 16 multiplications per channel pair
/// instead of 36. Channel-major tensors (C, N, H, W) only.
/// </summary>
/// <remarks>
/// Y = A^T [ (G g G^T) .* (B^T d B) ] A for a 4x4 input tile d and a 3x3 kernel g, with
/// <code>
/// B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
///       | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
///       | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
///       | 0  1  0 -1 |       | 0    0    1   |
/// </code>
/// The element-wise products summed over input channels are 16 GEMMs, one per position xi of
/// the 4x4 transform: M_xi (co, tiles) = U_xi (co, ci) V_xi (ci, tiles). The transforms only add,
/// subtract and halve, so the result differs from the direct sum by a few float32 roundings
/// (ChannelMajorTests bounds it). Tiles are taken a block of tile rows at a time so that V and M
/// stay in cache between the transform and the GEMMs; each stage splits over its independent
/// rows (input channels, transform positions, output channels), and the GEMMs run one per
/// thread, so results do not depend on the thread count.
/// </remarks>
public static unsafe class Winograd
{
    private const int Positions = 16;

    // V and M of one block together stay under this many floats (8 MiB): blocks of a few hundred
    // tiles, large enough for efficient GEMMs, small enough to come back from cache. Tests shrink
    // it to run many blocks on small tensors.
    internal static int BlockFloats { get; set; } = 1 << 21;

    // Transforms run eight tiles at a time; the last vector of a tile row reaches up to seven
    // tiles past it (plus one for the shifted column streams), so rows carry this much slack.
    private const int Slack = 8;

    [ThreadStatic]
    private static float[]? t_scratch;

    /// <summary>Whether <see cref="Convolution.ForwardChannelMajor"/> and its backward use this kernel where it applies.</summary>
    public static bool Enabled { get; set; } = true;

    public static bool Applies(int kernelH, int kernelW, int stride, int padding) =>
        kernelH == 3 && kernelW == 3 && stride == 1 && padding == 1;

    // input (ci, n, h, w); weight (co, ci, 3, 3); bias (co) or empty; scale (co) or empty;
    // output (co, n, h, w) = relu?(conv(input, weight) * scale + bias).
    public static void ForwardChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, bool relu, Span<float> output,
        ReadOnlySpan<float> scale = default)
    {
        Check(input.Length, inChannels, batch, height, width, "input");
        Check(output.Length, outChannels, batch, height, width, "output");
        Span<float> u = Scratch(inChannels, outChannels, batch, height, width, out Span<float> v, out Span<float> m, out int ld);
        TransformWeights(weight, outChannels, inChannels, transposeAndRotate: false, u);
        Run(input, batch, inChannels, height, width, u, outChannels, v, m, ld, bias, scale, relu, output);
    }

    // dOutput (co, n, h, w); weight (co, ci, 3, 3); dInput (ci, n, h, w), overwritten. The input
    // gradient of a 3x3, stride 1, padding 1 convolution is the same convolution of dOutput with
    // the kernel rotated by 180 degrees and its channel axes swapped.
    public static void BackwardDataChannelMajor(
        ReadOnlySpan<float> dOutput, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, Span<float> dInput)
    {
        Check(dOutput.Length, outChannels, batch, height, width, "dOutput");
        Check(dInput.Length, inChannels, batch, height, width, "dInput");
        Span<float> u = Scratch(outChannels, inChannels, batch, height, width, out Span<float> v, out Span<float> m, out int ld);
        TransformWeights(weight, outChannels, inChannels, transposeAndRotate: true, u);
        Run(dOutput, batch, outChannels, height, width, u, inChannels, v, m, ld, default, default, relu: false, dInput);
    }

    private static void Check(int length, int channels, int batch, int height, int width, string name)
    {
        long needed = (long)channels * batch * height * width;
        if (length < needed)
        {
            throw new ArgumentException($"A channel-major {name} of {channels} x {batch} x {height} x {width} needs {needed} values, got {length}.", name);
        }
    }

    private static int TilesWide(int width) => (width + 1) / 2;

    // Tile rows per block and the leading dimension of V and M rows (the block's tiles plus slack).
    private static (int Rows, int Ld) Blocking(int cIn, int cOut, int batch, int height, int width)
    {
        int tilesWide = TilesWide(width);
        int tileRows = batch * ((height + 1) / 2);
        int tiles = BlockFloats / (Positions * (cIn + cOut));
        int rows = Math.Clamp(tiles / tilesWide, 1, tileRows);
        return (rows, rows * tilesWide + Slack);
    }

    // The calling thread's U (16, cOut, cIn), V (16, cIn, ld) and M (16, cOut, ld), grown once to
    // the largest layer.
    private static Span<float> Scratch(int cIn, int cOut, int batch, int height, int width,
        out Span<float> v, out Span<float> m, out int ld)
    {
        (_, ld) = Blocking(cIn, cOut, batch, height, width);
        int uSize = Positions * cOut * cIn;
        int vSize = Positions * cIn * ld;
        int mSize = Positions * cOut * ld;
        int total = checked(uSize + vSize + mSize);
        if (t_scratch is null || t_scratch.Length < total)
        {
            t_scratch = new float[total];
        }
        Span<float> all = t_scratch.AsSpan(0, total);
        v = all.Slice(uSize, vSize);
        m = all.Slice(uSize + vSize, mSize);
        return all.Slice(0, uSize);
    }

    // weight (co, ci, 3, 3) -> u (16, rows, cols) = G g G^T for each kernel g, where (rows, cols)
    // is (co, ci), or (ci, co) with every kernel rotated by 180 degrees for the input gradient.
    public static void TransformWeights(ReadOnlySpan<float> weight, int outChannels, int inChannels, bool transposeAndRotate, Span<float> u)
    {
        if (weight.Length < outChannels * inChannels * 9 || u.Length < Positions * outChannels * inChannels)
        {
            throw new ArgumentException($"Weights of {outChannels} x {inChannels} x 3 x 3 need {outChannels * inChannels * 9} values and their transform {Positions * outChannels * inChannels}.");
        }
        fixed (float* w = weight, pu = u)
        {
            Parallelism.For(outChannels, inChannels * 64,
                (w: (nint)w, u: (nint)pu, outChannels, inChannels, transposeAndRotate),
                static (s, start, count) =>
                {
                    int rows = s.transposeAndRotate ? s.inChannels : s.outChannels;
                    int cols = s.transposeAndRotate ? s.outChannels : s.inChannels;
                    float* g = stackalloc float[9];
                    float* t = stackalloc float[Positions];
                    for (int o = start; o < start + count; o++)
                    {
                        for (int i = 0; i < s.inChannels; i++)
                        {
                            float* kernel = (float*)s.w + ((long)o * s.inChannels + i) * 9;
                            for (int j = 0; j < 9; j++)
                            {
                                g[j] = kernel[s.transposeAndRotate ? 8 - j : j];
                            }
                            TransformKernel(g, t);
                            long row = s.transposeAndRotate ? i : o;
                            long col = s.transposeAndRotate ? o : i;
                            for (int xi = 0; xi < Positions; xi++)
                            {
                                ((float*)s.u)[((long)xi * rows + row) * cols + col] = t[xi];
                            }
                        }
                    }
                });
        }
    }

    // t (4, 4) = G g G^T for g (3, 3).
    private static void TransformKernel(float* g, float* t)
    {
        float* gg = stackalloc float[12];
        for (int c = 0; c < 3; c++)
        {
            float g0 = g[c], g1 = g[3 + c], g2 = g[6 + c];
            gg[c] = g0;
            gg[3 + c] = 0.5f * (g0 + g1 + g2);
            gg[6 + c] = 0.5f * (g0 - g1 + g2);
            gg[9 + c] = g2;
        }
        for (int r = 0; r < 4; r++)
        {
            float r0 = gg[3 * r], r1 = gg[3 * r + 1], r2 = gg[3 * r + 2];
            t[4 * r] = r0;
            t[4 * r + 1] = 0.5f * (r0 + r1 + r2);
            t[4 * r + 2] = 0.5f * (r0 - r1 + r2);
            t[4 * r + 3] = r2;
        }
    }

    // A tile row is (image, ty); tile t of a block is its tile row's first tile plus tx.
    private static void Run(
        ReadOnlySpan<float> input, int batch, int cIn, int height, int width, ReadOnlySpan<float> u, int cOut,
        Span<float> v, Span<float> m, int ld, ReadOnlySpan<float> bias, ReadOnlySpan<float> scale, bool relu, Span<float> output)
    {
        int tilesWide = TilesWide(width);
        int tilesHigh = (height + 1) / 2;
        int tileRows = batch * tilesHigh;
        (int blockRows, _) = Blocking(cIn, cOut, batch, height, width);
        fixed (float* x = input, pu = u, pv = v, pm = m, y = output, pBias = bias, pScale = scale)
        {
            var shape = new Shape(batch, cIn, cOut, height, width, tilesWide, tilesHigh, ld);
            for (int first = 0; first < tileRows; first += blockRows)
            {
                int rows = Math.Min(blockRows, tileRows - first);
                int tiles = rows * tilesWide;
                Parallelism.For(cIn, (long)rows * width * 8,
                    (shape, x: (nint)x, v: (nint)pv, first, rows),
                    static (s, start, count) => TransformInput(s.shape, (float*)s.x, (float*)s.v, s.first, s.rows, start, count));
                Parallelism.For(Positions, (long)cOut * cIn * tiles,
                    (cIn, cOut, tiles, ld, u: (nint)pu, v: (nint)pv, m: (nint)pm),
                    static (s, start, count) =>
                    {
                        for (int xi = start; xi < start + count; xi++)
                        {
                            Gemm.Multiply(false, false, s.cOut, s.tiles, s.cIn,
                                new ReadOnlySpan<float>((float*)s.u + (long)xi * s.cOut * s.cIn, s.cOut * s.cIn), s.cIn,
                                new ReadOnlySpan<float>((float*)s.v + (long)xi * s.cIn * s.ld, s.cIn * s.ld), s.ld,
                                new Span<float>((float*)s.m + (long)xi * s.cOut * s.ld, s.cOut * s.ld), s.ld, accumulate: false);
                        }
                    });
                Parallelism.For(cOut, (long)rows * width * 8,
                    (shape, m: (nint)pm, y: (nint)y, first, rows,
                        bias: bias.IsEmpty ? 0 : (nint)pBias, scale: scale.IsEmpty ? 0 : (nint)pScale, relu),
                    static (s, start, count) => TransformOutput(s.shape, (float*)s.m, (float*)s.y, s.first, s.rows, start, count,
                        (float*)s.bias, (float*)s.scale, s.relu));
            }
        }
    }

    private readonly record struct Shape(int Batch, int CIn, int COut, int Height, int Width, int TilesWide, int TilesHigh, int Ld);

    // V[xi][c][tile] = (B^T d B)[xi] for channels [start, start + count) and the block's tile rows.
    // Each input row is split into its even and odd columns, padded: even[j] = x[2j - 1],
    // odd[j] = x[2j], zero outside the image, so the tile at tx reads columns even[tx], odd[tx],
    // even[tx + 1], odd[tx + 1] and eight tiles take one vector from each.
    private static void TransformInput(in Shape s, float* x, float* v, int first, int rows, int start, int count)
    {
        int stride = s.TilesWide + 1 + Slack;
        // Reads reach index tilesWide + 7 at most; entries past tilesWide stay zero.
        float* buffer = stackalloc float[8 * stride];
        new Span<float>(buffer, 8 * stride).Clear();
        float* zero = stackalloc float[stride];
        new Span<float>(zero, stride).Clear();
        float** even = stackalloc float*[4];
        float** odd = stackalloc float*[4];
        int plane = s.Height * s.Width;
        for (int c = start; c < start + count; c++)
        {
            for (int r = 0; r < rows; r++)
            {
                int tileRow = first + r;
                int image = tileRow / s.TilesHigh;
                int ty = tileRow % s.TilesHigh;
                float* source = x + ((long)c * s.Batch + image) * plane;
                for (int i = 0; i < 4; i++)
                {
                    int iy = 2 * ty - 1 + i;
                    if ((uint)iy >= (uint)s.Height)
                    {
                        even[i] = zero;
                        odd[i] = zero;
                        continue;
                    }
                    even[i] = buffer + 2 * i * stride;
                    odd[i] = buffer + (2 * i + 1) * stride;
                    SplitRow(source + (long)iy * s.Width, s.Width, s.TilesWide, even[i], odd[i]);
                }
                float* target = v + (long)c * s.Ld + r * s.TilesWide;
                long positionStride = (long)s.CIn * s.Ld;
                for (int tx = 0; tx < s.TilesWide; tx += 8)
                {
                    // Rows first (B^T d) on the four column streams, then columns (. B).
                    Vertical(even, tx, out var e0, out var e1, out var e2, out var e3);
                    Vertical(even, tx + 1, out var f0, out var f1, out var f2, out var f3);
                    Vertical(odd, tx, out var o0, out var o1, out var o2, out var o3);
                    Vertical(odd, tx + 1, out var p0, out var p1, out var p2, out var p3);
                    float* d = target + tx;
                    Horizontal(d, positionStride, e0, f0, o0, p0);
                    Horizontal(d + 4 * positionStride, positionStride, e1, f1, o1, p1);
                    Horizontal(d + 8 * positionStride, positionStride, e2, f2, o2, p2);
                    Horizontal(d + 12 * positionStride, positionStride, e3, f3, o3, p3);
                }
            }
        }
    }

    private static void Vertical(float** rows, int offset,
        out Vector256<float> r0, out Vector256<float> r1, out Vector256<float> r2, out Vector256<float> r3)
    {
        Vector256<float> d0 = Vector256.Load(rows[0] + offset);
        Vector256<float> d1 = Vector256.Load(rows[1] + offset);
        Vector256<float> d2 = Vector256.Load(rows[2] + offset);
        Vector256<float> d3 = Vector256.Load(rows[3] + offset);
        r0 = d0 - d2;
        r1 = d1 + d2;
        r2 = d2 - d1;
        r3 = d1 - d3;
    }

    // Columns c0..c3 of eight tiles (c0 = even[tx], c1 = odd[tx], c2 = even[tx + 1], c3 = odd[tx + 1]).
    private static void Horizontal(float* d, long positionStride,
        Vector256<float> c0, Vector256<float> c2, Vector256<float> c1, Vector256<float> c3)
    {
        Vector256.Store(c0 - c2, d);
        Vector256.Store(c1 + c2, d + positionStride);
        Vector256.Store(c2 - c1, d + 2 * positionStride);
        Vector256.Store(c1 - c3, d + 3 * positionStride);
    }

    // even[j] = row[2j - 1], odd[j] = row[2j] for j in [0, tilesWide], zero outside [0, width).
    private static void SplitRow(float* row, int width, int tilesWide, float* even, float* odd)
    {
        even[0] = 0f;
        int j = 0;
        if (Avx2.IsSupported)
        {
            for (; 2 * j + 16 <= width; j += 8)
            {
                Vector256<float> a = Avx.LoadVector256(row + 2 * j);
                Vector256<float> b = Avx.LoadVector256(row + 2 * j + 8);
                // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], likewise the odd lanes.
                Vector256<float> evens = Avx.Shuffle(a, b, 0b10_00_10_00);
                Vector256<float> odds = Avx.Shuffle(a, b, 0b11_01_11_01);
                Avx.Store(odd + j, Avx2.Permute4x64(evens.AsDouble(), 0b11_01_10_00).AsSingle());
                Avx.Store(even + j + 1, Avx2.Permute4x64(odds.AsDouble(), 0b11_01_10_00).AsSingle());
            }
        }
        for (int k = j; k <= tilesWide; k++)
        {
            odd[k] = 2 * k < width ? row[2 * k] : 0f;
        }
        for (int k = j + 1; k <= tilesWide; k++)
        {
            even[k] = 2 * k - 1 < width ? row[2 * k - 1] : 0f;
        }
    }

    // Output channels [start, start + count) of the block's tile rows: Y = A^T M A, then the
    // epilogue, written as two image rows per tile row.
    private static void TransformOutput(in Shape s, float* m, float* y, int first, int rows, int start, int count,
        float* bias, float* scale, bool relu)
    {
        int rowLength = 2 * (s.TilesWide + Slack);
        float* top = stackalloc float[rowLength];
        float* bottom = stackalloc float[rowLength];
        long positionStride = (long)s.COut * s.Ld;
        int plane = s.Height * s.Width;
        for (int c = start; c < start + count; c++)
        {
            Vector256<float> channelScale = Vector256.Create(scale is null ? 1f : scale[c]);
            Vector256<float> channelBias = Vector256.Create(bias is null ? 0f : bias[c]);
            for (int r = 0; r < rows; r++)
            {
                float* source = m + (long)c * s.Ld + r * s.TilesWide;
                for (int tx = 0; tx < s.TilesWide; tx += 8)
                {
                    float* p = source + tx;
                    // A^T M: rows 0 and 1 of each column b.
                    Column(p, positionStride, 0, out var a0, out var b0);
                    Column(p, positionStride, 1, out var a1, out var b1);
                    Column(p, positionStride, 2, out var a2, out var b2);
                    Column(p, positionStride, 3, out var a3, out var b3);
                    // (A^T M) A: the even and odd output columns of each row.
                    Store(top + 2 * tx, Epilogue(a0 + a1 + a2, channelScale, channelBias, relu), Epilogue(a1 - a2 - a3, channelScale, channelBias, relu));
                    Store(bottom + 2 * tx, Epilogue(b0 + b1 + b2, channelScale, channelBias, relu), Epilogue(b1 - b2 - b3, channelScale, channelBias, relu));
                }
                int tileRow = first + r;
                int image = tileRow / s.TilesHigh;
                int oy = 2 * (tileRow % s.TilesHigh);
                float* target = y + ((long)c * s.Batch + image) * plane + (long)oy * s.Width;
                new ReadOnlySpan<float>(top, s.Width).CopyTo(new Span<float>(target, s.Width));
                if (oy + 1 < s.Height)
                {
                    new ReadOnlySpan<float>(bottom, s.Width).CopyTo(new Span<float>(target + s.Width, s.Width));
                }
            }
        }
    }

    private static void Column(float* p, long positionStride, int b, out Vector256<float> row0, out Vector256<float> row1)
    {
        Vector256<float> m0 = Vector256.Load(p + b * positionStride);
        Vector256<float> m1 = Vector256.Load(p + (4 + b) * positionStride);
        Vector256<float> m2 = Vector256.Load(p + (8 + b) * positionStride);
        Vector256<float> m3 = Vector256.Load(p + (12 + b) * positionStride);
        row0 = m0 + m1 + m2;
        row1 = m1 - m2 - m3;
    }

    private static Vector256<float> Epilogue(Vector256<float> value, Vector256<float> scale, Vector256<float> bias, bool relu)
    {
        Vector256<float> result = value * scale + bias;
        return relu ? Vector256.Max(result, Vector256<float>.Zero) : result;
    }

    // d[0..16) = e0 o0 e1 o1 ... e7 o7.
    private static void Store(float* d, Vector256<float> even, Vector256<float> odd)
    {
        if (Avx.IsSupported)
        {
            Vector256<float> low = Avx.UnpackLow(even, odd);   // e0 o0 e1 o1 | e4 o4 e5 o5
            Vector256<float> high = Avx.UnpackHigh(even, odd); // e2 o2 e3 o3 | e6 o6 e7 o7
            Avx.Store(d, Avx.Permute2x128(low, high, 0x20));
            Avx.Store(d + 8, Avx.Permute2x128(low, high, 0x31));
            return;
        }
        for (int i = 0; i < 8; i++)
        {
            d[2 * i] = even.GetElement(i);
            d[2 * i + 1] = odd.GetElement(i);
        }
    }
}
