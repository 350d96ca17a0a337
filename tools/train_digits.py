#!/usr/bin/env python3
"""Train the `Digits` network of examples/digits.rs in PyTorch and export it for Rust.

The architecture is the `Digits::TORCH` twin that `cnn!` generates for

    input(1, 8, 8) conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)

(tests/test_digits.rs checks that the expression below is exactly `Digits::TORCH`). The data is
scikit-learn's bundled 8x8 digits (no download). Writes, next to this repository's Cargo.toml:

    models/digits.safetensors       the trained state_dict (F32), loaded by `#[weights]`
    models/digits_test.safetensors  the test split: `images` F32 [N,1,8,8] (pixels / 16),
                                    `labels` I64 [N], PyTorch's `logits` F32 [N,10] and `predictions` I64 [N]
    models/digits.json              the TORCH expression, seed, sizes and PyTorch's test accuracy

Run: pip install torch scikit-learn safetensors numpy && python3 tools/train_digits.py
"""
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

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
SEED = 0
EPOCHS = 60

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "models"
out.mkdir(exist_ok=True)

torch.manual_seed(SEED)
digits = load_digits()
x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=SEED, stratify=y
)
x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
x_test, y_test = torch.from_numpy(x_test), torch.from_numpy(y_test)

model = eval(TORCH)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(EPOCHS):
    model.train()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(perm), 64):
        idx = perm[i : i + 64]
        opt.zero_grad()
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()

model.eval()
with torch.no_grad():
    logits = model(x_test)
pred = logits.argmax(dim=1)
accuracy = (pred == y_test).float().mean().item()
print(f"test accuracy {accuracy:.4f} on {len(y_test)} images")

save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "digits.safetensors")
save_file(
    {
        "images": x_test.contiguous(),
        "labels": y_test.contiguous(),
        "logits": logits.contiguous(),
        "predictions": pred.contiguous(),
    },
    out / "digits_test.safetensors",
)
(out / "digits.json").write_text(
    json.dumps(
        {
            "torch": TORCH,
            "seed": SEED,
            "epochs": EPOCHS,
            "train_images": len(y_train),
            "test_images": len(y_test),
            "torch_accuracy": round(accuracy, 6),
            "torch_version": torch.__version__,
        },
        indent=2,
    )
    + "\n"
)
