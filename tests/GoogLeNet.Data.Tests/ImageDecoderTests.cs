namespace GoogLeNet.Data.Tests;

public sealed class ImageDecoderTests
{
    // PIL and our decoder both sit on libjpeg-turbo, but a JPEG decode is only specified up to the
    // IDCT's rounding: SIMD and C paths, or another libjpeg build, may move a sample by a step or two.
    private const int JpegTolerance = 2;

    public static TheoryData<string> Pngs => new() { "rgb.png", "gray.png", "palette.png", "rgba.png", "palette_transparent.png" };

    public static TheoryData<string> Jpegs => new() { "photo.jpg", "photo_progressive.jpg", "gray.jpg" };

    [Theory]
    [MemberData(nameof(Pngs))]
    public void PngEqualsPilExactly(string name)
    {
        DecodedImage image = ImageDecoder.DecodeFile(Fixtures.Path(name));

        Assert.Equal((37, 23), (image.Width, image.Height));
        Assert.Equal(Fixtures.Read(name + ".rgb"), image.Rgb);
    }

    [Theory]
    [MemberData(nameof(Jpegs))]
    public void JpegEqualsPilWithinTolerance(string name)
    {
        DecodedImage image = ImageDecoder.DecodeFile(Fixtures.Path(name));
        byte[] expected = Fixtures.Read(name + ".rgb");

        Assert.Equal((37, 23), (image.Width, image.Height));
        Assert.Equal(expected.Length, image.Rgb.Length);
        int worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - image.Rgb[i]));
        }

        Assert.True(worst <= JpegTolerance, $"{name}: max abs difference from PIL {worst} > {JpegTolerance}");
    }

    [Fact]
    public void JpegWithRecoverableWarningDecodesLikePil()
    {
        byte[] jpeg = Fixtures.Read("photo.jpg");
        Assert.Equal([0xFF, 0xD9], jpeg[^2..]);
        byte[] padded = [.. jpeg[..^2], 0x11, 0x22, 0x33, 0xFF, 0xD9];

        DecodedImage image = ImageDecoder.Decode(padded, "padded.jpg");

        Assert.Equal(ImageDecoder.DecodeFile(Fixtures.Path("photo.jpg")).Rgb, image.Rgb);
    }

    [Fact]
    public void JpegCutBeforeItsEndIsAnError()
    {
        byte[] jpeg = Fixtures.Read("photo.jpg");

        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(jpeg.AsSpan(0, jpeg.Length - 2), "cut.jpg"));
        Assert.Contains("cut.jpg", e.Message);
        Assert.Contains("Premature end", e.Message);
    }

    [Fact]
    public void FormatComesFromMagicBytesNotTheName()
    {
        DecodedImage image = ImageDecoder.Decode(Fixtures.Read("rgb.png"), "mislabelled.jpg");
        Assert.Equal(Fixtures.Read("rgb.png.rgb"), image.Rgb);
    }

    [Fact]
    public void UnknownFormatNamesTheSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode("GIF89a.........."u8, "anim.gif"));
        Assert.Contains("anim.gif", e.Message);
        Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode([], "empty.png"));
    }

    [Fact]
    public void OversizedPngIsRejectedBeforeAllocating()
    {
        byte[] png = Fixtures.Read("rgb.png");
        // IHDR width at offset 16, big-endian; the CRC would also catch it, so fix the CRC up too.
        png[16] = 0x00;
        png[17] = 0x01;
        png[18] = 0x00;
        png[19] = 0x00;
        uint crc = Crc32(png.AsSpan(12, 17));
        png[29] = (byte)(crc >> 24);
        png[30] = (byte)(crc >> 16);
        png[31] = (byte)(crc >> 8);
        png[32] = (byte)crc;

        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(png, "wide.png"));
        Assert.Contains("wide.png", e.Message);
        Assert.Contains("65536x23", e.Message);
    }

    [Fact]
    public void OversizedJpegIsRejectedBeforeAllocating()
    {
        byte[] jpeg = Fixtures.Read("photo.jpg");
        int sof = IndexOfMarker(jpeg, 0xC0);
        // SOF0: marker, length (2), precision (1), height (2), width (2).
        jpeg[sof + 5] = 0x7F;
        jpeg[sof + 6] = 0xF0;

        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(jpeg, "tall.jpg"));
        Assert.Contains("tall.jpg", e.Message);
        Assert.Contains("37x32752", e.Message);
    }

    // A PNG cut inside its final IEND chunk still holds every pixel; libpng (like PIL) decodes it.
    [Theory]
    [MemberData(nameof(Pngs))]
    [MemberData(nameof(Jpegs))]
    public void TruncationFailsCleanly(string name)
    {
        byte[] data = Fixtures.Read(name);
        byte[] expected = Fixtures.Read(name + ".rgb");
        int complete = ImageDecoder.IsPng(data) ? data.Length - 12 : data.Length;
        var random = new Random(1234);
        for (int trial = 0; trial < 150; trial++)
        {
            int length = trial < 16 ? trial : random.Next(data.Length - 1);
            if (length >= complete)
            {
                Assert.Equal(expected, ImageDecoder.Decode(data.AsSpan(0, length), name).Rgb);
                continue;
            }

            var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(data.AsSpan(0, length), name));
            Assert.Contains(name, e.Message);
        }
    }

    [Theory]
    [MemberData(nameof(Pngs))]
    [MemberData(nameof(Jpegs))]
    public void BitFlipsDecodeOrFailCleanly(string name)
    {
        byte[] original = Fixtures.Read(name);
        var random = new Random(name.Length * 7919);
        int failures = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            byte[] data = (byte[])original.Clone();
            int flips = 1 + random.Next(4);
            for (int f = 0; f < flips; f++)
            {
                data[random.Next(data.Length)] ^= (byte)(1 << random.Next(8));
            }

            try
            {
                DecodedImage image = ImageDecoder.Decode(data, name);
                Assert.Equal((long)image.Width * image.Height * 3, image.Rgb.LongLength);
            }
            catch (InvalidDataException e)
            {
                Assert.Contains(name, e.Message);
                failures++;
            }
        }

        Assert.True(failures > 0, "Expected some corruptions to be detected.");
    }

    private static int IndexOfMarker(byte[] jpeg, byte marker)
    {
        for (int i = 2; i + 1 < jpeg.Length; i++)
        {
            if (jpeg[i] == 0xFF && jpeg[i + 1] == marker)
            {
                return i;
            }
        }

        throw new InvalidOperationException($"Marker FF{marker:X2} not found.");
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
            }
        }

        return ~crc;
    }
}
