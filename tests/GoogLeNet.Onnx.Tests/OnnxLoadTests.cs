using Google.Protobuf;
using GoogLeNet.Onnx;
using Onnx;

namespace GoogLeNet.Onnx.Tests;

/// <summary>What the importer refuses, and that it refuses before allocating.</summary>
public class OnnxLoadTests
{
    private static ModelProto SmallExport() => OnnxExporter.Build(OnnxRoundTripTests.SmallModel("d2l"));

    private static TensorProto Initializer(ModelProto model, string name) => model.Graph.Initializer.Single(t => t.Name == name);

    [Fact]
    public void ExternalDataIsRejected()
    {
        ModelProto model = SmallExport();
        TensorProto fc = Initializer(model, "fc.weight");
        fc.ClearRawData();
        fc.DataLocation = TensorProto.Types.DataLocation.External;
        fc.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(model.ToByteArray()));
        Assert.Contains("'fc.weight'", e.Message);
        Assert.Contains("external", e.Message);
    }

    [Fact]
    public void HugeDeclaredDimensionsAreRejectedBeforeAllocating()
    {
        ModelProto model = SmallExport();
        TensorProto fc = Initializer(model, "fc.weight");
        fc.Dims.Clear();
        fc.Dims.Add([1L << 40, 1L << 40]);
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(model.ToByteArray()));
        Assert.Contains("'fc.weight'", e.Message);
    }

    [Fact]
    public void RawDataShorterThanTheShapeIsRejected()
    {
        ModelProto model = SmallExport();
        TensorProto fc = Initializer(model, "fc.weight");
        fc.RawData = ByteString.CopyFrom(fc.RawData.Span[..^4]);
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(model.ToByteArray()));
        Assert.Contains("needs 40960 bytes", e.Message);
    }

    [Fact]
    public void UnsupportedOperatorIsNamed()
    {
        ModelProto model = SmallExport();
        model.Graph.Node[0].OpType = "Tanh";
        var e = Assert.Throws<NotSupportedException>(() => OnnxModel.Parse(model.ToByteArray()));
        Assert.Contains("'Tanh'", e.Message);
        Assert.Contains(model.Graph.Node[0].Name, e.Message);
    }

    [Fact]
    public void MissingValueIsAnError()
    {
        ModelProto model = SmallExport();
        model.Graph.Node[1].Input[0] = "nowhere";
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(model.ToByteArray()));
        Assert.Contains("'nowhere'", e.Message);
    }

    [Fact]
    public void CorruptedFilesGiveErrorsNotCrashes()
    {
        byte[] good = SmallExport().ToByteArray();
        var input = OnnxRoundTripTests.FixedInput(OnnxRoundTripTests.SmallModel("d2l"), batch: 1);
        var rng = new Random(11);
        for (int trial = 0; trial < 200; trial++)
        {
            byte[] bytes = trial % 2 == 0 ? good[..rng.Next(good.Length)] : (byte[])good.Clone();
            if (trial % 2 == 1)
            {
                for (int flips = 0; flips < 8; flips++)
                {
                    bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
                }
            }
            try
            {
                OnnxModel model = OnnxModel.Parse(bytes);
                model.Run(input);
            }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException or ArgumentException or InvalidOperationException)
            {
            }
        }
    }

    [Fact]
    public void OldOpsetReshapeTakesItsShapeAttributeAndConcatDefaultsToChannels()
    {
        var graph = new GraphProto { Name = "old" };
        var concat = new NodeProto { OpType = "Concat", Name = "cat" };
        concat.Input.Add(["x", "x"]);
        concat.Output.Add("c");
        var reshape = new NodeProto { OpType = "Reshape", Name = "flat" };
        reshape.Input.Add("c");
        reshape.Output.Add("y");
        var shape = new AttributeProto { Name = "shape", Type = AttributeProto.Types.AttributeType.Ints };
        shape.Ints.Add([1, -1]);
        reshape.Attribute.Add(shape);
        graph.Node.Add([concat, reshape]);
        graph.Input.Add(new ValueInfoProto { Name = "x" });
        graph.Output.Add(new ValueInfoProto { Name = "y" });
        var model = new ModelProto { IrVersion = 3, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 3 });
        OnnxModel onnx = OnnxModel.Parse(model.ToByteArray());
        var x = OnnxTensor.FromFloats([1, 2, 3, 4], [1, 2, 2]);
        OnnxTensor y = onnx.Run(new Dictionary<string, OnnxTensor> { ["x"] = x })["y"];
        Assert.Equal([1, 8], y.Shape);
        Assert.Equal([1f, 2, 3, 4, 1, 2, 3, 4], y.RequireFloats("y"));
    }

    [Fact]
    public void OversizedFileIsRefusedBeforeReading()
    {
        string path = OnnxRoundTripTests.TempPath("big.onnx");
        try
        {
            File.WriteAllBytes(path, new byte[4096]);
            var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Load(path, maxFileBytes: 1024));
            Assert.Contains("4096 bytes", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
