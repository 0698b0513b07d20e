using GoogLeNet.Data;
using GoogLeNet.Training;
using Xunit;

namespace GoogLeNet.Tests.Training;

/// <summary>The training plot: the PNG is read back by libpng, which also checks every chunk's CRC.</summary>
public sealed class PlotTests
{
    private static readonly EpochMetrics[] s_history =
    [
        new(1, 1.25, 0.55, 0.9, 0.62, 0.95, 0.1, 10, 100),
        new(2, 0.75, 0.72, 0.7, 0.70, 0.97, 0.1, 10, 100),
        new(3, 0.5, 0.81, 0.6, 0.78, 0.99, 0.1, 10, 100),
    ];

    [Fact]
    public void EncodedPngDecodesToTheSamePixels()
    {
        const int width = 7, height = 5;
        var rgb = new byte[width * height * 3];
        for (int i = 0; i < rgb.Length; i++)
        {
            rgb[i] = (byte)(i * 37 + 11);
        }
        DecodedImage decoded = ImageDecoder.Decode(PngPlot.Encode(width, height, rgb), "encoded.png");
        Assert.Equal(width, decoded.Width);
        Assert.Equal(height, decoded.Height);
        Assert.Equal(rgb, decoded.Rgb);
    }

    [Fact]
    public void EncodeRejectsAWrongPixelCount()
    {
        var error = Assert.Throws<ArgumentException>(() => PngPlot.Encode(4, 4, new byte[4 * 4 * 3 - 1]));
        Assert.Contains("needs 48 bytes, got 47", error.Message);
    }

    [Fact]
    public void PlotPngDrawsEachSeriesAtItsPoints()
    {
        DecodedImage image = ImageDecoder.Decode(PngPlot.Render(s_history), "plot.png");
        Assert.Equal(640, image.Width);
        Assert.Equal(400, image.Height);
        (byte, byte, byte) Pixel(int x, int y) => (image.Rgb[(y * 640 + x) * 3], image.Rgb[(y * 640 + x) * 3 + 1], image.Rgb[(y * 640 + x) * 3 + 2]);

        Assert.Equal(((byte)255, (byte)255, (byte)255), Pixel(2, 2)); // background
        Assert.Equal(((byte)0, (byte)0, (byte)0), Pixel(56, 200));     // left edge of the frame at x = Left
        // y runs from 0 to 1.25 (the largest value rounded up to a quarter) over the 336 pixels
        // between Top = 20 and Height - Bottom = 356; x from epoch 0 to 3 over 564 pixels from 56.
        static int X(int epoch) => (int)Math.Round(56 + 564.0 * epoch / 3);
        static int Y(double value) => (int)Math.Round(20 + 336 * (1 - value / 1.25));
        // Markers are drawn series by series, so the last series wins where they overlap; these
        // points do not overlap.
        Assert.Equal(((byte)0x1f, (byte)0x77, (byte)0xb4), Pixel(X(2), Y(0.75)));  // train loss, epoch 2
        Assert.Equal(((byte)0xd6, (byte)0x27, (byte)0x28), Pixel(X(3), Y(0.81)));  // train acc, epoch 3
        Assert.Equal(((byte)0x2c, (byte)0xa0, (byte)0x2c), Pixel(X(1), Y(0.62)));  // test acc, epoch 1
    }

    [Fact]
    public void SvgAndPngShareTheScale()
    {
        string svg = SvgPlot.Render(s_history);
        // The same point as the PNG's train-loss marker at epoch 2: (432, 154.4).
        Assert.Contains("<circle cx=\"432\" cy=\"154.4\" r=\"3\" fill=\"#1f77b4\"/>", svg);
        Assert.Contains("stroke-dasharray=\"6,3\"", svg);
    }
}
