using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/GoogLeNet.Benchmarks -- --filter '*Gemm*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
