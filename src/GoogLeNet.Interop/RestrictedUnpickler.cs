using System.Buffers.Binary;
using System.Text;

namespace GoogLeNet.Interop;

/// <summary>
/// A pickle interpreter that only builds data. It understands the opcodes torch.save emits (protocol 2, plus
/// the protocol 4 framing and short forms) and resolves only the globals a state_dict needs; any other global
/// is rejected the moment it is named. Storages are recorded by key and never read here, so a rejected pickle
/// touches nothing else in the archive.
/// </summary>
internal sealed class RestrictedUnpickler
{
    internal sealed record Global(string Module, string Name)
    {
        public override string ToString() => $"{Module}.{Name}";
    }

    internal sealed record StorageRef(string Key, TensorDType DType, long ElementCount);

    internal sealed record TensorRef(StorageRef Storage, long Offset, long[] Size, long[] Stride);

    /// <summary>An insertion-ordered dict; keys are compared by value for strings and integers.</summary>
    internal sealed class PickleDict
    {
        private readonly Dictionary<object, int> _index = new();

        public List<KeyValuePair<object?, object?>> Items { get; } = new();

        public void Set(object? key, object? value)
        {
            if (key is null)
            {
                Items.Add(new(key, value));
                return;
            }
            if (_index.TryGetValue(key, out int i))
            {
                Items[i] = new(key, value);
                return;
            }
            _index[key] = Items.Count;
            Items.Add(new(key, value));
        }

        public bool TryGet(string key, out object? value)
        {
            if (_index.TryGetValue(key, out int i))
            {
                value = Items[i].Value;
                return true;
            }
            value = null;
            return false;
        }
    }

    private static readonly Global OrderedDict = new("collections", "OrderedDict");
    private static readonly Global RebuildTensorV2 = new("torch._utils", "_rebuild_tensor_v2");
    private static readonly Global RebuildParameter = new("torch._utils", "_rebuild_parameter");

    private static readonly Dictionary<string, TensorDType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = TensorDType.F32,
        ["HalfStorage"] = TensorDType.F16,
        ["BFloat16Storage"] = TensorDType.BF16,
        ["DoubleStorage"] = TensorDType.F64,
        ["LongStorage"] = TensorDType.I64,
        ["IntStorage"] = TensorDType.I32,
        ["ShortStorage"] = TensorDType.I16,
        ["CharStorage"] = TensorDType.I8,
        ["ByteStorage"] = TensorDType.U8,
        ["BoolStorage"] = TensorDType.Bool,
    };

    private const int MaxGlobalLineBytes = 256;
    private const int MaxDimensions = 64;

    // A state_dict pickle keeps a handful of values on the stack; this bounds what a hostile one can pile up.
    private const int MaxStackDepth = 1 << 20;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly byte[] _data;
    private readonly string _source;
    private readonly List<object?> _stack = new();
    private readonly List<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = new();
    private int _position;
    private int _opcodeStart;

    private RestrictedUnpickler(byte[] data, int start, string source)
    {
        _data = data;
        _position = start;
        _source = source;
    }

    /// <summary>Every storage the pickle's persistent ids declared, by key.</summary>
    private Dictionary<string, StorageRef> Storages { get; } = new(StringComparer.Ordinal);

    /// <summary>Interprets <paramref name="pickle"/>; <paramref name="source"/> names it in error messages.</summary>
    public static object? Load(byte[] pickle, string source) => new RestrictedUnpickler(pickle, 0, source).Run();

    /// <summary>
    /// Interprets the pickle that starts at <paramref name="start"/> of <paramref name="data"/>, one of several in a
    /// row (the legacy torch.save format); <paramref name="end"/> is the position after its STOP opcode.
    /// </summary>
    public static object? Load(byte[] data, int start, string source, out int end, out IReadOnlyDictionary<string, StorageRef> storages)
    {
        var unpickler = new RestrictedUnpickler(data, start, source);
        object? result = unpickler.Run();
        end = unpickler._position;
        storages = unpickler.Storages;
        return result;
    }

    private object? Run()
    {
        while (_position < _data.Length)
        {
            _opcodeStart = _position;
            byte op = _data[_position++];
            switch (op)
            {
                case 0x80: // PROTO
                    byte protocol = ReadByte();
                    if (protocol > 5)
                    {
                        throw Fail($"expected pickle protocol 2 to 5, found {protocol}");
                    }
                    break;
                case 0x95: // FRAME: only a read-ahead hint
                    ReadBytes(8);
                    break;
                case (byte)'.': // STOP
                    return Pop();
                case (byte)'}': Push(new PickleDict()); break;
                case (byte)']': Push(new List<object?>()); break;
                case (byte)')': Push(Array.Empty<object?>()); break;
                case (byte)'(': _marks.Add(_stack.Count); break;
                case (byte)'0': Pop(); break;
                case (byte)'1': PopMark(); break;
                case (byte)'2': Push(Peek()); break;
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break;
                case (byte)'K': Push((long)ReadByte()); break;
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break;
                case 0x8a: Push(ReadLong(ReadByte())); break; // LONG1
                case 0x8b: Push(ReadLong(ReadLength(4))); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break;
                case (byte)'X': Push(ReadUtf8(ReadLength(4))); break; // BINUNICODE
                case 0x8c: Push(ReadUtf8(ReadByte())); break; // SHORT_BINUNICODE
                case 0x8d: Push(ReadUtf8(ReadLength(8))); break; // BINUNICODE8
                case (byte)'T': Push(Encoding.Latin1.GetString(ReadBytes(ReadLength(4)))); break; // BINSTRING
                case (byte)'U': Push(Encoding.Latin1.GetString(ReadBytes(ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'B': Push(ReadBytes(ReadLength(4)).ToArray()); break; // BINBYTES
                case (byte)'C': Push(ReadBytes(ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case (byte)'t': Push(PopMark().ToArray()); break;
                case 0x85: Push(new[] { Pop() }); break;
                case 0x86: { object? b = Pop(); object? a = Pop(); Push(new[] { a, b }); break; }
                case 0x87: { object? c = Pop(); object? b = Pop(); object? a = Pop(); Push(new[] { a, b, c }); break; }
                case (byte)'c': Push(Resolve(ReadLine(), ReadLine())); break; // GLOBAL
                case 0x93: // STACK_GLOBAL
                {
                    object? name = Pop();
                    object? module = Pop();
                    if (module is not string m || name is not string n)
                    {
                        throw Fail($"expected two strings for STACK_GLOBAL, found {Describe(module)} and {Describe(name)}");
                    }
                    Push(Resolve(m, n));
                    break;
                }
                case (byte)'Q': Push(PersistentLoad(Pop())); break; // BINPERSID
                case (byte)'R': { object? args = Pop(); object? callable = Pop(); Push(Reduce(callable, args)); break; }
                case (byte)'b': { object? state = Pop(); Build(Peek(), state); break; }
                case (byte)'s': { object? value = Pop(); object? key = Pop(); ExpectDict(Peek(), "SETITEM").Set(key, value); break; }
                case (byte)'u': // SETITEMS
                {
                    List<object?> items = PopMark();
                    if (items.Count % 2 != 0)
                    {
                        throw Fail($"expected key/value pairs for SETITEMS, found {items.Count} items");
                    }
                    PickleDict dict = ExpectDict(Peek(), "SETITEMS");
                    for (int i = 0; i < items.Count; i += 2)
                    {
                        dict.Set(items[i], items[i + 1]);
                    }
                    break;
                }
                case (byte)'a': { object? item = Pop(); ExpectList(Peek(), "APPEND").Add(item); break; }
                case (byte)'e': { List<object?> items = PopMark(); ExpectList(Peek(), "APPENDS").AddRange(items); break; }
                case (byte)'q': _memo[ReadByte()] = Peek(); break; // BINPUT
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case (byte)'h': Push(MemoGet(ReadByte())); break; // BINGET
                case (byte)'j': Push(MemoGet(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))); break; // LONG_BINGET
                default:
                    throw Fail($"expected an opcode torch.save emits, found unsupported opcode 0x{op:X2}");
            }
        }
        throw Fail($"expected a STOP opcode, found the end of the {_data.Length}-byte pickle");
    }

    private object Resolve(string module, string name)
    {
        if (!IsDottedIdentifier(module) || !IsDottedIdentifier(name))
        {
            throw Fail($"expected a module and a name made of letters, digits, '_' and '.', found {Describe(module)} and {Describe(name)}");
        }
        var global = new Global(module, name);
        if (global == OrderedDict || global == RebuildTensorV2 || global == RebuildParameter)
        {
            return global;
        }
        if (module == "torch" && StorageTypes.ContainsKey(name))
        {
            return global;
        }
        // torch.save(model) pickles the module's classes; the weights are reachable only by running them.
        string wholeModel = module.StartsWith("torchvision.", StringComparison.Ordinal) || module.StartsWith("torch.nn.", StringComparison.Ordinal)
            ? "; the file holds a whole pickled model, not a state_dict: in Python, save torch.save(model.state_dict(), path) instead"
            : "";
        throw Fail($"global '{global}' is not allowed; a state_dict may only name collections.OrderedDict, "
            + $"torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage types{wholeModel}");
    }

    private static bool IsDottedIdentifier(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.');

    private StorageRef PersistentLoad(object? pid)
    {
        // torch.save's persistent id: ('storage', torch.XStorage, key, location, element count), and in the
        // legacy format a sixth item, the view of a larger storage, which torch since 0.4 always writes as None.
        if (pid is not object?[] { Length: 5 or 6 } t || t[0] is not "storage")
        {
            throw Fail($"expected a persistent id ('storage', type, key, location, size), found {Describe(pid)}");
        }
        if (t.Length == 6 && t[5] is not null)
        {
            throw Fail($"expected no storage view in the persistent id (storage views predate PyTorch 0.4), found {Describe(t[5])}");
        }
        if (t[1] is not Global { Module: "torch" } type || !StorageTypes.TryGetValue(type.Name, out TensorDType dtype))
        {
            throw Fail($"expected a torch.*Storage type in the persistent id, found {Describe(t[1])}");
        }
        if (t[2] is not string key || t[3] is not string)
        {
            throw Fail($"expected string key and location in the persistent id, found {Describe(t[2])} and {Describe(t[3])}");
        }
        if (t[4] is not long count || count < 0)
        {
            throw Fail($"expected a non-negative storage size in the persistent id, found {Describe(t[4])}");
        }
        var storage = new StorageRef(key, dtype, count);
        // Records the first declaration; ReadTensors checks that every tensor's reference agrees with it.
        Storages.TryAdd(key, storage);
        return storage;
    }

    private object Reduce(object? callable, object? args)
    {
        if (args is not object?[] a)
        {
            throw Fail($"expected a tuple of arguments for REDUCE, found {Describe(args)}");
        }
        if (callable is Global g && g == OrderedDict)
        {
            return MakeOrderedDict(a);
        }
        if (callable is Global h && h == RebuildTensorV2)
        {
            return RebuildTensor(a);
        }
        if (callable is Global k && k == RebuildParameter)
        {
            // (data, requires_grad, backward_hooks): a parameter holds the same values as its data.
            if (a.Length != 3 || a[0] is not TensorRef tensor)
            {
                throw Fail($"expected _rebuild_parameter(tensor, requires_grad, hooks), found {a.Length} arguments");
            }
            return tensor;
        }
        throw Fail($"expected a callable for REDUCE, found {Describe(callable)}");
    }

    private PickleDict MakeOrderedDict(object?[] args)
    {
        var dict = new PickleDict();
        if (args.Length == 0)
        {
            return dict;
        }
        if (args.Length == 1 && args[0] is List<object?> pairs)
        {
            foreach (object? pair in pairs)
            {
                object?[]? kv = pair switch
                {
                    object?[] { Length: 2 } tuple => tuple,
                    List<object?> { Count: 2 } list => list.ToArray(),
                    _ => null,
                };
                if (kv is null)
                {
                    throw Fail($"expected (key, value) pairs for OrderedDict, found {Describe(pair)}");
                }
                dict.Set(kv[0], kv[1]);
            }
            return dict;
        }
        throw Fail($"expected OrderedDict() or OrderedDict(pairs), found {args.Length} arguments");
    }

    private TensorRef RebuildTensor(object?[] a)
    {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.Length is < 6 or > 7)
        {
            throw Fail($"expected 6 or 7 arguments to _rebuild_tensor_v2, found {a.Length}");
        }
        if (a[0] is not StorageRef storage)
        {
            throw Fail($"expected a storage as the first argument of _rebuild_tensor_v2, found {Describe(a[0])}");
        }
        if (a[1] is not long offset || offset < 0)
        {
            throw Fail($"expected a non-negative storage offset, found {Describe(a[1])}");
        }
        long[] size = ReadIntTuple(a[2], "size");
        long[] stride = ReadIntTuple(a[3], "stride");
        if (size.Length != stride.Length)
        {
            throw Fail($"expected as many strides as dimensions, found size of {size.Length} and stride of {stride.Length}");
        }
        return new TensorRef(storage, offset, size, stride);
    }

    private long[] ReadIntTuple(object? value, string what)
    {
        if (value is not object?[] tuple || tuple.Length > MaxDimensions)
        {
            throw Fail($"expected a tuple of at most {MaxDimensions} integers for the tensor {what}, found {Describe(value)}");
        }
        var result = new long[tuple.Length];
        for (int i = 0; i < tuple.Length; i++)
        {
            if (tuple[i] is not long v || v < 0)
            {
                throw Fail($"expected non-negative integers in the tensor {what}, found {Describe(tuple[i])}");
            }
            result[i] = v;
        }
        return result;
    }

    private void Build(object? target, object? state)
    {
        // OrderedDict state carries state_dict._metadata (per-module versions), which loading does not need.
        if (target is PickleDict or TensorRef)
        {
            return;
        }
        throw Fail($"expected BUILD on a dict or tensor, found {Describe(target)} with state {Describe(state)}");
    }

    private PickleDict ExpectDict(object? value, string opcode) =>
        value as PickleDict ?? throw Fail($"expected a dict for {opcode}, found {Describe(value)}");

    private List<object?> ExpectList(object? value, string opcode) =>
        value as List<object?> ?? throw Fail($"expected a list for {opcode}, found {Describe(value)}");

    private object? MemoGet(long index) =>
        _memo.TryGetValue(index, out object? value) ? value : throw Fail($"expected memo entry {index} to exist, found none");

    private void Push(object? value)
    {
        if (_stack.Count >= MaxStackDepth)
        {
            throw Fail($"expected a stack of at most {MaxStackDepth} values, found more");
        }
        _stack.Add(value);
    }

    private object? Peek()
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        return _stack.Count > floor ? _stack[^1] : throw Fail("expected a value on the stack, found it empty");
    }

    private object? Pop()
    {
        object? value = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private List<object?> PopMark()
    {
        if (_marks.Count == 0)
        {
            throw Fail("expected a MARK on the stack, found none");
        }
        int mark = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        List<object?> items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private byte ReadByte() => ReadBytes(1)[0];

    private ReadOnlySpan<byte> ReadBytes(int count)
    {
        if (count > _data.Length - _position)
        {
            throw Fail($"expected {count} more bytes, found {_data.Length - _position} before the end of the pickle");
        }
        ReadOnlySpan<byte> span = _data.AsSpan(_position, count);
        _position += count;
        return span;
    }

    /// <summary>Reads a little-endian length and checks it against the bytes left, so nothing is sized from it blindly.</summary>
    private int ReadLength(int width)
    {
        ReadOnlySpan<byte> b = ReadBytes(width);
        ulong length = width switch
        {
            4 => BinaryPrimitives.ReadUInt32LittleEndian(b),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(b),
        };
        if (length > (ulong)(_data.Length - _position))
        {
            throw Fail($"expected a length within the {_data.Length - _position} bytes left, found {length}");
        }
        return (int)length;
    }

    private long ReadLong(int byteCount)
    {
        if (byteCount > 8)
        {
            throw Fail($"expected an integer of at most 8 bytes, found {byteCount} bytes");
        }
        ReadOnlySpan<byte> b = ReadBytes(byteCount);
        long value = 0;
        for (int i = byteCount - 1; i >= 0; i--)
        {
            value = (value << 8) | b[i];
        }
        if (byteCount is > 0 and < 8 && (b[^1] & 0x80) != 0)
        {
            value -= 1L << (8 * byteCount);
        }
        return value;
    }

    private string ReadUtf8(int length)
    {
        ReadOnlySpan<byte> bytes = ReadBytes(length);
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw Fail("expected a UTF-8 string, found invalid bytes");
        }
    }

    private string ReadLine()
    {
        int limit = Math.Min(_data.Length, _position + MaxGlobalLineBytes);
        int end = Array.IndexOf(_data, (byte)'\n', _position, limit - _position);
        if (end < 0)
        {
            throw Fail($"expected a newline-terminated name of at most {MaxGlobalLineBytes} bytes after GLOBAL");
        }
        string line = Encoding.Latin1.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"'{Escape(s)}'",
        long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
        Global g => $"global '{g}'",
        object?[] t => $"a tuple of {t.Length}",
        List<object?> l => $"a list of {l.Count}",
        PickleDict => "a dict",
        TensorRef => "a tensor",
        StorageRef => "a storage",
        _ => value.GetType().Name switch
        {
            "Boolean" => "a bool",
            "Double" => "a float",
            "Byte[]" => "bytes",
            var n => n,
        },
    };

    /// <summary>Shows at most 64 characters, non-printable ones as \uXXXX, so corrupt names cannot garble a message.</summary>
    private static string Escape(string s)
    {
        var text = new StringBuilder();
        foreach (char c in s.Length > 64 ? s[..64] : s)
        {
            text.Append(c is >= ' ' and <= '~' ? c.ToString() : $"\\u{(int)c:X4}");
        }
        return s.Length > 64 ? text.Append("...").ToString() : text.ToString();
    }

    internal static string DescribeValue(object? value) => Describe(value);

    private InvalidDataException Fail(string message) =>
        new($"{_source}: {message} (pickle opcode at byte {_opcodeStart})");
}
