#!/usr/bin/env python3
"""Bytes of code per kernel in a linked no_std program: the measurement behind CODE_SIZES in
cnn-macros/src/budget.rs (run by hand, never by CI).

Build a no_std static library holding the networks (crate-type = ["staticlib"], cnn with
default-features = false, panic = "abort"), with v0 symbol names so that closures and
threads::for_each instances name their kernel:

    RUSTFLAGS="-C symbol-mangling-version=v0" cargo build --release

link it alone into a C program that calls one network's forward_in, dropping what is not
reached:

    gcc -O2 main.c target/release/libnet.a -Wl,--gc-sections -o net -lm

and sum the code symbols per kernel:

    nm -S -C net | awk '$3 ~ /[tT]/' > syms.txt && python3 tools/code_sizes.py syms.txt

"other" is libcore (formatting, panics), libm and the C program's own entry point: split it by
hand (budget.rs says how).
"""
import re
import sys

RULES = [
    ("prepare (weight layouts)", r"transform_weights_to|pack_weights_to|prepare_into|scale_shift"),
    ("winograd", r"ops::conv::winograd"),
    ("direct", r"ops::conv::direct"),
    ("depthwise", r"ops::conv::depthwise|ops::conv::phases"),
    ("im2col", r"ops::conv::im2col"),
    ("convtranspose", r"conv_transpose"),
    ("blocks", r"Bare as cnn_runtime::bare::Run>::(concat|block_enter|swap_top|residual_add"
               r"|conv2d_concat|conv2d_residual|upsample2d_concat)|Bare::(add_top|fill_slot)"),
    ("conv dispatch, epilogue", r"ops::conv::(Epilogue|PostOp|bias_affine|add_relu|forward|Conv2dParams)"
                                r"|Run>::conv2d"),
    ("gemm", r"cnn_runtime::gemm"),
    ("linear", r"Linear|ops::linear|Run>::linear"),
    ("pool", r"ops::pool|Run>::pool2d"),
    ("upsample", r"upsample"),
    ("softmax", r"softmax"),
    ("activation", r"ops::activation|Run>::activation|math::Float"),
    ("batchnorm", r"batchnorm|BatchNorm2d"),
    ("executor", r"cnn_runtime::bare|cnn_runtime::store|threads"),
]


def main(path):
    sizes = {}
    others = []
    for line in open(path):
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        size, name = int(parts[1], 16), parts[3].strip()
        for kernel, rx in RULES:
            if re.search(rx, name):
                sizes[kernel] = sizes.get(kernel, 0) + size
                break
        else:
            sizes["other"] = sizes.get("other", 0) + size
            others.append((size, name))
    for kernel, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{size:8d}  {kernel}")
    print(f"{sum(sizes.values()):8d}  total")
    print("\nother, largest first:")
    for size, name in sorted(others, reverse=True)[:30]:
        print(f"{size:8d}  {name[:120]}")


if __name__ == "__main__":
    main(sys.argv[1])
