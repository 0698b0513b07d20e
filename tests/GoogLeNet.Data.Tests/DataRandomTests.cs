namespace GoogLeNet.Data.Tests;

public sealed class DataRandomTests
{
    [Fact]
    public void ReseedRestartsTheStream()
    {
        var random = new DataRandom(99);
        ulong[] first = [random.NextUInt64(), random.NextUInt64(), random.NextUInt64()];
        random.Reseed(99);
        ulong[] again = [random.NextUInt64(), random.NextUInt64(), random.NextUInt64()];
        Assert.Equal(first, again);
        Assert.NotEqual(first[0], new DataRandom(100).NextUInt64());
    }

    [Fact]
    public void RangesAreRespectedAndCovered()
    {
        var random = new DataRandom(5);
        var seen = new int[7];
        for (int i = 0; i < 7000; i++)
        {
            int v = random.Next(7);
            seen[v]++;
            double d = random.NextDouble();
            Assert.InRange(d, 0.0, 0.9999999999999999);
            Assert.InRange(random.Next(-3, 2), -3, 1);
        }

        Assert.All(seen, count => Assert.InRange(count, 850, 1150));
    }

    [Fact]
    public void CombineSeparatesNeighbouringInputs()
    {
        var seeds = new HashSet<ulong>();
        for (ulong epoch = 0; epoch < 10; epoch++)
        {
            for (ulong position = 0; position < 100; position++)
            {
                seeds.Add(DataRandom.Combine(DataRandom.Combine(1, epoch), position));
            }
        }

        Assert.Equal(1000, seeds.Count);
        Assert.NotEqual(DataRandom.Combine(1, 2), DataRandom.Combine(2, 1));
    }
}
