namespace GoogLeNet.Models;

/// <summary>The three GoogLeNet variants the project reproduces.</summary>
public enum Preset
{
    /// <summary>BVLC Caffe's GoogLeNet, as in the paper: LRN, real 5x5 branch, conv biases, dropout 0.4.</summary>
    Paper,

    /// <summary>torchvision's googlenet: BatchNorm, a 3x3 "5x5" branch, pool4 2x2; loads its weights.</summary>
    Torchvision,

    /// <summary>Dive into Deep Learning's version: 1 channel at 96x96 for Fashion-MNIST, no aux heads.</summary>
    D2l,
}

public static class PresetNames
{
    public static Preset Parse(string name) => name.ToLowerInvariant() switch
    {
        "paper" => Preset.Paper,
        "torchvision" => Preset.Torchvision,
        "d2l" => Preset.D2l,
        _ => throw new ArgumentException($"Unknown preset '{name}': expected paper, torchvision or d2l."),
    };

    public static string ToName(this Preset preset) => preset switch
    {
        Preset.Paper => "paper",
        Preset.Torchvision => "torchvision",
        _ => "d2l",
    };
}

/// <summary>One row of the paper's Table 1: an Inception block's channel counts.</summary>
public sealed record InceptionSpec(
    string Name, int InChannels, int Ch1x1, int Ch3x3Reduce, int Ch3x3, int Ch5x5Reduce, int Ch5x5, int PoolProj)
{
    public int OutChannels => Ch1x1 + Ch3x3 + Ch5x5 + PoolProj;

    /// <summary>Table 1 of Szegedy et al. (2014), shared by all three presets.</summary>
    public static IReadOnlyList<InceptionSpec> Table1 { get; } =
    [
        new("inception3a", 192, 64, 96, 128, 16, 32, 32),
        new("inception3b", 256, 128, 128, 192, 32, 96, 64),
        new("inception4a", 480, 192, 96, 208, 16, 48, 64),
        new("inception4b", 512, 160, 112, 224, 24, 64, 64),
        new("inception4c", 512, 128, 128, 256, 24, 64, 64),
        new("inception4d", 512, 112, 144, 288, 32, 64, 64),
        new("inception4e", 528, 256, 160, 320, 32, 128, 128),
        new("inception5a", 832, 256, 160, 320, 32, 128, 128),
        new("inception5b", 832, 384, 192, 384, 48, 128, 128),
    ];
}

/// <summary>Everything that shapes a GoogLeNet; <see cref="For"/> gives each preset's defaults.</summary>
public sealed record GoogLeNetOptions
{
    public Preset Preset { get; init; }

    public int Classes { get; init; } = 1000;

    public int InputChannels { get; init; } = 3;

    public int InputHeight { get; init; } = 224;

    public int InputWidth { get; init; } = 224;

    /// <summary>Auxiliary classifiers on 4a and 4d; they run only in training.</summary>
    public bool AuxLogits { get; init; }

    public float Dropout { get; init; }

    public float AuxDropout { get; init; } = 0.7f;

    /// <summary>torchvision's input re-normalisation for its ImageNet weights.</summary>
    public bool TransformInput { get; init; }

    public ulong Seed { get; init; } = 1;

    public static GoogLeNetOptions For(Preset preset) => preset switch
    {
        Preset.Paper => new() { Preset = preset, Dropout = 0.4f },
        Preset.Torchvision => new() { Preset = preset, Dropout = 0.2f },
        _ => new() { Preset = preset, Classes = 10, InputChannels = 1, InputHeight = 96, InputWidth = 96 },
    };
}
