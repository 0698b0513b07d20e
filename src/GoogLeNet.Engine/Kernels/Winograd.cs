using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// 3x3 convolution with stride 1 and padding 1 by Winograd's minimal filtering (Lavin and Gray,
/// 2015): F(2x2, 3x3), where each 2x2 output tile costs 16 multiplications per channel pair
/// instead of 36, and F(4x4, 3x3), where each 4x4 tile costs 36 instead of 144, on the planes
/// and channel counts where it runs faster (<see cref="TakesLargeTiles"/>; forward pass and both
/// gradients). 5x5 convolutions with padding 2 run as F(2x2, 5x5), 36 instead of 100, where
/// that pays (forward pass and input gradient). Channel-major tensors (C, N, H, W) only.
/// </summary>
/// <remarks>
/// Y = A^T [ (G g G^T) .* (B^T d B) ] A for an input tile d and a 3x3 kernel g; for 2x2 tiles
/// <code>
/// B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
///       | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
///       | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
///       | 0  1  0 -1 |       | 0    0    1   |
/// </code>
/// Summed over input channels, the element-wise products are 16 matrix products, one per
/// position xi of the 4x4 transform: M_xi (co, tiles) = U_xi (co, ci) V_xi (ci, tiles). M is four
/// times the size of the output, so it is never stored whole: a group of tiles has its V
/// transformed into cache, then six output channels at a time get their 16 x 6 x group products
/// from the GEMM micro-kernel (U pre-packed in its panel form) and go straight through the output
/// transform. Groups (and, when there are few, ranges of output channels) are the units the
/// threads share; every output is computed the same way whichever thread takes it, so results
/// do not depend on the thread count. The 2x2 transforms only add, subtract and halve, so the
/// result differs from the direct sum by a few float32 roundings; the 4x4 ones (see Large) by
/// several times more (WinogradTests bounds both). The weight gradient takes 3x3 kernels only, on
/// 4x4 tiles where they fill (WeightGradientTakesLargeTiles).
/// </remarks>
public static unsafe partial class Winograd
{
    // Read once: both block sizes below follow it. Declared before them, as static fields are
    // initialised in textual order.
    private static readonly int s_l2Bytes = L2Bytes();
    private const int Rows = Gemm.TileRows;
    private const int Panel = Gemm.TileColumns;

    // A group's V (16 x ci x group floats) stays within this many floats, half a core's L2, so
    // the micro-kernel reads it from cache for every block of output channels. On a 1 MiB L2
    // (Cascade Lake) 512 KiB groups ran the 14x14 and 7x7 layers 1.25-1.4x faster than 256 KiB
    // ones and 1 MiB groups slower everywhere; 256 KiB is the guess where the size is unknown.
    internal static int GroupFloats { get; set; } = s_l2Bytes / 2 / sizeof(float);

    // The input gradient's groups get half as much again (three quarters of the L2). Its
    // transformed weights span all the layer's output channels, so it gains from fewer, larger
    // groups where the forward pass lost: on the Cascade Lake VM, same process, two rounds,
    // input gradient 81-82 -> 76-77 ms (d2l conv3, batch 128), 37 -> 35 (d2l 3b), 27 -> 23
    // (d2l 4e), 96-98 -> 90-91 (torchvision conv3, batch 32), 33 -> 27-28 (4e), while the
    // forward pass with such groups went 63-66 -> 67 (d2l conv3) and 37 -> 43 (torchvision 3b).
    private static int InputGradientGroupFloats => GroupFloats / 2 * 3;

    private static int L2Bytes()
    {
        const int Fallback = 512 * 1024;
        try
        {
            // Linux names each cache of cpu0 in index0..3 with its level and size ("1024K").
            for (int index = 0; index < 4; index++)
            {
                string folder = $"/sys/devices/system/cpu/cpu0/cache/index{index}";
                if (!File.Exists(folder + "/level") || File.ReadAllText(folder + "/level").Trim() != "2")
                {
                    continue;
                }
                string size = File.ReadAllText(folder + "/size").Trim();
                if (size.EndsWith('K') && int.TryParse(size[..^1], out int kib) && kib is >= 128 and <= 8192)
                {
                    return kib * 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return Fallback;
    }

    private const int MaxGroupTiles = 256;

    [ThreadStatic]
    private static float[]? t_packedWeights;

    [ThreadStatic]
    private static float[]? t_group;

    /// <summary>Whether <see cref="Convolution.ForwardChannelMajor"/> and its backward use this kernel where it applies.</summary>
    public static bool Enabled { get; set; } = true;

    public static bool Applies(int kernelH, int kernelW, int stride, int padding) =>
        stride == 1 && kernelH == kernelW && ((kernelH == 3 && padding == 1) || (kernelH == Five.Kernel && padding == 2));

    /// <summary>Whether <see cref="BackwardWeightsChannelMajor"/> takes kernels of this size (3x3 only; 5x5 weight gradients run as a GEMM).</summary>
    public static bool TakesWeightGradient(int kernelH, int kernelW) => kernelH == 3 && kernelW == 3;

    // A call that transforms the weights (an estimated 50 cycles per 3x3 kernel) gains from it once each
    // tile saves 20 of 36 multiply-adds per kernel (about 1.3 cycles in vectors): from some 40
    // tiles on (not a single 7x7 or 14x14 image, 16 or 49 tiles). With the transform cached only
    // the comparison of the weights remains, but U is 16/9 the size of the weights and is read
    // once per group of tiles: for one 7x7 image (16 tiles, 49 of 64 outputs used) that traffic
    // made inference slower (torchvision b1: inception5b 2.6 -> 2.9 ms); one 14x14 image broke
    // even (inception4a-4e 13.5 -> 13.2 ms).
    private const int MinTiles = 64;
    private const int MinTilesCached = 32;

    /// <summary>Whether <see cref="Convolution.ForwardChannelMajor"/> and its backward take this kernel for a batch of this size.</summary>
    /// <remarks>5x5 kernels also need the channel counts (<see cref="FiveByFivePays"/>); without them they are not chosen.</remarks>
    public static bool Chosen(int kernelH, int kernelW, int stride, int padding, int batch, int height, int width, bool cachedWeights = false,
        int inChannels = 0, int outChannels = 0) =>
        Enabled && Applies(kernelH, kernelW, stride, padding) && FillsTiles(height, width)
        && (long)batch * ((height + 1) / 2) * TilesWide(width) >= (cachedWeights ? MinTilesCached : MinTiles)
        && (kernelH == 3 || FiveByFivePays(batch, inChannels, outChannels, height, width));

    // F(2x2, 5x5) multiplies 36 times per 2x2 outputs instead of 100, but with 36 positions per
    // tile its transforms weigh more against the products than F(2x2, 3x3)'s, and the products
    // run with as few multiply-adds as the layer has input channels. On the Cascade Lake VM
    // (best of 10, alternating with the GEMM paths) it won where both channel counts are at
    // least 32 and eight-tile vectors are three quarters full: 32 -> 96 channels on 12x12
    // planes (d2l inception3b, batch 128) forward 18.7 -> 14.2 ms, input gradient 23.8 -> 23.0;
    // on 28x28 (paper inception3b, batch 32) 24.2 -> 16.1 and 33.2 -> 28.4. It lost on 6x6
    // planes (three tiles a row: 32 -> 64, forward 3.1 -> 4.4 ms) and with 16 input channels
    // (12x12, 16 -> 32: 4.3 -> 4.9).
    private static bool FiveByFivePays(int batch, int inChannels, int outChannels, int height, int width)
    {
        int tilesWide = TilesWide(width);
        return LargeTilesEnabled && inChannels >= 32 && outChannels >= 32
            && (LanesFor(batch, height, width) != 0 || 4 * tilesWide >= 3 * ((tilesWide + 7) / 8 * 8));
    }

    // 2x2 tiles over an odd plane compute outputs past its edge: 64 for a 7x7 plane's 49, 16 for
    // a 3x3 plane's 9. Below two thirds used, the implicit GEMM won: d2l's 3x3 planes (192 -> 384,
    // batch 128) forward 13.0 against 15.6 ms, backward 28.6 against 39.7; 7x7 planes (77%) stay.
    private static bool FillsTiles(int height, int width) =>
        3L * height * width >= 2L * ((height + 1) / 2 * 2) * ((width + 1) / 2 * 2);

    /// <summary>
    /// Whether the 6x6-tile transforms, F(4x4, 3x3) and F(2x2, 5x5), are taken where they pay
    /// (default true). Off, 3x3 layers run on 2x2 tiles and 5x5 layers by the direct kernel or
    /// the GEMM: slower, with results a few times closer to the exact sums.
    /// </summary>
    public static bool LargeTilesEnabled { get; set; } = true;

    /// <summary>Forces F(4x4, 3x3) (true) or F(2x2, 3x3) (false) for the forward pass and both gradients; null chooses by the plane (<see cref="TakesLargeTiles"/>).</summary>
    internal static bool? LargeTilesForced { get; set; }

    // F(4x4, 3x3) multiplies 36 times per 16 outputs where F(2x2, 3x3) multiplies 16 times per
    // 4, so its products cost 0.56 as much, but four things can take the gain back:
    // - in image-row order its transforms run eight tiles of a tile row per vector, which a
    //   narrow plane leaves partly empty (a 12- or 14-wide plane fills three or four of eight
    //   lanes, where 2x2 tiles fill six or seven); taken where its vectors are three quarters
    //   full (interleaved tiles fill every lane: see LargeTilesFill);
    // - tiles past the plane's edge, as above;
    // - V holds 36 positions per tile, so fewer tiles fit a group: with a single 16-tile panel
    //   per group the micro-kernel loads a vector per six multiply-adds and ran slower. On the
    //   Cascade Lake VM (best of 20 calls, alternating) the forward pass of 64 -> 192 channels
    //   (groups of 48 tiles) went 67 -> 51 ms (d2l conv3, 24x24, batch 128) and 77 -> 65
    //   (torchvision conv3, 56x56, batch 32), 96 -> 128 (3a, 28x28, 32 tiles) 25 -> 21 and its
    //   input gradient 26 -> 23; with 16-tile groups (3b forward, 128 channels in; input
    //   gradients from 192) 59 -> 74, 30 -> 38 and 87 -> 91 ms.
    // - with fewer than eight such groups in the batch the two threads also split the output
    //   channels, each transforming the group's input again: batch-1 inference (conv3 at 196
    //   tiles, 3a at 49) took 27.9 ms with 4x4 tiles against 26.2 with 2x2 (`googlenet bench
    //   --preset torchvision --mode infer --batch 1`, alternating).
    internal static bool TakesLargeTiles(int batch, int inChannels, int height, int width, int groupFloats, int outChannels = 0)
    {
        if (LargeTilesForced is bool forced)
        {
            return forced;
        }
        bool interleaved = LanesFor(batch, height, width) != 0;
        return LargeTilesFill(batch, height, width, interleaved)
            && (groupFloats / (Large.Positions * inChannels) >= 2 * Panel
                || (outChannels > 0 && ChunksFor(inChannels, outChannels, groupFloats, Large.Positions, kSplit: true) > 1)
                || (outChannels > 0 && interleaved && InterleavedChunks(inChannels, (width + 3) / 4, groupFloats, Large.Positions).Chunks > 1));
    }

    // All but the group: the plane's coverage, the transforms' lanes and the batch. Where the
    // tiles are interleaved the lanes are full, and 2x2 tiles are too, so 4x4 ones must cover
    // seven eighths of the plane: on the Cascade Lake VM (best of 8, two rounds, batch 32) 14x14
    // planes (77%) ran slower on them (torchvision 4b, 112 -> 224 channels, forward, input and
    // weight gradient summed: 58.3-59.9 ms on 2x2 tiles against 65.9-67.5), 12x12 ones (all of
    // the plane) faster (d2l 3a, 96 -> 128, batch 128: 54.4-56.6 -> 47.9-48.9; 3b, 128 -> 192:
    // 93.7-94.7 -> 87.8-88.4).
    private static bool LargeTilesFill(int batch, int height, int width, bool interleaved)
    {
        int tilesWide = (width + 3) / 4;
        long covered = (long)(height + 3) / 4 * 4 * (tilesWide * 4);
        return LargeTilesEnabled
            && (interleaved ? 8L * height * width >= 7 * covered : 3L * height * width >= 2 * covered)
            && (interleaved || 4 * tilesWide >= 3 * ((tilesWide + 7) / 8 * 8))
            && (long)batch * ((height + 3) / 4) * tilesWide >= 8 * 2 * Panel;
    }

    // The weight gradient has no groups; where the tiles are interleaved it takes 4x4 tiles
    // wherever they fill. On the Cascade Lake VM (best of 8, two rounds) d2l 3b's weight gradient
    // (128 -> 192 channels, 12x12, batch 128) went 34.2-35.1 ms on 2x2 tiles -> 28.8-30.0, 3a's
    // 20.5-20.9 -> 18.5-18.7.
    private static bool WeightGradientTakesLargeTiles(int batch, int inChannels, int height, int width)
    {
        if (LargeTilesForced is bool forced)
        {
            return forced;
        }
        return LanesFor(batch, height, width, weightGradient: true) != 0
            ? LargeTilesFill(batch, height, width, interleaved: true)
            : TakesLargeTiles(batch, inChannels, height, width, GroupFloats);
    }

    // input (ci, n, h, w); weight (co, ci, 3, 3); bias (co) or empty; scale (co) or empty;
    // output (co, n, h, w) = relu?(conv(input, weight) * scale + bias). With a cache, the weights'
    // transform is reused while they stay the same.
    public static void ForwardChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, bool relu, Span<float> output,
        ReadOnlySpan<float> scale = default, WinogradWeights? cache = null, int kernelSize = 3)
    {
        Check(input.Length, inChannels, batch, height, width, "input");
        Check(output.Length, outChannels, batch, height, width, "output");
        CheckEpilogue(bias.Length, scale.Length, outChannels);
        int groupFloats = ForwardGroupFloats(inChannels);
        WinogradTiles tiles = TilesFor(kernelSize, batch, inChannels, height, width, groupFloats);
        if (tiles != WinogradTiles.F4x4Kernel3)
        {
            groupFloats = GroupFloats;
        }
        ReadOnlySpan<float> u;
        if (cache is not null)
        {
            u = cache.For(weight, outChannels, inChannels, tiles);
        }
        else
        {
            Span<float> scratch = PackedWeights(outChannels, inChannels, tiles);
            TransformWeights(weight, outChannels, inChannels, tiles, transposeAndRotate: false, scratch);
            u = scratch;
        }
        Run(tiles, input, batch, inChannels, height, width, u, outChannels, bias, scale, relu, output, groupFloats);
    }

    // A forward pass on 4x4 tiles takes half the L2 for a group, or as much as two 16-tile
    // panels need where that is at most 5/8 of it: 128 input channels (torchvision and paper
    // inception3b, 28x28) then run on 4x4 tiles in 32-tile groups. On the Cascade Lake VM (best of
    // 8, alternating, batch 32, cached weights) 3b went 35.2-36.5 ms on 2x2 tiles -> 31.8-32.8.
    private static int ForwardGroupFloats(int inChannels) =>
        Math.Max(GroupFloats, (int)Math.Min(2L * Panel * Large.Positions * inChannels, (long)BlockFloats * 5 / 8));

    // outChannels > 0: the caller splits k where that lets a group hold two panels (ChunksFor).
    private static WinogradTiles TilesFor(int kernelSize, int batch, int inChannels, int height, int width, int groupFloats, int outChannels = 0) => kernelSize switch
    {
        3 => TakesLargeTiles(batch, inChannels, height, width, groupFloats, outChannels) ? WinogradTiles.F4x4Kernel3 : WinogradTiles.F2x2Kernel3,
        5 => WinogradTiles.F2x2Kernel5,
        _ => throw new ArgumentException($"Winograd convolutions take 3x3 or 5x5 kernels, not {kernelSize}x{kernelSize}.", nameof(kernelSize)),
    };

    private static void Run(WinogradTiles tiles,
        ReadOnlySpan<float> input, int batch, int cIn, int height, int width, ReadOnlySpan<float> u, int cOut,
        ReadOnlySpan<float> bias, ReadOnlySpan<float> scale, bool relu, Span<float> output, int groupFloats, bool kSplit = false)
    {
        switch (tiles)
        {
            case WinogradTiles.F4x4Kernel3:
                Run<Large>(input, batch, cIn, height, width, u, cOut, bias, scale, relu, output, groupFloats, kSplit);
                break;
            case WinogradTiles.F2x2Kernel5:
                Run<Five>(input, batch, cIn, height, width, u, cOut, bias, scale, relu, output, groupFloats);
                break;
            default:
                Run<Small>(input, batch, cIn, height, width, u, cOut, bias, scale, relu, output, groupFloats);
                break;
        }
    }

    // dOutput (co, n, h, w); weight (co, ci, 3, 3); dInput (ci, n, h, w), overwritten. The input
    // gradient of a 3x3, stride 1, padding 1 convolution is the same convolution of dOutput with
    // the kernel rotated by 180 degrees and its channel axes swapped.
    public static void BackwardDataChannelMajor(
        ReadOnlySpan<float> dOutput, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, Span<float> dInput, int kernelSize = 3)
    {
        Check(dOutput.Length, outChannels, batch, height, width, "dOutput");
        Check(dInput.Length, inChannels, batch, height, width, "dInput");
        WinogradTiles tiles = TilesFor(kernelSize, batch, outChannels, height, width, InputGradientGroupFloats, inChannels);
        Span<float> u = PackedWeights(inChannels, outChannels, tiles);
        TransformWeights(weight, outChannels, inChannels, tiles, transposeAndRotate: true, u);
        Run(tiles, dOutput, batch, outChannels, height, width, u, inChannels, default, default, relu: false, dInput, InputGradientGroupFloats,
            kSplit: true);
    }

    // input (ci, n, h, w); dOutput (co, n, h, w); dWeight (co, ci, 3, 3) += the weight gradient.
    // With V = B^T d B the input tiles' transform and dM = A dY A^T the output gradient's, the
    // gradient of U_xi is dM_xi (co, tiles) V_xi (ci, tiles)^T, summed over tiles in blocks with
    // one GEMM per position, and the kernels' gradient is G^T dU G. The tiles are 4x4 where they
    // fill (WeightGradientTakesLargeTiles): the products shrink as in the forward pass (36 per 16
    // outputs instead of 16 per 4). In image-row order, on the Cascade Lake VM (best of 4,
    // alternating, same blocks), the weight gradient went 101-104 -> 96-98 ms (d2l conv3, batch
    // 128) and 105-106 -> 94-97 (torchvision conv3, batch 32) on 4x4 tiles, level on 3a; 3b
    // (128 input channels) lost 3% and keeps 2x2 ones there, while interleaved it gains.
    public static void BackwardWeightsChannelMajor(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> dOutput, int outChannels, Span<float> dWeight)
    {
        Check(input.Length, inChannels, batch, height, width, "input");
        Check(dOutput.Length, outChannels, batch, height, width, "dOutput");
        if (dWeight.Length < outChannels * inChannels * 9)
        {
            throw new ArgumentException($"dWeight of {outChannels} x {inChannels} x 3 x 3 needs {outChannels * inChannels * 9} values, got {dWeight.Length}.", nameof(dWeight));
        }
        if (WeightGradientTakesLargeTiles(batch, inChannels, height, width))
        {
            BackwardWeights<Large>(input, batch, inChannels, height, width, dOutput, outChannels, dWeight);
        }
        else
        {
            BackwardWeights<Small>(input, batch, inChannels, height, width, dOutput, outChannels, dWeight);
        }
    }

    private static void BackwardWeights<T>(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> dOutput, int outChannels, Span<float> dWeight)
        where T : struct, ITiles
    {
        int tilesWide = (width + T.Size - 1) / T.Size;
        int tilesHigh = (height + T.Size - 1) / T.Size;
        int tiles = batch * tilesHigh * tilesWide;
        int lanes = LanesFor(batch, height, width, weightGradient: true);
        // Interleaved, a block holds whole vectors of tiles, and a tile row of every lane.
        int block = BlockTiles(T.Positions * (inChannels + outChannels), lanes == 0 ? tilesWide : tilesWide * lanes, tiles);
        if (lanes != 0)
        {
            block = Math.Max(block / lanes, 1) * lanes;
        }
        var s = new Shape(batch, inChannels, outChannels, height, width, tilesWide, tilesHigh, tiles, block, block + Slack, 1, 1, lanes);
        int uSize = T.Positions * outChannels * inChannels;
        int vSize = T.Positions * s.VStride;
        int gSize = T.Positions * s.GStride;
        float[] scratch = WeightGradientScratch(uSize + vSize + gSize);
        fixed (float* x = input, dy = dOutput, dw = dWeight, pScratch = scratch)
        {
            float* du = pScratch;
            float* v = pScratch + uSize;
            float* dm = v + vSize;
            var state = (s, x: (nint)x, dy: (nint)dy, du: (nint)du, v: (nint)v, dm: (nint)dm, first: 0, count: 0, accumulate: false);
            for (int first = 0; first < tiles; first += block)
            {
                state.first = first;
                state.count = Math.Min(block, tiles - first);
                state.accumulate = first > 0;
                Parallelism.For(inChannels, (long)state.count * 4 * T.Positions, state,
                    static (t, start, count) => T.TransformInput(t.s, (float*)t.x, (float*)t.v, t.first, t.count, start, count));
                Parallelism.For(outChannels, (long)state.count * 4 * T.Positions, state,
                    static (t, start, count) => TransformOutputGradient<T>(t.s, (float*)t.dy, (float*)t.dm, t.first, t.count, start, count));
                Parallelism.For(T.Positions, (long)state.count * inChannels * outChannels, state, static (t, start, count) =>
                {
                    for (int xi = start; xi < start + count; xi++)
                    {
                        int m = t.s.COut, n = t.s.CIn;
                        Gemm.Multiply(false, true, m, n, t.count,
                            new ReadOnlySpan<float>((float*)t.dm + (long)xi * t.s.GStride, t.s.GStride), t.s.Ld,
                            new ReadOnlySpan<float>((float*)t.v + (long)xi * t.s.VStride, t.s.VStride), t.s.Ld,
                            new Span<float>((float*)t.du + (long)xi * m * n, m * n), n, t.accumulate);
                    }
                });
            }
            Parallelism.For(outChannels, inChannels * 4 * T.Positions, (du: (nint)du, dw: (nint)dw, outChannels, inChannels),
                static (t, start, count) =>
                {
                    if (T.Size == Large.Size)
                    {
                        Large.AccumulateKernelGradients((float*)t.du, (float*)t.dw, t.outChannels, t.inChannels, start, count);
                    }
                    else
                    {
                        AccumulateKernelGradients((float*)t.du, (float*)t.dw, t.outChannels, t.inChannels, start, count);
                    }
                });
        }
    }

    private static void TransformOutputGradient<T>(in Shape s, float* dy, float* dm, int first, int count, int channel, int channels)
        where T : struct, ITiles
    {
        if (T.Size == Large.Size)
        {
            Large.TransformOutputGradient(s, dy, dm, first, count, channel, channels);
        }
        else
        {
            TransformOutputGradient(s, dy, dm, first, count, channel, channels);
        }
    }

    [ThreadStatic]
    private static float[]? t_weightGradient;

    // Blocks of tiles keep V and dM under this many floats, a core's L2 in bytes, so the 16 or
    // 36 products read them from L2 rather than L3 (but see MinBlockTiles). On a 1 MiB L2 this
    // ran the weight gradient 1.3-2x faster than 8 MiB blocks (conv3, 3b, 4e at batch 32; d2l
    // at 128), with either vector width.
    internal static int BlockFloats { get; } = s_l2Bytes / sizeof(float);

    /// <summary>Tiles per weight-gradient block instead of <see cref="BlockTiles"/>' choice (tests).</summary>
    internal static int? BlockTilesForced { get; set; }

    // A block is one k slice of the 16 or 36 products, so below some 64 tiles their packing and
    // their pass over dU outweigh the cache the L2 budget saves; a block that ends inside a tile
    // row splits that row's input twice and starts transforms mid-row. On the Cascade Lake VM
    // (best of 4, alternating, batch 128 d2l and 32 torchvision) blocks of 64 tiles or more cut to
    // whole tile rows, against the L2 budget alone: torchvision conv3 (4x4 tiles) 105 -> 95 ms,
    // 3b 51 -> 47, d2l 4e 22.1 -> 21.0, 3b 41 -> 39.7, 3a 25.6 -> 24.1, d2l conv3 level.
    private const int MinBlockTiles = 64;

    // Tiles per weight-gradient block for a V and dM of floatsPerTile each tile.
    internal static int BlockTiles(int floatsPerTile, int tilesWide, int tiles)
    {
        if (BlockTilesForced is int forced)
        {
            return Math.Clamp(forced, 1, tiles);
        }
        int block = Math.Max(BlockFloats / floatsPerTile, MinBlockTiles);
        if (block >= tilesWide)
        {
            block = block / tilesWide * tilesWide;
        }
        return Math.Clamp(block, 1, tiles);
    }

    private static float[] WeightGradientScratch(int size)
    {
        if (t_weightGradient is null || t_weightGradient.Length < size)
        {
            t_weightGradient = new float[size];
        }
        return t_weightGradient;
    }

    // dw[o][i] (3, 3) += G^T dU[xi][o][i] G for output channels [start, start + count).
    private static void AccumulateKernelGradients(float* du, float* dw, int outChannels, int inChannels, int start, int count)
    {
        float* d = stackalloc float[Small.Positions];
        float* half = stackalloc float[12];
        long plane = (long)outChannels * inChannels;
        for (int o = start; o < start + count; o++)
        {
            for (int i = 0; i < inChannels; i++)
            {
                for (int xi = 0; xi < Small.Positions; xi++)
                {
                    d[xi] = du[xi * plane + (long)o * inChannels + i];
                }
                // G^T d: rows of the 4 x 4 into the 3 rows of the kernel.
                for (int c = 0; c < 4; c++)
                {
                    float d0 = d[c], d1 = d[4 + c], d2 = d[8 + c], d3 = d[12 + c];
                    half[c] = d0 + 0.5f * (d1 + d2);
                    half[4 + c] = 0.5f * (d1 - d2);
                    half[8 + c] = 0.5f * (d1 + d2) + d3;
                }
                // (G^T d) G: columns likewise.
                float* g = dw + ((long)o * inChannels + i) * 9;
                for (int r = 0; r < 3; r++)
                {
                    float r0 = half[4 * r], r1 = half[4 * r + 1], r2 = half[4 * r + 2], r3 = half[4 * r + 3];
                    g[3 * r] += r0 + 0.5f * (r1 + r2);
                    g[3 * r + 1] += 0.5f * (r1 - r2);
                    g[3 * r + 2] += 0.5f * (r1 + r2) + r3;
                }
            }
        }
    }

    // dM[xi][c][t - first] = (A dY A^T)[xi] for output channels [channel, channel + channels) and
    // tiles [first, first + count), dY's 2 x 2 tile zero outside the image. Rows of dY are split
    // like the input's, so even[tx + 1] and odd[tx] are its columns 2tx + 1 and 2tx.
    private static void TransformOutputGradient(in Shape s, float* dy, float* dm, int first, int count, int channel, int channels)
    {
        if (s.Lanes != 0)
        {
            GatherAndTransform(s, new SmallGradientTiles(), dy, dm, s.GStride, first, count, channel, channels);
            return;
        }
        int stride = s.TilesWide + 1 + Slack;
        float* buffer = stackalloc float[4 * stride];
        new Span<float>(buffer, 4 * stride).Clear();
        float* zero = stackalloc float[stride];
        new Span<float>(zero, stride).Clear();
        int plane = s.Height * s.Width;
        long positionStride = s.GStride;
        for (int t = first; t < first + count;)
        {
            var (image, ty, tx0, tx1) = Segment(s, t, first + count);
            int oy = 2 * ty;
            for (int c = channel; c < channel + channels; c++)
            {
                float* source = dy + ((long)c * s.Batch + image) * plane;
                float* even0 = buffer, odd0 = buffer + stride, even1 = buffer + 2 * stride, odd1 = buffer + 3 * stride;
                Small.SplitRow(source + (long)oy * s.Width, s.Width, s.TilesWide, even0, odd0);
                if (oy + 1 < s.Height)
                {
                    Small.SplitRow(source + (long)(oy + 1) * s.Width, s.Width, s.TilesWide, even1, odd1);
                }
                else
                {
                    even1 = zero;
                    odd1 = zero;
                }
                float* target = dm + (long)c * s.Ld + (t - first) - tx0;
                for (int tx = tx0; tx < tx1; tx += 8)
                {
                    // Row a of the tile: y0 = column 2tx, y1 = column 2tx + 1; A y = (y0, y0 + y1, y0 - y1, -y1).
                    Vector256<float> a0 = Vector256.Load(odd0 + tx), a1 = Vector256.Load(even0 + tx + 1);
                    Vector256<float> b0 = Vector256.Load(odd1 + tx), b1 = Vector256.Load(even1 + tx + 1);
                    Vector256<float> p0 = a0, p1 = a0 + a1, p2 = a0 - a1, p3 = -a1;
                    Vector256<float> q0 = b0, q1 = b0 + b1, q2 = b0 - b1, q3 = -b1;
                    float* d = target + tx;
                    GradientRow(d, positionStride, p0, p1, p2, p3);
                    GradientRow(d + 4 * positionStride, positionStride, p0 + q0, p1 + q1, p2 + q2, p3 + q3);
                    GradientRow(d + 8 * positionStride, positionStride, p0 - q0, p1 - q1, p2 - q2, p3 - q3);
                    GradientRow(d + 12 * positionStride, positionStride, -q0, -q1, -q2, -q3);
                }
            }
            t += tx1 - tx0;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientRow(float* d, long positionStride, Vector256<float> m0, Vector256<float> m1, Vector256<float> m2, Vector256<float> m3)
    {
        Vector256.Store(m0, d);
        Vector256.Store(m1, d + positionStride);
        Vector256.Store(m2, d + 2 * positionStride);
        Vector256.Store(m3, d + 3 * positionStride);
    }

    private static void Check(int length, int channels, int batch, int height, int width, string name)
    {
        long needed = (long)channels * batch * height * width;
        if (length < needed)
        {
            throw new ArgumentException($"A channel-major {name} of {channels} x {batch} x {height} x {width} needs {needed} values, got {length}.", name);
        }
    }

    private static void CheckEpilogue(int biasLength, int scaleLength, int outChannels)
    {
        if ((biasLength != 0 && biasLength < outChannels) || (scaleLength != 0 && scaleLength < outChannels))
        {
            throw new ArgumentException($"Bias and scale need {outChannels} values (one per output channel) or none, got {biasLength} and {scaleLength}.");
        }
    }

    private static int TilesWide(int width) => (width + 1) / 2;

    private static int Blocks(int channels) => (channels + Rows - 1) / Rows;

    private static int PositionsOf(WinogradTiles tiles) => tiles == WinogradTiles.F2x2Kernel3 ? Small.Positions : Large.Positions;

    private static int KernelOf(WinogradTiles tiles) => tiles == WinogradTiles.F2x2Kernel5 ? Five.Kernel : 3;

    // Floats of U for a convolution to outChannels from inChannels: 16 or 36 positions x whole
    // six-row panels.
    internal static int PackedWeightLength(int outChannels, int inChannels, WinogradTiles tiles) =>
        PositionsOf(tiles) * Blocks(outChannels) * Rows * inChannels;

    // The calling thread's U, grown once to the largest layer.
    private static Span<float> PackedWeights(int outChannels, int inChannels, WinogradTiles tiles)
    {
        int size = PackedWeightLength(outChannels, inChannels, tiles);
        if (t_packedWeights is null || t_packedWeights.Length < size)
        {
            t_packedWeights = new float[size];
        }
        return t_packedWeights.AsSpan(0, size);
    }

    // weight (co, ci, k, k) -> u = G g G^T for each kernel g, packed as the micro-kernel's A:
    // u[block][xi][c][r] is output channel block * 6 + r (a block's 16 panels
    // lie together, so it streams in from memory in one run), input channel c (zero past the last
    // output channel). (output, input) is (co, ci), or (ci, co) with every kernel rotated by 180
    // degrees for the input gradient.
    internal static void TransformWeights(ReadOnlySpan<float> weight, int outChannels, int inChannels, WinogradTiles tiles, bool transposeAndRotate, Span<float> u)
    {
        int rows = transposeAndRotate ? inChannels : outChannels;
        int cols = transposeAndRotate ? outChannels : inChannels;
        int length = PackedWeightLength(rows, cols, tiles);
        int taps = KernelOf(tiles) * KernelOf(tiles);
        if (weight.Length < outChannels * inChannels * taps || u.Length < length)
        {
            throw new ArgumentException($"Weights of {outChannels} x {inChannels} x {KernelOf(tiles)} x {KernelOf(tiles)} need {outChannels * inChannels * taps} values and their transform {length}.");
        }
        u.Slice(0, length).Clear();
        if (VectorTransformsWeights && Avx2.IsSupported && tiles != WinogradTiles.F2x2Kernel5 && !transposeAndRotate)
        {
            TransformWeightBlocks(weight, outChannels, inChannels, tiles, u);
            return;
        }
        fixed (float* w = weight, pu = u)
        {
            Parallelism.For(outChannels, inChannels * 64,
                (w: (nint)w, u: (nint)pu, outChannels, inChannels, tiles, taps, transposeAndRotate, cols),
                static (s, start, count) =>
                {
                    int positions = PositionsOf(s.tiles);
                    float* g = stackalloc float[Five.Kernel * Five.Kernel];
                    float* t = stackalloc float[Large.Positions];
                    for (int o = start; o < start + count; o++)
                    {
                        for (int i = 0; i < s.inChannels; i++)
                        {
                            float* kernel = (float*)s.w + ((long)o * s.inChannels + i) * s.taps;
                            for (int j = 0; j < s.taps; j++)
                            {
                                g[j] = kernel[s.transposeAndRotate ? s.taps - 1 - j : j];
                            }
                            switch (s.tiles)
                            {
                                case WinogradTiles.F4x4Kernel3:
                                    Large.TransformKernel(g, t);
                                    break;
                                case WinogradTiles.F2x2Kernel5:
                                    Five.TransformKernel(g, t);
                                    break;
                                default:
                                    Small.TransformKernel(g, t);
                                    break;
                            }
                            int row = s.transposeAndRotate ? i : o;
                            int col = s.transposeAndRotate ? o : i;
                            for (int xi = 0; xi < positions; xi++)
                            {
                                ((float*)s.u)[(((long)(row / Rows) * positions + xi) * s.cols + col) * Rows + row % Rows] = t[xi];
                            }
                        }
                    }
                });
        }
    }

    /// <summary>Tiles per group for this many input channels: a multiple of the micro-tile width whose V fits <see cref="GroupFloats"/>.</summary>
    internal static int GroupTiles(int inChannels, int tiles) => GroupTiles(inChannels, tiles, GroupFloats, Small.Positions);

    private static int GroupTiles(int inChannels, int tiles, int groupFloats, int positions)
    {
        int fit = groupFloats / (positions * inChannels) / Panel * Panel;
        int needed = (tiles + Panel - 1) / Panel * Panel;
        return Math.Clamp(Math.Min(fit, needed), Panel, MaxGroupTiles);
    }

    // K chunks of a product whose V for two panels of tiles would not fit the group: the input
    // channels are transformed and multiplied a chunk at a time, the products summed in M, which
    // then holds every output channel of the group (so the output transform waits for the last
    // chunk). Where two panels fit whole, or kSplit is off, 1. The input gradients from 192
    // channels (conv3 in both presets) ran on 2x2 tiles before: on the Cascade Lake VM (best of
    // 6, three rounds alternating) d2l conv3 (24x24, batch 128) 75.4-76.2 -> 71.5-73.7 ms in two
    // chunks on 4x4 tiles, torchvision conv3 (56x56, batch 32) 91.7-93.9 -> 86.9-88.2. Some 40%
    // of its time is then the input transform of the 192 gradient channels.
    internal static int ChunksFor(int cIn, int cOut, int groupFloats, int positions, bool kSplit)
    {
        if (!kSplit || groupFloats / (positions * cIn) >= 2 * Panel)
        {
            return 1;
        }
        int rows = Blocks(cOut) * Rows;
        for (int chunks = 2; chunks <= MaxChunks && (cIn + chunks - 1) / chunks >= MinChunkChannels; chunks++)
        {
            if (groupFloats / (positions * ((cIn + chunks - 1) / chunks + rows)) >= 2 * Panel)
            {
                return chunks;
            }
        }
        return 1;
    }

    private const int MaxChunks = 4;

    /// <summary>Forces the k chunks of input gradients that are split (for tests: row order against interleaved tiles).</summary>
    internal static int? ChunksForced { get; set; }

    // Interleaved tiles are gathered a tile row of eight images at a time, each channel's rows
    // again for every group that reaches into the tile row, so k-split groups are whole tile rows
    // (about three panels), with as many chunks as keep a chunk's V within half the group's L2
    // budget; M, with every output channel of the group, then overflows to L3, which measured
    // cheaper than gathering rows two or three times. On the Cascade Lake VM (best of 6-8, two
    // rounds) the input gradient of d2l conv3 (192 -> 64 channels, 24x24, batch 128) went
    // 66.0 ms (two chunks, groups of 32) -> 54.0 (four chunks, 48), and that of 3b
    // (192 -> 128, 12x12), which no chunking fitted on 4x4 tiles, 30.4 ms on 2x2 tiles -> 24.3.
    // (0, 0) where no such plan fits.
    internal static (int Group, int Chunks) InterleavedChunks(int cIn, int tilesWide, int groupFloats, int positions)
    {
        int rowTiles = tilesWide * ImageLanes;
        int group = Math.Max(1, ChunkedGroupTiles / rowTiles) * rowTiles;
        if (group % Panel != 0 || group > MaxGroupTiles)
        {
            return (0, 0);
        }
        for (int chunks = 2; chunks <= MaxChunks && (cIn + chunks - 1) / chunks >= MinChunkChannels; chunks++)
        {
            if ((long)positions * ((cIn + chunks - 1) / chunks) * group <= groupFloats / 2)
            {
                return (group, chunks);
            }
        }
        return (0, 0);
    }

    private const int ChunkedGroupTiles = 3 * Panel;

    // Each chunk's products are micro-kernel calls with this many k steps or more.
    private const int MinChunkChannels = 32;

    // Tile t is (image, ty, tx) = (t / (th * tw), t / tw % th, t % tw).
    private static void Run<T>(
        ReadOnlySpan<float> input, int batch, int cIn, int height, int width, ReadOnlySpan<float> u, int cOut,
        ReadOnlySpan<float> bias, ReadOnlySpan<float> scale, bool relu, Span<float> output, int groupFloats, bool kSplit = false)
        where T : struct, ITiles
    {
        int tilesWide = (width + T.Size - 1) / T.Size;
        int tilesHigh = (height + T.Size - 1) / T.Size;
        int tiles = batch * tilesHigh * tilesWide;
        int blocks = Blocks(cOut);
        int lanes = LanesFor(batch, height, width);
        int chunks = ChunksFor(cIn, cOut, groupFloats, T.Positions, kSplit);
        int group = chunks == 1
            ? GroupTiles(cIn, tiles, groupFloats, T.Positions)
            : Math.Clamp(Math.Min(groupFloats / (T.Positions * ((cIn + chunks - 1) / chunks + blocks * Rows)) / Panel * Panel,
                (tiles + Panel - 1) / Panel * Panel), Panel, MaxGroupTiles);
        bool split = kSplit && groupFloats / (T.Positions * cIn) < 2 * Panel;
        if (split && lanes != 0 && InterleavedChunks(cIn, tilesWide, groupFloats, T.Positions) is (> 0, > 1) plan)
        {
            (group, chunks) = plan;
        }
        if (split && ChunksForced is int forced)
        {
            chunks = forced;
        }
        int groups = (tiles + group - 1) / group;
        // With few groups the output channels are split as well, so every thread has work; each
        // split transforms its group's input again, a small cost beside its products.
        int splits = Math.Clamp((4 * Gemm.MaxThreads + groups - 1) / groups, 1, blocks);
        var shape = new Shape(batch, cIn, cOut, height, width, tilesWide, tilesHigh, tiles, group, group + Slack, splits, chunks, lanes);
        fixed (float* x = input, pu = u, y = output, pBias = bias, pScale = scale)
        {
            Parallelism.For(groups * splits, (long)group * cIn * Rows * blocks / splits * T.Positions,
                (shape, x: (nint)x, u: (nint)pu, y: (nint)y,
                    bias: bias.IsEmpty ? 0 : (nint)pBias, scale: scale.IsEmpty ? 0 : (nint)pScale, relu),
                static (s, start, count) => RunUnits<T>(s.shape, (float*)s.x, (float*)s.u, (float*)s.y,
                    (float*)s.bias, (float*)s.scale, s.relu, start, count));
        }
    }

    private readonly record struct Shape(
        int Batch, int CIn, int COut, int Height, int Width, int TilesWide, int TilesHigh,
        int Tiles, int Group, int Ld, int Splits, int Chunks = 1, int Lanes = 0)
    {
        // Input channels per k chunk (all of them without a split; see ChunksFor).
        public int ChunkChannels => (CIn + Chunks - 1) / Chunks;

        // The 16 positions of V and M lie an odd number of cache lines apart: the transforms
        // touch all 16 at once, and at a multiple of 2 KiB they would share two L1 sets.
        public int VStride => OddLines(ChunkChannels * Ld);

        public int MStride => OddLines(Rows * Ld);

        // The output gradient's transform, for the weight gradient.
        public int GStride => OddLines(COut * Ld);

        private static int OddLines(int floats)
        {
            int lines = (floats + 15) / 16;
            return (lines | 1) * 16;
        }
    }

    // Units [start, start + count): unit = group * splits + split.
    private static void RunUnits<T>(in Shape s, float* x, float* u, float* y, float* bias, float* scale, bool relu, int start, int count)
        where T : struct, ITiles
    {
        int blocks = Blocks(s.COut);
        int vLength = T.Positions * s.VStride;
        // With k chunks M holds each of the split's blocks of output channels; else one block.
        int mLength = T.Positions * s.MStride * (s.Chunks == 1 ? 1 : (blocks + s.Splits - 1) / s.Splits);
        if (t_group is null || t_group.Length < vLength + mLength)
        {
            t_group = new float[vLength + mLength];
        }
        fixed (float* scratch = t_group)
        {
            float* v = scratch;
            float* m = scratch + vLength;
            int transformed = -1;
            for (int unit = start; unit < start + count; unit++)
            {
                int g = unit / s.Splits;
                int split = unit % s.Splits;
                int first = g * s.Group;
                int tiles = Math.Min(s.Group, s.Tiles - first);
                if (s.Chunks > 1)
                {
                    RunChunked<T>(s, x, u, y, bias, scale, relu, v, m, first, tiles, blocks * split / s.Splits, blocks * (split + 1) / s.Splits);
                    continue;
                }
                if (g != transformed)
                {
                    T.TransformInput(s, x, v, first, tiles, 0, s.CIn);
                    transformed = g;
                }
                int panels = (tiles + Panel - 1) / Panel;
                for (int block = blocks * split / s.Splits; block < blocks * (split + 1) / s.Splits; block++)
                {
                    for (int xi = 0; xi < T.Positions; xi++)
                    {
                        float* a = u + ((long)block * T.Positions + xi) * s.CIn * Rows;
                        float* b = v + xi * s.VStride;
                        float* c = m + xi * s.MStride;
                        for (int p = 0; p < panels; p += Gemm.MaxTilePanels)
                        {
                            Gemm.MicroKernel(Math.Min(Gemm.MaxTilePanels, panels - p), s.CIn, a, b + p * Panel, s.Ld, c + p * Panel, s.Ld);
                        }
                    }
                    int channels = Math.Min(Rows, s.COut - block * Rows);
                    T.TransformOutput(s, m, y, first, tiles, block * Rows, channels, bias, scale, relu);
                }
            }
        }
    }

    // One group's output channel blocks [block0, block1) with the products in k chunks: M[block]
    // accumulates every chunk's products, in chunk order, before its output transform.
    private static void RunChunked<T>(in Shape s, float* x, float* u, float* y, float* bias, float* scale, bool relu,
        float* v, float* m, int first, int tiles, int block0, int block1)
        where T : struct, ITiles
    {
        int panels = (tiles + Panel - 1) / Panel;
        for (int chunk = 0; chunk < s.Chunks; chunk++)
        {
            int c0 = chunk * s.ChunkChannels;
            int channels = Math.Min(s.ChunkChannels, s.CIn - c0);
            // V is written at v + (c - c0) * Ld for channel c.
            T.TransformInput(s, x, v - (long)c0 * s.Ld, first, tiles, c0, channels);
            for (int block = block0; block < block1; block++)
            {
                for (int xi = 0; xi < T.Positions; xi++)
                {
                    float* a = u + (((long)block * T.Positions + xi) * s.CIn + c0) * Rows;
                    float* b = v + xi * s.VStride;
                    float* c = m + ((long)(block - block0) * T.Positions + xi) * s.MStride;
                    for (int p = 0; p < panels; p += Gemm.MaxTilePanels)
                    {
                        Gemm.MicroKernel(Math.Min(Gemm.MaxTilePanels, panels - p), channels, a, b + p * Panel, s.Ld, c + p * Panel, s.Ld,
                            accumulate: chunk > 0);
                    }
                }
            }
        }
        for (int block = block0; block < block1; block++)
        {
            int channels = Math.Min(Rows, s.COut - block * Rows);
            T.TransformOutput(s, m + (long)(block - block0) * T.Positions * s.MStride, y, first, tiles, block * Rows, channels, bias, scale, relu);
        }
    }

    // The part of tiles [t, end) in t's tile row: its image, tile row ty and tiles [tx0, tx1).
    // Groups and blocks of tiles start and end inside tile rows, so the transforms walk them a
    // row segment at a time.
    private static (int Image, int TileY, int Tx0, int Tx1) Segment(in Shape s, int t, int end)
    {
        int tileRow = t / s.TilesWide;
        int tx0 = t % s.TilesWide;
        return (tileRow / s.TilesHigh, tileRow % s.TilesHigh, tx0, Math.Min(s.TilesWide, tx0 + end - t));
    }

    // Transforms run eight tiles at a time; the last vector of a tile row reaches up to seven
    // tiles past it (plus one for the shifted column streams), so rows carry this much slack.
    private const int Slack = 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Epilogue(Vector256<float> value, Vector256<float> scale, Vector256<float> bias, bool relu)
    {
        Vector256<float> result = value * scale + bias;
        return relu ? Vector256.Max(result, Vector256<float>.Zero) : result;
    }

    // phases[k][j] = row[step * j + k + origin] for j in [0, tilesWide + 1], zero outside
    // [0, width); phases are written up to the next multiple of eight entries. Eight tiles at a
    // time, from loads masked to the row (a masked lane reads nothing, so the loads may start
    // before the row or run past it).
    private static void SplitRow(float* row, int width, int tilesWide, int step, int origin, float** phases)
    {
        if (Avx2.IsSupported && step is 2 or 4)
        {
            Vector256<int> lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            Vector256<uint> limit = Vector256.Create((uint)width);
            float* start = row + origin;
            if (step == 4)
            {
                // Eight tiles' four phases are an 8 x 4 transpose: within each 128-bit lane,
                // unpacking and shuffling leave tiles in the order 0 2 4 6 1 3 5 7, which one
                // permutation puts right.
                Vector256<int> order = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
                for (int j = 0; j <= tilesWide + 1; j += 8)
                {
                    int column = 4 * j + origin;
                    Vector256<float> a = LoadInRow(start + 4 * j, column, lanes, limit);
                    Vector256<float> b = LoadInRow(start + 4 * j + 8, column + 8, lanes, limit);
                    Vector256<float> c = LoadInRow(start + 4 * j + 16, column + 16, lanes, limit);
                    Vector256<float> d = LoadInRow(start + 4 * j + 24, column + 24, lanes, limit);
                    Vector256<float> t0 = Avx.UnpackLow(a, b), t1 = Avx.UnpackHigh(a, b);
                    Vector256<float> t2 = Avx.UnpackLow(c, d), t3 = Avx.UnpackHigh(c, d);
                    Avx.Store(phases[0] + j, Avx2.PermuteVar8x32(Avx.Shuffle(t0, t2, 0x44), order));
                    Avx.Store(phases[1] + j, Avx2.PermuteVar8x32(Avx.Shuffle(t0, t2, 0xEE), order));
                    Avx.Store(phases[2] + j, Avx2.PermuteVar8x32(Avx.Shuffle(t1, t3, 0x44), order));
                    Avx.Store(phases[3] + j, Avx2.PermuteVar8x32(Avx.Shuffle(t1, t3, 0xEE), order));
                }
                return;
            }
            for (int j = 0; j <= tilesWide + 1; j += 8)
            {
                int column = 2 * j + origin;
                Vector256<float> a = LoadInRow(start + 2 * j, column, lanes, limit);
                Vector256<float> b = LoadInRow(start + 2 * j + 8, column + 8, lanes, limit);
                // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], likewise the odd lanes.
                Avx.Store(phases[0] + j, Avx2.Permute4x64(Avx.Shuffle(a, b, 0b10_00_10_00).AsDouble(), 0b11_01_10_00).AsSingle());
                Avx.Store(phases[1] + j, Avx2.Permute4x64(Avx.Shuffle(a, b, 0b11_01_11_01).AsDouble(), 0b11_01_10_00).AsSingle());
            }
            return;
        }
        for (int k = 0; k < step; k++)
        {
            for (int j = 0; j <= tilesWide + 1; j++)
            {
                int column = step * j + k + origin;
                phases[k][j] = (uint)column < (uint)width ? row[column] : 0f;
            }
        }
    }

    // The eight floats at p, columns column .. column + 7 of a row `limit` wide (zero outside it).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> LoadInRow(float* p, int column, Vector256<int> lanes, Vector256<uint> limit)
    {
        Vector256<uint> columns = (lanes + Vector256.Create(column)).AsUInt32();
        if (Vector256.LessThanAll(columns, limit))
        {
            return Avx.LoadVector256(p);
        }
        return Avx.MaskLoad(p, Vector256.LessThan(columns, limit).AsSingle());
    }

    // F(2x2, 3x3): 4 x 4 input tiles, 16 positions.
    private readonly struct Small : ITiles
    {
        public static int Size => 2;

        public static int Positions => 16;

        // t (4, 4) = G g G^T for g (3, 3).
        public static void TransformKernel(float* g, float* t)
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

        // V[xi][c][t - first] = (B^T d B)[xi] for channels [channel, channel + channels) and tiles
        // [first, first + count).
        // Each input row is split into its even and odd columns, padded: even[j] = x[2j - 1],
        // odd[j] = x[2j], zero outside the image, so the tile at tx reads columns even[tx], odd[tx],
        // even[tx + 1], odd[tx + 1] and eight tiles take one vector from each.
        public static void TransformInput(in Shape s, float* x, float* v, int first, int count, int channel, int channels)
        {
            if (s.Lanes != 0)
            {
                GatherAndTransform(s, new SmallInputTiles(), x, v, s.VStride, first, count, channel, channels);
                return;
            }
            int stride = s.TilesWide + 1 + Slack;
            // Reads reach index tilesWide + 7 at most; entries past tilesWide stay zero.
            float* buffer = stackalloc float[8 * stride];
            new Span<float>(buffer, 8 * stride).Clear();
            float* zero = stackalloc float[stride];
            new Span<float>(zero, stride).Clear();
            float** even = stackalloc float*[4];
            float** odd = stackalloc float*[4];
            int plane = s.Height * s.Width;
            long positionStride = s.VStride;
            for (int t = first; t < first + count;)
            {
                var (image, ty, tx0, tx1) = Segment(s, t, first + count);
                for (int c = channel; c < channel + channels; c++)
                {
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
                    // A vector that runs past tx1 writes the next segment's first tiles (rewritten
                    // after) or the row's slack.
                    float* target = v + (long)c * s.Ld + (t - first) - tx0;
                    for (int tx = tx0; tx < tx1; tx += 8)
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
                t += tx1 - tx0;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
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

        // Column d[0], d[w], d[2w], d[3w] of eight interleaved tiles: B^T d.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Vertical(Vector256<float>* d, int w,
            out Vector256<float> r0, out Vector256<float> r1, out Vector256<float> r2, out Vector256<float> r3)
        {
            Vector256<float> d0 = d[0], d1 = d[w], d2 = d[2 * w], d3 = d[3 * w];
            r0 = d0 - d2;
            r1 = d1 + d2;
            r2 = d2 - d1;
            r3 = d1 - d3;
        }

        // Columns c0..c3 of eight tiles (c0 = even[tx], c1 = odd[tx], c2 = even[tx + 1], c3 = odd[tx + 1]).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Horizontal(float* d, long positionStride,
            Vector256<float> c0, Vector256<float> c2, Vector256<float> c1, Vector256<float> c3)
        {
            Vector256.Store(c0 - c2, d);
            Vector256.Store(c1 + c2, d + positionStride);
            Vector256.Store(c2 - c1, d + 2 * positionStride);
            Vector256.Store(c1 - c3, d + 3 * positionStride);
        }

        // even[j] = row[2j - 1], odd[j] = row[2j] for j in [0, tilesWide], zero outside [0, width).
        public static void SplitRow(float* row, int width, int tilesWide, float* even, float* odd)
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

        // Output channels [channel, channel + channels) of tiles [first, first + count) from their
        // products m[xi][r][t - first]: Y = A^T M A, then the epilogue, two image rows per tile row.
        public static void TransformOutput(in Shape s, float* m, float* y, int first, int count, int channel, int channels,
            float* bias, float* scale, bool relu)
        {
            if (s.Lanes != 0)
            {
                TransformAndScatter(s, new SmallOutputTiles(), m, y, first, count, channel, channels, bias, scale, relu);
                return;
            }
            int rowLength = 2 * (s.TilesWide + Slack);
            float* top = stackalloc float[rowLength];
            float* bottom = stackalloc float[rowLength];
            long positionStride = s.MStride;
            int plane = s.Height * s.Width;
            for (int r = 0; r < channels; r++)
            {
                int c = channel + r;
                Vector256<float> channelScale = Vector256.Create(scale is null ? 1f : scale[c]);
                Vector256<float> channelBias = Vector256.Create(bias is null ? 0f : bias[c]);
                for (int t = first; t < first + count;)
                {
                    var (image, ty, tx0, tx1) = Segment(s, t, first + count);
                    float* source = m + (long)r * s.Ld + (t - first) - tx0;
                    for (int tx = tx0; tx < tx1; tx += 8)
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
                    int oy = 2 * ty;
                    int ox = 2 * tx0;
                    int length = Math.Min(2 * tx1, s.Width) - ox;
                    float* target = y + ((long)c * s.Batch + image) * plane + (long)oy * s.Width + ox;
                    new ReadOnlySpan<float>(top + ox, length).CopyTo(new Span<float>(target, length));
                    if (oy + 1 < s.Height)
                    {
                        new ReadOnlySpan<float>(bottom + ox, length).CopyTo(new Span<float>(target + s.Width, length));
                    }
                    t += tx1 - tx0;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Column(float* p, long positionStride, int b, out Vector256<float> row0, out Vector256<float> row1)
        {
            Vector256<float> m0 = Vector256.Load(p + b * positionStride);
            Vector256<float> m1 = Vector256.Load(p + (4 + b) * positionStride);
            Vector256<float> m2 = Vector256.Load(p + (8 + b) * positionStride);
            Vector256<float> m3 = Vector256.Load(p + (12 + b) * positionStride);
            row0 = m0 + m1 + m2;
            row1 = m1 - m2 - m3;
        }

        // d[0..16) = e0 o0 e1 o1 ... e7 o7.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(float* d, Vector256<float> even, Vector256<float> odd)
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

    // One tile size's transforms; Run and RunUnits are generic over it, so each size gets its own
    // compiled loop with the transforms inlined.
    private interface ITiles
    {
        // Outputs per tile side, and positions (input tile values) per tile: (Size + 2)^2.
        static abstract int Size { get; }

        static abstract int Positions { get; }

        // t (positions) = G g G^T for g (3, 3).
        static abstract void TransformKernel(float* g, float* t);

        // V[xi][c][t - first] = (B^T d B)[xi] for channels [channel, channel + channels) and tiles [first, first + count).
        static abstract void TransformInput(in Shape s, float* x, float* v, int first, int count, int channel, int channels);

        // Output channels [channel, channel + channels) of tiles [first, first + count) from
        // their products m[xi][r][t - first]: Y = A^T M A, then the epilogue.
        static abstract void TransformOutput(in Shape s, float* m, float* y, int first, int count, int channel, int channels,
            float* bias, float* scale, bool relu);
    }

    // F(4x4, 3x3): 6 x 6 input tiles, 36 positions. The interpolation points are 0, 1, -1, 1/2,
    // -2 and infinity rather than the common 0, +-1, +-2: in a float32 simulation (192 input
    // channels, normal inputs) their outputs were three times closer to the exact sum, since
    // B^T's and A^T's entries stay small; all of B^T's and A^T's are exact in binary, and G's
    // fractions are rounded once, computed in double.
    // <code>
    // B^T = | 1 -3/2  -2   3/2  1    0 |   G = |  1      0     0    |   A^T = | 1  1  1  1    1  0 |
    //       | 0  -1   1/2  5/2  1    0 |       |  1/3    1/3   1/3  |         | 0  1 -1  1/2 -2  0 |
    //       | 0   1  -5/2  1/2  1    0 |       | -1/3    1/3  -1/3  |         | 0  1  1  1/4  4  0 |
    //       | 0  -2   -1   2    1    0 |       | -16/15 -8/15 -4/15 |         | 0  1 -1  1/8 -8  1 |
    //       | 0  1/2  -1  -1/2  1    0 |       |  1/15  -2/15  4/15 |
    //       | 0   1  -3/2 -2   3/2   1 |       |  0      0     1    |
    // </code>
    // Still, its error is several times F(2x2, 3x3)'s (WinogradTests).
    private readonly struct Large : ITiles
    {
        public static int Size => 4;

        public static int Positions => 36;

        public static void TransformKernel(float* g, float* t)
        {
            // G g (6 x 3) in double, then (G g) G^T, so the kernel's transform rounds once.
            double* gg = stackalloc double[18];
            double* row = stackalloc double[6];
            for (int c = 0; c < 3; c++)
            {
                double g0 = g[c], g1 = g[3 + c], g2 = g[6 + c];
                Interpolate(g0, g1, g2, gg, c, 3);
            }
            for (int r = 0; r < 6; r++)
            {
                Interpolate(gg[3 * r], gg[3 * r + 1], gg[3 * r + 2], row, 0, 1);
                for (int j = 0; j < 6; j++)
                {
                    t[6 * r + j] = (float)row[j];
                }
            }
        }

        // d[offset + i * step] = (G (g0, g1, g2))[i].
        private static void Interpolate(double g0, double g1, double g2, double* d, int offset, int step)
        {
            d[offset] = g0;
            d[offset + step] = (g0 + g1 + g2) / 3;
            d[offset + 2 * step] = -(g0 - g1 + g2) / 3;
            d[offset + 3 * step] = -(16 * g0 + 8 * g1 + 4 * g2) / 15;
            d[offset + 4 * step] = (g0 - 2 * g1 + 4 * g2) / 15;
            d[offset + 5 * step] = g2;
        }

        public static void TransformInput(in Shape s, float* x, float* v, int first, int count, int channel, int channels) =>
            TransformSixInput(s, x, v, first, count, channel, channels, Size, -1);

        // V for 6 x 6 input tiles that step by `step` columns and rows and start at
        // (step * ty + origin, step * tx + origin). Each input row is split into `step` phase
        // streams, phase k holding columns step * j + k + origin (zero outside the image), so
        // the tile at tx reads its column c at phase c % step of tx + c / step, and eight tiles
        // take one vector from each. Consecutive tile rows share 6 - step input rows, so the
        // split rows stay in six slots (row iy in slot iy % 6) while a channel's tiles are walked.
        public static void TransformSixInput(in Shape s, float* x, float* v, int first, int count, int channel, int channels, int step, int origin)
        {
            if (s.Lanes != 0)
            {
                GatherAndTransform(s, new SixInputTiles(step, origin), x, v, s.VStride, first, count, channel, channels);
                return;
            }
            int stride = s.TilesWide + 2 + Slack;
            float* buffer = stackalloc float[6 * 4 * stride];
            new Span<float>(buffer, 6 * 4 * stride).Clear();
            float* zero = stackalloc float[stride];
            new Span<float>(zero, stride).Clear();
            float** phases = stackalloc float*[6 * 4];
            long* held = stackalloc long[6];
            // B^T d for the eight tiles: rows[6 * i + column].
            Vector256<float>* rows = stackalloc Vector256<float>[36];
            int plane = s.Height * s.Width;
            long positionStride = s.VStride;
            for (int c = channel; c < channel + channels; c++)
            {
                new Span<long>(held, 6).Fill(-1);
                for (int t = first; t < first + count;)
                {
                    var (image, ty, tx0, tx1) = Segment(s, t, first + count);
                    float* source = x + ((long)c * s.Batch + image) * plane;
                    for (int i = 0; i < 6; i++)
                    {
                        int iy = step * ty + origin + i;
                        if ((uint)iy >= (uint)s.Height)
                        {
                            for (int k = 0; k < step; k++)
                            {
                                phases[step * i + k] = zero;
                            }
                            continue;
                        }
                        int slot = iy % 6;
                        for (int k = 0; k < step; k++)
                        {
                            phases[step * i + k] = buffer + (step * slot + k) * stride;
                        }
                        long row = (long)image * s.Height + iy;
                        if (held[slot] != row)
                        {
                            SplitRow(source + (long)iy * s.Width, s.Width, s.TilesWide, step, origin, phases + step * i);
                            held[slot] = row;
                        }
                    }
                    // A vector that runs past tx1 writes the next segment's first tiles (rewritten
                    // after) or the row's slack.
                    float* target = v + (long)c * s.Ld + (t - first) - tx0;
                    for (int tx = tx0; tx < tx1; tx += 8)
                    {
                        for (int column = 0; column < 6; column++)
                        {
                            int k = column % step, at = tx + column / step;
                            InputRows(
                                Vector256.Load(phases[k] + at), Vector256.Load(phases[step + k] + at), Vector256.Load(phases[2 * step + k] + at),
                                Vector256.Load(phases[3 * step + k] + at), Vector256.Load(phases[4 * step + k] + at), Vector256.Load(phases[5 * step + k] + at),
                                out rows[column], out rows[6 + column], out rows[12 + column],
                                out rows[18 + column], out rows[24 + column], out rows[30 + column]);
                        }
                        StoreInputColumns(rows, target + tx, positionStride);
                    }
                    t += tx1 - tx0;
                }
            }
        }

        // V[6i + j] at d, positions positionStride apart, = (B^T d B)[i][j] from rows[6i + j] = (B^T d)[i][j].
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void StoreInputColumns(Vector256<float>* rows, float* d, long positionStride)
        {
            for (int i = 0; i < 6; i++)
            {
                Vector256<float>* r = rows + 6 * i;
                InputRows(r[0], r[1], r[2], r[3], r[4], r[5], out var v0, out var v1, out var v2, out var v3, out var v4, out var v5);
                float* p = d + 6 * i * positionStride;
                Vector256.Store(v0, p);
                Vector256.Store(v1, p + positionStride);
                Vector256.Store(v2, p + 2 * positionStride);
                Vector256.Store(v3, p + 3 * positionStride);
                Vector256.Store(v4, p + 4 * positionStride);
                Vector256.Store(v5, p + 5 * positionStride);
            }
        }

        // (r0 .. r5) = B^T (d0 .. d5).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void InputRows(
            Vector256<float> d0, Vector256<float> d1, Vector256<float> d2, Vector256<float> d3, Vector256<float> d4, Vector256<float> d5,
            out Vector256<float> r0, out Vector256<float> r1, out Vector256<float> r2,
            out Vector256<float> r3, out Vector256<float> r4, out Vector256<float> r5)
        {
            Vector256<float> half = Vector256.Create(0.5f);
            Vector256<float> threeHalves = Vector256.Create(1.5f);
            Vector256<float> fiveHalves = Vector256.Create(2.5f);
            Vector256<float> d42 = d4 - d2;
            Vector256<float> d31 = d3 - d1;
            r0 = (d0 - d2) + d42 + d31 * threeHalves;
            r1 = (d4 - d1) + d2 * half + d3 * fiveHalves;
            r2 = (d4 + d1) - d2 * fiveHalves + d3 * half;
            r3 = d42 + (d31 + d31);
            r4 = d42 - d31 * half;
            r5 = (d5 - d3) - d31 + d42 * threeHalves;
        }

        public static void TransformOutput(in Shape s, float* m, float* y, int first, int count, int channel, int channels,
            float* bias, float* scale, bool relu) =>
            TransformSixOutput<Large>(s, m, y, first, count, channel, channels, bias, scale, relu);

        // Y = A^T M A for 6 x 6 tiles giving T.Size x T.Size outputs (4: Large, 2: Five), then
        // the epilogue, T.Size image rows per tile row.
        public static void TransformSixOutput<T>(in Shape s, float* m, float* y, int first, int count, int channel, int channels,
            float* bias, float* scale, bool relu) where T : struct, ITiles
        {
            if (s.Lanes != 0)
            {
                TransformAndScatter(s, new SixOutputTiles<T>(), m, y, first, count, channel, channels, bias, scale, relu);
                return;
            }
            int size = T.Size;
            int rowLength = size * (s.TilesWide + Slack);
            float* rowsOut = stackalloc float[4 * rowLength];
            // A^T M for the eight tiles: columns[6 * row + j].
            Vector256<float>* columns = stackalloc Vector256<float>[24];
            long positionStride = s.MStride;
            int plane = s.Height * s.Width;
            for (int r = 0; r < channels; r++)
            {
                int c = channel + r;
                Vector256<float> channelScale = Vector256.Create(scale is null ? 1f : scale[c]);
                Vector256<float> channelBias = Vector256.Create(bias is null ? 0f : bias[c]);
                for (int t = first; t < first + count;)
                {
                    var (image, ty, tx0, tx1) = Segment(s, t, first + count);
                    float* source = m + (long)r * s.Ld + (t - first) - tx0;
                    for (int tx = tx0; tx < tx1; tx += 8)
                    {
                        float* p = source + tx;
                        OutputColumns(size, p, positionStride, columns);
                        for (int row = 0; row < size; row++)
                        {
                            Vector256<float>* z = columns + 6 * row;
                            float* d = rowsOut + row * rowLength + size * tx;
                            if (size == 4)
                            {
                                OutputRows(z[0], z[1], z[2], z[3], z[4], z[5], out var y0, out var y1, out var y2, out var y3);
                                Interleave(d,
                                    Epilogue(y0, channelScale, channelBias, relu), Epilogue(y1, channelScale, channelBias, relu),
                                    Epilogue(y2, channelScale, channelBias, relu), Epilogue(y3, channelScale, channelBias, relu));
                            }
                            else
                            {
                                Five.OutputRows(z[0], z[1], z[2], z[3], z[4], z[5], out var y0, out var y1);
                                Small.Store(d, Epilogue(y0, channelScale, channelBias, relu), Epilogue(y1, channelScale, channelBias, relu));
                            }
                        }
                    }
                    int oy = size * ty;
                    int ox = size * tx0;
                    int length = Math.Min(size * tx1, s.Width) - ox;
                    float* target = y + ((long)c * s.Batch + image) * plane + (long)oy * s.Width + ox;
                    for (int row = 0; row < size && oy + row < s.Height; row++)
                    {
                        new ReadOnlySpan<float>(rowsOut + row * rowLength + ox, length).CopyTo(new Span<float>(target + (long)row * s.Width, length));
                    }
                    t += tx1 - tx0;
                }
            }
        }

        // (y0 .. y3) = A^T (m0 .. m5).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void OutputRows(
            Vector256<float> m0, Vector256<float> m1, Vector256<float> m2, Vector256<float> m3, Vector256<float> m4, Vector256<float> m5,
            out Vector256<float> y0, out Vector256<float> y1, out Vector256<float> y2, out Vector256<float> y3)
        {
            Vector256<float> sum12 = m1 + m2, difference12 = m1 - m2;
            y0 = m0 + sum12 + m3 + m4;
            y1 = difference12 + m3 * Vector256.Create(0.5f) - m4 * Vector256.Create(2f);
            y2 = sum12 + m3 * Vector256.Create(0.25f) + m4 * Vector256.Create(4f);
            y3 = difference12 + m3 * Vector256.Create(0.125f) - m4 * Vector256.Create(8f) + m5;
        }

        // dM[xi][c][t - first] = (A dY A^T)[xi] for output channels [channel, channel + channels)
        // and tiles [first, first + count), dY's 4 x 4 tile zero outside the image. Each dY row
        // is split into four phase streams (phase k holds columns 4j + k), so eight tiles take
        // one vector from each.
        public static void TransformOutputGradient(in Shape s, float* dy, float* dm, int first, int count, int channel, int channels)
        {
            if (s.Lanes != 0)
            {
                GatherAndTransform(s, new LargeGradientTiles(), dy, dm, s.GStride, first, count, channel, channels);
                return;
            }
            int stride = s.TilesWide + 2 + Slack;
            float* buffer = stackalloc float[4 * Size * stride];
            new Span<float>(buffer, 4 * Size * stride).Clear();
            float* zero = stackalloc float[stride];
            new Span<float>(zero, stride).Clear();
            float** phases = stackalloc float*[4 * Size];
            // A y for each of the tile's four rows: rows[6 * r + j].
            Vector256<float>* rows = stackalloc Vector256<float>[6 * Size];
            int plane = s.Height * s.Width;
            long positionStride = s.GStride;
            for (int c = channel; c < channel + channels; c++)
            {
                for (int t = first; t < first + count;)
                {
                    var (image, ty, tx0, tx1) = Segment(s, t, first + count);
                    float* source = dy + ((long)c * s.Batch + image) * plane;
                    for (int r = 0; r < Size; r++)
                    {
                        int oy = Size * ty + r;
                        for (int k = 0; k < Size; k++)
                        {
                            phases[Size * r + k] = oy < s.Height ? buffer + (Size * r + k) * stride : zero;
                        }
                        if (oy < s.Height)
                        {
                            SplitRow(source + (long)oy * s.Width, s.Width, s.TilesWide, Size, 0, phases + Size * r);
                        }
                    }
                    float* target = dm + (long)c * s.Ld + (t - first) - tx0;
                    for (int tx = tx0; tx < tx1; tx += 8)
                    {
                        for (int r = 0; r < Size; r++)
                        {
                            float** p = phases + Size * r;
                            GradientRows(Vector256.Load(p[0] + tx), Vector256.Load(p[1] + tx), Vector256.Load(p[2] + tx), Vector256.Load(p[3] + tx),
                                out rows[6 * r], out rows[6 * r + 1], out rows[6 * r + 2], out rows[6 * r + 3], out rows[6 * r + 4], out rows[6 * r + 5]);
                        }
                        StoreGradientColumns(rows, target + tx, positionStride);
                    }
                    t += tx1 - tx0;
                }
            }
        }

        // dM[6i + j] at d, positions positionStride apart, = (A dY A^T)[i][j] from rows[6r + j] =
        // (A y_r)[j], the transform of dY's tile row r (r = 0..3).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void StoreGradientColumns(Vector256<float>* rows, float* d, long positionStride)
        {
            for (int j = 0; j < 6; j++)
            {
                GradientRows(rows[j], rows[6 + j], rows[12 + j], rows[18 + j],
                    out var m0, out var m1, out var m2, out var m3, out var m4, out var m5);
                Vector256.Store(m0, d + j * positionStride);
                Vector256.Store(m1, d + (6 + j) * positionStride);
                Vector256.Store(m2, d + (12 + j) * positionStride);
                Vector256.Store(m3, d + (18 + j) * positionStride);
                Vector256.Store(m4, d + (24 + j) * positionStride);
                Vector256.Store(m5, d + (30 + j) * positionStride);
            }
        }

        // columns[6r + j] = (A^T M)[r][j] for the size output rows r (4: F(4x4, 3x3); 2: F(2x2, 5x5)),
        // from M's 36 positions at m, positionStride apart.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void OutputColumns(int size, float* m, long positionStride, Vector256<float>* columns)
        {
            for (int j = 0; j < 6; j++)
            {
                float* q = m + j * positionStride;
                Vector256<float> m0 = Vector256.Load(q), m1 = Vector256.Load(q + 6 * positionStride);
                Vector256<float> m2 = Vector256.Load(q + 12 * positionStride), m3 = Vector256.Load(q + 18 * positionStride);
                Vector256<float> m4 = Vector256.Load(q + 24 * positionStride), m5 = Vector256.Load(q + 30 * positionStride);
                if (size == 4)
                {
                    OutputRows(m0, m1, m2, m3, m4, m5, out columns[j], out columns[6 + j], out columns[12 + j], out columns[18 + j]);
                }
                else
                {
                    Five.OutputRows(m0, m1, m2, m3, m4, m5, out columns[j], out columns[6 + j]);
                }
            }
        }

        // (m0 .. m5) = A (y0 .. y3), A the transpose of the output transform A^T.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void GradientRows(
            Vector256<float> y0, Vector256<float> y1, Vector256<float> y2, Vector256<float> y3,
            out Vector256<float> m0, out Vector256<float> m1, out Vector256<float> m2,
            out Vector256<float> m3, out Vector256<float> m4, out Vector256<float> m5)
        {
            Vector256<float> even = y0 + y2, odd = y1 + y3;
            m0 = y0;
            m1 = even + odd;
            m2 = even - odd;
            m3 = y0 + y1 * Vector256.Create(0.5f) + y2 * Vector256.Create(0.25f) + y3 * Vector256.Create(0.125f);
            m4 = y0 - y1 * Vector256.Create(2f) + y2 * Vector256.Create(4f) - y3 * Vector256.Create(8f);
            m5 = y3;
        }

        // dw[o][i] (3, 3) += G^T dU[xi][o][i] G for output channels [start, start + count), in
        // double like the kernel's transform: G's thirds and fifteenths round once, at the end.
        public static void AccumulateKernelGradients(float* du, float* dw, int outChannels, int inChannels, int start, int count)
        {
            double* d = stackalloc double[Positions];
            double* half = stackalloc double[3 * 6];
            double* g = stackalloc double[3];
            long plane = (long)outChannels * inChannels;
            for (int o = start; o < start + count; o++)
            {
                for (int i = 0; i < inChannels; i++)
                {
                    for (int xi = 0; xi < Positions; xi++)
                    {
                        d[xi] = du[xi * plane + (long)o * inChannels + i];
                    }
                    // G^T d: the six rows into the kernel's three, a column at a time.
                    for (int c = 0; c < 6; c++)
                    {
                        Restrict(d[c], d[6 + c], d[12 + c], d[18 + c], d[24 + c], d[30 + c], half, c, 6);
                    }
                    // (G^T d) G: each row's six columns likewise.
                    float* kernel = dw + ((long)o * inChannels + i) * 9;
                    for (int r = 0; r < 3; r++)
                    {
                        double* row = half + 6 * r;
                        Restrict(row[0], row[1], row[2], row[3], row[4], row[5], g, 0, 1);
                        kernel[3 * r] += (float)g[0];
                        kernel[3 * r + 1] += (float)g[1];
                        kernel[3 * r + 2] += (float)g[2];
                    }
                }
            }
        }

        // e[offset + j * step] = (G^T (x0 .. x5))[j], the transpose of Interpolate.
        private static void Restrict(double x0, double x1, double x2, double x3, double x4, double x5, double* e, int offset, int step)
        {
            e[offset] = x0 + (x1 - x2) / 3 - (16 * x3 - x4) / 15;
            e[offset + step] = (x1 + x2) / 3 - (8 * x3 + 2 * x4) / 15;
            e[offset + 2 * step] = (x1 - x2) / 3 - (4 * x3 - 4 * x4) / 15 + x5;
        }

        // d[0..32) = a0 b0 c0 e0 a1 b1 c1 e1 ... a7 b7 c7 e7.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Interleave(float* d, Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> e)
        {
            if (Avx.IsSupported)
            {
                Vector256<float> abLow = Avx.UnpackLow(a, b);   // a0 b0 a1 b1 | a4 b4 a5 b5
                Vector256<float> abHigh = Avx.UnpackHigh(a, b); // a2 b2 a3 b3 | a6 b6 a7 b7
                Vector256<float> ceLow = Avx.UnpackLow(c, e);
                Vector256<float> ceHigh = Avx.UnpackHigh(c, e);
                Vector256<float> t0 = Avx.UnpackLow(abLow.AsDouble(), ceLow.AsDouble()).AsSingle();   // a0 b0 c0 e0 | a4 b4 c4 e4
                Vector256<float> t1 = Avx.UnpackHigh(abLow.AsDouble(), ceLow.AsDouble()).AsSingle();  // a1 .. | a5 ..
                Vector256<float> t2 = Avx.UnpackLow(abHigh.AsDouble(), ceHigh.AsDouble()).AsSingle(); // a2 .. | a6 ..
                Vector256<float> t3 = Avx.UnpackHigh(abHigh.AsDouble(), ceHigh.AsDouble()).AsSingle(); // a3 .. | a7 ..
                Avx.Store(d, Avx.Permute2x128(t0, t1, 0x20));
                Avx.Store(d + 8, Avx.Permute2x128(t2, t3, 0x20));
                Avx.Store(d + 16, Avx.Permute2x128(t0, t1, 0x31));
                Avx.Store(d + 24, Avx.Permute2x128(t2, t3, 0x31));
                return;
            }
            for (int i = 0; i < 8; i++)
            {
                d[4 * i] = a.GetElement(i);
                d[4 * i + 1] = b.GetElement(i);
                d[4 * i + 2] = c.GetElement(i);
                d[4 * i + 3] = e.GetElement(i);
            }
        }
    }

    // F(2x2, 5x5): 6 x 6 input tiles stepping by 2, 36 positions, the same points and B^T as
    // Large, with
    // <code>
    // G = |  1      0     0     0     0    |   A^T = | 1  1  1  1    1  0 |
    //     |  1/3    1/3   1/3   1/3   1/3  |         | 0  1 -1  1/2 -2  1 |
    //     | -1/3    1/3  -1/3   1/3  -1/3  |
    //     | -16/15 -8/15 -4/15 -2/15 -1/15 |
    //     |  1/15  -2/15  4/15 -8/15 16/15 |
    //     |  0      0     0     0     1    |
    // </code>
    // 36 multiplications per 2x2 outputs instead of 100.
    private readonly struct Five : ITiles
    {
        public const int Kernel = 5;

        public static int Size => 2;

        public static int Positions => 36;

        public static void TransformKernel(float* g, float* t)
        {
            // G g (6 x 5) in double, then (G g) G^T, so the kernel's transform rounds once.
            double* gg = stackalloc double[30];
            double* row = stackalloc double[6];
            for (int c = 0; c < Kernel; c++)
            {
                Interpolate(g[c], g[5 + c], g[10 + c], g[15 + c], g[20 + c], gg, c, Kernel);
            }
            for (int r = 0; r < 6; r++)
            {
                double* source = gg + Kernel * r;
                Interpolate(source[0], source[1], source[2], source[3], source[4], row, 0, 1);
                for (int j = 0; j < 6; j++)
                {
                    t[6 * r + j] = (float)row[j];
                }
            }
        }

        // d[offset + i * step] = (G (g0 .. g4))[i].
        private static void Interpolate(double g0, double g1, double g2, double g3, double g4, double* d, int offset, int step)
        {
            d[offset] = g0;
            d[offset + step] = (g0 + g1 + g2 + g3 + g4) / 3;
            d[offset + 2 * step] = -(g0 - g1 + g2 - g3 + g4) / 3;
            d[offset + 3 * step] = -(16 * g0 + 8 * g1 + 4 * g2 + 2 * g3 + g4) / 15;
            d[offset + 4 * step] = (g0 - 2 * g1 + 4 * g2 - 8 * g3 + 16 * g4) / 15;
            d[offset + 5 * step] = g4;
        }

        public static void TransformInput(in Shape s, float* x, float* v, int first, int count, int channel, int channels) =>
            Large.TransformSixInput(s, x, v, first, count, channel, channels, Size, -2);

        public static void TransformOutput(in Shape s, float* m, float* y, int first, int count, int channel, int channels,
            float* bias, float* scale, bool relu) =>
            Large.TransformSixOutput<Five>(s, m, y, first, count, channel, channels, bias, scale, relu);

        // (y0, y1) = A^T (m0 .. m5).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void OutputRows(
            Vector256<float> m0, Vector256<float> m1, Vector256<float> m2, Vector256<float> m3, Vector256<float> m4, Vector256<float> m5,
            out Vector256<float> y0, out Vector256<float> y1)
        {
            y0 = m0 + (m1 + m2) + m3 + m4;
            y1 = (m1 - m2) + m3 * Vector256.Create(0.5f) - m4 * Vector256.Create(2f) + m5;
        }
    }
}

/// <summary>The three transforms: output tile size and kernel size.</summary>
internal enum WinogradTiles
{
    F2x2Kernel3,
    F4x4Kernel3,
    F2x2Kernel5,
}

/// <summary>
/// The Winograd transform of one layer's weights, kept for inference: a call compares the
/// weights with the copy it was made from (a read of 9 floats per kernel instead of a transform
/// of 50 cycles) and transforms again when any value differs, so a change to the weights is
/// always seen.
/// </summary>
public sealed class WinogradWeights
{
    private float[] _source = [];
    private float[] _packed = [];
    private int _outChannels;
    private int _inChannels;
    private WinogradTiles _tiles;

    internal ReadOnlySpan<float> For(ReadOnlySpan<float> weight, int outChannels, int inChannels, WinogradTiles tiles)
    {
        int kernel = tiles == WinogradTiles.F2x2Kernel5 ? 5 : 3;
        int length = outChannels * inChannels * kernel * kernel;
        if (weight.Length < length)
        {
            throw new ArgumentException($"Weights of {outChannels} x {inChannels} x {kernel} x {kernel} need {length} values, got {weight.Length}.", nameof(weight));
        }
        ReadOnlySpan<float> current = weight.Slice(0, length);
        if (outChannels != _outChannels || inChannels != _inChannels || tiles != _tiles || !current.SequenceEqual(_source))
        {
            if (_source.Length != length)
            {
                _source = new float[length];
            }
            int packedLength = Winograd.PackedWeightLength(outChannels, inChannels, tiles);
            if (_packed.Length != packedLength)
            {
                _packed = new float[packedLength];
            }
            Winograd.TransformWeights(current, outChannels, inChannels, tiles, transposeAndRotate: false, _packed);
            current.CopyTo(_source);
            _outChannels = outChannels;
            _inChannels = inChannels;
            _tiles = tiles;
            Transforms++;
        }
        return _packed;
    }

    /// <summary>How many times the weights were transformed (once, while they do not change).</summary>
    public int Transforms { get; private set; }
}
