using GoogLeNet.Data;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>
/// Turns an image file into the network input its weights were trained on:
/// torchvision's (resize the shorter side to 256 bilinearly, center crop 224, x / 255, ImageNet
/// mean and std), Caffe's for the paper preset (BGR, 0-255, resize to 256x256, center crop 224,
/// subtract the per-channel means 104, 117, 123), or d2l's (grey, resize to 96x96, x / 255); for a
/// network googlenet train made, what its training saw (x / 255, the whole image resized to its input).
/// With 10 or 144 crops it gives that many inputs per image, whose predictions are averaged.
/// One instance per thread: it keeps its buffers between images.
/// </summary>
internal sealed class ImagePreprocessor
{
    private static readonly float[] s_imageNetMean = [0.485f, 0.456f, 0.406f];
    private static readonly float[] s_imageNetStd = [0.229f, 0.224f, 0.225f];

    // bvlc_googlenet's train_val.prototxt mean_value, in its BGR channel order.
    private static readonly float[] s_caffeMeanBgr = [104f, 117f, 123f];

    // The paper's 144 crops: shorter side at 4 scales, 3 squares along the longer side, from each the
    // 4 corners, the center and the whole square at 224, and the mirror images of all those.
    private static readonly int[] s_paperScales = [256, 288, 320, 352];

    private readonly Preset _preset;
    private readonly int _resize;
    private readonly CenterCrop _crop;
    private readonly BilinearResampler _resampler = new();
    private readonly DataRandom _random = new(0);
    private readonly ImageBuffer<float> _image = new();
    private readonly ImageBuffer<float> _horizontal = new();
    private readonly ImageBuffer<float> _resized = new();
    private readonly ImageBuffer<float> _cropped = new();
    private readonly ImageBuffer<float> _square = new();
    private readonly ImageBuffer<float> _mirrored = new();

    // Set for a network googlenet train made: its images went through the dataset transforms, not a preset's.
    private readonly Resize? _trainedResize;

    public ImagePreprocessor(Preset preset, int crops = 1)
    {
        if (crops is not (1 or 10 or 144))
        {
            throw new ArgumentException($"--crops must be 1, 10 or 144, got {crops}.");
        }
        if (crops != 1 && preset == Preset.D2l)
        {
            throw new ArgumentException("The d2l preset sees the whole 96x96 image: multi-crop applies to paper and torchvision only.");
        }
        _preset = preset;
        Crops = crops;
        (_resize, Size, Channels) = preset switch
        {
            Preset.Torchvision => (256, 224, 3),
            Preset.Paper => (256, 224, 3),
            _ => (96, 96, 1),
        };
        _crop = new CenterCrop(Size);
    }

    /// <summary>
    /// The input of a network trained by googlenet train: grey or RGB as <paramref name="channels"/> says, x / 255,
    /// the whole image resized bilinearly to <paramref name="size"/> squared, as the dataset transforms do.
    /// </summary>
    public static ImagePreprocessor ForTrainedInput(int channels, int size)
    {
        if (channels is not (1 or 3) || size < 1)
        {
            throw new ArgumentException($"Expected a 1- or 3-channel input of at least 1x1, found {channels} channels of {size}x{size}.");
        }
        return new ImagePreprocessor(size, channels);
    }

    private ImagePreprocessor(int size, int channels)
    {
        _preset = Preset.D2l;
        Crops = 1;
        (_resize, Size, Channels) = (size, size, channels);
        _crop = new CenterCrop(Size);
        _trainedResize = new Resize(size, size);
    }

    public int Channels { get; }

    public int Size { get; }

    public int Length => Channels * Size * Size;

    /// <summary>Network inputs per image: 1 (center crop), 10 (corners and center, and their mirrors) or 144 (the paper's scheme).</summary>
    public int Crops { get; }

    /// <summary>
    /// Writes the <see cref="Crops"/> CHW inputs for the image at <paramref name="path"/>, one after another, into
    /// <paramref name="destination"/>.
    /// </summary>
    public void Load(string path, Span<float> destination)
    {
        CheckDestination(destination);
        DecodedImage decoded = ImageDecoder.DecodeFile(path);
        ToPlanes(decoded, Channels == 1, _image);
        if (_trainedResize is not null)
        {
            AsTrained(destination);
            return;
        }
        CropPlanes(destination);
    }

    /// <summary>
    /// x / 255, then the training input's bilinear resize on floats (no rounding to 8 bits between passes, unlike
    /// torchvision's on PIL images), skipped when the image already has the size: the dataset transforms' order.
    /// </summary>
    private void AsTrained(Span<float> destination)
    {
        Span<float> pixels = _image.Span;
        for (int i = 0; i < pixels.Length; i++)
        {
            pixels[i] /= 255f;
        }
        ImageBuffer<float> input = _image;
        if (_image.Height != Size || _image.Width != Size)
        {
            _trainedResize!.Apply(_image, _resized, _random);
            input = _resized;
        }
        input.Span.CopyTo(destination);
    }

    /// <summary>
    /// As <see cref="Load(string, Span{float})"/>, for an 8-bit CHW image a dataset has already decoded
    /// (grey or RGB, converted to the preset's channels).
    /// </summary>
    public void Load(ImageBuffer<byte> image, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        CheckDestination(destination);
        FromBytes(image, Channels == 1, _image);
        if (_trainedResize is not null)
        {
            AsTrained(destination);
            return;
        }
        CropPlanes(destination);
    }

    private void CheckDestination(Span<float> destination)
    {
        if (destination.Length != Crops * Length)
        {
            throw new ArgumentException($"Expected a destination of {Crops * Length} floats, found {destination.Length}.");
        }
    }

    private void CropPlanes(Span<float> destination)
    {
        int written = 0;
        if (Crops == 144)
        {
            foreach (int scale in s_paperScales)
            {
                (int height, int width) = Resize.ShorterSideSize(_image.Height, _image.Width, scale);
                ResizeAs8Bit(_image, 0, 0, _image.Height, _image.Width, _resized, height, width);
                int side = Math.Min(height, width);
                for (int position = 0; position < 3; position++)
                {
                    int offset = position * (Math.Max(height, width) - side) / 2;
                    ImageOps.Crop(_resized, height > width ? offset : 0, height > width ? 0 : offset, side, side, _square);
                    ImageOps.FlipHorizontal(_square, _mirrored);
                    foreach (ImageBuffer<float> square in (ReadOnlySpan<ImageBuffer<float>>)[_square, _mirrored])
                    {
                        FiveCrops(square, destination, ref written);
                        ResizeAs8Bit(square, 0, 0, side, side, _cropped, Size, Size);
                        Emit(_cropped, destination, ref written);
                    }
                }
            }
            return;
        }

        (int h, int w) = _preset == Preset.Torchvision
            ? Resize.ShorterSideSize(_image.Height, _image.Width, _resize)
            : (_resize, _resize);
        ResizeAs8Bit(_image, 0, 0, _image.Height, _image.Width, _resized, h, w);
        if (Crops == 1)
        {
            _crop.Apply(_resized, _cropped, _random);
            Emit(_cropped, destination, ref written);
            return;
        }
        // torchvision's TenCrop: five crops of the image, then five of its mirror image.
        FiveCrops(_resized, destination, ref written);
        ImageOps.FlipHorizontal(_resized, _mirrored);
        FiveCrops(_mirrored, destination, ref written);
    }

    /// <summary>torchvision's FiveCrop: top-left, top-right, bottom-left, bottom-right, center.</summary>
    private void FiveCrops(ImageBuffer<float> image, Span<float> destination, ref int written)
    {
        int bottom = image.Height - Size;
        int right = image.Width - Size;
        foreach ((int top, int left) in (ReadOnlySpan<(int, int)>)[(0, 0), (0, right), (bottom, 0), (bottom, right)])
        {
            ImageOps.Crop(image, top, left, Size, Size, _cropped);
            Emit(_cropped, destination, ref written);
        }
        _crop.Apply(image, _cropped, _random);
        Emit(_cropped, destination, ref written);
    }

    // Pillow resizes 8-bit images in two passes, horizontal then vertical, rounding each to
    // 8 bits; doing the same leaves only coefficient rounding between us and torchvision.
    private void ResizeAs8Bit(ImageBuffer<float> source, int top, int left, int boxHeight, int boxWidth, ImageBuffer<float> destination, int height, int width)
    {
        _resampler.Resample(source, top, left, boxHeight, boxWidth, _horizontal, boxHeight, width);
        RoundTo8Bits(_horizontal.Span);
        _resampler.Resample(_horizontal, 0, 0, boxHeight, width, destination, height, width);
        RoundTo8Bits(destination.Span);
    }

    /// <summary>Scales and orders the channels of one crop as the preset's network expects, into input number <paramref name="written"/>.</summary>
    private void Emit(ImageBuffer<float> crop, Span<float> destination, ref int written)
    {
        int plane = Size * Size;
        Span<float> input = destination.Slice(written * Length, Length);
        written++;
        for (int c = 0; c < Channels; c++)
        {
            ReadOnlySpan<float> source = crop.Plane(c);
            Span<float> target = input.Slice(Target(c) * plane, plane);
            switch (_preset)
            {
                case Preset.Torchvision:
                    float mean = s_imageNetMean[c];
                    float std = s_imageNetStd[c];
                    for (int i = 0; i < plane; i++)
                    {
                        target[i] = (source[i] / 255f - mean) / std;
                    }
                    break;
                case Preset.Paper:
                    float caffeMean = s_caffeMeanBgr[Target(c)];
                    for (int i = 0; i < plane; i++)
                    {
                        target[i] = source[i] - caffeMean;
                    }
                    break;
                default:
                    for (int i = 0; i < plane; i++)
                    {
                        target[i] = source[i] / 255f;
                    }
                    break;
            }
        }
    }

    // Pillow's fixed-point passes add half a step before shifting: ties round up.
    private static void RoundTo8Bits(Span<float> pixels)
    {
        for (int i = 0; i < pixels.Length; i++)
        {
            pixels[i] = Math.Clamp(MathF.Floor(pixels[i] + 0.5f), 0f, 255f);
        }
    }

    // Caffe's networks read BGR: RGB plane c goes to plane 2 - c.
    private int Target(int rgbChannel) => _preset == Preset.Paper ? 2 - rgbChannel : rgbChannel;

    private static void FromBytes(ImageBuffer<byte> image, bool grey, ImageBuffer<float> destination)
    {
        if (image.Channels is not (1 or 3))
        {
            throw new InvalidDataException($"Expected a grey or RGB image, found {image.Channels} channels.");
        }
        int plane = image.Width * image.Height;
        destination.Reshape(grey ? 1 : 3, image.Height, image.Width);
        Span<float> chw = destination.Span;
        ReadOnlySpan<byte> source = image.Span;
        for (int p = 0; p < plane; p++)
        {
            if (image.Channels == 1)
            {
                chw[p] = source[p];
                if (!grey)
                {
                    chw[plane + p] = source[p];
                    chw[2 * plane + p] = source[p];
                }
            }
            else if (grey)
            {
                chw[p] = (source[p] * 19595 + source[plane + p] * 38470 + source[2 * plane + p] * 7471 + 0x8000) >> 16;
            }
            else
            {
                chw[p] = source[p];
                chw[plane + p] = source[plane + p];
                chw[2 * plane + p] = source[2 * plane + p];
            }
        }
    }

    /// <summary>HWC bytes to CHW floats on the 0-255 scale; grey uses Pillow's "L" conversion (ITU-R 601-2 luma).</summary>
    private static void ToPlanes(DecodedImage image, bool grey, ImageBuffer<float> destination)
    {
        int plane = image.Width * image.Height;
        ReadOnlySpan<byte> hwc = image.Rgb;
        destination.Reshape(grey ? 1 : 3, image.Height, image.Width);
        Span<float> chw = destination.Span;
        for (int p = 0; p < plane; p++)
        {
            byte r = hwc[3 * p];
            byte g = hwc[3 * p + 1];
            byte b = hwc[3 * p + 2];
            if (grey)
            {
                chw[p] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
            }
            else
            {
                chw[p] = r;
                chw[plane + p] = g;
                chw[2 * plane + p] = b;
            }
        }
    }
}
