using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using Xunit;

using static GoogLeNet.Tests.Layouts;

namespace GoogLeNet.Tests.Kernels;

/// <summary>
/// F(2x2, 3x3) Winograd convolution against the direct double-precision reference: odd and even
/// sizes (partial tiles on the right and bottom), images narrower than a tile, groups and blocks
/// of tiles that cut tile rows, the folded epilogue, both gradients, and thread-count invariance.
/// </summary>
[Collection(EngineThreadsCollection.Name)]
public class WinogradTests
{
    // The transforms add at most four inputs, scale kernels by up to 9/4 and sum nine products
    // back, so each output carries a few more float32 roundings than a direct sum. On these
    // shapes (values in [-2, 2], up to 64 input channels) the worst scaled error measured is
    // 2.6e-7 for outputs and input gradients and 4.1e-7 for weight gradients (sums over every
    // tile); 1e-5, the direct kernels' bound, leaves room and still flags any misplaced tap,
    // which costs 1e-2 or more.
    internal const double Tolerance = 1e-5;

    // F(4x4, 3x3) scales by up to 8 in its output transform and 5/2 in its input transform, and
    // its kernel transform has thirds and fifteenths: on the same shapes the worst scaled error
    // measured is 1.6e-6 (forward), 1.8e-6 (input gradient) and 1.1e-6 (weight gradient); 2e-5
    // leaves room and still flags a misplaced tap.
    internal const double LargeTolerance = 2e-5;

    // F(2x2, 5x5) has F(4x4, 3x3)'s input transform and similar constants elsewhere: worst
    // scaled error measured 1.5e-6 (forward) and 1.2e-6 (input gradient); the same bound.
    private const double FiveTolerance = LargeTolerance;

    // Shapes() for each transform ("2x2" and "4x4" tiles with 3x3 kernels, "5x5" kernels), for
    // the passes that take them.
    public static TheoryData<int, int, int, int, int, string> ShapesWithTiles()
    {
        var data = new TheoryData<int, int, int, int, int, string>();
        foreach (string tiles in new[] { "2x2", "4x4", "5x5" })
        {
            foreach (object[] shape in Shapes())
            {
                data.Add((int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3], (int)shape[4], tiles);
            }
        }
        return data;
    }

    private static int KernelOf(string tiles) => tiles == "5x5" ? 5 : 3;

    private static double ToleranceOf(string tiles) => tiles switch
    {
        "4x4" => LargeTolerance,
        "5x5" => FiveTolerance,
        _ => Tolerance,
    };

    private static T WithTiles<T>(string tiles, Func<T> run) => WithTiles(tiles == "4x4", run);

    // Forward groups or weight-gradient blocks of the given size, or a tile size forced, for one run.
    private static T WithGroupFloats<T>(int floats, Func<T> run) =>
        EngineSetting.With(() => Winograd.GroupFloats, value => Winograd.GroupFloats = value, floats, run);

    private static T WithBlockTiles<T>(int tiles, Func<T> run) =>
        EngineSetting.With(() => Winograd.BlockTilesForced, value => Winograd.BlockTilesForced = value, (int?)tiles, run);

    private static T WithTiles<T>(bool large, Func<T> run) =>
        EngineSetting.With(() => Winograd.LargeTilesForced, value => Winograd.LargeTilesForced = value, (bool?)large, run);

    public static TheoryData<int, int, int, int, int> Shapes() => new()
    {
        // batch, ci, co, h, w
        { 1, 1, 1, 1, 1 },
        { 1, 2, 3, 2, 2 },
        { 2, 3, 5, 3, 5 },
        { 3, 4, 2, 7, 7 },
        { 1, 5, 7, 8, 16 },
        { 2, 8, 9, 17, 9 },
        { 2, 19, 24, 14, 14 },
        { 1, 3, 4, 1, 40 },
        { 1, 3, 4, 33, 1 },
        { 2, 64, 40, 6, 18 },
        // d2l's 6x6 planes (three tiles a row) and four tiles a row.
        { 3, 6, 10, 6, 6 },
        { 2, 5, 7, 8, 8 },
        // One group of tiles: the output channels are split across units instead.
        { 1, 8, 50, 5, 5 },
    };

    // The reference on channel-major tensors.
    private static float[] Reference(float[] x, int batch, int ci, int co, int h, int w, float[] weight, float[] bias, int kernel = 3)
    {
        var y = new float[batch * co * h * w];
        ReferenceConvolution.Forward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, bias, co, kernel, kernel, 1, kernel / 2, h, w, y);
        return ToChannelMajor(y, batch, co, h * w);
    }

    [Theory]
    [MemberData(nameof(ShapesWithTiles))]
    public void ForwardMatchesTheDirectConvolution(int batch, int ci, int co, int h, int w, string tiles)
    {
        int k = KernelOf(tiles);
        double tolerance = ToleranceOf(tiles);
        float[] x = GoldenFill.Fill("wino.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.w", co * ci * k * k, 2.0);
        float[] bias = GoldenFill.Fill("wino.b", co, 1.0);
        float[] expected = Reference(x, batch, ci, co, h, w, weight, bias, k);
        var actual = new float[expected.Length];
        WithTiles(tiles, () => { Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: false, actual, kernelSize: k); return 0; });
        Compare.Close(expected, actual, tolerance, "forward");

        // The folded-BatchNorm epilogue: relu(conv(x) x scale + bias).
        float[] scale = GoldenFill.Fill("wino.s", co, 2.0);
        float[] unbiased = Reference(x, batch, ci, co, h, w, weight, new float[co], k);
        int plane = batch * h * w;
        for (int i = 0; i < unbiased.Length; i++)
        {
            unbiased[i] = Math.Max(0f, unbiased[i] * scale[i / plane] + bias[i / plane]);
        }
        WithTiles(tiles, () => { Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: true, actual, scale, kernelSize: k); return 0; });
        Compare.Close(unbiased, actual, 2 * tolerance, "scaled forward");
    }

    [Theory]
    [MemberData(nameof(ShapesWithTiles))]
    public void InputGradientMatchesTheDirectConvolution(int batch, int ci, int co, int h, int w, string tiles)
    {
        int k = KernelOf(tiles);
        float[] x = GoldenFill.Fill("wino.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.w", co * ci * k * k, 2.0);
        float[] dy = GoldenFill.Fill("wino.dy", batch * co * h * w, 2.0);
        var dW = new float[weight.Length];
        var dB = new float[co];
        var expected = new float[x.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, k, k, 1, k / 2, h, w,
            ToBatchMajor(dy, batch, co, h * w), dW, dB, expected);
        var actual = new float[x.Length];
        actual.AsSpan().Fill(float.NaN); // overwritten, never read
        WithTiles(tiles, () => { Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, actual, k); return 0; });
        Compare.Close(ToChannelMajor(expected, batch, ci, h * w), actual, ToleranceOf(tiles), "dInput");
    }

    // 99 gradient channels on 4x4 tiles in groups too small for two panels of them: the input
    // transform and the products run in two k chunks (50 and 49 channels) summed in M, over two
    // groups (the second short) whose 7 blocks of output channels the units split unevenly.
    [Fact]
    public void InputGradientInKChunksMatchesTheDirectConvolution()
    {
        const int batch = 3, ci = 40, co = 99, h = 16, w = 16, groupFloats = 72000; // input-gradient groups of 108000 floats
        Assert.Equal(2, Winograd.ChunksFor(co, ci, groupFloats / 2 * 3, 36, kSplit: true));
        Assert.Equal(1, Winograd.ChunksFor(co, ci, groupFloats / 2 * 3, 36, kSplit: false));
        Assert.Equal(1, Winograd.ChunksFor(co, ci, 2 * groupFloats, 36, kSplit: true)); // two panels fit whole
        float[] weight = GoldenFill.Fill("wino.chunks.w", co * ci * 9, 2.0);
        float[] dy = GoldenFill.Fill("wino.chunks.dy", batch * co * h * w, 2.0);
        var expected = new float[batch * ci * h * w];
        ReferenceConvolution.Backward(new float[expected.Length], batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), new float[weight.Length], new float[co], expected);
        float[] Run(int threads) => EngineThreads.With(threads, () => WithGroupFloats(groupFloats, () => WithTiles(large: true, () =>
        {
            var dx = new float[expected.Length];
            dx.AsSpan().Fill(float.NaN); // overwritten, never read
            Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, dx);
            return dx;
        })));
        float[] actual = Run(2);
        Compare.Close(ToChannelMajor(expected, batch, ci, h * w), actual, LargeTolerance, "dInput");
        Assert.Equal(Run(1), actual);
    }

    // Shapes() for the weight gradient's tiles (3x3 kernels only).
    public static TheoryData<int, int, int, int, int, string> WeightGradientShapes() => WithoutFiveByFive(ShapesWithTiles());

    // The rows of (batch, ci, co, h, w, tiles) shapes whose kernels are 3x3.
    internal static TheoryData<int, int, int, int, int, string> WithoutFiveByFive(TheoryData<int, int, int, int, int, string> shapes)
    {
        var data = new TheoryData<int, int, int, int, int, string>();
        foreach (object[] row in shapes)
        {
            if ((string)row[5] != "5x5")
            {
                data.Add((int)row[0], (int)row[1], (int)row[2], (int)row[3], (int)row[4], (string)row[5]);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(WeightGradientShapes))]
    public void WeightGradientMatchesTheDirectConvolution(int batch, int ci, int co, int h, int w, string tiles)
    {
        float[] x = GoldenFill.Fill("wino.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.w", co * ci * 9, 2.0);
        float[] dy = GoldenFill.Fill("wino.dy", batch * co * h * w, 2.0);
        var expected = new float[weight.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), expected, new float[co], new float[x.Length]);
        // Accumulates: starting from 1 everywhere leaves expected + 1.
        float[] actual = Enumerable.Repeat(1f, weight.Length).ToArray();
        WithTiles(tiles, () => { Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, actual); return 0; });
        Compare.Close(expected.Select(v => v + 1f).ToArray(), actual, ToleranceOf(tiles), "dWeight");
    }

    [Theory]
    [InlineData("2x2", 126)]
    [InlineData("4x4", 36)]
    public void WeightGradientSummedInBlocksGivesTheOneBlockResult(string tiles, int tileCount)
    {
        const int batch = 3, ci = 5, co = 7, h = 11, w = 13;
        float[] x = GoldenFill.Fill("wino.blocks.x", batch * ci * h * w, 2.0);
        float[] dy = GoldenFill.Fill("wino.blocks.dy", batch * co * h * w, 2.0);
        float[] Run(int blockTiles) => WithTiles(tiles, () => WithBlockTiles(blockTiles, () =>
        {
            var dw = new float[co * ci * 9];
            Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, dw);
            return dw;
        }));
        // All tiles (126 of 2x2, 36 of 4x4) in one block, then blocks of 16 and of 1 tile
        // (starting and ending inside tile rows): the sums regroup, so they agree to rounding,
        // not bit for bit.
        float[] whole = Run(tileCount);
        var expected = new float[whole.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, GoldenFill.Fill("wino.blocks.w", co * ci * 9, 2.0),
            co, 3, 3, 1, 1, h, w, ToBatchMajor(dy, batch, co, h * w), expected, new float[co], new float[x.Length]);
        Compare.Close(expected, whole, ToleranceOf(tiles), "one block");
        Compare.Close(expected, Run(16), ToleranceOf(tiles), "blocks of 16 tiles");
        Compare.Close(expected, Run(1), ToleranceOf(tiles), "blocks of 1 tile");
    }

    // Blocks take the tiles the L2 budget holds or 64, whichever is more, cut to whole tile rows
    // (a row longer than the block is cut itself), and never more than the batch has.
    [Theory]
    [InlineData(1, 14, 10_000, 56)] // 64 rounded down to four rows of 14
    [InlineData(1, 6, 10_000, 60)]
    [InlineData(1, 100, 10_000, 64)] // a row longer than the block is cut
    [InlineData(1, 6, 40, 40)]
    [InlineData(100, 7, 10_000, 98)]
    [InlineData(100, 7, 90, 90)]
    public void WeightGradientBlocksTakeTheBudgetOr64TilesInWholeRows(int budgetTiles, int tilesWide, int tiles, int expected)
    {
        int block = Winograd.BlockTiles(Winograd.BlockFloats / budgetTiles, tilesWide, tiles);
        Assert.Equal(expected, block);
    }

    [Fact]
    public void GroupsOfTilesAcrossTileRowsGiveTheOneGroupResult()
    {
        // 3 images of 6 x 7 tiles (126): groups of 16 and 48 tiles start and end inside tile rows.
        const int batch = 3, ci = 6, co = 10, h = 11, w = 13;
        float[] x = GoldenFill.Fill("wino.groups.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.groups.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.groups.b", co, 1.0);
        float[] Run(int groupFloats, int expectedGroup) => WithGroupFloats(groupFloats, () =>
        {
            Assert.Equal(expectedGroup, Winograd.GroupTiles(ci, batch * 6 * 7));
            var y = new float[batch * co * h * w];
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: false, y);
            return y;
        });
        // Groups only regroup the same per-tile sums.
        float[] whole = Run(1 << 16, 128);
        Assert.Equal(whole, Run(16 * ci * 16, 16));
        Assert.Equal(whole, Run(16 * ci * 48, 48));
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias), whole, Tolerance, "forward");
    }

    // Groups and blocks of tiles that cut 6x6 images (nine tiles each) inside tile rows: groups
    // give the same bits, blocks the same sums to rounding.
    [Fact]
    public void NarrowPlanesCutByGroupsAndBlocksGiveTheWholeResult()
    {
        const int batch = 5, ci = 6, co = 10, h = 6, w = 6;
        float[] x = GoldenFill.Fill("wino.narrow.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.narrow.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.narrow.b", co, 1.0);
        float[] dy = GoldenFill.Fill("wino.narrow.dy", batch * co * h * w, 2.0);
        float[] Forward(int groupFloats) => WithGroupFloats(groupFloats, () =>
        {
            var y = new float[batch * co * h * w];
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: false, y);
            return y;
        });
        float[] WeightGradient(int blockTiles) => WithBlockTiles(blockTiles, () =>
        {
            var dw = new float[weight.Length];
            Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, dw);
            return dw;
        });
        // 45 tiles: one group, then groups of 16 (cutting images 2 and 4).
        float[] whole = Forward(1 << 16);
        Assert.Equal(whole, Forward(16 * ci * 16));
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias), whole, Tolerance, "forward");

        var expected = new float[weight.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, 3, 3, 1, 1, h, w,
            ToBatchMajor(dy, batch, co, h * w), expected, new float[co], new float[x.Length]);
        Compare.Close(expected, WeightGradient(45), Tolerance, "one block");
        Compare.Close(expected, WeightGradient(7), Tolerance, "blocks of 7 tiles");
    }

    // The forward pass's vector transform of 3x3 kernels (six rows of U at a time, gathered)
    // against the scalar one kernel at a time: the same operations in the same order, so the
    // same floats, with output channel counts that leave the last block of six short.
    [Theory]
    [InlineData("2x2", 13, 5)]
    [InlineData("2x2", 6, 1)]
    [InlineData("4x4", 13, 5)]
    [InlineData("4x4", 7, 9)]
    [InlineData("4x4", 1, 2)]
    public void VectorWeightTransformGivesTheScalarOne(string tiles, int co, int ci)
    {
        WinogradTiles kind = tiles == "4x4" ? WinogradTiles.F4x4Kernel3 : WinogradTiles.F2x2Kernel3;
        float[] weight = GoldenFill.Fill("wino.transform.w", co * ci * 9, 2.0);
        float[] Run(bool vector) => EngineSetting.With(() => Winograd.VectorTransformsWeights, value => Winograd.VectorTransformsWeights = value, vector, () =>
        {
            var u = new float[Winograd.PackedWeightLength(co, ci, kind) + 5];
            u.AsSpan().Fill(float.NaN); // cleared, then written
            Winograd.TransformWeights(weight, co, ci, kind, transposeAndRotate: false, u);
            return u;
        });
        float[] scalar = Run(false);
        Assert.Equal(scalar, Run(true));
        Assert.Contains(scalar, v => v != 0f);
        Assert.All(scalar.AsSpan(0, scalar.Length - 5).ToArray(), v => Assert.False(float.IsNaN(v)));
    }

    [Fact]
    public void CachedWeightTransformIsReusedUntilAWeightChanges()
    {
        // One 11 x 11 image is 36 tiles: Winograd only with the transform cached.
        const int batch = 1, ci = 8, co = 13, h = 11, w = 11;
        Assert.False(Winograd.Chosen(3, 3, 1, 1, batch, h, w));
        Assert.True(Winograd.Chosen(3, 3, 1, 1, batch, h, w, cachedWeights: true));
        float[] x = GoldenFill.Fill("wino.cache.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.cache.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.cache.b", co, 1.0);
        var cache = new WinogradWeights();
        float[] Run(WinogradWeights? withCache)
        {
            var y = new float[batch * co * h * w];
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: false, y, default, withCache);
            return y;
        }

        float[] first = Run(cache);
        Assert.Equal(1, cache.Transforms);
        Assert.Equal(Run(null), first);
        Assert.Equal(first, Run(cache));
        Assert.Equal(1, cache.Transforms);

        // The last value of the last kernel changes: the next call sees it.
        weight[^1] += 0.5f;
        float[] changed = Run(cache);
        Assert.Equal(2, cache.Transforms);
        Assert.Equal(Run(null), changed);
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias), changed, Tolerance, "after the change");

        // The same weights for the other tile size: transformed again.
        float[] large = WithTiles(true, () => Run(cache));
        Assert.Equal(3, cache.Transforms);
        Assert.Equal(WithTiles(true, () => Run(null)), large);
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias), large, LargeTolerance, "large tiles");
        Assert.Equal(changed, Run(cache));
        Assert.Equal(4, cache.Transforms);
    }

    [Fact]
    public void ShortSpansAreRefusedWithTheSizesTheyNeed()
    {
        const int batch = 2, ci = 3, co = 4, h = 8, w = 8;
        var x = new float[batch * ci * h * w];
        var weight = new float[co * ci * 9];
        var y = new float[batch * co * h * w];
        var shortWeight = new float[co * ci * 9 - 1];
        var error = Assert.Throws<ArgumentException>(() =>
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, shortWeight, default, co, relu: false, y, default, new WinogradWeights()));
        Assert.Contains($"need {co * ci * 9} values, got {co * ci * 9 - 1}", error.Message);
        error = Assert.Throws<ArgumentException>(() =>
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, shortWeight, default, co, relu: false, y));
        Assert.Contains($"need {co * ci * 9} values", error.Message);
        error = Assert.Throws<ArgumentException>(() =>
            Winograd.ForwardChannelMajor(x.AsSpan(1), batch, ci, h, w, weight, default, co, relu: false, y));
        Assert.Contains($"input of {ci} x {batch} x {h} x {w} needs {x.Length} values", error.Message);
        error = Assert.Throws<ArgumentException>(() =>
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, default, co, relu: false, y.AsSpan(1)));
        Assert.Contains($"output of {co} x {batch} x {h} x {w} needs {y.Length} values", error.Message);
    }

    [Fact]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        const int batch = 4, ci = 32, co = 48, h = 14, w = 14;
        float[] x = GoldenFill.Fill("wino.threads.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.threads.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.threads.b", co, 1.0);
        float[] dy = GoldenFill.Fill("wino.threads.dy", batch * co * h * w, 2.0);
        float[] Run(int threads, bool large) => EngineThreads.With(threads, () => WithTiles(large, () =>
        {
            var y = new float[batch * co * h * w];
            var dx = new float[x.Length];
            Winograd.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, relu: true, y);
            Winograd.BackwardDataChannelMajor(dy, batch, ci, h, w, weight, co, dx);
            var dw = new float[weight.Length];
            Winograd.BackwardWeightsChannelMajor(x, batch, ci, h, w, dy, co, dw);
            return (float[])[.. y, .. dx, .. dw];
        }));
        foreach (bool large in new[] { false, true })
        {
            Assert.Equal(Run(1, large), Run(2, large));
            Assert.Equal(Run(1, large), Run(3, large));
        }
    }

    // Both block sizes follow the core's L2 (sysfs on Linux, 512 KiB otherwise): a group of tiles
    // takes half of it, a weight-gradient block all of it, and neither may be left at zero.
    [Fact]
    public void BlockSizesFollowTheL2()
    {
        Assert.InRange(Winograd.GroupFloats, 128 * 1024 / 2 / sizeof(float), 8192 * 1024 / 2 / sizeof(float));
        Assert.Equal(2 * Winograd.GroupFloats, Winograd.BlockFloats);
    }

    // 4x4 tiles where their vectors are three quarters full, they cover two thirds of the plane,
    // a group holds two 16-tile panels and the batch eight such groups; 2x2 tiles elsewhere.
    [Fact]
    public void LargeTilesAreTakenWhereTheyFill()
    {
        const int halfL2 = 128 * 1024;
        Assert.True(Winograd.TakesLargeTiles(32, 64, 24, 24, halfL2));    // 6 tiles a row, 56 per group
        Assert.True(Winograd.TakesLargeTiles(32, 96, 28, 28, halfL2));    // 7 a row, 37 per group
        Assert.True(Winograd.TakesLargeTiles(32, 64, 56, 56, halfL2));    // 14 a row (of 16 lanes)
        Assert.False(Winograd.TakesLargeTiles(32, 128, 28, 28, halfL2));  // 28 per group: one panel
        // Batches of 36 run tiles in image-row order (not in blocks of eight images).
        Assert.False(Winograd.TakesLargeTiles(36, 64, 12, 12, halfL2));   // 3 tiles a row of 8 lanes
        Assert.False(Winograd.TakesLargeTiles(36, 64, 14, 14, halfL2));   // 4 a row
        Assert.False(Winograd.TakesLargeTiles(36, 64, 7, 7, halfL2));     // 2 a row
        // Interleaved, the lanes are full: 4x4 tiles where they cover 7/8 of the plane.
        Assert.True(Winograd.TakesLargeTiles(32, 64, 12, 12, halfL2));
        Assert.False(Winograd.TakesLargeTiles(32, 64, 14, 14, halfL2));   // 196 of 256
        Assert.False(Winograd.TakesLargeTiles(128, 64, 6, 6, halfL2));    // 36 of 64
        Assert.True(Winograd.TakesLargeTiles(32, 64, 15, 16, halfL2));    // 240 of 256
        Assert.False(Winograd.TakesLargeTiles(32, 128, 12, 12, halfL2));  // 28 per group: one panel
        Assert.False(Winograd.TakesLargeTiles(36, 64, 24, 20, halfL2));   // 5 a row
        Assert.True(Winograd.TakesLargeTiles(36, 64, 24, 21, halfL2));    // 6 a row, 21 of 24 columns
        Assert.False(Winograd.TakesLargeTiles(36, 64, 5, 24, halfL2));    // 5 of 8 rows: under two thirds
        Assert.True(Winograd.TakesLargeTiles(36, 64, 6, 24, halfL2));     // 6 of 8
        Assert.True(Winograd.TakesLargeTiles(32, 64, 24, 20, halfL2));    // interleaved: all lanes, all the plane
        Assert.False(Winograd.TakesLargeTiles(32, 64, 6, 24, halfL2));    // interleaved: 6 of 8 rows, under 7/8
        // Eight groups of two panels in the batch: 256 tiles.
        Assert.False(Winograd.TakesLargeTiles(1, 64, 56, 56, halfL2));   // 196 tiles
        Assert.True(Winograd.TakesLargeTiles(2, 64, 56, 56, halfL2));
        Assert.False(Winograd.TakesLargeTiles(7, 64, 24, 24, halfL2));   // 252
        Assert.True(Winograd.TakesLargeTiles(8, 64, 24, 24, halfL2));
        // An input gradient from 192 channels (conv3's) in groups of 3/4 of the L2: two panels
        // fit only in k chunks, which its caller takes.
        Assert.False(Winograd.TakesLargeTiles(32, 192, 24, 24, halfL2 / 2 * 3));
        Assert.True(Winograd.TakesLargeTiles(32, 192, 24, 24, halfL2 / 2 * 3, outChannels: 64));
        // To 128 channels no chunking leaves room for M in image-row order; interleaved (d2l 3b's
        // input gradient) chunks in groups of whole tile rows (InterleavedChunks).
        Assert.True(Winograd.TakesLargeTiles(128, 192, 12, 12, halfL2 / 2 * 3, outChannels: 128));
        Assert.Equal(1, Winograd.ChunksFor(192, 128, halfL2 / 2 * 3, 36, kSplit: true));
    }

    // Through the convolution entry points a 5x5 layer takes F(2x2, 5x5) for its output and
    // input gradient and the GEMM for its weight gradient; all three agree with the reference.
    [Fact]
    public void FiveByFiveConvolutionRunsThroughWinograd()
    {
        const int batch = 2, ci = 32, co = 40, h = 12, w = 12, k = 5;
        Assert.True(Winograd.Chosen(k, k, 1, 2, batch, h, w, inChannels: ci, outChannels: co));
        float[] x = GoldenFill.Fill("wino.five.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.five.w", co * ci * k * k, 2.0);
        float[] bias = GoldenFill.Fill("wino.five.b", co, 1.0);
        float[] dy = GoldenFill.Fill("wino.five.dy", batch * co * h * w, 2.0);
        var col = new float[ci * k * k * batch * h * w];
        var y = new float[batch * co * h * w];
        Convolution.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, k, k, 1, 2, h, w, relu: false, col, y);
        Compare.Close(Reference(x, batch, ci, co, h, w, weight, bias, k), y, FiveTolerance, "forward");

        var expectedDw = new float[weight.Length];
        var expectedDx = new float[x.Length];
        ReferenceConvolution.Backward(ToBatchMajor(x, batch, ci, h * w), batch, ci, h, w, weight, co, k, k, 1, 2, h, w,
            ToBatchMajor(dy, batch, co, h * w), expectedDw, new float[co], expectedDx);
        var dw = new float[weight.Length];
        var dx = new float[x.Length];
        Convolution.BackwardChannelMajor(x, batch, ci, h, w, weight, co, k, k, 1, 2, h, w, dy, col, dw, default, dx);
        Compare.Close(expectedDw, dw, Tolerance, "dWeight");
        Compare.Close(ToChannelMajor(expectedDx, batch, ci, h * w), dx, FiveTolerance, "dInput");
    }

    [Fact]
    public void ConvolutionUsesWinogradOnlyWhereItApplies()
    {
        Assert.True(Winograd.Applies(3, 3, 1, 1));
        Assert.False(Winograd.Applies(3, 3, 2, 1));
        Assert.False(Winograd.Applies(3, 3, 1, 0));
        Assert.True(Winograd.Applies(5, 5, 1, 2));
        Assert.False(Winograd.Applies(5, 5, 1, 1));
        Assert.False(Winograd.Applies(5, 5, 2, 2));
        Assert.False(Winograd.Applies(3, 5, 1, 1));
        Assert.False(Winograd.Applies(1, 1, 1, 0));
        // Too few tiles to repay the weight transform: one 14 x 14 image (49 tiles), not two.
        Assert.False(Winograd.Chosen(3, 3, 1, 1, 1, 14, 14));
        Assert.True(Winograd.Chosen(3, 3, 1, 1, 2, 14, 14));
        // Too few of the tiles' outputs inside the plane: a 3x3 plane uses 9 of 16, a 5x5 plane 25
        // of 36, a 7x7 plane 49 of 64, a 3x12 plane 36 of 48 and a 1x9 plane 9 of 20 (the bound is two thirds).
        Assert.False(Winograd.Chosen(3, 3, 1, 1, 128, 3, 3));
        Assert.False(Winograd.Chosen(3, 3, 1, 1, 128, 1, 9));
        Assert.True(Winograd.Chosen(3, 3, 1, 1, 128, 3, 12));
        Assert.True(Winograd.Chosen(3, 3, 1, 1, 128, 5, 5));
        Assert.True(Winograd.Chosen(3, 3, 1, 1, 32, 7, 7));
        // 5x5 kernels with 32 or more channels on both sides and rows of 6 to 8 or 12 to 16
        // tiles, or interleaved tiles: not without the channel counts, not on a 6x6 or 10x10
        // plane in image-row order, not from 16 channels.
        Assert.True(Winograd.Chosen(5, 5, 1, 2, 128, 12, 12, inChannels: 32, outChannels: 96));
        Assert.True(Winograd.Chosen(5, 5, 1, 2, 32, 28, 28, inChannels: 32, outChannels: 32));
        Assert.False(Winograd.Chosen(5, 5, 1, 2, 128, 12, 12));
        Assert.False(Winograd.Chosen(5, 5, 1, 2, 100, 6, 6, inChannels: 32, outChannels: 64));
        Assert.True(Winograd.Chosen(5, 5, 1, 2, 128, 6, 6, inChannels: 32, outChannels: 64)); // interleaved: lanes full
        Assert.False(Winograd.Chosen(5, 5, 1, 2, 100, 10, 10, inChannels: 32, outChannels: 64));
        Assert.False(Winograd.Chosen(5, 5, 1, 2, 128, 12, 12, inChannels: 16, outChannels: 32));
        Assert.False(Winograd.Chosen(5, 5, 1, 2, 128, 12, 12, inChannels: 32, outChannels: 16));

        // The convolution entry point takes the Winograd path when enabled and the implicit GEMM
        // otherwise; both agree with the reference, and they are not bit-identical, which shows
        // the switch really changes the kernel.
        const int batch = 2, ci = 24, co = 40, h = 12, w = 12;
        float[] x = GoldenFill.Fill("wino.switch.x", batch * ci * h * w, 2.0);
        float[] weight = GoldenFill.Fill("wino.switch.w", co * ci * 9, 2.0);
        float[] bias = GoldenFill.Fill("wino.switch.b", co, 1.0);
        float[] Run(bool enabled)
        {
            bool saved = Winograd.Enabled;
            Winograd.Enabled = enabled;
            try
            {
                var y = new float[batch * co * h * w];
                var col = new float[ci * 9 * batch * h * w];
                Convolution.ForwardChannelMajor(x, batch, ci, h, w, weight, bias, co, 3, 3, 1, 1, h, w, relu: false, col, y);
                return y;
            }
            finally
            {
                Winograd.Enabled = saved;
            }
        }
        float[] expected = Reference(x, batch, ci, co, h, w, weight, bias);
        float[] winograd = Run(true);
        float[] direct = Run(false);
        Compare.Close(expected, winograd, Tolerance, "winograd");
        Compare.Close(expected, direct, Tolerance, "direct");
        Assert.NotEqual(direct, winograd);
    }
}
