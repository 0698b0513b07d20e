using BenchmarkDotNet.Attributes;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Kernels;
using GoogLeNet.Models;

namespace GoogLeNet.Benchmarks;

/// <summary>
/// One torchvision-preset forward pass at batch 1 on all threads, with the engine's idle threads
/// sleeping at once (0) or spinning a millisecond first (1000, the default): a pass makes about
/// sixty fork-joins a few hundred microseconds apart.
/// </summary>
[Config(typeof(GemmBenchmarks.Config))]
public class InferenceBenchmarks
{
    [Params(0, 1000)]
    public int SpinMicroseconds { get; set; } = 1000;

    private GoogLeNetModel _model = new(GoogLeNetOptions.For(Preset.Torchvision));
    private Tensor _input = new(1, 3, 224, 224);

    [GlobalSetup]
    public void Setup()
    {
        Gemm.MaxThreads = Environment.ProcessorCount;
        Parallelism.SpinMicroseconds = SpinMicroseconds;
        _model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision));
        _model.SetTraining(false);
        _input = new Tensor([1, .. _model.InputShape]);
        GemmBenchmarks.Fill(new Random(1), _input.Length).CopyTo(_input.Span);
    }

    [Benchmark]
    public Tensor BatchOne() => _model.Forward(_input).Logits;
}
