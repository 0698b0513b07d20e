using System.IO.Compression;
using System.Text;
using static GoogLeNet.Interop.RestrictedUnpickler;

namespace GoogLeNet.Interop;

/// <summary>
/// Reads the tensors of a PyTorch <c>.pth</c> file written by <c>torch.save</c>: the zip format of PyTorch 1.6
/// and later, and the legacy format before it (a row of pickles followed by the raw storages), in which
/// torchvision's older pretrained weights were published. Pickles are interpreted by a restricted unpickler
/// that builds data only and rejects every global a state_dict does not need, so a <c>.pth</c> can never
/// execute anything.
/// </summary>
public static class PyTorchCheckpoint
{
    /// <summary>Keys under which training scripts commonly wrap the model's state_dict, in priority order.</summary>
    private static readonly string[] WrapperKeys = ["state_dict", "model_state_dict", "model"];

    private const long MaxElementsPerStorageElement = 4;

    // A state_dict pickle takes about 100 bytes per tensor; 64 MB is far beyond any model's and bounds the work.
    private const long MaxPickleBytes = 64L << 20;

    // The legacy format's first pickle: protocol 2, LONG1 of 10 bytes holding 0x1950A86A20F9469CFC6C, STOP.
    private static ReadOnlySpan<byte> LegacyMagic =>
        [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E];

    private const long LegacyProtocolVersion = 1001;

    /// <summary>
    /// Returns the tensors of a state_dict in file order. The file may hold the state_dict itself or a dict
    /// wrapping it under "state_dict", "model_state_dict" or "model"; the "module." prefix that
    /// DataParallel puts on every key is removed.
    /// </summary>
    public static IReadOnlyList<NamedTensor> Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (IsLegacy(path, stream))
        {
            return StripDataParallelPrefix(ReadLegacy(path, stream));
        }
        using ZipArchive zip = Zip(path, () => new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true));
        return StripDataParallelPrefix(ReadArchive(path, zip));
    }

    private static IReadOnlyList<NamedTensor> StripDataParallelPrefix(IReadOnlyList<NamedTensor> tensors)
    {
        const string Prefix = "module.";
        if (tensors.Count == 0 || !tensors.All(t => t.Name.StartsWith(Prefix, StringComparison.Ordinal)))
        {
            return tensors;
        }
        return tensors.Select(t => new NamedTensor(t.Name[Prefix.Length..], t.Shape, t.Values, t.DType)).ToList();
    }

    /// <summary>Runs a ZipArchive operation, reporting its corruption errors (of several types) as InvalidDataException naming the file.</summary>
    private static T Zip<T>(string path, Func<T> operation)
    {
        try
        {
            return operation();
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or ArgumentException or NotSupportedException or OverflowException)
        {
            throw new InvalidDataException($"'{path}' is not a valid torch.save archive: {ex.Message}", ex);
        }
    }

    /// <summary>True for the legacy format, false for a zip archive; anything else is an error.</summary>
    private static bool IsLegacy(string path, FileStream stream)
    {
        Span<byte> head = stackalloc byte[LegacyMagic.Length];
        int read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        stream.Position = 0;
        if (read >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] == 3 && head[3] == 4)
        {
            return false;
        }
        if (read == LegacyMagic.Length && head.SequenceEqual(LegacyMagic))
        {
            return true;
        }
        if (read >= 1 && head[0] == 0x80)
        {
            throw new InvalidDataException(
                $"'{path}': expected torch.save's zip archive or its legacy format (a pickle of the magic number 0x1950A86A20F9469CFC6C first), found a pickle of something else; a state_dict written with pickle.dump cannot be read");
        }
        string found = read == 0 ? "an empty file" : Convert.ToHexString(head[..Math.Min(read, 4)]);
        throw new InvalidDataException($"'{path}': expected a torch.save zip archive starting with 'PK\\x03\\x04' or a legacy torch.save file starting with 0x80 0x02, found {found}");
    }

    /// <summary>
    /// The legacy format: pickles of the magic number, the protocol version (1001) and the system's sizes and
    /// byte order, then the object, then the list of storage keys; then, for each key in that order, the
    /// storage's element count as a little-endian int64 followed by its raw bytes.
    /// </summary>
    private static IReadOnlyList<NamedTensor> ReadLegacy(string path, FileStream stream)
    {
        if (stream.Length > Array.MaxLength)
        {
            throw new InvalidDataException($"'{path}' holds {stream.Length} bytes; legacy .pth files of at most {Array.MaxLength} bytes can be read");
        }
        byte[] file = new byte[stream.Length];
        stream.ReadExactly(file);
        string source = $"'{path}' (legacy format)";

        int position = LegacyMagic.Length;
        object? version = RestrictedUnpickler.Load(file, position, source, out position, out _);
        if (version is not long v || v != LegacyProtocolVersion)
        {
            throw new InvalidDataException($"{source}: expected protocol version {LegacyProtocolVersion}, found {DescribeValue(version)}");
        }
        object? systemInfo = RestrictedUnpickler.Load(file, position, source, out position, out _);
        if (systemInfo is not PickleDict info || !info.TryGet("little_endian", out object? little) || little is not bool)
        {
            throw new InvalidDataException($"{source}: expected a dict of system information with 'little_endian', found {DescribeValue(systemInfo)}");
        }
        if (little is false)
        {
            throw new InvalidDataException($"{source}: expected little-endian storages, found a file written on a big-endian machine");
        }
        object? root = RestrictedUnpickler.Load(file, position, source, out position, out IReadOnlyDictionary<string, StorageRef> declared);
        object? keyList = RestrictedUnpickler.Load(file, position, source, out position, out _);
        if (keyList is not List<object?> keys)
        {
            throw new InvalidDataException($"{source}: expected the list of storage keys after the object, found {DescribeValue(keyList)}");
        }

        // Every storage is written, in the order of the key list, whether or not the state_dict uses it.
        var slices = new Dictionary<string, (int Offset, int Length)>(StringComparer.Ordinal);
        foreach (object? item in keys)
        {
            if (item is not string key || !declared.TryGetValue(key, out StorageRef? storage))
            {
                throw new InvalidDataException($"{source}: storage key {DescribeValue(item)} at byte {position} was not declared by the object's pickle");
            }
            if (file.Length - position < sizeof(long))
            {
                throw new InvalidDataException($"{source}: storage '{key}' starts at byte {position}, but the file ends at byte {file.Length}: it is truncated");
            }
            long count = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(position));
            if (count != storage.ElementCount)
            {
                throw new InvalidDataException($"{source}: storage '{key}' at byte {position} holds {count} elements, but the pickle declared {storage.ElementCount}");
            }
            position += sizeof(long);
            int elementSize = TensorDTypes.SizeOf(storage.DType);
            // Compared by division: a hostile count times the element size could overflow.
            if (count > (file.Length - position) / elementSize)
            {
                long bytes = count > long.MaxValue / elementSize ? long.MaxValue : count * elementSize;
                throw new InvalidDataException(
                    $"{source}: storage '{key}' needs {bytes} bytes from byte {position}, but the file ends at byte {file.Length}: it is truncated");
            }
            int length = (int)count * elementSize;
            if (!slices.TryAdd(key, (position, length)))
            {
                throw new InvalidDataException($"{source}: storage key '{key}' is listed twice");
            }
            position += length;
        }
        if (position != file.Length)
        {
            throw new InvalidDataException($"{source}: expected the file to end after its last storage at byte {position}, found {file.Length - position} more bytes");
        }

        return ReadTensors(path, root, storage =>
        {
            if (!slices.TryGetValue(storage.Key, out (int Offset, int Length) slice))
            {
                throw new InvalidDataException($"{source}: storage '{storage.Key}' is not in the file's list of storages");
            }
            if (declared[storage.Key] != storage)
            {
                // The slice was sized by the first declaration; the tensors' bounds checks trust this one.
                throw new InvalidDataException(
                    $"{source}: storage '{storage.Key}' is declared as {storage.ElementCount} {storage.DType} elements, but as {declared[storage.Key].ElementCount} {declared[storage.Key].DType} elements before");
            }
            return file.AsSpan(slice.Offset, slice.Length).ToArray();
        });
    }

    private static IReadOnlyList<NamedTensor> ReadArchive(string path, ZipArchive zip)
    {
        string prefix = FindArchivePrefix(path, zip);
        ZipArchiveEntry? byteOrder = Zip(path, () => zip.GetEntry(prefix + "byteorder"));
        if (byteOrder is not null)
        {
            string order = Encoding.ASCII.GetString(ReadEntry(path, byteOrder, 16)).Trim();
            if (order != "little")
            {
                throw new InvalidDataException($"'{path}': expected byteorder 'little', found '{order}'");
            }
        }

        ZipArchiveEntry pickleEntry = Zip(path, () => zip.GetEntry(prefix + "data.pkl"))!;
        object? root = Load(ReadEntry(path, pickleEntry, MaxPickleBytes), $"'{path}' ({pickleEntry.FullName})");
        return ReadTensors(path, root, storage => ReadStorage(path, zip, prefix, storage));
    }

    /// <summary>The state_dict's tensors, each storage read once through <paramref name="readStorage"/>.</summary>
    private static IReadOnlyList<NamedTensor> ReadTensors(string path, object? root, Func<StorageRef, byte[]> readStorage)
    {
        PickleDict stateDict = SelectStateDict(path, root);

        var storages = new Dictionary<string, (StorageRef Declared, byte[] Bytes)>(StringComparer.Ordinal);
        var tensors = new List<NamedTensor>(stateDict.Items.Count);
        long storageElements = 0;
        long tensorElements = 0;
        foreach (KeyValuePair<object?, object?> item in stateDict.Items)
        {
            if (item.Key is not string name)
            {
                throw new InvalidDataException($"'{path}': expected string keys in the state_dict, found {DescribeValue(item.Key)}");
            }
            if (item.Value is not TensorRef tensor)
            {
                throw new InvalidDataException($"'{path}': expected a tensor for state_dict key '{name}', found {DescribeValue(item.Value)}");
            }
            if (storages.TryGetValue(tensor.Storage.Key, out (StorageRef Declared, byte[] Bytes) storage))
            {
                // The bounds checks trust the declared type and size, so every reference must agree with the first.
                if (storage.Declared != tensor.Storage)
                {
                    throw new InvalidDataException(
                        $"'{path}': tensor '{name}' declares storage '{tensor.Storage.Key}' as {tensor.Storage.ElementCount} {tensor.Storage.DType} elements, but it was declared as {storage.Declared.ElementCount} {storage.Declared.DType} elements before");
                }
            }
            else
            {
                storage = (tensor.Storage, readStorage(tensor.Storage));
                storages.Add(tensor.Storage.Key, storage);
                storageElements += tensor.Storage.ElementCount;
            }
            NamedTensor read = Materialize(path, name, tensor, storage.Bytes);
            tensorElements += read.Values.Length;
            // Tied weights share a storage, so tensors may hold more elements than the storages do, but not many
            // times more: that only happens when one storage is viewed over and over to exhaust memory.
            if (tensorElements > MaxElementsPerStorageElement * storageElements + (1 << 20))
            {
                throw new InvalidDataException(
                    $"'{path}': tensors up to '{name}' hold {tensorElements} elements, expected at most {MaxElementsPerStorageElement} times their storages' {storageElements}");
            }
            tensors.Add(read);
        }
        return tensors;
    }

    private static string FindArchivePrefix(string path, ZipArchive zip)
    {
        string? prefix = null;
        IReadOnlyCollection<ZipArchiveEntry> entries = Zip(path, () => zip.Entries);
        foreach (ZipArchiveEntry entry in entries)
        {
            int slash = entry.FullName.IndexOf('/');
            if (slash > 0 && entry.FullName.AsSpan(slash + 1).SequenceEqual("data.pkl"))
            {
                if (prefix is not null)
                {
                    throw new InvalidDataException($"'{path}': expected one <archive>/data.pkl, found '{prefix}data.pkl' and '{entry.FullName}'");
                }
                prefix = entry.FullName[..(slash + 1)];
            }
        }
        if (prefix is null)
        {
            bool torchScript = entries.Any(e => e.FullName.EndsWith("/constants.pkl", StringComparison.Ordinal));
            throw new InvalidDataException(torchScript
                ? $"'{path}': expected a torch.save archive, found a TorchScript archive (torch.jit.save); save the model's state_dict instead"
                : $"'{path}': expected a torch.save archive with an <archive>/data.pkl entry, found none");
        }
        return prefix;
    }

    private static PickleDict SelectStateDict(string path, object? root)
    {
        if (root is not PickleDict dict)
        {
            throw new InvalidDataException($"'{path}': expected a dict (a state_dict or a dict wrapping one), found {DescribeValue(root)}");
        }
        foreach (string key in WrapperKeys)
        {
            if (dict.TryGet(key, out object? inner) && inner is PickleDict wrapped)
            {
                return wrapped;
            }
        }
        return dict;
    }

    private static byte[] ReadStorage(string path, ZipArchive zip, string prefix, StorageRef storage)
    {
        string entryName = prefix + "data/" + storage.Key;
        ZipArchiveEntry entry = Zip(path, () => zip.GetEntry(entryName))
            ?? throw new InvalidDataException($"'{path}': expected storage entry '{entryName}', found none");
        int elementSize = TensorDTypes.SizeOf(storage.DType);
        if (storage.ElementCount > Array.MaxLength / elementSize)
        {
            throw new InvalidDataException(
                $"'{path}': storage '{storage.Key}' declares {storage.ElementCount} elements, expected at most {Array.MaxLength / elementSize}");
        }
        long expectedBytes = storage.ElementCount * elementSize;
        if (entry.Length != expectedBytes)
        {
            throw new InvalidDataException(
                $"'{path}': storage '{storage.Key}' declares {storage.ElementCount} {storage.DType} elements ({expectedBytes} bytes), but entry '{entryName}' holds {entry.Length} bytes");
        }
        return ReadEntry(path, entry, expectedBytes);
    }

    /// <summary>Reads a whole entry after checking its declared size against <paramref name="maxBytes"/> and the compressed size.</summary>
    private static byte[] ReadEntry(string path, ZipArchiveEntry entry, long maxBytes)
    {
        // Deflate cannot expand more than about 1032:1, so a larger declared size is a lie that must not drive an allocation.
        const long MaxDeflateRatio = 1032;
        if (entry.Length > maxBytes || entry.Length > Array.MaxLength
            || (entry.Length - 64) / MaxDeflateRatio > entry.CompressedLength)
        {
            throw new InvalidDataException(
                $"'{path}': entry '{entry.FullName}' declares {entry.Length} bytes ({entry.CompressedLength} compressed), expected at most {Math.Min(maxBytes, Array.MaxLength)}");
        }
        byte[] bytes = new byte[entry.Length];
        return Zip(path, () =>
        {
            using Stream s = entry.Open();
            s.ReadExactly(bytes);
            return bytes;
        });
    }

    private static NamedTensor Materialize(string path, string name, TensorRef tensor, byte[] storageBytes)
    {
        long storageCount = tensor.Storage.ElementCount;
        long count = 1;
        long lastIndex = tensor.Offset;
        for (int d = 0; d < tensor.Size.Length; d++)
        {
            count = tensor.Size[d] == 0 || count <= long.MaxValue / tensor.Size[d] ? count * tensor.Size[d] : long.MaxValue;
            if (tensor.Size[d] > 0)
            {
                long step = (tensor.Size[d] - 1) > 0 && tensor.Stride[d] > long.MaxValue / (tensor.Size[d] - 1)
                    ? long.MaxValue
                    : (tensor.Size[d] - 1) * tensor.Stride[d];
                lastIndex = lastIndex > long.MaxValue - step ? long.MaxValue : lastIndex + step;
            }
        }
        string shape = string.Join(", ", tensor.Size);
        // A state_dict tensor never holds more elements than its storage; broadcast views would be unbounded.
        if (count > storageCount)
        {
            throw new InvalidDataException(
                $"'{path}': tensor '{name}' of shape [{shape}] has {count} elements, expected at most its storage's {storageCount}");
        }
        if (count > 0 && lastIndex >= storageCount)
        {
            throw new InvalidDataException(
                $"'{path}': tensor '{name}' of shape [{shape}], stride [{string.Join(", ", tensor.Stride)}] at offset {tensor.Offset} reaches element {lastIndex}, past its storage of {storageCount}");
        }

        float[] values = new float[count];
        if (count > 0)
        {
            if (IsRowMajor(tensor.Size, tensor.Stride))
            {
                int elementSize = TensorDTypes.SizeOf(tensor.Storage.DType);
                ReadOnlySpan<byte> source = storageBytes.AsSpan(checked((int)(tensor.Offset * elementSize)), checked((int)(count * elementSize)));
                TensorDTypes.Decode(source, tensor.Storage.DType, values);
            }
            else
            {
                Gather(storageBytes, tensor, values);
            }
        }
        // One memoized tensor may sit under several keys; each NamedTensor gets its own shape array.
        return new NamedTensor(name, (long[])tensor.Size.Clone(), values, tensor.Storage.DType);
    }

    private static bool IsRowMajor(long[] size, long[] stride)
    {
        long expected = 1;
        for (int d = size.Length - 1; d >= 0; d--)
        {
            if (size[d] != 1 && stride[d] != expected)
            {
                return false;
            }
            expected *= size[d];
        }
        return true;
    }

    /// <summary>Copies a strided view into row-major order, walking the index like an odometer.</summary>
    private static void Gather(byte[] storage, TensorRef tensor, float[] destination)
    {
        int rank = tensor.Size.Length;
        var index = new long[rank];
        long source = tensor.Offset;
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = TensorDTypes.ReadElement(storage, tensor.Storage.DType, source);
            for (int d = rank - 1; d >= 0; d--)
            {
                if (++index[d] < tensor.Size[d])
                {
                    source += tensor.Stride[d];
                    break;
                }
                source -= (tensor.Size[d] - 1) * tensor.Stride[d];
                index[d] = 0;
            }
        }
    }
}
