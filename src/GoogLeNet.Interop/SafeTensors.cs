using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace GoogLeNet.Interop;

/// <summary>The tensors of a safetensors file in data order, and its <c>__metadata__</c> strings.</summary>
public sealed class SafeTensorsFile
{
    internal SafeTensorsFile(IReadOnlyList<NamedTensor> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    public IReadOnlyList<NamedTensor> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }
}

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a JSON header, then the
/// raw little-endian tensor data. Reading validates as the reference (Hugging Face) reader does.
/// </summary>
public static class SafeTensors
{
    /// <summary>The reference reader's cap on the JSON header.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const string MetadataKey = "__metadata__";
    private const int ChunkBytes = 1 << 16;

    public static SafeTensorsFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, ChunkBytes);
        long fileLength = stream.Length;
        if (fileLength < 8)
        {
            throw Invalid(path, $"expected at least 8 bytes (the header length), found {fileLength}");
        }
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderBytes)
        {
            throw Invalid(path, $"header length is {headerLength} bytes, expected at most {MaxHeaderBytes}");
        }
        if ((long)headerLength > fileLength - 8)
        {
            throw Invalid(path, $"header length is {headerLength} bytes but only {fileLength - 8} bytes follow it");
        }
        byte[] header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)header.Length;
        long dataLength = fileLength - dataStart;

        List<Entry> entries = ParseHeader(path, header, out Dictionary<string, string> metadata);
        ValidateLayout(path, entries, dataLength);

        var tensors = new NamedTensor[entries.Count];
        byte[] chunk = new byte[ChunkBytes];
        for (int t = 0; t < entries.Count; t++)
        {
            Entry e = entries[t];
            float[] values = new float[e.ElementCount];
            int elementSize = TensorDTypes.SizeOf(e.DType);
            int perChunk = ChunkBytes / elementSize;
            stream.Position = dataStart + e.Begin;
            for (int done = 0; done < values.Length; done += perChunk)
            {
                int n = Math.Min(perChunk, values.Length - done);
                Span<byte> bytes = chunk.AsSpan(0, n * elementSize);
                stream.ReadExactly(bytes);
                TensorDTypes.Decode(bytes, e.DType, values.AsSpan(done, n));
            }
            tensors[t] = new NamedTensor(e.Name, e.Shape, values, e.DType);
        }
        return new SafeTensorsFile(tensors, metadata);
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> in the given order, atomically: a temporary file in the same folder is
    /// flushed to disk and then renamed over <paramref name="path"/>. Floating-point tensors are written as F32
    /// (lossless for values held as float32); integer tensors keep their dtype, so their values must be whole.
    /// </summary>
    public static void Write(string path, IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        List<NamedTensor> list = tensors.ToList();
        byte[] header = BuildHeader(list, metadata);

        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        if (!Directory.Exists(directory))
        {
            // Otherwise the error would name the temporary file, which the user never asked for.
            throw new DirectoryNotFoundException($"Cannot write '{path}': the folder '{directory}' does not exist.");
        }
        string temp = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, ChunkBytes))
            {
                Span<byte> prefix = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                byte[] chunk = new byte[ChunkBytes];
                foreach (NamedTensor tensor in list)
                {
                    TensorDType dtype = StoredDType(tensor.DType);
                    int elementSize = TensorDTypes.SizeOf(dtype);
                    int perChunk = ChunkBytes / elementSize;
                    for (int done = 0; done < tensor.Values.Length; done += perChunk)
                    {
                        int n = Math.Min(perChunk, tensor.Values.Length - done);
                        Span<byte> bytes = chunk.AsSpan(0, n * elementSize);
                        TensorDTypes.Encode(tensor.Values.AsSpan(done, n), dtype, bytes, tensor.Name);
                        stream.Write(bytes);
                    }
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    private static TensorDType StoredDType(TensorDType dtype) =>
        TensorDTypes.IsFloatingPoint(dtype) ? TensorDType.F32 : dtype;

    private static byte[] BuildHeader(List<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject(MetadataKey);
                foreach (KeyValuePair<string, string> pair in metadata)
                {
                    json.WriteString(pair.Key, pair.Value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (NamedTensor tensor in tensors)
            {
                ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
                // Shape is a mutable array, so check it still describes the values before it goes in a header.
                long count = 1;
                foreach (long d in tensor.Shape)
                {
                    count = d < 0 ? -1 : checked(count * d);
                }
                if (count != tensor.Values.Length)
                {
                    throw new ArgumentException(
                        $"tensor '{tensor.Name}': shape [{string.Join(", ", tensor.Shape)}] does not hold its {tensor.Values.Length} values", nameof(tensors));
                }
                if (tensor.Name == MetadataKey || !names.Add(tensor.Name))
                {
                    throw new ArgumentException($"tensor name '{tensor.Name}' is reserved or used twice", nameof(tensors));
                }
                TensorDType dtype = StoredDType(tensor.DType);
                long end = checked(offset + (long)tensor.Values.Length * TensorDTypes.SizeOf(dtype));
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", TensorDTypes.SafeTensorsName(dtype));
                json.WriteStartArray("shape");
                foreach (long d in tensor.Shape)
                {
                    json.WriteNumberValue(d);
                }
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
                offset = end;
            }
            json.WriteEndObject();
        }
        // The reference writer pads with spaces so the data section starts 8-byte aligned.
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++)
        {
            buffer.WriteByte((byte)' ');
        }
        return buffer.ToArray();
    }

    private sealed record Entry(string Name, TensorDType DType, long[] Shape, long Begin, long End, int ElementCount);

    private static List<Entry> ParseHeader(string path, byte[] header, out Dictionary<string, string> metadata)
    {
        if (header.Length == 0 || header[0] != (byte)'{')
        {
            string found = header.Length == 0 ? "an empty header" : $"byte 0x{header[0]:X2}";
            throw Invalid(path, $"expected the JSON header to start with '{{', found {found}");
        }
        if (!System.Text.Unicode.Utf8.IsValid(header))
        {
            throw Invalid(path, "expected a UTF-8 JSON header, found invalid UTF-8");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header);
        }
        catch (JsonException ex)
        {
            throw Invalid(path, $"expected a JSON header, found invalid JSON ({ex.Message})");
        }
        using (document)
        {
            metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<Entry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty property in document.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                {
                    throw Invalid(path, $"expected unique names in the header, found '{property.Name}' twice");
                }
                if (property.Name == MetadataKey && property.Value.ValueKind == JsonValueKind.Null)
                {
                    continue;
                }
                if (property.Name == MetadataKey)
                {
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                entries.Add(ParseEntry(path, property.Name, property.Value));
            }
            return entries;
        }
    }

    private static void ParseMetadata(string path, JsonElement element, Dictionary<string, string> metadata)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, $"expected {MetadataKey} to be an object of strings, found {element.ValueKind}");
        }
        foreach (JsonProperty pair in element.EnumerateObject())
        {
            if (pair.Value.ValueKind != JsonValueKind.String)
            {
                throw Invalid(path, $"expected {MetadataKey} value '{pair.Name}' to be a string, found {pair.Value.ValueKind}");
            }
            if (!metadata.TryAdd(pair.Name, pair.Value.GetString()!))
            {
                throw Invalid(path, $"expected unique {MetadataKey} keys, found '{pair.Name}' twice");
            }
        }
    }

    private static Entry ParseEntry(string path, string name, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, $"tensor '{name}': expected an object with dtype, shape and data_offsets, found {element.ValueKind}");
        }
        if (!element.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw Invalid(path, $"tensor '{name}': expected a string 'dtype'");
        }
        string dtypeName = dtypeElement.GetString()!;
        if (!TensorDTypes.TryParseSafeTensorsName(dtypeName, out TensorDType dtype))
        {
            throw Invalid(path, $"tensor '{name}': expected dtype F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL, found '{dtypeName}'");
        }
        long[] shape = ReadNonNegativeIntegers(path, name, element, "shape", expectedCount: null);
        long[] offsets = ReadNonNegativeIntegers(path, name, element, "data_offsets", expectedCount: 2);
        if (offsets[1] < offsets[0])
        {
            throw Invalid(path, $"tensor '{name}': expected data_offsets [begin, end] with begin <= end, found [{offsets[0]}, {offsets[1]}]");
        }
        long elements = 1;
        foreach (long d in shape)
        {
            if (d != 0 && elements > long.MaxValue / d)
            {
                throw Invalid(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows a 64-bit element count");
            }
            elements *= d;
        }
        int size = TensorDTypes.SizeOf(dtype);
        if (elements > long.MaxValue / size)
        {
            throw Invalid(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtypeName} overflows a 64-bit byte count");
        }
        long bytes = elements * size;
        if (bytes != offsets[1] - offsets[0])
        {
            throw Invalid(path,
                $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtypeName} needs {bytes} bytes, but data_offsets [{offsets[0]}, {offsets[1]}] span {offsets[1] - offsets[0]}");
        }
        if (elements > Array.MaxLength)
        {
            throw Invalid(path, $"tensor '{name}': expected at most {Array.MaxLength} elements, found {elements}");
        }
        return new Entry(name, dtype, shape, offsets[0], offsets[1], (int)elements);
    }

    private static long[] ReadNonNegativeIntegers(string path, string name, JsonElement element, string field, int? expectedCount)
    {
        if (!element.TryGetProperty(field, out JsonElement array) || array.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(path, $"tensor '{name}': expected an array '{field}'");
        }
        int count = array.GetArrayLength();
        if (expectedCount is int expected && count != expected)
        {
            throw Invalid(path, $"tensor '{name}': expected {expected} entries in '{field}', found {count}");
        }
        var result = new long[count];
        int i = 0;
        foreach (JsonElement item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long value) || value < 0)
            {
                throw Invalid(path, $"tensor '{name}': expected non-negative integers in '{field}', found {item.GetRawText()}");
            }
            result[i++] = value;
        }
        return result;
    }

    private static void ValidateLayout(string path, List<Entry> entries, long dataLength)
    {
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expectedBegin = 0;
        foreach (Entry e in entries)
        {
            if (e.Begin != expectedBegin)
            {
                string problem = e.Begin > expectedBegin ? "a gap" : "an overlap";
                throw Invalid(path, $"tensor '{e.Name}': expected data to begin at offset {expectedBegin}, found {e.Begin} ({problem})");
            }
            if (e.End > dataLength)
            {
                throw Invalid(path, $"tensor '{e.Name}': data_offsets end at {e.End}, past the {dataLength}-byte data section");
            }
            expectedBegin = e.End;
        }
        if (expectedBegin != dataLength)
        {
            throw Invalid(path, $"expected the tensors to cover the {dataLength}-byte data section, found {expectedBegin} bytes covered ({dataLength - expectedBegin} trailing)");
        }
    }

    private static InvalidDataException Invalid(string path, string message) =>
        new($"'{path}' is not a valid safetensors file: {message}");
}
