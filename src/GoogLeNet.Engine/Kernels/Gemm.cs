namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Single-precision matrix product C = op(A) op(B) (+ C when accumulating) (+ row bias) (ReLU),
/// all row-major. When <c>accumulate</c> is false, C is never read.
/// </summary>
public static class Gemm
{
    // a is (m, k) row-major with leading dimension lda, or (k, m) when transA;
    // b is (k, n) with ldb, or (n, k) when transB; c is (m, n) with ldc.
    // rowBias, when not empty, has m entries added to each row before the optional ReLU.
    public static void Multiply(
        bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb,
        Span<float> c, int ldc, bool accumulate,
        ReadOnlySpan<float> rowBias = default, bool relu = false)
    {
        for (int i = 0; i < m; i++)
        {
            Span<float> cRow = c.Slice(i * ldc, n);
            if (!accumulate)
            {
                cRow.Clear();
            }
            for (int p = 0; p < k; p++)
            {
                float av = transA ? a[p * lda + i] : a[i * lda + p];
                if (transB)
                {
                    for (int j = 0; j < n; j++)
                    {
                        cRow[j] += av * b[j * ldb + p];
                    }
                }
                else
                {
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(b.Slice(p * ldb, n), av, cRow, cRow);
                }
            }
            if (!rowBias.IsEmpty)
            {
                System.Numerics.Tensors.TensorPrimitives.Add(cRow, rowBias[i], cRow);
            }
            if (relu)
            {
                System.Numerics.Tensors.TensorPrimitives.Max(cRow, 0f, cRow);
            }
        }
    }
}
