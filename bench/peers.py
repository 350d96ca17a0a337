#!/usr/bin/env python3
"""Latency of the issue-4 benchmark nets: ours against ONNX Runtime, OpenVINO and PyTorch eager.

Not run by CI. Needs `pip install torch onnx onnxruntime openvino` (plain PyPI wheels) and cargo.
Our side is the `bench_nets` binary of the `cnn-bench` package (this directory), which the script
builds with `cargo build --release --bin bench_nets` unless `--no-build` is given; the binary is
looked up in cargo's target directory, so `CARGO_TARGET_DIR` is honoured.

    python3 bench/peers.py                       # 5 nets x batch 1,64 x threads 1,2, 3 rounds
    python3 bench/peers.py --seconds 1 --rounds 2 --nets vgg,stem224 --json out.json
    python3 bench/peers.py --precision bf16      # ours in bf16 against OpenVINO bf16 and ORT

The nets come from our own binary: `bench_nets --torch all` prints each net's `Model::TORCH`
expression (the PyTorch twin the `cnn!` macro generates), so both sides run the same layers. The
PyTorch modules get random weights (torch.manual_seed(0)) and are exported once per batch size to
ONNX (opset 17, static shapes). OpenVINO runs with INFERENCE_PRECISION_HINT=f32; on a CPU with
native bf16 (AVX512_BF16, AMX) its default is bf16, which `openvino-bf16` shows but the ratio leaves
out, since our runtime and the PyTorch fixtures are f32. Every round visits every cell and, inside a cell, every runner in
turn, so that a noisy neighbour hits all runners alike; each runner reports the median latency of
one call over `--seconds`, and the table shows the median over rounds. The ratio is ours / best
peer: below 1.0 we are faster. `--threads` sets our runtime's thread count too.

`--precision bf16` runs our nets in bf16 (`bench_nets --precision bf16`, the networks'
`set_precision`) against OpenVINO with INFERENCE_PRECISION_HINT=bf16 (`openvino-bf16`) and ONNX
Runtime (f32: its CPU provider has no bf16 convolutions); there the ratio is ours / best peer of
any precision. The script prints the CPU model and its SIMD flags first (and writes them to the
JSON), since every figure belongs to one machine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `bench_nets` binary of the `cnn-bench` package (this directory); set by `main`.
OURS = None
PEERS = ["onnxruntime", "openvino", "pytorch", "openvino-bf16"]
# The peers of `--precision bf16`.
BF16_PEERS = ["onnxruntime", "openvino-bf16"]
# Peers whose numerics differ from f32: shown, but not counted as the best peer in f32 runs.
NOT_F32 = {"openvino-bf16"}
# The flags of /proc/cpuinfo that decide which kernels run, ours and the peers'.
SIMD_FLAGS = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="tiny,lenet5,vgg,stem224,mobile")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per runner and cell")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peers", help=f"default: {','.join(PEERS)}; with --precision bf16, "
                                   f"{','.join(BF16_PEERS)}")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                   help="our nets' precision (bench_nets --precision)")
    p.add_argument("--no-build", action="store_true", help="use the existing bench_nets binary")
    p.add_argument("--json", help="also write every measurement here")
    p.add_argument("--baseline", metavar="BINARY",
                   help="another bench_nets binary (say, built from an earlier commit), measured in "
                        "the same rounds as ours; the table adds its column and ours / baseline")
    return p.parse_args()


def build():
    """Builds `bench_nets` in release mode and returns the path cargo reports for it."""
    out = subprocess.run(
        ["cargo", "build", "--release", "-p", "cnn-bench", "--bin", "bench_nets",
         "--message-format=json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and msg["target"]["name"] == "bench_nets"):
            return msg["executable"]
    sys.exit("cargo built no `bench_nets` executable")


def existing():
    """The release `bench_nets` binary in cargo's target directory (`CARGO_TARGET_DIR` or
    `build.target-dir` if set), for `--no-build`."""
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout)
    exe = "bench_nets.exe" if os.name == "nt" else "bench_nets"
    path = os.path.join(meta["target_directory"], "release", exe)
    if not os.path.exists(path):
        sys.exit(f"{path} does not exist; run `cargo build --release --bin bench_nets` "
                 "or leave out --no-build")
    return path


def our_nets(names):
    out = subprocess.run(
        [OURS, "--torch", "all"], check=True, capture_output=True, text=True
    ).stdout
    nets = {}
    for line in out.splitlines():
        d = json.loads(line)
        if d["net"] in names:
            nets[d["net"]] = d
    return nets


def time_calls(fn, seconds):
    """Median and min milliseconds per call of `fn` over `seconds`, after a warm-up."""
    end = time.perf_counter() + max(0.2 * seconds, 0.05)
    fn()
    while time.perf_counter() < end:
        fn()
    times = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times), len(times)


def twin(source, torch, nn):
    """A net's `Model::TORCH`: an `nn.Sequential(...)` expression, or (with residual/concat
    blocks) source that defines `Residual`, `Concat` and then `model`."""
    scope = {"nn": nn, "torch": torch}
    if source.startswith("nn.Sequential("):
        return eval(source, scope)
    exec(source, scope)
    return scope["model"]


class Peers:
    """PyTorch modules, ONNX files and compiled sessions, built once and reused across rounds."""

    def __init__(self, nets, tmp):
        import torch
        from torch import nn

        self.torch = torch
        self.nets = nets
        self.tmp = tmp
        self.modules = {}
        self.onnx = {}
        self.sessions = {}
        for name, d in nets.items():
            torch.manual_seed(0)
            self.modules[name] = twin(d["torch"], torch, nn).eval()

    def input(self, name, batch):
        import numpy as np

        c, h, w = self.nets[name]["input"]
        rng = np.random.default_rng(batch)
        return rng.uniform(-1, 1, size=(batch, c, h, w)).astype(np.float32)

    def onnx_path(self, name, batch):
        key = (name, batch)
        if key not in self.onnx:
            path = os.path.join(self.tmp, f"{name}-b{batch}.onnx")
            x = self.torch.from_numpy(self.input(name, batch))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.torch.onnx.export(
                    self.modules[name], (x,), path, opset_version=17, dynamo=False,
                    input_names=["x"], output_names=["y"],
                )
            self.onnx[key] = path
        return self.onnx[key]

    def runner(self, peer, name, batch, threads):
        key = (peer, name, batch, threads)
        if key in self.sessions:
            return self.sessions[key]
        x = self.input(name, batch)
        if peer == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(
                self.onnx_path(name, batch), so, providers=["CPUExecutionProvider"]
            )
            fn = lambda: sess.run(None, {"x": x})
        elif peer in ("openvino", "openvino-bf16"):
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                      "NUM_STREAMS": 1}
            if peer == "openvino":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            elif {"avx512_bf16", "amx_bf16"} & set(cpu()[1]):
                # Its default on such a CPU anyway; said explicitly.
                config["INFERENCE_PRECISION_HINT"] = "bf16"
            compiled = core.compile_model(self.onnx_path(name, batch), "CPU", config)
            req = compiled.create_infer_request()
            fn = lambda: req.infer({0: x})
        elif peer == "pytorch":
            torch = self.torch
            module, xt = self.modules[name], torch.from_numpy(x)

            def fn():
                with torch.inference_mode():
                    module(xt)
        else:
            raise ValueError(f"unknown peer `{peer}`")
        self.sessions[key] = fn
        return fn


def cpu():
    """The CPU model and which of SIMD_FLAGS it has (Linux's /proc/cpuinfo; else the platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))
    return model, [f for f in SIMD_FLAGS if f in flags]


def ours(name, batch, threads, seconds, binary=None, precision="f32"):
    out = subprocess.run(
        [binary or OURS, "--net", name, "--batch", str(batch), "--threads", str(threads),
         "--seconds", str(seconds), "--precision", precision],
        check=True, capture_output=True, text=True,
    ).stdout
    d = json.loads(out.splitlines()[-1])
    return d["median_ms"], d["reps"], d.get("runtime_threads", threads)


def fmt(ms):
    return "–" if ms is None else (f"{ms:.3f}" if ms < 10 else f"{ms:.1f}")


def main():
    args = parse_args()
    names = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    bf16 = args.precision == "bf16"
    peers = [p for p in (args.peers or ",".join(BF16_PEERS if bf16 else PEERS)).split(",") if p]
    # In bf16 every peer counts; in f32 only the f32 ones.
    excluded = set() if bf16 else NOT_F32
    model, flags = cpu()
    print(f"CPU: {model}; flags: {' '.join(flags) or 'none of ' + ' '.join(SIMD_FLAGS)}; "
          f"ours in {args.precision}", flush=True)
    global OURS
    OURS = existing() if args.no_build else build()
    nets = our_nets(names)
    baseline = ["baseline"] if args.baseline else []
    cells = [(n, b, t) for n in names for b in batches for t in threads]
    results = {}  # (net, batch, threads, runner) -> [median per round]
    ran_on = {}  # (net, batch, threads) -> threads our runtime really used
    with tempfile.TemporaryDirectory() as tmp:
        peer_set = Peers(nets, tmp)
        for r in range(args.rounds):
            for name, batch, t in cells:
                for runner in ["ours"] + baseline + peers:
                    if runner == "ours":
                        med, reps, ran_on[name, batch, t] = ours(name, batch, t, args.seconds,
                                                                 precision=args.precision)
                    elif runner == "baseline":
                        med, reps, _ = ours(name, batch, t, args.seconds, args.baseline,
                                            args.precision)
                    else:
                        fn = peer_set.runner(runner, name, batch, t)
                        peer_set.torch.set_num_threads(t)
                        med, _, reps = time_calls(fn, args.seconds)
                    results.setdefault((name, batch, t, runner), []).append(med)
                    print(f"round {r + 1}/{args.rounds} {name} b{batch} t{t} {runner}: "
                          f"{med:.3f} ms ({reps} reps)", file=sys.stderr, flush=True)

    def cell_ms(name, batch, t, runner):
        v = results.get((name, batch, t, runner))
        return statistics.median(v) if v else None

    print(f"\nmedian ms per call (median over {args.rounds} rounds of {args.seconds} s each); "
          + ("ratio = ours (bf16) / best peer\n" if bf16 else "ratio = ours / best f32 peer\n"))
    extra = " baseline | ours / baseline |" if baseline else ""
    peer_cols = "".join(f" {p} |" for p in peers)
    best_cols = " best peer | ratio |" if peers else ""
    print("| net | batch | threads | ours |" + extra + peer_cols + best_cols)
    print("|---|---|---|---|" + "---|" * (len(peers) + 2 * len(baseline)
                                          + (2 if peers else 0)))
    for name, batch, t in cells:
        o = cell_ms(name, batch, t, "ours")
        ps = {p: cell_ms(name, batch, t, p) for p in peers}
        best = min(((v, p) for p, v in ps.items() if v is not None and p not in excluded),
                   default=(None, "–"))
        ratio = f"{o / best[0]:.2f}" if o is not None and best[0] else "–"
        base = ""
        if baseline:
            b = cell_ms(name, batch, t, "baseline")
            base = f" {fmt(b)} | {o / b:.2f} |" if o is not None and b else " – | – |"
        used = ran_on.get((name, batch, t), t)
        note = f" ({used} thread{'s' if used > 1 else ''})" if used != t else ""
        print(f"| {name} | {batch} | {t} | {fmt(o)}{note} |{base}"
              + "".join(f" {fmt(ps[p])} |" for p in peers)
              + (f" {best[1]} | {ratio} |" if peers else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "machine": model, "flags": flags, "precision": args.precision,
                "seconds": args.seconds, "rounds": args.rounds,
                "results": [{"net": n, "batch": b, "threads": t, "runner": r, "median_ms": v}
                            for (n, b, t, r), v in results.items()],
            }, f, indent=1)


if __name__ == "__main__":
    main()
