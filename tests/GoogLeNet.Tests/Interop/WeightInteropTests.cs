using System.IO.Compression;
using System.Text.Json;
using GoogLeNet.Cli;
using GoogLeNet.Engine;
using GoogLeNet.Interop;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests.Interop;

/// <summary>
/// The checkpoint made by make_pth_fixture.py (torchvision googlenet, 10 classes, aux heads, seeded
/// random weights), unpacked once into a temporary folder.
/// </summary>
public sealed class PthFixture : IDisposable
{
    public PthFixture()
    {
        Folder = Path.Combine(Path.GetTempPath(), "googlenet-interop-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
        PthPath = Path.Combine(Folder, "googlenet10.pth");
        using (FileStream packed = File.OpenRead(Path.Combine(Source, "googlenet10.pth.gz")))
        using (var gzip = new GZipStream(packed, CompressionMode.Decompress))
        using (FileStream unpacked = File.Create(PthPath))
        {
            gzip.CopyTo(unpacked);
        }
        Expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(Source, "expected.json"))).RootElement;
        Weights = WeightIO.Read(PthPath);
    }

    public static string Source => Path.Combine(AppContext.BaseDirectory, "Interop");

    public static string ImagePath => Path.Combine(Source, "image.png");

    public string Folder { get; }

    public string PthPath { get; }

    public JsonElement Expected { get; }

    public WeightFile Weights { get; }

    public float[] ExpectedArray(string name) => GoldenFill.Floats(Expected.GetProperty(name));

    /// <summary>The fixture's model as PyTorch built it: aux heads present, transform_input off.</summary>
    public GoogLeNetModel LoadModel(string path)
    {
        WeightFile file = WeightIO.Read(path);
        var model = new GoogLeNetModel(WeightIO.OptionsFor(file, Preset.Torchvision));
        WeightIO.Load(model, file.Tensors);
        return model;
    }

    public Tensor FixedInput()
    {
        JsonElement spec = Expected.GetProperty("fixed_input");
        return GoldenFill.Tensor(spec.GetProperty("name").GetString()!, GoldenFill.Ints(spec.GetProperty("shape")),
            spec.GetProperty("scale").GetDouble());
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

public class WeightInteropTests(PthFixture fixture) : IClassFixture<PthFixture>
{
    // The fixed input reaches the network bit-identical on both sides, so only float32 summation
    // order and the Winograd transforms differ (oneDNN against our kernels, through 57 layers).
    // Logits are O(10): the largest difference measured is 6.8e-5 with 2x2 Winograd tiles only
    // and 1.1e-4 with 4x4 tiles in conv3 and inception3a (1e-5 of the logits); 2e-4 leaves room.
    private const double FixedInputTolerance = 2e-4;

    // Pillow resizes with 22-bit fixed-point coefficients, we with floats: after both round to 8
    // bits, 2 of the 150528 input values differ by one step (1/255 before normalisation). That
    // moves the logits by 3.6e-3 (6e-5 of the largest, 60): the bound is on the error relative to
    // the largest logit, with room for a few more such pixels on other CPUs' rounding.
    private const double ImageTolerance = 3e-4;

    private static float MaxAbsDifference(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        float max = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }
        return max;
    }

    [Fact]
    public void PthMapsOntoTheTorchvisionPresetWithAuxHeads()
    {
        Assert.Equal(WeightFormat.PyTorch, fixture.Weights.Format);
        Assert.True(fixture.Weights.HasAux);
        Assert.Equal(10, fixture.Weights.Classes);
        Assert.Equal(fixture.Expected.GetProperty("tensors").GetInt32(), fixture.Weights.Tensors.Count);
        GoogLeNetModel model = fixture.LoadModel(fixture.PthPath);
        Assert.True(model.HasAux);
        Assert.Equal(fixture.Expected.GetProperty("parameters").GetInt64(), model.Parameters.TrainableCount);
        Assert.Equal(3f, model.Parameters["conv1.bn.num_batches_tracked"].Value.Span[0]);
        Assert.Equal(TensorDType.I64, fixture.Weights.Tensors.Single(t => t.Name == "conv1.bn.num_batches_tracked").DType);
    }

    [Fact]
    public void LogitsForAFixedInputMatchPyTorch()
    {
        GoogLeNetModel model = fixture.LoadModel(fixture.PthPath);
        float[] logits = model.Forward(fixture.FixedInput()).Logits.Span.ToArray();
        float error = MaxAbsDifference(fixture.ExpectedArray("fixed_logits"), logits);
        Assert.True(error <= FixedInputTolerance, $"max abs difference {error:G3} > {FixedInputTolerance:G3}");
    }

    [Fact]
    public void LogitsForTheImageMatchPyTorchThroughTorchvisionPreprocessing()
    {
        GoogLeNetModel model = fixture.LoadModel(fixture.PthPath);
        var preprocessor = new ImagePreprocessor(Preset.Torchvision);
        var input = new float[preprocessor.Length];
        preprocessor.Load(PthFixture.ImagePath, input);
        float[] logits = model.Forward(Tensor.FromArray(input, 1, 3, 224, 224)).Logits.Span.ToArray();
        Compare.Close(fixture.ExpectedArray("image_logits"), logits, ImageTolerance, "image logits");
    }

    [Fact]
    public void MissingUnexpectedAndMisshapenKeysAreNamed()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 10 });
        List<NamedTensor> state = WeightIO.StateDict(model).ToList();

        var missing = state.Where(t => t.Name != "inception4b.branch2.1.conv.weight").ToList();
        var e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(model, missing));
        Assert.Contains("missing from the file (1): inception4b.branch2.1.conv.weight", e.Message);

        var unexpected = state.Append(new NamedTensor("head.extra.weight", [2], [1f, 2f])).ToList();
        e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(model, unexpected));
        Assert.Contains("unexpected in the file (1): head.extra.weight", e.Message);

        var misshapen = state.Select(t => t.Name == "fc.weight" ? new NamedTensor("fc.weight", [10, 1023], new float[10 * 1023]) : t).ToList();
        e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(model, misshapen));
        Assert.Contains("fc.weight: file [10, 1023], model [10, 1024]", e.Message);
    }

    [Theory]
    [InlineData(Preset.D2l, Preset.Torchvision)]
    [InlineData(Preset.Paper, Preset.Torchvision)]
    [InlineData(Preset.Torchvision, Preset.Paper)]
    public void WeightsOfAnotherPresetNameThatPresetAndListOnlyTheFirstKeys(Preset madeFor, Preset loadedInto)
    {
        var source = new GoogLeNetModel(GoogLeNetOptions.For(madeFor) with { Classes = 10 });
        var target = new GoogLeNetModel(GoogLeNetOptions.For(loadedInto) with { Classes = 10 });
        float before = target.Parameters.All[0].Parameter.Value.Span[0];

        var e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(target, WeightIO.StateDict(source)));

        Assert.Contains($"They fit the {madeFor.ToName()} preset. Nothing was loaded.", e.Message);
        // Every list stops after 10 names; the count in parentheses still says how many differ.
        Assert.Contains("... and ", e.Message);
        Assert.All(e.Message.Split(Environment.NewLine), line => Assert.True(line.Length < 1200, line));
        // Counters left at 0 are a note on a load that happened, not a reason this one failed.
        Assert.DoesNotContain("counters absent", e.Message);
        Assert.Equal(before, target.Parameters.All[0].Parameter.Value.Span[0]);
    }

    [Fact]
    public void WeightsThatFitNoPresetGetNoPresetHint()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 10 });
        var state = WeightIO.StateDict(model).Where(t => t.Name != "conv1.conv.weight").ToList();

        var e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(model, state));

        Assert.DoesNotContain("They fit", e.Message);
        Assert.EndsWith("Nothing was loaded.", e.Message);
    }

    [Fact]
    public void StrictLoadLeavesTheModelUntouchedAndLenientLoadCopiesWhatFits()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 10 });
        float before = model.Parameters["conv1.conv.weight"].Value.Span[0];
        var state = WeightIO.StateDict(model)
            .Select(t => new NamedTensor(t.Name, t.Shape, t.Values.Select(v => v + 1f).ToArray(), t.DType))
            .Where(t => t.Name != "fc.bias")
            .ToList();

        var e = Assert.Throws<InvalidDataException>(() => WeightIO.Load(model, state));
        Assert.EndsWith("Nothing was loaded.", e.Message);
        Assert.Equal(before, model.Parameters["conv1.conv.weight"].Value.Span[0]);

        WeightLoadReport report = WeightIO.Load(model, state, strict: false);
        Assert.Equal(["fc.bias"], report.Missing);
        Assert.Equal(before + 1f, model.Parameters["conv1.conv.weight"].Value.Span[0]);
    }

    [Fact]
    public void AuxKeysAreIgnoredByAModelWithoutAuxHeadsAndReported()
    {
        var model = new GoogLeNetModel(GoogLeNetOptions.For(Preset.Torchvision) with { Classes = 10 });
        WeightLoadReport report = WeightIO.Load(model, fixture.Weights.Tensors);
        Assert.True(report.IsClean);
        Assert.Contains(report.IgnoredAux, name => name == "aux1.fc1.weight");
        Assert.All(report.IgnoredAux, name => Assert.True(WeightIO.IsAuxKey(name)));
        Assert.Contains("aux-head tensors ignored", report.Describe());
    }

    [Fact]
    public void MissingWeightsFileIsNamed()
    {
        string path = Path.Combine(fixture.Folder, "absent.pth");
        var e = Assert.Throws<FileNotFoundException>(() => WeightIO.Read(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void ImportRoundTripGivesBitIdenticalLogits()
    {
        string output = Path.Combine(fixture.Folder, "roundtrip.safetensors");
        var stdout = new StringWriter();
        Assert.Equal(0, ImportCommand.Run(fixture.PthPath, output, "torchvision", noTransformInput: true, stdout));
        Assert.Contains($"wrote {output}: {fixture.Weights.Tensors.Count} tensors", stdout.ToString());
        Assert.Contains($"{CliSupport.Group(fixture.Expected.GetProperty("parameters").GetInt64())} parameters", stdout.ToString());

        SafeTensorsFile written = SafeTensors.Read(output);
        Assert.Equal(fixture.Weights.Tensors.Select(t => t.Name), written.Tensors.Select(t => t.Name));
        Assert.Equal(TensorDType.I64, written.Tensors.Single(t => t.Name == "conv1.bn.num_batches_tracked").DType);
        Assert.Equal("false", written.Metadata[ImportCommand.TransformInputKey]);

        Tensor input = fixture.FixedInput();
        float[] fromPth = fixture.LoadModel(fixture.PthPath).Forward(input).Logits.Span.ToArray();
        float[] fromSafeTensors = fixture.LoadModel(output).Forward(input).Logits.Span.ToArray();
        Assert.Equal(fromPth, fromSafeTensors);
    }

    [Fact]
    public void ImportNeverOverwritesItsInput()
    {
        string copy = Path.Combine(fixture.Folder, "input.safetensors");
        var e = Assert.Throws<ArgumentException>(() => ImportCommand.Run(copy, copy, "torchvision", false, TextWriter.Null));
        Assert.Contains("never overwrites its input", e.Message);
    }

    [Fact]
    public void TransformInputIsOnForTorchvisionPthUnlessTurnedOff()
    {
        Assert.True(PredictCommand.BuildModel(fixture.Weights, Preset.Torchvision, noTransformInput: false).Options.TransformInput);
        Assert.False(PredictCommand.BuildModel(fixture.Weights, Preset.Torchvision, noTransformInput: true).Options.TransformInput);

        string output = Path.Combine(fixture.Folder, "pretrained.safetensors");
        ImportCommand.Run(fixture.PthPath, output, "torchvision", noTransformInput: false, TextWriter.Null);
        Assert.True(PredictCommand.BuildModel(WeightIO.Read(output), Preset.Torchvision, noTransformInput: false).Options.TransformInput);
    }

    [Fact]
    public void PredictJsonGivesPyTorchsTopClass()
    {
        var stdout = new StringWriter();
        var settings = new PredictCommand.Settings(
            [PthFixture.ImagePath], "torchvision", fixture.PthPath, Labels: null, Top: 3, Json: true, Logits: true,
            NoTransformInput: true, BatchSize: 16);
        Assert.Equal(0, PredictCommand.Run(settings, stdout));

        JsonElement results = JsonDocument.Parse(stdout.ToString()).RootElement;
        Assert.Equal(1, results.GetArrayLength());
        JsonElement result = results[0];
        Assert.Equal(PthFixture.ImagePath, result.GetProperty("file").GetString());
        JsonElement top = result.GetProperty("top");
        Assert.Equal(3, top.GetArrayLength());
        Assert.Equal(fixture.Expected.GetProperty("image_top1").GetInt32(), top[0].GetProperty("index").GetInt32());
        Assert.Equal(top[0].GetProperty("index").GetInt32().ToString(System.Globalization.CultureInfo.InvariantCulture),
            top[0].GetProperty("label").GetString());
        Assert.True(top[0].GetProperty("probability").GetSingle() >= top[1].GetProperty("probability").GetSingle());
        Assert.Equal(10, result.GetProperty("logits").GetArrayLength());
    }

    [Fact]
    public void PredictBatchesAFolderAndAgreesWithOneImageAtATime()
    {
        string folder = Path.Combine(fixture.Folder, "images");
        Directory.CreateDirectory(folder);
        for (int i = 0; i < 3; i++)
        {
            File.Copy(PthFixture.ImagePath, Path.Combine(folder, $"copy{i}.png"), overwrite: true);
        }
        var batched = new StringWriter();
        PredictCommand.Run(new PredictCommand.Settings([folder], "torchvision", fixture.PthPath, null, 2, true, true, true, 2), batched);
        var single = new StringWriter();
        PredictCommand.Run(new PredictCommand.Settings([PthFixture.ImagePath], "torchvision", fixture.PthPath, null, 2, true, true, true, 1), single);

        JsonElement results = JsonDocument.Parse(batched.ToString()).RootElement;
        float[] reference = GoldenFill.Floats(JsonDocument.Parse(single.ToString()).RootElement[0].GetProperty("logits"));
        Assert.Equal(3, results.GetArrayLength());
        foreach (JsonElement result in results.EnumerateArray())
        {
            Compare.Close(reference, GoldenFill.Floats(result.GetProperty("logits")), 1e-5, result.GetProperty("file").GetString()!);
        }
    }

    [Fact]
    public void PredictSkipsAnUnreadableImageNamesItAndClassifiesTheRest()
    {
        string folder = Path.Combine(fixture.Folder, "mixed");
        Directory.CreateDirectory(folder);
        File.Copy(PthFixture.ImagePath, Path.Combine(folder, "a.png"), overwrite: true);
        File.WriteAllBytes(Path.Combine(folder, "b.png"), File.ReadAllBytes(PthFixture.ImagePath)[..100]);
        File.Copy(PthFixture.ImagePath, Path.Combine(folder, "c.png"), overwrite: true);
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        // Batch size 2: the bad image shares a batch with a good one.
        int code = PredictCommand.Run(new PredictCommand.Settings([folder], "torchvision", fixture.PthPath, null, 2, true, true, true, 2), stdout, stderr);

        Assert.Equal(1, code);
        JsonElement results = JsonDocument.Parse(stdout.ToString()).RootElement;
        Assert.Equal([Path.Combine(folder, "a.png"), Path.Combine(folder, "c.png")],
            results.EnumerateArray().Select(r => r.GetProperty("file").GetString()!).ToArray());
        Compare.Close(GoldenFill.Floats(results[0].GetProperty("logits")), GoldenFill.Floats(results[1].GetProperty("logits")), 1e-5, "c.png");
        Assert.Contains($"'{Path.Combine(folder, "b.png")}'", stderr.ToString());
        Assert.Contains("1 of 3 images could not be read", stderr.ToString());
    }

    [Fact]
    public void TenCropMatchesTorchvisionsTenCrop()
    {
        var stdout = new StringWriter();
        PredictCommand.Run(new PredictCommand.Settings(
            [PthFixture.ImagePath], "torchvision", fixture.PthPath, null, 10, true, true, true, 4, Crops: 10), stdout);

        JsonElement result = JsonDocument.Parse(stdout.ToString()).RootElement[0];
        float[] expected = fixture.ExpectedArray("image_ten_crop_probabilities");
        var probabilities = new float[10];
        foreach (JsonElement entry in result.GetProperty("top").EnumerateArray())
        {
            probabilities[entry.GetProperty("index").GetInt32()] = entry.GetProperty("probability").GetSingle();
        }
        Compare.Close(expected, probabilities, ImageTolerance, "ten-crop probabilities");
        Compare.Close(fixture.ExpectedArray("image_ten_crop_logits"), GoldenFill.Floats(result.GetProperty("logits")),
            ImageTolerance, "ten-crop mean logits");
    }

    [Fact]
    public void PaperMultiCropGives144InputsAllEqualForOneColour()
    {
        var preprocessor = new ImagePreprocessor(Preset.Torchvision, 144);
        var inputs = new float[144 * preprocessor.Length];
        inputs.AsSpan().Fill(float.NaN);
        preprocessor.Load(PthFixture.ImagePath, inputs);
        Assert.DoesNotContain(inputs, float.IsNaN);

        var center = new float[preprocessor.Length];
        new ImagePreprocessor(Preset.Torchvision).Load(Path.Combine(PthFixture.Source, "solid.png"), center);
        preprocessor.Load(Path.Combine(PthFixture.Source, "solid.png"), inputs);
        for (int crop = 0; crop < 144; crop++)
        {
            Assert.True(center.AsSpan().SequenceEqual(inputs.AsSpan(crop * preprocessor.Length, preprocessor.Length)), $"crop {crop}");
        }
    }

    [Fact]
    public void CommandLineImportThenPredict()
    {
        string output = Path.Combine(fixture.Folder, "cli.safetensors");
        var (code, stdout, error) = CliTests.Run("import", fixture.PthPath, "-o", output);
        Assert.True(code == 0, error);
        Assert.StartsWith($"wrote {output}: ", stdout);

        (code, stdout, error) = CliTests.Run(
            "predict", PthFixture.ImagePath, "--weights", output, "--no-transform-input", "--json", "--top", "1");
        Assert.True(code == 0, error);
        JsonElement top = JsonDocument.Parse(stdout).RootElement[0].GetProperty("top");
        Assert.Equal(fixture.Expected.GetProperty("image_top1").GetInt32(), top[0].GetProperty("index").GetInt32());

        (code, _, error) = CliTests.Run("import", fixture.PthPath, "-o", Path.Combine(fixture.Folder, "out.pth"));
        Assert.Equal(2, code);
        Assert.Contains("must name a .safetensors file", error);
    }

    [Fact]
    public void LabelsComeFromTheResourceOrAFileAndMustMatchTheClasses()
    {
        IReadOnlyList<string> imageNet = PredictCommand.ImageNetLabels();
        Assert.Equal(1000, imageNet.Count);
        Assert.Equal("tench", imageNet[0]);
        Assert.Null(PredictCommand.ReadLabels(null, 10));

        string file = Path.Combine(fixture.Folder, "labels.txt");
        File.WriteAllLines(file, Enumerable.Range(0, 10).Select(i => $"class {i}").Append(""));
        Assert.Equal("class 9", PredictCommand.ReadLabels(file, 10)![9]);
        var e = Assert.Throws<ArgumentException>(() => PredictCommand.ReadLabels("imagenet", 10));
        Assert.Contains("1000 names, but the weights have 10 classes", e.Message);
    }
}
