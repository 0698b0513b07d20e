using GoogLeNet.Data;

namespace GoogLeNet.Training;

/// <summary>Opens the datasets the CLI names and builds their input pipelines.</summary>
public static class Datasets
{
    public const string MnistDefaultDirectory = "/usr/share/datasets/mnist";

    public const string Cifar10DefaultDirectory = "/usr/share/datasets/cifar10";

    /// <summary>fashion-mnist, mnist, cifar10, or folder:PATH (PATH/train and PATH/test or PATH/val).</summary>
    public static IImageDataset Open(string name, string? directory, bool train)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.StartsWith("folder:", StringComparison.Ordinal))
        {
            string root = directory ?? name["folder:".Length..];
            string split = train ? "train" : Directory.Exists(Path.Combine(root, "test")) ? "test" : "val";
            string path = Path.Combine(root, split);
            if (!Directory.Exists(path))
            {
                throw new DirectoryNotFoundException($"Image folder dataset '{root}' needs a '{split}' subfolder of class folders.");
            }
            return new ImageFolderDataset(path);
        }
        string defaultDirectory = name switch
        {
            "fashion-mnist" => FashionMnist.DefaultDirectory,
            "mnist" => MnistDefaultDirectory,
            "cifar10" => Cifar10DefaultDirectory,
            _ => throw new ArgumentException($"Unknown dataset '{name}': expected fashion-mnist, mnist, cifar10 or folder:PATH."),
        };
        if (directory is null && !Directory.Exists(defaultDirectory))
        {
            throw new DirectoryNotFoundException($"{name} is not in its default folder {defaultDirectory}; pass its folder with --data DIR.");
        }
        if (directory is not null && !Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"The --data folder '{directory}' for {name} does not exist.");
        }
        directory ??= defaultDirectory;
        return name switch
        {
            "fashion-mnist" => FashionMnist.Load(directory, train),
            "mnist" => Mnist.Load(directory, train),
            _ => Cifar10.Load(directory, train),
        };
    }

    /// <summary>The first <paramref name="limit"/> images (all when the limit is 0 or above the count).</summary>
    public static IImageDataset Limit(IImageDataset dataset, int limit) =>
        limit <= 0 || limit >= dataset.Count ? dataset : new SubsetDataset(dataset, limit);

    /// <summary>Channels of the dataset's images (read from its first image).</summary>
    public static int Channels(IImageDataset dataset)
    {
        if (dataset.Count == 0)
        {
            throw new InvalidDataException("The dataset is empty.");
        }
        var image = new ImageBuffer<byte>();
        dataset.ReadImage(0, image);
        return image.Channels;
    }

    /// <summary>
    /// Resize to size x size (bilinear, as torchvision's Resize the d2l recipe uses); no
    /// normalisation, as d2l feeds [0, 1] pixels.
    /// </summary>
    /// <summary>What the training images go through: the input transform plus the augmentation of <see cref="TrainConfig.Augment"/>.</summary>
    public static IImageTransform? TrainTransform(IImageDataset dataset, int size, string augment) => augment switch
    {
        "none" => InputTransform(dataset, size),
        "crop-flip" => CropFlip(dataset, size),
        "crop-flip-erase" => new Compose(CropFlip(dataset, size), new RandomErasing()),
        "paper" => new Compose(new RandomResizedCrop(size), new RandomHorizontalFlip(), new ColorJitter(brightness: 0.4, contrast: 0.4)),
        _ => throw new ArgumentException($"Unknown augmentation '{augment}': expected none, crop-flip, crop-flip-erase or paper."),
    };

    private static Compose CropFlip(IImageDataset dataset, int size)
    {
        var steps = new List<IImageTransform>();
        if (InputTransform(dataset, size) is { } resize)
        {
            steps.Add(resize);
        }
        steps.Add(new RandomCrop(size, Math.Max(1, size / 8)));
        steps.Add(new RandomHorizontalFlip());
        return new Compose([.. steps]);
    }

    public static IImageTransform? InputTransform(IImageDataset dataset, int size)
    {
        var image = new ImageBuffer<byte>();
        dataset.ReadImage(0, image);
        bool fixedSize = dataset is ImageDataset or SubsetDataset { Inner: ImageDataset };
        if (fixedSize && image.Height == size && image.Width == size)
        {
            return null;
        }
        return new Resize(size, size);
    }
}

/// <summary>The first Count samples of another dataset.</summary>
public sealed class SubsetDataset : IImageDataset
{
    public SubsetDataset(IImageDataset inner, int count)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, inner.Count);
        Inner = inner;
        Count = count;
    }

    public IImageDataset Inner { get; }

    public int Count { get; }

    public int ClassCount => Inner.ClassCount;

    public IReadOnlyList<string> ClassNames => Inner.ClassNames;

    public int GetLabel(int index) => Inner.GetLabel(Check(index));

    public void ReadImage(int index, ImageBuffer<byte> destination) => Inner.ReadImage(Check(index), destination);

    private int Check(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The subset has {Count} samples.");
        }
        return index;
    }
}
