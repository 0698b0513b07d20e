using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Benchmarks;

/// <summary>A benchmark parameter that knows the floating-point operations of one call.</summary>
public interface IHasFlops
{
    double Flops { get; }
}

/// <summary>One matrix product: m x n x k with its transposes, named after the layer it comes from.</summary>
public sealed record GemmShape(string Name, int M, int N, int K, bool TransA = false, bool TransB = false) : IHasFlops
{
    public double Flops => 2.0 * M * N * K;

    public override string ToString() =>
        $"{Name} {M}x{N}x{K}{(TransA ? " At" : "")}{(TransB ? " Bt" : "")}";
}

/// <summary>
/// Gemm.Multiply on GoogLeNet's convolution shapes (NCHW per image: m = output channels,
/// n = pixels, k = input channels x kernel area), their backward products, a batched 1x1 and
/// SGEMM 4096^3. The GFLOP/s column is 2mnk over the mean time.
/// </summary>
[Config(typeof(Config))]
public class GemmBenchmarks
{
    public static IEnumerable<GemmShape> Shapes =>
    [
        new("conv1 7x7/2", 64, 12544, 147),
        new("conv2 1x1", 64, 3136, 64),
        new("conv2 3x3", 192, 3136, 576),
        new("3a 1x1", 64, 784, 192),
        new("3a 3x3", 128, 784, 864),
        new("4a 3x3", 208, 196, 864),
        new("4e 3x3", 320, 196, 1440),
        new("5b 1x1", 384, 49, 832),
        new("5b 3x3", 384, 49, 1728),
        new("k2400", 128, 196, 2400),
        new("3a 1x1 batch 32", 64, 25088, 192),
        new("conv1 dW", 64, 147, 12544, TransB: true),
        new("conv2 3x3 dW", 192, 576, 3136, TransB: true),
        new("conv2 3x3 dCol", 576, 3136, 192, TransA: true),
        new("5b 1x1 dW", 384, 832, 49, TransB: true),
        new("5b 1x1 dX", 832, 49, 384, TransA: true),
        new("fc batch 1", 1, 10, 1024, TransB: true),
        new("sgemm", 4096, 4096, 4096),
    ];

    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; } = Shapes.First();

    [Params(2)]
    public int Threads { get; set; }

    private float[] _a = [];
    private float[] _b = [];
    private float[] _c = [];
    private float[] _bias = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        _a = Fill(random, Shape.M * Shape.K);
        _b = Fill(random, Shape.K * Shape.N);
        _c = new float[Shape.M * Shape.N];
        _bias = Fill(random, Shape.M);
        Gemm.MaxThreads = Threads;
    }

    [Benchmark]
    public void Multiply()
    {
        GemmShape s = Shape;
        Gemm.Multiply(s.TransA, s.TransB, s.M, s.N, s.K,
            _a, s.TransA ? s.M : s.K, _b, s.TransB ? s.K : s.N, _c, s.N, accumulate: false, _bias, relu: true);
    }

    internal static float[] Fill(Random random, int length)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (float)(random.NextDouble() * 2 - 1);
        }
        return values;
    }

    internal sealed class Config : ManualConfig
    {
        public Config()
        {
            AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(10).WithLaunchCount(1));
            AddColumn(new GflopsColumn());
            WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(40));
        }
    }

    private sealed class GflopsColumn : IColumn
    {
        public string Id => nameof(GflopsColumn);
        public string ColumnName => "GFLOP/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "2mnk (a convolution: its direct multiply-adds x 2) / mean time, in 1e9 floating-point operations per second";

        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) =>
            GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var report = summary[benchmarkCase];
            var shape = benchmarkCase.Parameters.Items.Select(p => p.Value).OfType<IHasFlops>().FirstOrDefault();
            if (report?.ResultStatistics is null || shape is null)
            {
                return "-";
            }
            return (shape.Flops / report.ResultStatistics.Mean).ToString("F1");
        }
    }
}
