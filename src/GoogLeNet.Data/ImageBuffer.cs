namespace GoogLeNet.Data;

/// <summary>
/// One image in CHW layout over a growable array, so a pipeline can reuse the same buffers for
/// every sample and allocate nothing once the largest image has been seen.
/// </summary>
public sealed class ImageBuffer<T> where T : unmanaged
{
    private T[] _data = [];

    public int Channels { get; private set; }
    public int Height { get; private set; }
    public int Width { get; private set; }

    public int Length => Channels * Height * Width;

    /// <summary>The backing array; it may be longer than <see cref="Length"/>.</summary>
    public T[] Data => _data;

    public Span<T> Span => _data.AsSpan(0, Length);

    public Span<T> Plane(int channel) => _data.AsSpan(channel * Height * Width, Height * Width);

    /// <summary>Sets the shape; grows the array only when the new shape does not fit. Contents are unspecified.</summary>
    public void Reshape(int channels, int height, int width)
    {
        if (channels <= 0 || height <= 0 || width <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(channels), $"Expected a positive shape, found {channels}x{height}x{width}.");
        }

        long length = (long)channels * height * width;
        if (length > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(channels), $"Image {channels}x{height}x{width} is too large.");
        }

        if (_data.Length < length)
        {
            _data = new T[length];
        }

        Channels = channels;
        Height = height;
        Width = width;
    }
}
