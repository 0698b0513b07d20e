namespace GoogLeNet.Models;

/// <summary>
/// The paper's argument for 1x1 reductions, in multiply-accumulates: a convolution straight on
/// the block input versus a 1x1 reduction to fewer channels first.
/// </summary>
public static class InceptionCost
{
    public static long Convolution(int height, int width, int inChannels, int outChannels, int kernel) =>
        (long)height * width * inChannels * outChannels * kernel * kernel;

    /// <summary>A 1x1 reduction to <paramref name="reduced"/> channels, then the kxk convolution.</summary>
    public static long Reduced(int height, int width, int inChannels, int reduced, int outChannels, int kernel) =>
        Convolution(height, width, inChannels, reduced, 1) + Convolution(height, width, reduced, outChannels, kernel);

    public sealed record BlockCost(string Name, int InChannels, int Height, int Width, long WithReductions, long WithoutReductions);

    /// <summary>
    /// Each Inception block of the model at its spatial size. "Without reductions" is the paper's
    /// naive module: 1x1, 3x3 and 5x5 convolutions straight on the input and a bare max-pool.
    /// </summary>
    public static IReadOnlyList<BlockCost> Blocks(GoogLeNetModel model)
    {
        var costs = new List<BlockCost>();
        foreach (InceptionSpec spec in InceptionSpec.Table1)
        {
            int[] input = BlockInputShape(model, spec.Name);
            int h = input[1], w = input[2];
            int k5 = model.Options.Preset == Preset.Torchvision ? 3 : 5;
            long with = Convolution(h, w, spec.InChannels, spec.Ch1x1, 1)
                + Reduced(h, w, spec.InChannels, spec.Ch3x3Reduce, spec.Ch3x3, 3)
                + Reduced(h, w, spec.InChannels, spec.Ch5x5Reduce, spec.Ch5x5, k5)
                + Convolution(h, w, spec.InChannels, spec.PoolProj, 1);
            long without = Convolution(h, w, spec.InChannels, spec.Ch1x1, 1)
                + Convolution(h, w, spec.InChannels, spec.Ch3x3, 3)
                + Convolution(h, w, spec.InChannels, spec.Ch5x5, k5);
            costs.Add(new BlockCost(spec.Name, spec.InChannels, h, w, with, without));
        }
        return costs;
    }

    private static int[] BlockInputShape(GoogLeNetModel model, string blockName)
    {
        IReadOnlyList<LayerSummary> rows = model.Summary();
        int index = rows.ToList().FindIndex(r => r.Name == blockName);
        return index == 0 ? model.InputShape : rows[index - 1].Name.StartsWith("aux", StringComparison.Ordinal)
            ? rows[index - 2].Output
            : rows[index - 1].Output;
    }
}
