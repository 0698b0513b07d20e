namespace GoogLeNet.Data;

/// <summary>
/// Reader for the binary version of CIFAR-10 (cifar-10-batches-bin): records of one label byte and
/// 3,072 pixel bytes (R, G and B planes of 32x32), 10,000 records per file. The Python version is a
/// pickle and is never read, because unpickling can execute code.
/// </summary>
public static class Cifar10
{
    public const int Side = 32;
    public const int ImageSize = 3 * Side * Side;
    public const int RecordSize = 1 + ImageSize;
    public const int RecordsPerFile = 10_000;
    public const long FileSize = (long)RecordSize * RecordsPerFile;

    public static IReadOnlyList<string> StandardClassNames { get; } =
    [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ];

    public static IReadOnlyList<string> TrainFiles { get; } =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

    public static IReadOnlyList<string> TestFiles { get; } = ["test_batch.bin"];

    /// <summary>
    /// Loads the five training batches or the test batch from <paramref name="directory"/> (or its
    /// cifar-10-batches-bin subfolder, as the archive unpacks); class names come from
    /// batches.meta.txt when present.
    /// </summary>
    public static ImageDataset Load(string directory, bool train)
    {
        string nested = Path.Combine(directory, "cifar-10-batches-bin");
        if (!File.Exists(Path.Combine(directory, TestFiles[0])) && Directory.Exists(nested))
        {
            directory = nested;
        }

        IReadOnlyList<string> names = train ? TrainFiles : TestFiles;
        string[] paths = names.Select(n => Path.Combine(directory, n)).ToArray();
        return LoadFiles(paths, ReadClassNames(directory));
    }

    public static ImageDataset LoadFiles(IReadOnlyList<string> paths, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(paths);
        ArgumentNullException.ThrowIfNull(classNames);
        int count = paths.Count * RecordsPerFile;
        byte[] pixels = new byte[(long)count * ImageSize];
        byte[] labels = new byte[count];
        byte[] file = new byte[FileSize];
        for (int f = 0; f < paths.Count; f++)
        {
            string path = paths[f];
            if (!File.Exists(path))
            {
                throw new FileNotFoundException(
                    $"Expected the CIFAR-10 binary batch '{path}'; the folder should hold {string.Join(", ", TrainFiles)} and {TestFiles[0]} (the binary version of the archive).", path);
            }
            long length = new FileInfo(path).Length;
            if (length != FileSize)
            {
                throw new InvalidDataException($"'{path}' has {length} bytes; a CIFAR-10 binary batch has exactly {FileSize} ({RecordsPerFile} records of {RecordSize}).");
            }

            using (FileStream stream = File.OpenRead(path))
            {
                int read = stream.ReadAtLeast(file, file.Length, throwOnEndOfStream: false);
                if (read != file.Length)
                {
                    throw new InvalidDataException($"'{path}' ended after {read} of {FileSize} bytes.");
                }
            }

            for (int r = 0; r < RecordsPerFile; r++)
            {
                int index = f * RecordsPerFile + r;
                byte label = file[(long)r * RecordSize];
                if (label >= classNames.Count)
                {
                    throw new InvalidDataException($"'{path}' has label {label} in record {r}; expected 0..{classNames.Count - 1}.");
                }

                labels[index] = label;
                file.AsSpan(r * RecordSize + 1, ImageSize).CopyTo(pixels.AsSpan(index * ImageSize, ImageSize));
            }
        }

        return new ImageDataset(3, Side, Side, pixels, labels, classNames);
    }

    /// <summary>The ten names of batches.meta.txt (one per line, blank lines ignored), or the standard names.</summary>
    public static IReadOnlyList<string> ReadClassNames(string directory)
    {
        string path = Path.Combine(directory, "batches.meta.txt");
        if (!File.Exists(path))
        {
            return StandardClassNames;
        }

        string[] names = File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length != StandardClassNames.Count)
        {
            throw new InvalidDataException($"'{path}' lists {names.Length} class names; expected {StandardClassNames.Count}.");
        }

        return names;
    }
}
