using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GoogLeNet.Engine.Kernels;

/// <summary>
/// Single-precision matrix product C = op(A) op(B) (+ C when accumulating) (x row scale) (+ row bias) (ReLU),
/// all row-major. When <c>accumulate</c> is false, C is never read.
/// </summary>
/// <remarks>
/// BLIS structure: five loops around a micro-kernel whose only loop is over k. A is packed into
/// MR x KC column panels and B into KC x NR row panels, so the micro-kernel reads both
/// contiguously whatever the transposes and leading dimensions (power-of-two strides would
/// otherwise alias rows in L1); an untransposed B is read in place when A has few rows. Threads
/// own disjoint rectangles of C and every element is summed in the same k order with the same
/// instructions whichever rectangle holds it, so results do not depend on <see cref="MaxThreads"/>.
/// </remarks>
public static unsafe class Gemm
{
    // Register budgets. AVX-512 (32 zmm): a 6 x 64 tile is 24 accumulators + 4 vectors of the B
    // row + 1 broadcast of A = 29, no spills. AVX2 (16 ymm): a 6 x 16 tile is 12 accumulators + 2 B
    // vectors + 1 broadcast = 15. Six rows also fit GoogLeNet's channel counts (multiples of 8 or
    // 16) with little padding.
    private const int MR = 6;
    private const int Lanes = 16;
    // The runtime reports Vector512.IsHardwareAccelerated false on Intel's first AVX-512 cores
    // (Skylake-X, Cascade Lake), whose clock drops under 512-bit code, yet a product is all
    // multiply-adds: on a 2-core Cascade Lake VM SGEMM 4096^3 ran 88-120 GFLOP/s with the AVX2
    // kernel and 169-213 with the AVX-512 one, batch-32 inference 21-29 against 37-41 img/s. So the
    // kernel goes by the instruction set, not by the runtime's preference.
    private static bool s_wide = Avx512F.IsSupported;

    // Cache blocking. AVX2 (BLIS's Zen choice; KC 320 and 384 measured no better): the KC x 16 B
    // micro-panel (16 KiB) stays in L1 while the A micro-panels of an MC x KC block (144 KiB, L2)
    // stream past it; the KC x NC block of B lives in L3. AVX-512: the KC x 64 B micro-panel
    // (96 KiB) lives in L2 beside the A block; a prototype measured KC below 256 10-15% slower.
    private static int NrFor(bool wide) => wide ? 64 : 16;
    private static int KcFor(bool wide) => wide ? 384 : 256;
    private static int McFor(bool wide) => wide ? 96 : 144;
    private static int NcFor(bool wide) => wide ? 1024 : 4080;

    // Up to this many rows of A, reading an untransposed B in place beats packing it: packing
    // costs a pass over B per call while each packed panel would be reused only m / 6 times
    // (measured: 1.2-1.4x faster at m = 64..160, 0.75-0.86x at m >= 192).
    private const int DirectBMaxRows = 160;

    // ... and only while B's rows are short: the k rows a micro-panel reads in place are ldb
    // apart, and with long rows (a channel-major batch, ldb = n*h*w, often a multiple of 2 KiB)
    // they fall into a few L1 sets and evict each other; packing then measured 1.1-1.6x faster
    // (m = 64..128, ldb = 12544..100352, one thread).
    private const int DirectBMaxLeadingDimension = 4096;

    // Whatever the rows of A, B is packed when its leading dimension is a multiple of 1024 floats
    // (4 KiB): a panel's kc rows then fall into at most 16 of a 512 KiB L2's 1024 sets, too few to
    // keep them until the next micro-tile reuses them. Measured on linear layers' dX = dY W (two
    // threads, median of 11): m = 16-32 at ldb 1024 and 2048 1.2-1.5x faster packed, m = 128
    // at ldb 2048 1.7-2.8x. A 2 KiB multiple such as 25088 (the in-place m <= 32 case below)
    // spreads over 32 sets and still won in place.
    private const int AliasingLeadingDimension = 1024;

    // With this few rows of A, a packed panel of B would serve at most six micro-tiles, and
    // reading B in place wins even with long rows (m = 16-32 at ldb = 6272 and 25088: 1.1-1.4x).
    private const int DirectBAnyRowsMaxRows = 32;

    // Below this many multiply-adds, waking a worker costs more than it saves.
    private const long MinParallelWork = 1L << 19;

    private static int s_maxThreads = Environment.ProcessorCount;

    /// <summary>
    /// Width in bits of the vectors the micro-kernel multiplies with: 512 (AVX-512) where the CPU
    /// has AVX-512F, otherwise 256 (AVX2, or a scalar loop without it). Setting 256 on an AVX-512
    /// CPU runs the AVX2 kernel, to measure one against the other. Both sum every element in k
    /// order with fused multiply-adds, so they give identical results up to k = 256; deeper sums
    /// are cut into slices at different depths (384 and 256, each width's best) and differ by
    /// rounding.
    /// </summary>
    /// <exception cref="PlatformNotSupportedException">512 on a CPU without AVX-512F.</exception>
    public static int VectorBits
    {
        get => s_wide ? 512 : 256;
        set
        {
            if (value != 256 && value != 512)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The GEMM vector width is 256 or 512 bits.");
            }
            if (value == 512 && !Avx512F.IsSupported)
            {
                throw new PlatformNotSupportedException("512-bit vectors need a CPU with AVX-512F.");
            }
            s_wide = value == 512;
        }
    }

    /// <summary>Upper bound on the threads one product uses (the caller's thread included).</summary>
    public static int MaxThreads
    {
        get => s_maxThreads;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            s_maxThreads = value;
        }
    }

    // a is (m, k) row-major with leading dimension lda, or (k, m) when transA;
    // b is (k, n) with ldb, or (n, k) when transB; c is (m, n) with ldc.
    // rowScale, when not empty, has m entries that multiply each row of the product (a BatchNorm
    // folded into the epilogue rather than into A, so the weights are never copied); rowBias,
    // when not empty, has m entries added after that, before the optional ReLU.
    public static void Multiply(
        bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb,
        Span<float> c, int ldc, bool accumulate,
        ReadOnlySpan<float> rowBias = default, bool relu = false, ReadOnlySpan<float> rowScale = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (m == 0 || n == 0)
        {
            return;
        }
        CheckOperand(nameof(a), a.Length, lda, transA ? k : m, transA ? m : k);
        CheckOperand(nameof(b), b.Length, ldb, transB ? n : k, transB ? k : n);
        CheckOperand(nameof(c), c.Length, ldc, m, n);
        CheckEpilogue(m, accumulate, rowBias, rowScale);

        fixed (float* pa = a, pb = b, pc = c, pBias = rowBias, pScale = rowScale)
        {
            var problem = new Problem(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate,
                rowBias.IsEmpty ? null : pBias, relu, rowScale.IsEmpty ? null : pScale);
            if (k == 0)
            {
                problem.EpilogueOnly();
                return;
            }
            if ((m == 1 || n == 1) && problem.TryMatrixVector())
            {
                return;
            }
            if (DepthChunks(m, n, k) is int chunks and > 1)
            {
                MultiplyInDepthChunks(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate,
                    rowBias.IsEmpty ? null : pBias, relu, rowScale.IsEmpty ? null : pScale, chunks, null);
                return;
            }
            Run(in problem, m, n, k);
        }
    }

    // One product on as many threads as its size repays, or on the caller's alone when the
    // engine's threads are busy (a product inside a parallel loop).
    private static void Run(in Problem problem, int m, int n, int k)
    {
        int threads = (long)m * n * k < MinParallelWork ? 1 : Math.Min(MaxThreads, Environment.ProcessorCount);
        if (threads <= 1 || !Parallelism.TryRun(in problem, threads))
        {
            problem.RunPart(0, 1);
        }
    }

    // A product whose k dwarfs m and n (a convolution's weight gradient: k = the batch's pixels)
    // is split into k chunks summed afterwards: split by rows or columns, every thread would pack
    // the whole of the other operand (the stem's 147 x 401408 im2col matrix, twice). The chunk
    // count follows from k alone, so the result does not depend on the thread count either.
    private const int DepthChunkMin = 4096;

    internal static int DepthChunks(int m, int n, int k) =>
        k >= 2 * DepthChunkMin && k >= 32L * Math.Max(m, n) && (long)m * n * k >= MinParallelWork
            ? Math.Min(k / DepthChunkMin, 16)
            : 1;

    [ThreadStatic]
    private static float[]? t_depthPartials;

    // C = epilogue(C (when accumulating) + P_0 + ... + P_{chunks-1}), P_i the product over the
    // i-th k chunk, computed side by side into scratch and added in chunk order.
    private static void MultiplyInDepthChunks(
        bool transA, bool transB, int m, int n, int k, float* a, int lda, float* b, int ldb,
        float* c, int ldc, bool accumulate, float* bias, bool relu, float* scale, int chunks, Convolution.ImplicitColumns? columns)
    {
        long plane = (long)m * n;
        long needed = plane * chunks;
        if (t_depthPartials is null || t_depthPartials.Length < needed)
        {
            t_depthPartials = GC.AllocateUninitializedArray<float>((int)needed, pinned: true);
        }
        fixed (float* partials = t_depthPartials)
        {
            var work = new DepthSplit(transA, transB, m, n, k, a, lda, b, ldb, partials, chunks, columns);
            int threads = Math.Min(Math.Min(MaxThreads, Environment.ProcessorCount), chunks);
            if (threads <= 1 || !Parallelism.TryRun(in work, threads))
            {
                work.RunPart(0, 1);
            }
            for (int i = 0; i < m; i++)
            {
                var row = new Span<float>(c + (long)i * ldc, n);
                var first = new ReadOnlySpan<float>(partials + (long)i * n, n);
                if (accumulate)
                {
                    TensorPrimitives.Add(row, first, row);
                }
                else
                {
                    first.CopyTo(row);
                }
                for (int chunk = 1; chunk < chunks; chunk++)
                {
                    TensorPrimitives.Add(row, new ReadOnlySpan<float>(partials + chunk * plane + (long)i * n, n), row);
                }
                if (scale != null)
                {
                    TensorPrimitives.Multiply(row, scale[i], row);
                }
                if (bias != null)
                {
                    TensorPrimitives.Add(row, bias[i], row);
                }
                if (relu)
                {
                    TensorPrimitives.Max(row, 0f, row);
                }
            }
        }
    }

    // The chunks of a depth split, shared out whole among the threads.
    private readonly struct DepthSplit(
        bool transA, bool transB, int m, int n, int k, float* a, int lda, float* b, int ldb, float* partials, int chunks,
        Convolution.ImplicitColumns? columns) : IParallelWork
    {
        public void RunPart(int part, int parts)
        {
            for (int chunk = chunks * part / parts; chunk < chunks * (part + 1) / parts; chunk++)
            {
                int k0 = (int)((long)k * chunk / chunks);
                int k1 = (int)((long)k * (chunk + 1) / chunks);
                float* aChunk = transA ? a + (long)k0 * lda : a + k0;
                float* bChunk = transB ? b + k0 : b + (long)k0 * ldb;
                var problem = new Problem(transA, transB, m, n, k1 - k0, aChunk, lda, columns.HasValue ? null : bChunk, ldb,
                    partials + (long)chunk * m * n, n, accumulate: false, bias: null, relu: false, scale: null, columns, k0);
                problem.RunPart(0, 1);
            }
        }
    }

    /// <summary>Whether an untransposed B with this leading dimension is read in place (unpacked) when A has m rows.</summary>
    public static bool ReadsBInPlace(int m, int ldb) =>
        m <= DirectBMaxRows && ldb % AliasingLeadingDimension != 0
        && (ldb <= DirectBMaxLeadingDimension || m <= DirectBAnyRowsMaxRows);

    // c (m, n) = a (m, k) * col (k, n) + rowBias, where col is a convolution's im2col matrix that
    // PackB reads from the image (Convolution.ImplicitColumns) instead of from memory.
    internal static void MultiplyImplicit(
        int m, int n, int k, ReadOnlySpan<float> a, int lda, in Convolution.ImplicitColumns b,
        Span<float> c, int ldc, bool accumulate, ReadOnlySpan<float> rowBias = default, bool relu = false,
        ReadOnlySpan<float> rowScale = default)
    {
        if (m == 0 || n == 0)
        {
            return;
        }
        if (b.Rows != k)
        {
            throw new ArgumentException($"The implicit columns have {b.Rows} rows, the product needs k = {k}.", nameof(b));
        }
        CheckOperand(nameof(a), a.Length, lda, m, k);
        CheckOperand(nameof(c), c.Length, ldc, m, n);
        CheckEpilogue(m, accumulate, rowBias, rowScale);
        fixed (float* pa = a, pc = c, pBias = rowBias, pScale = rowScale)
        {
            var problem = new Problem(false, false, m, n, k, pa, lda, null, n, pc, ldc, accumulate,
                rowBias.IsEmpty ? null : pBias, relu, rowScale.IsEmpty ? null : pScale, b);
            Run(in problem, m, n, k);
        }
    }

    // c (m, n) (+)= a (m, k) * col (n, k)^T: a convolution's weight gradient dW = dY col^T, with
    // col's rows generated from the image (Convolution.ImplicitColumns) while B is packed.
    internal static void MultiplyImplicitTransposed(
        int m, int n, int k, ReadOnlySpan<float> a, int lda, in Convolution.ImplicitColumns b,
        Span<float> c, int ldc, bool accumulate)
    {
        if (m == 0 || n == 0 || k == 0)
        {
            if (!accumulate)
            {
                for (int i = 0; i < m; i++)
                {
                    c.Slice(i * ldc, n).Clear();
                }
            }
            return;
        }
        if (b.Rows != n)
        {
            throw new ArgumentException($"The implicit columns have {b.Rows} rows, the product needs n = {n}.", nameof(b));
        }
        CheckOperand(nameof(a), a.Length, lda, m, k);
        CheckOperand(nameof(c), c.Length, ldc, m, n);
        fixed (float* pa = a, pc = c)
        {
            if (DepthChunks(m, n, k) is int chunks and > 1)
            {
                MultiplyInDepthChunks(false, true, m, n, k, pa, lda, null, k, pc, ldc, accumulate, null, false, null, chunks, b);
                return;
            }
            Run(new Problem(false, true, m, n, k, pa, lda, null, k, pc, ldc, accumulate, null, false, null, b), m, n, k);
        }
    }

    private static void CheckEpilogue(int m, bool accumulate, ReadOnlySpan<float> rowBias, ReadOnlySpan<float> rowScale)
    {
        if (!rowBias.IsEmpty && rowBias.Length < m)
        {
            throw new ArgumentException($"rowBias must have m = {m} entries, found {rowBias.Length}.", nameof(rowBias));
        }
        if (!rowScale.IsEmpty && rowScale.Length < m)
        {
            throw new ArgumentException($"rowScale must have m = {m} entries, found {rowScale.Length}.", nameof(rowScale));
        }
        if (!rowScale.IsEmpty && accumulate)
        {
            // The scale applies to the finished sum; C's previous contents would be scaled too.
            throw new ArgumentException("rowScale cannot be combined with accumulate.", nameof(rowScale));
        }
    }

    private static void CheckOperand(string name, int length, int ld, int rows, int cols)
    {
        if (ld < Math.Max(cols, 1))
        {
            throw new ArgumentException($"Leading dimension of {name} must be at least {cols}, found {ld}.", name);
        }
        long required = rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
        if (length < required)
        {
            throw new ArgumentException($"{name} must hold at least {required} elements for a {rows} x {cols} view with leading dimension {ld}, found {length}.", name);
        }
    }

    private readonly struct Problem : IParallelWork
    {
        private readonly float* _a;
        private readonly float* _b;
        private readonly float* _c;
        private readonly float* _bias;
        private readonly float* _scale;
        private readonly int _lda;
        private readonly int _ldb;
        private readonly int _ldc;
        private readonly int _m;
        private readonly int _n;
        private readonly int _k;
        private readonly bool _transA;
        private readonly bool _transB;
        private readonly bool _accumulate;
        private readonly bool _relu;
        private readonly bool _implicitB;
        private readonly Convolution.ImplicitColumns _columns;

        // With an implicit, transposed B: the im2col column (pixel) where k = 0 of this product lies.
        private readonly int _columnOffset;

        // The vector width is read once per product, so setting VectorBits while another thread
        // multiplies changes only the products that start after it.
        private readonly bool _wide;
        private int NR => NrFor(_wide);
        private int KC => KcFor(_wide);
        private int MC => McFor(_wide);
        private int NC => NcFor(_wide);

        public Problem(bool transA, bool transB, int m, int n, int k, float* a, int lda, float* b, int ldb,
            float* c, int ldc, bool accumulate, float* bias, bool relu, float* scale, Convolution.ImplicitColumns? columns = null,
            int columnOffset = 0)
        {
            _columnOffset = columnOffset;
            _wide = s_wide;
            _implicitB = columns.HasValue;
            _columns = columns.GetValueOrDefault();
            _transA = transA;
            _transB = transB;
            _m = m;
            _n = n;
            _k = k;
            _a = a;
            _lda = lda;
            _b = b;
            _ldb = ldb;
            _c = c;
            _ldc = ldc;
            _accumulate = accumulate;
            _bias = bias;
            _scale = scale;
            _relu = relu;
        }

        // Splits C into `parts` rectangles along its longer side, in whole micro-tiles, so the
        // operand that every part must pack whole (B for row strips, A for column strips) is the
        // smaller one.
        public void RunPart(int part, int parts)
        {
            int rowUnits = (_m + MR - 1) / MR;
            int columnUnits = (_n + Lanes - 1) / Lanes;
            if (parts == 1)
            {
                RunBlock(0, _m, 0, _n);
            }
            else if ((_m >= _n && rowUnits >= 2 * parts) || columnUnits < 2 * parts)
            {
                int i0 = Math.Min(_m, rowUnits * part / parts * MR);
                int i1 = Math.Min(_m, rowUnits * (part + 1) / parts * MR);
                RunBlock(i0, i1, 0, _n);
            }
            else
            {
                int j0 = Math.Min(_n, columnUnits * part / parts * Lanes);
                int j1 = Math.Min(_n, columnUnits * (part + 1) / parts * Lanes);
                RunBlock(0, _m, j0, j1);
            }
        }

        // The five BLIS loops over the rectangle rows [i0, i1) x columns [j0, j1) of C.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RunBlock(int i0, int i1, int j0, int j1)
        {
            if (i0 >= i1 || j0 >= j1)
            {
                return;
            }
            PackBuffers buffers = PackBuffers.ForCurrentThread();
            float* packedA = buffers.A;
            float* packedB = buffers.B;
            float* edgeTile = buffers.EdgeTile;
            float* edgeBias = buffers.EdgeBias;
            float* edgeScale = buffers.EdgeScale;

            // Equal k slices (576 = 3 x 192 rather than 256 + 256 + 64) keep every pass over C long.
            int slices = (_k + KC - 1) / KC;
            int kcStep = (_k + slices - 1) / slices;

            // With few rows of A, copying B would cost as much as multiplying by it, so whole
            // panels of an untransposed B are read in place; only the ragged last panel is packed.
            bool directB = !_implicitB && !_transB && ReadsBInPlace(_m, _ldb);

            // The A block keeps its L2 budget (MC x KC floats) when k slices are thinner, and
            // its rows are split evenly (192 = 2 x 96 rather than 144 + 48).
            int mcMax = Math.Max(MR, MC * KC / kcStep / MR * MR);
            int rowBlocks = (i1 - i0 + mcMax - 1) / mcMax;
            int mcStep = ((i1 - i0 + rowBlocks - 1) / rowBlocks + MR - 1) / MR * MR;

            for (int jc = j0; jc < j1; jc += NC) // loop 5: NC-wide column blocks of B and C
            {
                int nc = Math.Min(NC, j1 - jc);
                for (int pc = 0; pc < _k; pc += kcStep) // loop 4: KC-deep slices of the k sum
                {
                    int kc = Math.Min(kcStep, _k - pc);
                    bool first = pc == 0;
                    bool last = pc + kc == _k;
                    PackB(pc, kc, jc, nc, packedB, directB);
                    for (int ic = i0; ic < i1; ic += mcStep) // loop 3: MC-tall row blocks of A and C
                    {
                        int mc = Math.Min(mcStep, i1 - ic);
                        PackA(ic, mc, pc, kc, packedA);
                        for (int jr = 0; jr < nc; jr += NR) // loop 2: NR-wide panels of B (packed or in place)
                        {
                            int nr = Math.Min(NR, nc - jr);
                            int vectors = (nr + Lanes - 1) / Lanes;
                            bool direct = directB && nr == NR;
                            float* bPanel = direct ? _b + (long)pc * _ldb + jc + jr : packedB + (long)jr * kc;
                            int bStride = direct ? _ldb : vectors * Lanes;
                            for (int ir = 0; ir < mc; ir += MR) // loop 1: MR-tall panels of packed A
                            {
                                int mr = Math.Min(MR, mc - ir);
                                float* aPanel = packedA + (long)ir * kc;
                                int row = ic + ir;
                                int col = jc + jr;
                                MicroTile(kc, aPanel, bPanel, bStride, vectors, row, mr, col, nr, first, last, edgeTile, edgeBias, edgeScale);
                            }
                        }
                    }
                }
            }
        }

        // Full tiles go straight to C; ragged ones go through a scratch tile so the micro-kernel
        // (and therefore the arithmetic) is the same for every element.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void MicroTile(int kc, float* aPanel, float* bPanel, int bStride, int vectors, int row, int mr, int col, int nr,
            bool first, bool last, float* edgeTile, float* edgeBias, float* edgeScale)
        {
            bool loadC = !first || _accumulate;
            float* bias = last && _bias != null ? _bias + row : null;
            float* scale = last && _scale != null ? _scale + row : null;
            bool relu = last && _relu;
            float* cTile = _c + (long)row * _ldc + col;
            if (mr == MR && nr == vectors * Lanes)
            {
                Kernel(_wide, vectors, kc, aPanel, bPanel, bStride, cTile, _ldc, loadC, scale, bias, relu);
                return;
            }

            int width = vectors * Lanes;
            new Span<float>(edgeTile, MR * width).Clear();
            if (loadC)
            {
                for (int r = 0; r < mr; r++)
                {
                    new ReadOnlySpan<float>(cTile + (long)r * _ldc, nr).CopyTo(new Span<float>(edgeTile + r * width, nr));
                }
            }
            if (bias != null)
            {
                for (int r = 0; r < MR; r++)
                {
                    edgeBias[r] = r < mr ? bias[r] : 0f;
                }
                bias = edgeBias;
            }
            if (scale != null)
            {
                for (int r = 0; r < MR; r++)
                {
                    edgeScale[r] = r < mr ? scale[r] : 0f;
                }
                scale = edgeScale;
            }
            if (!_wide && nr <= 8 && Vector256.IsHardwareAccelerated)
            {
                // A ragged panel of at most 8 columns (n = 49, 196) needs half the multiply-adds.
                Kernel256Half(kc, aPanel, bPanel, bStride, edgeTile, width, loadC, scale, bias, relu);
            }
            else
            {
                Kernel(_wide, vectors, kc, aPanel, bPanel, bStride, edgeTile, width, loadC, scale, bias, relu);
            }
            for (int r = 0; r < mr; r++)
            {
                new ReadOnlySpan<float>(edgeTile + r * width, nr).CopyTo(new Span<float>(cTile + (long)r * _ldc, nr));
            }
        }

        // Packed A: for each MR-row panel, kc columns of MR consecutive floats (rows past m are zero).
        private void PackA(int ic, int mc, int pc, int kc, float* dst)
        {
            for (int ir = 0; ir < mc; ir += MR)
            {
                int mr = Math.Min(MR, mc - ir);
                float* panel = dst + (long)ir * kc;
                if (_transA)
                {
                    float* src = _a + (long)pc * _lda + ic + ir;
                    for (int p = 0; p < kc; p++)
                    {
                        float* s = src + (long)p * _lda;
                        float* d = panel + p * MR;
                        if (mr == MR)
                        {
                            Vector128.Load(s).Store(d);
                            *(double*)(d + 4) = *(double*)(s + 4);
                            continue;
                        }
                        for (int r = 0; r < MR; r++)
                        {
                            d[r] = r < mr ? s[r] : 0f;
                        }
                    }
                    continue;
                }

                float* rows = _a + (long)(ic + ir) * _lda + pc;
                int p0 = 0;
                if (mr == MR && Avx.IsSupported)
                {
                    // Eight k at a time: transpose 6 rows (plus 2 zero rows) x 8 columns.
                    for (; p0 + 8 <= kc; p0 += 8)
                    {
                        float* s = rows + p0;
                        Transpose8x8(
                            Vector256.Load(s), Vector256.Load(s + _lda), Vector256.Load(s + 2 * _lda),
                            Vector256.Load(s + 3 * _lda), Vector256.Load(s + 4 * _lda), Vector256.Load(s + 5 * _lda),
                            Vector256<float>.Zero, Vector256<float>.Zero,
                            out var o0, out var o1, out var o2, out var o3, out var o4, out var o5, out var o6, out var o7);
                        float* d = panel + p0 * MR;
                        StoreSix(d, o0);
                        StoreSix(d + MR, o1);
                        StoreSix(d + 2 * MR, o2);
                        StoreSix(d + 3 * MR, o3);
                        StoreSix(d + 4 * MR, o4);
                        StoreSix(d + 5 * MR, o5);
                        StoreSix(d + 6 * MR, o6);
                        StoreSix(d + 7 * MR, o7);
                    }
                }
                for (int r = 0; r < MR; r++)
                {
                    float* d = panel + r;
                    float* s = rows + (long)r * _lda;
                    for (int p = p0; p < kc; p++)
                    {
                        d[p * MR] = r < mr ? s[p] : 0f;
                    }
                }
            }
        }

        // Packed B: for each NR-column panel, kc rows of its width rounded up to whole vectors
        // (columns past n are zero).
        private void PackB(int pc, int kc, int jc, int nc, float* dst, bool directB)
        {
            if (_implicitB && !_transB)
            {
                PackImplicitB(pc, kc, jc, nc, dst);
                return;
            }
            if (!_transB && !directB && Vector256.IsHardwareAccelerated)
            {
                // Row by row so that B is read sequentially; each row scatters whole vectors
                // across the panels.
                int fullPanels = nc / NR;
                for (int p = 0; p < kc; p++)
                {
                    float* src = _b + (long)(pc + p) * _ldb + jc;
                    float* d = dst + (long)p * NR;
                    for (int panel = 0; panel < fullPanels; panel++)
                    {
                        float* s = src + panel * NR;
                        float* t = d + (long)panel * NR * kc;
                        for (int v = 0; v < NR; v += 8)
                        {
                            Vector256.Store(Vector256.Load(s + v), t + v);
                        }
                    }
                }
                if (fullPanels * NR == nc)
                {
                    return;
                }
            }
            int firstPanel = !_transB && !directB && Vector256.IsHardwareAccelerated ? nc / NR * NR : 0;
            for (int jr = firstPanel; jr < nc; jr += NR)
            {
                int nr = Math.Min(NR, nc - jr);
                if (directB && nr == NR)
                {
                    continue;
                }
                int width = (nr + Lanes - 1) / Lanes * Lanes;
                float* panel = dst + (long)jr * kc;
                if (!_transB)
                {
                    float* src = _b + (long)pc * _ldb + jc + jr;
                    for (int p = 0; p < kc; p++)
                    {
                        float* d = panel + p * width;
                        new ReadOnlySpan<float>(src + (long)p * _ldb, nr).CopyTo(new Span<float>(d, nr));
                        new Span<float>(d + nr, width - nr).Clear();
                    }
                    continue;
                }

                // op(B)[p, j] = b[j * ldb + p]: transpose 8 x 8 blocks, then the ragged edges. An
                // implicit B has the panel's rows of col generated into a buffer first.
                float* cols;
                long ldb;
                if (_implicitB)
                {
                    cols = PackBuffers.ForCurrentThread().Row;
                    ldb = kc;
                    for (int j = 0; j < nr; j++)
                    {
                        _columns.FillRow(jc + jr + j, _columnOffset + pc, kc, cols + j * ldb);
                    }
                }
                else
                {
                    cols = _b + (long)(jc + jr) * _ldb + pc;
                    ldb = _ldb;
                }
                int j8 = Avx.IsSupported ? nr / 8 * 8 : 0;
                int p8 = Avx.IsSupported ? kc / 8 * 8 : 0;
                for (int j = 0; j < j8; j += 8)
                {
                    for (int p = 0; p < p8; p += 8)
                    {
                        TransposeBlock(cols + j * ldb + p, ldb, 8, panel + p * width + j, width);
                    }
                }
                for (int j = 0; j < width; j++)
                {
                    float* d = panel + j;
                    float* s = cols + j * ldb;
                    for (int p = j < j8 ? p8 : 0; p < kc; p++)
                    {
                        d[p * width] = j < nr ? s[p] : 0f;
                    }
                }
            }
        }

        // Each row of the k slice is generated into a row buffer in L1, then dealt out to the
        // panels in whole vectors, as PackB does with a stored B.
        private void PackImplicitB(int pc, int kc, int jc, int nc, float* dst)
        {
            float* row = PackBuffers.ForCurrentThread().Row;
            int fullPanels = nc / NR;
            int tail = nc - fullPanels * NR;
            int tailWidth = (tail + Lanes - 1) / Lanes * Lanes;
            for (int p = 0; p < kc; p++)
            {
                _columns.FillRow(pc + p, jc, nc, row);
                for (int panel = 0; panel < fullPanels; panel++)
                {
                    float* source = row + panel * NR;
                    float* target = dst + (long)panel * NR * kc + (long)p * NR;
                    for (int v = 0; v < NR; v += 8)
                    {
                        Vector256.Store(Vector256.Load(source + v), target + v);
                    }
                }
                if (tail > 0)
                {
                    float* target = dst + (long)fullPanels * NR * kc + (long)p * tailWidth;
                    new ReadOnlySpan<float>(row + fullPanels * NR, tail).CopyTo(new Span<float>(target, tail));
                    new Span<float>(target + tail, tailWidth - tail).Clear();
                }
            }
        }

        // m == 1 or n == 1 (a fully connected layer on one sample): tiles would be mostly padding,
        // so the product is either dot products along k or row updates (axpy), whichever reads
        // the matrix operand contiguously. Results still never depend on the thread count: this
        // path is chosen from the shape alone and runs on the calling thread.
        public bool TryMatrixVector()
        {
            bool outputIsColumn = _n == 1;
            int length = outputIsColumn ? _m : _n;
            PackBuffers buffers = PackBuffers.ForCurrentThread();
            if (_k > buffers.BFloats || length > buffers.AFloats)
            {
                return false;
            }

            // vector[p]: the column of op(B), or the row of op(A), as contiguous floats.
            float* vector = buffers.B;
            float* source = outputIsColumn ? _b : _a;
            int step = outputIsColumn ? (_transB ? 1 : _ldb) : (_transA ? _lda : 1);
            for (int p = 0; p < _k; p++)
            {
                vector[p] = source[(long)p * step];
            }
            var x = new ReadOnlySpan<float>(vector, _k);

            float* sums = buffers.A;
            var y = new Span<float>(sums, length);
            bool dotForm = outputIsColumn ? !_transA : _transB;
            float* matrix = outputIsColumn ? _a : _b;
            int ld = outputIsColumn ? _lda : _ldb;
            if (dotForm)
            {
                for (int t = 0; t < length; t++)
                {
                    y[t] = TensorPrimitives.Dot(new ReadOnlySpan<float>(matrix + (long)t * ld, _k), x);
                }
            }
            else
            {
                y.Clear();
                for (int p = 0; p < _k; p++)
                {
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(matrix + (long)p * ld, length), x[p], y, y);
                }
            }

            for (int t = 0; t < length; t++)
            {
                float* target = outputIsColumn ? _c + (long)t * _ldc : _c + t;
                float v = _accumulate ? y[t] + *target : y[t];
                if (_scale != null)
                {
                    v *= _scale[outputIsColumn ? t : 0];
                }
                if (_bias != null)
                {
                    v += _bias[outputIsColumn ? t : 0];
                }
                *target = _relu && v < 0f ? 0f : v;
            }
            return true;
        }

        // k == 0: C = (C or 0) x scale + bias, then ReLU.
        public void EpilogueOnly()
        {
            for (int i = 0; i < _m; i++)
            {
                float* row = _c + (long)i * _ldc;
                float add = _bias != null ? _bias[i] : 0f;
                float multiply = _scale != null ? _scale[i] : 1f;
                for (int j = 0; j < _n; j++)
                {
                    float v = (_accumulate ? row[j] : 0f) * multiply + add;
                    row[j] = _relu && v < 0f ? 0f : v;
                }
            }
        }
    }

    /// <summary>Rows of the micro-tile, and of the panels that <see cref="MicroKernel"/> reads A from.</summary>
    internal const int TileRows = MR;

    /// <summary>Columns of the micro-tile that <see cref="MicroKernel"/> computes.</summary>
    internal const int TileColumns = Lanes;

    /// <summary>Most 16-column panels one <see cref="MicroKernel"/> call takes.</summary>
    internal const int MaxTilePanels = 4;

    // The AVX-512 kernel's B panel (kc x 64 floats, 96 KiB at kc = 384) does not fit L1, so every
    // pass over it streams from L2, which the hardware prefetchers did not keep ahead of: its
    // rows this many k steps ahead are prefetched by hand. On the Cascade Lake VM,
    // `bench --gemm 2048x2048x2048` alternating: 130-173 GFLOP/s without, 191-198 with 4 rows,
    // 182-203 with 12 (1 thread: 82-88 -> 95-105).
    private const int PrefetchDistance = 8;

    // c (6, 16 * panels) = a (6, kc) b (kc, 16 * panels), panels 1 to 4, for callers that keep
    // their own operands in the packed form: a is a packed panel (a[p * 6 + r]), b's rows are
    // bStride floats apart, c's ldc apart. Runs the same micro-kernel as Multiply, so sums follow
    // the same order; the AVX-512 kernel takes all panels at once (24 accumulators for 4), the
    // AVX2 one a panel at a time.
    // With scale and bias (six entries each, or null) and relu, the tile gets Multiply's epilogue.
    internal static void MicroKernel(int panels, int kc, float* a, float* b, int bStride, float* c, int ldc,
        float* scale = null, float* bias = null, bool relu = false, bool accumulate = false)
    {
        Debug.Assert(panels is >= 1 and <= MaxTilePanels);
        Kernel(s_wide, panels, kc, a, b, bStride, c, ldc, loadC: accumulate, scale, bias, relu);
    }

    // One MR x (vectors * 16) tile of C: c = aPanel * bPanel over kc (+ c when loadC), then
    // + bias per row and ReLU when asked. bPanel rows are bStride floats apart. C is added after
    // the k loop, and its rows are prefetched before it, so a tile of C that has left the cache
    // does not stall the loop.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Kernel(bool wide, int vectors, int kc, float* a, float* b, int bStride, float* c, int ldc, bool loadC, float* scale, float* bias, bool relu)
    {
        if (wide)
        {
            switch (vectors)
            {
                case 4: Kernel512<Four>(kc, a, b, bStride, c, ldc, loadC, scale, bias, relu); break;
                case 3: Kernel512<Three>(kc, a, b, bStride, c, ldc, loadC, scale, bias, relu); break;
                case 2: Kernel512<Two>(kc, a, b, bStride, c, ldc, loadC, scale, bias, relu); break;
                default: Kernel512<One>(kc, a, b, bStride, c, ldc, loadC, scale, bias, relu); break;
            }
        }
        else
        {
            for (int v = 0; v < vectors; v++)
            {
                if (Vector256.IsHardwareAccelerated)
                {
                    Kernel256(kc, a, b + v * Lanes, bStride, c + v * Lanes, ldc, loadC, scale, bias, relu);
                }
                else
                {
                    KernelScalar(kc, a, b + v * Lanes, bStride, c + v * Lanes, ldc, loadC, scale, bias, relu);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchTile(float* c, int ldc, int width)
    {
        if (Sse.IsSupported)
        {
            for (int r = 0; r < MR; r++)
            {
                Sse.Prefetch0(c + r * ldc);
                Sse.Prefetch0(c + r * ldc + width - 1);
            }
        }
    }

    // The 8 x 8 block at source (rows sourceStride floats apart; rows from `rows` on read as
    // zero) to destination transposed (rows destinationStride apart). AVX only.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void TransposeBlock(float* source, long sourceStride, int rows, float* destination, long destinationStride)
    {
        Transpose8x8(
            Vector256.Load(source), Vector256.Load(source + sourceStride), Vector256.Load(source + 2 * sourceStride),
            Vector256.Load(source + 3 * sourceStride),
            rows > 4 ? Vector256.Load(source + 4 * sourceStride) : Vector256<float>.Zero,
            rows > 5 ? Vector256.Load(source + 5 * sourceStride) : Vector256<float>.Zero,
            rows > 6 ? Vector256.Load(source + 6 * sourceStride) : Vector256<float>.Zero,
            rows > 7 ? Vector256.Load(source + 7 * sourceStride) : Vector256<float>.Zero,
            out var o0, out var o1, out var o2, out var o3, out var o4, out var o5, out var o6, out var o7);
        o0.Store(destination);
        o1.Store(destination + destinationStride);
        o2.Store(destination + 2 * destinationStride);
        o3.Store(destination + 3 * destinationStride);
        o4.Store(destination + 4 * destinationStride);
        o5.Store(destination + 5 * destinationStride);
        o6.Store(destination + 6 * destinationStride);
        o7.Store(destination + 7 * destinationStride);
    }

    // (o0 .. o7) = the 8 x 8 block (r0 .. r7) transposed. AVX only.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8x8(
        Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7,
        out Vector256<float> o0, out Vector256<float> o1, out Vector256<float> o2, out Vector256<float> o3,
        out Vector256<float> o4, out Vector256<float> o5, out Vector256<float> o6, out Vector256<float> o7)
    {
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
        Vector256<float> s0 = Avx.Shuffle(t0, t2, 0x44), s1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> s2 = Avx.Shuffle(t1, t3, 0x44), s3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> s4 = Avx.Shuffle(t4, t6, 0x44), s5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> s6 = Avx.Shuffle(t5, t7, 0x44), s7 = Avx.Shuffle(t5, t7, 0xEE);
        o0 = Avx.Permute2x128(s0, s4, 0x20);
        o1 = Avx.Permute2x128(s1, s5, 0x20);
        o2 = Avx.Permute2x128(s2, s6, 0x20);
        o3 = Avx.Permute2x128(s3, s7, 0x20);
        o4 = Avx.Permute2x128(s0, s4, 0x31);
        o5 = Avx.Permute2x128(s1, s5, 0x31);
        o6 = Avx.Permute2x128(s2, s6, 0x31);
        o7 = Avx.Permute2x128(s3, s7, 0x31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreSix(float* d, Vector256<float> v)
    {
        v.GetLower().Store(d);
        *(double*)(d + 4) = v.GetUpper().AsDouble().ToScalar();
    }

    private interface IWidth
    {
        static abstract int Vectors { get; }
    }

    private readonly struct One : IWidth { public static int Vectors => 1; }
    private readonly struct Two : IWidth { public static int Vectors => 2; }
    private readonly struct Three : IWidth { public static int Vectors => 3; }
    private readonly struct Four : IWidth { public static int Vectors => 4; }

    // TWidth.Vectors is a JIT-time constant, so each instantiation keeps only the accumulators
    // it uses: 6 x TWidth.Vectors zmm.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512<TWidth>(int kc, float* a, float* b, int bStride, float* c, int ldc, bool loadC, float* scale, float* bias, bool relu)
        where TWidth : struct, IWidth
    {
        int nv = TWidth.Vectors;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        PrefetchTile(c, ldc, nv * 16);

        // Pointer-walked with the strides as native ints: the loop is issue-bound (24 multiply-
        // adds beside 14 loads and prefetches), so every index sign-extension it saves counts.
        nint stride = bStride;
        nint prefetchOffset = PrefetchDistance * stride;
        for (float* end = a + (nint)kc * MR; a < end; a += MR, b += stride)
        {
            float* ahead = b + prefetchOffset;
            Sse.Prefetch0(ahead);
            if (nv > 1) Sse.Prefetch0(ahead + 16);
            if (nv > 2) Sse.Prefetch0(ahead + 32);
            if (nv > 3) Sse.Prefetch0(ahead + 48);
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = nv > 1 ? Vector512.Load(b + 16) : default;
            Vector512<float> b2 = nv > 2 ? Vector512.Load(b + 32) : default;
            Vector512<float> b3 = nv > 3 ? Vector512.Load(b + 48) : default;

            Vector512<float> ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00);
            if (nv > 1) c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            if (nv > 2) c02 = Vector512.FusedMultiplyAdd(ai, b2, c02);
            if (nv > 3) c03 = Vector512.FusedMultiplyAdd(ai, b3, c03);
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10);
            if (nv > 1) c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            if (nv > 2) c12 = Vector512.FusedMultiplyAdd(ai, b2, c12);
            if (nv > 3) c13 = Vector512.FusedMultiplyAdd(ai, b3, c13);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20);
            if (nv > 1) c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            if (nv > 2) c22 = Vector512.FusedMultiplyAdd(ai, b2, c22);
            if (nv > 3) c23 = Vector512.FusedMultiplyAdd(ai, b3, c23);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30);
            if (nv > 1) c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            if (nv > 2) c32 = Vector512.FusedMultiplyAdd(ai, b2, c32);
            if (nv > 3) c33 = Vector512.FusedMultiplyAdd(ai, b3, c33);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40);
            if (nv > 1) c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            if (nv > 2) c42 = Vector512.FusedMultiplyAdd(ai, b2, c42);
            if (nv > 3) c43 = Vector512.FusedMultiplyAdd(ai, b3, c43);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50);
            if (nv > 1) c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            if (nv > 2) c52 = Vector512.FusedMultiplyAdd(ai, b2, c52);
            if (nv > 3) c53 = Vector512.FusedMultiplyAdd(ai, b3, c53);
        }

        Store512Row<TWidth>(c, loadC, scale, bias, 0, relu, c00, c01, c02, c03);
        Store512Row<TWidth>(c + ldc, loadC, scale, bias, 1, relu, c10, c11, c12, c13);
        Store512Row<TWidth>(c + 2 * ldc, loadC, scale, bias, 2, relu, c20, c21, c22, c23);
        Store512Row<TWidth>(c + 3 * ldc, loadC, scale, bias, 3, relu, c30, c31, c32, c33);
        Store512Row<TWidth>(c + 4 * ldc, loadC, scale, bias, 4, relu, c40, c41, c42, c43);
        Store512Row<TWidth>(c + 5 * ldc, loadC, scale, bias, 5, relu, c50, c51, c52, c53);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512Row<TWidth>(float* c, bool loadC, float* scale, float* bias, int row, bool relu,
        Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
        where TWidth : struct, IWidth
    {
        int nv = TWidth.Vectors;
        if (loadC)
        {
            v0 += Vector512.Load(c);
            if (nv > 1) v1 += Vector512.Load(c + 16);
            if (nv > 2) v2 += Vector512.Load(c + 32);
            if (nv > 3) v3 += Vector512.Load(c + 48);
        }
        if (scale != null)
        {
            Vector512<float> multiply = Vector512.Create(scale[row]);
            v0 *= multiply;
            v1 *= multiply;
            v2 *= multiply;
            v3 *= multiply;
        }
        if (bias != null)
        {
            Vector512<float> add = Vector512.Create(bias[row]);
            v0 += add;
            v1 += add;
            v2 += add;
            v3 += add;
        }
        if (relu)
        {
            v0 = Vector512.Max(v0, Vector512<float>.Zero);
            v1 = Vector512.Max(v1, Vector512<float>.Zero);
            v2 = Vector512.Max(v2, Vector512<float>.Zero);
            v3 = Vector512.Max(v3, Vector512<float>.Zero);
        }
        v0.Store(c);
        if (nv > 1) v1.Store(c + 16);
        if (nv > 2) v2.Store(c + 32);
        if (nv > 3) v3.Store(c + 48);
    }

    // AVX2 register budget (16 ymm): a 6 x 16 strip is 12 accumulators + 2 B vectors + 1 broadcast.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256(int kc, float* a, float* b, int bStride, float* c, int ldc, bool loadC, float* scale, float* bias, bool relu)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        PrefetchTile(c, ldc, 16);
        Vector256<float> b0, b1, ai;
        int p = 0;
        // Four steps per iteration: the loop's pointer updates and branch would otherwise take
        // issue slots from the multiply-adds.
        for (; p + 4 <= kc; p += 4)
        {
            b0 = Vector256.Load(b); b1 = Vector256.Load(b + 8);
            ai = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(ai, b0, c00); c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(ai, b0, c10); c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(ai, b0, c20); c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(ai, b0, c30); c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(ai, b0, c40); c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(ai, b0, c50); c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            b0 = Vector256.Load(b + bStride); b1 = Vector256.Load(b + bStride + 8);
            ai = Vector256.Create(a[6]); c00 = Vector256.FusedMultiplyAdd(ai, b0, c00); c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[7]); c10 = Vector256.FusedMultiplyAdd(ai, b0, c10); c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[8]); c20 = Vector256.FusedMultiplyAdd(ai, b0, c20); c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[9]); c30 = Vector256.FusedMultiplyAdd(ai, b0, c30); c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[10]); c40 = Vector256.FusedMultiplyAdd(ai, b0, c40); c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[11]); c50 = Vector256.FusedMultiplyAdd(ai, b0, c50); c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            b0 = Vector256.Load(b + 2 * bStride); b1 = Vector256.Load(b + 2 * bStride + 8);
            ai = Vector256.Create(a[12]); c00 = Vector256.FusedMultiplyAdd(ai, b0, c00); c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[13]); c10 = Vector256.FusedMultiplyAdd(ai, b0, c10); c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[14]); c20 = Vector256.FusedMultiplyAdd(ai, b0, c20); c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[15]); c30 = Vector256.FusedMultiplyAdd(ai, b0, c30); c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[16]); c40 = Vector256.FusedMultiplyAdd(ai, b0, c40); c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[17]); c50 = Vector256.FusedMultiplyAdd(ai, b0, c50); c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            b0 = Vector256.Load(b + 3 * bStride); b1 = Vector256.Load(b + 3 * bStride + 8);
            ai = Vector256.Create(a[18]); c00 = Vector256.FusedMultiplyAdd(ai, b0, c00); c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[19]); c10 = Vector256.FusedMultiplyAdd(ai, b0, c10); c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[20]); c20 = Vector256.FusedMultiplyAdd(ai, b0, c20); c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[21]); c30 = Vector256.FusedMultiplyAdd(ai, b0, c30); c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[22]); c40 = Vector256.FusedMultiplyAdd(ai, b0, c40); c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[23]); c50 = Vector256.FusedMultiplyAdd(ai, b0, c50); c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            a += 4 * MR;
            b += 4 * bStride;
        }
        for (; p < kc; p++)
        {
            b0 = Vector256.Load(b); b1 = Vector256.Load(b + 8);
            ai = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(ai, b0, c00); c01 = Vector256.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(ai, b0, c10); c11 = Vector256.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(ai, b0, c20); c21 = Vector256.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(ai, b0, c30); c31 = Vector256.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(ai, b0, c40); c41 = Vector256.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(ai, b0, c50); c51 = Vector256.FusedMultiplyAdd(ai, b1, c51);
            a += MR;
            b += bStride;
        }
        Store256Row(c, loadC, scale, bias, 0, relu, c00, c01);
        Store256Row(c + ldc, loadC, scale, bias, 1, relu, c10, c11);
        Store256Row(c + 2 * ldc, loadC, scale, bias, 2, relu, c20, c21);
        Store256Row(c + 3 * ldc, loadC, scale, bias, 3, relu, c30, c31);
        Store256Row(c + 4 * ldc, loadC, scale, bias, 4, relu, c40, c41);
        Store256Row(c + 5 * ldc, loadC, scale, bias, 5, relu, c50, c51);
    }

    // The left 8 columns of Kernel256's tile, summed the same way: 6 accumulators.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256Half(int kc, float* a, float* b, int bStride, float* c, int ldc, bool loadC, float* scale, float* bias, bool relu)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b);
            c0 = Vector256.FusedMultiplyAdd(Vector256.Create(a[0]), b0, c0);
            c1 = Vector256.FusedMultiplyAdd(Vector256.Create(a[1]), b0, c1);
            c2 = Vector256.FusedMultiplyAdd(Vector256.Create(a[2]), b0, c2);
            c3 = Vector256.FusedMultiplyAdd(Vector256.Create(a[3]), b0, c3);
            c4 = Vector256.FusedMultiplyAdd(Vector256.Create(a[4]), b0, c4);
            c5 = Vector256.FusedMultiplyAdd(Vector256.Create(a[5]), b0, c5);
            a += MR;
            b += bStride;
        }
        Store256Row(c, loadC, scale, bias, 0, relu, c0, Vector256<float>.Zero);
        Store256Row(c + ldc, loadC, scale, bias, 1, relu, c1, Vector256<float>.Zero);
        Store256Row(c + 2 * ldc, loadC, scale, bias, 2, relu, c2, Vector256<float>.Zero);
        Store256Row(c + 3 * ldc, loadC, scale, bias, 3, relu, c3, Vector256<float>.Zero);
        Store256Row(c + 4 * ldc, loadC, scale, bias, 4, relu, c4, Vector256<float>.Zero);
        Store256Row(c + 5 * ldc, loadC, scale, bias, 5, relu, c5, Vector256<float>.Zero);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256Row(float* c, bool loadC, float* scale, float* bias, int row, bool relu, Vector256<float> v0, Vector256<float> v1)
    {
        if (loadC)
        {
            v0 += Vector256.Load(c);
            v1 += Vector256.Load(c + 8);
        }
        if (scale != null)
        {
            Vector256<float> multiply = Vector256.Create(scale[row]);
            v0 *= multiply;
            v1 *= multiply;
        }
        if (bias != null)
        {
            Vector256<float> add = Vector256.Create(bias[row]);
            v0 += add;
            v1 += add;
        }
        if (relu)
        {
            v0 = Vector256.Max(v0, Vector256<float>.Zero);
            v1 = Vector256.Max(v1, Vector256<float>.Zero);
        }
        v0.Store(c);
        v1.Store(c + 8);
    }

    // Portable 6 x 16 strip with the same per-element operation order as the vector kernels.
    private static void KernelScalar(int kc, float* a, float* b, int bStride, float* c, int ldc, bool loadC, float* scale, float* bias, bool relu)
    {
        float* acc = stackalloc float[MR * Lanes];
        for (int r = 0; r < MR; r++)
        {
            for (int j = 0; j < Lanes; j++)
            {
                acc[r * Lanes + j] = 0f;
            }
        }
        for (int p = 0; p < kc; p++)
        {
            for (int r = 0; r < MR; r++)
            {
                float ar = a[r];
                for (int j = 0; j < Lanes; j++)
                {
                    acc[r * Lanes + j] = MathF.FusedMultiplyAdd(ar, b[j], acc[r * Lanes + j]);
                }
            }
            a += MR;
            b += bStride;
        }
        for (int r = 0; r < MR; r++)
        {
            for (int j = 0; j < Lanes; j++)
            {
                float sum = loadC ? acc[r * Lanes + j] + c[r * ldc + j] : acc[r * Lanes + j];
                float v = (scale != null ? sum * scale[r] : sum) + (bias != null ? bias[r] : 0f);
                c[r * ldc + j] = relu && v < 0f ? 0f : v;
            }
        }
    }

    // Per-thread packing space, pinned and 64-byte aligned, allocated once per thread.
    private sealed class PackBuffers
    {
        [ThreadStatic]
        private static PackBuffers? t_current;

        // Sized for both vector widths, since VectorBits may change between products.
        private static readonly int s_aFloats = Math.Max(McFor(true) * KcFor(true), McFor(false) * KcFor(false)) + MR;
        private static readonly int s_bFloats = Math.Max(KcFor(true) * NcFor(true), KcFor(false) * NcFor(false));
        private static readonly int s_tileFloats = MR * 64;
        private static readonly int s_rowFloats = Math.Max(
            Math.Max(NcFor(true), NcFor(false)), Math.Max(NrFor(true) * KcFor(true), NrFor(false) * KcFor(false)));
        private const int Align = 16;

        private readonly float[] _storage;

        public float* A { get; }
        public float* B { get; }
        public float* EdgeTile { get; }
        public float* EdgeBias { get; }
        public float* EdgeScale { get; }

        // One row of an implicit B's column block (Convolution.ImplicitColumns), or the kc-long
        // rows of one panel of a transposed implicit B.
        public float* Row { get; }
        public int AFloats => s_aFloats;
        public int BFloats => s_bFloats;

        private PackBuffers()
        {
            _storage = GC.AllocateUninitializedArray<float>(
                s_aFloats + s_bFloats + s_tileFloats + s_rowFloats + Convolution.ImplicitColumns.Overrun + 4 * Align, pinned: true);
            float* start = (float*)Unsafe.AsPointer(ref _storage[0]);
            float* aligned = (float*)(((nint)start + 63) & ~(nint)63);
            A = aligned;
            B = A + s_aFloats;
            EdgeTile = B + s_bFloats;
            EdgeBias = EdgeTile + s_tileFloats;
            EdgeScale = EdgeBias + Align;
            Row = EdgeScale + Align;
        }

        public static PackBuffers ForCurrentThread() => t_current ??= new PackBuffers();
    }
}
