using GoogLeNet.Training;
using Xunit;

namespace GoogLeNet.Tests.Training;

public class ScheduleTests
{
    // Values are products of a few doubles; 1e-15 relative covers their rounding.
    private const double Tolerance = 1e-15;

    [Theory]
    [InlineData(0.0, 0.01)]
    [InlineData(7.99, 0.01)]
    [InlineData(8.0, 0.0096)]
    [InlineData(15.5, 0.0096)]
    [InlineData(16.0, 0.009216)]
    [InlineData(24.0, 0.00884736)]
    public void PaperDropsFourPercentEveryEightEpochs(double epoch, double expected) =>
        AssertClose(expected, StepSchedule.Paper(0.01).At(epoch));

    [Theory]
    [InlineData(0.0, 0.1)]
    [InlineData(2.9, 0.1)]
    [InlineData(3.0, 0.01)]
    [InlineData(6.0, 0.001)]
    public void StepMultipliesByGammaAtEachStep(double epoch, double expected) =>
        AssertClose(expected, new StepSchedule(0.1, 3, 0.1).At(epoch));

    [Theory]
    [InlineData(0.0, 0.01)]
    [InlineData(7.5, 0.005)]
    [InlineData(10.0, 0.0)]
    [InlineData(12.0, 0.0)]
    public void PolyIsCaffesQuickSolver(double epoch, double expected) =>
        AssertClose(expected, new PolySchedule(0.01, 10, 0.5).At(epoch));

    [Theory]
    [InlineData(0.0, 0.1)]
    [InlineData(5.0, 0.05)]
    [InlineData(10.0, 0.0)]
    public void CosineFallsToZero(double epoch, double expected) =>
        Assert.Equal(expected, new CosineSchedule(0.1, 10).At(epoch), 1e-17);

    [Fact]
    public void CosineStopsAtItsMinimum()
    {
        var schedule = new CosineSchedule(0.1, 10, 0.001);
        AssertClose(0.0505, schedule.At(5));
        AssertClose(0.001, schedule.At(20));
    }

    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(0.5, 0.025)]
    [InlineData(1.0, 0.05)]
    [InlineData(2.0, 0.1)]
    [InlineData(5.0, 0.1)]
    public void WarmupRampsLinearly(double epoch, double expected) =>
        AssertClose(expected, new WarmupSchedule(new ConstantSchedule(0.1), 2).At(epoch));

    [Fact]
    public void ConstantNeverChanges()
    {
        var schedule = new ConstantSchedule(0.1);
        Assert.Equal(0.1, schedule.At(0));
        Assert.Equal(0.1, schedule.At(123.4));
    }

    [Fact]
    public void ParseBuildsEachKind()
    {
        Assert.IsType<ConstantSchedule>(Schedules.Parse("constant", 0.1, 10));
        Assert.Equal(8, Assert.IsType<StepSchedule>(Schedules.Parse("paper", 0.1, 10)).StepEpochs);
        Assert.Equal(0.5, Assert.IsType<StepSchedule>(Schedules.Parse("step:5:0.5", 0.1, 10)).Gamma);
        Assert.Equal(0.9, Assert.IsType<PolySchedule>(Schedules.Parse("poly:0.9", 0.1, 10)).Power);
        Assert.Equal(0.5, Assert.IsType<PolySchedule>(Schedules.Parse("poly", 0.1, 10)).Power);
        var warm = Assert.IsType<WarmupSchedule>(Schedules.Parse("cosine+warmup:1", 0.1, 10));
        Assert.IsType<CosineSchedule>(warm.Inner);
        AssertClose(0.05 * (1 + Math.Cos(Math.PI * 0.05)) * 0.5, warm.At(0.5));
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("step:0:0.5")]
    [InlineData("step:3")]
    [InlineData("cosine+cooldown:2")]
    public void ParseRejectsUnknownSchedules(string text)
    {
        var e = Assert.Throws<ArgumentException>(() => Schedules.Parse(text, 0.1, 10));
        Assert.Contains(text, e.Message);
    }

    private static void AssertClose(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= Tolerance * Math.Max(1, Math.Abs(expected)), $"expected {expected:R}, got {actual:R}");
}
