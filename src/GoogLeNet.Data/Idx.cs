using System.Buffers.Binary;
using System.IO.Compression;

namespace GoogLeNet.Data;

/// <summary>
/// Reader for the IDX files of MNIST and Fashion-MNIST, raw or gzip-compressed (detected by the
/// gzip magic, not the extension).
/// </summary>
public static class IdxReader
{
    public const int ImagesMagic = 0x00000803;
    public const int LabelsMagic = 0x00000801;

    /// <summary>Largest rows or columns accepted; MNIST is 28, this only guards the allocation.</summary>
    public const int MaxSide = 4096;

    /// <summary>
    /// Loads an images file and its labels file as one grayscale dataset. Throws
    /// <see cref="InvalidDataException"/> naming the file when a header, length or label is wrong.
    /// </summary>
    public static ImageDataset Load(string imagesPath, string labelsPath, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        (byte[] pixels, int imageCount, int rows, int cols) = ReadImages(imagesPath);
        byte[] labels = ReadLabels(labelsPath, classNames.Count);
        if (labels.Length != imageCount)
        {
            throw new InvalidDataException($"'{labelsPath}' has {labels.Length} labels but '{imagesPath}' has {imageCount} images; expected the same count.");
        }

        return new ImageDataset(1, rows, cols, pixels, labels, classNames);
    }

    public static (byte[] Pixels, int Count, int Rows, int Columns) ReadImages(string path)
    {
        using Stream stream = OpenMaybeGzip(path);
        Span<byte> header = stackalloc byte[16];
        ReadExactly(stream, header, path, "the 16-byte header");
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != ImagesMagic)
        {
            throw new InvalidDataException($"'{path}' is not an IDX images file: expected magic 0x{ImagesMagic:X8}, found 0x{magic:X8}.");
        }

        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        int rows = BinaryPrimitives.ReadInt32BigEndian(header[8..]);
        int cols = BinaryPrimitives.ReadInt32BigEndian(header[12..]);
        if (count < 0 || rows <= 0 || cols <= 0 || rows > MaxSide || cols > MaxSide)
        {
            throw new InvalidDataException($"'{path}' declares {count} images of {rows}x{cols}; expected a non-negative count and sides in 1..{MaxSide}.");
        }

        long payload = (long)count * rows * cols;
        if (payload > Array.MaxLength)
        {
            throw new InvalidDataException($"'{path}' declares {count} images of {rows}x{cols} ({payload} bytes), more than one array can hold.");
        }

        byte[] pixels = new byte[payload];
        ReadExactly(stream, pixels, path, $"{16 + payload} bytes (16 + {count} x {rows} x {cols})");
        ExpectEnd(stream, path, 16 + payload);
        return (pixels, count, rows, cols);
    }

    public static byte[] ReadLabels(string path, int classCount)
    {
        using Stream stream = OpenMaybeGzip(path);
        Span<byte> header = stackalloc byte[8];
        ReadExactly(stream, header, path, "the 8-byte header");
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != LabelsMagic)
        {
            throw new InvalidDataException($"'{path}' is not an IDX labels file: expected magic 0x{LabelsMagic:X8}, found 0x{magic:X8}.");
        }

        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        if (count < 0)
        {
            throw new InvalidDataException($"'{path}' declares {count} labels; expected a non-negative count.");
        }

        byte[] labels = new byte[count];
        ReadExactly(stream, labels, path, $"{8L + count} bytes (8 + {count})");
        ExpectEnd(stream, path, 8L + count);
        for (int i = 0; i < labels.Length; i++)
        {
            if (labels[i] >= classCount)
            {
                throw new InvalidDataException($"'{path}' has label {labels[i]} at index {i}; expected 0..{classCount - 1}.");
            }
        }

        return labels;
    }

    /// <summary>
    /// Returns <paramref name="name"/> or <paramref name="name"/>.gz inside <paramref name="directory"/>,
    /// whichever exists (the raw file first).
    /// </summary>
    public static string FindFile(string directory, string name)
    {
        string raw = Path.Combine(directory, name);
        if (File.Exists(raw))
        {
            return raw;
        }

        string gz = raw + ".gz";
        if (File.Exists(gz))
        {
            return gz;
        }

        throw new FileNotFoundException($"Expected '{raw}' or '{gz}'.", gz);
    }

    private static Stream OpenMaybeGzip(string path)
    {
        FileStream file = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[2];
        int read = file.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
        file.Position = 0;
        if (read == 2 && magic[0] == 0x1F && magic[1] == 0x8B)
        {
            return new BufferedStream(new GZipStream(file, CompressionMode.Decompress), 1 << 16);
        }

        return file;
    }

    // GZipStream ends a truncated stream without an error, so every read is checked for its full length.
    private static void ReadExactly(Stream stream, Span<byte> buffer, string path, string expected)
    {
        int read;
        try
        {
            read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}' is not valid gzip data: {e.Message}", e);
        }

        if (read != buffer.Length)
        {
            throw new InvalidDataException($"'{path}' is truncated: expected {expected}, the data ended {buffer.Length - read} bytes short.");
        }
    }

    private static void ExpectEnd(Stream stream, string path, long expectedLength)
    {
        int extra;
        try
        {
            extra = stream.ReadByte();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}' is not valid gzip data: {e.Message}", e);
        }

        if (extra != -1)
        {
            throw new InvalidDataException($"'{path}' has trailing bytes: expected exactly {expectedLength} bytes as its header declares.");
        }
    }
}

/// <summary>Fashion-MNIST (Zalando): 60,000 training and 10,000 test images of 28x28, 10 classes.</summary>
public static class FashionMnist
{
    /// <summary>Where Debian's dataset-fashion-mnist package installs the gzip files.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    public static IReadOnlyList<string> ClassNames { get; } =
    [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ];

    public static ImageDataset Load(string directory, bool train) => MnistFiles.Load(directory, train, ClassNames);

    public static ImageDataset Load(bool train) => Load(DefaultDirectory, train);
}

/// <summary>MNIST handwritten digits, same file format and names as Fashion-MNIST.</summary>
public static class Mnist
{
    public static IReadOnlyList<string> ClassNames { get; } = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    public static ImageDataset Load(string directory, bool train) => MnistFiles.Load(directory, train, ClassNames);
}

internal static class MnistFiles
{
    public static ImageDataset Load(string directory, bool train, IReadOnlyList<string> classNames)
    {
        string prefix = train ? "train" : "t10k";
        string images = IdxReader.FindFile(directory, prefix + "-images-idx3-ubyte");
        string labels = IdxReader.FindFile(directory, prefix + "-labels-idx1-ubyte");
        return IdxReader.Load(images, labels, classNames);
    }
}
