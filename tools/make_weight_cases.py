#!/usr/bin/env python3
"""Write the small weight files that tests/ui/weights/*.rs and tests/pass/embedded-*.rs embed.

The network is `input(1, 4, 4) conv(1 -> 2, k3) relu fc(3)`, i.e.
nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)):
keys 0.weight [2,1,3,3], 0.bias [2], 3.weight [3,8], 3.bias [3].

Run: pip install numpy safetensors && python3 tools/make_weight_cases.py
"""
import pathlib

import numpy as np
from safetensors.numpy import save_file

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "weights"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)


def t(*shape):
    # Multiples of 1/8 in [-1, 1]: exact in F16, BF16, F32 and F64.
    return rng.integers(-8, 9, size=shape) / 8.0


BASE = {"0.weight": t(2, 1, 3, 3), "0.bias": t(2), "3.weight": t(3, 8), "3.bias": t(3)}


def good(dtype=np.float32):
    return {k: v.astype(dtype) for k, v in BASE.items()}


save_file(good(), out / "good.safetensors")
save_file(good(np.float16), out / "good-f16.safetensors")
save_file(good(np.float64), out / "good-f64.safetensors")

w = good()
del w["3.bias"]
save_file(w, out / "missing-key.safetensors")

w = good()
w["4.weight"] = np.zeros((3, 3), np.float32)
save_file(w, out / "extra-key.safetensors")

w = good()
w["0.weight"] = np.zeros((2, 1, 5, 5), np.float32)
save_file(w, out / "wrong-shape.safetensors")

w = good()
w["0.weight"] = np.zeros((2, 1, 3, 3), np.int8)
save_file(w, out / "wrong-dtype.safetensors")

save_file(good(), out / "truncated.safetensors")
data = (out / "truncated.safetensors").read_bytes()
(out / "truncated.safetensors").write_bytes(data[: len(data) - 10])
