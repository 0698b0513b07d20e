using System.Globalization;
using System.Text.Json;
using GoogLeNet.Cli;
using Xunit;

namespace GoogLeNet.Tests.Interop;

/// <summary>
/// googlenet eval with --weights and --crops on a ten-class image folder: a copy of the fixture image in
/// every class, and the one-colour image in the class predict gives it, so the figures follow from
/// predict's output for those two images.
/// </summary>
public class EvalWeightsTests(PthFixture fixture) : IClassFixture<PthFixture>
{
    private const double Tolerance = 1e-5;

    // predict runs an image's ten crops as one batch and eval batches of 70: their convolutions
    // group Winograd tiles differently, so logits differ by float32 roundings (about 1e-6 of
    // their size with the 4x4 tiles), and the loss, -log p of classes far from the prediction
    // (about 43 per image here; 1.4e-5 apart measured), carries them. Relative to the loss.
    private const double LossTolerance = 2e-6;

    private static string SolidPath => Path.Combine(PthFixture.Source, "solid.png");

    [Fact]
    public void WeightsFromAPthGiveTheExpectedTop1()
    {
        (string root, _) = MakeFolder("eval-one-crop", crops: 1);
        var (code, stdout, error) = CliTests.Run(
            "eval", "--weights", fixture.PthPath, "--preset", "torchvision", "--no-transform-input",
            "--dataset", "folder:" + root, "--batch", "4", "--json");
        Assert.True(code == 0, error);
        JsonElement result = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(11, result.GetProperty("count").GetInt32());
        // The fixture image is right in one of its ten classes, the one-colour image always.
        Assert.Equal(2.0 / 11, result.GetProperty("top1").GetDouble(), Tolerance);
        foreach (string field in (string[])["top5", "loss"])
        {
            Assert.Equal(JsonValueKind.Number, result.GetProperty(field).ValueKind);
        }
    }

    [Fact]
    public void TenCropsAverageWhatPredictGivesPerImage()
    {
        (string root, int solidClass) = MakeFolder("eval-ten-crop", crops: 10);
        double[] image = PredictProbabilities(PthFixture.ImagePath, crops: 10);
        double[] solid = PredictProbabilities(SolidPath, crops: 10);

        double loss = -Math.Log(solid[solidClass]);
        int top5 = Rank(solid, solidClass) < 5 ? 1 : 0;
        for (int label = 0; label < 10; label++)
        {
            loss -= Math.Log(image[label]);
            top5 += Rank(image, label) < 5 ? 1 : 0;
        }

        var (code, stdout, error) = CliTests.Run(
            "eval", "--weights", fixture.PthPath, "--preset", "torchvision", "--no-transform-input", "--crops", "10",
            "--dataset", "folder:" + root, "--batch", "7", "--json");
        Assert.True(code == 0, error);
        JsonElement result = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(11, result.GetProperty("count").GetInt32());
        Assert.Equal(10, result.GetProperty("crops").GetInt32());
        Assert.Equal(2.0 / 11, result.GetProperty("top1").GetDouble(), Tolerance);
        Assert.Equal(top5 / 11.0, result.GetProperty("top5").GetDouble(), Tolerance);
        Assert.Equal(loss / 11, result.GetProperty("loss").GetDouble(), LossTolerance * Math.Max(1, loss / 11));
    }

    [Fact]
    public void BadCropsOrBothWeightSourcesExitWithAnError()
    {
        var (code, _, error) = CliTests.Run(
            "eval", "--weights", fixture.PthPath, "--crops", "5", "--dataset", "folder:" + fixture.Folder);
        Assert.Equal(2, code);
        Assert.Contains("--crops must be 1, 10 or 144, got 5", error);

        (code, _, error) = CliTests.Run("eval", "--dataset", "folder:" + fixture.Folder);
        Assert.Equal(2, code);
        Assert.Contains("exactly one of --checkpoint", error);

        (code, _, error) = CliTests.Run("eval", "--checkpoint", fixture.PthPath, "--crops", "10", "--dataset", "folder:" + fixture.Folder);
        Assert.Equal(2, code);
        Assert.Contains("need --weights", error);

        (code, _, error) = CliTests.Run("eval", "--weights", fixture.PthPath, "--mirror", "--dataset", "folder:" + fixture.Folder);
        Assert.Equal(2, code);
        Assert.Contains("--mirror goes with --checkpoint", error);
    }

    /// <summary>root/test/class0..class9, each with the fixture image, and the one-colour image in the class predict gives it.</summary>
    private (string Root, int SolidClass) MakeFolder(string name, int crops)
    {
        string root = Path.Combine(fixture.Folder, name);
        double[] solid = PredictProbabilities(SolidPath, crops);
        int solidClass = Array.IndexOf(solid, solid.Max());
        for (int label = 0; label < 10; label++)
        {
            string folder = Path.Combine(root, "test", "class" + label.ToString(CultureInfo.InvariantCulture));
            Directory.CreateDirectory(folder);
            File.Copy(PthFixture.ImagePath, Path.Combine(folder, "image.png"), overwrite: true);
            if (label == solidClass)
            {
                File.Copy(SolidPath, Path.Combine(folder, "solid.png"), overwrite: true);
            }
        }
        return (root, solidClass);
    }

    private double[] PredictProbabilities(string path, int crops)
    {
        var stdout = new StringWriter();
        Assert.Equal(0, PredictCommand.Run(
            new PredictCommand.Settings([path], "torchvision", fixture.PthPath, null, 10, true, false, true, 5, Crops: crops), stdout));
        var probabilities = new double[10];
        foreach (JsonElement entry in JsonDocument.Parse(stdout.ToString()).RootElement[0].GetProperty("top").EnumerateArray())
        {
            probabilities[entry.GetProperty("index").GetInt32()] = entry.GetProperty("probability").GetDouble();
        }
        return probabilities;
    }

    private static int Rank(double[] values, int index) =>
        Enumerable.Range(0, values.Length).Count(i => values[i] > values[index] || (values[i] == values[index] && i < index));
}
