using System.Buffers.Binary;

namespace GoogLeNet.Data.Tests;

public sealed class IdxTests
{
    private static byte[] ImagesFile(int count, int rows, int cols, Func<int, byte> pixel, int magic = IdxReader.ImagesMagic)
    {
        byte[] data = new byte[16 + count * rows * cols];
        BinaryPrimitives.WriteInt32BigEndian(data, magic);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(12), cols);
        for (int i = 16; i < data.Length; i++)
        {
            data[i] = pixel(i - 16);
        }

        return data;
    }

    private static byte[] LabelsFile(byte[] labels, int magic = IdxReader.LabelsMagic)
    {
        byte[] data = new byte[8 + labels.Length];
        BinaryPrimitives.WriteInt32BigEndian(data, magic);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(4), labels.Length);
        labels.CopyTo(data, 8);
        return data;
    }

    private static void WriteSet(TempDirectory dir, string prefix, byte[] images, byte[] labels, bool gzip)
    {
        string suffix = gzip ? ".gz" : "";
        File.WriteAllBytes(dir.File(prefix + "-images-idx3-ubyte" + suffix), gzip ? Fixtures.Gzip(images) : images);
        File.WriteAllBytes(dir.File(prefix + "-labels-idx1-ubyte" + suffix), gzip ? Fixtures.Gzip(labels) : labels);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadsSyntheticFiles(bool gzip)
    {
        using var dir = new TempDirectory();
        byte[] labels = [3, 0, 9, 1, 7];
        WriteSet(dir, "train", ImagesFile(5, 28, 28, i => (byte)(i * 7)), LabelsFile(labels), gzip);

        ImageDataset set = FashionMnist.Load(dir.Path, train: true);

        Assert.Equal(5, set.Count);
        Assert.Equal((1, 28, 28), (set.Channels, set.Height, set.Width));
        Assert.Equal(labels, set.Labels);
        Assert.Equal(10, set.ClassCount);
        Assert.Equal("Ankle boot", set.ClassNames[9]);
        Assert.Equal(unchecked((byte)((784 * 2 + 5) * 7)), set.GetPixels(2)[5]);
        var buffer = new ImageBuffer<byte>();
        set.ReadImage(4, buffer);
        Assert.Equal(set.GetPixels(4).ToArray(), buffer.Span.ToArray());
    }

    [Fact]
    public void MnistUsesDigitNamesAndTestFiles()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "t10k", ImagesFile(2, 28, 28, i => 1), LabelsFile([5, 6]), gzip: false);

        ImageDataset set = Mnist.Load(dir.Path, train: false);

        Assert.Equal(2, set.Count);
        Assert.Equal("5", set.ClassNames[5]);
    }

    [Fact]
    public void TruncatedGzipNamesTheFile()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(50, 28, 28, i => (byte)(i * 31 + i / 7)), LabelsFile(new byte[50]), gzip: true);
        string images = dir.File("train-images-idx3-ubyte.gz");
        byte[] whole = File.ReadAllBytes(images);
        File.WriteAllBytes(images, whole[..(whole.Length / 2)]);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains(images, e.Message);
    }

    [Fact]
    public void TruncatedRawFileNamesTheFile()
    {
        using var dir = new TempDirectory();
        byte[] images = ImagesFile(3, 28, 28, i => 0);
        WriteSet(dir, "train", images[..^1], LabelsFile(new byte[3]), gzip: false);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-images-idx3-ubyte", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void TrailingBytesAreRejected()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(3, 28, 28, i => 0), [.. LabelsFile(new byte[3]), 0], gzip: true);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-labels-idx1-ubyte.gz", e.Message);
    }

    [Fact]
    public void WrongMagicNamesTheFile()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(3, 28, 28, i => 0, magic: 0x00000801), LabelsFile(new byte[3]), gzip: false);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-images-idx3-ubyte", e.Message);
        Assert.Contains("0x00000803", e.Message);
    }

    [Fact]
    public void CountMismatchIsRejected()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(3, 28, 28, i => 0), LabelsFile(new byte[4]), gzip: false);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-labels-idx1-ubyte", e.Message);
        Assert.Contains("4 labels", e.Message);
    }

    [Fact]
    public void LabelAboveNineIsRejected()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(3, 28, 28, i => 0), LabelsFile([1, 10, 2]), gzip: false);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-labels-idx1-ubyte", e.Message);
        Assert.Contains("label 10 at index 1", e.Message);
    }

    [Fact]
    public void HugeDeclaredSizeIsRejectedBeforeAllocating()
    {
        using var dir = new TempDirectory();
        WriteSet(dir, "train", ImagesFile(0, 28, 28, i => 0)[..16], LabelsFile([]), gzip: false);
        byte[] header = File.ReadAllBytes(dir.File("train-images-idx3-ubyte"));
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), int.MaxValue);
        File.WriteAllBytes(dir.File("train-images-idx3-ubyte"), header);

        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir.Path, train: true));
        Assert.Contains("train-images-idx3-ubyte", e.Message);
    }

    [Fact]
    public void MissingFilesSayWhatWasExpected()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<FileNotFoundException>(() => FashionMnist.Load(dir.Path, train: false));
        Assert.Contains("t10k-images-idx3-ubyte", e.Message);
    }

    // First labels and pixel sums checked with Python's gzip module on the Debian files.
    [Fact]
    public void RealFashionMnistWhenInstalled()
    {
        if (!File.Exists(Path.Combine(FashionMnist.DefaultDirectory, "t10k-labels-idx1-ubyte.gz")))
        {
            // Off CI the check is optional; on CI (.ci/run installs it) a missing dependency fails.
            Assert.False(Environment.GetEnvironmentVariable("CI") == "true", "Fashion-MNIST (Debian package dataset-fashion-mnist) is required on CI.");
            return;
        }

        ImageDataset train = FashionMnist.Load(train: true);
        ImageDataset test = FashionMnist.Load(train: false);

        Assert.Equal(60000, train.Count);
        Assert.Equal(10000, test.Count);
        Assert.Equal(new byte[] { 9, 0, 0, 3, 0, 2, 7, 2, 5, 5 }, train.Labels[..10]);
        Assert.Equal(new byte[] { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 }, test.Labels[..10]);
        Assert.Equal(76247, Sum(train.GetPixels(0)));
        Assert.Equal(33456, Sum(test.GetPixels(0)));
        Assert.Equal(0xED, train.GetPixels(0)[14 * 28 + 12]);
    }

    private static int Sum(ReadOnlySpan<byte> values)
    {
        int sum = 0;
        foreach (byte v in values)
        {
            sum += v;
        }

        return sum;
    }
}
