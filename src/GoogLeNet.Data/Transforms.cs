namespace GoogLeNet.Data;

/// <summary>
/// One step of a preprocessing pipeline over float CHW images. Reads <c>source</c> and writes
/// <c>destination</c> (a different buffer, reshaped as needed); any randomness comes from
/// <c>random</c> so a pipeline is deterministic for a given stream. Instances may keep scratch
/// buffers and are used from one thread at a time.
/// </summary>
public interface IImageTransform
{
    void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random);
}

/// <summary>Runs transforms in order, passing images through two scratch buffers it reuses.</summary>
public sealed class Compose(params IImageTransform[] transforms) : IImageTransform
{
    private readonly IImageTransform[] _transforms = transforms;
    private readonly ImageBuffer<float> _a = new();
    private readonly ImageBuffer<float> _b = new();

    public IReadOnlyList<IImageTransform> Transforms => _transforms;

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        if (_transforms.Length == 0)
        {
            ImageOps.Copy(source, destination);
            return;
        }

        ImageBuffer<float> current = source;
        for (int i = 0; i < _transforms.Length; i++)
        {
            ImageBuffer<float> next = i == _transforms.Length - 1 ? destination : (current == _a ? _b : _a);
            _transforms[i].Apply(current, next, random);
            current = next;
        }
    }
}

/// <summary>(x - mean[c]) / std[c] per channel, as torchvision's Normalize.</summary>
public sealed class Normalize : IImageTransform
{
    private readonly float[] _mean;
    private readonly float[] _std;

    public Normalize(float[] mean, float[] std)
    {
        if (mean.Length != std.Length || mean.Length == 0)
        {
            throw new ArgumentException($"Expected as many means as standard deviations (at least one), found {mean.Length} and {std.Length}.");
        }

        if (std.Any(s => !(s > 0)))
        {
            throw new ArgumentException("Expected positive standard deviations.", nameof(std));
        }

        _mean = mean;
        _std = std;
    }

    /// <summary>The ImageNet statistics torchvision's pretrained models expect.</summary>
    public static Normalize ImageNet() => new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        if (source.Channels != _mean.Length)
        {
            throw new ArgumentException($"Normalize has {_mean.Length} channel statistics, the image has {source.Channels} channels.");
        }

        destination.Reshape(source.Channels, source.Height, source.Width);
        for (int c = 0; c < source.Channels; c++)
        {
            float mean = _mean[c];
            float inverse = 1f / _std[c];
            ReadOnlySpan<float> input = source.Plane(c);
            Span<float> output = destination.Plane(c);
            for (int i = 0; i < input.Length; i++)
            {
                output[i] = (input[i] - mean) * inverse;
            }
        }
    }
}

/// <summary>
/// Bilinear resize as torchvision's Resize does it on PIL images. With one size the shorter side
/// becomes <c>size</c> and the longer keeps the aspect ratio (truncated, as torchvision computes it).
/// </summary>
public sealed class Resize : IImageTransform
{
    private readonly int _height;
    private readonly int _width;
    private readonly bool _shorterSide;
    private readonly BilinearResampler _resampler = new();

    public Resize(int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        _height = size;
        _width = size;
        _shorterSide = true;
    }

    public Resize(int height, int width)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        _height = height;
        _width = width;
    }

    public static (int Height, int Width) ShorterSideSize(int height, int width, int size)
    {
        if (width <= height)
        {
            return ((int)((long)size * height / width), size);
        }

        return (size, (int)((long)size * width / height));
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        (int height, int width) = _shorterSide ? ShorterSideSize(source.Height, source.Width, _height) : (_height, _width);
        _resampler.Resample(source, 0, 0, source.Height, source.Width, destination, height, width);
    }
}

/// <summary>The centered square or rectangle, zero-padded when the image is smaller (torchvision's CenterCrop).</summary>
public sealed class CenterCrop : IImageTransform
{
    private readonly int _height;
    private readonly int _width;

    public CenterCrop(int size)
        : this(size, size)
    {
    }

    public CenterCrop(int height, int width)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        _height = height;
        _width = width;
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        int top = Offset(source.Height, _height);
        int left = Offset(source.Width, _width);
        ImageOps.Crop(source, top, left, _height, _width, destination);
    }

    // torchvision pads first (floor of half the excess on top/left) and rounds half to even when centring.
    private static int Offset(int size, int crop) =>
        crop > size ? -((crop - size) / 2) : (int)Math.Round((size - crop) / 2.0, MidpointRounding.ToEven);
}

/// <summary>
/// A random crop after zero padding on every side (the CIFAR recipe: 32 with padding 4), as
/// torchvision's RandomCrop.
/// </summary>
public sealed class RandomCrop : IImageTransform
{
    private readonly int _height;
    private readonly int _width;
    private readonly int _padding;

    public RandomCrop(int size, int padding = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        ArgumentOutOfRangeException.ThrowIfNegative(padding);
        _height = size;
        _width = size;
        _padding = padding;
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        int paddedHeight = source.Height + 2 * _padding;
        int paddedWidth = source.Width + 2 * _padding;
        if (paddedHeight < _height || paddedWidth < _width)
        {
            throw new ArgumentException($"RandomCrop of {_height}x{_width} needs a larger image than {source.Height}x{source.Width} with padding {_padding}.");
        }

        int top = random.Next(paddedHeight - _height + 1) - _padding;
        int left = random.Next(paddedWidth - _width + 1) - _padding;
        ImageOps.Crop(source, top, left, _height, _width, destination);
    }
}

/// <summary>Mirrors left-right with probability <c>p</c>.</summary>
public sealed class RandomHorizontalFlip(double p = 0.5) : IImageTransform
{
    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        if (random.NextDouble() < p)
        {
            ImageOps.FlipHorizontal(source, destination);
        }
        else
        {
            ImageOps.Copy(source, destination);
        }
    }
}

/// <summary>
/// torchvision's RandomErasing (Zhong et al. 2017): with probability <c>p</c>, one rectangle of
/// <c>scale</c> of the area (uniform) with aspect ratio log-uniform in <c>ratio</c> is set to
/// <c>value</c> in every channel; ten attempts to fit it inside the image, then no erasing.
/// </summary>
public sealed class RandomErasing : IImageTransform
{
    private readonly double _p;
    private readonly double _scaleMin;
    private readonly double _scaleMax;
    private readonly double _logRatioMin;
    private readonly double _logRatioMax;
    private readonly float _value;

    public RandomErasing(double p = 0.5, double scaleMin = 0.02, double scaleMax = 0.33, double ratioMin = 0.3, double ratioMax = 3.3, float value = 0f)
    {
        if (p is < 0 or > 1 || !(scaleMin > 0 && scaleMin <= scaleMax && scaleMax <= 1) || !(ratioMin > 0 && ratioMin <= ratioMax))
        {
            throw new ArgumentException(
                $"Expected 0 <= p <= 1, 0 < scaleMin <= scaleMax <= 1 and 0 < ratioMin <= ratioMax, found p {p}, scale ({scaleMin}, {scaleMax}) and ratio ({ratioMin}, {ratioMax}).");
        }
        (_p, _scaleMin, _scaleMax, _value) = (p, scaleMin, scaleMax, value);
        (_logRatioMin, _logRatioMax) = (Math.Log(ratioMin), Math.Log(ratioMax));
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        ImageOps.Copy(source, destination);
        if (random.NextDouble() >= _p)
        {
            return;
        }
        int height = source.Height;
        int width = source.Width;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double area = (double)height * width * random.Uniform(_scaleMin, _scaleMax);
            double aspect = Math.Exp(random.Uniform(_logRatioMin, _logRatioMax));
            int h = (int)Math.Round(Math.Sqrt(area * aspect));
            int w = (int)Math.Round(Math.Sqrt(area / aspect));
            if (h >= height || w >= width || h < 1 || w < 1)
            {
                continue;
            }
            int top = random.Next(height - h + 1);
            int left = random.Next(width - w + 1);
            for (int c = 0; c < destination.Channels; c++)
            {
                Span<float> plane = destination.Plane(c);
                for (int y = top; y < top + h; y++)
                {
                    plane.Slice(y * width + left, w).Fill(_value);
                }
            }
            return;
        }
    }
}

/// <summary>
/// The paper's scale augmentation as torchvision's RandomResizedCrop: a crop of 8%-100% of the area
/// with aspect ratio log-uniform in [3/4, 4/3], ten attempts then a centered fallback, resized
/// bilinearly to <c>size</c>.
/// </summary>
public sealed class RandomResizedCrop : IImageTransform
{
    private readonly int _size;
    private readonly double _scaleMin;
    private readonly double _scaleMax;
    private readonly double _ratioMin;
    private readonly double _ratioMax;
    private readonly BilinearResampler _resampler = new();

    public RandomResizedCrop(int size, double scaleMin = 0.08, double scaleMax = 1.0, double ratioMin = 3.0 / 4.0, double ratioMax = 4.0 / 3.0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        if (!(scaleMin > 0 && scaleMin <= scaleMax && ratioMin > 0 && ratioMin <= ratioMax))
        {
            throw new ArgumentException($"Expected 0 < scaleMin <= scaleMax and 0 < ratioMin <= ratioMax, found scale ({scaleMin}, {scaleMax}) and ratio ({ratioMin}, {ratioMax}).");
        }

        _size = size;
        _scaleMin = scaleMin;
        _scaleMax = scaleMax;
        _ratioMin = ratioMin;
        _ratioMax = ratioMax;
    }

    public (int Top, int Left, int Height, int Width) SampleBox(int height, int width, DataRandom random)
    {
        double area = (double)height * width;
        double logRatioMin = Math.Log(_ratioMin);
        double logRatioMax = Math.Log(_ratioMax);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = area * random.Uniform(_scaleMin, _scaleMax);
            double aspect = Math.Exp(random.Uniform(logRatioMin, logRatioMax));
            int w = (int)Math.Round(Math.Sqrt(targetArea * aspect), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(targetArea / aspect), MidpointRounding.ToEven);
            if (w > 0 && w <= width && h > 0 && h <= height)
            {
                int top = random.Next(height - h + 1);
                int left = random.Next(width - w + 1);
                return (top, left, h, w);
            }
        }

        double inputRatio = (double)width / height;
        int cropWidth = width;
        int cropHeight = height;
        if (inputRatio < _ratioMin)
        {
            cropHeight = (int)Math.Round(width / _ratioMin, MidpointRounding.ToEven);
        }
        else if (inputRatio > _ratioMax)
        {
            cropWidth = (int)Math.Round(height * _ratioMax, MidpointRounding.ToEven);
        }

        return ((height - cropHeight) / 2, (width - cropWidth) / 2, cropHeight, cropWidth);
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        (int top, int left, int height, int width) = SampleBox(source.Height, source.Width, random);
        _resampler.Resample(source, top, left, height, width, destination, _size, _size);
    }
}

/// <summary>
/// Photometric distortion as torchvision's ColorJitter on tensors (brightness, contrast,
/// saturation; no hue): each factor uniform in [max(0, 1 - x), 1 + x], applied in a random order,
/// results clamped to [0, 1]. Expects images in [0, 1], so it goes before Normalize.
/// </summary>
public sealed class ColorJitter : IImageTransform
{
    private readonly double _brightness;
    private readonly double _contrast;
    private readonly double _saturation;

    public ColorJitter(double brightness = 0, double contrast = 0, double saturation = 0)
    {
        if (brightness < 0 || contrast < 0 || saturation < 0)
        {
            throw new ArgumentException($"Expected non-negative jitter amounts, found brightness {brightness}, contrast {contrast}, saturation {saturation}.");
        }

        _brightness = brightness;
        _contrast = contrast;
        _saturation = saturation;
    }

    public void Apply(ImageBuffer<float> source, ImageBuffer<float> destination, DataRandom random)
    {
        Span<int> order = [0, 1, 2];
        random.Shuffle(order);
        float brightness = Factor(_brightness, random);
        float contrast = Factor(_contrast, random);
        float saturation = Factor(_saturation, random);

        ImageOps.Copy(source, destination);
        foreach (int step in order)
        {
            switch (step)
            {
                case 0 when _brightness > 0:
                    Blend(destination.Span, brightness, 0f);
                    break;
                case 1 when _contrast > 0:
                    Blend(destination.Span, contrast, MeanGray(destination));
                    break;
                case 2 when _saturation > 0 && destination.Channels == 3:
                    Saturate(destination, saturation);
                    break;
            }
        }
    }

    private static float Factor(double amount, DataRandom random) =>
        (float)random.Uniform(Math.Max(0, 1 - amount), 1 + amount);

    private static void Blend(Span<float> image, float factor, float other)
    {
        float offset = (1 - factor) * other;
        for (int i = 0; i < image.Length; i++)
        {
            image[i] = Math.Clamp(factor * image[i] + offset, 0f, 1f);
        }
    }

    private static float MeanGray(ImageBuffer<float> image)
    {
        double sum = 0;
        if (image.Channels == 3)
        {
            ReadOnlySpan<float> r = image.Plane(0), g = image.Plane(1), b = image.Plane(2);
            for (int i = 0; i < r.Length; i++)
            {
                sum += Gray(r[i], g[i], b[i]);
            }

            return (float)(sum / r.Length);
        }

        foreach (float v in image.Span)
        {
            sum += v;
        }

        return (float)(sum / image.Length);
    }

    private static void Saturate(ImageBuffer<float> image, float factor)
    {
        Span<float> r = image.Plane(0), g = image.Plane(1), b = image.Plane(2);
        for (int i = 0; i < r.Length; i++)
        {
            float gray = (1 - factor) * Gray(r[i], g[i], b[i]);
            r[i] = Math.Clamp(factor * r[i] + gray, 0f, 1f);
            g[i] = Math.Clamp(factor * g[i] + gray, 0f, 1f);
            b[i] = Math.Clamp(factor * b[i] + gray, 0f, 1f);
        }
    }

    // ITU-R 601 luma with torchvision's rounding of the weights.
    private static float Gray(float r, float g, float b) => 0.2989f * r + 0.587f * g + 0.114f * b;
}
