#!/usr/bin/env python3
"""Rename the weights of torchvision's ResNet-18 or MobileNetV2 to the keys of our `cnn!` twin,
check that the renamed twin computes what torchvision's model computes, and save them.

torchvision's `resnet18()` and `mobilenet_v2()` register their modules in the order our
declarations list them (`examples/resnet.rs`, `bench/src/lib.rs`): stem, then each block's body
before its shortcut (`downsample`), then the classifier. So the two `state_dict`s hold the same
tensors in the same order under different names (`layer1.0.conv1.weight` is `4.body.0.weight`),
and renaming is a zip, checked shape by shape. The twin is our network's `Model::TORCH`, printed
by `bench_nets --torch`; the check runs both models in eval mode on one random image.

Run by hand (never in CI):
    pip install torch safetensors numpy && pip install --no-deps torchvision pillow
    python3 tools/torchvision_weights.py resnet18                  # random torchvision weights
    python3 tools/torchvision_weights.py resnet18 --pretrained --out resnet18.safetensors
then `Resnet18::from_safetensors(&std::fs::read("resnet18.safetensors")?)` in Rust (the input is
normalised as torchvision's transforms do).
"""
import argparse
import json
import pathlib
import subprocess
import sys

import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def our_twin(net):
    """Our network's `Model::TORCH` (from `bench_nets --torch`), built."""
    line = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "cnn-bench", "--bin", "bench_nets", "--",
         "--torch", net],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    source = json.loads(line)["torch"]
    scope = {"torch": torch, "nn": nn}
    exec(source, scope)
    return scope["model"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("net", choices=["resnet18", "mobilenetv2"])
    p.add_argument("--pretrained", action="store_true", help="torchvision's ImageNet weights")
    p.add_argument("--out", help="write the renamed weights here (safetensors)")
    args = p.parse_args()

    import torchvision

    make = {"resnet18": torchvision.models.resnet18,
            "mobilenetv2": torchvision.models.mobilenet_v2}[args.net]
    theirs = make(weights="DEFAULT" if args.pretrained else None).eval()
    ours = our_twin(args.net).eval()
    src, dst = theirs.state_dict(), ours.state_dict()
    if len(src) != len(dst):
        sys.exit(f"{len(src)} torchvision tensors, {len(dst)} of ours")
    renamed = {}
    for (k_src, v), (k_dst, w) in zip(src.items(), dst.items()):
        if v.shape != w.shape or v.dtype != w.dtype:
            sys.exit(f"{k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(w.shape)}")
        renamed[k_dst] = v.clone()
    ours.load_state_dict(renamed, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    err = (a - b).abs().max().item()
    print(f"{args.net}: {len(renamed)} tensors renamed, e.g. {next(iter(src))} -> {next(iter(dst))}; "
          f"max |torchvision - ours| = {err:.3g} on 2 random images")
    if err > 1e-4 * max(1.0, a.abs().max().item()):
        sys.exit("the renamed twin does not compute what torchvision computes")
    if args.out:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in renamed.items()}, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
