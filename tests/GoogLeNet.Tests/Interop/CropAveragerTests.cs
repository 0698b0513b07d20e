using GoogLeNet.Cli;
using GoogLeNet.Engine;
using GoogLeNet.Models;
using Xunit;

namespace GoogLeNet.Tests.Interop;

public class CropAveragerTests
{
    [Fact]
    public void AnImageThatCannotBeLoadedNeverReachesTheNetwork()
    {
        const int Classes = 3;
        var preprocessor = new ImagePreprocessor(Preset.D2l);
        var seen = new List<float>();
        // Each row's logits are its input's first value in every class, so a result names the image it came from.
        Tensor Forward(Tensor input)
        {
            int rows = input.Shape[0];
            var logits = new float[rows * Classes];
            for (int row = 0; row < rows; row++)
            {
                float marker = input.Span[row * preprocessor.Length];
                seen.Add(marker);
                logits.AsSpan(row * Classes, Classes).Fill(marker);
            }
            return new Tensor(logits, 0, [rows, Classes]);
        }
        var done = new List<(int Image, float Logit)>();

        new CropAverager(Forward, Classes, preprocessor, batchSize: 2).Run(
            4,
            (image, crops) =>
            {
                crops.Fill(image + 10);
                return image != 1;
            },
            (image, _, logits) => done.Add((image, logits[0])));

        Assert.Equal([10f, 12f, 13f], seen);
        Assert.Equal([(0, 10f), (2, 12f), (3, 13f)], done);
    }
}
