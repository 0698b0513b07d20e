using System.Globalization;
using System.Text;

namespace GoogLeNet.Training;

/// <summary>
/// The training curves d2l's animator draws (train loss, train accuracy, test accuracy against
/// epochs) as a self-contained SVG: axes, grid, three polylines with markers, a legend.
/// </summary>
public static class SvgPlot
{
    public static string Render(IReadOnlyList<EpochMetrics> history)
    {
        var layout = new PlotLayout(history);
        const int width = PlotLayout.Width, height = PlotLayout.Height;
        const int left = PlotLayout.Left, right = PlotLayout.Right, top = PlotLayout.Top, bottom = PlotLayout.Bottom;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        foreach (double v in layout.YTicks)
        {
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{left}\" y1=\"{N(layout.Y(v))}\" x2=\"{width - right}\" y2=\"{N(layout.Y(v))}\" stroke=\"#ddd\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{left - 6}\" y=\"{N(layout.Y(v) + 4)}\" text-anchor=\"end\">{PlotLayout.Format(v)}</text>\n");
        }
        foreach (int e in layout.XTicks)
        {
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{N(layout.X(e))}\" y1=\"{top}\" x2=\"{N(layout.X(e))}\" y2=\"{height - bottom}\" stroke=\"#eee\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{N(layout.X(e))}\" y=\"{height - bottom + 16}\" text-anchor=\"middle\">{e}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture,
            $"<rect x=\"{left}\" y=\"{top}\" width=\"{N(PlotLayout.PlotWidth)}\" height=\"{N(PlotLayout.PlotHeight)}\" fill=\"none\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{N(left + PlotLayout.PlotWidth / 2)}\" y=\"{height - 8}\" text-anchor=\"middle\">epoch</text>\n");
        foreach (PlotSeries series in PlotLayout.Series)
        {
            var points = layout.Points(series).Select(p => $"{N(p.X)},{N(p.Y)}").ToArray();
            if (points.Length == 0)
            {
                continue;
            }
            svg.Append($"<polyline fill=\"none\" stroke=\"{series.Color}\" stroke-width=\"2\"{Dash(series)} points=\"{string.Join(' ', points)}\"/>\n");
            foreach (string point in points)
            {
                string[] xy = point.Split(',');
                svg.Append($"<circle cx=\"{xy[0]}\" cy=\"{xy[1]}\" r=\"3\" fill=\"{series.Color}\"/>\n");
            }
        }
        for (int i = 0; i < PlotLayout.Series.Length; i++)
        {
            PlotSeries series = PlotLayout.Series[i];
            var (x, y) = PlotLayout.LegendPosition(i);
            svg.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{N(x)}\" y1=\"{N(y - 4)}\" x2=\"{N(x + 24)}\" y2=\"{N(y - 4)}\" stroke=\"{series.Color}\" stroke-width=\"2\"{Dash(series)}/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + 30)}\" y=\"{N(y)}\">{series.Label}</text>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static string Dash(PlotSeries series) =>
        series.DashPattern.Length > 0 ? $" stroke-dasharray=\"{string.Join(',', series.DashPattern)}\"" : "";

    private static string N(double value) => value.ToString("0.##", CultureInfo.InvariantCulture);
}
