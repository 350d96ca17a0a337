#!/usr/bin/env python3
"""One training step of the benchmark nets: ours against PyTorch eager and torch.compile.

Not run by CI. Needs `pip install torch` (a plain PyPI wheel; torch.compile's inductor backend
also needs a C++ compiler) and cargo. Issue 13, "Speed and memory": one step is the train-mode
forward pass, cross-entropy against class targets, the backward pass and an SGD update with
momentum 0.9, at batch 64 (stem224 at 16) on 1 and 2 threads.

    python3 bench/peers_train.py                          # 5 nets x threads 1,2, 3 rounds
    python3 bench/peers_train.py --seconds 2 --rounds 5 --nets vgg --json out.json
    python3 bench/peers_train.py --no-compile             # eager only

Our side is the `bench_train` binary of the `cnn-bench` package (`Train::train_step` with
`Sgd::new(0.001).momentum(0.9)`), built with `cargo build --release -p cnn-bench --bin bench_train
--bin bench_nets` unless `--no-build` is given (binaries looked up in cargo's target directory,
so `CARGO_TARGET_DIR` is honoured). The PyTorch twins are the networks' own `Model::TORCH`
modules, printed by `bench_nets --torch all` and built as `bench/peers.py` builds them, with
random weights (torch.manual_seed(0)). PyTorch's step, timed per call:

    model.train(); opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()

with `opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)` (PyTorch's default
implementation for CPU tensors). `compile` runs the same step with the forward pass and the loss
under `torch.compile` (inductor, static shapes; AOTAutograd compiles the backward too), the
optimizer step eager; it is compiled once per cell, with `torch.set_num_threads(t)` already set
(inductor bakes the OpenMP thread count into its kernels), before the cell is first timed. If
torch.compile fails, the error is printed and the table keeps eager only.

Every round visits every cell and, inside a cell, every runner in turn (ours, eager, compile), so
that a noisy neighbour hits all alike; each runner reports the median time of one step over
`--seconds` after warm-up steps, and the table shows the median over rounds. The ratio is
ours / the faster PyTorch configuration; the issue's goal is a ratio of at most 0.5.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import time_calls, twin  # noqa: E402  (bench/peers.py, beside this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = "tiny,lenet5,vgg,stem224,mobile"
LR = 0.001  # bench_train's learning rate
GOAL = 0.5  # issue 13: ours <= 0.5 x the faster PyTorch configuration


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default=NETS)
    p.add_argument("--batch", type=int, help="one batch size for every net (default: 64, "
                   "stem224 16)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per runner and cell")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="PyTorch eager only")
    p.add_argument("--no-build", action="store_true", help="use the existing binaries")
    p.add_argument("--json", help="also write every measurement here")
    return p.parse_args()


def default_batch(name):
    return 16 if name in ("stem224", "resnet18", "mobilenetv2") else 64


def binaries(build):
    """Paths of `bench_train` and `bench_nets` (built first unless `build` is false)."""
    names = ("bench_train", "bench_nets")
    if build:
        out = subprocess.run(
            ["cargo", "build", "--release", "-p", "cnn-bench", "--bin", "bench_train",
             "--bin", "bench_nets", "--message-format=json-render-diagnostics"],
            cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
        ).stdout
        found = {}
        for line in out.splitlines():
            msg = json.loads(line)
            if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                    and msg["target"]["name"] in names):
                found[msg["target"]["name"]] = msg["executable"]
        missing = [n for n in names if n not in found]
        if missing:
            sys.exit(f"cargo built no {missing} executable")
        return found["bench_train"], found["bench_nets"]
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout)
    paths = []
    for n in names:
        path = os.path.join(meta["target_directory"], "release",
                            n + (".exe" if os.name == "nt" else ""))
        if not os.path.exists(path):
            sys.exit(f"{path} does not exist; build it or leave out --no-build")
        paths.append(path)
    return tuple(paths)


def machine():
    """`lscpu`'s model name, CPU count and flags (platform fallbacks elsewhere)."""
    info = {"model": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "flags": ""}
    try:
        out = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return info
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["model"] = value.strip()
        elif key.strip() == "CPU(s)":
            info["cpus"] = value.strip()
        elif key.strip() == "Flags":
            info["flags"] = value.strip()
    return info


def simd_summary(flags):
    """The vector and FMA flags that matter to the kernels, in a short line."""
    have = set(flags.split())
    keep = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
            "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
    return " ".join(f for f in keep if f in have) or "-"


def our_nets(bench_nets, names):
    out = subprocess.run(
        [bench_nets, "--torch", "all"], check=True, capture_output=True, text=True
    ).stdout
    nets = {}
    for line in out.splitlines():
        d = json.loads(line)
        if d["net"] in names:
            nets[d["net"]] = d
    return nets


def ours(binary, name, batch, threads, seconds):
    out = subprocess.run(
        [binary, "--net", name, "--batch", str(batch), "--threads", str(threads),
         "--seconds", str(seconds)],
        check=True, capture_output=True, text=True,
    ).stdout
    d = json.loads(out.splitlines()[-1])
    if "error" in d:
        raise RuntimeError(f"bench_train {name} b{batch} t{threads}: {d['error']}")
    return d["median_ms"], d["reps"]


class Torch:
    """PyTorch twins, optimizers and compiled steps, built once per cell and reused across
    rounds."""

    def __init__(self, nets, compile_):
        import torch
        from torch import nn

        self.torch, self.nn = torch, nn
        self.nets = nets
        self.compile = compile_
        self.compile_error = None
        self.steps = {}
        if compile_:
            # One compiled step per (net, batch, threads) cell: raise dynamo's recompile limits,
            # which would otherwise fall back to eager after 8 versions of one code object.
            for attr in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                         "accumulated_recompile_limit"):
                if hasattr(torch._dynamo.config, attr):
                    setattr(torch._dynamo.config, attr, 1024)

    def data(self, name, batch):
        import numpy as np

        torch = self.torch
        c, h, w = self.nets[name]["input"]
        rng = np.random.default_rng(batch)
        x = torch.from_numpy(rng.uniform(-1, 1, size=(batch, c, h, w)).astype(np.float32))
        with torch.no_grad():
            classes = self.module(name).eval()(x[:1]).shape[1]
        y = torch.from_numpy(rng.integers(0, classes, size=batch))
        return x, y

    def module(self, name):
        self.torch.manual_seed(0)
        return twin(self.nets[name]["torch"], self.torch, self.nn)

    def step(self, runner, name, batch, threads):
        """The step function of a cell (built, and for `compile` compiled, on first use);
        `None` when torch.compile failed."""
        key = (runner, name, batch, threads)
        if key in self.steps:
            return self.steps[key]
        torch = self.torch
        F = torch.nn.functional
        torch.set_num_threads(threads)
        model = self.module(name)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        x, y = self.data(name, batch)
        if runner == "eager":
            def loss_fn(x, y):
                return F.cross_entropy(model(x), y)
        else:
            def plain(x, y):
                return F.cross_entropy(model(x), y)
            loss_fn = torch.compile(plain, dynamic=False)

        def fn():
            model.train()
            opt.zero_grad()
            loss = loss_fn(x, y)
            loss.backward()
            opt.step()
            return loss

        if runner == "compile":
            t = time.perf_counter()
            try:
                fn()
                fn()
            except Exception as e:  # noqa: BLE001  (any failure: report it and keep eager)
                self.compile_error = f"{type(e).__name__}: {e}"
                print(f"torch.compile failed on {name} b{batch} t{threads}:\n"
                      + traceback.format_exc(), file=sys.stderr, flush=True)
                self.compile = False
                self.steps[key] = None
                return None
            print(f"compiled {name} b{batch} t{threads} in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr, flush=True)
        self.steps[key] = fn
        return fn


def fmt(ms):
    return "–" if ms is None else (f"{ms:.3f}" if ms < 10 else f"{ms:.1f}")


def main():
    args = parse_args()
    names = args.nets.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    bench_train, bench_nets = binaries(not args.no_build)
    m = machine()
    import torch

    print(f"CPU: {m['model']}, {m['cpus']} CPUs; SIMD flags: {simd_summary(m['flags'])}")
    print(f"flags: {m['flags']}")
    print(f"torch {torch.__version__}, Python {platform.python_version()}; "
          f"{args.rounds} rounds of {args.seconds} s per runner and cell", flush=True)
    nets = our_nets(bench_nets, names)
    cells = [(n, args.batch or default_batch(n), t) for n in names for t in threads]
    pt = Torch(nets, not args.no_compile)
    runners = ["ours", "eager", "compile"]
    results = {}  # (net, batch, threads, runner) -> [median per round]
    for r in range(args.rounds):
        for name, batch, t in cells:
            for runner in runners:
                if runner == "ours":
                    try:
                        med, reps = ours(bench_train, name, batch, t, args.seconds)
                    except (RuntimeError, subprocess.CalledProcessError) as e:
                        print(f"ours failed on {name} b{batch} t{t}: {e}", file=sys.stderr,
                              flush=True)
                        continue
                else:
                    if runner == "compile" and not pt.compile:
                        continue
                    fn = pt.step(runner, name, batch, t)
                    if fn is None:
                        continue
                    torch.set_num_threads(t)
                    med, _, reps = time_calls(fn, args.seconds)
                results.setdefault((name, batch, t, runner), []).append(med)
                print(f"round {r + 1}/{args.rounds} {name} b{batch} t{t} {runner}: "
                      f"{med:.3f} ms ({reps} reps)", file=sys.stderr, flush=True)

    def cell_ms(name, batch, t, runner):
        v = results.get((name, batch, t, runner))
        return statistics.median(v) if v else None

    if pt.compile_error:
        print(f"\ntorch.compile failed, compile column left out: {pt.compile_error}")
    print(f"\nmedian ms per training step (median over {args.rounds} rounds of {args.seconds} s "
          f"each); ratio = ours / faster PyTorch; goal: ratio <= {GOAL}\n")
    print("| net | batch | threads | ours | eager | compile | faster PyTorch | ratio | goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch, t in cells:
        o = cell_ms(name, batch, t, "ours")
        e = cell_ms(name, batch, t, "eager")
        c = cell_ms(name, batch, t, "compile")
        best = min(((v, k) for k, v in (("eager", e), ("compile", c)) if v is not None),
                   default=(None, "–"))
        ratio = o / best[0] if o is not None and best[0] else None
        goal = "–" if ratio is None else ("yes" if ratio <= GOAL else "no")
        print(f"| {name} | {batch} | {t} | {fmt(o)} | {fmt(e)} | {fmt(c)} | {best[1]} | "
              f"{'–' if ratio is None else f'{ratio:.2f}'} | {goal} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "machine": m, "torch": torch.__version__, "seconds": args.seconds,
                "rounds": args.rounds, "compile_error": pt.compile_error,
                "results": [{"net": n, "batch": b, "threads": t, "runner": r, "median_ms": v}
                            for (n, b, t, r), v in results.items()],
            }, f, indent=1)


if __name__ == "__main__":
    main()
