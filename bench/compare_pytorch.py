#!/usr/bin/python3
"""Same workloads in PyTorch (Debian's python3-torch, both layouts) and in googlenet, alternating
in one run, so the ratios compare like with like on a shared machine.

    /usr/bin/python3 bench/compare_pytorch.py [--threads 2] [--iters 5] [--rounds 1] [--quick] [--only NAME] [--no-sgemm] [--peak 230]

Each workload runs in --rounds rounds of the three contenders (ours, PyTorch channels-last,
PyTorch NCHW), the order turning by one each round; a round's ratio is ours over the better
PyTorch layout of that round, and a row prints the median of each figure and of the ratios, so
a quiet or noisy minute on a shared host weighs on both sides alike.

The last row is SGEMM 4096^3 in GFLOP/s (`googlenet bench --gemm`) as a share of the nominal FMA
peak (--peak) and of the peak measured around it (`googlenet bench --fma-peak`: multiply-adds on
registers alone), with torch.mm's figure beside it (whatever BLAS PyTorch is linked with).

googlenet is run from src/GoogLeNet.Cli/bin/Release/net10.0/googlenet.dll (build it with
`dotnet build src/GoogLeNet.Cli -c Release` first).
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "src/GoogLeNet.Cli/bin/Release/net10.0/googlenet.dll")

# (name, preset, mode, batch, input, aux)
WORKLOADS = [
    ("torchvision train b32 aux", "torchvision", "train", 32, (3, 224, 224), True),
    ("torchvision infer b32", "torchvision", "infer", 32, (3, 224, 224), False),
    ("torchvision infer b1", "torchvision", "infer", 1, (3, 224, 224), False),
    ("d2l train b128", "d2l", "train", 128, (1, 96, 96), False),
]


def d2l_net():
    """d2l's GoogLeNet (seed 004) for 1x96x96 Fashion-MNIST."""
    class Inception(torch.nn.Module):
        def __init__(self, cin, c1, c2, c3, c4):
            super().__init__()
            self.p1 = torch.nn.Conv2d(cin, c1, 1)
            self.p2 = torch.nn.Sequential(torch.nn.Conv2d(cin, c2[0], 1), torch.nn.ReLU(), torch.nn.Conv2d(c2[0], c2[1], 3, padding=1))
            self.p3 = torch.nn.Sequential(torch.nn.Conv2d(cin, c3[0], 1), torch.nn.ReLU(), torch.nn.Conv2d(c3[0], c3[1], 5, padding=2))
            self.p4 = torch.nn.Sequential(torch.nn.MaxPool2d(3, 1, 1), torch.nn.Conv2d(cin, c4, 1))

        def forward(self, x):
            return torch.cat([F.relu(self.p1(x)), F.relu(self.p2(x)), F.relu(self.p3(x)), F.relu(self.p4(x))], 1)

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        Inception(192, 64, (96, 128), (16, 32), 32), Inception(256, 128, (128, 192), (32, 96), 64), nn.MaxPool2d(3, 2, 1),
        Inception(480, 192, (96, 208), (16, 48), 64), Inception(512, 160, (112, 224), (24, 64), 64),
        Inception(512, 128, (128, 256), (24, 64), 64), Inception(512, 112, (144, 288), (32, 64), 64),
        Inception(528, 256, (160, 320), (32, 128), 128), nn.MaxPool2d(3, 2, 1),
        Inception(832, 256, (160, 320), (32, 128), 128), Inception(832, 384, (192, 384), (48, 128), 128),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(1024, 10))


def pytorch_median_ms(preset, mode, batch, shape, aux, channels_last, warmup, iters):
    if preset == "d2l":
        net = d2l_net()
    else:
        net = torchvision.models.GoogLeNet(num_classes=1000, aux_logits=aux, init_weights=True)
    x = torch.randn(batch, *shape)
    labels = torch.randint(0, 10, (batch,))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    net.train(mode == "train")
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        if mode == "train":
            out = net(x)
            if isinstance(out, tuple):
                loss = F.cross_entropy(out[0], labels) + 0.3 * F.cross_entropy(out[1], labels) + 0.3 * F.cross_entropy(out[2], labels)
            else:
                loss = F.cross_entropy(out, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                net(x)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ours(preset, mode, batch, shape, aux, threads, warmup, iters):
    args = ["dotnet", CLI, "bench", "--preset", preset, "--mode", mode, "--batch", str(batch),
            "--input", "x".join(map(str, shape)), "--threads", str(threads), "--warmup", str(warmup),
            "--iters", str(iters), "--json"]
    if aux:
        args.append("--aux")
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def torch_sgemm_gflops(n, warmup, iters):
    a = torch.rand(n, n) - 0.5
    b = torch.rand(n, n) - 0.5
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        torch.mm(a, b)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def ours_sgemm_gflops(n, threads, warmup, iters):
    args = ["dotnet", CLI, "bench", "--gemm", f"{n}x{n}x{n}", "--threads", str(threads), "--warmup", str(warmup),
            "--iters", str(iters), "--json"]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)["gflops"]


def ours_fma_peak_gflops(threads):
    args = ["dotnet", CLI, "bench", "--fma-peak", "--threads", str(threads), "--warmup", "1", "--iters", "5", "--json"]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)["gflops"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three contenders per workload; medians are printed")
    parser.add_argument("--quick", action="store_true", help="batch 1 inference only")
    parser.add_argument("--no-sgemm", action="store_true", help="skip the SGEMM 4096^3 row")
    parser.add_argument("--only", help="run only the workloads whose name contains this text")
    parser.add_argument("--peak", type=float, default=230.0, help="the machine's FMA peak in GFLOP/s, for the SGEMM row")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    rows = [w for w in WORKLOADS if (not a.quick or w[3] == 1) and (a.only is None or a.only in w[0])]
    if a.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(f"threads {a.threads}, median of {a.iters} after {a.warmup} warm-up, {a.rounds} round(s); img/s (higher is better)")
    print(f"{'workload':28} {'ours':>9} {'torch NHWC':>11} {'torch NCHW':>11} {'ours/best':>10}")
    for name, preset, mode, batch, shape, aux in rows:
        contenders = [
            lambda: ours(preset, mode, batch, shape, aux, a.threads, a.warmup, a.iters),
            lambda: batch / pytorch_median_ms(preset, mode, batch, shape, aux, True, a.warmup, a.iters) * 1000,
            lambda: batch / pytorch_median_ms(preset, mode, batch, shape, aux, False, a.warmup, a.iters) * 1000,
        ]
        rounds = []
        for r in range(a.rounds):
            figures = [None, None, None]
            for i in range(3):
                c = (i + r) % 3
                figures[c] = contenders[c]()
            rounds.append(figures)
        mine = [f[0] for f in rounds]
        nhwc = statistics.median(f[1] for f in rounds)
        nchw = statistics.median(f[2] for f in rounds)
        ratio = statistics.median(f[0]["imagesPerSecond"] / max(f[1], f[2]) for f in rounds)
        ips = statistics.median(m["imagesPerSecond"] for m in mine)
        ms = statistics.median(m["medianMilliseconds"] for m in mine)
        peak = max(m["peakWorkingSetBytes"] for m in mine)
        spread = "" if a.rounds == 1 else "; round ratios " + ", ".join(
            f"{f[0]['imagesPerSecond'] / max(f[1], f[2]):.2f}" for f in rounds)
        print(f"{name:28} {ips:9.1f} {nhwc:11.1f} {nchw:11.1f} {ratio:10.2f}"
              f"   (ours {ms:.0f} ms, peak {peak / 2**20:.0f} MiB{spread})", flush=True)
    if not a.quick and not a.no_sgemm and (a.only is None or a.only in "sgemm"):
        # torch.mm goes to whatever BLAS PyTorch was linked with (Debian's: the reference BLAS
        # unless an optimised libblas.so.3 is installed), so the row compares with the FMA peak.
        # The clock a shared VM gives moves, so the attainable peak is measured just before and
        # after the product, and the product is also shown against the higher of the two.
        before = ours_fma_peak_gflops(a.threads)
        mine = ours_sgemm_gflops(4096, a.threads, 1, 3)
        after = ours_fma_peak_gflops(a.threads)
        theirs = torch_sgemm_gflops(4096, 1, 3)
        measured = max(before, after)
        print(f"{'sgemm 4096^3 (GFLOP/s)':28} {mine:9.1f} {theirs:11.1f} {'':>11} {'':>10}"
              f"   ({mine / a.peak:.0%} of the {a.peak:.0f} GFLOP/s nominal FMA peak, {mine / measured:.0%} of the"
              f" {measured:.0f} measured by `bench --fma-peak` around it ({before:.0f}, {after:.0f}); torch.mm {theirs:.1f})")


if __name__ == "__main__":
    main()
