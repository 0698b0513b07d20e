using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace GoogLeNet.Tests;

/// <summary>The googlenet command as a user runs it: its JSON contract, its figures and its errors.</summary>
public class CliTests
{
    internal static (int ExitCode, string Output, string Error) Run(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "googlenet.dll"));
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"googlenet {string.Join(' ', args)} did not finish in 120 s");
        }
        return (process.ExitCode, output.Result, error.Result);
    }

    [Theory]
    [InlineData("paper", false, 6_998_552L, 1_582_671_872L, 1000, "3,224,224")]
    [InlineData("paper", true, 13_378_280L, -1L, 1000, "3,224,224")]
    [InlineData("torchvision", false, 6_624_904L, 1_498_376_192L, 1000, "3,224,224")]
    [InlineData("torchvision", true, 13_004_888L, -1L, 1000, "3,224,224")]
    [InlineData("d2l", false, 5_977_530L, 276_066_304L, 10, "1,96,96")]
    public void SummaryJsonHasTheContractFieldsAndExactTotals(string preset, bool aux, long parameters, long macs, int classes, string input)
    {
        var args = new List<string> { "summary", "--preset", preset, "--json" };
        if (aux)
        {
            args.Add("--aux");
        }
        var (code, output, error) = Run([.. args]);
        Assert.True(code == 0, error);
        JsonElement root = JsonDocument.Parse(output).RootElement;
        Assert.Equal(preset, root.GetProperty("preset").GetString());
        Assert.Equal(input, string.Join(",", root.GetProperty("input").EnumerateArray().Select(e => e.GetInt32())));
        Assert.Equal(classes, root.GetProperty("classes").GetInt32());
        Assert.Equal(aux, root.GetProperty("aux").GetBoolean());
        Assert.Equal(parameters, root.GetProperty("parameters").GetInt64());
        if (macs >= 0)
        {
            Assert.Equal(macs, root.GetProperty("macs").GetInt64());
        }
        JsonElement[] layers = root.GetProperty("layers").EnumerateArray().ToArray();
        Assert.Equal(parameters, layers.Sum(l => l.GetProperty("parameters").GetInt64()));
        JsonElement conv1 = layers.First(l => l.GetProperty("name").GetString() == "conv1");
        Assert.Equal(3, conv1.GetProperty("output").GetArrayLength());
        Assert.True(conv1.TryGetProperty("type", out _));
        Assert.True(conv1.GetProperty("macs").GetInt64() > 0);
    }

    [Fact]
    public void SummaryTableEndsWithTotals()
    {
        var (code, output, _) = Run("summary", "--preset", "torchvision");
        Assert.Equal(0, code);
        Assert.Contains("inception4e", output);
        Assert.Contains("832x14x14", output);
        Assert.Matches(@"total\s+6,624,904\s+1,498,376,192", output);
    }

    [Fact]
    public void CostShowsTheSeedsArgument()
    {
        var (code, output, _) = Run("cost", "--preset", "paper", "--json");
        Assert.Equal(0, code);
        JsonElement root = JsonDocument.Parse(output).RootElement;
        Assert.Equal(120_422_400, root.GetProperty("example").GetProperty("naive").GetInt64());
        Assert.Equal(12_443_648, root.GetProperty("example").GetProperty("reduced").GetInt64());
        JsonElement[] blocks = root.GetProperty("blocks").EnumerateArray().ToArray();
        Assert.Equal(9, blocks.Length);
        // 3a at 28x28: 1x1 64 + (1x1 96, 3x3 128) + (1x1 16, 5x5 32) + pool proj 32, all on 192 channels.
        long expected3a = 28L * 28 * (192 * 64 + 192 * 96 + 96 * 128 * 9 + 192 * 16 + 16 * 32 * 25 + 192 * 32);
        Assert.Equal(expected3a, blocks[0].GetProperty("withReductions").GetInt64());
        Assert.Equal(28L * 28 * 192 * (64 + 128 * 9 + 32 * 25), blocks[0].GetProperty("withoutReductions").GetInt64());
    }

    [Theory]
    [InlineData("infer")]
    [InlineData("train")]
    public void BenchJsonHasTheContractFields(string mode)
    {
        var (code, output, error) = Run("bench", "--preset", "d2l", "--mode", mode, "--batch", "2", "--input", "1x64x64",
            "--threads", "1", "--warmup", "0", "--iters", "1", "--json");
        Assert.True(code == 0, error);
        JsonElement root = JsonDocument.Parse(output).RootElement;
        Assert.Equal("d2l", root.GetProperty("preset").GetString());
        Assert.Equal(mode, root.GetProperty("mode").GetString());
        Assert.Equal(2, root.GetProperty("batch").GetInt32());
        Assert.Equal([1, 64, 64], root.GetProperty("input").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(1, root.GetProperty("threads").GetInt32());
        double milliseconds = root.GetProperty("medianMilliseconds").GetDouble();
        Assert.True(milliseconds > 0);
        // img/s is the batch over the median time, to the printed precision.
        Assert.Equal(2 / (milliseconds / 1000), root.GetProperty("imagesPerSecond").GetDouble(), 1e-9);
        Assert.True(root.GetProperty("peakWorkingSetBytes").GetInt64() > 0);
        Assert.Equal("winograd", root.GetProperty("conv3x3").GetString());
        // The engine's default.
        Assert.Equal(1000, root.GetProperty("spinMicroseconds").GetInt32());
    }

    [Fact]
    public void BenchSetsTheSpinTime()
    {
        var (code, output, error) = Run("bench", "--preset", "d2l", "--batch", "1", "--input", "1x64x64",
            "--threads", "2", "--warmup", "0", "--iters", "1", "--spin-us", "0", "--json");
        Assert.True(code == 0, error);
        Assert.Equal(0, JsonDocument.Parse(output).RootElement.GetProperty("spinMicroseconds").GetInt32());
    }

    // 512 is the default wherever the CPU has AVX-512F; 256 runs everywhere.
    [Fact]
    public void BenchSetsTheVectorWidth()
    {
        var (code, output, error) = Run("bench", "--gemm", "64x64x64", "--warmup", "0", "--iters", "1", "--json");
        Assert.True(code == 0, error);
        int expected = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? 512 : 256;
        Assert.Equal(expected, JsonDocument.Parse(output).RootElement.GetProperty("vectorBits").GetInt32());

        (code, output, error) = Run("bench", "--gemm", "64x64x64", "--warmup", "0", "--iters", "1", "--vector-bits", "256", "--json");
        Assert.True(code == 0, error);
        Assert.Equal(256, JsonDocument.Parse(output).RootElement.GetProperty("vectorBits").GetInt32());

        (code, _, error) = Run("bench", "--gemm", "64x64x64", "--warmup", "0", "--iters", "1", "--vector-bits", "512", "--json");
        Assert.Equal(expected == 512 ? 0 : 2, code);
        if (expected == 256)
        {
            Assert.Contains("needs a CPU with AVX-512F", error);
        }
    }

    [Fact]
    public void BenchGemmPrintsGflopsOfTheMedian()
    {
        var (code, output, error) = Run("bench", "--gemm", "96x80x70", "--threads", "2", "--warmup", "1", "--iters", "3", "--json");
        Assert.True(code == 0, error);
        JsonElement root = JsonDocument.Parse(output).RootElement;
        Assert.Equal([96, 80, 70], root.GetProperty("gemm").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(2, root.GetProperty("threads").GetInt32());
        double milliseconds = root.GetProperty("medianMilliseconds").GetDouble();
        Assert.Equal(2.0 * 96 * 80 * 70 / (milliseconds * 1e6), root.GetProperty("gflops").GetDouble(), 1e-9);
    }

    [Fact]
    public void BenchFmaPeakPrintsGflopsOfTheMedian()
    {
        var (code, output, error) = Run("bench", "--fma-peak", "--threads", "2", "--warmup", "0", "--iters", "1", "--json");
        Assert.True(code == 0, error);
        JsonElement root = JsonDocument.Parse(output).RootElement;
        Assert.Equal(2, root.GetProperty("threads").GetInt32());
        int bits = root.GetProperty("vectorBits").GetInt32();
        Assert.Contains(bits, new[] { 256, 512 });
        // 60 million steps of 12 multiply-adds (2 FLOPs each) per lane and thread.
        double milliseconds = root.GetProperty("medianMilliseconds").GetDouble();
        Assert.Equal(2.0 * 12 * (bits / 32) * 60e6 * 2 / (milliseconds * 1e6), root.GetProperty("gflops").GetDouble(), 1e-6);
    }

    [Theory]
    [InlineData("--threads and --iters must be at least 1", "bench", "--fma-peak", "--threads", "0")]
    [InlineData("--mode expects train or infer", "bench", "--mode", "fit")]
    [InlineData("--spin-us must be at least 0", "bench", "--spin-us", "-1")]
    [InlineData("--vector-bits expects 256 or 512", "bench", "--vector-bits", "128")]
    [InlineData("--gemm expects MxNxK", "bench", "--gemm", "64x64")]
    [InlineData("--gemm expects MxNxK", "bench", "--gemm", "64x-1x64")]
    [InlineData("Unknown preset 'resnet'", "summary", "--preset", "resnet")]
    [InlineData("--input expects CxHxW", "summary", "--input", "3x224")]
    [InlineData("at least", "summary", "--preset", "paper", "--aux", "--input", "3x40x40")]
    [InlineData("no auxiliary", "summary", "--preset", "d2l", "--aux")]
    public void BadInputExitsWithAMessage(string message, params string[] args)
    {
        var (code, _, error) = Run(args);
        Assert.Equal(2, code);
        Assert.Contains(message, error);
    }
}
