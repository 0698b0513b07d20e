using GoogLeNet.Data;
using GoogLeNet.Engine;
using GoogLeNet.Models;

namespace GoogLeNet.Training;

/// <summary>Test-set figures: mean cross-entropy, top-1 and top-5 accuracy, per class and as a confusion matrix.</summary>
public sealed record EvaluationResult(double Loss, double Top1, double Top5, int Count, double[] PerClassAccuracy, long[,] Confusion)
{
    /// <summary>Averages and per-class accuracy from summed loss, top-5 hits and the confusion matrix (rows: true class).</summary>
    public static EvaluationResult FromCounts(double lossSum, long top5, int count, long[,] confusion)
    {
        int classes = confusion.GetLength(0);
        long correct = 0;
        var perClass = new double[classes];
        for (int c = 0; c < classes; c++)
        {
            long total = 0;
            for (int p = 0; p < classes; p++)
            {
                total += confusion[c, p];
            }
            correct += confusion[c, c];
            perClass[c] = total == 0 ? double.NaN : (double)confusion[c, c] / total;
        }
        return new EvaluationResult(lossSum / count, (double)correct / count, (double)top5 / count, count, perClass, confusion);
    }
}

/// <summary>Runs a model in inference mode over a loader, batch by batch, reusing its input tensors.</summary>
public sealed class Evaluator
{
    private readonly InputBuffers _inputs = new();
    private float[] _scores = [];
    private float[] _row = [];

    /// <summary>
    /// Also runs each image mirrored left to right and scores it by the mean of the two softmax
    /// distributions (the test-time counterpart of flip augmentation): top-1, top-5 and the
    /// confusion matrix rank the mean probabilities, and the loss is -log of the label's.
    /// </summary>
    public bool AverageWithMirror { get; init; }

    public EvaluationResult Evaluate(GoogLeNetModel model, BatchLoader loader)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(loader);
        int classes = model.Options.Classes;
        var confusion = new long[classes, classes];
        double lossSum = 0;
        long top5 = 0;
        int count = 0;
        bool training = model.IsTraining;
        model.SetTraining(false);
        try
        {
            loader.StartEpoch(0);
            while (loader.Next() is Batch batch)
            {
                Tensor input = _inputs.Load(batch);
                ReadOnlySpan<float> scores = model.Forward(input).Logits.Span;
                if (AverageWithMirror)
                {
                    scores = MirrorAveragedLogProbabilities(model, input, scores, batch.Count, classes);
                }
                ReadOnlySpan<int> labels = batch.Labels.AsSpan(0, batch.Count);
                lossSum += Engine.Kernels.Loss.SoftmaxCrossEntropy(scores, labels, batch.Count, classes, 0f, 1f, Span<float>.Empty) * batch.Count;
                for (int n = 0; n < batch.Count; n++)
                {
                    ReadOnlySpan<float> row = scores.Slice(n * classes, classes);
                    confusion[labels[n], Metrics.ArgMax(row)]++;
                    if (Metrics.Rank(row, labels[n]) < 5)
                    {
                        top5++;
                    }
                }
                count += batch.Count;
            }
        }
        finally
        {
            model.SetTraining(training);
        }
        if (count == 0)
        {
            throw new InvalidOperationException("The evaluation set is empty.");
        }
        return EvaluationResult.FromCounts(lossSum, top5, count, confusion);
    }

    // log((softmax(logits) + softmax(logits of the mirrored input)) / 2) per row: as logits, these
    // give the mean probabilities back under softmax, so the loss and the ranks need no other path.
    // Mirrors the input in place (it is the evaluator's own copy of the batch).
    private ReadOnlySpan<float> MirrorAveragedLogProbabilities(GoogLeNetModel model, Tensor input, ReadOnlySpan<float> logits, int count, int classes)
    {
        int length = count * classes;
        if (_scores.Length < length)
        {
            _scores = new float[length];
        }
        Span<float> probabilities = _scores.AsSpan(0, length);
        Softmax(logits, probabilities, classes, add: false);

        int width = input.Shape[3];
        Span<float> pixels = input.Span;
        for (int row = 0; row < pixels.Length; row += width)
        {
            pixels.Slice(row, width).Reverse();
        }
        Softmax(model.Forward(input).Logits.Span, probabilities, classes, add: true);

        for (int i = 0; i < length; i++)
        {
            // Half the sum; the floor keeps a vanishing probability's log finite.
            probabilities[i] = MathF.Log(MathF.Max(0.5f * probabilities[i], 1e-30f));
        }
        return probabilities;
    }

    // TensorPrimitives.SoftMax per row, as the CLI's crop averaging does; add sums into target.
    private void Softmax(ReadOnlySpan<float> logits, Span<float> target, int classes, bool add)
    {
        if (_row.Length != classes)
        {
            _row = new float[classes];
        }
        for (int start = 0; start < target.Length; start += classes)
        {
            System.Numerics.Tensors.TensorPrimitives.SoftMax(logits.Slice(start, classes), _row);
            Span<float> destination = target.Slice(start, classes);
            if (add)
            {
                System.Numerics.Tensors.TensorPrimitives.Add(destination, _row, destination);
            }
            else
            {
                _row.CopyTo(destination);
            }
        }
    }
}

internal static class Metrics
{
    /// <summary>Index of the largest value; the first one on ties, as torch.argmax.</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }
        return best;
    }

    /// <summary>How many values beat values[index] (earlier ties count as ahead): 0 means top-1.</summary>
    public static int Rank(ReadOnlySpan<float> values, int index)
    {
        float v = values[index];
        int rank = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] > v || (values[i] == v && i < index))
            {
                rank++;
            }
        }
        return rank;
    }
}

/// <summary>
/// NCHW input tensors kept across batches (one for full batches, one for the last partial batch),
/// so the loop copies into existing memory instead of allocating per batch.
/// </summary>
internal sealed class InputBuffers
{
    private Tensor? _full;
    private Tensor? _partial;

    public Tensor Load(Batch batch)
    {
        Tensor target;
        if (Fits(_full, batch))
        {
            target = _full!;
        }
        else if (Fits(_partial, batch))
        {
            target = _partial!;
        }
        else if (_full is null)
        {
            target = _full = new Tensor(batch.Count, batch.Channels, batch.Height, batch.Width);
        }
        else
        {
            target = _partial = new Tensor(batch.Count, batch.Channels, batch.Height, batch.Width);
        }
        batch.Images.AsSpan(0, target.Length).CopyTo(target.Span);
        return target;
    }

    private static bool Fits(Tensor? t, Batch b) =>
        t is not null && t.Shape[0] == b.Count && t.Shape[1] == b.Channels && t.Shape[2] == b.Height && t.Shape[3] == b.Width;
}
