using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

public static unsafe partial class Winograd
{
    /// <summary>
    /// Whether 3x3 kernels are transformed six at a time in vectors (default true) or one at a
    /// time by the scalar code, which the tests hold the vector code to bit for bit.
    /// </summary>
    internal static bool VectorTransformsWeights { get; set; } = true;

    // Training changes the weights every step, so the forward pass and the input gradient each
    // transform them every step (some 220 000 kernels at d2l's batch 128). Here a unit is one
    // block of six rows of U and one column: the lanes are the block's six rows, whose kernels
    // are gathered a tap at a time, transformed in vectors with the scalar code's operations in
    // its order (the same floats), and stored as the six contiguous floats U holds for each
    // position. On the Cascade Lake VM (best of 20) the forward pass's transform went 1.55 ->
    // 0.86 ms (320 x 160 kernels, 2x2 tiles) and 2.24 -> 1.38 (192 x 128, 4x4 tiles); the
    // input gradient's, whose six rows are six input channels of one kernel row, went 1.86 ->
    // 2.06 and 2.35 -> 1.91, and keeps the scalar code.
    // weight (co, ci, 3, 3) -> u as TransformWeights packs it, for the forward pass.
    private static void TransformWeightBlocks(ReadOnlySpan<float> weight, int outChannels, int inChannels, WinogradTiles tiles, Span<float> u)
    {
        fixed (float* w = weight, pu = u)
        {
            Parallelism.For(Blocks(outChannels), (long)inChannels * Rows * 64,
                (w: (nint)w, u: (nint)pu, outChannels, inChannels, tiles),
                static (s, start, count) =>
                {
                    long positionStride = (long)s.inChannels * Rows;
                    for (int block = start; block < start + count; block++)
                    {
                        int valid = Math.Min(Rows, s.outChannels - block * Rows);
                        for (int c = 0; c < s.inChannels; c++)
                        {
                            // The kernel of output channel block * 6 + r and input channel c.
                            float* kernels = (float*)s.w + ((long)block * Rows * s.inChannels + c) * 9;
                            float* target = (float*)s.u + (long)block * PositionsOf(s.tiles) * positionStride + (long)c * Rows;
                            if (s.tiles == WinogradTiles.F4x4Kernel3)
                            {
                                LargeKernels(kernels, s.inChannels * 9, valid, target, positionStride);
                            }
                            else
                            {
                                SmallKernels(kernels, s.inChannels * 9, valid, target, positionStride);
                            }
                        }
                    }
                });
        }
    }

    // r * rowStride for lanes r: the gather's offsets.
    private static Vector256<int> RowOffsets(int rowStride) => Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * rowStride;

    private static Vector256<float> ValidRows(int valid) =>
        Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(valid)).AsSingle();

    // Tap j (row-major) of the six kernels.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Tap(float* kernels, Vector256<int> offsets, Vector256<float> mask, int j) =>
        Avx2.GatherMaskVector256(Vector256<float>.Zero, kernels + j, offsets, mask, 4);

    // F(2x2, 3x3): t = G g G^T as Small.TransformKernel computes it.
    private static void SmallKernels(float* kernels, int rowStride, int valid, float* target, long positionStride)
    {
        Vector256<int> offsets = RowOffsets(rowStride);
        Vector256<float> mask = ValidRows(valid);
        Vector256<float> half = Vector256.Create(0.5f);
        Vector256<float>* gg = stackalloc Vector256<float>[12];
        for (int c = 0; c < 3; c++)
        {
            Vector256<float> g0 = Tap(kernels, offsets, mask, c);
            Vector256<float> g1 = Tap(kernels, offsets, mask, 3 + c);
            Vector256<float> g2 = Tap(kernels, offsets, mask, 6 + c);
            gg[c] = g0;
            gg[3 + c] = half * (g0 + g1 + g2);
            gg[6 + c] = half * (g0 - g1 + g2);
            gg[9 + c] = g2;
        }
        for (int r = 0; r < 4; r++)
        {
            Vector256<float> r0 = gg[3 * r], r1 = gg[3 * r + 1], r2 = gg[3 * r + 2];
            float* t = target + 4 * r * positionStride;
            Avx.MaskStore(t, mask, r0);
            Avx.MaskStore(t + positionStride, mask, half * (r0 + r1 + r2));
            Avx.MaskStore(t + 2 * positionStride, mask, half * (r0 - r1 + r2));
            Avx.MaskStore(t + 3 * positionStride, mask, r2);
        }
    }

    // F(4x4, 3x3): t = G g G^T in double as Large.TransformKernel computes it, four rows at a time.
    private static void LargeKernels(float* kernels, int rowStride, int valid, float* target, long positionStride)
    {
        Vector256<double>* gg = stackalloc Vector256<double>[18];
        Vector256<double>* row = stackalloc Vector256<double>[6];
        for (int lane0 = 0; lane0 < valid; lane0 += 4)
        {
            int lanes = Math.Min(4, valid - lane0);
            Vector128<int> offsets = Vector128.Create(0, 1, 2, 3) * rowStride;
            Vector128<float> mask = Vector128.LessThan(Vector128.Create(0, 1, 2, 3), Vector128.Create(lanes)).AsSingle();
            float* first = kernels + (long)lane0 * rowStride;
            for (int c = 0; c < 3; c++)
            {
                Vector256<double> g0 = Avx.ConvertToVector256Double(Avx2.GatherMaskVector128(Vector128<float>.Zero, first + c, offsets, mask, 4));
                Vector256<double> g1 = Avx.ConvertToVector256Double(Avx2.GatherMaskVector128(Vector128<float>.Zero, first + 3 + c, offsets, mask, 4));
                Vector256<double> g2 = Avx.ConvertToVector256Double(Avx2.GatherMaskVector128(Vector128<float>.Zero, first + 6 + c, offsets, mask, 4));
                Interpolate(g0, g1, g2, gg, c, 3);
            }
            for (int r = 0; r < 6; r++)
            {
                Interpolate(gg[3 * r], gg[3 * r + 1], gg[3 * r + 2], row, 0, 1);
                for (int j = 0; j < 6; j++)
                {
                    Avx.MaskStore(target + (6 * r + j) * positionStride + lane0, mask, Avx.ConvertToVector128Single(row[j]));
                }
            }
        }
    }

    // d[offset + i * step] = (G (g0, g1, g2))[i], Large.Interpolate's operations on four kernels.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Interpolate(Vector256<double> g0, Vector256<double> g1, Vector256<double> g2, Vector256<double>* d, int offset, int step)
    {
        d[offset] = g0;
        d[offset + step] = (g0 + g1 + g2) / Vector256.Create(3.0);
        d[offset + 2 * step] = -(g0 - g1 + g2) / Vector256.Create(3.0);
        d[offset + 3 * step] = -(Vector256.Create(16.0) * g0 + Vector256.Create(8.0) * g1 + Vector256.Create(4.0) * g2) / Vector256.Create(15.0);
        d[offset + 4 * step] = (g0 - Vector256.Create(2.0) * g1 + Vector256.Create(4.0) * g2) / Vector256.Create(15.0);
        d[offset + 5 * step] = g2;
    }
}
