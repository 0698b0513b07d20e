namespace GoogLeNet.Data;

/// <summary>An in-memory dataset of equally sized 8-bit images, CHW per image, one label byte each.</summary>
public sealed class ImageDataset : IImageDataset
{
    public ImageDataset(int channels, int height, int width, byte[] pixels, byte[] labels, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(classNames);
        if (channels <= 0 || height <= 0 || width <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(channels), $"Expected a positive image shape, found {channels}x{height}x{width}.");
        }

        long imageSize = (long)channels * height * width;
        if (pixels.LongLength != imageSize * labels.Length)
        {
            throw new ArgumentException($"Expected {labels.Length} images of {imageSize} bytes ({imageSize * labels.Length} bytes), found {pixels.LongLength} bytes.", nameof(pixels));
        }

        for (int i = 0; i < labels.Length; i++)
        {
            if (labels[i] >= classNames.Count)
            {
                throw new ArgumentException($"Label {labels[i]} at index {i} is outside 0..{classNames.Count - 1}.", nameof(labels));
            }
        }

        Channels = channels;
        Height = height;
        Width = width;
        Pixels = pixels;
        Labels = labels;
        ClassNames = classNames;
    }

    public int Count => Labels.Length;

    public int Channels { get; }

    public int Height { get; }

    public int Width { get; }

    public int ImageSize => Channels * Height * Width;

    public int ClassCount => ClassNames.Count;

    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>N x C x H x W bytes.</summary>
    public byte[] Pixels { get; }

    public byte[] Labels { get; }

    public ReadOnlySpan<byte> GetPixels(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return Pixels.AsSpan(index * ImageSize, ImageSize);
    }

    public int GetLabel(int index) => Labels[index];

    public void ReadImage(int index, ImageBuffer<byte> destination)
    {
        ReadOnlySpan<byte> source = GetPixels(index);
        destination.Reshape(Channels, Height, Width);
        source.CopyTo(destination.Span);
    }
}
