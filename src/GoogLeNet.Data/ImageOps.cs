namespace GoogLeNet.Data;

/// <summary>Deterministic building blocks shared by the transforms and the loader.</summary>
public static class ImageOps
{
    /// <summary>Bytes to floats in [0, 1] (x / 255), as torchvision's ToTensor.</summary>
    public static void ToFloat(ImageBuffer<byte> source, ImageBuffer<float> destination)
    {
        destination.Reshape(source.Channels, source.Height, source.Width);
        ReadOnlySpan<byte> input = source.Span;
        Span<float> output = destination.Span;
        for (int i = 0; i < input.Length; i++)
        {
            output[i] = input[i] / 255f;
        }
    }

    public static void Copy(ImageBuffer<float> source, ImageBuffer<float> destination)
    {
        destination.Reshape(source.Channels, source.Height, source.Width);
        source.Span.CopyTo(destination.Span);
    }

    /// <summary>The <paramref name="height"/> x <paramref name="width"/> window at (top, left); pixels outside the image are 0.</summary>
    public static void Crop(ImageBuffer<float> source, int top, int left, int height, int width, ImageBuffer<float> destination)
    {
        destination.Reshape(source.Channels, height, width);
        int x0 = Math.Clamp(-left, 0, width);
        int x1 = Math.Clamp(source.Width - left, x0, width);
        for (int c = 0; c < source.Channels; c++)
        {
            ReadOnlySpan<float> input = source.Plane(c);
            Span<float> output = destination.Plane(c);
            for (int y = 0; y < height; y++)
            {
                Span<float> row = output.Slice(y * width, width);
                int sy = y + top;
                if (sy < 0 || sy >= source.Height || x0 == x1)
                {
                    row.Clear();
                    continue;
                }

                row[..x0].Clear();
                input.Slice(sy * source.Width + left + x0, x1 - x0).CopyTo(row[x0..x1]);
                row[x1..].Clear();
            }
        }
    }

    public static void FlipHorizontal(ImageBuffer<float> source, ImageBuffer<float> destination)
    {
        destination.Reshape(source.Channels, source.Height, source.Width);
        int width = source.Width;
        for (int c = 0; c < source.Channels; c++)
        {
            ReadOnlySpan<float> input = source.Plane(c);
            Span<float> output = destination.Plane(c);
            for (int y = 0; y < source.Height; y++)
            {
                ReadOnlySpan<float> inRow = input.Slice(y * width, width);
                Span<float> outRow = output.Slice(y * width, width);
                for (int x = 0; x < width; x++)
                {
                    outRow[x] = inRow[width - 1 - x];
                }
            }
        }
    }
}
