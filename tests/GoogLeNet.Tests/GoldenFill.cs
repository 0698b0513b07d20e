using System.Text.Json;
using GoogLeNet.Engine;

namespace GoogLeNet.Tests;

/// <summary>
/// The deterministic fill that Golden/make_golden.py uses for inputs and weights: an integer hash
/// of (name, index), so PyTorch and the engine see bit-identical values without storing them.
/// </summary>
internal static class GoldenFill
{
    public static string Folder => Path.Combine(AppContext.BaseDirectory, "Golden");

    private static uint Fnv1a32(string name)
    {
        uint h = 2166136261;
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(name))
        {
            h = (h ^ b) * 16777619;
        }
        return h;
    }

    public static float[] Fill(string name, int count, double scale, double shift = 0)
    {
        uint seed = Fnv1a32(name);
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            uint x = unchecked((uint)i * 0x9E3779B1u + seed);
            x ^= x >> 16;
            x = unchecked(x * 0x85EBCA6Bu);
            x ^= x >> 13;
            x = unchecked(x * 0xC2B2AE35u);
            x ^= x >> 16;
            double u = (x >> 8) / (double)(1 << 24) - 0.5;
            values[i] = (float)(u * scale + shift);
        }
        return values;
    }

    public static Tensor Tensor(string name, int[] shape, double scale) =>
        GoogLeNet.Engine.Tensor.FromArray(Fill(name, (int)GoogLeNet.Engine.Tensor.ShapeSize(shape), scale), shape);

    /// <summary>Same rule as make_golden.py's param_fill.</summary>
    public static void FillParameter(string path, Parameter parameter)
    {
        int[] shape = parameter.Value.Shape;
        int count = parameter.Value.Length;
        string leaf = path[(path.LastIndexOf('.') + 1)..];
        float[] values = leaf switch
        {
            "weight" when shape.Length > 1 => Fill(path, count, ClassifierScale(path) * 2.0 * Math.Sqrt(6.0 / (count / shape[0]))),
            "weight" => Fill(path, count, 0.4, 1.0),
            "running_var" => Fill(path, count, 0.5, 0.75),
            "num_batches_tracked" => [0f],
            _ => Fill(path, count, 0.2),
        };
        values.CopyTo(parameter.Value.Span);
    }

    private static double ClassifierScale(string path) =>
        path.EndsWith("fc.weight", StringComparison.Ordinal) || path.EndsWith("fc2.weight", StringComparison.Ordinal) ? 0.02 : 1.0;

    public static void FillAll(IEnumerable<(string Path, Parameter Parameter)> parameters)
    {
        foreach (var (path, p) in parameters)
        {
            FillParameter(path, p);
        }
    }

    private static readonly Lazy<JsonElement> s_layers = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "layers.json"))).RootElement);

    private static readonly Lazy<JsonElement> s_models = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "models.json"))).RootElement);

    public static JsonElement Layer(string name) => s_layers.Value.GetProperty(name);

    public static JsonElement Model(string name) => s_models.Value.GetProperty(name);

    public static float[] Floats(JsonElement array) => array.EnumerateArray().Select(e => e.GetSingle()).ToArray();

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    public static float[] ModelArray(string model, string name)
    {
        byte[] bytes = File.ReadAllBytes(Path.Combine(Folder, "models", $"{model}.{name}.bin"));
        var values = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }
}

/// <summary>Comparisons that report the worst element and the tolerance it broke.</summary>
internal static class Compare
{
    /// <summary>Largest |a - b| divided by max(1, largest |expected|).</summary>
    public static double ScaledError(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, out int worst)
    {
        Xunit.Assert.Equal(expected.Length, actual.Length);
        double scale = 1;
        foreach (float e in expected)
        {
            scale = Math.Max(scale, Math.Abs(e));
        }
        double max = 0;
        worst = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs((double)expected[i] - actual[i]);
            if (double.IsNaN(d) || d > max)
            {
                max = double.IsNaN(d) ? double.PositiveInfinity : d;
                worst = i;
            }
        }
        return max / scale;
    }

    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        double error = ScaledError(expected, actual, out int worst);
        if (!(error <= tolerance))
        {
            Xunit.Assert.Fail($"{what}: scaled error {error:G3} > {tolerance:G3} at index {worst} (expected {expected[worst]}, got {actual[worst]}).");
        }
    }
}
