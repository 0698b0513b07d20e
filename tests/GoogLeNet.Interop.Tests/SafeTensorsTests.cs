using System.Buffers.Binary;
using System.Text;

namespace GoogLeNet.Interop.Tests;

public sealed class SafeTensorsTests
{
    [Fact]
    public void ReadsTheReferenceFileExactly()
    {
        Fixtures.ExpectedFile expected = Fixtures.Expected("reference.safetensors");
        SafeTensorsFile file = SafeTensors.Read(Fixtures.PathOf("reference.safetensors"));
        Fixtures.AssertMatches(expected, file.Tensors);
        Assert.Equal(expected.Metadata, file.Metadata);
    }

    [Fact]
    public void RoundTripIsBitExact()
    {
        var random = new Random(1234);
        float[] specials = [0f, -0f, float.Epsilon, -float.Epsilon, float.MaxValue, float.MinValue,
            float.PositiveInfinity, float.NegativeInfinity, BitConverter.Int32BitsToSingle(0x7FC12345), 1e-40f];
        NamedTensor[] tensors =
        [
            new("conv1.weight", [8, 3, 7, 7], RandomValues(random, 8 * 3 * 7 * 7)),
            new("specials", [specials.Length], specials),
            new("bn.num_batches_tracked", [], [123456f], TensorDType.I64),
            new("big.count", [3], [-16777216f, 0f, 1099511627776f], TensorDType.I64),
            new("empty", [0, 4], []),
            new("scalar", [], [3.5f]),
            new("from.half", [2], [0.5f, -2f], TensorDType.F16),
        ];
        var metadata = new Dictionary<string, string> { ["epoch"] = "7", ["note"] = "ü\"\\\n" };
        using var folder = new TempFolder();
        string path = folder.File("model.safetensors");

        SafeTensors.Write(path, tensors, metadata);
        SafeTensorsFile read = SafeTensors.Read(path);

        Assert.Equal(tensors.Select(t => t.Name), read.Tensors.Select(t => t.Name));
        for (int i = 0; i < tensors.Length; i++)
        {
            Assert.Equal(tensors[i].Shape, read.Tensors[i].Shape);
            Fixtures.AssertBitEqual(tensors[i].Values, read.Tensors[i].Values, tensors[i].Name);
        }
        Assert.Equal(TensorDType.I64, read.Tensors[2].DType);
        Assert.Equal(TensorDType.F32, read.Tensors[6].DType);
        Assert.Equal(metadata, read.Metadata);
        Assert.Equal(0, (8 + HeaderLength(path)) % 8);
    }

    [Fact]
    public void RewritingTheReferenceFileKeepsValuesAndIntegerTypes()
    {
        SafeTensorsFile original = SafeTensors.Read(Fixtures.PathOf("reference.safetensors"));
        using var folder = new TempFolder();
        string path = folder.File("copy.safetensors");
        SafeTensors.Write(path, original.Tensors, original.Metadata);
        SafeTensorsFile copy = SafeTensors.Read(path);

        for (int i = 0; i < original.Tensors.Count; i++)
        {
            NamedTensor a = original.Tensors[i];
            NamedTensor b = copy.Tensors.Single(t => t.Name == a.Name);
            Assert.Equal(a.Shape, b.Shape);
            Fixtures.AssertBitEqual(a.Values, b.Values, a.Name);
            Assert.Equal(a.DType is TensorDType.F16 or TensorDType.BF16 or TensorDType.F64 ? TensorDType.F32 : a.DType, b.DType);
        }
        Assert.Equal(original.Metadata, copy.Metadata);
    }

    [Fact]
    public void WriteReplacesAtomicallyAndLeavesNoTemporaryFiles()
    {
        using var folder = new TempFolder();
        string path = folder.File("state.safetensors");
        SafeTensors.Write(path, [new NamedTensor("a", [2], [1f, 2f])], null);
        SafeTensors.Write(path, [new NamedTensor("b", [1], [3f])], null);
        Assert.Equal("b", Assert.Single(SafeTensors.Read(path).Tensors).Name);

        byte[] before = File.ReadAllBytes(path);
        Assert.Throws<ArgumentException>(() =>
            SafeTensors.Write(path, [new NamedTensor("count", [1], [0.5f], TensorDType.I64)], null));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(folder.Path));
    }

    [Fact]
    public void WriteIntoAMissingFolderNamesTheFolderNotATemporaryFile()
    {
        using var folder = new TempFolder();
        string path = Path.Combine(folder.Path, "absent", "state.safetensors");
        var e = Assert.Throws<DirectoryNotFoundException>(() => SafeTensors.Write(path, [new NamedTensor("a", [1], [1f])], null));
        Assert.Equal($"Cannot write '{path}': the folder '{Path.Combine(folder.Path, "absent")}' does not exist.", e.Message);
    }

    [Fact]
    public void WriteRejectsDuplicateOrReservedNamesAndStaleShapes()
    {
        using var folder = new TempFolder();
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(folder.File("x"),
            [new NamedTensor("a", [1], [1f]), new NamedTensor("a", [1], [2f])], null));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(folder.File("x"),
            [new NamedTensor("__metadata__", [1], [1f])], null));
        var reshaped = new NamedTensor("r", [2], [1f, 2f]);
        reshaped.Shape[0] = 3;
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(folder.File("x"), [reshaped], null));
        Assert.Empty(Directory.GetFiles(folder.Path));
    }

    public static TheoryData<string, int, string> InvalidHeaders => new()
    {
        { """[1]""", 0, "start with '{'" },
        { """ {"a":1}""", 0, "start with '{'" },
        { """{"a":""", 0, "invalid JSON" },
        { """{"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}""", 1, "found 'F8'" },
        { """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "needs 8 bytes" },
        { """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "a gap" },
        { """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "an overlap" },
        { """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 6, "2 trailing" },
        { """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "past the 4-byte data section" },
        { """{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}""", 4, "overflows" },
        { """{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}}""", 4, "overflows a 64-bit byte count" },
        { """{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4, "non-negative integers in 'shape'" },
        { """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", 4, "begin <= end" },
        { """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}""", 4, "2 entries" },
        { """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "'a' twice" },
        { """{"__metadata__":{"k":1}}""", 0, "to be a string" },
        { """{"__metadata__":[]}""", 0, "object of strings" },
        { """{"a":[]}""", 0, "expected an object" },
    };

    [Theory]
    [MemberData(nameof(InvalidHeaders))]
    public void RejectsInvalidHeadersNamingFileAndProblem(string header, int dataBytes, string expected)
    {
        using var folder = new TempFolder();
        string path = folder.File("bad.safetensors");
        byte[] json = Encoding.UTF8.GetBytes(header);
        File.WriteAllBytes(path, [.. LengthPrefix((ulong)json.Length), .. json, .. new byte[dataBytes]]);
        InvalidDataException ex = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains(expected, ex.Message);
    }

    [Theory]
    [InlineData(0UL, "start with '{'")]
    [InlineData(100_000_001UL, "at most 100000000")]
    [InlineData(ulong.MaxValue, "at most 100000000")]
    [InlineData(1000UL, "only 8 bytes follow")]
    public void RejectsBadHeaderLengthsBeforeAllocating(ulong declared, string expected)
    {
        using var folder = new TempFolder();
        string path = folder.File("bad.safetensors");
        File.WriteAllBytes(path, [.. LengthPrefix(declared), .. "{}      "u8.ToArray()]);
        InvalidDataException ex = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void RejectsFilesShorterThanTheLengthPrefix()
    {
        using var folder = new TempFolder();
        string path = folder.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Contains("at least 8 bytes", Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path)).Message);
    }

    [Fact]
    public void ReadsAnEmptyFileOfNoTensors()
    {
        using var folder = new TempFolder();
        string path = folder.File("empty.safetensors");
        SafeTensors.Write(path, [], null);
        SafeTensorsFile file = SafeTensors.Read(path);
        Assert.Empty(file.Tensors);
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void AcceptsNullMetadataAsTheReferenceReaderDoes()
    {
        using var folder = new TempFolder();
        string path = folder.File("null.safetensors");
        byte[] json = "{\"__metadata__\":null}   "u8.ToArray();
        File.WriteAllBytes(path, [.. LengthPrefix((ulong)json.Length), .. json]);
        Assert.Empty(SafeTensors.Read(path).Metadata);
    }

    private static byte[] LengthPrefix(ulong length)
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        return bytes;
    }

    private static long HeaderLength(string path) =>
        (long)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path).AsSpan(0, 8));

    private static float[] RandomValues(Random random, int count)
    {
        float[] values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = (float)(random.NextDouble() * 2 - 1);
        }
        return values;
    }
}
