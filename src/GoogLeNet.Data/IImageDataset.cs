namespace GoogLeNet.Data;

/// <summary>
/// A labelled set of images that can be read one at a time by index, whether it lives in memory
/// (IDX, CIFAR) or on disk (image folders).
/// </summary>
public interface IImageDataset
{
    int Count { get; }

    int ClassCount { get; }

    IReadOnlyList<string> ClassNames { get; }

    int GetLabel(int index);

    /// <summary>Writes image <paramref name="index"/> as 8-bit CHW into <paramref name="destination"/>, reshaping it.</summary>
    void ReadImage(int index, ImageBuffer<byte> destination);
}
