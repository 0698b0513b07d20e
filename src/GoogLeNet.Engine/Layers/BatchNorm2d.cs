using GoogLeNet.Engine.Kernels;

namespace GoogLeNet.Engine.Layers;

/// <summary>
/// Batch normalisation per channel. Training normalises with batch statistics and updates the
/// running ones (PyTorch's momentum convention); inference uses the running statistics.
/// </summary>
public sealed class BatchNorm2d : Layer
{
    private readonly Parameter _weight;
    private readonly Parameter _bias;
    private readonly Parameter _runningMean;
    private readonly Parameter _runningVar;
    private readonly Parameter _batchesTracked;
    private readonly float[] _mean;
    private readonly float[] _invStd;
    private bool _usedBatchStatistics;
    private Tensor? _input;
    private Tensor? _output;
    private Tensor? _dInput;

    public BatchNorm2d(string name, int channels, float epsilon = 1e-5f, float momentum = 0.1f)
        : base(name)
    {
        Channels = channels;
        Epsilon = epsilon;
        Momentum = momentum;
        _weight = new Parameter("weight", [channels]) { NoDecay = true };
        _bias = new Parameter("bias", [channels]) { NoDecay = true };
        _runningMean = new Parameter("running_mean", [channels], trainable: false);
        _runningVar = new Parameter("running_var", [channels], trainable: false);
        _batchesTracked = new Parameter("num_batches_tracked", [], trainable: false);
        _weight.Value.Span.Fill(1f);
        _runningVar.Value.Span.Fill(1f);
        _mean = new float[channels];
        _invStd = new float[channels];
    }

    public int Channels { get; }

    public float Epsilon { get; }

    public float Momentum { get; }

    public Parameter Weight => _weight;

    public Parameter BiasParameter => _bias;

    public Parameter RunningMean => _runningMean;

    public Parameter RunningVar => _runningVar;

    public override IEnumerable<Parameter> OwnParameters => [_weight, _bias, _runningMean, _runningVar, _batchesTracked];

    public override int[] OutputShape(int[] inputShape)
    {
        ExpectImage(inputShape, Channels);
        return inputShape;
    }

    public override Tensor Forward(Tensor input)
    {
        OutputShape(SampleShape(input));
        (int batch, int pixels) = PerChannelRuns(input);
        Tensor output = Ensure(ref _output, input.Shape);
        _usedBatchStatistics = IsTraining;
        if (IsTraining)
        {
            if ((long)batch * pixels < 2)
            {
                throw new ShapeException($"{Name}: batch statistics need more than one value per channel, got input {Tensor.Format(input.Shape)}.");
            }
            Parallelism.For(Channels, (long)batch * pixels, (start, count) =>
                Normalization.BatchNormTrainForward(input.Span, batch, Channels, pixels, _weight.Value.Span, _bias.Value.Span,
                    Epsilon, Momentum, _runningMean.Value.Span, _runningVar.Value.Span, _mean, _invStd, output.Span,
                    start, start + count));
            _batchesTracked.Value.Span[0] += 1f;
        }
        else
        {
            ReadOnlySpan<float> runningVar = _runningVar.Value.Span;
            _runningMean.Value.Span.CopyTo(_mean);
            for (int c = 0; c < Channels; c++)
            {
                _invStd[c] = 1f / MathF.Sqrt(runningVar[c] + Epsilon);
            }
            if (batch == 1)
            {
                Parallelism.For(Channels, pixels, (start, count) =>
                    Normalization.BatchNormApply(input.Span.Slice(start * pixels, count * pixels), 1, count, pixels,
                        _weight.Value.Span.Slice(start), _bias.Value.Span.Slice(start), _mean.AsSpan(start), _invStd.AsSpan(start),
                        output.Span.Slice(start * pixels, count * pixels)));
            }
            else
            {
                int image = Channels * pixels;
                Parallelism.For(batch, image, (start, count) =>
                    Normalization.BatchNormApply(input.Span.Slice(start * image, count * image), count, Channels, pixels,
                        _weight.Value.Span, _bias.Value.Span, _mean, _invStd, output.Span.Slice(start * image, count * image)));
            }
        }
        _input = input;
        return output;
    }

    public override Tensor Backward(Tensor dOutput)
    {
        Tensor input = RequireForward(_input);
        Tensor dInput = Ensure(ref _dInput, input.Shape);
        (int batch, int pixels) = PerChannelRuns(input);
        Parallelism.For(Channels, (long)batch * pixels, (start, count) =>
            Normalization.BatchNormBackward(input.Span, dOutput.Span, batch, Channels, pixels,
                _weight.Value.Span, _mean, _invStd, _usedBatchStatistics, _weight.Grad!.Span, _bias.Grad!.Span, dInput.Span,
                start, start + count));
        return dInput;
    }
}
