using System.Diagnostics;

namespace GoogLeNet.Models;

/// <summary>Wall time per top-level module, forward and backward, summed over the passes it saw.</summary>
public sealed class ModuleProfile
{
    private readonly Dictionary<string, (double Forward, double Backward)> _milliseconds = [];
    private readonly List<string> _order = [];

    public int ForwardPasses { get; private set; }

    /// <summary>Modules in the order they first ran, with their summed milliseconds.</summary>
    public IEnumerable<(string Module, double ForwardMilliseconds, double BackwardMilliseconds)> Rows =>
        _order.Select(m => (m, _milliseconds[m].Forward, _milliseconds[m].Backward));

    public void Clear()
    {
        _milliseconds.Clear();
        _order.Clear();
        ForwardPasses = 0;
    }

    internal void CountForwardPass() => ForwardPasses++;

    internal void Add(string module, long startTimestamp, bool backward)
    {
        double elapsed = Stopwatch.GetElapsedTime(startTimestamp).TotalMilliseconds;
        if (!_milliseconds.TryGetValue(module, out var times))
        {
            _order.Add(module);
            times = (0, 0);
        }
        _milliseconds[module] = backward ? (times.Forward, times.Backward + elapsed) : (times.Forward + elapsed, times.Backward);
    }
}
