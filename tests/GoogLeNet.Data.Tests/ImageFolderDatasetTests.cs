namespace GoogLeNet.Data.Tests;

public sealed class ImageFolderDatasetTests
{
    [Fact]
    public void ClassesAndFilesAreSortedOrdinallyLikeTorchvision()
    {
        using var dir = new TempDirectory();
        Copy("rgb.png", dir, "dog", "b.png");
        Copy("photo.jpg", dir, "dog", "A.JPG");
        Copy("gray.png", dir, "dog", "sub/c.Png");
        Copy("photo.jpg", dir, "Cat", "x.jpeg");
        Copy("rgb.png", dir, "bird", "only.png");
        File.WriteAllText(Path.Combine(dir.Path, "bird", "notes.txt"), "not an image");

        var set = new ImageFolderDataset(dir.Path);

        Assert.Equal(["Cat", "bird", "dog"], set.ClassNames);
        Assert.Equal(5, set.Count);
        Assert.Equal([0, 1, 2, 2, 2], Enumerable.Range(0, set.Count).Select(set.GetLabel));
        Assert.Equal(["x.jpeg", "only.png", "A.JPG", "b.png", "c.Png"], set.Paths.Select(Path.GetFileName));
    }

    [Fact]
    public void ReadImageIsChwOfTheDecodedRgb()
    {
        using var dir = new TempDirectory();
        Copy("rgb.png", dir, "one", "image.png");
        var set = new ImageFolderDataset(dir.Path);
        var buffer = new ImageBuffer<byte>();

        set.ReadImage(0, buffer);

        byte[] hwc = Fixtures.Read("rgb.png.rgb");
        Assert.Equal((3, 23, 37), (buffer.Channels, buffer.Height, buffer.Width));
        for (int c = 0; c < 3; c++)
        {
            for (int p = 0; p < 23 * 37; p++)
            {
                Assert.Equal(hwc[3 * p + c], buffer.Plane(c)[p]);
            }
        }
    }

    [Fact]
    public void CorruptFileNamesItsPath()
    {
        using var dir = new TempDirectory();
        Copy("rgb.png", dir, "one", "good.png");
        string bad = Path.Combine(dir.Path, "one", "bad.jpg");
        File.WriteAllBytes(bad, Fixtures.Read("photo.jpg")[..200]);
        var set = new ImageFolderDataset(dir.Path);

        var e = Assert.Throws<InvalidDataException>(() => set.ReadImage(0, new ImageBuffer<byte>()));
        Assert.Contains(bad, e.Message);
    }

    [Fact]
    public void EmptyClassFolderIsAnError()
    {
        using var dir = new TempDirectory();
        Copy("rgb.png", dir, "one", "good.png");
        Directory.CreateDirectory(Path.Combine(dir.Path, "two"));

        var e = Assert.Throws<InvalidDataException>(() => new ImageFolderDataset(dir.Path));
        Assert.Contains("two", e.Message);
    }

    private static void Copy(string fixture, TempDirectory dir, string className, string relative)
    {
        string target = Path.Combine(dir.Path, className, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Copy(Fixtures.Path(fixture), target);
    }
}
