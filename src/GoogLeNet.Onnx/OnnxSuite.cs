using Google.Protobuf;
using Onnx;

namespace GoogLeNet.Onnx;

/// <summary>A suite test that did not run, or that failed, and why.</summary>
public sealed record OnnxSuiteNote(string Test, string Reason);

public sealed record OnnxSuiteResult(int Passed, IReadOnlyList<OnnxSuiteNote> Failures, IReadOnlyList<OnnxSuiteNote> Skipped, IReadOnlyList<string> PassedTests)
{
    public int Failed => Failures.Count;
}

/// <summary>
/// Runs ONNX backend node tests (a folder per test: model.onnx and test_data_set_*/input_*.pb,
/// output_*.pb) at the suite's tolerance. A test is in scope when one of its nodes is an operator
/// of <see cref="Operators"/> and all of them are operators the importer runs; a configuration the
/// importer refuses (an attribute value, an element type) is listed as skipped with its reason.
/// </summary>
public static class OnnxSuite
{
    public const double RelativeTolerance = 1e-3;

    public const double AbsoluteTolerance = 1e-7;

    /// <summary>The operators whose node tests this project answers for.</summary>
    public static readonly IReadOnlySet<string> Operators = new HashSet<string>(StringComparer.Ordinal)
    {
        "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "LRN", "Concat", "Relu", "Gemm", "MatMul",
        "Softmax", "Dropout", "BatchNormalization", "Flatten", "Reshape", "Add",
    };

    public static OnnxSuiteResult Run(string directory)
    {
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"No ONNX node-test folder at '{directory}'.");
        }
        var passed = new List<string>();
        var failures = new List<OnnxSuiteNote>();
        var skipped = new List<OnnxSuiteNote>();
        foreach (string folder in Directory.GetDirectories(directory).Order(StringComparer.Ordinal))
        {
            string test = Path.GetFileName(folder);
            string modelPath = Path.Combine(folder, "model.onnx");
            if (!File.Exists(modelPath))
            {
                continue;
            }
            ModelProto proto;
            try
            {
                proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelPath));
            }
            catch (InvalidProtocolBufferException)
            {
                continue;
            }
            var ops = proto.Graph?.Node.Select(n => n.OpType).ToHashSet() ?? [];
            if (!ops.Any(Operators.Contains))
            {
                continue;
            }
            if (!ops.All(OnnxModel.SupportedOperators.Contains))
            {
                // Composite graphs that merely use Add or MatMul (layer normalisation, loss functions)
                // test other operators; only those named after one of ours, such as Softmax's
                // expanded form, are ours to list.
                if (!Operators.Any(op => test.StartsWith($"test_{TestPrefix(op)}", StringComparison.Ordinal)))
                {
                    continue;
                }
                skipped.Add(new(test, $"uses operators outside the supported set: {string.Join(", ", ops.Where(o => !OnnxModel.SupportedOperators.Contains(o)).Order())}"));
                continue;
            }
            try
            {
                string? failure = RunTest(folder);
                if (failure is null)
                {
                    passed.Add(test);
                }
                else
                {
                    failures.Add(new(test, failure));
                }
            }
            catch (NotSupportedException e)
            {
                skipped.Add(new(test, e.Message));
            }
            catch (Exception e) when (e is InvalidDataException or ArgumentException or InvalidOperationException or OverflowException or KeyNotFoundException)
            {
                failures.Add(new(test, e.Message));
            }
        }
        return new OnnxSuiteResult(passed.Count, failures, skipped, passed);
    }

    private static string TestPrefix(string op) => op == "BatchNormalization" ? "batchnorm" : op.ToLowerInvariant();

    /// <summary>Null when every data set matches, else what differed first.</summary>
    private static string? RunTest(string folder)
    {
        OnnxModel model = OnnxModel.Load(Path.Combine(folder, "model.onnx"));
        string[] sets = Directory.GetDirectories(folder, "test_data_set_*").Order(StringComparer.Ordinal).ToArray();
        if (sets.Length == 0)
        {
            throw new InvalidDataException("the test has no test_data_set_* folder.");
        }
        foreach (string set in sets)
        {
            var inputs = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
            for (int i = 0; i < model.Inputs.Count; i++)
            {
                string file = Path.Combine(set, $"input_{i}.pb");
                if (File.Exists(file))
                {
                    inputs[model.Inputs[i]] = ReadTensor(file, model.MaxElements);
                }
            }
            IReadOnlyDictionary<string, OnnxTensor> outputs = model.Run(inputs);
            for (int i = 0; i < model.Outputs.Count; i++)
            {
                string file = Path.Combine(set, $"output_{i}.pb");
                if (!File.Exists(file))
                {
                    continue;
                }
                string? difference = Compare(outputs[model.Outputs[i]], ReadTensor(file, model.MaxElements));
                if (difference is not null)
                {
                    return $"{Path.GetFileName(set)} output '{model.Outputs[i]}': {difference}";
                }
            }
        }
        return null;
    }

    private static OnnxTensor ReadTensor(string path, long maxElements)
    {
        try
        {
            return OnnxTensor.FromProto(TensorProto.Parser.ParseFrom(File.ReadAllBytes(path)), maxElements);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"'{path}' is not a TensorProto: {e.Message}", e);
        }
    }

    private static string? Compare(OnnxTensor actual, OnnxTensor expected)
    {
        if (!actual.Shape.AsSpan().SequenceEqual(expected.Shape))
        {
            return $"shape {Engine.Tensor.Format(actual.Shape)}, expected {Engine.Tensor.Format(expected.Shape)}";
        }
        if (expected.Longs is not null)
        {
            return actual.Longs is not null && actual.Longs.AsSpan().SequenceEqual(expected.Longs) ? null : "int64 values differ";
        }
        float[] a = actual.RequireFloats("output"), e = expected.RequireFloats("expected");
        for (int i = 0; i < e.Length; i++)
        {
            bool bothNaN = float.IsNaN(a[i]) && float.IsNaN(e[i]);
            if (!bothNaN && !(Math.Abs((double)a[i] - e[i]) <= AbsoluteTolerance + RelativeTolerance * Math.Abs((double)e[i])))
            {
                return $"element {i} is {a[i]}, expected {e[i]} (rtol {RelativeTolerance}, atol {AbsoluteTolerance})";
            }
        }
        return null;
    }
}
