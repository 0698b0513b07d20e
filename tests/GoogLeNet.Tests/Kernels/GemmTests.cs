using System.Runtime.Intrinsics.X86;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Kernels.Reference;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary><see cref="Gemm"/> against <see cref="ReferenceGemm"/> over swept shapes, transposes and epilogues.</summary>
[Collection(EngineThreadsCollection.Name)]
public class GemmTests
{
    // The oracle sums in double; Gemm sums in float32 with fused multiply-adds, in k order per
    // KC slice. Rounding error of a float32 sum of k products grows like sqrt(k) ulps of the
    // largest product in practice (k ulps at worst), so the bound is scaled by sqrt(k) and by
    // max|a| max|b| (plus the magnitudes C and the bias bring in); 1e-5 is about 80 float32 ulps.
    private const double Tolerance = 1e-5;

    // Sizes around the 6-row and 16/64-column tiles, the 8-wide packing transposes and the
    // 256/384-deep k slices.
    private static readonly int[] s_tailSizes = [1, 2, 3, 5, 7, 15, 17, 31, 33, 63, 65, 100, 129];
    private static readonly int[] s_tailDepths = [1, 2, 3, 7, 8, 17, 33, 100, 257, 262, 400];

    public static TheoryData<bool, bool> TransposeCombos => new()
    {
        { false, false }, { false, true }, { true, false }, { true, true },
    };

    [Theory]
    [MemberData(nameof(TransposeCombos))]
    public void MatchesReferenceOverTailShapes(bool transA, bool transB)
    {
        var random = new Random(transA ? transB ? 4 : 3 : transB ? 2 : 1);
        int flagCycle = 0;
        foreach (int m in s_tailSizes)
        {
            foreach (int n in s_tailSizes)
            {
                foreach (int k in s_tailDepths)
                {
                    // Walks every accumulate/bias/relu/scale combination across the sweep (a row
                    // scale only without accumulate, which the GEMM rejects).
                    int flags = flagCycle++ % 16;
                    CheckAgainstReference(random, transA, transB, m, n, k,
                        padA: random.Next(3), padB: random.Next(3), padC: random.Next(3),
                        accumulate: (flags & 1) != 0, bias: (flags & 2) != 0, relu: (flags & 4) != 0,
                        scale: (flags & 9) == 8);
                }
            }
        }
    }

    public static TheoryData<bool, bool, bool> EpilogueCombos => new()
    {
        { false, false, false }, { false, false, true }, { false, true, false }, { false, true, true },
        { true, false, false }, { true, false, true }, { true, true, false }, { true, true, true },
    };

    [Theory]
    [MemberData(nameof(EpilogueCombos))]
    public void EpilogueMatchesReference(bool accumulate, bool bias, bool relu)
    {
        var random = new Random(11);
        foreach ((bool transA, bool transB) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            foreach ((int m, int n, int k) in new[] { (6, 16, 8), (13, 70, 35), (64, 49, 147), (100, 196, 300) })
            {
                CheckAgainstReference(random, transA, transB, m, n, k, padA: 3, padB: 5, padC: 7, accumulate, bias, relu);
            }
        }
    }

    // The folded-BatchNorm epilogue: C = (A B) x scale + bias, ReLU; the scale spans signs and
    // includes zero so a negative scale flips which products the ReLU keeps.
    [Theory]
    [MemberData(nameof(TransposeCombos))] // the same four boolean pairs, read as (bias, relu)
    public void RowScaleEpilogueMatchesReference(bool bias, bool relu)
    {
        var random = new Random(bias ? relu ? 24 : 23 : relu ? 22 : 21);
        foreach ((bool transA, bool transB) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            foreach ((int m, int n, int k) in new[] { (6, 16, 8), (13, 70, 35), (64, 49, 147), (100, 196, 300), (192, 196, 480), (7, 1, 33), (1, 9, 20), (5, 3, 0) })
            {
                CheckAgainstReference(random, transA, transB, m, n, k, padA: 3, padB: 5, padC: 7, accumulate: false, bias, relu, scale: true);
            }
        }
    }

    [Fact]
    public void RowScaleRejectsAccumulateAndShortScales()
    {
        float[] a = new float[6], b = new float[6], c = new float[4];
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c, 2, accumulate: true, rowScale: [1f, 2f]));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c, 2, accumulate: false, rowScale: [1f]));
    }

    public static TheoryData<int> LargeDepths => new() { 256, 384, 385, 768, 1000, 2400, 4097 };

    [Theory]
    [MemberData(nameof(LargeDepths))]
    public void LargeKMatchesReference(int k)
    {
        var random = new Random(k);
        foreach ((bool transA, bool transB) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            CheckAgainstReference(random, transA, transB, 19, 37, k, padA: 1, padB: 2, padC: 3,
                accumulate: true, bias: true, relu: false);
        }
    }

    // GoogLeNet's conv-as-GEMM shapes (m = output channels, n = pixels, k = ci * kh * kw) and their
    // backward products: dW = dY col^T (transB), dCol = W^T dY (transA).
    public static TheoryData<int, int, int, bool, bool> NetworkShapes => new()
    {
        { 64, 784, 192, false, false },
        { 208, 196, 864, false, false },
        { 384, 49, 832, false, false },
        { 64, 147, 3136, false, true },
        { 576, 196, 64, true, false },
        { 10, 1, 1024, false, true },
        // Channel-major batches: rows of B longer than the in-place limit, ragged last panels.
        { 64, 6275, 147, false, false },
        { 192, 4105, 64, false, false },
        { 16, 6275, 480, false, false },
        { 1, 10, 1024, false, false },
        // A linear layer's dX = dY W: few rows of A, rows of B 2 KiB apart, so B is packed (and read
        // in place at the padded leading dimension of the third check).
        { 40, 1024, 300, false, false },
        // Weight gradients whose k (the batch's pixels) dwarfs m and n: summed in k chunks
        // (DepthChunksFollowTheShapeAlone checks that these two are split).
        { 64, 147, 40000, false, true },
        { 7, 49, 20000, true, false },
    };

    [Theory]
    [MemberData(nameof(NetworkShapes))]
    public void NetworkShapesMatchReference(int m, int n, int k, bool transA, bool transB)
    {
        var random = new Random(m * 31 + n);
        CheckAgainstReference(random, transA, transB, m, n, k, padA: 0, padB: 0, padC: 0,
            accumulate: false, bias: true, relu: true);
        CheckAgainstReference(random, transA, transB, m, n, k, padA: 0, padB: 0, padC: 0,
            accumulate: false, bias: true, relu: true, scale: true);
        CheckAgainstReference(random, transA, transB, m, n, k, padA: 4, padB: 4, padC: 4,
            accumulate: true, bias: false, relu: false);
    }

    public static TheoryData<int, int, int, bool, bool> ParallelShapes => new()
    {
        { 192, 3136, 64, false, false },
        { 384, 49, 832, false, false },
        { 100, 1000, 700, true, true },
        { 33, 4001, 300, false, true },
        { 1000, 17, 513, true, false },
        { 64, 49, 30000, false, true },
    };

    [Theory]
    [MemberData(nameof(ParallelShapes))]
    public void ResultsDoNotDependOnThreadCount(int m, int n, int k, bool transA, bool transB)
    {
        var random = new Random(5);
        int lda = transA ? m : k, ldb = transB ? k : n;
        float[] a = RandomArray(random, (transA ? k : m) * lda);
        float[] b = RandomArray(random, (transB ? n : k) * ldb);
        float[] bias = RandomArray(random, m);
        float[] initial = RandomArray(random, m * n);
        int saved = Gemm.MaxThreads;
        try
        {
            var results = new List<float[]>();
            foreach (int threads in new[] { 1, 2, 3 })
            {
                Gemm.MaxThreads = threads;
                foreach (bool accumulate in new[] { false, true })
                {
                    float[] c = (float[])initial.Clone();
                    Gemm.Multiply(transA, transB, m, n, k, a, lda, b, ldb, c, n, accumulate, bias, relu: true);
                    results.Add(c);
                }
            }
            for (int i = 2; i < results.Count; i++)
            {
                Assert.True(results[i].AsSpan().SequenceEqual(results[i % 2]),
                    $"{m}x{n}x{k}: result with {i / 2 + 1} threads differs from 1 thread (accumulate {i % 2 == 1}).");
            }
        }
        finally
        {
            Gemm.MaxThreads = saved;
        }
    }

    // The sweeps above run the default width; this runs tails, epilogues and network shapes with
    // each width the CPU has, against the oracle and against each other: both kernels sum every
    // element in k order with fused multiply-adds, so up to k = 256 (one k slice for either) their
    // results must be identical; deeper sums are sliced at 256 or 384 and only meet the oracle.
    [Fact]
    public void BothVectorWidthsMatchReferenceAndEachOther()
    {
        int saved = Gemm.VectorBits;
        if (!Avx512F.IsSupported)
        {
            Assert.Equal(256, saved);
            Assert.Throws<PlatformNotSupportedException>(() => Gemm.VectorBits = 512);
            return;
        }
        try
        {
            var results = new Dictionary<int, List<float[]>>();
            var depths = new List<int>();
            foreach (int bits in new[] { 256, 512 })
            {
                Gemm.VectorBits = bits;
                var outputs = results[bits] = [];
                var random = new Random(11);
                int flagCycle = 0;
                foreach (int m in new[] { 1, 5, 7, 13, 65 })
                {
                    foreach (int n in new[] { 1, 7, 17, 63, 65, 129, 200 })
                    {
                        foreach (int k in new[] { 1, 17, 257, 400 })
                        {
                            int flags = flagCycle++ % 16;
                            bool transA = (flagCycle & 16) != 0, transB = (flagCycle & 32) != 0;
                            if (bits == 256)
                            {
                                depths.Add(k);
                            }
                            outputs.Add(CheckAgainstReference(random, transA, transB, m, n, k,
                                padA: random.Next(3), padB: random.Next(3), padC: random.Next(3),
                                accumulate: (flags & 1) != 0, bias: (flags & 2) != 0, relu: (flags & 4) != 0,
                                scale: (flags & 9) == 8));
                        }
                    }
                }
                foreach ((int m, int n, int k, bool transA, bool transB) in new[]
                {
                    (64, 784, 192, false, false), (208, 196, 864, false, false), (64, 147, 3136, false, true),
                    (576, 196, 64, true, false), (192, 4105, 64, false, false), (300, 1100, 500, false, false),
                })
                {
                    if (bits == 256)
                    {
                        depths.AddRange([k, k]);
                    }
                    outputs.Add(CheckAgainstReference(random, transA, transB, m, n, k, padA: 0, padB: 0, padC: 0,
                        accumulate: false, bias: true, relu: true, scale: true));
                    outputs.Add(CheckAgainstReference(random, transA, transB, m, n, k, padA: 1, padB: 2, padC: 3,
                        accumulate: true, bias: true, relu: false));
                }
            }
            Assert.Equal(results[256].Count, results[512].Count);
            int compared = 0;
            for (int i = 0; i < results[256].Count; i++)
            {
                if (depths[i] > 256)
                {
                    continue;
                }
                compared++;
                Assert.True(results[256][i].AsSpan().SequenceEqual(results[512][i]), $"Product {i} (k = {depths[i]}): the 256-bit and 512-bit kernels differ.");
            }
            // k = 1 and 17 of the sweep's 140 products, and two products each at k = 192, 64, 64.
            Assert.Equal(70 + 6, compared);
        }
        finally
        {
            Gemm.VectorBits = saved;
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.VectorBits = 128);
    }

    [Fact]
    public void DepthChunksFollowTheShapeAlone()
    {
        Assert.Equal(9, Gemm.DepthChunks(64, 147, 40000));
        Assert.Equal(4, Gemm.DepthChunks(7, 49, 20000));
        Assert.Equal(16, Gemm.DepthChunks(64, 147, 401408)); // the stem's weight gradient, batch 32
        Assert.Equal(1, Gemm.DepthChunks(64, 147, 8000)); // k too short for two chunks
        Assert.Equal(1, Gemm.DepthChunks(832, 256, 25088)); // k under 32 times m
        Assert.Equal(1, Gemm.DepthChunks(1, 1, 20000)); // too little work to share
    }

    [Fact]
    public void SteadyStateCallsDoNotAllocate()
    {
        float[] a = new float[64 * 300], b = new float[300 * 200], c = new float[64 * 200], bias = new float[64];
        float[] tallA = new float[16 * 9000], tallB = new float[24 * 9000];
        void Run()
        {
            Gemm.Multiply(false, true, 16, 24, 9000, tallA, 9000, tallB, 9000, c, 24, accumulate: true);
            Gemm.Multiply(false, false, 64, 200, 300, a, 300, b, 200, c, 200, accumulate: false, bias, relu: true);
            Gemm.Multiply(true, true, 64, 200, 300, a, 64, b, 300, c, 200, accumulate: true);
            Gemm.Multiply(false, true, 1, 200, 300, a, 300, b, 300, c, 200, accumulate: false);
        }
        Run();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run();
        Run();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void ZeroDepthGivesBiasAndRelu()
    {
        float[] c = [float.NaN, float.NaN, -1f, 2f];
        Gemm.Multiply(false, false, 2, 2, 0, [], 1, [], 2, c, 2, accumulate: false, [0.5f, -3f]);
        Assert.Equal([0.5f, 0.5f, -3f, -3f], c);

        float[] d = [1f, -4f, 3f, 1f];
        Gemm.Multiply(false, false, 2, 2, 0, [], 1, [], 2, d, 2, accumulate: true, [0.5f, -3f], relu: true);
        Assert.Equal([1.5f, 0f, 0f, 0f], d);
    }

    [Fact]
    public void EmptyOutputLeavesCUntouched()
    {
        float[] c = [7f];
        Gemm.Multiply(false, false, 0, 1, 3, [], 3, [1f, 2f, 3f], 1, c, 1, accumulate: false);
        Gemm.Multiply(false, false, 1, 0, 3, [1f, 2f, 3f], 3, [], 1, c, 1, accumulate: false);
        Assert.Equal(7f, c[0]);
    }

    [Fact]
    public void RejectsOperandsTooSmallForTheirShape()
    {
        float[] a = new float[6], b = new float[6], c = new float[4];
        Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c, 2, false);
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a.AsSpan(0, 5), 3, b, 2, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 2, b, 2, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b.AsSpan(0, 5), 2, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c.AsSpan(0, 3), 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(true, false, 2, 2, 3, a, 1, b, 2, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c, 2, false, [1f]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.MaxThreads = 0);
    }

    // Runs both implementations on the same random operands (C padded beyond n by padC columns,
    // NaN-filled when not accumulating, to prove C is not read) and checks every element of the C
    // buffer: the m x n view against the oracle, the padding unchanged.
    private static float[] CheckAgainstReference(Random random, bool transA, bool transB, int m, int n, int k,
        int padA, int padB, int padC, bool accumulate, bool bias, bool relu, bool scale = false)
    {
        int lda = (transA ? m : k) + padA;
        int ldb = (transB ? k : n) + padB;
        int ldc = n + padC;
        float[] a = RandomArray(random, (transA ? k : m) * lda);
        float[] b = RandomArray(random, (transB ? n : k) * ldb);
        float[] rowBias = bias ? RandomArray(random, m) : [];
        float[] rowScale = scale ? RandomArray(random, m) : [];
        if (scale)
        {
            rowScale[0] = 0f;
        }
        float[] initial = RandomArray(random, m * ldc);
        float[] expected = (float[])initial.Clone();
        ReferenceGemm.Multiply(transA, transB, m, n, k, a, lda, b, ldb, expected, ldc, accumulate, rowBias, relu, rowScale);

        float[] actual = (float[])initial.Clone();
        if (!accumulate)
        {
            for (int i = 0; i < m; i++)
            {
                actual.AsSpan(i * ldc, n).Fill(float.NaN);
            }
        }
        Gemm.Multiply(transA, transB, m, n, k, a, lda, b, ldb, actual, ldc, accumulate, rowBias, relu, rowScale);

        // The row scale multiplies the rounded float32 sum, so its error scales with max|scale|.
        double magnitude = (MaxAbs(a) * MaxAbs(b) + (accumulate ? MaxAbs(initial) : 0)) * (scale ? Math.Max(MaxAbs(rowScale), 1) : 1) + MaxAbs(rowBias);
        double tolerance = Tolerance * Math.Sqrt(Math.Max(k, 1)) * Math.Max(magnitude, 1e-30);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                int index = i * ldc + j;
                if (j >= n)
                {
                    Assert.True(actual[index].Equals(initial[index]),
                        $"{Describe(transA, transB, m, n, k, accumulate, bias, relu)} scale={scale}: padding C[{i}, {j}] changed to {actual[index]}.");
                    continue;
                }
                double error = Math.Abs((double)actual[index] - expected[index]);
                if (!(error <= tolerance))
                {
                    Assert.Fail($"{Describe(transA, transB, m, n, k, accumulate, bias, relu)} scale={scale}: C[{i}, {j}] = {actual[index]}, expected {expected[index]} (error {error:g3} > {tolerance:g3}).");
                }
            }
        }
        return actual;
    }

    private static string Describe(bool transA, bool transB, int m, int n, int k, bool accumulate, bool bias, bool relu) =>
        $"m={m} n={n} k={k} transA={transA} transB={transB} accumulate={accumulate} bias={bias} relu={relu}";

    private static float[] RandomArray(Random random, int length)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (float)(random.NextDouble() * 2 - 1);
        }
        return values;
    }

    private static double MaxAbs(float[] values)
    {
        double max = 0;
        foreach (float v in values)
        {
            max = Math.Max(max, Math.Abs(v));
        }
        return max;
    }
}
