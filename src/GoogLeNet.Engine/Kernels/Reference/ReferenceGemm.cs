namespace GoogLeNet.Engine.Kernels.Reference;

/// <summary>Naive matrix product: the oracle that <see cref="Gemm"/> is tested against.</summary>
public static class ReferenceGemm
{
    // a is (m, k) row-major with leading dimension lda, or (k, m) when transA;
    // b is (k, n) with ldb, or (n, k) when transB; c is (m, n) with ldc; rowScale multiplies
    // row i of the sum (C included when accumulating) before rowBias is added.
    public static void Multiply(
        bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb,
        Span<float> c, int ldc, bool accumulate,
        ReadOnlySpan<float> rowBias = default, bool relu = false, ReadOnlySpan<float> rowScale = default)
    {
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? a[p * lda + i] : a[i * lda + p];
                    float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    sum += (double)av * bv;
                }
                if (accumulate)
                {
                    sum += c[i * ldc + j];
                }
                if (!rowScale.IsEmpty)
                {
                    sum *= rowScale[i];
                }
                if (!rowBias.IsEmpty)
                {
                    sum += rowBias[i];
                }
                float result = (float)sum;
                c[i * ldc + j] = relu && result < 0f ? 0f : result;
            }
        }
    }
}
