using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Benchmarks;

/// <summary>A 3x3, stride-1, padding-1 convolution over a channel-major batch, named after its layer.</summary>
public sealed record Conv3x3Shape(string Name, int Batch, int InChannels, int OutChannels, int Size) : IHasFlops
{
    public double Flops => 2.0 * Batch * OutChannels * InChannels * 9 * Size * Size;

    public override string ToString() => $"{Name} {Batch}x{InChannels}->{OutChannels} {Size}x{Size}";
}

/// <summary>
/// GoogLeNet's 3x3 convolutions through Convolution.ForwardChannelMajor and
/// BackwardChannelMajor (weight and input gradients), as Winograd with the tiles chosen per layer
/// ("winograd": F(4x4, 3x3) where it pays), on 2x2 tiles only, and as the implicit im2col GEMM.
/// GFLOP/s counts the direct multiply-adds, so it compares the algorithms' times.
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class Conv3x3Benchmarks
{
    public static IEnumerable<Conv3x3Shape> Shapes =>
    [
        new("torchvision conv3", 32, 64, 192, 56),
        new("torchvision 3b", 32, 128, 192, 28),
        new("torchvision 4e", 32, 160, 320, 14),
        new("torchvision 5b", 32, 192, 384, 7),
        new("d2l conv3", 128, 64, 192, 24),
    ];

    [ParamsSource(nameof(Shapes))]
    public Conv3x3Shape Shape { get; set; } = Shapes.First();

    [Params("winograd", "winograd2x2", "gemm")]
    public string Algorithm { get; set; } = "winograd";

    [Params("forward", "backward")]
    public string Pass { get; set; } = "forward";

    private float[] _input = [];
    private float[] _weight = [];
    private float[] _bias = [];
    private float[] _output = [];
    private float[] _col = [];
    private float[] _dWeight = [];
    private float[] _dBias = [];
    private float[] _dInput = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        Conv3x3Shape s = Shape;
        _input = GemmBenchmarks.Fill(random, s.InChannels * s.Batch * s.Size * s.Size);
        _weight = GemmBenchmarks.Fill(random, s.OutChannels * s.InChannels * 9);
        _bias = GemmBenchmarks.Fill(random, s.OutChannels);
        _output = GemmBenchmarks.Fill(random, s.OutChannels * s.Batch * s.Size * s.Size);
        _col = new float[1 << 22];
        _dWeight = new float[_weight.Length];
        _dBias = new float[s.OutChannels];
        _dInput = new float[_input.Length];
        Gemm.MaxThreads = Environment.ProcessorCount;
        Winograd.Enabled = Algorithm != "gemm";
        Winograd.LargeTilesEnabled = Algorithm == "winograd";
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        Winograd.Enabled = true;
        Winograd.LargeTilesEnabled = true;
    }

    [Benchmark]
    public void Run()
    {
        Conv3x3Shape s = Shape;
        if (Pass == "forward")
        {
            Convolution.ForwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, _bias, s.OutChannels,
                3, 3, 1, 1, s.Size, s.Size, relu: true, _col, _output);
        }
        else
        {
            // The output buffer stands in for dOutput.
            Convolution.BackwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, s.OutChannels,
                3, 3, 1, 1, s.Size, s.Size, _output, _col, _dWeight, _dBias, _dInput);
        }
    }
}
