using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Layers;

namespace GoogLeNet.Benchmarks;

/// <summary>An Inception block's pool branch at batch 32: input channels, plane size, projection channels.</summary>
public sealed record PoolBranchShape(string Name, int Channels, int Size, int Projection)
{
    public override string ToString() => $"{Name} 32x{Channels}x{Size}x{Size} -> {Projection}";
}

/// <summary>
/// The pool branch of torchvision's Inception blocks in inference (3x3/1 max pool, then a 1x1
/// convolution with ReLU): the pool and the convolution apart, or the convolution pooling its
/// input as it packs it (<see cref="Convolution.ForwardMaxPooledPointwise"/>).
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class PoolBranchBenchmarks
{
    private const int Batch = 32;

    public static IEnumerable<PoolBranchShape> Shapes =>
    [
        new("3a", 192, 28, 32),
        new("4a", 480, 14, 64),
        new("5b", 832, 7, 128),
    ];

    [ParamsSource(nameof(Shapes))]
    public PoolBranchShape Shape { get; set; } = Shapes.First();

    [Params("apart", "fused")]
    public string Path { get; set; } = "fused";

    private readonly MaxPool2d _pool = new("pool", 3, 1, 1, ceilMode: true);
    private Tensor _input = new(1, 1, 1, 1);
    private float[] _weight = [];
    private float[] _bias = [];
    private float[] _output = [];

    [GlobalSetup]
    public void Setup()
    {
        PoolBranchShape s = Shape;
        _pool.SetChannelMajor(true);
        _input = new Tensor(Batch, s.Channels, s.Size, s.Size);
        var random = new Random(1);
        GemmBenchmarks.Fill(random, _input.Length).CopyTo(_input.Span);
        _weight = GemmBenchmarks.Fill(random, s.Projection * s.Channels);
        _bias = GemmBenchmarks.Fill(random, s.Projection);
        _output = new float[s.Projection * Batch * s.Size * s.Size];
        Gemm.MaxThreads = Environment.ProcessorCount;
    }

    [Benchmark]
    public float[] Run()
    {
        PoolBranchShape s = Shape;
        if (Path == "fused")
        {
            Convolution.ForwardMaxPooledPointwise(_input.Span, Batch, s.Channels, s.Size, s.Size, _weight, _bias, s.Projection, relu: true, _output);
            return _output;
        }
        Tensor pooled = _pool.Forward(_input);
        Convolution.ForwardChannelMajor(pooled.Span, Batch, s.Channels, s.Size, s.Size, _weight, _bias, s.Projection, 1, 1, 1, 0,
            s.Size, s.Size, relu: true, default, _output);
        return _output;
    }
}
