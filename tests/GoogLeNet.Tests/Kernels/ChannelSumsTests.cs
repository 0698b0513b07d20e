using GoogLeNet.Engine.Kernels;
using Xunit;

namespace GoogLeNet.Tests.Kernels;

/// <summary>The bias gradient's per-channel sums, shared among threads a channel at a time.</summary>
[Collection(EngineThreadsCollection.Name)]
public class ChannelSumsTests
{
    // Each channel is summed whole by TensorPrimitives.Sum whichever thread takes it, so the
    // sums equal the one-thread ones bit for bit, and a double sum to float32 rounding: 1e-5
    // relative to the sum of magnitudes covers the vector sum's reordering over 1000 values.
    private const double Tolerance = 1e-5;

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 1000)]
    [InlineData(64, 37)]
    public void SumsAddToEachChannelWhateverTheThreadCount(int channels, int length)
    {
        float[] values = GoldenFill.Fill("channel.sums", channels * length, 2.0);
        float[] Run(int threads) => EngineThreads.With(threads, () =>
        {
            float[] sums = Enumerable.Range(0, channels).Select(c => (float)c).ToArray(); // accumulates onto c
            Elementwise.AddChannelSums(values, channels, length, sums);
            return sums;
        });
        float[] one = Run(1);
        Assert.Equal(one, Run(2));
        Assert.Equal(one, Run(3));
        for (int c = 0; c < channels; c++)
        {
            double expected = c, magnitude = Math.Abs(c);
            for (int i = 0; i < length; i++)
            {
                expected += values[c * length + i];
                magnitude += Math.Abs(values[c * length + i]);
            }
            Assert.True(Math.Abs(one[c] - expected) <= Tolerance * Math.Max(1, magnitude), $"channel {c}: {one[c]} against {expected}");
        }
    }

    [Fact]
    public void ShortSpansAreRefusedWithTheSizesTheyNeed()
    {
        var error = Assert.Throws<ArgumentException>(() => Elementwise.AddChannelSums(new float[11], 3, 4, new float[3]));
        Assert.Contains("need 12 values and 3 sums, got 11 and 3", error.Message);
        error = Assert.Throws<ArgumentException>(() => Elementwise.AddChannelSums(new float[12], 3, 4, new float[2]));
        Assert.Contains("got 12 and 2", error.Message);
    }
}
