using GoogLeNet.Onnx;

namespace GoogLeNet.Onnx.Tests;

/// <summary>ONNX's own node tests for the operators GoogLeNet graphs use (Debian's libonnx-testdata).</summary>
public class OnnxSuiteTests
{
    private const string NodeTests = "/usr/share/libonnx-testdata/data/node";

    // The configurations GoogLeNet graphs (ours, PyTorch's export, the model zoo's) rely on.
    private static readonly string[] s_mustPass =
    [
        "test_conv_with_strides_padding", "test_conv_with_strides_no_padding", "test_basic_conv_with_padding",
        "test_maxpool_2d_ceil", "test_maxpool_2d_pads", "test_maxpool_2d_strides",
        "test_averagepool_2d_pads_count_include_pad", "test_averagepool_2d_ceil", "test_globalaveragepool",
        "test_lrn", "test_lrn_default", "test_concat_3d_axis_1", "test_relu", "test_gemm_all_attributes",
        "test_gemm_transposeB", "test_matmul_2d", "test_softmax_large_number", "test_softmax_axis_1",
        "test_dropout_default", "test_batchnorm_example", "test_batchnorm_epsilon", "test_flatten_axis1",
        "test_reshape_negative_dim", "test_add_bcast", "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
        "test_maxpool_2d_same_upper", "test_averagepool_2d_same_lower", "test_averagepool_2d_precomputed_same_upper",
    ];

    [Fact]
    public void SupportedOperatorsPassTheNodeTests()
    {
        if (!Directory.Exists(NodeTests))
        {
            // Off CI the check is optional; on CI (.ci/run installs it) a missing dependency fails.
            Assert.False(Environment.GetEnvironmentVariable("CI") == "true", "ONNX's node tests (Debian package libonnx-testdata) is required on CI.");
            return;
        }
        OnnxSuiteResult result = OnnxSuite.Run(NodeTests);
        Assert.True(result.Failed == 0,
            "Failed ONNX node tests: " + string.Join("; ", result.Failures.Select(f => $"{f.Test}: {f.Reason}")));
        foreach (string test in s_mustPass)
        {
            Assert.True(result.PassedTests.Contains(test),
                $"{test} did not pass: {result.Skipped.FirstOrDefault(s => s.Test == test)?.Reason ?? "not found"}");
        }
        Assert.All(result.Skipped, s => Assert.False(string.IsNullOrWhiteSpace(s.Reason)));
    }

    [Fact]
    public void MissingFolderIsAnError()
    {
        Assert.Throws<DirectoryNotFoundException>(() => OnnxSuite.Run("/nonexistent/onnx/node"));
    }
}
