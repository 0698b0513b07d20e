using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/GoogLeNet.Benchmarks -- --filter '*Gemm*'   (or '*Conv3x3*')
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
