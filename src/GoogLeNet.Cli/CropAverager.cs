using GoogLeNet.Engine;

namespace GoogLeNet.Cli;

/// <summary>
/// Runs a network over every crop of a sequence of images and hands back, per image, its softmax
/// probabilities and logits averaged over the crops. Inputs stream through fixed-size batches whatever
/// the crops per image, so memory stays bounded by the batch and the few images it spans.
/// </summary>
internal sealed class CropAverager
{
    private readonly Func<Tensor, Tensor> _forward;
    private readonly int _classes;
    private readonly ImagePreprocessor _preprocessor;
    private readonly int _batchSize;

    public CropAverager(Func<Tensor, Tensor> forward, int classes, ImagePreprocessor preprocessor, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        _forward = forward;
        _classes = classes;
        _preprocessor = preprocessor;
        _batchSize = batchSize;
    }

    /// <summary>
    /// <paramref name="load"/> writes image i's crops (as <see cref="ImagePreprocessor.Load(string, Span{float})"/> does)
    /// and returns false for an image it could not read, which is skipped;
    /// <paramref name="done"/> gets each other image's mean probabilities and mean logits, in image order.
    /// </summary>
    public void Run(int count, Func<int, Span<float>, bool> load, Action<int, float[], float[]> done)
    {
        int length = _preprocessor.Length;
        int cropsPerImage = _preprocessor.Crops;
        var crops = new float[cropsPerImage * length];
        var batch = new float[_batchSize * length];
        var owners = new int[_batchSize];
        var probabilities = new float[_classes];
        var pending = new Dictionary<int, (double[] Probabilities, double[] Logits, int Seen)>();
        int filled = 0;
        void Flush()
        {
            var input = new Tensor(batch, 0, [filled, _preprocessor.Channels, _preprocessor.Size, _preprocessor.Size]);
            Tensor output = _forward(input);
            for (int row = 0; row < filled; row++)
            {
                ReadOnlySpan<float> logits = output.Span.Slice(row * _classes, _classes);
                System.Numerics.Tensors.TensorPrimitives.SoftMax(logits, probabilities);
                int image = owners[row];
                if (!pending.TryGetValue(image, out var sums))
                {
                    sums = (new double[_classes], new double[_classes], 0);
                }
                for (int c = 0; c < _classes; c++)
                {
                    sums.Probabilities[c] += probabilities[c];
                    sums.Logits[c] += logits[c];
                }
                sums.Seen++;
                if (sums.Seen < cropsPerImage)
                {
                    pending[image] = sums;
                    continue;
                }
                pending.Remove(image);
                done(image,
                    sums.Probabilities.Select(v => (float)(v / cropsPerImage)).ToArray(),
                    sums.Logits.Select(v => (float)(v / cropsPerImage)).ToArray());
            }
            filled = 0;
        }
        for (int image = 0; image < count; image++)
        {
            if (!load(image, crops))
            {
                continue;
            }
            for (int crop = 0; crop < cropsPerImage; crop++)
            {
                crops.AsSpan(crop * length, length).CopyTo(batch.AsSpan(filled * length));
                owners[filled++] = image;
                if (filled == _batchSize)
                {
                    Flush();
                }
            }
        }
        if (filled > 0)
        {
            Flush();
        }
    }
}
