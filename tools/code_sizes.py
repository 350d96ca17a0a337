#!/usr/bin/env python3
"""Bytes of code per kernel in a linked no_std program: the measurement behind CODE_SIZES in
cnn-macros/src/budget.rs (run by hand, never by CI).

CODE_SIZES is measured by difference. For each network below, make a no_std static library
(crate-type = ["staticlib"], cnn with default-features = false, panic = "abort", no LTO) that
holds only that network, with #[weights] (write the file with `Net::seeded(1).to_safetensors()`
in a std program) and `static NET: &Net = Net::EMBEDDED`, and one `extern "C"` function that
calls `NET.forward_in`; link it alone into a C program that calls that function:

    gcc -O2 main.c target/release/libnet.a -Wl,--gc-sections -o net -lm

and sum its code symbols (`nm -S net`, types t and T). The base is `input(16, 8, 8) fc(10)`;
each kernel's row is what one more layer adds: `relu`, `conv(4 -> 16, k3, p1)` (direct),
`conv(16 -> 16, k3, p1)` (Winograd), `conv(16 -> 16, k3, s2, p1)` (im2col),
`conv(16 -> 16, k3, p1, groups=16)` (depthwise), `bn`, `maxpool(2)`, `softmax`,
`upsample(2)`, `convtranspose(16 -> 8, k2, s2)`, and `residual { conv }` or
`concat { branch { conv } branch {} }` against the Winograd network.

This script splits one program's code symbols by kernel, to see where the bytes are (build
with RUSTFLAGS="-C symbol-mangling-version=v0" so that closures and threads::for_each
instances name their kernel):

    nm -S -C net | awk '$3 ~ /[tT]/' > syms.txt && python3 tools/code_sizes.py syms.txt

"other" is libcore (formatting, panics), libm and the C program's own functions.
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
