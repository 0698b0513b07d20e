using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace GoogLeNet.Training;

/// <summary>
/// The same curves as <see cref="SvgPlot"/>, rasterised to an RGB PNG (no image library): axes,
/// grid, tick labels in a 5x7 bitmap font, three polylines with markers, a legend.
/// </summary>
public static class PngPlot
{
    private const int FontWidth = 5;
    private const int FontHeight = 7;

    public static byte[] Render(IReadOnlyList<EpochMetrics> history)
    {
        var layout = new PlotLayout(history);
        var canvas = new Canvas(PlotLayout.Width, PlotLayout.Height);
        (byte, byte, byte) grid = (0xdd, 0xdd, 0xdd);
        (byte, byte, byte) black = (0, 0, 0);
        foreach (double v in layout.YTicks)
        {
            int y = Round(layout.Y(v));
            canvas.Line(PlotLayout.Left, y, PlotLayout.Width - PlotLayout.Right, y, grid, 1, []);
            string text = PlotLayout.Format(v);
            canvas.Text(PlotLayout.Left - 6 - TextWidth(text), y - FontHeight / 2, text, black);
        }
        foreach (int e in layout.XTicks)
        {
            int x = Round(layout.X(e));
            canvas.Line(x, PlotLayout.Top, x, PlotLayout.Height - PlotLayout.Bottom, (0xee, 0xee, 0xee), 1, []);
            string text = e.ToString(System.Globalization.CultureInfo.InvariantCulture);
            canvas.Text(x - TextWidth(text) / 2, PlotLayout.Height - PlotLayout.Bottom + 6, text, black);
        }
        int right = PlotLayout.Width - PlotLayout.Right;
        int bottom = PlotLayout.Height - PlotLayout.Bottom;
        canvas.Line(PlotLayout.Left, PlotLayout.Top, right, PlotLayout.Top, black, 1, []);
        canvas.Line(PlotLayout.Left, bottom, right, bottom, black, 1, []);
        canvas.Line(PlotLayout.Left, PlotLayout.Top, PlotLayout.Left, bottom, black, 1, []);
        canvas.Line(right, PlotLayout.Top, right, bottom, black, 1, []);
        canvas.Text((PlotLayout.Left + right) / 2 - TextWidth("epoch") / 2, PlotLayout.Height - 16, "epoch", black);

        foreach (PlotSeries series in PlotLayout.Series)
        {
            var points = layout.Points(series).Select(p => (X: Round(p.X), Y: Round(p.Y))).ToArray();
            for (int i = 1; i < points.Length; i++)
            {
                canvas.Line(points[i - 1].X, points[i - 1].Y, points[i].X, points[i].Y, series.Rgb, 2, series.DashPattern);
            }
            foreach (var (x, y) in points)
            {
                canvas.Disc(x, y, 3, series.Rgb);
            }
        }
        for (int i = 0; i < PlotLayout.Series.Length; i++)
        {
            PlotSeries series = PlotLayout.Series[i];
            var (x, y) = PlotLayout.LegendPosition(i);
            canvas.Line(Round(x), Round(y - 4), Round(x + 24), Round(y - 4), series.Rgb, 2, series.DashPattern);
            canvas.Text(Round(x + 30), Round(y - FontHeight), series.Label, black);
        }
        return Encode(canvas.Width, canvas.Height, canvas.Pixels);
    }

    /// <summary>An 8-bit RGB PNG: one IDAT of zlib-compressed rows, each with filter type 0.</summary>
    public static byte[] Encode(int width, int height, ReadOnlySpan<byte> rgb)
    {
        if (width <= 0 || height <= 0 || rgb.Length != (long)width * height * 3)
        {
            throw new ArgumentException($"An RGB image of {width}x{height} needs {(long)width * height * 3} bytes, got {rgb.Length}.");
        }
        using var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 8; // bits per sample
        header[9] = 2; // colour type: RGB
        WriteChunk(png, "IHDR", header);
        using (var compressed = new MemoryStream())
        {
            using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
            {
                for (int y = 0; y < height; y++)
                {
                    zlib.WriteByte(0);
                    zlib.Write(rgb.Slice(y * width * 3, width * 3));
                }
            }
            WriteChunk(png, "IDAT", compressed.ToArray());
        }
        WriteChunk(png, "IEND", []);
        return png.ToArray();
    }

    private static void WriteChunk(Stream png, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(word, data.Length);
        png.Write(word);
        byte[] typeBytes = Encoding.ASCII.GetBytes(type);
        png.Write(typeBytes);
        png.Write(data);
        uint crc = Crc32.Update(Crc32.Update(0xFFFFFFFFu, typeBytes), data) ^ 0xFFFFFFFFu;
        BinaryPrimitives.WriteUInt32BigEndian(word, crc);
        png.Write(word);
    }

    private static int Round(double value) => (int)Math.Round(value);

    private static int TextWidth(string text) => text.Length * (FontWidth + 1) - 1;

    /// <summary>The CRC-32 of ISO 3309 that PNG chunks carry (reflected polynomial 0xEDB88320).</summary>
    internal static class Crc32
    {
        private static readonly uint[] s_table = BuildTable();

        public static uint Update(uint crc, ReadOnlySpan<byte> data)
        {
            foreach (byte b in data)
            {
                crc = s_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            }
            return crc;
        }

        private static uint[] BuildTable()
        {
            var table = new uint[256];
            for (uint n = 0; n < 256; n++)
            {
                uint c = n;
                for (int k = 0; k < 8; k++)
                {
                    c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                }
                table[n] = c;
            }
            return table;
        }
    }

    private sealed class Canvas
    {
        public Canvas(int width, int height)
        {
            Width = width;
            Height = height;
            Pixels = new byte[width * height * 3];
            Pixels.AsSpan().Fill(0xFF);
        }

        public int Width { get; }

        public int Height { get; }

        public byte[] Pixels { get; }

        public void Set(int x, int y, (byte R, byte G, byte B) color)
        {
            if ((uint)x >= (uint)Width || (uint)y >= (uint)Height)
            {
                return;
            }
            int at = (y * Width + x) * 3;
            Pixels[at] = color.R;
            Pixels[at + 1] = color.G;
            Pixels[at + 2] = color.B;
        }

        // A line `thickness` pixels wide, stepped one pixel at a time along its longer axis; the
        // dash pattern (on, off, on, off... in pixels along the line) is empty for a solid line.
        public void Line(int x0, int y0, int x1, int y1, (byte, byte, byte) color, int thickness, int[] dash)
        {
            int steps = Math.Max(Math.Abs(x1 - x0), Math.Abs(y1 - y0));
            int period = dash.Sum();
            for (int s = 0; s <= steps; s++)
            {
                if (period > 0 && !IsOn(dash, s % period))
                {
                    continue;
                }
                double t = steps == 0 ? 0 : (double)s / steps;
                int x = (int)Math.Round(x0 + (x1 - x0) * t);
                int y = (int)Math.Round(y0 + (y1 - y0) * t);
                for (int dy = 0; dy < thickness; dy++)
                {
                    for (int dx = 0; dx < thickness; dx++)
                    {
                        Set(x + dx - thickness / 2, y + dy - thickness / 2, color);
                    }
                }
            }
        }

        private static bool IsOn(int[] dash, int position)
        {
            for (int i = 0; i < dash.Length; i++)
            {
                if (position < dash[i])
                {
                    return i % 2 == 0;
                }
                position -= dash[i];
            }
            return false;
        }

        public void Disc(int cx, int cy, int radius, (byte, byte, byte) color)
        {
            for (int dy = -radius; dy <= radius; dy++)
            {
                for (int dx = -radius; dx <= radius; dx++)
                {
                    if (dx * dx + dy * dy <= radius * radius)
                    {
                        Set(cx + dx, cy + dy, color);
                    }
                }
            }
        }

        // Top-left corner at (x, y); characters the font lacks are left blank.
        public void Text(int x, int y, string text, (byte, byte, byte) color)
        {
            foreach (char ch in text)
            {
                if (s_font.TryGetValue(ch, out byte[]? rows))
                {
                    for (int r = 0; r < FontHeight; r++)
                    {
                        for (int c = 0; c < FontWidth; c++)
                        {
                            if ((rows[r] >> (FontWidth - 1 - c) & 1) != 0)
                            {
                                Set(x + c, y + r, color);
                            }
                        }
                    }
                }
                x += FontWidth + 1;
            }
        }
    }

    // 5x7 glyphs, one byte per row, the top row first and the leftmost pixel in bit 4: the digits,
    // the point, and the letters of the axis and legend labels.
    private static readonly Dictionary<char, byte[]> s_font = new()
    {
        ['0'] = [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        ['1'] = [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        ['2'] = [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        ['3'] = [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        ['4'] = [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        ['5'] = [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        ['6'] = [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        ['7'] = [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        ['8'] = [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        ['9'] = [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        ['.'] = [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100],
        ['a'] = [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111],
        ['c'] = [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110],
        ['e'] = [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110],
        ['h'] = [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        ['i'] = [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110],
        ['l'] = [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        ['n'] = [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        ['o'] = [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110],
        ['p'] = [0b00000, 0b00000, 0b11110, 0b10001, 0b11110, 0b10000, 0b10000],
        ['r'] = [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000],
        ['s'] = [0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110],
        ['t'] = [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110],
    };
}
