namespace GoogLeNet.Data;

/// <summary>
/// root/&lt;class&gt;/**/*.jpg|jpeg|png laid out like torchvision's ImageFolder: class folders sorted
/// ordinally give the label indices, files sorted ordinally within each class (subfolders walked in
/// sorted path order). Images are decoded on demand.
/// </summary>
public sealed class ImageFolderDataset : IImageDataset
{
    private static readonly string[] s_extensions = [".jpg", ".jpeg", ".png"];

    private readonly string[] _paths;
    private readonly int[] _labels;

    public ImageFolderDataset(string root)
    {
        if (!Directory.Exists(root))
        {
            throw new DirectoryNotFoundException($"Image folder root '{root}' does not exist.");
        }

        Root = root;
        string[] classDirectories = Directory.GetDirectories(root);
        Array.Sort(classDirectories, StringComparer.Ordinal);
        if (classDirectories.Length == 0)
        {
            throw new InvalidDataException($"'{root}' has no class folders; expected root/<class>/<image files>.");
        }

        var paths = new List<string>();
        var labels = new List<int>();
        for (int label = 0; label < classDirectories.Length; label++)
        {
            int before = paths.Count;
            string[] folders = [classDirectories[label], .. Directory.GetDirectories(classDirectories[label], "*", SearchOption.AllDirectories)];
            Array.Sort(folders, StringComparer.Ordinal);
            foreach (string folder in folders)
            {
                string[] files = Directory.GetFiles(folder).Where(HasImageExtension).ToArray();
                Array.Sort(files, StringComparer.Ordinal);
                paths.AddRange(files);
                labels.AddRange(Enumerable.Repeat(label, files.Length));
            }

            if (paths.Count == before)
            {
                throw new InvalidDataException($"Class folder '{classDirectories[label]}' has no .jpg, .jpeg or .png files.");
            }
        }

        ClassNames = classDirectories.Select(d => Path.GetFileName(d)!).ToArray();
        _paths = [.. paths];
        _labels = [.. labels];
    }

    public string Root { get; }

    public int Count => _paths.Length;

    public int ClassCount => ClassNames.Count;

    public IReadOnlyList<string> ClassNames { get; }

    public IReadOnlyList<string> Paths => _paths;

    public int GetLabel(int index) => _labels[index];

    public void ReadImage(int index, ImageBuffer<byte> destination)
    {
        DecodedImage image = ImageDecoder.DecodeFile(_paths[index]);
        int plane = image.Width * image.Height;
        destination.Reshape(3, image.Height, image.Width);
        Span<byte> chw = destination.Span;
        ReadOnlySpan<byte> hwc = image.Rgb;
        for (int p = 0; p < plane; p++)
        {
            chw[p] = hwc[3 * p];
            chw[plane + p] = hwc[3 * p + 1];
            chw[2 * plane + p] = hwc[3 * p + 2];
        }
    }

    private static bool HasImageExtension(string path) =>
        s_extensions.Any(e => path.EndsWith(e, StringComparison.OrdinalIgnoreCase));
}
