using GoogLeNet.Data;
using GoogLeNet.Models;

namespace GoogLeNet.Cli;

/// <summary>
/// Turns an image file into the network input its weights were trained on:
/// torchvision's (resize the shorter side to 256 bilinearly, center crop 224, x / 255, ImageNet
/// mean and std), Caffe's for the paper preset (BGR, 0-255, resize to 256x256, center crop 224,
/// subtract the per-channel means 104, 117, 123), or d2l's (grey, resize to 96x96, x / 255).
/// One instance per thread: it keeps its buffers between images.
/// </summary>
internal sealed class ImagePreprocessor
{
    private static readonly float[] s_imageNetMean = [0.485f, 0.456f, 0.406f];
    private static readonly float[] s_imageNetStd = [0.229f, 0.224f, 0.225f];

    // bvlc_googlenet's train_val.prototxt mean_value, in its BGR channel order.
    private static readonly float[] s_caffeMeanBgr = [104f, 117f, 123f];

    private readonly Preset _preset;
    private readonly int _resize;
    private readonly CenterCrop _crop;
    private readonly BilinearResampler _resampler = new();
    private readonly DataRandom _random = new(0);
    private readonly ImageBuffer<float> _image = new();
    private readonly ImageBuffer<float> _horizontal = new();
    private readonly ImageBuffer<float> _resized = new();
    private readonly ImageBuffer<float> _cropped = new();

    public ImagePreprocessor(Preset preset)
    {
        _preset = preset;
        (_resize, Size, Channels) = preset switch
        {
            Preset.Torchvision => (256, 224, 3),
            Preset.Paper => (256, 224, 3),
            _ => (96, 96, 1),
        };
        _crop = new CenterCrop(Size);
    }

    public int Channels { get; }

    public int Size { get; }

    public int Length => Channels * Size * Size;

    /// <summary>Writes the CHW input for the image at <paramref name="path"/> into <paramref name="destination"/>.</summary>
    public void Load(string path, Span<float> destination)
    {
        if (destination.Length != Length)
        {
            throw new ArgumentException($"Expected a destination of {Length} floats, found {destination.Length}.");
        }
        DecodedImage decoded = ImageDecoder.DecodeFile(path);
        ToPlanes(decoded, Channels == 1, _image);
        (int height, int width) = _preset == Preset.Torchvision
            ? Resize.ShorterSideSize(_image.Height, _image.Width, _resize)
            : (_resize, _resize);
        // Pillow resizes 8-bit images in two passes, horizontal then vertical, rounding each to
        // 8 bits; doing the same leaves only coefficient rounding between us and torchvision.
        _resampler.Resample(_image, 0, 0, _image.Height, _image.Width, _horizontal, _image.Height, width);
        RoundTo8Bits(_horizontal.Span);
        _resampler.Resample(_horizontal, 0, 0, _horizontal.Height, width, _resized, height, width);
        RoundTo8Bits(_resized.Span);
        _crop.Apply(_resized, _cropped, _random);
        int plane = Size * Size;
        for (int c = 0; c < Channels; c++)
        {
            ReadOnlySpan<float> source = _cropped.Plane(c);
            Span<float> target = destination.Slice(Target(c) * plane, plane);
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
