using System.Buffers.Binary;

namespace GoogLeNet.Interop.Tests;

/// <summary>
/// Seeded corruptions of valid files: every one must either read or throw InvalidDataException, promptly.
/// A failure message names the seed, so it can be replayed alone.
/// </summary>
public sealed class CorruptionTests
{
    private const int Seeds = 300;

    // Far above the milliseconds a read takes; only a hang or a runaway allocation gets near it.
    private static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(20);

    [Fact]
    public void CorruptSafeTensorsFilesReadOrFailCleanly()
    {
        byte[] original = File.ReadAllBytes(Fixtures.PathOf("reference.safetensors"));
        Run(original, "bad.safetensors", path => SafeTensors.Read(path), mutateFromOffset: 0);
    }

    [Fact]
    public void SafeTensorsHeadersWithAlteredNumbersReadOrFailCleanly()
    {
        byte[] original = File.ReadAllBytes(Fixtures.PathOf("reference.safetensors"));
        var failures = new List<string>();
        using var folder = new TempFolder();
        for (int seed = 0; seed < Seeds; seed++)
        {
            string path = folder.File("bad.safetensors");
            File.WriteAllBytes(path, ReplaceHeaderNumber(original, new Random(seed)));
            Check(seed, path, p => SafeTensors.Read(p), failures);
        }
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    [Fact]
    public void CorruptPthFilesReadOrFailCleanly()
    {
        byte[] original = File.ReadAllBytes(Fixtures.PathOf("state_dict.pth"));
        Run(original, "bad.pth", path => PyTorchCheckpoint.Read(path), mutateFromOffset: 0);
    }

    [Fact]
    public void CorruptLegacyPthFilesReadOrFailCleanly()
    {
        byte[] original = File.ReadAllBytes(Fixtures.PathOf("legacy_state_dict.pth"));
        Run(original, "bad.pth", path => PyTorchCheckpoint.Read(path), mutateFromOffset: 0);
    }

    [Fact]
    public void CorruptPicklesInsideValidArchivesReadOrFailCleanly()
    {
        (byte[] pickle, Dictionary<string, byte[]> storages) = Fixtures.SplitPth(Fixtures.PathOf("state_dict.pth"));
        var failures = new List<string>();
        using var folder = new TempFolder();
        for (int seed = 0; seed < Seeds; seed++)
        {
            byte[] mutated = Mutate(pickle, new Random(seed), 0);
            string path = folder.File("bad.pth");
            File.WriteAllBytes(path, Fixtures.MakePth(mutated, storages));
            Check(seed, path, p => PyTorchCheckpoint.Read(p), failures);
        }
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    private static void Run(byte[] original, string name, Action<string> read, int mutateFromOffset)
    {
        var failures = new List<string>();
        using var folder = new TempFolder();
        for (int seed = 0; seed < Seeds; seed++)
        {
            string path = folder.File(name);
            File.WriteAllBytes(path, Mutate(original, new Random(seed), mutateFromOffset));
            Check(seed, path, read, failures);
        }
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    private static void Check(int seed, string path, Action<string> read, List<string> failures)
    {
        var task = Task.Run(() => read(path));
        try
        {
            if (!task.Wait(ReadTimeout))
            {
                failures.Add($"seed {seed}: no result after {ReadTimeout}");
            }
        }
        catch (AggregateException ex) when (ex.InnerException is InvalidDataException)
        {
        }
        catch (AggregateException ex)
        {
            failures.Add($"seed {seed}: {ex.InnerException}");
        }
    }

    /// <summary>
    /// Rewrites one number of the JSON header (a shape dimension or a data offset) and fixes the length prefix,
    /// so the file gets past the framing checks to the layout and overflow checks.
    /// </summary>
    private static byte[] ReplaceHeaderNumber(byte[] original, Random random)
    {
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        string header = System.Text.Encoding.UTF8.GetString(original, 8, headerLength);
        System.Text.RegularExpressions.MatchCollection numbers = System.Text.RegularExpressions.Regex.Matches(header, "[0-9]+");
        System.Text.RegularExpressions.Match target = numbers[random.Next(numbers.Count)];
        string[] replacements = ["18446744073709551615", "9223372036854775807", "4294967296", "2147483648", "0", "-1", "1e3", "1.5",
            random.NextInt64().ToString(System.Globalization.CultureInfo.InvariantCulture),
            random.Next(0, 1000).ToString(System.Globalization.CultureInfo.InvariantCulture)];
        string altered = header[..target.Index] + replacements[random.Next(replacements.Length)] + header[(target.Index + target.Length)..];
        byte[] json = System.Text.Encoding.UTF8.GetBytes(altered);
        byte[] prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)json.Length);
        return [.. prefix, .. json, .. original[(8 + headerLength)..]];
    }

    /// <summary>One of: truncation, 1-4 flipped bytes, a huge or random 4/8-byte field, a deleted or duplicated span.</summary>
    private static byte[] Mutate(byte[] original, Random random, int from)
    {
        byte[] bytes = (byte[])original.Clone();
        int at = random.Next(from, bytes.Length);
        switch (random.Next(6))
        {
            case 0:
                return bytes[..at];
            case 1:
                for (int i = random.Next(1, 5); i > 0; i--)
                {
                    bytes[random.Next(from, bytes.Length)] ^= (byte)(1 << random.Next(8));
                }
                return bytes;
            case 2:
                if (at + 8 <= bytes.Length)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), random.Next(2) == 0 ? ulong.MaxValue : (ulong)random.NextInt64());
                }
                return bytes;
            case 3:
                if (at + 4 <= bytes.Length)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), random.Next(2) == 0 ? uint.MaxValue : (uint)random.Next());
                }
                return bytes;
            case 4:
                int length = random.Next(1, 16);
                return [.. bytes[..at], .. bytes[Math.Min(bytes.Length, at + length)..]];
            default:
                // The 8-byte length prefix or the first field of a header: declare something huge.
                if (random.Next(2) == 0 && bytes.Length >= 8)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)random.NextInt64(1, long.MaxValue));
                    return bytes;
                }
                int span = random.Next(1, 64);
                int start = random.Next(from, bytes.Length);
                return [.. bytes[..start], .. bytes[start..Math.Min(bytes.Length, start + span)], .. bytes[start..]];
        }
    }
}
