namespace GoogLeNet.Engine.Kernels;

/// <summary>Output size of a convolution or pooling window along one axis (PyTorch's formula).</summary>
public static class WindowMath
{
    public static int OutputSize(int input, int kernel, int stride, int padding, bool ceilMode)
    {
        int span = input + 2 * padding - kernel;
        if (span < 0)
        {
            return 0;
        }
        int output = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1;
        // A window that would start entirely in the right padding is dropped, as in PyTorch.
        if (ceilMode && (output - 1) * stride >= input + padding)
        {
            output--;
        }
        return output;
    }
}

/// <summary>
/// Convolution of one NCHW image as im2col + GEMM: Y[co, p] = W[co, ci*kh*kw] col[ci*kh*kw, p].
/// A 1x1 convolution with stride 1 and no padding reads the image as col directly.
/// </summary>
public static unsafe class Convolution
{
    // Channels are independent in im2col and col2im, so the engine's threads split them.
    private static void Im2ColParallel(
        ReadOnlySpan<float> image, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col)
    {
        int plane = height * width;
        int rows = kernelH * kernelW * outH * outW;
        fixed (float* imagePointer = image)
        fixed (float* colPointer = col)
        {
            nint src = (nint)imagePointer;
            nint dst = (nint)colPointer;
            Parallelism.For(channels, rows, (start, count) => Im2Col(
                new ReadOnlySpan<float>((float*)src + (long)start * plane, count * plane), count, height, width,
                kernelH, kernelW, stride, padding, outH, outW,
                new Span<float>((float*)dst + (long)start * rows, count * rows)));
        }
    }

    private static void Col2ImParallel(
        ReadOnlySpan<float> col, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> image)
    {
        int plane = height * width;
        int rows = kernelH * kernelW * outH * outW;
        fixed (float* imagePointer = image)
        fixed (float* colPointer = col)
        {
            nint dst = (nint)imagePointer;
            nint src = (nint)colPointer;
            Parallelism.For(channels, rows, (start, count) =>
            {
                var part = new Span<float>((float*)dst + (long)start * plane, count * plane);
                part.Clear();
                Col2ImAccumulate(new ReadOnlySpan<float>((float*)src + (long)start * rows, count * rows), count, height, width,
                    kernelH, kernelW, stride, padding, outH, outW, part);
            });
        }
    }

    public static bool IsPointwise(int kernelH, int kernelW, int stride, int padding) =>
        kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0;

    // image is (c, h, w); col is (c*kh*kw, oh*ow), zero where the window is in the padding.
    public static void Im2Col(
        ReadOnlySpan<float> image, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> col)
    {
        int outPixels = outH * outW;
        for (int c = 0; c < channels; c++)
        {
            ReadOnlySpan<float> plane = image.Slice(c * height * width, height * width);
            for (int ky = 0; ky < kernelH; ky++)
            {
                for (int kx = 0; kx < kernelW; kx++)
                {
                    Span<float> row = col.Slice(((c * kernelH + ky) * kernelW + kx) * outPixels, outPixels);
                    for (int oy = 0; oy < outH; oy++)
                    {
                        int iy = oy * stride - padding + ky;
                        Span<float> dst = row.Slice(oy * outW, outW);
                        if ((uint)iy >= (uint)height)
                        {
                            dst.Clear();
                            continue;
                        }
                        ReadOnlySpan<float> src = plane.Slice(iy * width, width);
                        int ix0 = kx - padding;
                        if (stride == 1 && ix0 >= 0 && ix0 + outW <= width)
                        {
                            src.Slice(ix0, outW).CopyTo(dst);
                            continue;
                        }
                        for (int ox = 0; ox < outW; ox++)
                        {
                            int ix = ox * stride + ix0;
                            dst[ox] = (uint)ix < (uint)width ? src[ix] : 0f;
                        }
                    }
                }
            }
        }
    }

    /// <summary>Scatters col back onto the image; accumulates into <paramref name="image"/>.</summary>
    public static void Col2ImAccumulate(
        ReadOnlySpan<float> col, int channels, int height, int width,
        int kernelH, int kernelW, int stride, int padding, int outH, int outW, Span<float> image)
    {
        int outPixels = outH * outW;
        for (int c = 0; c < channels; c++)
        {
            Span<float> plane = image.Slice(c * height * width, height * width);
            for (int ky = 0; ky < kernelH; ky++)
            {
                for (int kx = 0; kx < kernelW; kx++)
                {
                    ReadOnlySpan<float> row = col.Slice(((c * kernelH + ky) * kernelW + kx) * outPixels, outPixels);
                    for (int oy = 0; oy < outH; oy++)
                    {
                        int iy = oy * stride - padding + ky;
                        if ((uint)iy >= (uint)height)
                        {
                            continue;
                        }
                        Span<float> dst = plane.Slice(iy * width, width);
                        ReadOnlySpan<float> src = row.Slice(oy * outW, outW);
                        int ix0 = kx - padding;
                        if (stride == 1 && ix0 >= 0 && ix0 + outW <= width)
                        {
                            System.Numerics.Tensors.TensorPrimitives.Add(dst.Slice(ix0, outW), src, dst.Slice(ix0, outW));
                            continue;
                        }
                        for (int ox = 0; ox < outW; ox++)
                        {
                            int ix = ox * stride + ix0;
                            if ((uint)ix < (uint)width)
                            {
                                dst[ix] += src[ox];
                            }
                        }
                    }
                }
            }
        }
    }

    // input is (n, ci, h, w); weight is (co, ci, kh, kw); bias is (co) or empty; output is (n, co, oh, ow).
    // col is scratch of ci*kh*kw*oh*ow floats (unused for pointwise convolutions).
    public static void Forward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int outChannels, int kernelH, int kernelW,
        int stride, int padding, int outH, int outW, bool relu, Span<float> col, Span<float> output)
    {
        int inSize = inChannels * height * width;
        int outPixels = outH * outW;
        int k = inChannels * kernelH * kernelW;
        bool pointwise = IsPointwise(kernelH, kernelW, stride, padding);
        for (int n = 0; n < batch; n++)
        {
            ReadOnlySpan<float> image = input.Slice(n * inSize, inSize);
            ReadOnlySpan<float> b = image;
            if (!pointwise)
            {
                Im2ColParallel(image, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, col);
                b = col.Slice(0, k * outPixels);
            }
            Gemm.Multiply(false, false, outChannels, outPixels, k, weight, k, b, outPixels,
                output.Slice(n * outChannels * outPixels, outChannels * outPixels), outPixels,
                accumulate: false, rowBias: bias, relu: relu);
        }
    }

    /// <summary>
    /// Accumulates dWeight and dBias; overwrites dInput unless it is empty (the first layer
    /// needs no input gradient).
    /// </summary>
    public static void Backward(
        ReadOnlySpan<float> input, int batch, int inChannels, int height, int width,
        ReadOnlySpan<float> weight, int outChannels, int kernelH, int kernelW, int stride, int padding,
        int outH, int outW, ReadOnlySpan<float> dOutput, Span<float> col,
        Span<float> dWeight, Span<float> dBias, Span<float> dInput)
    {
        int inSize = inChannels * height * width;
        int outPixels = outH * outW;
        int k = inChannels * kernelH * kernelW;
        bool pointwise = IsPointwise(kernelH, kernelW, stride, padding);
        for (int n = 0; n < batch; n++)
        {
            ReadOnlySpan<float> image = input.Slice(n * inSize, inSize);
            ReadOnlySpan<float> dY = dOutput.Slice(n * outChannels * outPixels, outChannels * outPixels);
            ReadOnlySpan<float> colOfImage = image;
            if (!pointwise)
            {
                Im2ColParallel(image, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, col);
                colOfImage = col.Slice(0, k * outPixels);
            }
            // dW (co, k) += dY (co, p) col^T (p, k)
            Gemm.Multiply(false, true, outChannels, k, outPixels, dY, outPixels, colOfImage, outPixels,
                dWeight, k, accumulate: true);
            if (!dBias.IsEmpty)
            {
                for (int co = 0; co < outChannels; co++)
                {
                    dBias[co] += System.Numerics.Tensors.TensorPrimitives.Sum(dY.Slice(co * outPixels, outPixels));
                }
            }
            if (dInput.IsEmpty)
            {
                continue;
            }
            Span<float> dImage = dInput.Slice(n * inSize, inSize);
            if (pointwise)
            {
                // dX (ci, p) = W^T (ci, co) dY (co, p)
                Gemm.Multiply(true, false, k, outPixels, outChannels, weight, k, dY, outPixels, dImage, outPixels, accumulate: false);
            }
            else
            {
                Gemm.Multiply(true, false, k, outPixels, outChannels, weight, k, dY, outPixels, col, outPixels, accumulate: false);
                Col2ImParallel(col, inChannels, height, width, kernelH, kernelW, stride, padding, outH, outW, dImage);
            }
        }
    }
}
