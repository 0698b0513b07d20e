using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/GoogLeNet.Benchmarks -- --filter '*Gemm*'   (or '*Conv3x3*', '*Pooling*', '*Inference*')
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
