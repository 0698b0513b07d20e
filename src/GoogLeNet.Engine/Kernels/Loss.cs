namespace GoogLeNet.Engine.Kernels;

/// <summary>Softmax cross-entropy, mean over the batch, computed from log-sum-exp for stability.</summary>
public static class Loss
{
    // logits (n, classes); labels (n); dLogits (n, classes) = weight * (softmax - target) / n, where
    // target is one-hot smoothed by labelSmoothing (PyTorch's definition). Returns the mean loss.
    public static double SoftmaxCrossEntropy(
        ReadOnlySpan<float> logits, ReadOnlySpan<int> labels, int batch, int classes, float labelSmoothing,
        float weight, Span<float> dLogits)
    {
        double total = 0;
        for (int n = 0; n < batch; n++)
        {
            int label = labels[n];
            if ((uint)label >= (uint)classes)
            {
                throw new ArgumentOutOfRangeException(nameof(labels), $"Label {label} of sample {n} is outside 0..{classes - 1}.");
            }
            ReadOnlySpan<float> z = logits.Slice(n * classes, classes);
            float max = System.Numerics.Tensors.TensorPrimitives.Max(z);
            double sumExp = 0;
            for (int j = 0; j < classes; j++)
            {
                sumExp += Math.Exp(z[j] - max);
            }
            double logSumExp = max + Math.Log(sumExp);
            double smoothedTarget = labelSmoothing / classes;
            double loss = 0;
            for (int j = 0; j < classes; j++)
            {
                double target = smoothedTarget + (j == label ? 1.0 - labelSmoothing : 0.0);
                double logProbability = z[j] - logSumExp;
                loss -= target * logProbability;
                if (!dLogits.IsEmpty)
                {
                    dLogits[n * classes + j] = (float)(weight * (Math.Exp(logProbability) - target) / batch);
                }
            }
            total += loss;
        }
        return total / batch;
    }
}
