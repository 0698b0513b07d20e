namespace GoogLeNet.Data.Tests;

public sealed class Cifar10Tests
{
    private static byte[] Batch(int fileIndex)
    {
        byte[] data = new byte[Cifar10.FileSize];
        for (int r = 0; r < Cifar10.RecordsPerFile; r++)
        {
            int record = r * Cifar10.RecordSize;
            data[record] = (byte)((r + fileIndex) % 10);
            data[record + 1] = (byte)fileIndex;
            data[record + 2] = (byte)(r % 251);
            data[record + Cifar10.RecordSize - 1] = 0xAB;
        }

        return data;
    }

    [Fact]
    public void ReadsTestBatchWithStandardNames()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("test_batch.bin"), Batch(7));

        ImageDataset set = Cifar10.Load(dir.Path, train: false);

        Assert.Equal(10000, set.Count);
        Assert.Equal((3, 32, 32), (set.Channels, set.Height, set.Width));
        Assert.Equal("truck", set.ClassNames[9]);
        Assert.Equal(7, set.GetLabel(0));
        Assert.Equal(2, set.GetLabel(5));
        ReadOnlySpan<byte> image = set.GetPixels(300);
        Assert.Equal(7, image[0]);
        Assert.Equal(300 % 251, image[1]);
        Assert.Equal(0xAB, image[3071]);
    }

    [Fact]
    public void ReadsFiveTrainingBatchesFromTheArchiveFolderWithMetaNames()
    {
        using var dir = new TempDirectory();
        string nested = Path.Combine(dir.Path, "cifar-10-batches-bin");
        Directory.CreateDirectory(nested);
        for (int f = 1; f <= 5; f++)
        {
            File.WriteAllBytes(Path.Combine(nested, $"data_batch_{f}.bin"), Batch(f));
        }

        File.WriteAllBytes(Path.Combine(nested, "test_batch.bin"), Batch(0));
        File.WriteAllLines(Path.Combine(nested, "batches.meta.txt"), ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", ""]);

        ImageDataset set = Cifar10.Load(dir.Path, train: true);

        Assert.Equal(50000, set.Count);
        Assert.Equal("j", set.ClassNames[9]);
        Assert.Equal(3, set.GetPixels(2 * 10000 + 17)[0]);
        Assert.Equal((17 + 3) % 10, set.GetLabel(2 * 10000 + 17));
    }

    [Fact]
    public void WrongLengthNamesTheFile()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("test_batch.bin"), Batch(0)[..^1]);

        var e = Assert.Throws<InvalidDataException>(() => Cifar10.Load(dir.Path, train: false));
        Assert.Contains("test_batch.bin", e.Message);
        Assert.Contains("30730000", e.Message);
    }

    [Fact]
    public void BadLabelNamesTheFileAndRecord()
    {
        using var dir = new TempDirectory();
        byte[] data = Batch(0);
        data[42 * Cifar10.RecordSize] = 10;
        File.WriteAllBytes(dir.File("test_batch.bin"), data);

        var e = Assert.Throws<InvalidDataException>(() => Cifar10.Load(dir.Path, train: false));
        Assert.Contains("test_batch.bin", e.Message);
        Assert.Contains("record 42", e.Message);
    }

    [Fact]
    public void AMissingBatchNamesTheFileAndWhatTheFolderShouldHold()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("test_batch.bin"), Batch(0));

        var e = Assert.Throws<FileNotFoundException>(() => Cifar10.Load(dir.Path, train: true));
        Assert.Contains($"'{dir.File("data_batch_1.bin")}'", e.Message);
        Assert.Contains("data_batch_5.bin and test_batch.bin", e.Message);
    }

    [Fact]
    public void MetaWithWrongNameCountIsRejected()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("test_batch.bin"), Batch(0));
        File.WriteAllLines(dir.File("batches.meta.txt"), ["a", "b"]);

        var e = Assert.Throws<InvalidDataException>(() => Cifar10.Load(dir.Path, train: false));
        Assert.Contains("batches.meta.txt", e.Message);
    }
}
