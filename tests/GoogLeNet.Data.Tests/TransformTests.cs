namespace GoogLeNet.Data.Tests;

public sealed class TransformTests
{
    // Pillow resamples 8-bit images in fixed point and rounds twice (after the horizontal pass and
    // at the end); we keep floats. Each rounding moves a value by at most half a step and the
    // weights are non-negative and sum to one, so the two results differ by at most one 8-bit step.
    private const float PilTolerance = 1f / 255f + 1e-5f;

    [Fact]
    public void Resize28To96MatchesTorchvision()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Gray28());
        var output = new ImageBuffer<float>();

        new Resize(96).Apply(input, output, new DataRandom(0));

        AssertMatchesPil(output, 1, 96, 96, "resize_28_to_96.bin.gz");
    }

    [Fact]
    public void EvalResize256CenterCrop224MatchesTorchvision()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var output = new ImageBuffer<float>();

        new Compose(new Resize(256), new CenterCrop(224)).Apply(input, output, new DataRandom(0));

        AssertMatchesPil(output, 3, 224, 224, "resize256_crop224.bin.gz");
    }

    [Fact]
    public void AntialiasedDownscaleMatchesTorchvision()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var output = new ImageBuffer<float>();

        new Resize(64).Apply(input, output, new DataRandom(0));

        AssertMatchesPil(output, 3, 64, 96, "resize_300x200_to_64.bin.gz");
    }

    [Fact]
    public void BoxResampleMatchesTorchvisionResizedCrop()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var output = new ImageBuffer<float>();

        new BilinearResampler().Resample(input, 17, 23, 150, 201, output, 64, 64);

        AssertMatchesPil(output, 3, 64, 64, "resized_crop_17_23_150x201_to_64.bin.gz");
    }

    [Theory]
    [InlineData(200, 300, 256, 256, 384)]
    [InlineData(300, 200, 256, 384, 256)]
    [InlineData(28, 28, 96, 96, 96)]
    [InlineData(375, 500, 256, 256, 341)]
    public void ShorterSideSizeTruncatesLikeTorchvision(int height, int width, int size, int expectedHeight, int expectedWidth)
    {
        Assert.Equal((expectedHeight, expectedWidth), Resize.ShorterSideSize(height, width, size));
    }

    [Fact]
    public void CenterCropPadsWithZerosWhenLarger()
    {
        var input = new ImageBuffer<float>();
        input.Reshape(1, 2, 3);
        input.Span.Fill(1f);
        var output = new ImageBuffer<float>();

        new CenterCrop(4, 6).Apply(input, output, new DataRandom(0));

        float[] expected =
        [
            0, 0, 0, 0, 0, 0,
            0, 1, 1, 1, 0, 0,
            0, 1, 1, 1, 0, 0,
            0, 0, 0, 0, 0, 0,
        ];
        Assert.Equal(expected, output.Span.ToArray());
    }

    [Fact]
    public void NormalizeSubtractsMeanAndDividesByStd()
    {
        var input = new ImageBuffer<float>();
        input.Reshape(2, 1, 2);
        float[] values = [0f, 1f, 0.5f, 0.25f];
        values.CopyTo(input.Span);
        var output = new ImageBuffer<float>();

        new Normalize([0.5f, 0.25f], [0.5f, 0.25f]).Apply(input, output, new DataRandom(0));

        Assert.Equal([-1f, 1f, 1f, 0f], output.Span.ToArray());
    }

    [Fact]
    public void ToFloatDividesBy255()
    {
        var bytes = new ImageBuffer<byte>();
        bytes.Reshape(1, 1, 3);
        bytes.Span[0] = 0;
        bytes.Span[1] = 51;
        bytes.Span[2] = 255;
        var floats = new ImageBuffer<float>();

        ImageOps.ToFloat(bytes, floats);

        Assert.Equal([0f, 0.2f, 1f], floats.Span.ToArray());
    }

    [Fact]
    public void RandomCropWithPaddingIsDeterministicPerSeedAndCoversAllOffsets()
    {
        ImageBuffer<float> input = Ramp(3, 32, 32);
        var crop = new RandomCrop(32, padding: 4);
        var offsets = new HashSet<(int, int)>();
        for (ulong seed = 0; seed < 400; seed++)
        {
            float[] first = Run(crop, input, seed);
            Assert.Equal(first, Run(crop, input, seed));
            offsets.Add(FindOffset(input, first));
        }

        // 9 x 9 possible (top, left) shifts in -4..4; 400 draws hit all of them with overwhelming probability.
        Assert.Equal(81, offsets.Count);
    }

    [Fact]
    public void RandomHorizontalFlipMirrorsOrCopies()
    {
        ImageBuffer<float> input = Ramp(2, 3, 5);
        var flip = new RandomHorizontalFlip();
        int flipped = 0;
        for (ulong seed = 0; seed < 200; seed++)
        {
            float[] result = Run(flip, input, seed);
            Assert.Equal(result, Run(flip, input, seed));
            if (result.SequenceEqual(input.Span.ToArray()))
            {
                continue;
            }

            flipped++;
            for (int c = 0; c < 2; c++)
            {
                for (int y = 0; y < 3; y++)
                {
                    for (int x = 0; x < 5; x++)
                    {
                        Assert.Equal(input.Plane(c)[y * 5 + (4 - x)], result[c * 15 + y * 5 + x]);
                    }
                }
            }
        }

        Assert.InRange(flipped, 70, 130);
    }

    [Fact]
    public void RandomResizedCropBoxesFollowTheScaleAndRatioRanges()
    {
        var crop = new RandomResizedCrop(224);
        var random = new DataRandom(42);
        for (int trial = 0; trial < 2000; trial++)
        {
            (int top, int left, int height, int width) = crop.SampleBox(200, 300, random);
            Assert.InRange(top, 0, 200 - height);
            Assert.InRange(left, 0, 300 - width);
            double area = (double)height * width / (200.0 * 300.0);
            double ratio = (double)width / height;
            // Rounding the sides to integers widens the ranges slightly for small crops.
            Assert.InRange(area, 0.07, 1.0);
            Assert.InRange(ratio, 0.7, 1.45);
        }
    }

    [Fact]
    public void RandomResizedCropFallsBackToTheCenteredLargestValidCrop()
    {
        // An image far wider than 4:3 whose sampled crops never fit: the fallback is height x height*4/3.
        var crop = new RandomResizedCrop(16, scaleMin: 1.0, scaleMax: 1.0);
        (int top, int left, int height, int width) = crop.SampleBox(10, 100, new DataRandom(3));
        Assert.Equal((0, 43, 10, 13), (top, left, height, width));
    }

    [Fact]
    public void RandomResizedCropIsDeterministicPerSeed()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var crop = new RandomResizedCrop(64);
        float[] a = Run(crop, input, 5);
        Assert.Equal(a, Run(crop, input, 5));
        Assert.NotEqual(a, Run(crop, input, 6));
        Assert.Equal(3 * 64 * 64, a.Length);
    }

    [Fact]
    public void ColorJitterStaysInRangeAndIsDeterministic()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var jitter = new ColorJitter(0.4, 0.4, 0.4);
        float[] a = Run(jitter, input, 9);
        Assert.Equal(a, Run(jitter, input, 9));
        Assert.NotEqual(input.Span.ToArray(), a);
        Assert.All(a, v => Assert.InRange(v, 0f, 1f));
    }

    [Fact]
    public void ColorJitterSaturationBlendsEachPixelWithItsLuma()
    {
        var input = new ImageBuffer<float>();
        input.Reshape(3, 1, 1);
        float[] rgb = [0.9f, 0.2f, 0.4f];
        rgb.CopyTo(input.Span);
        var output = new ImageBuffer<float>();

        new ColorJitter(saturation: 1).Apply(input, output, new DataRandom(1));

        // Blue sits near the luma, so it never clamps and reveals the drawn factor.
        float gray = 0.2989f * 0.9f + 0.587f * 0.2f + 0.114f * 0.4f;
        float factor = (output.Span[2] - gray) / (0.4f - gray);
        Assert.InRange(factor, 0f, 2f);
        for (int c = 0; c < 3; c++)
        {
            Assert.Equal(Math.Clamp(factor * rgb[c] + (1 - factor) * gray, 0f, 1f), output.Span[c], 1e-5f);
        }
    }

    [Fact]
    public void ComposeReusesItsBuffersAcrossCalls()
    {
        ImageBuffer<float> input = SyntheticImages.ToFloat(SyntheticImages.Rgb300x200());
        var pipeline = new Compose(new RandomResizedCrop(32), new RandomHorizontalFlip(), new ColorJitter(0.4, 0.4, 0.4), Normalize.ImageNet());
        var output = new ImageBuffer<float>();
        var random = new DataRandom(1);
        pipeline.Apply(input, output, random);
        pipeline.Apply(input, output, random);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++)
        {
            pipeline.Apply(input, output, random);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    private static void AssertMatchesPil(ImageBuffer<float> actual, int channels, int height, int width, string fixture)
    {
        byte[] expected = Fixtures.ReadGzip(fixture);
        Assert.Equal((channels, height, width), (actual.Channels, actual.Height, actual.Width));
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        int worstIndex = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float difference = Math.Abs(actual.Span[i] - expected[i] / 255f);
            if (difference > worst)
            {
                worst = difference;
                worstIndex = i;
            }
        }

        Assert.True(worst <= PilTolerance, $"{fixture}: index {worstIndex} differs from PIL by {worst * 255:F3}/255 (PIL {expected[worstIndex]}, ours {actual.Span[worstIndex] * 255:F3}).");
    }

    private static ImageBuffer<float> Ramp(int channels, int height, int width)
    {
        var image = new ImageBuffer<float>();
        image.Reshape(channels, height, width);
        for (int i = 0; i < image.Length; i++)
        {
            image.Span[i] = i + 1;
        }

        return image;
    }

    private static float[] Run(IImageTransform transform, ImageBuffer<float> input, ulong seed)
    {
        var output = new ImageBuffer<float>();
        transform.Apply(input, output, new DataRandom(seed));
        return output.Span.ToArray();
    }

    // The ramp has distinct values, so the first in-image pixel of the crop pins its offset.
    private static (int Top, int Left) FindOffset(ImageBuffer<float> input, float[] crop)
    {
        for (int y = 0; y < 32; y++)
        {
            for (int x = 0; x < 32; x++)
            {
                float v = crop[y * 32 + x];
                if (v != 0)
                {
                    int index = (int)v - 1;
                    return (index / 32 - y, index % 32 - x);
                }
            }
        }

        throw new InvalidOperationException("Crop is all padding.");
    }
}
