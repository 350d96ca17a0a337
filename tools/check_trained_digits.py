#!/usr/bin/env python3
"""Check a `Digits` network trained in Rust (examples/train_digits.rs) in its PyTorch twin.

Loads the weights the example saved into `Digits::TORCH` (the expression of
tools/train_digits.py, which tests/test_digits.rs checks is exactly `Digits::TORCH`) with
`load_state_dict(strict=True)`: every key present, none extra, every shape equal. Then runs the
450 test images of models/digits_test.safetensors in eval mode and compares PyTorch's
predictions with the ones Rust wrote (`predictions`, and `logits` within a tolerance) in the
second file, `PATH` with the extension `.predictions.safetensors`, whose metadata `torch` must be
this TORCH expression.

Exits 0 when all 450 predictions agree and every logit is within 1e-4·(1 + |logit|) of
Rust's, 1 otherwise.

Run: pip install torch safetensors && python3 tools/check_trained_digits.py PATH
     (PATH as printed by `cargo run --release --example train_digits`)
"""
import pathlib
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

# The same expression as tools/train_digits.py's TORCH, i.e. `Digits::TORCH`.
TORCH = """nn.Sequential(
    nn.Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
    nn.ReLU(),
    nn.Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
    nn.ReLU(),
    nn.MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False),
    nn.Flatten(),
    nn.Linear(512, 64),
    nn.ReLU(),
    nn.Linear(64, 10),
)"""

root = pathlib.Path(__file__).resolve().parent.parent
if len(sys.argv) != 2:
    sys.exit(__doc__)
weights_path = pathlib.Path(sys.argv[1])
predictions_path = weights_path.with_suffix(".predictions.safetensors")

with safe_open(predictions_path, "pt") as f:
    rust_torch = (f.metadata() or {}).get("torch")
if rust_torch != TORCH:
    sys.exit(f"{predictions_path} was written by a network whose TORCH is\n{rust_torch}\nexpected\n{TORCH}")

model = eval(TORCH)
model.load_state_dict(load_file(weights_path), strict=True)
model.eval()

test = load_file(root / "models" / "digits_test.safetensors")
rust = load_file(predictions_path)
images, labels = test["images"], test["labels"]
with torch.no_grad():
    logits = model(images)
predictions = logits.argmax(dim=1)

n = len(labels)
agree = (predictions == rust["predictions"]).sum().item()
correct = (predictions == labels).sum().item()
rust_correct = (rust["predictions"] == labels).sum().item()
max_diff = (logits - rust["logits"]).abs().max().item()
# The kernels differ from PyTorch's in summation order only (tests/test_digits.rs's tolerance).
logits_close = bool(((logits - rust["logits"]).abs() <= 1e-4 * (1 + logits.abs())).all())
print(f"weights:     {weights_path} (load_state_dict strict=True: {len(model.state_dict())} tensors)")
print(f"predictions: {predictions_path}")
print(f"PyTorch {torch.__version__}: accuracy {100 * correct / n:.2f}% on {n} test images ({correct} correct)")
print(f"Rust:          accuracy {100 * rust_correct / n:.2f}% ({rust_correct} correct)")
print(f"{agree}/{n} predictions equal Rust's; largest logit difference {max_diff:.3g}"
      f" ({'within' if logits_close else 'OUTSIDE'} 1e-4·(1 + |logit|))")
for i in torch.nonzero(predictions != rust["predictions"]).flatten().tolist()[:10]:
    print(f"  image {i}: PyTorch {predictions[i].item()}, Rust {rust['predictions'][i].item()}, label {labels[i].item()}")
sys.exit(0 if agree == n and logits_close else 1)
