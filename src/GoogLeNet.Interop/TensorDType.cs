using System.Buffers.Binary;

namespace GoogLeNet.Interop;

/// <summary>Element type of a tensor as stored in a file; values are always held as float32 in memory.</summary>
public enum TensorDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

internal static class TensorDTypes
{
    public static int SizeOf(TensorDType dtype) => dtype switch
    {
        TensorDType.F64 or TensorDType.I64 => 8,
        TensorDType.F32 or TensorDType.I32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 => 2,
        TensorDType.I8 or TensorDType.U8 or TensorDType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    public static bool IsFloatingPoint(TensorDType dtype) =>
        dtype is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16 or TensorDType.F64;

    /// <summary>The spelling used in safetensors headers ("F32", "BOOL", ...).</summary>
    public static string SafeTensorsName(TensorDType dtype) => dtype == TensorDType.Bool ? "BOOL" : dtype.ToString();

    public static bool TryParseSafeTensorsName(string name, out TensorDType dtype)
    {
        switch (name)
        {
            case "F32": dtype = TensorDType.F32; return true;
            case "F16": dtype = TensorDType.F16; return true;
            case "BF16": dtype = TensorDType.BF16; return true;
            case "F64": dtype = TensorDType.F64; return true;
            case "I64": dtype = TensorDType.I64; return true;
            case "I32": dtype = TensorDType.I32; return true;
            case "I16": dtype = TensorDType.I16; return true;
            case "I8": dtype = TensorDType.I8; return true;
            case "U8": dtype = TensorDType.U8; return true;
            case "BOOL": dtype = TensorDType.Bool; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Reads element <paramref name="index"/> of a little-endian buffer of <paramref name="dtype"/>.</summary>
    public static float ReadElement(ReadOnlySpan<byte> source, TensorDType dtype, long index)
    {
        int size = SizeOf(dtype);
        ReadOnlySpan<byte> b = source.Slice(checked((int)(index * size)), size);
        return dtype switch
        {
            TensorDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(b),
            TensorDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(b),
            TensorDType.BF16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b) << 16),
            TensorDType.F64 => (float)BinaryPrimitives.ReadDoubleLittleEndian(b),
            TensorDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(b),
            TensorDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(b),
            TensorDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(b),
            TensorDType.I8 => (sbyte)b[0],
            TensorDType.U8 => b[0],
            TensorDType.Bool => b[0] != 0 ? 1f : 0f,
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
        };
    }

    /// <summary>Decodes a whole little-endian buffer; <paramref name="destination"/> holds one float per element.</summary>
    public static void Decode(ReadOnlySpan<byte> source, TensorDType dtype, Span<float> destination)
    {
        if (dtype == TensorDType.F32 && BitConverter.IsLittleEndian)
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
            return;
        }
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = ReadElement(source, dtype, i);
        }
    }

    /// <summary>
    /// Encodes floats as F32, or as the integer type <paramref name="dtype"/>. Integer values must be whole and
    /// in range: an I64 tensor read from a file always is, so it is written back unchanged.
    /// </summary>
    public static void Encode(ReadOnlySpan<float> source, TensorDType dtype, Span<byte> destination, string tensorName)
    {
        int size = SizeOf(dtype);
        for (int i = 0; i < source.Length; i++)
        {
            Span<byte> b = destination.Slice(i * size, size);
            float v = source[i];
            if (dtype == TensorDType.F32)
            {
                BinaryPrimitives.WriteSingleLittleEndian(b, v);
                continue;
            }
            (double min, double max) = dtype switch
            {
                TensorDType.I64 => (-9223372036854775808.0, 9223372036854775807.0),
                TensorDType.I32 => (int.MinValue, int.MaxValue),
                TensorDType.I16 => (short.MinValue, short.MaxValue),
                TensorDType.I8 => (sbyte.MinValue, sbyte.MaxValue),
                TensorDType.U8 => (byte.MinValue, byte.MaxValue),
                TensorDType.Bool => (0, 1),
                _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not an integer dtype"),
            };
            // float(long.MaxValue) rounds up to 2^63, which does not fit: hence the strict upper bound for I64.
            bool outOfRange = dtype == TensorDType.I64 ? v < min || v >= 9223372036854775808.0 : v < min || v > max;
            if (float.IsNaN(v) || outOfRange || v != MathF.Truncate(v))
            {
                throw new ArgumentException(
                    $"tensor '{tensorName}' has dtype {dtype} but element {i} is {v}, expected a whole number in [{min}, {max}]");
            }
            switch (dtype)
            {
                case TensorDType.I64: BinaryPrimitives.WriteInt64LittleEndian(b, (long)v); break;
                case TensorDType.I32: BinaryPrimitives.WriteInt32LittleEndian(b, (int)v); break;
                case TensorDType.I16: BinaryPrimitives.WriteInt16LittleEndian(b, (short)v); break;
                case TensorDType.I8: b[0] = unchecked((byte)(sbyte)v); break;
                default: b[0] = (byte)v; break;
            }
        }
    }
}
