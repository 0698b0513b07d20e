using GoogLeNet.Engine;
using GoogLeNet.Engine.Layers;

namespace GoogLeNet.Models;

/// <summary>
/// Each preset's initialisation, seeded per parameter path so a model is the same whatever else
/// was built before it. d2l: Xavier-uniform weights with PyTorch's default biases. paper: Caffe's
/// "xavier" filler (uniform, variance 1/fan_in) with conv and aux-FC biases 0.2, classifiers 0.
/// torchvision: normal std 0.01 truncated at +-2, BatchNorm weight 1 and bias 0, PyTorch's default
/// linear biases.
/// </summary>
public static class Initializer
{
    public static void Initialize(GoogLeNetModel model)
    {
        ulong seed = model.Options.Seed;
        foreach (Layer module in model.ModulesInStateDictOrder())
        {
            Visit(module, module.Name, model.Options.Preset, seed);
        }
    }

    private static void Visit(Layer layer, string path, Preset preset, ulong seed)
    {
        switch (layer)
        {
            case Conv2d conv:
                int fanIn = conv.InChannels * conv.KernelSize * conv.KernelSize;
                int fanOut = conv.OutChannels * conv.KernelSize * conv.KernelSize;
                InitWeight(conv.Weight, path, preset, seed, fanIn, fanOut);
                if (conv.Bias is not null)
                {
                    InitBias(conv.Bias, path, preset, seed, fanIn, classifier: false);
                }
                break;
            case Linear linear:
                InitWeight(linear.Weight, path, preset, seed, linear.InFeatures, linear.OutFeatures);
                bool classifier = path == "fc" || path.EndsWith(".fc2", StringComparison.Ordinal);
                InitBias(linear.Bias, path, preset, seed, linear.InFeatures, classifier);
                break;
            case BatchNorm2d bn:
                bn.Weight.Value.Span.Fill(1f);
                bn.BiasParameter.Value.Span.Clear();
                break;
        }
        foreach (Layer child in layer.Children)
        {
            Visit(child, path + "." + child.Name, preset, seed);
        }
    }

    private static void InitWeight(Parameter weight, string path, Preset preset, ulong seed, int fanIn, int fanOut)
    {
        Rng rng = Rng.ForName(seed, path + ".weight");
        Span<float> w = weight.Value.Span;
        switch (preset)
        {
            case Preset.D2l:
                Uniform(w, Math.Sqrt(6.0 / (fanIn + fanOut)), rng);
                break;
            case Preset.Paper:
                Uniform(w, Math.Sqrt(3.0 / fanIn), rng);
                break;
            default:
                for (int i = 0; i < w.Length; i++)
                {
                    double v;
                    do
                    {
                        v = 0.01 * rng.NextNormal();
                    }
                    while (v < -2.0 || v > 2.0);
                    w[i] = (float)v;
                }
                break;
        }
    }

    private static void InitBias(Parameter bias, string path, Preset preset, ulong seed, int fanIn, bool classifier)
    {
        Span<float> b = bias.Value.Span;
        if (preset == Preset.Paper)
        {
            b.Fill(classifier ? 0f : 0.2f);
            return;
        }
        Uniform(b, 1.0 / Math.Sqrt(fanIn), Rng.ForName(seed, path + ".bias"));
    }

    private static void Uniform(Span<float> values, double bound, Rng rng)
    {
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)((2.0 * rng.NextDouble() - 1.0) * bound);
        }
    }
}
