namespace GoogLeNet.Data;

/// <summary>
/// One batch in NCHW floats with its labels. The loader reuses these buffers: a batch stays valid
/// only until the next call to <see cref="BatchLoader.Next"/>.
/// </summary>
public sealed class Batch
{
    internal Batch(int capacity)
    {
        Labels = new int[capacity];
    }

    /// <summary>Count x Channels x Height x Width values; the array may be longer.</summary>
    public float[] Images { get; internal set; } = [];

    /// <summary>Count labels; the array may be longer.</summary>
    public int[] Labels { get; }

    /// <summary>Count dataset indices of the samples, in batch order; the array may be longer.</summary>
    public int[] Indices { get; internal set; } = [];

    public int Count { get; internal set; }

    public int Channels { get; internal set; }

    public int Height { get; internal set; }

    public int Width { get; internal set; }

    public int Epoch { get; internal set; }

    /// <summary>Position of this batch within its epoch (0-based).</summary>
    public int BatchIndex { get; internal set; }
}

/// <summary>
/// Turns a dataset and a transform pipeline into batches, preparing the next batch on a background
/// thread while the consumer works on the current one. The sample order of an epoch is a function
/// of (seed, epoch) and each sample's augmentation draws from its own stream seeded by
/// (seed, epoch, position), so any epoch can be restarted at any batch and reproduce exactly the
/// batches an uninterrupted run would have produced.
/// </summary>
public sealed class BatchLoader : IDisposable
{
    private readonly IImageDataset _dataset;
    private readonly IImageTransform? _transform;
    private readonly ulong _seed;
    private readonly int[] _order;
    private readonly Batch[] _buffers;
    private readonly ImageBuffer<byte> _decoded = new();
    private readonly ImageBuffer<float> _input = new();
    private readonly ImageBuffer<float> _output = new();
    private readonly DataRandom _random = new(0);

    private Thread? _worker;
    private SemaphoreSlim _free = new(2, 2);
    private SemaphoreSlim _ready = new(0, 2);
    private volatile bool _stop;
    private Exception? _failure;
    private int _failedBatch;
    private Exception? _fault;
    private int _epoch;
    private int _nextBatch;
    private bool _holding;
    private bool _disposed;

    /// <param name="transform">
    /// Applied after bytes are scaled to [0, 1]; null keeps the image as is. It runs on the loader's
    /// thread with its scratch buffers, so it must not be shared with another loader.
    /// </param>
    /// <param name="dropLast">Skips the final partial batch, so every batch has <paramref name="batchSize"/> samples.</param>
    public BatchLoader(IImageDataset dataset, IImageTransform? transform, int batchSize, bool shuffle, ulong seed, bool dropLast = false)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        _dataset = dataset;
        _transform = transform;
        BatchSize = batchSize;
        Shuffle = shuffle;
        _seed = seed;
        DropLast = dropLast;
        _order = new int[dataset.Count];
        _buffers = [new Batch(batchSize), new Batch(batchSize)];
        BatchesPerEpoch = dropLast ? dataset.Count / batchSize : (dataset.Count + batchSize - 1) / batchSize;
    }

    public IImageDataset Dataset => _dataset;

    public int BatchSize { get; }

    public bool Shuffle { get; }

    public bool DropLast { get; }

    public int BatchesPerEpoch { get; }

    /// <summary>The dataset indices of <paramref name="epoch"/> in the order they are served.</summary>
    public int[] EpochOrder(int epoch)
    {
        int[] order = new int[_dataset.Count];
        FillOrder(epoch, order);
        return order;
    }

    /// <summary>
    /// Starts serving <paramref name="epoch"/> from batch <paramref name="startBatch"/>, abandoning
    /// whatever epoch was in progress.
    /// </summary>
    public void StartEpoch(int epoch, int startBatch = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        ArgumentOutOfRangeException.ThrowIfNegative(startBatch);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(startBatch, BatchesPerEpoch);
        StopWorker();
        FillOrder(epoch, _order);
        _epoch = epoch;
        _nextBatch = startBatch;
        _holding = false;
        _failure = null;
        _fault = null;
        _stop = false;
        _free = new SemaphoreSlim(2, 2);
        _ready = new SemaphoreSlim(0, 2);
        _worker = new Thread(() => Produce(startBatch)) { IsBackground = true, Name = "BatchLoader" };
        _worker.Start();
    }

    /// <summary>
    /// The next batch of the current epoch, or null when the epoch is done. The previous batch's
    /// buffers are handed back to the producer by this call.
    /// </summary>
    public Batch? Next()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_worker is null)
        {
            throw new InvalidOperationException("Call StartEpoch before Next.");
        }

        if (_fault is not null)
        {
            throw _fault;
        }

        if (_holding)
        {
            _holding = false;
            _free.Release();
        }

        if (_nextBatch >= BatchesPerEpoch)
        {
            return null;
        }

        _ready.Wait();
        if (_failure is not null && _failedBatch == _nextBatch)
        {
            _fault = new InvalidOperationException($"Preparing batch {_nextBatch} of epoch {_epoch} failed: {_failure.Message}", _failure);
            throw _fault;
        }

        Batch batch = _buffers[_nextBatch % 2];
        _nextBatch++;
        _holding = true;
        return batch;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        StopWorker();
        _disposed = true;
    }

    /// <summary>Fills <paramref name="batch"/> with batch <paramref name="batchIndex"/> of the current order, on the calling thread.</summary>
    internal void Fill(Batch batch, int batchIndex)
    {
        int first = batchIndex * BatchSize;
        int count = Math.Min(BatchSize, _order.Length - first);
        batch.Count = count;
        batch.Epoch = _epoch;
        batch.BatchIndex = batchIndex;
        if (batch.Indices.Length < BatchSize)
        {
            batch.Indices = new int[BatchSize];
        }

        for (int i = 0; i < count; i++)
        {
            int position = first + i;
            int index = _order[position];
            _dataset.ReadImage(index, _decoded);
            ImageOps.ToFloat(_decoded, _input);
            ImageBuffer<float> image = _input;
            if (_transform is not null)
            {
                _random.Reseed(DataRandom.Combine(DataRandom.Combine(_seed, (ulong)_epoch), (ulong)position));
                _transform.Apply(_input, _output, _random);
                image = _output;
            }

            if (i == 0)
            {
                batch.Channels = image.Channels;
                batch.Height = image.Height;
                batch.Width = image.Width;
                long needed = (long)BatchSize * image.Length;
                if (batch.Images.LongLength < needed)
                {
                    batch.Images = new float[needed];
                }
            }
            else if (image.Channels != batch.Channels || image.Height != batch.Height || image.Width != batch.Width)
            {
                throw new InvalidDataException($"Sample {index} is {image.Channels}x{image.Height}x{image.Width} after the transforms, but the batch is {batch.Channels}x{batch.Height}x{batch.Width}; add a Resize or crop to a fixed size.");
            }

            image.Span.CopyTo(batch.Images.AsSpan(i * image.Length, image.Length));
            batch.Labels[i] = _dataset.GetLabel(index);
            batch.Indices[i] = index;
        }
    }

    private void Produce(int startBatch)
    {
        SemaphoreSlim free = _free;
        SemaphoreSlim ready = _ready;
        int b = startBatch;
        try
        {
            for (; b < BatchesPerEpoch; b++)
            {
                free.Wait();
                if (_stop)
                {
                    return;
                }

                Fill(_buffers[b % 2], b);
                ready.Release();
            }
        }
        catch (Exception e)
        {
            _failedBatch = b;
            _failure = e;
            ready.Release();
        }
    }

    private void StopWorker()
    {
        if (_worker is null)
        {
            return;
        }

        _stop = true;
        int blocked = 2 - _free.CurrentCount;
        if (blocked > 0)
        {
            _free.Release(blocked);
        }

        _worker.Join();
        _worker = null;
        _free.Dispose();
        _ready.Dispose();
    }

    private void FillOrder(int epoch, int[] order)
    {
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        if (Shuffle)
        {
            new DataRandom(DataRandom.Combine(_seed, (ulong)epoch)).Shuffle(order);
        }
    }
}
