using GoogLeNet.Data;
using GoogLeNet.Training;
using Xunit;

namespace GoogLeNet.Tests.Training;

/// <summary>The training augmentations of TrainConfig.Augment: what they produce and that a run's seed fixes them.</summary>
public class AugmentationTests
{
    private const int Side = 28;

    private static ImageDataset Synthetic(int count)
    {
        var pixels = new byte[count * Side * Side];
        for (int i = 0; i < pixels.Length; i++)
        {
            // A gradient that is neither left-right nor shift symmetric, so flips and crops show.
            int x = i % Side;
            int y = i / Side % Side;
            pixels[i] = (byte)(x * 7 + y * 2 + i / (Side * Side));
        }
        return new ImageDataset(1, Side, Side, pixels, new byte[count], ["only"]);
    }

    private static float[] FirstBatch(IImageTransform? transform, ulong seed, int epoch)
    {
        using var loader = new BatchLoader(Synthetic(16), transform, 16, shuffle: false, seed);
        loader.StartEpoch(epoch);
        Batch batch = loader.Next()!;
        return batch.Images.AsSpan(0, 16 * Side * Side).ToArray();
    }

    [Theory]
    [InlineData("crop-flip")]
    [InlineData("crop-flip-erase")]
    [InlineData("paper")]
    public void AugmentationIsFixedBySeedAndEpochAndChangesTheImages(string augment)
    {
        ImageDataset set = Synthetic(16);
        float[] plain = FirstBatch(Datasets.TrainTransform(set, Side, "none"), 3, 0);
        float[] first = FirstBatch(Datasets.TrainTransform(set, Side, augment), 3, 0);
        float[] again = FirstBatch(Datasets.TrainTransform(set, Side, augment), 3, 0);
        float[] nextEpoch = FirstBatch(Datasets.TrainTransform(set, Side, augment), 3, 1);

        Assert.Equal(first, again);
        Assert.NotEqual(plain, first);
        Assert.NotEqual(first, nextEpoch);
        // Every image keeps its size and stays in the input's range [0, 1].
        Assert.All(first, v => Assert.InRange(v, 0f, 1f));
    }

    [Fact]
    public void CropFlipImagesAreShiftedOrMirroredCopiesOfTheInput()
    {
        ImageDataset set = Synthetic(16);
        float[] plain = FirstBatch(null, 3, 0);
        float[] augmented = FirstBatch(Datasets.TrainTransform(set, Side, "crop-flip"), 3, 0);
        int padding = Side / 8;
        for (int n = 0; n < 16; n++)
        {
            ReadOnlySpan<float> source = plain.AsSpan(n * Side * Side, Side * Side);
            ReadOnlySpan<float> image = augmented.AsSpan(n * Side * Side, Side * Side);
            bool found = false;
            foreach (bool flip in new[] { false, true })
            {
                for (int dy = -padding; dy <= padding && !found; dy++)
                {
                    for (int dx = -padding; dx <= padding && !found; dx++)
                    {
                        found = Matches(source, image, dy, dx, flip);
                    }
                }
            }
            Assert.True(found, $"image {n} is not a crop (padding {padding}) of its source, mirrored or not");
        }
    }

    // image[y, x] == padded(flip(source))[y + dy, x + dx], zero outside the source.
    private static bool Matches(ReadOnlySpan<float> source, ReadOnlySpan<float> image, int dy, int dx, bool flip)
    {
        for (int y = 0; y < Side; y++)
        {
            for (int x = 0; x < Side; x++)
            {
                int sy = y + dy;
                int sx = x + dx;
                float expected = (uint)sy < Side && (uint)sx < Side ? source[sy * Side + (flip ? Side - 1 - sx : sx)] : 0f;
                if (image[y * Side + x] != expected)
                {
                    return false;
                }
            }
        }
        return true;
    }

    [Fact]
    public void RandomErasingZeroesOneRectangleOfTheStatedAreaAboutHalfTheTime()
    {
        var source = new ImageBuffer<float>();
        source.Reshape(3, 40, 30);
        source.Span.Fill(1f);
        var erased = new ImageBuffer<float>();
        var random = new DataRandom(11);
        var transform = new RandomErasing();
        const int Draws = 2000;
        int hits = 0;
        for (int draw = 0; draw < Draws; draw++)
        {
            transform.Apply(source, erased, random);
            // The zeros, found in channel 0, must form one rectangle, the same in every channel.
            int top = int.MaxValue, left = int.MaxValue, bottom = -1, right = -1, zeros = 0;
            ReadOnlySpan<float> plane = erased.Plane(0);
            for (int i = 0; i < plane.Length; i++)
            {
                if (plane[i] == 0f)
                {
                    (int y, int x) = Math.DivRem(i, 30);
                    (top, left, bottom, right) = (Math.Min(top, y), Math.Min(left, x), Math.Max(bottom, y), Math.Max(right, x));
                    zeros++;
                }
            }
            Assert.True(erased.Plane(1).SequenceEqual(plane) && erased.Plane(2).SequenceEqual(plane), $"draw {draw}: channels differ");
            if (zeros == 0)
            {
                continue;
            }
            hits++;
            int h = bottom - top + 1, w = right - left + 1;
            Assert.Equal(h * w, zeros);
            // Rounding h and w moves the area from the drawn fraction by at most (h + w) / 2 + 1/4 pixels.
            double slack = (h + w) / 2.0 + 0.25;
            Assert.InRange(zeros, 0.02 * 1200 - slack, 0.33 * 1200 + slack);
            Assert.True(h < 40 && w < 30);
        }
        // p = 0.5 and a rectangle nearly always fits: 2000 draws give 1000 +- 22 (one sd), so 900-1100 is 4.5 sd.
        Assert.InRange(hits, 900, 1100);
    }

    [Fact]
    public void RandomErasingWithProbabilityZeroCopies()
    {
        var source = new ImageBuffer<float>();
        source.Reshape(1, 8, 8);
        for (int i = 0; i < 64; i++)
        {
            source.Span[i] = i + 1;
        }
        var destination = new ImageBuffer<float>();
        new RandomErasing(p: 0).Apply(source, destination, new DataRandom(1));
        Assert.True(destination.Span.SequenceEqual(source.Span));
    }

    [Fact]
    public void UnknownAugmentationIsRejectedByName()
    {
        var error = Assert.Throws<ArgumentException>(() => (new TrainConfig { Augment = "mixup" }).Validate());
        Assert.Contains("mixup", error.Message);
        Assert.Contains("crop-flip", error.Message);
    }
}
