using System.Globalization;
using System.Text;

namespace GoogLeNet.Training;

/// <summary>
/// The training curves d2l's animator draws (train loss, train accuracy, test accuracy against
/// epochs) as a self-contained SVG: axes, grid, three polylines with markers, a legend.
/// </summary>
public static class SvgPlot
{
    private const int Width = 640;
    private const int Height = 400;
    private const int Left = 56;
    private const int Right = 20;
    private const int Top = 20;
    private const int Bottom = 44;

    private static readonly (string Label, string Color, string Dash, Func<EpochMetrics, double> Value)[] s_series =
    [
        ("train loss", "#1f77b4", "", m => m.TrainLoss),
        ("train acc", "#d62728", "6,3", m => m.TrainAccuracy),
        ("test acc", "#2ca02c", "2,3", m => m.TestAccuracy),
    ];

    public static string Render(IReadOnlyList<EpochMetrics> history)
    {
        ArgumentNullException.ThrowIfNull(history);
        int epochs = Math.Max(1, history.Count == 0 ? 1 : history[^1].Epoch);
        double yMax = 1.0;
        foreach (EpochMetrics m in history)
        {
            foreach (var series in s_series)
            {
                double v = series.Value(m);
                if (double.IsFinite(v))
                {
                    yMax = Math.Max(yMax, v);
                }
            }
        }
        yMax = Math.Ceiling(yMax * 4) / 4;
        double plotW = Width - Left - Right;
        double plotH = Height - Top - Bottom;
        double X(double epoch) => Left + plotW * epoch / epochs;
        double Y(double value) => Top + plotH * (1 - value / yMax);

        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        int yTicks = (int)Math.Round(yMax / 0.25);
        for (int i = 0; i <= yTicks; i++)
        {
            double v = i * 0.25;
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{Left}\" y1=\"{N(Y(v))}\" x2=\"{Width - Right}\" y2=\"{N(Y(v))}\" stroke=\"#ddd\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{Left - 6}\" y=\"{N(Y(v) + 4)}\" text-anchor=\"end\">{v:0.##}</text>\n");
        }
        int xStep = Math.Max(1, epochs / 10);
        for (int e = 0; e <= epochs; e += xStep)
        {
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{N(X(e))}\" y1=\"{Top}\" x2=\"{N(X(e))}\" y2=\"{Height - Bottom}\" stroke=\"#eee\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{N(X(e))}\" y=\"{Height - Bottom + 16}\" text-anchor=\"middle\">{e}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture,
            $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{N(plotW)}\" height=\"{N(plotH)}\" fill=\"none\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{N(Left + plotW / 2)}\" y=\"{Height - 8}\" text-anchor=\"middle\">epoch</text>\n");
        foreach (var (label, color, dash, value) in s_series)
        {
            var points = history.Where(m => double.IsFinite(value(m))).Select(m => $"{N(X(m.Epoch))},{N(Y(value(m)))}").ToArray();
            if (points.Length == 0)
            {
                continue;
            }
            string dashAttribute = dash.Length > 0 ? $" stroke-dasharray=\"{dash}\"" : "";
            svg.Append($"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dashAttribute} points=\"{string.Join(' ', points)}\"/>\n");
            foreach (string point in points)
            {
                string[] xy = point.Split(',');
                svg.Append($"<circle cx=\"{xy[0]}\" cy=\"{xy[1]}\" r=\"3\" fill=\"{color}\"/>\n");
            }
        }
        for (int i = 0; i < s_series.Length; i++)
        {
            var (label, color, dash, _) = s_series[i];
            double y = Top + 14 + i * 18;
            double x = Width - Right - 120;
            string dashAttribute = dash.Length > 0 ? $" stroke-dasharray=\"{dash}\"" : "";
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{N(x)}\" y1=\"{N(y - 4)}\" x2=\"{N(x + 24)}\" y2=\"{N(y - 4)}\" stroke=\"{color}\" stroke-width=\"2\"{dashAttribute}/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + 30)}\" y=\"{N(y)}\">{label}</text>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static string N(double value) => value.ToString("0.##", CultureInfo.InvariantCulture);
}
