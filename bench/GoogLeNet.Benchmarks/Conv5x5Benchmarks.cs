using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Benchmarks;

/// <summary>A 5x5, stride-1, padding-2 convolution over a channel-major batch, named after its layer.</summary>
public sealed record Conv5x5Shape(string Name, int Batch, int InChannels, int OutChannels, int Size) : IHasFlops
{
    public double Flops => 2.0 * Batch * OutChannels * InChannels * 25 * Size * Size;

    public override string ToString() => $"{Name} {Batch}x{InChannels}->{OutChannels} {Size}x{Size}";
}

/// <summary>
/// The d2l and paper presets' 5x5 layers through Convolution.ForwardChannelMajor and
/// BackwardChannelMajor: Winograd F(2x2, 5x5) where it is chosen (otherwise as "direct"),
/// DirectConvolution, and the implicit im2col GEMM (forward) and the GEMM into col with col2im
/// (input gradient). Backward includes the weight gradient, the same implicit GEMM in every row.
/// Where DirectConvolution.ChosenForward says no (more than 64 output channels), the direct
/// forward row runs the GEMM. GFLOP/s counts one pass's direct multiply-adds.
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class Conv5x5Benchmarks
{
    public static IEnumerable<Conv5x5Shape> Shapes =>
    [
        new("d2l 3a", 128, 16, 32, 12),
        new("d2l 3b", 128, 32, 96, 12),
        new("d2l 4e", 128, 32, 128, 6),
        new("paper 3b", 32, 32, 96, 28),
    ];

    [ParamsSource(nameof(Shapes))]
    public Conv5x5Shape Shape { get; set; } = Shapes.First();

    [Params("winograd", "direct", "gemm")]
    public string Kernel { get; set; } = "winograd";

    [Params("forward", "backward")]
    public string Pass { get; set; } = "forward";

    private float[] _input = [];
    private float[] _weight = [];
    private float[] _output = [];
    private float[] _col = [];
    private float[] _dInput = [];
    private float[] _dWeight = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        Conv5x5Shape s = Shape;
        _input = GemmBenchmarks.Fill(random, s.InChannels * s.Batch * s.Size * s.Size);
        _weight = GemmBenchmarks.Fill(random, s.OutChannels * s.InChannels * 25);
        _output = GemmBenchmarks.Fill(random, s.OutChannels * s.Batch * s.Size * s.Size);
        _col = new float[1 << 22];
        _dInput = new float[_input.Length];
        _dWeight = new float[_weight.Length];
        Gemm.MaxThreads = Environment.ProcessorCount;
        Winograd.LargeTilesEnabled = Kernel == "winograd";
        DirectConvolution.Enabled = Kernel != "gemm";
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        Winograd.LargeTilesEnabled = true;
        DirectConvolution.Enabled = true;
    }

    [Benchmark]
    public void Run()
    {
        Conv5x5Shape s = Shape;
        if (Pass == "forward")
        {
            Convolution.ForwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, default, s.OutChannels,
                5, 5, 1, 2, s.Size, s.Size, relu: true, _col, _output);
            return;
        }
        // The output buffer stands in for dOutput.
        Convolution.BackwardChannelMajor(_input, s.Batch, s.InChannels, s.Size, s.Size, _weight, s.OutChannels, 5, 5, 1, 2,
            s.Size, s.Size, _output, _col, _dWeight, default, _dInput);
    }
}
