using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Benchmarks;

/// <summary>A stride-2 7x7 stem over a channel-major batch, named after its preset.</summary>
public sealed record StemShape(string Name, int Batch, int InChannels, int Size) : IHasFlops
{
    public int OutSize => Size / 2;

    public double Flops => 2.0 * Batch * 64 * InChannels * 49 * OutSize * OutSize;

    public override string ToString() => $"{Name} {Batch}x{InChannels}x{Size}x{Size}";
}

/// <summary>
/// The stem's forward pass through Convolution.ForwardChannelMajor, as StemConvolution against
/// the implicit im2col GEMM it replaces (their outputs are identical), and its weight gradient
/// (StemConvolution.BackwardWeights against the implicit GEMM).
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class StemBenchmarks
{
    public static IEnumerable<StemShape> Shapes =>
    [
        new("torchvision", 32, 3, 224),
        new("torchvision", 1, 3, 224),
        new("d2l", 128, 1, 96),
    ];

    [ParamsSource(nameof(Shapes))]
    public StemShape Shape { get; set; } = Shapes.First();

    [Params("stem", "gemm")]
    public string Kernel { get; set; } = "stem";

    private float[] _input = [];
    private float[] _weight = [];
    private float[] _bias = [];
    private float[] _output = [];
    private float[] _col = [];
    private float[] _dWeight = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        StemShape s = Shape;
        _input = GemmBenchmarks.Fill(random, s.InChannels * s.Batch * s.Size * s.Size);
        _weight = GemmBenchmarks.Fill(random, 64 * s.InChannels * 49);
        _bias = GemmBenchmarks.Fill(random, 64);
        _output = new float[64 * s.Batch * s.OutSize * s.OutSize];
        _col = new float[1 << 20];
        _dWeight = new float[_weight.Length];
        Gemm.MaxThreads = Environment.ProcessorCount;
        StemConvolution.Enabled = Kernel == "stem";
    }

    [GlobalCleanup]
    public void Cleanup() => StemConvolution.Enabled = true;

    [Benchmark]
    public void Forward()
    {
        StemShape s = Shape;
        Convolution.ForwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, _bias, 64, 7, 7, 2, 3,
            s.OutSize, s.OutSize, relu: true, _col, _output);
    }

    // The weight gradient alone (the stem's input needs none): StemConvolution.BackwardWeights
    // against the implicit GEMM; the output buffer stands in for dOutput.
    [Benchmark]
    public void WeightGradient()
    {
        StemShape s = Shape;
        Convolution.BackwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, 64, 7, 7, 2, 3,
            s.OutSize, s.OutSize, _output, _col, _dWeight, default, default);
    }
}
