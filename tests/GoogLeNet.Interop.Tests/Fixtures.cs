using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace GoogLeNet.Interop.Tests;

/// <summary>Paths and expected values of the files made by Fixtures/make_fixtures.py.</summary>
internal static class Fixtures
{
    public static string PathOf(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    public sealed record ExpectedTensor(TensorDType DType, long[] Shape, float[] Values);

    public sealed record ExpectedFile(string[] Order, Dictionary<string, ExpectedTensor> Tensors, Dictionary<string, string> Metadata);

    public static ExpectedFile Expected(string fixture)
    {
        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(PathOf("expected.json")));
        JsonElement file = document.RootElement.GetProperty(fixture);
        string[] order = file.GetProperty("order").EnumerateArray().Select(e => e.GetString()!).ToArray();
        var tensors = new Dictionary<string, ExpectedTensor>();
        foreach (JsonProperty t in file.GetProperty("tensors").EnumerateObject())
        {
            tensors[t.Name] = new ExpectedTensor(
                Enum.Parse<TensorDType>(t.Value.GetProperty("dtype").GetString()!),
                t.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                // Each value is a float32 printed exactly as a double, so the cast is exact.
                t.Value.GetProperty("values").EnumerateArray().Select(e => (float)e.GetDouble()).ToArray());
        }
        var metadata = new Dictionary<string, string>();
        if (file.TryGetProperty("metadata", out JsonElement m))
        {
            foreach (JsonProperty p in m.EnumerateObject())
            {
                metadata[p.Name] = p.Value.GetString()!;
            }
        }
        return new ExpectedFile(order, tensors, metadata);
    }

    public static void AssertMatches(ExpectedFile expected, IReadOnlyList<NamedTensor> actual)
    {
        Assert.Equal(expected.Order, actual.Select(t => t.Name).ToArray());
        foreach (NamedTensor tensor in actual)
        {
            ExpectedTensor e = expected.Tensors[tensor.Name];
            Assert.Equal(e.DType, tensor.DType);
            Assert.Equal(e.Shape, tensor.Shape);
            AssertBitEqual(e.Values, tensor.Values, tensor.Name);
        }
    }

    public static void AssertBitEqual(float[] expected, float[] actual, string name)
    {
        Assert.True(expected.Length == actual.Length, $"{name}: expected {expected.Length} values, found {actual.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            int e = BitConverter.SingleToInt32Bits(expected[i]);
            int a = BitConverter.SingleToInt32Bits(actual[i]);
            Assert.True(e == a, $"{name}[{i}]: expected {expected[i]} (0x{e:X8}), found {actual[i]} (0x{a:X8})");
        }
    }

    /// <summary>A torch.save-shaped zip: &lt;archive&gt;/data.pkl, &lt;archive&gt;/data/&lt;key&gt;, &lt;archive&gt;/version.</summary>
    public static byte[] MakePth(byte[] pickle, IReadOnlyDictionary<string, byte[]>? storages = null, string archive = "archive")
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            Add(zip, archive + "/data.pkl", pickle);
            foreach (KeyValuePair<string, byte[]> s in storages ?? new Dictionary<string, byte[]>())
            {
                Add(zip, archive + "/data/" + s.Key, s.Value);
            }
            Add(zip, archive + "/version", Encoding.ASCII.GetBytes("3\n"));
        }
        return buffer.ToArray();
    }

    private static void Add(ZipArchive zip, string name, byte[] bytes)
    {
        using Stream s = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
        s.Write(bytes);
    }

    /// <summary>Reads the data.pkl and storages back out of a .pth so a test can alter the pickle alone.</summary>
    public static (byte[] Pickle, Dictionary<string, byte[]> Storages) SplitPth(string path)
    {
        using ZipArchive zip = ZipFile.OpenRead(path);
        byte[] pickle = [];
        var storages = new Dictionary<string, byte[]>();
        foreach (ZipArchiveEntry entry in zip.Entries)
        {
            using var s = new MemoryStream();
            using (Stream e = entry.Open())
            {
                e.CopyTo(s);
            }
            string[] parts = entry.FullName.Split('/');
            if (parts.Length == 2 && parts[1] == "data.pkl")
            {
                pickle = s.ToArray();
            }
            else if (parts.Length == 3 && parts[1] == "data")
            {
                storages[parts[2]] = s.ToArray();
            }
        }
        return (pickle, storages);
    }
}

/// <summary>A temporary folder deleted with the test.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "googlenet-interop-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>Writes pickle opcodes by name, for hand-made state_dicts and malformed pickles.</summary>
internal sealed class PickleWriter
{
    private readonly MemoryStream _bytes = new();

    public PickleWriter Op(byte opcode)
    {
        _bytes.WriteByte(opcode);
        return this;
    }

    public PickleWriter Raw(params byte[] bytes)
    {
        _bytes.Write(bytes);
        return this;
    }

    public PickleWriter Proto() => Raw(0x80, 2);

    public PickleWriter Str(string s)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(s);
        Op((byte)'X').Raw(BitConverter.GetBytes((uint)utf8.Length));
        return Raw(utf8);
    }

    public PickleWriter Int(int v) => Op((byte)'J').Raw(BitConverter.GetBytes(v));

    public PickleWriter Global(string module, string name) => Op((byte)'c').Raw(Encoding.ASCII.GetBytes(module + "\n" + name + "\n"));

    public PickleWriter Mark() => Op((byte)'(');

    public PickleWriter Tuple() => Op((byte)'t');

    public PickleWriter IntTuple(params int[] values)
    {
        Mark();
        foreach (int v in values)
        {
            Int(v);
        }
        return Tuple();
    }

    /// <summary>Pushes _rebuild_tensor_v2(storage(key, dtype, count), offset, size, stride, False, OrderedDict()).</summary>
    public PickleWriter Tensor(string key, string storageType, long count, int offset, int[] size, int[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2").Mark();
        Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu");
        _ = count is >= int.MinValue and <= int.MaxValue ? Int((int)count) : Op(0x8a).Raw(8).Raw(BitConverter.GetBytes(count)); // LONG1
        Tuple().Op((byte)'Q');
        Int(offset).IntTuple(size).IntTuple(stride).Op(0x89);
        Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R');
        return Tuple().Op((byte)'R');
    }

    public byte[] ToArray() => _bytes.ToArray();
}
