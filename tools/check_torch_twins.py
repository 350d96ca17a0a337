#!/usr/bin/env python3
"""Check that every fixture network's `TORCH` twin builds the PyTorch model the fixture came from.

`cargo test --test test_parity` writes <target dir>/tmp/torch-twins.json ({fixture: TORCH}), and
`cargo test --test test_block_parity` torch-twins-blocks.json for the networks with blocks (whose
TORCH is source defining `Residual`, `Concat` and `model`). For each, this builds the twin, then compares its state_dict keys, shapes and dtypes
with the fixture's `state_dict`, loads the fixture weights (or its weight recipe) into it and checks its eval output
against the fixture's stored output.

Run: cargo test --test test_parity --test test_block_parity && python3 tools/check_torch_twins.py [fixtures-dir]
(fixtures-dir defaults to tests/data).
"""
import json
import pathlib
import subprocess
import sys

import torch
from safetensors.torch import load_file
from torch import nn  # noqa: F401  (used by the eval'd expressions)

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "data"
metadata = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
target = pathlib.Path(json.loads(metadata)["target_directory"])
twins = json.loads((target / "tmp" / "torch-twins.json").read_text())
blocks = target / "tmp" / "torch-twins-blocks.json"  # written by tests/test_block_parity.rs
if blocks.exists():
    twins.update(json.loads(blocks.read_text()))
failed = 0
for name, expr in sorted(twins.items()):
    meta = json.loads((fixtures / f"{name}.json").read_text())
    if expr.startswith("nn.Sequential("):
        model = eval(expr)
    else:  # with blocks: source defining Residual, Concat and `model`
        scope = {"nn": nn, "torch": torch}
        exec(expr, scope)
        model = scope["model"]
    sd = model.state_dict()
    ours = {k: (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in sd.items()}
    theirs = {k: (v["dtype"], v["shape"]) for k, v in meta["state_dict"].items()}
    if ours != theirs:
        failed += 1
        print(f"{name}: state_dict differs\n  ours   {ours}\n  theirs {theirs}")
        continue
    if "weights_recipe" in meta:  # resnet18, mobilenetv2: weights from the recipe, no file
        sys.path.insert(0, str(root / "tools"))
        from make_fixtures import apply_recipe

        apply_recipe(model, meta["weights_recipe"]["tensors"])
    else:
        model.load_state_dict(load_file(fixtures / f"{name}.safetensors"))
    model.eval()
    io = load_file(fixtures / f"{name}.io.safetensors")
    with torch.no_grad():
        out = model(io["input"])
    err = (out - io["output"]).abs().max().item()
    ok = err <= meta["atol"]
    failed += not ok
    print(f"{name}: {len(sd)} tensors match; eval output max error {err:.2e} {'ok' if ok else 'TOO LARGE'}")
print(f"{len(twins) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
