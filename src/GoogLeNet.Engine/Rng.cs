namespace GoogLeNet.Engine;

/// <summary>
/// A small seeded generator (SplitMix64) whose whole state is one number, so training can save it
/// in a checkpoint and resume with the same dropout masks and data order.
/// </summary>
public sealed class Rng
{
    public Rng(ulong seed)
    {
        State = seed;
    }

    public ulong State { get; set; }

    public ulong NextUInt64()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 24 random bits, exactly representable as a float.</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1f / (1 << 24));

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public int NextInt(int maxExclusive)
    {
        if (maxExclusive <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxExclusive), maxExclusive, "must be positive");
        }
        return (int)((NextUInt64() >> 33) % (ulong)maxExclusive);
    }

    /// <summary>Standard normal by Box-Muller.</summary>
    public double NextNormal()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>A generator for a named purpose, independent of this one's future draws.</summary>
    public static Rng ForName(ulong seed, string name)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in name)
        {
            h = (h ^ c) * 1099511628211UL;
        }
        return new Rng(seed ^ h);
    }
}
