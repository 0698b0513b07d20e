using System.IO.Compression;

namespace GoogLeNet.Data.Tests;

/// <summary>A temporary folder deleted with the test.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "googlenet-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Fixtures
{
    public static string Path(string name) => System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    public static byte[] Read(string name) => File.ReadAllBytes(Path(name));

    public static byte[] ReadGzip(string name)
    {
        using var gzip = new GZipStream(File.OpenRead(Path(name)), CompressionMode.Decompress);
        using var memory = new MemoryStream();
        gzip.CopyTo(memory);
        return memory.ToArray();
    }

    public static byte[] Gzip(byte[] data)
    {
        using var memory = new MemoryStream();
        using (var gzip = new GZipStream(memory, CompressionLevel.Fastest))
        {
            gzip.Write(data);
        }

        return memory.ToArray();
    }
}

/// <summary>The integer-formula inputs of make_fixtures.py, reproduced exactly.</summary>
internal static class SyntheticImages
{
    public static ImageBuffer<byte> Gray28()
    {
        var image = new ImageBuffer<byte>();
        image.Reshape(1, 28, 28);
        for (int y = 0; y < 28; y++)
        {
            for (int x = 0; x < 28; x++)
            {
                image.Span[y * 28 + x] = (byte)((x * 37 + y * 91 + ((x * y) % 17) * 5) % 256);
            }
        }

        return image;
    }

    public static ImageBuffer<byte> Rgb300x200()
    {
        var image = new ImageBuffer<byte>();
        image.Reshape(3, 200, 300);
        for (int c = 0; c < 3; c++)
        {
            for (int y = 0; y < 200; y++)
            {
                for (int x = 0; x < 300; x++)
                {
                    image.Plane(c)[y * 300 + x] = (byte)((x * (3 + c) + y * (5 - c) + (x / 7) * (y / 5) * c) % 256);
                }
            }
        }

        return image;
    }

    public static ImageBuffer<float> ToFloat(ImageBuffer<byte> image)
    {
        var result = new ImageBuffer<float>();
        ImageOps.ToFloat(image, result);
        return result;
    }
}
