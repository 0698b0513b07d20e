using System.Runtime.InteropServices;

namespace GoogLeNet.Data;

/// <summary>An 8-bit RGB image in HWC order, as decoders produce it.</summary>
public sealed class DecodedImage(int width, int height, byte[] rgb)
{
    public int Width { get; } = width;

    public int Height { get; } = height;

    /// <summary>Height x Width x 3 bytes.</summary>
    public byte[] Rgb { get; } = rgb;
}

/// <summary>
/// Decodes JPEG (libturbojpeg) and PNG (libpng16's simplified API) to RGB, choosing the decoder by
/// the file's magic bytes. Every failure is an <see cref="InvalidDataException"/> naming the source.
/// </summary>
public static class ImageDecoder
{
    /// <summary>Largest width or height accepted; checked from the header before any pixel buffer is allocated.</summary>
    public const int MaxDimension = 16384;

    public static DecodedImage DecodeFile(string path) => Decode(File.ReadAllBytes(path), path);

    /// <param name="name">Names the source in error messages, usually its path.</param>
    public static DecodedImage Decode(ReadOnlySpan<byte> data, string name)
    {
        if (IsJpeg(data))
        {
            return TurboJpeg.Decode(data, name);
        }

        if (IsPng(data))
        {
            return LibPng.Decode(data, name);
        }

        throw new InvalidDataException($"'{name}' is neither JPEG (FF D8 FF) nor PNG (89 50 4E 47 0D 0A 1A 0A) by its first bytes.");
    }

    public static bool IsJpeg(ReadOnlySpan<byte> data) =>
        data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;

    public static bool IsPng(ReadOnlySpan<byte> data) =>
        data.Length >= 8 && data[..8].SequenceEqual((ReadOnlySpan<byte>)[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);

    internal static void CheckDimensions(long width, long height, string name)
    {
        if (width <= 0 || height <= 0 || width > MaxDimension || height > MaxDimension)
        {
            throw new InvalidDataException($"'{name}' declares {width}x{height} pixels; expected sides in 1..{MaxDimension}.");
        }
    }
}

internal static unsafe partial class TurboJpeg
{
    private const string Library = "libturbojpeg.so.0";
    private const int PixelFormatRgb = 0; // TJPF_RGB
    private const int ErrorWarning = 0;   // TJERR_WARNING

    public static DecodedImage Decode(ReadOnlySpan<byte> data, string name)
    {
        nint handle = tjInitDecompress();
        if (handle == 0)
        {
            throw new InvalidOperationException($"tjInitDecompress failed: {Marshal.PtrToStringUTF8(tjGetErrorStr2(0))}");
        }

        try
        {
            fixed (byte* source = data)
            {
                if (tjDecompressHeader3(handle, source, (nuint)data.Length, out int width, out int height, out _, out _) != 0)
                {
                    throw Error(handle, name, "header");
                }

                ImageDecoder.CheckDimensions(width, height, name);
                byte[] rgb = new byte[(long)width * height * 3];
                fixed (byte* destination = rgb)
                {
                    if (tjDecompress2(handle, source, (nuint)data.Length, destination, width, width * 3, height, PixelFormatRgb, 0) != 0
                        && !IsTolerableWarning(handle, data))
                    {
                        throw Error(handle, name, "data");
                    }
                }

                return new DecodedImage(width, height, rgb);
            }
        }
        finally
        {
            _ = tjDestroy(handle);
        }
    }

    // libjpeg reports some damage only as a warning and pads the image; those are errors here. The
    // one warning let through is junk between segments of a file that still ends with its EOI
    // marker (PIL accepts it too, and ImageNet has such files): every pixel was decoded.
    private static bool IsTolerableWarning(nint handle, ReadOnlySpan<byte> data) =>
        tjGetErrorCode(handle) == ErrorWarning
        && data.EndsWith((ReadOnlySpan<byte>)[0xFF, 0xD9])
        && (Marshal.PtrToStringUTF8(tjGetErrorStr2(handle)) ?? "").Contains("extraneous bytes before marker", StringComparison.Ordinal);

    private static InvalidDataException Error(nint handle, string name, string part) =>
        new($"'{name}' is not a valid JPEG ({part}): {Marshal.PtrToStringUTF8(tjGetErrorStr2(handle))}");

    [LibraryImport(Library)]
    private static partial nint tjInitDecompress();

    [LibraryImport(Library)]
    private static partial int tjDecompressHeader3(nint handle, byte* jpegBuf, nuint jpegSize, out int width, out int height, out int jpegSubsamp, out int jpegColorspace);

    [LibraryImport(Library)]
    private static partial int tjDecompress2(nint handle, byte* jpegBuf, nuint jpegSize, byte* dstBuf, int width, int pitch, int height, int pixelFormat, int flags);

    [LibraryImport(Library)]
    private static partial nint tjGetErrorStr2(nint handle);

    [LibraryImport(Library)]
    private static partial int tjGetErrorCode(nint handle);

    [LibraryImport(Library)]
    private static partial int tjDestroy(nint handle);
}

// 8-bit PNGs without colour-space chunks decode exactly as PIL decodes them. For 16-bit files and
// files with gAMA, cHRM or iCCP, libpng's simplified API converts to 8-bit sRGB, while PIL keeps the
// raw samples; such images can differ from a PyTorch pipeline.
internal static unsafe partial class LibPng
{
    private const string Library = "libpng16.so.16";
    private const uint ImageVersion = 1; // PNG_IMAGE_VERSION
    private const uint FormatFlagAlpha = 1; // PNG_FORMAT_FLAG_ALPHA
    private const uint FormatRgb = 2;       // PNG_FORMAT_RGB = PNG_FORMAT_FLAG_COLOR
    private const uint FormatRgba = 3;      // PNG_FORMAT_RGBA; 8-bit output is not premultiplied

    // png.h's png_image, field for field; the library writes width, height, format and message into it.
    [StructLayout(LayoutKind.Sequential)]
    private struct PngImage
    {
        public nint Opaque;
        public uint Version;
        public uint Width;
        public uint Height;
        public uint Format;
        public uint Flags;
        public uint ColormapEntries;
        public uint WarningOrError;
        public fixed byte Message[64];
    }

    public static DecodedImage Decode(ReadOnlySpan<byte> data, string name)
    {
        PngImage image = default;
        image.Version = ImageVersion;
        fixed (byte* source = data)
        {
            if (png_image_begin_read_from_memory(&image, source, (nuint)data.Length) == 0)
            {
                throw Error(&image, name);
            }

            try
            {
                ImageDecoder.CheckDimensions(image.Width, image.Height, name);
                int width = (int)image.Width;
                int height = (int)image.Height;
                // With alpha, 8-bit RGBA is read and the alpha dropped, as PIL's convert("RGB") does;
                // asking libpng for RGB would composite onto the buffer's contents instead.
                bool alpha = (image.Format & FormatFlagAlpha) != 0;
                int channels = alpha ? 4 : 3;
                image.Format = alpha ? FormatRgba : FormatRgb;
                byte[] pixels = new byte[(long)width * height * channels];
                fixed (byte* destination = pixels)
                {
                    if (png_image_finish_read(&image, null, destination, width * channels, null) == 0)
                    {
                        throw Error(&image, name);
                    }
                }

                byte[] rgb = alpha ? DropAlpha(pixels, width * height) : pixels;
                return new DecodedImage(width, height, rgb);
            }
            finally
            {
                png_image_free(&image);
            }
        }
    }

    private static byte[] DropAlpha(byte[] rgba, int pixelCount)
    {
        byte[] rgb = new byte[pixelCount * 3];
        for (int p = 0; p < pixelCount; p++)
        {
            rgb[3 * p] = rgba[4 * p];
            rgb[3 * p + 1] = rgba[4 * p + 1];
            rgb[3 * p + 2] = rgba[4 * p + 2];
        }

        return rgb;
    }

    private static InvalidDataException Error(PngImage* image, string name)
    {
        var text = new ReadOnlySpan<byte>(image->Message, 64);
        int end = text.IndexOf((byte)0);
        string message = System.Text.Encoding.UTF8.GetString(end < 0 ? text : text[..end]);
        png_image_free(image);
        return new InvalidDataException($"'{name}' is not a valid PNG: {message}");
    }

    [LibraryImport(Library)]
    private static partial int png_image_begin_read_from_memory(PngImage* image, byte* memory, nuint size);

    [LibraryImport(Library)]
    private static partial int png_image_finish_read(PngImage* image, void* background, byte* buffer, int rowStride, void* colormap);

    [LibraryImport(Library)]
    private static partial void png_image_free(PngImage* image);
}
