#!/usr/bin/env python3
"""Write the training split of scikit-learn's 8x8 digits for examples/train_digits.rs.

The split is tools/train_digits.py's: `train_test_split(x, y, test_size=0.25, random_state=0,
stratify=y)` on `load_digits()`, pixels divided by 16. Writes, next to this repository's
Cargo.toml:

    models/digits_train.safetensors  `images` F32 [1347, 1, 8, 8] (pixels / 16), `labels` I64 [1347]

and checks, before writing anything, that the test half of the split it reproduces equals the
committed models/digits_test.safetensors (`images` and `labels`) exactly, so the two files
are the two halves of one split. Needs no PyTorch.

Run: pip install scikit-learn safetensors numpy && python3 tools/export_digits_train.py
"""
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0  # tools/train_digits.py's SEED

root = pathlib.Path(__file__).resolve().parent.parent
models = root / "models"

digits = load_digits()
x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=SEED, stratify=y
)

committed = load_file(models / "digits_test.safetensors")
for name, ours in (("images", x_test), ("labels", y_test)):
    theirs = committed[name]
    if theirs.dtype != ours.dtype or theirs.shape != ours.shape or not np.array_equal(theirs, ours):
        sys.exit(
            f"the reproduced test split's `{name}` ({ours.dtype} {list(ours.shape)}) differs from "
            f"models/digits_test.safetensors ({theirs.dtype} {list(theirs.shape)})"
        )
print(f"test split: {len(y_test)} images and labels equal models/digits_test.safetensors")

assert x_train.shape == (1347, 1, 8, 8) and y_train.shape == (1347,)
path = models / "digits_train.safetensors"
save_file(
    {"images": np.ascontiguousarray(x_train), "labels": np.ascontiguousarray(y_train)}, path
)
counts = np.bincount(y_train, minlength=10)
print(f"wrote {path.relative_to(root)}: {len(y_train)} images, per class {counts.tolist()}")
