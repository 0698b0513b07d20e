using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Engine.Layers;

namespace GoogLeNet.Benchmarks;

/// <summary>A max pooling of GoogLeNet at batch 32, named after its layer.</summary>
public sealed record PoolShape(string Name, int Channels, int Size, int Kernel, int Stride, int Padding)
{
    public override string ToString() => $"{Name} 32x{Channels}x{Size}x{Size} {Kernel}x{Kernel}/{Stride}";
}

/// <summary>
/// GoogLeNet's max poolings (torchvision's, batch 32) through the MaxPool2d layer on all threads:
/// inference, and training, which also records each maximum's index for the backward pass.
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class PoolingBenchmarks
{
    private const int Batch = 32;

    public static IEnumerable<PoolShape> Shapes =>
    [
        new("maxpool1", 64, 112, 3, 2, 0),
        new("maxpool2", 192, 56, 3, 2, 0),
        new("maxpool3", 480, 28, 3, 2, 0),
        new("3b branch4", 256, 28, 3, 1, 1),
        new("4a branch4", 480, 14, 3, 1, 1),
        new("5b branch4", 832, 7, 3, 1, 1),
    ];

    [ParamsSource(nameof(Shapes))]
    public PoolShape Shape { get; set; } = Shapes.First();

    [Params("infer", "train")]
    public string Mode { get; set; } = "infer";

    /// <summary>16 outputs a step with AVX-512 where rows are wide enough (Pooling.WideVectors), or 8.</summary>
    [Params(true, false)]
    public bool WideVectors { get; set; } = true;

    private MaxPool2d _pool = new("pool", 3, 1, 1, ceilMode: true);
    private Tensor _input = new(1, 1, 1, 1);

    [GlobalSetup]
    public void Setup()
    {
        PoolShape s = Shape;
        _pool = new MaxPool2d("pool", s.Kernel, s.Stride, s.Padding, ceilMode: true);
        _pool.SetTraining(Mode == "train");
        _pool.SetChannelMajor(true);
        _input = new Tensor(Batch, s.Channels, s.Size, s.Size);
        GemmBenchmarks.Fill(new Random(1), _input.Length).CopyTo(_input.Span);
        Gemm.MaxThreads = Environment.ProcessorCount;
        Pooling.WideVectors = WideVectors;
    }

    [Benchmark]
    public Tensor Run() => _pool.Forward(_input);
}
