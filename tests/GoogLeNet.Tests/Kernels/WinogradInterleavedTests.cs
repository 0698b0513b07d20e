using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using Xunit;

using static GoogLeNet.Tests.Layouts;

namespace GoogLeNet.Tests.Kernels;

/// <summary>
/// Winograd tiles of eight images interleaved in the vector lanes: every transform against the
/// direct double-precision reference and against the same convolution with tiles in image-row
/// order, on planes narrower and wider than a vector, odd sizes (tiles past the edges), groups
/// and blocks that cut an image block inside a tile row, k chunks, and one or two threads.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class WinogradInterleavedTests
{
    // WinogradTests' bounds: per tile the arithmetic is the same, only the lanes differ.
    private static double ToleranceOf(string tiles) => tiles == "2x2" ? WinogradTests.Tolerance : WinogradTests.LargeTolerance;

    private static int KernelOf(string tiles) => tiles == "5x5" ? 5 : 3;

    private static T With<T>(bool interleaved, string tiles, Func<T> run) =>
        EngineSetting.With(() => Winograd.InterleaveForced, value => Winograd.InterleaveForced = value, (bool?)interleaved, () =>
            EngineSetting.With(() => Winograd.LargeTilesForced, value => Winograd.LargeTilesForced = value, (bool?)(tiles == "4x4"), run));

    public static TheoryData<int, int, int, int, int, string> Shapes()
    {
        var data = new TheoryData<int, int, int, int, int, string>();
        int[][] shapes =
        [
            // batch, ci, co, h, w
            [8, 3, 5, 1, 1],
            [8, 4, 6, 3, 3],
            [16, 5, 7, 6, 6],
            [8, 6, 10, 12, 12],
            [8, 7, 9, 13, 11],
            [8, 3, 4, 17, 9],
            [8, 5, 3, 5, 20],
            [8, 2, 3, 33, 1],
        ];
        foreach (string tiles in new[] { "2x2", "4x4", "5x5" })
        {
            foreach (int[] s in shapes)
            {
                data.Add(s[0], s[1], s[2], s[3], s[4], tiles);
            }
        }
        return data;
    }

    private static float[] Reference(float[] x, int batch, int ci, int co, int h, int w, float[] weight, float[] bias, int kernel)
    {
        var y = new float[batch * co * h * w];
        ReferenceConvolution.Forward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, bias, co, kernel, kernel, 1, kernel / 2, h, w, y);
        return ToChannelMajor(y, batch, co, h * w);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ForwardAndInputGradientMatchTheReferenceAndTheRowOrder(int batch, int ci, int co, int h, int w, string tiles)
    {
        int k = KernelOf(tiles);
        Assert.True(With(true, tiles, () => Winograd.Interleaves(batch, h, w)));
        float[] x = GoldenFill.Fill("wino.lanes.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.lanes.w", co * ci * k * k, 2.0);
        float[] bias = GoldenFill.Fill("wino.lanes.b", co, 1.0);
        float[] scale = GoldenFill.Fill("wino.lanes.s", co, 2.0);
        float[] dy = GoldenFill.Fill("wino.lanes.dy", batch * co * h * w, 2.0);
        float[] Forward(bool interleaved, bool relu) => With(interleaved, tiles, () =>
        {
            var y = new float[batch * co * h * w];
            y.AsSpan().Fill(float.NaN); // overwritten, never read
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu, y, relu ? scale : default, kernelSize: k);
            return y;
        });
        float[] InputGradient(bool interleaved) => With(interleaved, tiles, () =>
        {
            var dx = new float[x.Length];
            dx.AsSpan().Fill(float.NaN);
            Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, dx, k);
            return dx;
        });

        float[] y = Forward(true, relu: false);
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias, k), y, ToleranceOf(tiles), "forward");
        // Each tile's transforms and products are the same operations in either order: same bits.
        Assert.Equal(Forward(false, relu: false), y);
        Assert.Equal(Forward(false, relu: true), Forward(true, relu: true));

        var expected = new float[x.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, k, k, 1, k / 2, h, w,
            ToBatchMajor(dy, batch, co, h * w), new float[weight.Length], new float[co], expected);
        float[] dx = InputGradient(true);
        Compare.Close(ToChannelMajor(expected, batch, ci, h * w), dx, ToleranceOf(tiles), "dInput");
        Assert.Equal(InputGradient(false), dx);
    }

    // Shapes() with 3x3 kernels: 5x5 weight gradients run as a GEMM, not through Winograd.
    public static TheoryData<int, int, int, int, int, string> WeightGradientShapes() => WinogradTests.WithoutFiveByFive(Shapes());

    [Theory]
    [MemberData(nameof(WeightGradientShapes))]
    public void WeightGradientMatchesTheReference(int batch, int ci, int co, int h, int w, string tiles)
    {
        float[] x = GoldenFill.Fill("wino.lanes.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.lanes.w", co * ci * 9, 2.0);
        float[] dy = GoldenFill.Fill("wino.lanes.dy", batch * co * h * w, 2.0);
        var expected = new float[weight.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), expected, new float[co], new float[x.Length]);
        float[] actual = Enumerable.Repeat(1f, weight.Length).ToArray(); // accumulates onto 1
        With(true, tiles, () => { Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, actual); return 0; });
        Compare.Close(expected.Select(v => v + 1f).ToArray(), actual, ToleranceOf(tiles), "dWeight");
    }

    // 16 images of 6x6 (nine 2x2 tiles, or four 4x4, per image): groups of 16 tiles (two tile
    // positions of eight images) and weight-gradient blocks of 8, 12 and 24 tiles start and end
    // inside tile rows and image blocks; with one or two threads.
    [Theory]
    [InlineData("2x2")]
    [InlineData("4x4")]
    public void GroupsAndBlocksThatCutImageBlocksGiveTheWholeResult(string tiles)
    {
        const int batch = 16, ci = 6, co = 10, h = 6, w = 6;
        float[] x = GoldenFill.Fill("wino.lanes.cut.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.lanes.cut.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.lanes.cut.b", co, 1.0);
        float[] dy = GoldenFill.Fill("wino.lanes.cut.dy", batch * co * h * w, 2.0);
        float[] Forward(int groupFloats, int threads) => EngineThreads.With(threads, () =>
            EngineSetting.With(() => Winograd.GroupFloats, value => Winograd.GroupFloats = value, groupFloats, () => With(true, tiles, () =>
            {
                var y = new float[batch * co * h * w];
                Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: false, y);
                return y;
            })));
        float[] WeightGradient(int blockTiles, int threads) => EngineThreads.With(threads, () =>
            EngineSetting.With(() => Winograd.BlockTilesForced, value => Winograd.BlockTilesForced = value, (int?)blockTiles, () => With(true, tiles, () =>
            {
                var dw = new float[weight.Length];
                Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, dw);
                return dw;
            })));

        int positions = tiles == "4x4" ? 36 : 16;
        float[] whole = Forward(1 << 18, 1);
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias, 3), whole, ToleranceOf(tiles), "forward");
        Assert.Equal(whole, Forward(positions * ci * 16, 1));
        Assert.Equal(whole, Forward(positions * ci * 16, 2));

        var expected = new float[weight.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), expected, new float[co], new float[x.Length]);
        float[] oneBlock = WeightGradient(batch * 9, 1);
        Compare.Close(expected, oneBlock, ToleranceOf(tiles), "one block");
        Compare.Close(expected, WeightGradient(8, 1), ToleranceOf(tiles), "blocks of 8 tiles");
        Compare.Close(expected, WeightGradient(12, 1), ToleranceOf(tiles), "blocks of 12 tiles, taken as 8");
        float[] blocks = WeightGradient(24, 1);
        Compare.Close(expected, blocks, ToleranceOf(tiles), "blocks of 24 tiles");
        Assert.Equal(blocks, WeightGradient(24, 2));
    }

    // The input gradient from 99 channels on 4x4 tiles in two k chunks, interleaved.
    [Fact]
    public void InputGradientInKChunksMatchesTheRowOrder()
    {
        const int batch = 8, ci = 40, co = 99, h = 12, w = 12, groupFloats = 72000;
        Assert.Equal(2, Winograd.ChunksFor(co, ci, groupFloats / 2 * 3, 36, kSplit: true));
        float[] weight = GoldenFill.Fill("wino.lanes.chunks.w", co * ci * 9, 2.0);
        float[] dy = GoldenFill.Fill("wino.lanes.chunks.dy", batch * co * h * w, 2.0);
        float[] Run(bool interleaved, int threads) => EngineThreads.With(threads, () =>
            EngineSetting.With(() => Winograd.GroupFloats, value => Winograd.GroupFloats = value, groupFloats, () => With(interleaved, "4x4", () =>
            {
                var dx = new float[batch * ci * h * w];
                Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, dx);
                return dx;
            })));
        var expected = new float[batch * ci * h * w];
        ReferenceConvolution.Backward(new float[expected.Length], batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), new float[weight.Length], new float[co], expected);
        float[] actual = Run(true, 2);
        Compare.Close(ToChannelMajor(expected, batch, ci, h * w), actual, WinogradTests.LargeTolerance, "dInput");
        Assert.Equal(Run(false, 2), actual);
        Assert.Equal(Run(true, 1), actual);
    }

    // Where k chunks are needed, interleaved tiles run in groups of whole tile rows (two of a
    // 12-wide plane's three-tile rows: 48 tiles, the second group of eight images short) with
    // as many chunks as keep a chunk's V in half the group budget: four of 130 channels here,
    // where image-row order takes two. Forced to the same chunks, row order gives the same bits.
    [Fact]
    public void InputGradientInTileRowGroupsMatchesTheRowOrder()
    {
        const int batch = 8, ci = 24, co = 130, h = 12, w = 12, groupFloats = 80000; // input-gradient groups of 120000 floats
        Assert.Equal((48, 4), Winograd.InterleavedChunks(co, 3, groupFloats / 2 * 3, 36));
        Assert.Equal(2, Winograd.ChunksFor(co, ci, groupFloats / 2 * 3, 36, kSplit: true));
        Assert.Equal((0, 0), Winograd.InterleavedChunks(co, 3, groupFloats / 2, 36)); // no chunk of 32 channels or more fits
        Assert.Equal((0, 0), Winograd.InterleavedChunks(co, 5, groupFloats / 2 * 3, 36)); // 40-tile rows: not whole panels
        float[] weight = GoldenFill.Fill("wino.lanes.rows.w", co * ci * 9, 2.0);
        float[] dy = GoldenFill.Fill("wino.lanes.rows.dy", batch * co * h * w, 2.0);
        float[] Run(bool interleaved, int threads, int? chunks) => EngineThreads.With(threads, () =>
            EngineSetting.With(() => Winograd.GroupFloats, value => Winograd.GroupFloats = value, groupFloats, () =>
                EngineSetting.With(() => Winograd.ChunksForced, value => Winograd.ChunksForced = value, chunks, () => With(interleaved, "4x4", () =>
                {
                    var dx = new float[batch * ci * h * w];
                    dx.AsSpan().Fill(float.NaN); // overwritten, never read
                    Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, dx);
                    return dx;
                }))));
        var expected = new float[batch * ci * h * w];
        ReferenceConvolution.Backward(new float[expected.Length], batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), new float[weight.Length], new float[co], expected);
        float[] actual = Run(true, 2, null);
        Compare.Close(ToChannelMajor(expected, batch, ci, h * w), actual, WinogradTests.LargeTolerance, "dInput");
        Assert.Equal(Run(false, 2, 4), actual);
        Assert.NotEqual(Run(false, 2, null), actual); // two chunks round differently: the plan was taken
        Assert.Equal(Run(true, 1, null), actual);
    }

    // Interleaving needs whole blocks of eight images and planes of at most 64 x 64; by default
    // the forward pass and input gradient take it on planes up to 24 wide, the weight gradient
    // wherever it is possible.
    [Fact]
    public void InterleavingIsTakenOnNarrowPlanesOfWholeImageBlocks()
    {
        Assert.True(Winograd.Interleaves(128, 12, 12));
        Assert.True(Winograd.Interleaves(8, 6, 6));
        Assert.True(Winograd.Interleaves(32, 14, 14));
        Assert.True(Winograd.Interleaves(128, 24, 24));
        Assert.False(Winograd.Interleaves(32, 28, 28));
        Assert.True(Winograd.Interleaves(32, 28, 28, weightGradient: true));
        Assert.True(Winograd.Interleaves(32, 56, 56, weightGradient: true));
        Assert.False(Winograd.Interleaves(32, 65, 56, weightGradient: true));
        Assert.False(Winograd.Interleaves(12, 6, 6));
        Assert.False(Winograd.Interleaves(12, 6, 6, weightGradient: true));
        Assert.False(Winograd.Interleaves(1, 7, 7));
        Assert.False(Winograd.Interleaves(8, 100, 6));
    }
}
