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
        OutputShapeFor(input);
        (int batch, int pixels) = PerChannelRuns(input);
        Tensor output = Ensure(ref _output, input.Shape);
        _usedBatchStatistics = IsTraining;
        if (IsTraining)
        {
            if ((long)batch * pixels < 2)
            {
                throw new ShapeException($"{Name}: batch statistics need more than one value per channel, got input {Tensor.Format(input.Shape)}.");
            }
            Parallelism.For(Channels, (long)batch * pixels, (self: this, input, output, batch, pixels), static (s, start, count) =>
                Normalization.BatchNormTrainForward(s.input.Span, s.batch, s.self.Channels, s.pixels, s.self._weight.Value.Span,
                    s.self._bias.Value.Span, s.self.Epsilon, s.self.Momentum, s.self._runningMean.Value.Span,
                    s.self._runningVar.Value.Span, s.self._mean, s.self._invStd, s.output.Span, start, start + count));
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
                Parallelism.For(Channels, pixels, (self: this, input, output, pixels), static (s, start, count) =>
                    Normalization.BatchNormApply(s.input.Span.Slice(start * s.pixels, count * s.pixels), 1, count, s.pixels,
                        s.self._weight.Value.Span.Slice(start), s.self._bias.Value.Span.Slice(start), s.self._mean.AsSpan(start),
                        s.self._invStd.AsSpan(start), s.output.Span.Slice(start * s.pixels, count * s.pixels)));
            }
            else
            {
                int image = Channels * pixels;
                Parallelism.For(batch, image, (self: this, input, output, pixels, image), static (s, start, count) =>
                    Normalization.BatchNormApply(s.input.Span.Slice(start * s.image, count * s.image), count, s.self.Channels, s.pixels,
                        s.self._weight.Value.Span, s.self._bias.Value.Span, s.self._mean, s.self._invStd,
                        s.output.Span.Slice(start * s.image, count * s.image)));
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
        Parallelism.For(Channels, (long)batch * pixels, (self: this, input, dOutput, dInput, batch, pixels), static (s, start, count) =>
            Normalization.BatchNormBackward(s.input.Span, s.dOutput.Span, s.batch, s.self.Channels, s.pixels,
                s.self._weight.Value.Span, s.self._mean, s.self._invStd, s.self._usedBatchStatistics, s.self._weight.Grad!.Span,
                s.self._bias.Grad!.Span, s.dInput.Span, start, start + count));
        return dInput;
    }
}
