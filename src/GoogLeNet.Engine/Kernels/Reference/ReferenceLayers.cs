namespace GoogLeNet.Engine.Kernels.Reference;

/// <summary>
/// Definitions written from the formulas, not from the fast kernels' loops: every output asks
/// every input whether it belongs to its window (pooling), or sums in double (normalisation).
/// Slow on purpose; tests compare the kernels against them over swept shapes.
/// </summary>
public static class ReferenceLayers
{
    // One axis of a pooling window in PyTorch's terms: start = o*stride - padding, and the window
    // holds input positions i with start <= i < start + kernel.
    private static bool InWindow(int i, int o, int kernel, int stride, int padding) =>
        i >= o * stride - padding && i < o * stride - padding + kernel;

    // input (planes, h, w); output (planes, oh, ow)
    public static void MaxPool(ReadOnlySpan<float> input, int planes, int h, int w, int kernel, int stride, int padding,
        int oh, int ow, Span<float> output)
    {
        for (int p = 0; p < planes; p++)
        for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++)
        {
            double best = double.NegativeInfinity;
            for (int iy = 0; iy < h; iy++)
            for (int ix = 0; ix < w; ix++)
            {
                if (InWindow(iy, oy, kernel, stride, padding) && InWindow(ix, ox, kernel, stride, padding))
                {
                    best = Math.Max(best, input[(p * h + iy) * w + ix]);
                }
            }
            output[(p * oh + oy) * ow + ox] = (float)best;
        }
    }

    // Divisor with count_include_pad: the window's cells inside the padded input; without it,
    // the cells inside the input.
    public static void AvgPool(ReadOnlySpan<float> input, int planes, int h, int w, int kernel, int stride, int padding,
        bool countIncludePad, int oh, int ow, Span<float> output)
    {
        for (int p = 0; p < planes; p++)
        for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++)
        {
            double sum = 0;
            int inside = 0;
            int padded = 0;
            for (int iy = -padding; iy < h + padding; iy++)
            for (int ix = -padding; ix < w + padding; ix++)
            {
                if (!InWindow(iy, oy, kernel, stride, padding) || !InWindow(ix, ox, kernel, stride, padding))
                {
                    continue;
                }
                padded++;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                {
                    inside++;
                    sum += input[(p * h + iy) * w + ix];
                }
            }
            output[(p * oh + oy) * ow + ox] = (float)(sum / (countIncludePad ? padded : inside));
        }
    }

    // Window of output o along an axis of size n pooled to m: floor(o n / m) to ceil((o+1) n / m).
    public static void AdaptiveAvgPool(ReadOnlySpan<float> input, int planes, int h, int w, int oh, int ow, Span<float> output)
    {
        for (int p = 0; p < planes; p++)
        for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++)
        {
            int y0 = (int)Math.Floor((double)oy * h / oh), y1 = (int)Math.Ceiling((double)(oy + 1) * h / oh);
            int x0 = (int)Math.Floor((double)ox * w / ow), x1 = (int)Math.Ceiling((double)(ox + 1) * w / ow);
            double sum = 0;
            for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++)
            {
                sum += input[(p * h + iy) * w + ix];
            }
            output[(p * oh + oy) * ow + ox] = (float)(sum / ((y1 - y0) * (x1 - x0)));
        }
    }

    // b_c = a_c / (k + alpha/size * sum over c' in [c - size/2, c + (size-1)/2] of a_c'^2)^beta
    public static void Lrn(ReadOnlySpan<float> input, int batch, int channels, int pixels, int size, double alpha, double beta,
        double k, Span<float> output)
    {
        for (int n = 0; n < batch; n++)
        for (int c = 0; c < channels; c++)
        for (int i = 0; i < pixels; i++)
        {
            double sum = 0;
            for (int j = c - size / 2; j <= c + (size - 1) / 2; j++)
            {
                if (j >= 0 && j < channels)
                {
                    double a = input[(n * channels + j) * pixels + i];
                    sum += a * a;
                }
            }
            double x = input[(n * channels + c) * pixels + i];
            output[(n * channels + c) * pixels + i] = (float)(x / Math.Pow(k + alpha / size * sum, beta));
        }
    }

    // Training-mode batch normalisation with the biased batch variance.
    public static void BatchNormTrain(ReadOnlySpan<float> input, int batch, int channels, int pixels,
        ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, double epsilon, Span<float> output)
    {
        for (int c = 0; c < channels; c++)
        {
            double sum = 0, squares = 0;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                double x = input[(n * channels + c) * pixels + i];
                sum += x;
                squares += x * x;
            }
            double count = (double)batch * pixels;
            double mean = sum / count;
            double variance = squares / count - mean * mean;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                int o = (n * channels + c) * pixels + i;
                output[o] = (float)((input[o] - mean) / Math.Sqrt(variance + epsilon) * gamma[c] + beta[c]);
            }
        }
    }

    // Gradients of training-mode batch normalisation: y = xhat gamma + beta with xhat = (x - mean) / std,
    // dxhat = dy gamma, dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / std.
    public static void BatchNormTrainBackward(ReadOnlySpan<float> input, ReadOnlySpan<float> dOutput, int batch, int channels,
        int pixels, ReadOnlySpan<float> gamma, double epsilon, Span<float> dInput, Span<float> dGamma, Span<float> dBeta)
    {
        double count = (double)batch * pixels;
        for (int c = 0; c < channels; c++)
        {
            double sum = 0;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                sum += input[(n * channels + c) * pixels + i];
            }
            double mean = sum / count;
            double squares = 0;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                double d = input[(n * channels + c) * pixels + i] - mean;
                squares += d * d;
            }
            double std = Math.Sqrt(squares / count + epsilon);
            double sumDxhat = 0, sumDxhatXhat = 0, sumDy = 0, sumDyXhat = 0;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                int o = (n * channels + c) * pixels + i;
                double xhat = (input[o] - mean) / std;
                sumDy += dOutput[o];
                sumDyXhat += dOutput[o] * xhat;
                sumDxhat += dOutput[o] * gamma[c];
                sumDxhatXhat += dOutput[o] * gamma[c] * xhat;
            }
            dGamma[c] = (float)sumDyXhat;
            dBeta[c] = (float)sumDy;
            for (int n = 0; n < batch; n++)
            for (int i = 0; i < pixels; i++)
            {
                int o = (n * channels + c) * pixels + i;
                double xhat = (input[o] - mean) / std;
                dInput[o] = (float)((dOutput[o] * gamma[c] - sumDxhat / count - xhat * sumDxhatXhat / count) / std);
            }
        }
    }
}
