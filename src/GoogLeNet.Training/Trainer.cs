using System.Diagnostics;
using GoogLeNet.Data;
using GoogLeNet.Engine;
using GoogLeNet.Engine.Optim;
using GoogLeNet.Models;

namespace GoogLeNet.Training;

/// <summary>A non-finite loss: the step was not applied, and the last checkpoint holds the last good weights.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>Progress after one optimizer step; <see cref="Accuracy"/> and <see cref="Loss"/> are the epoch's running means.</summary>
public readonly record struct StepInfo(
    int Epoch, int Batch, int BatchesPerEpoch, long Step, double Loss, double Accuracy, double LearningRate, double ImagesPerSecond);

public enum TrainingOutcome
{
    Completed,

    /// <summary>Stopped on request (Ctrl-C); last.safetensors holds the exact position to resume from.</summary>
    Interrupted,
}

/// <summary>
/// Minibatch SGD over a <see cref="BatchLoader"/>: zero the gradients, forward in training mode,
/// the weighted main + aux loss, backward, optional global-norm clipping, one SGD step. Saves
/// last.safetensors every <see cref="TrainConfig.CheckpointEvery"/> steps and at each epoch's end
/// (with best.safetensors when the test accuracy improves) and writes the run folder's metrics.
/// </summary>
public sealed class Trainer
{
    private readonly GoogLeNetModel _model;
    private readonly BatchLoader _train;
    private readonly BatchLoader? _test;
    private readonly TrainConfig _config;
    private readonly ILearningRateSchedule _schedule;
    private readonly GoogLeNetLoss _loss;
    private readonly RunFolder _folder;
    private readonly InputBuffers _inputs = new();
    private readonly Evaluator _evaluator = new();
    private readonly float[]? _weightAverage;
    private readonly float[]? _rawWeights;
    private long _savedStep = -1;

    public Trainer(GoogLeNetModel model, BatchLoader train, BatchLoader? test, TrainConfig config, string runDirectory)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        _model = model;
        _train = train;
        _test = test;
        _config = config;
        _schedule = config.BuildSchedule();
        _loss = new GoogLeNetLoss
        {
            Aux1Weight = config.AuxWeight,
            Aux2Weight = config.AuxWeight,
            LabelSmoothing = config.LabelSmoothing,
        };
        Optimizer = new Sgd(model.Parameters, (float)config.Momentum, (float)config.WeightDecay, config.Nesterov);
        if (config.WeightAverageDecay > 0)
        {
            _weightAverage = model.Parameters.Values.ToArray();
            _rawWeights = new float[_weightAverage.Length];
        }
        _folder = new RunFolder(runDirectory);
        State = new TrainingState { LoaderSeed = config.Seed };
    }

    public Sgd Optimizer { get; }

    /// <summary>The moving average of the trainable values, or null when averaging is off.</summary>
    public float[]? WeightAverage => _weightAverage;

    public TrainingState State { get; private set; }

    public RunFolder Folder => _folder;

    /// <summary>Called after every step, on the training thread.</summary>
    public Action<StepInfo>? StepCompleted { get; set; }

    public Action<EpochMetrics>? EpochCompleted { get; set; }

    /// <summary>Continues from the run folder's last.safetensors.</summary>
    public void Resume()
    {
        TrainingState state = Checkpoint.LoadTraining(_folder.LastPath, _model, Optimizer, _weightAverage);
        if (state.LoaderSeed != _config.Seed)
        {
            throw new InvalidDataException(
                $"'{_folder.LastPath}' was saved with data seed {state.LoaderSeed}, but the configuration says {_config.Seed}.");
        }
        if (state.Batch > _train.BatchesPerEpoch)
        {
            throw new InvalidDataException(
                $"'{_folder.LastPath}' stopped at batch {state.Batch} of an epoch of {_train.BatchesPerEpoch} batches; the dataset or batch size changed.");
        }
        State = state;
        _savedStep = state.Step;
    }

    public TrainingOutcome Run(CancellationToken cancellation = default)
    {
        if (State.Step == 0 && State.Epoch == 0 && State.Batch == 0)
        {
            _folder.WriteConfig(_config);
            SaveLast();
        }
        int batches = _train.BatchesPerEpoch;
        int classes = _model.Options.Classes;
        while (State.Epoch < _config.Epochs)
        {
            int epoch = State.Epoch;
            _model.SetTraining(true);
            _train.StartEpoch(epoch, State.Batch);
            var clock = Stopwatch.StartNew();
            double secondsBefore = State.Seconds;
            while (_train.Next() is Batch batch)
            {
                double lr = _schedule.At(epoch + (double)batch.BatchIndex / batches);
                Tensor input = _inputs.Load(batch);
                ReadOnlySpan<int> labels = batch.Labels.AsSpan(0, batch.Count);
                _model.Parameters.ZeroGrad();
                GoogLeNetOutput output = _model.Forward(input);
                GoogLeNetLoss.Result loss = _loss.Compute(output, labels);
                if (!double.IsFinite(loss.Total))
                {
                    throw new TrainingDivergedException(
                        $"The loss became {loss.Total} at step {State.Step + 1} (epoch {epoch + 1}, batch {batch.BatchIndex + 1} of {batches}, " +
                        $"learning rate {lr}); the step was not applied. The last good checkpoint is '{_folder.LastPath}' (step {_savedStep}); " +
                        "lower the learning rate or clip the gradients and resume from it.");
                }
                _loss.Backward(_model);
                ClipGradients();
                Optimizer.Step((float)lr);
                if (_weightAverage is not null)
                {
                    System.Numerics.Tensors.TensorPrimitives.Lerp(_weightAverage, _model.Parameters.Values, (float)(1 - _config.WeightAverageDecay), _weightAverage);
                }

                State.LossSum += loss.Main * batch.Count;
                State.Correct += CountCorrect(output.Logits.Span, labels, classes);
                State.Seen += batch.Count;
                State.Step++;
                State.Batch = batch.BatchIndex + 1;
                State.Seconds = secondsBefore + clock.Elapsed.TotalSeconds;
                bool saved = _config.CheckpointEvery > 0 && State.Step % _config.CheckpointEvery == 0;
                if (saved)
                {
                    SaveLast();
                }
                StepCompleted?.Invoke(new StepInfo(epoch, State.Batch, batches, State.Step, State.LossSum / State.Seen,
                    (double)State.Correct / State.Seen, lr, State.Seen / Math.Max(State.Seconds, 1e-9)));
                if (cancellation.IsCancellationRequested)
                {
                    if (!saved)
                    {
                        SaveLast();
                    }
                    return TrainingOutcome.Interrupted;
                }
            }
            FinishEpoch(epoch, _schedule.At(epoch + (batches - 1.0) / batches));
        }
        return TrainingOutcome.Completed;
    }

    private void FinishEpoch(int epoch, double lr)
    {
        // With averaging, the average is what gets evaluated and kept as best; training goes on from the raw weights.
        SwapAverage();
        EvaluationResult? test = _test is null ? null : _evaluator.Evaluate(_model, _test);
        bool best = test is not null && test.Top1 > State.BestTestAccuracy;
        if (best)
        {
            State.BestTestAccuracy = test!.Top1;
            Checkpoint.Save(_folder.BestPath, _model, classNames: _train.Dataset.ClassNames);
        }
        SwapAverage();
        double seen = Math.Max(State.Seen, 1);
        var metrics = new EpochMetrics(
            epoch + 1,
            State.LossSum / seen,
            State.Correct / seen,
            test?.Loss ?? double.NaN,
            test?.Top1 ?? double.NaN,
            test?.Top5 ?? double.NaN,
            lr,
            State.Seconds,
            State.Seen / Math.Max(State.Seconds, 1e-9));
        State.History.Add(metrics);
        State.Epoch = epoch + 1;
        State.Batch = 0;
        State.LossSum = 0;
        State.Correct = 0;
        State.Seen = 0;
        State.Seconds = 0;
        SaveLast();
        _folder.WriteMetrics(State.History);
        EpochCompleted?.Invoke(metrics);
    }

    private void SaveLast()
    {
        State.DropoutStates.Clear();
        foreach (var (path, dropout) in Checkpoint.DropoutLayers(_model))
        {
            State.DropoutStates[path] = dropout.Generator.State;
        }
        Checkpoint.Save(_folder.LastPath, _model, Optimizer, State, _weightAverage, _train.Dataset.ClassNames);
        _savedStep = State.Step;
    }

    private void SwapAverage()
    {
        if (_weightAverage is null)
        {
            return;
        }
        Span<float> values = _model.Parameters.Values;
        values.CopyTo(_rawWeights!);
        _weightAverage.CopyTo(values);
        _rawWeights!.CopyTo(_weightAverage, 0);
    }

    private void ClipGradients()
    {
        if (_config.ClipNorm <= 0)
        {
            return;
        }
        Span<float> grads = _model.Parameters.Grads;
        float norm = System.Numerics.Tensors.TensorPrimitives.Norm(grads);
        if (norm > _config.ClipNorm)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(grads, (float)(_config.ClipNorm / norm), grads);
        }
    }

    private static int CountCorrect(ReadOnlySpan<float> logits, ReadOnlySpan<int> labels, int classes)
    {
        int correct = 0;
        for (int n = 0; n < labels.Length; n++)
        {
            if (Metrics.ArgMax(logits.Slice(n * classes, classes)) == labels[n])
            {
                correct++;
            }
        }
        return correct;
    }
}
