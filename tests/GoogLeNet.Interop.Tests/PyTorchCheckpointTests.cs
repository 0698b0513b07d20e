using System.Text;

namespace GoogLeNet.Interop.Tests;

public sealed class PyTorchCheckpointTests
{
    private const string PwnedFile = "/tmp/googlenet_interop_pwned";

    [Theory]
    [InlineData("state_dict.pth")]
    [InlineData("wrapped.pth")]
    [InlineData("legacy.pth")]
    [InlineData("legacy_state_dict.pth")]
    [InlineData("dataparallel.pth")]
    public void ReadsTorchSaveFilesExactly(string fixture)
    {
        IReadOnlyList<NamedTensor> tensors = PyTorchCheckpoint.Read(Fixtures.PathOf(fixture));
        Fixtures.AssertMatches(Fixtures.Expected(fixture), tensors);
    }

    [Fact]
    public void GathersNonContiguousViewsAndKeepsIntegerTypes()
    {
        IReadOnlyList<NamedTensor> tensors = PyTorchCheckpoint.Read(Fixtures.PathOf("state_dict.pth"));
        NamedTensor transposed = tensors.Single(t => t.Name == "3.weight");
        Assert.Equal([5L, 6L], transposed.Shape);
        NamedTensor counter = tensors.Single(t => t.Name == "1.num_batches_tracked");
        Assert.Equal(TensorDType.I64, counter.DType);
        Assert.Empty(counter.Shape);
        Assert.Equal((float)1234567890123L, counter.Values[0]);
    }

    [Theory]
    [InlineData("malicious_os_system.pth", "global 'os.system' is not allowed")]
    [InlineData("malicious_reduce.pth", "global 'posix.system' is not allowed")]
    public void RejectsForbiddenGlobalsWithoutRunningThem(string fixture, string expected)
    {
        File.Delete(PwnedFile);
        string path = Fixtures.PathOf(fixture);
        InvalidDataException ex = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Read(path));
        Assert.Contains(expected, ex.Message);
        Assert.Contains(path, ex.Message);
        Assert.False(File.Exists(PwnedFile));
    }

    [Fact]
    public void LegacyFileCutShortOrExtendedIsRejectedNamingTheStorage()
    {
        byte[] legacy = File.ReadAllBytes(Fixtures.PathOf("legacy.pth"));
        // The fixture ends with one storage: 8 bytes of element count (6), then 6 floats.
        Assert.Contains("needs 24 bytes from byte 346, but the file ends at byte 369: it is truncated",
            ReadBytesExpectingError(legacy[..^1]).Message);
        Assert.Contains("found 1 more bytes", ReadBytesExpectingError([.. legacy, 0]).Message);

        byte[] wrongCount = (byte[])legacy.Clone();
        wrongCount[338] = 7;
        Assert.Contains("holds 7 elements, but the pickle declared 6", ReadBytesExpectingError(wrongCount).Message);
    }

    [Fact]
    public void LegacyStorageCountWhoseByteSizeOverflowsIsTruncationNotAnEmptyStorage()
    {
        // 2^62 floats are 2^64 bytes, which wraps to 0 in 64-bit arithmetic.
        const long Count = 1L << 62;
        byte[] file =
        [
            0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E,
            0x80, 0x02, (byte)'M', 0xE9, 0x03, (byte)'.',
            .. new PickleWriter().Proto().Op((byte)'}').Str("little_endian").Op(0x88).Op((byte)'s').Op((byte)'.').ToArray(),
            .. new PickleWriter().Proto().Op((byte)'}').Str("w").Tensor("0", "FloatStorage", Count, 0, [1], [1]).Op((byte)'s').Op((byte)'.').ToArray(),
            .. new PickleWriter().Proto().Op((byte)']').Str("0").Op((byte)'a').Op((byte)'.').ToArray(),
            .. BitConverter.GetBytes(Count),
        ];
        Assert.Contains("it is truncated", ReadBytesExpectingError(file).Message);
    }

    [Fact]
    public void PlainPickleIsNeitherFormat()
    {
        byte[] pickle = new PickleWriter().Proto().Op((byte)'}').Op((byte)'.').ToArray();
        Assert.Contains("found a pickle of something else", ReadBytesExpectingError(pickle).Message);
    }

    [Fact]
    public void WholePickledModelIsRejectedWithTheStateDictHint()
    {
        File.Delete(PwnedFile);
        InvalidDataException ex = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Read(Fixtures.PathOf("whole_model.pth")));
        Assert.Contains("global 'torch.nn.modules.linear.Linear' is not allowed", ex.Message);
        Assert.Contains("the file holds a whole pickled model, not a state_dict", ex.Message);
    }

    [Fact]
    public void RejectsAForbiddenGlobalBeforeReadingAnyStorage()
    {
        // The tensor comes first and its storage entry is missing: the global must be the reported problem.
        byte[] pickle = new PickleWriter().Proto().Op((byte)'}').Str("w").Tensor("0", "FloatStorage", 1, 0, [1], [1]).Op((byte)'s')
            .Str("x").Global("builtins", "eval").Str("1").Op(0x85).Op((byte)'R').Op((byte)'s').Op((byte)'.').ToArray();
        InvalidDataException ex = ReadBytesExpectingError(Fixtures.MakePth(pickle));
        Assert.Contains("global 'builtins.eval' is not allowed", ex.Message);
    }

    [Fact]
    public void RejectsForbiddenStackGlobal()
    {
        byte[] pickle = new PickleWriter().Proto().Str("subprocess").Str("call").Op(0x93).Op((byte)'.').ToArray();
        Assert.Contains("global 'subprocess.call' is not allowed", ReadBytesExpectingError(Fixtures.MakePth(pickle)).Message);
    }

    [Fact]
    public void ReadsAHandMadeStateDictWithOffsetAndStrides()
    {
        // Storage 0..11; w is the 2x3 view at offset 1 with strides (4, 2): elements 1,3,5 / 5,7,9.
        byte[] storage = new byte[12 * 4];
        for (int i = 0; i < 12; i++)
        {
            BitConverter.GetBytes((float)i).CopyTo(storage, i * 4);
        }
        byte[] pickle = new PickleWriter().Proto().Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R')
            .Str("w").Tensor("0", "FloatStorage", 12, 1, [2, 3], [4, 2]).Op((byte)'s').Op((byte)'.').ToArray();
        using var folder = new TempFolder();
        string path = folder.File("hand.pth");
        File.WriteAllBytes(path, Fixtures.MakePth(pickle, new Dictionary<string, byte[]> { ["0"] = storage }, "some_other_name"));
        NamedTensor w = Assert.Single(PyTorchCheckpoint.Read(path));
        Assert.Equal([2L, 3L], w.Shape);
        Assert.Equal([1f, 3f, 5f, 5f, 7f, 9f], w.Values);
    }

    public static TheoryData<string, byte[], int, string> MalformedPickles => new()
    {
        { "missing memo", new PickleWriter().Proto().Op((byte)'h').Raw(5).Op((byte)'.').ToArray(), 0, "memo entry 5" },
        { "long memo", new PickleWriter().Proto().Op((byte)'j').Raw(0xFF, 0xFF, 0xFF, 0xFF).Op((byte)'.').ToArray(), 0, "memo entry 4294967295" },
        { "underflow", new PickleWriter().Proto().Op((byte)'s').Op((byte)'.').ToArray(), 0, "stack, found it empty" },
        { "below mark", new PickleWriter().Proto().Op((byte)'}').Op((byte)'(').Op((byte)'0').Op((byte)'.').ToArray(), 0, "stack, found it empty" },
        { "no mark", new PickleWriter().Proto().Op((byte)'t').Op((byte)'.').ToArray(), 0, "MARK" },
        { "huge string", new PickleWriter().Proto().Op((byte)'X').Raw(0xFF, 0xFF, 0xFF, 0xFF).ToArray(), 0, "found 4294967295" },
        { "huge long", new PickleWriter().Proto().Op(0x8b).Raw(0xFF, 0xFF, 0xFF, 0x7F).ToArray(), 0, "found 2147483647" },
        { "no stop", new PickleWriter().Proto().Op((byte)'}').ToArray(), 0, "STOP" },
        { "unknown opcode", new PickleWriter().Proto().Op((byte)'i').ToArray(), 0, "unsupported opcode 0x69" },
        { "not a dict", new PickleWriter().Proto().Op((byte)']').Op((byte)'.').ToArray(), 0, "expected a dict" },
        { "non-tensor", new PickleWriter().Proto().Op((byte)'}').Str("epoch").Int(3).Op((byte)'s').Op((byte)'.').ToArray(), 0, "key 'epoch'" },
        { "offset past storage", StateDict("FloatStorage", 4, 4, [1], [1]), 16, "past its storage of 4" },
        { "stride past storage", StateDict("FloatStorage", 4, 0, [2, 2], [3, 1]), 16, "reaches element 4" },
        { "broadcast view", StateDict("FloatStorage", 4, 0, [1000000000, 4], [0, 1]), 16, "at most its storage's 4" },
        { "storage size mismatch", StateDict("FloatStorage", 4, 0, [4], [1]), 12, "holds 12 bytes" },
        { "missing storage", StateDict("FloatStorage", 4, 0, [4], [1]), -1, "storage entry 'archive/data/0'" },
        { "huge storage", StateDict("FloatStorage", int.MaxValue, 0, [4], [1]), 16, "expected at most" },
        { "unknown storage", StateDict("QInt8Storage", 4, 0, [4], [1]), 4, "not allowed" },
        { "garbled global", new PickleWriter().Proto().Global("os\u0001", "system").Op((byte)'.').ToArray(), 0, "found 'os\\u0001' and 'system'" },
        { "stack bomb", [0x80, 2, .. Enumerable.Repeat((byte)'N', (1 << 20) + 1)], 0, "at most 1048576 values" },
        {
            "storage redeclared",
            new PickleWriter().Proto().Op((byte)'}').Str("a").Tensor("0", "FloatStorage", 1, 0, [1], [1]).Op((byte)'s')
                .Str("b").Tensor("0", "FloatStorage", 1000, 0, [1000], [1]).Op((byte)'s').Op((byte)'.').ToArray(),
            4,
            "declared as 1 F32 elements before"
        },
        { "size/stride rank", StateDict("FloatStorage", 4, 0, [2, 2], [1]), 16, "as many strides" },
    };

    [Theory]
    [MemberData(nameof(MalformedPickles))]
    public void RejectsMalformedPicklesWithAClearError(string name, byte[] pickle, int storageBytes, string expected)
    {
        var storages = storageBytes >= 0 ? new Dictionary<string, byte[]> { ["0"] = new byte[storageBytes] } : null;
        InvalidDataException ex = ReadBytesExpectingError(Fixtures.MakePth(pickle, storages));
        Assert.True(ex.Message.Contains(expected, StringComparison.Ordinal), $"{name}: expected '{expected}' in: {ex.Message}");
    }

    [Fact]
    public void RejectsStateDictsThatViewOneStorageOverAndOver()
    {
        var pickle = new PickleWriter().Proto().Op((byte)'}').Str("w0").Tensor("0", "FloatStorage", 1024, 0, [1024], [1])
            .Op((byte)'q').Raw(1).Op((byte)'s');
        for (int i = 1; i < 2000; i++)
        {
            pickle.Str("w" + i).Op((byte)'h').Raw(1).Op((byte)'s');
        }
        byte[] pth = Fixtures.MakePth(pickle.Op((byte)'.').ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4096] });
        Assert.Contains("expected at most 4 times their storages' 1024", ReadBytesExpectingError(pth).Message);
    }

    [Theory]
    [InlineData(new byte[0], "an empty file")]
    [InlineData(new byte[] { 1, 2, 3, 4, 5 }, "starting with 'PK")]
    [InlineData(new byte[] { (byte)'P', (byte)'K', 3, 4, 0, 0 }, "not a valid torch.save archive")]
    public void RejectsFilesThatAreNotArchives(byte[] bytes, string expected)
    {
        Assert.Contains(expected, ReadBytesExpectingError(bytes).Message);
    }

    [Fact]
    public void RejectsArchivesWithoutDataPkl()
    {
        byte[] zip = Fixtures.MakePth([0x80, 2, (byte)'}', (byte)'.'], archive: "a/b");
        Assert.Contains("data.pkl entry, found none", ReadBytesExpectingError(zip).Message);
    }

    private static byte[] StateDict(string storageType, int count, int offset, int[] size, int[] stride) =>
        new PickleWriter().Proto().Op((byte)'}').Str("w").Tensor("0", storageType, count, offset, size, stride)
            .Op((byte)'s').Op((byte)'.').ToArray();

    private static InvalidDataException ReadBytesExpectingError(byte[] bytes)
    {
        using var folder = new TempFolder();
        string path = folder.File("test.pth");
        File.WriteAllBytes(path, bytes);
        InvalidDataException ex = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Read(path));
        Assert.Contains(path, ex.Message);
        return ex;
    }
}
