using System.CommandLine;
using GoogLeNet.Cli;

var root = new RootCommand("GoogLeNet (Inception v1) in C#: build, train, evaluate, import, export and run it without Python.");
root.Subcommands.Add(SummaryCommand.Create());
root.Subcommands.Add(CostCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ImportCommand.Create());
root.Subcommands.Add(PredictCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(ExportCommand.Create());
root.Subcommands.Add(OnnxSuiteCommand.Create());
return root.Parse(args).Invoke();
