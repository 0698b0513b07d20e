using System.Globalization;

namespace GoogLeNet.Training;

/// <summary>One curve of the training plot: its legend label, colour and dash pattern (on, off... pixels; empty when solid).</summary>
internal sealed record PlotSeries(string Label, string Color, int[] DashPattern, Func<EpochMetrics, double> Value)
{
    public (byte R, byte G, byte B) Rgb => (
        byte.Parse(Color.AsSpan(1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
        byte.Parse(Color.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
        byte.Parse(Color.AsSpan(5, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
}

/// <summary>
/// Where the training plot puts things, shared by the SVG and the PNG: a 640x400 canvas, epochs
/// on x from 0 to the last, values on y from 0 to the largest rounded up to a quarter.
/// </summary>
internal sealed class PlotLayout
{
    public const int Width = 640;
    public const int Height = 400;
    public const int Left = 56;
    public const int Right = 20;
    public const int Top = 20;
    public const int Bottom = 44;

    public static readonly PlotSeries[] Series =
    [
        new("train loss", "#1f77b4", [], m => m.TrainLoss),
        new("train acc", "#d62728", [6, 3], m => m.TrainAccuracy),
        new("test acc", "#2ca02c", [2, 3], m => m.TestAccuracy),
    ];

    private readonly IReadOnlyList<EpochMetrics> _history;

    public PlotLayout(IReadOnlyList<EpochMetrics> history)
    {
        ArgumentNullException.ThrowIfNull(history);
        _history = history;
        Epochs = Math.Max(1, history.Count == 0 ? 1 : history[^1].Epoch);
        double yMax = 1.0;
        foreach (EpochMetrics m in history)
        {
            foreach (PlotSeries series in Series)
            {
                double v = series.Value(m);
                if (double.IsFinite(v))
                {
                    yMax = Math.Max(yMax, v);
                }
            }
        }
        YMax = Math.Ceiling(yMax * 4) / 4;
    }

    public int Epochs { get; }

    public double YMax { get; }

    public static double PlotWidth => Width - Left - Right;

    public static double PlotHeight => Height - Top - Bottom;

    public double X(double epoch) => Left + PlotWidth * epoch / Epochs;

    public double Y(double value) => Top + PlotHeight * (1 - value / YMax);

    public IEnumerable<double> YTicks => Enumerable.Range(0, (int)Math.Round(YMax / 0.25) + 1).Select(i => i * 0.25);

    public IEnumerable<int> XTicks
    {
        get
        {
            int step = Math.Max(1, Epochs / 10);
            for (int e = 0; e <= Epochs; e += step)
            {
                yield return e;
            }
        }
    }

    /// <summary>The series' finite values as canvas points, in epoch order.</summary>
    public IEnumerable<(double X, double Y)> Points(PlotSeries series) =>
        _history.Where(m => double.IsFinite(series.Value(m))).Select(m => (X(m.Epoch), Y(series.Value(m))));

    /// <summary>The baseline-left corner of legend entry <paramref name="index"/>'s text row.</summary>
    public static (double X, double Y) LegendPosition(int index) => (Width - Right - 120, Top + 14 + index * 18);

    public static string Format(double value) => value.ToString("0.##", CultureInfo.InvariantCulture);
}
