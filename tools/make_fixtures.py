#!/usr/bin/env python3
"""Write the PyTorch golden fixtures of `tests/data/`: one network per fixture, three files each.

Every network is declared here twice, side by side: the `cnn!` layer text of each layer and the
PyTorch module it stands for. From them this script builds the `nn.Sequential` twin, gives it
seeded weights (BatchNorm gets non-trivial affine parameters and running statistics), draws a
standard-normal input batch, and stores what PyTorch computes:

  NAME.json              the network (dsl, torch repr, per-module layer text, key prefix and
                         output shape, state_dict keys), tolerances, the f32-vs-f64 error of
                         PyTorch itself
  NAME.safetensors       the state_dict, exactly as `model.state_dict()` saves it
  NAME.io.safetensors    input, eval output, and the training-mode quantities (output, running
                         statistics after one step, loss, gradients) for the training work

Branching networks use the blocks of the dsl, written with `res(body, shortcut=None)` and
`cat(*branches)` from lists of (layer text, module) pairs; they return one pair, the block's
one-line dsl text (`residual(shortcut { … }) { … }`, `concat { branch { … } branch {} }`) and its
twin (`Residual`, `Concat` below, whose attribute names make the state_dict keys such as
`3.body.0.weight`, `9.shortcut.1.running_mean`, `4.branches.1.0.weight`). Blocks nest; the json
records every module at every depth.

The two ImageNet-sized networks (`resnet18`, `mobilenetv2`) are "recipe" fixtures: their weights
(47 and 14 MB) are not written; the json's `weights_recipe` defines them by a hash-seeded
uniform formula (`recipe_tensor`) that `tests/fixtures/mod.rs` computes bit for bit in Rust, and
their io file holds only the input and the eval output.

`tests/data/README.md` documents every key, the recipe and the tolerance rule. The tests never
run this script (nor PyTorch); they read the committed files.

Run (by hand, never in CI):
    pip install torch==2.15.0 safetensors numpy
    python3 tools/make_fixtures.py            # all fixtures
    python3 tools/make_fixtures.py tiny_net   # some of them
    CNN_FIXTURES_OUT=/tmp/fx python3 tools/make_fixtures.py   # write elsewhere (to compare)
    python3 tools/make_fixtures.py --trajectories            # optimizer trajectories (below)
    python3 tools/make_fixtures.py --trajectories lenet5     # of some networks

`--trajectories` writes `traj_<net>_<opt>.safetensors` and `.json` (tiny_net, lenet5, vgg_cifar
× SGD, AdamW): 5 training steps from the weights of `<net>.safetensors`, the whole state_dict
after each step (see `make_trajectory` and `tests/data/README.md`); it never touches the
fixtures above.
"""
import copy
import json
import math
import os
import pathlib
import sys
import zlib

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

OUT = pathlib.Path(os.environ.get("CNN_FIXTURES_OUT")
                   or pathlib.Path(__file__).resolve().parent.parent / "tests" / "data")

# A layer: its `cnn!` text and its PyTorch module. `FLAT` is the flatten the macro inserts before
# the first `fc` on a feature map: it is a module of the Sequential (indices count it) but not
# part of the dsl text.
FLAT = "(implicit flatten)"


class Net:
    """One fixture: name, Rust struct name, input batch shape, layers, dsl separator, and the
    standard deviation of the input batch (larger than 1 where the values must reach a kink, such
    as relu6's at 6). `seed_offset` is added to the seed (CRC-32 of the name) where the first
    seed puts a ReLU input of the training-mode forward within float32 rounding of the kink
    (a gradient that float32 and float64 disagree on). With `recipe` (a dict of `recipe_ranges` overrides, possibly empty) the
    weights are not stored but described by the deterministic recipe of `recipe_tensor`, and
    the io file holds only the input and the eval output (see `tests/data/README.md`)."""

    def __init__(self, name, struct, input_shape, layers, sep=" ", input_std=1.0, recipe=None,
                 seed_offset=0):
        self.name = name
        self.seed_offset = seed_offset
        self.struct = struct
        self.input_shape = input_shape
        self.layers = layers
        self.sep = sep
        self.input_std = input_std
        self.recipe = recipe

    def dsl(self):
        c, h, w = self.input_shape[1:]
        texts = [f"input({c}, {h}, {w})"] + [t for t, _ in self.layers if t != FLAT]
        return self.sep.join(texts)

    def has_blocks(self):
        return any(isinstance(m, (Residual, Concat)) for _, m in self.layers)


# Branching blocks: the twins of `residual { … }`, `residual(shortcut { … }) { … }` and
# `concat { branch { … } … }`. A block is one module (one index) of the list that holds it; its
# inner lists are `nn.Sequential`s indexed like the top level (the implicit flatten included), so
# state_dict keys read `3.body.0.weight`, `3.shortcut.1.running_mean`, `5.branches.1.0.weight`.
# Write them with `res` and `cat`, which take lists of (dsl text, module) pairs and return one
# such pair; the module remembers the dsl texts of its inner lists (`dsl_lists`) for the json.

class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body                      # nn.Sequential
        if shortcut is not None:
            self.shortcut = shortcut          # nn.Sequential, only when declared

    def forward(self, x):
        s = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.body(x) + s


class Concat(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)   # each an nn.Sequential (empty for `branch {}`)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


def seq_text(pairs):
    """The dsl text of a list of pairs on one line (the implicit flatten has none)."""
    return " ".join(t for t, _ in pairs if t != FLAT)


def seq(pairs):
    return nn.Sequential(*[copy.deepcopy(m) for _, m in pairs])


def res(body, shortcut=None):
    """`residual { BODY }` (y = BODY(x) + x), or with `shortcut`
    `residual(shortcut { SC }) { BODY }` (y = BODY(x) + SC(x))."""
    if shortcut is None:
        text = f"residual {{ {seq_text(body)} }}"
        module = Residual(seq(body))
        module.dsl_lists = [("body", [t for t, _ in body])]
    else:
        text = f"residual(shortcut {{ {seq_text(shortcut)} }}) {{ {seq_text(body)} }}"
        module = Residual(seq(body), seq(shortcut))
        module.dsl_lists = [("body", [t for t, _ in body]), ("shortcut", [t for t, _ in shortcut])]
    return text, module


def cat(*branches):
    """`concat { branch { … } … }`: torch.cat(dim=1) of the branches in order; an empty list is
    `branch {}`, the identity."""
    text = "concat { " + " ".join(f"branch {{ {seq_text(b)} }}" if b else "branch {}"
                                  for b in branches) + " }"
    module = Concat([seq(b) for b in branches])
    module.dsl_lists = [(f"branches.{j}", [t for t, _ in b]) for j, b in enumerate(branches)]
    return text, module


def bn(c, **kw):
    return nn.BatchNorm2d(c, **kw)


NETS = [
    Net("tiny_net", "TinyNet", [4, 3, 32, 32], [
        ("conv(3 -> 16, k3, p1)", nn.Conv2d(3, 16, 3, padding=1)),
        ("bn", bn(16)),
        ("relu", nn.ReLU()),
        ("maxpool(2)", nn.MaxPool2d(2)),
        (FLAT, nn.Flatten()),
        ("fc(10)", nn.Linear(4096, 10)),
    ]),
    Net("lenet5", "Lenet5", [3, 1, 28, 28], [
        ("conv(1 -> 6, k5, p2)", nn.Conv2d(1, 6, 5, padding=2)),
        ("tanh", nn.Tanh()),
        ("avgpool(2)", nn.AvgPool2d(2)),
        ("conv(6 -> 16, k5)", nn.Conv2d(6, 16, 5)),
        ("tanh", nn.Tanh()),
        ("avgpool(2)", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc(400 -> 120)", nn.Linear(400, 120)),
        ("tanh", nn.Tanh()),
        ("fc(120 -> 84)", nn.Linear(120, 84)),
        ("tanh", nn.Tanh()),
        ("linear(10)", nn.Linear(84, 10)),
    ], sep=", "),
    Net("vgg_cifar", "VggCifar", [2, 3, 32, 32], [
        ("conv(3 -> 16, k3, p1)", nn.Conv2d(3, 16, 3, padding=1)),
        ("bn", bn(16)),
        ("relu", nn.ReLU()),
        ("conv(16 -> 16, k3, p1)", nn.Conv2d(16, 16, 3, padding=1)),
        ("bn", bn(16)),
        ("relu", nn.ReLU()),
        ("maxpool(2)", nn.MaxPool2d(2)),
        ("conv(16 -> 32, k3, p1)", nn.Conv2d(16, 32, 3, padding=1)),
        ("bn", bn(32)),
        ("relu", nn.ReLU()),
        ("conv(32 -> 32, k3, p1)", nn.Conv2d(32, 32, 3, padding=1)),
        ("bn", bn(32)),
        ("relu", nn.ReLU()),
        ("maxpool(2)", nn.MaxPool2d(2)),
        ("conv(32 -> 64, k3, p1)", nn.Conv2d(32, 64, 3, padding=1)),
        ("bn", bn(64)),
        ("relu", nn.ReLU()),
        ("maxpool(2)", nn.MaxPool2d(2)),
        ("dropout(0.25)", nn.Dropout(0.25)),
        (FLAT, nn.Flatten()),
        ("fc(64)", nn.Linear(1024, 64)),
        ("relu", nn.ReLU()),
        ("dropout(0.5)", nn.Dropout(0.5)),
        ("fc(10)", nn.Linear(64, 10)),
    ]),
    Net("conv_geometry", "ConvGeometry", [2, 3, 20, 24], [
        ("conv(3 -> 8, k3, s2, p1)", nn.Conv2d(3, 8, 3, stride=2, padding=1)),
        ("relu", nn.ReLU()),
        ("conv(8 -> 8, k(3,5), s(2,1), p(1,2))", nn.Conv2d(8, 8, (3, 5), stride=(2, 1), padding=(1, 2))),
        ("tanh", nn.Tanh()),
        ("conv(8 -> 6, k3, d2, p2)", nn.Conv2d(8, 6, 3, dilation=2, padding=2)),
        ("sigmoid", nn.Sigmoid()),
        ("conv(6 -> 4, k(2,3), s(1,2), p(1,0), d(2,1))",
         nn.Conv2d(6, 4, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
    ]),
    Net("conv_keywords", "ConvKeywords", [3, 2, 16, 12], [
        ("conv(2 -> 8, kernel_size=3, stride=1, padding=1, bias=false)", nn.Conv2d(2, 8, 3, 1, 1, bias=False)),
        ("bn(8)", bn(8)),
        ("leaky_relu(negative_slope=0.2)", nn.LeakyReLU(0.2)),
        ("conv(8 -> 12, kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=2)",
         nn.Conv2d(8, 12, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=2)),
        ("relu", nn.ReLU()),
        ("conv(12 -> 12, kernel_size=(1, 3), dilation=(1, 2), padding=(0, 2), groups=3, bias=true)",
         nn.Conv2d(12, 12, (1, 3), dilation=(1, 2), padding=(0, 2), groups=3, bias=True)),
        ("maxpool(kernel_size=3, stride=2, padding=1, ceil_mode=true)", nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        ("avgpool(kernel_size=2, stride=1, padding=1, ceil_mode=false, count_include_pad=true)",
         nn.AvgPool2d(2, 1, 1, ceil_mode=False, count_include_pad=True)),
        ("globalavgpool", nn.AdaptiveAvgPool2d(1)),
        (FLAT, nn.Flatten()),
        ("fc(12 -> 6, nobias)", nn.Linear(12, 6, bias=False)),
    ]),
    Net("groups_depthwise", "GroupsDepthwise", [3, 8, 12, 12], [
        ("conv(8 -> 16, k3, p1, g4)", nn.Conv2d(8, 16, 3, padding=1, groups=4)),
        ("relu", nn.ReLU()),
        ("conv(16 -> 16, k3, s2, p1, g16, nobias)", nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False)),
        ("bn", bn(16)),
        ("relu", nn.ReLU()),
        ("conv(16 -> 32, k1)", nn.Conv2d(16, 32, 1)),
        ("swish", nn.SiLU()),
        ("conv(32 -> 64, k3, g32)", nn.Conv2d(32, 64, 3, groups=32)),
        ("globalmaxpool", nn.AdaptiveMaxPool2d(1)),
        (FLAT, nn.Flatten()),
        ("fc(10, nobias)", nn.Linear(64, 10, bias=False)),
    ]),
    Net("bn_variants", "BnVariants", [4, 4, 10, 10], [
        ("conv(4 -> 8, k3, p1)", nn.Conv2d(4, 8, 3, padding=1)),
        ("bn(affine=false)", bn(8, affine=False)),
        ("relu", nn.ReLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("bn(track_running_stats=false)", bn(8, track_running_stats=False)),
        ("tanh", nn.Tanh()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("bn(eps=1e-3, momentum=0.01)", bn(8, eps=1e-3, momentum=0.01)),
        ("relu", nn.ReLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("bn(eps=1e-3, momentum=0.01, affine=false, track_running_stats=false)",
         bn(8, eps=1e-3, momentum=0.01, affine=False, track_running_stats=False)),
        ("conv(8 -> 6, k1)", nn.Conv2d(8, 6, 1)),
        ("bn(momentum=0.3)", bn(6, momentum=0.3)),
    ]),
    Net("activations", "Activations", [2, 3, 9, 9], [
        ("conv(3 -> 8, k3, p1)", nn.Conv2d(3, 8, 3, padding=1)),
        ("leakyrelu(0.2)", nn.LeakyReLU(0.2)),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("sigmoid", nn.Sigmoid()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("tanh", nn.Tanh()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("swish", nn.SiLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("silu", nn.SiLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("leakyrelu", nn.LeakyReLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("gelu", nn.GELU()),
    ]),
    Net("mlp_softmax", "MlpSoftmax", [4, 1, 6, 6], [
        ("flatten", nn.Flatten()),
        ("dropout(0.2)", nn.Dropout(0.2)),
        ("fc(36 -> 32, nobias)", nn.Linear(36, 32, bias=False)),
        ("sigmoid", nn.Sigmoid()),
        ("fc(32 -> 16)", nn.Linear(32, 16)),
        ("tanh", nn.Tanh()),
        ("linear(16, nobias)", nn.Linear(16, 16, bias=False)),
        ("relu", nn.ReLU()),
        ("dropout(0.5)", nn.Dropout(0.5)),
        ("fc(10)", nn.Linear(16, 10)),
        ("softmax", nn.Softmax(dim=1)),
    ]),
    Net("pooling", "Pooling", [2, 3, 37, 35], [
        ("maxpool(k3, s2, p1, ceil)", nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        ("conv(3 -> 6, k1)", nn.Conv2d(3, 6, 1)),
        ("avgpool(k3, s2, p1, ceil)", nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
        ("conv(6 -> 6, k1)", nn.Conv2d(6, 6, 1)),
        ("avgpool(k3, s2, p1, ceil, count_include_pad=false)",
         nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
        ("maxpool(k2, p1)", nn.MaxPool2d(2, padding=1)),
        ("avgpool(k2, s1, p1, count_include_pad=false)", nn.AvgPool2d(2, 1, 1, count_include_pad=False)),
        ("maxpool(k2, s2, ceil)", nn.MaxPool2d(2, 2, ceil_mode=True)),
    ]),
    Net("global_pools", "GlobalPools", [2, 5, 7, 9], [
        ("conv(5 -> 8, k(3,2))", nn.Conv2d(5, 8, (3, 2))),
        ("relu", nn.ReLU()),
        ("conv(8 -> 8, k3, p1)", nn.Conv2d(8, 8, 3, padding=1)),
        ("gap", nn.AdaptiveAvgPool2d(1)),
    ]),
    Net("softmax_channels", "SoftmaxChannels", [2, 3, 7, 9], [
        ("conv(3 -> 5, k(3,2), nobias)", nn.Conv2d(3, 5, (3, 2), bias=False)),
        ("softmax", nn.Softmax(dim=1)),
    ]),
    Net("mobile_acts", "MobileActs", [2, 3, 12, 12], [
        ("conv(3 -> 8, k3, p1)", nn.Conv2d(3, 8, 3, padding=1)),
        ("relu6", nn.ReLU6()),
        ("conv(8 -> 8, k3, p1, g8)", nn.Conv2d(8, 8, 3, padding=1, groups=8)),
        ("bn", bn(8)),
        ("hardswish", nn.Hardswish()),
        ("identity", nn.Identity()),
        ("conv(8 -> 16, k1)", nn.Conv2d(8, 16, 1)),
        ("hardsigmoid", nn.Hardsigmoid()),
        ("gap", nn.AdaptiveAvgPool2d(1)),
        (FLAT, nn.Flatten()),
        ("fc(16)", nn.Linear(16, 16)),
        ("identity", nn.Identity()),
        ("relu6", nn.ReLU6()),
        ("fc(10)", nn.Linear(16, 10)),
    ], input_std=4.0),
    Net("convtranspose_geometry", "ConvtransposeGeometry", [2, 4, 5, 6], [
        ("convtranspose(4 -> 8, k3, s2, p1, output_padding=1)",
         nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1)),
        ("bn", bn(8)),
        ("relu", nn.ReLU()),
        ("convt(8 -> 6, k(3,2), s(2,3), p(1,0), output_padding=(0,2), g2, nobias)",
         nn.ConvTranspose2d(8, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(0, 2), groups=2, bias=False)),
        ("tanh", nn.Tanh()),
        ("conv_transpose2d(6 -> 4, kernel_size=(2, 3), dilation=(2, 1), padding=(1, 1), output_padding=(1, 0), stride=1)",
         nn.ConvTranspose2d(6, 4, (2, 3), stride=1, padding=(1, 1), output_padding=(1, 0), dilation=(2, 1))),
        ("conv(4 -> 4, k3)", nn.Conv2d(4, 4, 3)),
        ("convtranspose(4 -> 3, k1)", nn.ConvTranspose2d(4, 3, 1)),
    ]),
    Net("upsample_modes", "UpsampleModes", [2, 3, 5, 4], [
        ("upsample(2)", nn.Upsample(scale_factor=2.0, mode="nearest")),
        ("conv(3 -> 4, k3)", nn.Conv2d(3, 4, 3)),
        ("upsample(scale_factor=(2, 3), mode=nearest)", nn.Upsample(scale_factor=(2.0, 3.0), mode="nearest")),
        ("conv(4 -> 4, k3, s2)", nn.Conv2d(4, 4, 3, stride=2)),
        ("upsample(scale_factor=(2, 3), mode=bilinear)",
         nn.Upsample(scale_factor=(2.0, 3.0), mode="bilinear", align_corners=False)),
        ("relu", nn.ReLU()),
        ("conv(4 -> 4, k3, s2)", nn.Conv2d(4, 4, 3, stride=2)),
        ("upsample(3, mode=bilinear, align_corners=true)",
         nn.Upsample(scale_factor=3.0, mode="bilinear", align_corners=True)),
        ("conv(4 -> 2, k1)", nn.Conv2d(4, 2, 1)),
    ]),
]


# Branching networks. Small helpers keep the long ones readable; each returns a (dsl text,
# module) pair, or a list of them.

def conv(cin, cout, k, s=1, p=0, g=1, bias=True):
    text = (f"conv({cin} -> {cout}, k{k}" + (f", s{s}" if s != 1 else "") + (f", p{p}" if p else "")
            + (f", g{g}" if g != 1 else "") + ("" if bias else ", nobias") + ")")
    return text, nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=bias)


def bnp(c):
    return "bn", bn(c)


RELU = ("relu", nn.ReLU())
RELU6 = ("relu6", nn.ReLU6())
HSWISH = ("hardswish", nn.Hardswish())
HSIGMOID = ("hardsigmoid", nn.Hardsigmoid())
GAP = ("gap", nn.AdaptiveAvgPool2d(1))


def fc(fin, fout):
    return [(FLAT, nn.Flatten()), (f"fc({fout})", nn.Linear(fin, fout))]


def basic_block(cin, cout, stride):
    """ResNet's basic block and the relu after the sum; a projection shortcut (1×1 conv, no
    bias, + bn) where the shape changes."""
    body = [conv(cin, cout, 3, stride, 1, bias=False), bnp(cout), RELU,
            conv(cout, cout, 3, 1, 1, bias=False), bnp(cout)]
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = [conv(cin, cout, 1, stride, bias=False), bnp(cout)]
    return [res(body, shortcut), RELU]


def resnet20_cifar():
    layers = [conv(3, 16, 3, 1, 1, bias=False), bnp(16), RELU]
    cin = 16
    for stage, c in enumerate([16, 32, 64]):
        for j in range(3):
            layers += basic_block(cin, c, 2 if stage > 0 and j == 0 else 1)
            cin = c
    return layers + [GAP] + fc(64, 10)


def resnet18():
    layers = [conv(3, 64, 7, 2, 3, bias=False), bnp(64), RELU,
              ("maxpool(k3, s2, p1)", nn.MaxPool2d(3, 2, 1))]
    cin = 64
    for stage, c in enumerate([64, 128, 256, 512]):
        for j in range(2):
            layers += basic_block(cin, c, 2 if stage > 0 and j == 0 else 1)
            cin = c
    return layers + [GAP] + fc(512, 1000)


def inverted_residual(cin, cout, stride, expand, k=3, act=RELU6, act_dw=None):
    """MobileNet's inverted residual: 1×1 expansion (none when `expand` is 1), depthwise k×k,
    1×1 linear projection, each with bn; a residual only when stride is 1 and in == out."""
    hid = cin * expand
    act_dw = act_dw or act
    layers = [] if expand == 1 else [conv(cin, hid, 1, bias=False), bnp(hid), act]
    layers += [conv(hid, hid, k, stride, k // 2, g=hid, bias=False), bnp(hid), act_dw,
               conv(hid, cout, 1, bias=False), bnp(cout)]
    return [res(layers)] if stride == 1 and cin == cout else layers


def mobilenetv2():
    """torchvision's MobileNetV2, width 1.0."""
    layers = [conv(3, 32, 3, 2, 1, bias=False), bnp(32), RELU6]
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for j in range(n):
            layers += inverted_residual(cin, c, s if j == 0 else 1, t)
            cin = c
    return (layers + [conv(320, 1280, 1, bias=False), bnp(1280), RELU6, GAP,
                      ("dropout(0.2)", nn.Dropout(0.2))] + fc(1280, 1000))


def mobilenetv3_small_like():
    """MobileNetV3-small-style blocks (no squeeze-excite): relu early, hardswish later, one
    depthwise activated by hardsigmoid; depthwise 3×3 and 5×5; residuals where shapes allow."""
    return ([conv(3, 8, 3, 2, 1, bias=False), bnp(8), HSWISH]                        # 8×32×32
            + inverted_residual(8, 8, 2, 1, act=RELU)                                 # 8×16×16
            + inverted_residual(8, 12, 2, 3, act=RELU)                                # 12×8×8
            + inverted_residual(12, 12, 1, 3, act=RELU)                               # residual
            + inverted_residual(12, 16, 2, 3, k=5, act=HSWISH)                        # 16×4×4
            + inverted_residual(16, 16, 1, 3, k=5, act=HSWISH, act_dw=HSIGMOID)       # residual
            + inverted_residual(16, 16, 1, 2, k=3, act=HSWISH)                        # residual
            + [conv(16, 48, 1, bias=False), bnp(48), HSWISH, GAP] + fc(48, 32)
            + [HSWISH, ("dropout(0.2)", nn.Dropout(0.2)), ("fc(10)", nn.Linear(32, 10))])


def unet3():
    """A 3-level U-Net: each level keeps its input (`branch {}`) and concatenates the upsampled
    result of the level below; nearest, transposed-conv and bilinear upsampling."""
    def block(cin, cout):
        return [conv(cin, cout, 3, 1, 1, bias=False), bnp(cout), RELU]

    bottom = cat([], [("maxpool(2)", nn.MaxPool2d(2))] + block(16, 16)
                 + [("upsample(scale_factor=2, mode=bilinear)",
                     nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))])  # 32×8×8
    middle = cat([], [("maxpool(2)", nn.MaxPool2d(2))] + block(8, 16) + [bottom] + block(32, 16)
                 + [("convtranspose(16 -> 8, k2, s2)", nn.ConvTranspose2d(16, 8, 2, stride=2))])
    top = cat([], [("maxpool(2)", nn.MaxPool2d(2))] + block(4, 8) + [middle] + block(16, 8)
              + [("upsample(2)", nn.Upsample(scale_factor=2.0, mode="nearest"))])
    return block(3, 4) + [top] + block(12, 8) + [conv(8, 2, 1)]


def inception(cin, c1, c3r, c3, c5r, c5, cp):
    """Inception-style block: 1×1; 1×1→3×3; 1×1→5×5; maxpool(k3, s1, p1)→1×1; identity."""
    return cat([conv(cin, c1, 1), bnp(c1), RELU],
               [conv(cin, c3r, 1), bnp(c3r), RELU, conv(c3r, c3, 3, 1, 1), bnp(c3), RELU],
               [conv(cin, c5r, 1), bnp(c5r), RELU, conv(c5r, c5, 5, 1, 2), bnp(c5), RELU],
               [("maxpool(k3, s1, p1)", nn.MaxPool2d(3, 1, 1)), conv(cin, cp, 1), bnp(cp), RELU],
               [])


def inception_like():
    return ([conv(3, 16, 3, 1, 1, bias=False), bnp(16), RELU, ("maxpool(2)", nn.MaxPool2d(2)),
             inception(16, 8, 8, 12, 4, 6, 6),                                        # 48×16×16
             ("maxpool(2)", nn.MaxPool2d(2)),
             inception(48, 8, 8, 12, 4, 6, 6),                                        # 80×8×8
             GAP] + fc(80, 10))


NETS += [
    # seed_offset 1: with the name's seed, one ReLU input of the training forward is 3e-9 and
    # float32 and float64 put it on different sides of the kink (a gradient 360% off).
    Net("resnet20_cifar", "Resnet20Cifar", [2, 3, 32, 32], resnet20_cifar(), seed_offset=1),
    Net("resnet18", "Resnet18", [1, 3, 224, 224], resnet18(), recipe={}),
    Net("mobilenetv2", "Mobilenetv2", [1, 3, 224, 224], mobilenetv2(), recipe={"running_var": (0.5, 1.0)}),
    Net("mobilenetv3_small_like", "Mobilenetv3SmallLike", [2, 3, 64, 64], mobilenetv3_small_like()),
    Net("unet3", "Unet3", [2, 3, 32, 32], unet3()),
    Net("inception_like", "InceptionLike", [2, 3, 32, 32], inception_like()),
]


def kind(text):
    """The layer's kind: the layer name of its dsl text (`flatten` for the implicit one,
    `residual` or `concat` for a block)."""
    if text == FLAT:
        return "flatten"
    return text.split("(")[0].split(" ")[0]


def rms(t):
    return math.sqrt(float((t.double() ** 2).mean())) if t.numel() else 0.0


def sig(x):
    """Three significant digits, so that the json stays readable."""
    return float(f"{x:.3g}")


def residual_ends(model):
    """The ids of the last BatchNorm of every residual body."""
    ends = set()
    for m in model.modules():
        if isinstance(m, Residual):
            bns = [b for b in m.body.modules() if isinstance(b, nn.BatchNorm2d)]
            if bns:
                ends.add(id(bns[-1]))
    return ends


def init(model, gen):
    """Seeded, non-trivial parameters. Conv and fc weights are He-normal (std sqrt(2 / fan_in)),
    so that activations stay of order one through the depth and an error in a late layer is not
    hidden by shrinking values; biases N(0, 0.1). BatchNorm gets random affine parameters and
    running statistics. The last BatchNorm of a residual body gets the smaller weight
    U(0.2, 0.5) (same draws), so that the sums of a chain of residual blocks stay of order one."""
    res_end = residual_ends(model)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in)
            if m.bias is not None:
                m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.affine and id(m) in res_end:
                m.weight.data = 0.2 + 0.3 * torch.rand(c, generator=gen)
                m.bias.data = 0.2 * torch.randn(c, generator=gen)
            elif m.affine:
                m.weight.data = 0.5 + torch.rand(c, generator=gen)
                m.bias.data = 0.2 * torch.randn(c, generator=gen)
            if m.track_running_stats:
                m.running_mean.data = 0.2 * torch.randn(c, generator=gen)
                m.running_var.data = 0.5 + torch.rand(c, generator=gen)
                m.num_batches_tracked.data = torch.tensor(3, dtype=torch.long)


# The weight recipe of the big fixtures (resnet18, mobilenetv2), whose weights are not committed:
# tests/fixtures/mod.rs computes the same float32 values bit for bit. Per tensor of state_dict key
# K, shape S (n elements) and range [lo, hi] (both float32 values):
#   seed = FNV-1a 64 of the UTF-8 bytes of K
#   z_i  = splitmix64(seed XOR (i * 0x9E3779B97F4A7C15 mod 2^64)),  i = 0 .. n-1 (row-major)
#   u_i  = (z_i >> 40) * 2^-24                   (24 bits, exact in float32, in [0, 1))
#   v_i  = lo + ((hi - lo) * u_i)                float32, each operation rounded (no FMA)
# splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
#                z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31      (all mod 2^64)
# num_batches_tracked is the I64 scalar `value`.
RECIPE_NAME = "fnv1a64-splitmix64-uniform-f32/v1"
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(z):
    """On a uint64 numpy array (wrapping arithmetic)."""
    z = z + np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def recipe_tensor(key, shape, lo, hi):
    n = math.prod(shape)
    i = np.arange(n, dtype=np.uint64)
    z = splitmix64(np.uint64(fnv1a64(key.encode())) ^ (i * np.uint64(GOLDEN)))
    u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    lo, hi = np.float32(lo), np.float32(hi)
    d = np.float32(hi - lo)
    p = (d * u).astype(np.float32)
    v = (lo + p).astype(np.float32)
    assert v.dtype == np.float32
    return v.reshape(shape)


def f32(x):
    """The float32 nearest to x, four significant digits first, as a Python float (exact)."""
    return float(np.float32(float(f"{x:.4g}")))


# Ranges of the recipe, chosen so that activations stay of order one through all the blocks
# (make() prints the RMS after each top-level module): conv and fc weights He-uniform
# (±sqrt(6 / fan_in), variance 2 / fan_in); BatchNorm weight in [0.5, 1], running_var in
# [1, 2] (about the variance a He conv makes of order-one inputs), bias and running_mean in
# ±0.1; the last bn of a residual body has the smaller weight `res_bn_weight`, so that the
# sums of the residual chain do not grow block after block.
RECIPE_DEFAULTS = {
    "bias": (-0.1, 0.1),
    "bn_weight": (0.5, 1.0),
    "res_bn_weight": (0.2, 0.5),
    "bn_bias": (-0.1, 0.1),
    "running_mean": (-0.1, 0.1),
    "running_var": (1.0, 2.0),
    "num_batches_tracked": 3,
}


def recipe_spec(model, overrides):
    """key -> {"shape", "lo", "hi"} (or the I64 num_batches_tracked) for every state_dict key."""
    r = dict(RECIPE_DEFAULTS, **overrides)
    res_end = residual_ends(model)
    ranges = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            b = math.sqrt(6.0 / m.weight[0].numel())
            ranges[f"{name}.weight"] = (-b, b)
            ranges[f"{name}.bias"] = r["bias"]
        elif isinstance(m, nn.BatchNorm2d):
            ranges[f"{name}.weight"] = r["res_bn_weight"] if id(m) in res_end else r["bn_weight"]
            ranges[f"{name}.bias"] = r["bn_bias"]
            ranges[f"{name}.running_mean"] = r["running_mean"]
            ranges[f"{name}.running_var"] = r["running_var"]
    spec = {}
    for key, v in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            spec[key] = {"shape": [], "dtype": "I64", "value": r["num_batches_tracked"]}
        else:
            lo, hi = ranges[key]
            spec[key] = {"shape": list(v.shape), "lo": f32(lo), "hi": f32(hi)}
    return spec


def apply_recipe(model, spec):
    """Fills the model from the recipe; returns the float32 arrays by key."""
    arrays, state = {}, {}
    for key, t in spec.items():
        if "value" in t:
            state[key] = torch.tensor(t["value"], dtype=torch.long)
        else:
            a = recipe_tensor(key, t["shape"], t["lo"], t["hi"])
            arrays[key] = a
            state[key] = torch.from_numpy(a.copy())
            t["crc32"] = zlib.crc32(a.astype("<f4").tobytes())
    model.load_state_dict(state, strict=True)
    return arrays


def without_dropout(model):
    """Every Dropout, at any depth, replaced by the identity (training mode stays deterministic)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())
    return model


def training_step(model, x, loss_of):
    """Training-mode forward (Dropout as the identity, so the result is deterministic), loss,
    backward. Returns the output, the loss, the gradients and the updated running stats (keyed
    by the BatchNorm's module path, `after.3.body.1.running_mean`)."""
    model = without_dropout(copy.deepcopy(model))
    model.train()
    model.zero_grad()
    out = model(x)
    loss = loss_of(out)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    stats = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            stats[f"after.{name}.running_mean"] = m.running_mean.detach().clone()
            stats[f"after.{name}.running_var"] = m.running_var.detach().clone()
    return out.detach(), loss.detach(), grads, stats


def records(modules, texts, h, prefix, blocks):
    """The json's per-module records of one list (top level, body, shortcut or branch), run on
    the per-sample batch `h`: index, the key prefix (fixtures with blocks only), dsl text, kind,
    PyTorch module (the class name for a block), output shape; a block's record also has its
    inner lists (`body`, `shortcut`, `branches`) as records of the same form."""
    out = []
    for i, (text, m) in enumerate(zip(texts, modules)):
        rec = {"index": i}
        if blocks:
            rec["prefix"] = f"{prefix}{i}"
        is_block = isinstance(m, (Residual, Concat))
        rec.update({"layer": text, "kind": kind(text), "implicit": text == FLAT,
                    "torch": type(m).__name__ if is_block else repr(m)})
        y = m(h)
        rec["out_shape"] = list(y.shape[1:])
        if isinstance(m, Residual):
            for name, inner in m.dsl_lists:
                rec[name] = records(getattr(m, name), inner, h, f"{prefix}{i}.{name}.", blocks)
        elif isinstance(m, Concat):
            rec["branches"] = [records(b, inner, h, f"{prefix}{i}.{name}.", blocks)
                               for b, (name, inner) in zip(m.branches, m.dsl_lists)]
        out.append(rec)
        h = y
    return out


def make(net):
    seed = zlib.crc32(net.name.encode()) + net.seed_offset
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[copy.deepcopy(m) for _, m in net.layers])
    recipe = None
    if net.recipe is None:
        init(model, gen)
    else:
        recipe = recipe_spec(model, net.recipe)
        arrays = apply_recipe(model, recipe)
    model.eval()
    x = torch.randn(net.input_shape, generator=gen)
    if net.input_std != 1.0:
        x = net.input_std * x

    with torch.no_grad():
        out = model(x)
        out64 = copy.deepcopy(model).double()(x.double())
        modules = records(model, [t for t, _ in net.layers], x[:1], "", net.has_blocks())
        act_rms, h = [], x[:1]
        for i, m in enumerate(model):
            h = m(h)
            act_rms.append({"index": i, "kind": kind(net.layers[i][0]), "rms": sig(rms(h))})

    io = {"input": x, "output": out}
    f64 = {"output": out - out64}
    classifier = out.dim() == 2
    if recipe is None:
        if classifier:
            k = out.shape[1]
            target = torch.randint(0, k, (out.shape[0],), generator=gen)
            ends_in_softmax = isinstance(model[-1], nn.Softmax)

            def loss_of(y):
                if ends_in_softmax:
                    return nn.functional.nll_loss(torch.log(y), target)
                return nn.functional.cross_entropy(y, target)
        else:
            target = None

            def loss_of(y):
                return (y ** 2).mean() / 2

        t_out, loss, grads, stats = training_step(model, x, loss_of)
        t_out64, loss64, grads64, stats64 = training_step(copy.deepcopy(model).double(), x.double(), loss_of)
        io["train_output"] = t_out
        f64["train_output"] = t_out - t_out64
        io.update(stats)
        for k in stats:
            f64[k] = stats[k] - stats64[k]
        if target is not None:
            io["target"] = target
        io["loss"] = loss
        f64["loss"] = loss - loss64
        for k in grads:
            io[f"grad.{k}"] = grads[k]
            f64[f"grad.{k}"] = grads[k] - grads64[k]
    else:
        grads = {}

    depth = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in model.modules())
    rtol = 1e-4 * max(1.0, depth / 4)
    biggest_grad = max((float(g.abs().max()) for g in grads.values()), default=0.0)
    tolerances = {}
    for key, t in io.items():
        if key in ("input", "target"):
            continue
        if key.startswith("grad."):
            r = 10 * rtol
            a = r * max(float(t.abs().max()), 0.1 * biggest_grad)
        else:
            r, a = rtol, rtol * rms(t)
        tolerances[key] = {"atol": sig(a), "rtol": sig(r)}

    state = model.state_dict()
    meta = {
        "name": net.name,
        "struct": net.struct,
        "dsl": net.dsl(),
        "torch": repr(model),
        "input_shape": net.input_shape,
        "output_shape": list(out.shape),
        "atol": tolerances["output"]["atol"],
        "rtol": tolerances["output"]["rtol"],
        "modules": modules,
        "state_dict": {
            k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
            for k, v in state.items()
        },
        "io_keys": sorted(io),
        "tolerances": tolerances,
    }
    if recipe is None:
        meta.update({
            "loss": ("nll_loss(log(train_output), target)" if classifier and isinstance(model[-1], nn.Softmax)
                     else "cross_entropy(train_output, target)" if classifier
                     else "mean(train_output ** 2) / 2"),
            "train_mode": "BatchNorm in training mode (batch statistics, biased variance for "
                          "normalisation, running stats updated with unbiased variance); Dropout as identity",
        })
    meta.update({
        "seed": seed,
        "torch_version": torch.__version__.split("+")[0],
        "f32_vs_f64_max_abs": {k: sig(float(d.abs().max())) for k, d in f64.items()},
    })
    if net.input_std != 1.0:
        meta["input_std"] = net.input_std
    if net.has_blocks():
        meta["layers_L"] = depth
    if recipe is not None:
        meta["activation_rms"] = act_rms
        meta["weights_recipe"] = {
            "name": RECIPE_NAME,
            "formula": "seed = fnv1a64(utf8(key)); z = splitmix64(seed ^ (i * 0x9E3779B97F4A7C15)); "
                       "u = f32(z >> 40) * 2^-24; value = f32(lo + f32(f32(hi - lo) * u)); "
                       "i = row-major element index; num_batches_tracked = I64 scalar `value`; "
                       "crc32 = zlib CRC-32 of the little-endian f32 bytes",
            "tensors": recipe,
        }
        keys = [k for k in recipe if "value" not in recipe[k]]
        nested = [k for k in keys if len(recipe[k]["shape"]) == 4 and ".body." in k]
        picks = [keys[0], keys[-1]] + [k for k in keys if "running_var" in k][:1] + nested[-1:]
        meta["probe"] = {k: [float(v) for v in arrays[k].reshape(-1)[:4]] for k in picks}
    OUT.mkdir(parents=True, exist_ok=True)
    if recipe is None:
        save_file({k: v.contiguous() for k, v in state.items()}, OUT / f"{net.name}.safetensors")
    save_file({k: v.contiguous() for k, v in io.items()}, OUT / f"{net.name}.io.safetensors")
    (OUT / f"{net.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    worst = max(meta["f32_vs_f64_max_abs"][k] / max(tolerances[k]["atol"], 1e-30) for k in tolerances)
    print(f"{net.name}: {len(state)} tensors, output {list(out.shape)}, "
          f"PyTorch f32 vs f64 at {100 * worst:.1f}% of the tolerance (worst key)")
    if worst > 0.5:
        print(f"  WARNING: {net.name}: PyTorch's own float32 is not well inside the tolerance; "
              "look for a value at a kink (give the Net a seed_offset)")
    if net.has_blocks():
        print(f"  L = {depth}, rtol {tolerances['output']['rtol']}, atol {tolerances['output']['atol']}, "
              f"{sum(v.numel() for v in state.values() if v.dtype == torch.float32)} weights")
        print("  RMS after each top-level module: " + " ".join(
            f"{a['index']}:{a['kind']}={a['rms']}" for a in act_rms))


# ---------------------------------------------------------------------------------------------
# Optimizer trajectories (`--trajectories`): `traj_<net>_<opt>.safetensors` and `.json`.
#
# From the weights of `NAME.safetensors`, 5 training steps (train mode, Dropout as the identity,
# cross_entropy mean) with one torch.optim optimizer, recording the whole state_dict after every
# step. Step 1 uses the base fixture's own `input` and `target` (so `loss.1` is its io `loss`);
# steps 2..5 draw `randn(input_shape)` then `randint(0, 10, [N])` from the same generator, right
# after the draws of `make()`. The same trajectory is rerun in float64 (from the same float32
# start, inputs and targets) to measure PyTorch's own float32 noise.

TRAJ_NETS = ["tiny_net", "lenet5", "vgg_cifar"]
TRAJ_STEPS = 5
# Total size budget of the trajectory files: above it, vgg_cifar stores `after.*` only for the
# steps of TRAJ_FEW_STEPS (inputs, targets and losses of all steps are always stored).
TRAJ_BUDGET = 6_000_000
TRAJ_FEW_STEPS = [1, 2, 5]
TRAJ_OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0, nesterov=True, weight_decay=5e-4),
            "g = grad + weight_decay * p; buf = g at step 1, else buf = momentum * buf + "
            "(1 - dampening) * g; g = g + momentum * buf (nesterov); p = p - lr * g"),
    "adamw": ("AdamW", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
              "p = p * (1 - lr * weight_decay); m = m + (1 - beta1) * (grad - m) (lerp); "
              "v = beta2 * v + (1 - beta2) * grad^2; step_size = lr / (1 - beta1^t); "
              "denom = sqrt(v) / sqrt(1 - beta2^t) + eps; p = p - step_size * m / denom "
              "(t = step count from 1; m, v start at 0; bias corrections in double, as Python floats)"),
}


def adam_direction_bound(betas, t):
    """An upper bound of |m̂_t / sqrt(v̂_t)| over every gradient sequence (Cauchy-Schwarz):
    (1 - b1) sqrt(1 - b2^t) / ((1 - b1^t) sqrt(1 - b2)) * sqrt(sum_{j<t} (b1^2 / b2)^j)."""
    b1, b2 = betas
    s = sum((b1 * b1 / b2) ** j for j in range(t))
    return (1 - b1) * math.sqrt(1 - b2 ** t) / ((1 - b1 ** t) * math.sqrt(1 - b2)) * math.sqrt(s)


def noise_gradient_keys(model):
    """Biases whose gradient is mathematically zero: a conv or fc bias followed directly by a
    BatchNorm (train mode subtracts the batch mean per channel, so a per-channel constant has no
    effect on the output). Their computed gradient is rounding noise. Returns {bias key: the
    following BatchNorm's running_mean key or None}. Top level of the Sequential only (the
    trajectory networks have no blocks)."""
    keys = {}
    mods = list(model)
    for i, m in enumerate(mods[:-1]):
        nxt = mods[i + 1]
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None and isinstance(nxt, nn.BatchNorm2d):
            keys[f"{i}.bias"] = f"{i + 1}.running_mean" if nxt.track_running_stats else None
    return keys


def trajectory_batches(net):
    """The base fixture's model (float32, eval), and the inputs and targets of the 5 steps."""
    assert net.recipe is None and net.input_std == 1.0
    seed = zlib.crc32(net.name.encode()) + net.seed_offset
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[copy.deepcopy(m) for _, m in net.layers])
    init(model, gen)
    model.eval()
    xs = [torch.randn(net.input_shape, generator=gen)]
    with torch.no_grad():
        k = model(xs[0]).shape[1]
    ts = [torch.randint(0, k, (net.input_shape[0],), generator=gen)]
    for _ in range(TRAJ_STEPS - 1):
        xs.append(torch.randn(net.input_shape, generator=gen))
        ts.append(torch.randint(0, k, (net.input_shape[0],), generator=gen))
    return seed, model, xs, ts


def run_trajectory(model, xs, ts, opt, dtype):
    """The training steps: per step the loss and a copy of the whole state_dict after the step."""
    cls_name, hp, _ = TRAJ_OPTIMIZERS[opt]
    m = without_dropout(copy.deepcopy(model)).to(dtype)
    m.train()
    o = getattr(torch.optim, cls_name)(m.parameters(), **hp)
    losses, states = [], []
    for x, t in zip(xs, ts):
        o.zero_grad()
        loss = nn.functional.cross_entropy(m(x.to(dtype)), t)
        loss.backward()
        o.step()
        losses.append(loss.detach().clone())
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    return losses, states, o.defaults


def make_trajectory(net, opt, steps_stored):
    seed, model, xs, ts = trajectory_batches(net)
    base_io = OUT / f"{net.name}.io.safetensors"
    if base_io.exists():   # step 1 is the base fixture's batch, bit for bit
        from safetensors.torch import load_file
        io = load_file(base_io)
        assert torch.equal(io["input"], xs[0]) and torch.equal(io["target"], ts[0]), net.name
    cls_name, hp, rule = TRAJ_OPTIMIZERS[opt]
    losses, states, defaults = run_trajectory(model, xs, ts, opt, torch.float32)
    losses64, states64, _ = run_trajectory(model, xs, ts, opt, torch.float64)
    if base_io.exists() and not torch.equal(io["loss"], losses[0]):
        print(f"  note: loss.1 differs from {net.name}.io loss by {float(losses[0] - io['loss']):.3g}")

    depth = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in model.modules())
    r0 = 1e-4 * max(1.0, depth / 4)
    noise = noise_gradient_keys(model)
    noise_rm = {rm: b for b, rm in noise.items() if rm is not None}
    bn_momentum = {f"{i}.running_mean": m.momentum for i, m in enumerate(model) if isinstance(m, nn.BatchNorm2d)}
    adamw = cls_name == "AdamW"
    bounds = [adam_direction_bound(hp["betas"], t) for t in range(1, TRAJ_STEPS + 1)] if adamw else []

    tensors, tolerances, dev_rel, dev_abs, dev_ratio = {}, {}, {}, {}, {}
    for s in range(1, TRAJ_STEPS + 1):
        tensors[f"input.{s}"] = xs[s - 1]
        tensors[f"target.{s}"] = ts[s - 1]
        tensors[f"loss.{s}"] = losses[s - 1]
        r = r0 * s
        tol = {"loss": {"atol": sig(r * abs(float(losses[s - 1]))), "rtol": sig(r)}}
        d_abs = {"loss": sig(abs(float(losses[s - 1].double() - losses64[s - 1])))}
        worst_rel, worst_ratio = 0.0, d_abs["loss"] / tol["loss"]["atol"]
        for key, v in states[s - 1].items():
            if s in steps_stored:
                tensors[f"after.{s}.{key}"] = v
            if not v.is_floating_point():      # num_batches_tracked: exact
                tol[key] = {"atol": 0, "rtol": 0}
                assert int(v) == int(states64[s - 1][key]), key
                continue
            a = r * rms(v)
            extra = 0.0
            if adamw and key in noise:
                # any two implementations: each step moves it by at most lr * bound(t) either way
                extra = 2 * hp["lr"] * sum(bounds[:s])
            elif adamw and key in noise_rm:
                # running_mean_s = sum_j momentum (1 - momentum)^(s - j) * (batch mean of step j,
                # which holds the bias after step j - 1)
                mom = bn_momentum[key]
                extra = sum(mom * (1 - mom) ** (s - j) * 2 * hp["lr"] * sum(bounds[:j - 1])
                            for j in range(1, s + 1))
            tol[key] = {"atol": sig(a + extra), "rtol": sig(r)}
            d = (v.double() - states64[s - 1][key]).abs()
            d_abs[key] = sig(float(d.max()))
            ratio = float((d / (tol[key]["atol"] + tol[key]["rtol"] * states64[s - 1][key].abs())).max())
            worst_ratio = max(worst_ratio, ratio)
            if key not in noise and key not in noise_rm:
                worst_rel = max(worst_rel, float(d.max()) / max(rms(v), 1e-30))
        tolerances[str(s)] = tol
        dev_abs[str(s)] = d_abs
        dev_rel[str(s)] = sig(worst_rel)
        dev_ratio[str(s)] = sig(worst_ratio)

    name = f"traj_{net.name}_{opt}"
    hp_json = {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()}
    meta = {
        "name": name,
        "base_fixture": net.name,
        "weights": f"{net.name}.safetensors",
        "struct": net.struct,
        "dsl": net.dsl(),
        "optimizer": {
            "name": opt,
            "torch_class": f"torch.optim.{cls_name}",
            "hyperparameters": hp_json,
            "torch_defaults": {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()},
            "update": rule,
        },
        "steps": TRAJ_STEPS,
        "steps_stored": steps_stored,
        "batch_shape": net.input_shape,
        "batches": "step 1: the base fixture's io `input` and `target`; steps 2..5: "
                   "randn(input_shape) then randint(0, 10, [N]) per step, from the base fixture's "
                   "generator right after its own draws",
        "loss": "cross_entropy(train_output, target), reduction mean",
        "train_mode": "model.train() all 5 steps: BatchNorm with batch statistics, running stats "
                      "updated (unbiased variance, num_batches_tracked + 1); Dropout as identity",
        "step_order": "zero_grad; forward; loss (recorded as loss.<step>); backward; optimizer.step; "
                      "record state_dict as after.<step>.*",
        "seed": seed,
        "torch_version": torch.__version__.split("+")[0],
        "layers_L": depth,
        "tolerance_rule": "per stored step s and key: |got - expected| <= atol + rtol * |expected| "
                          "element-wise, rtol = 1e-4 * max(1, L/4) * s, atol = rtol * RMS(expected); "
                          "loss: atol = rtol * |loss|; num_batches_tracked exact; AdamW only: "
                          "noise_gradient_keys get atol + 2 * lr * sum_{t<=s} bound(t), and the "
                          "running_mean after them atol + sum_{j<=s} momentum (1 - momentum)^(s-j) "
                          "* 2 * lr * sum_{t<j} bound(t), bound(t) = adam_direction_bound (see "
                          "tests/data/README.md); the values are in `tolerances`",
        "tolerances": tolerances,
        "noise_gradient_keys": sorted(noise),
        "adam_direction_bound": [sig(b) for b in bounds] if adamw else None,
        "f32_vs_f64_max_rel": dev_rel,
        "f32_vs_f64_max_rel_note": "per step, max over keys (noise_gradient_keys and the running_mean "
                                   "after them excluded) of max|f32 - f64| / RMS(f32 tensor)",
        "f32_vs_f64_max_abs": dev_abs,
        "f32_vs_f64_of_tolerance": dev_ratio,
        "keys": sorted(tensors),
    }
    if not adamw:
        del meta["adam_direction_bound"]
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / f"{name}.safetensors")
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    worst = max(dev_ratio.values())
    print(f"{name}: steps stored {steps_stored}, losses "
          f"{' '.join(f'{float(l):.4g}' for l in losses)}, f32-vs-f64 max rel per step "
          f"{' '.join(str(v) for v in dev_rel.values())}, at {100 * worst:.1f}% of the tolerance (worst)")
    if worst > 0.5:
        print(f"  WARNING: {name}: PyTorch's own float32 is not well inside the tolerance")


def make_trajectories(names):
    nets = {n.name: n for n in NETS}
    # Size of `after.*` per step and of the inputs, to apply the budget before writing.
    def size(net, n_after):
        state = sum(4 * math.prod(t.shape) if t.is_floating_point() else 8
                    for t in nn.Sequential(*[copy.deepcopy(m) for _, m in net.layers]).state_dict().values())
        return len(TRAJ_OPTIMIZERS) * (n_after * state + TRAJ_STEPS * 4 * math.prod(net.input_shape))
    full = sum(size(nets[n], TRAJ_STEPS) for n in TRAJ_NETS)
    few = full > TRAJ_BUDGET
    print(f"trajectory files: about {full / 1e6:.1f} MB with every step"
          + (f"; vgg_cifar stores steps {TRAJ_FEW_STEPS} only" if few else ""))
    for n in names or TRAJ_NETS:
        stored = TRAJ_FEW_STEPS if few and n == "vgg_cifar" else list(range(1, TRAJ_STEPS + 1))
        for opt in TRAJ_OPTIMIZERS:
            make_trajectory(nets[n], opt, stored)


def main():
    torch.use_deterministic_algorithms(True)
    args = sys.argv[1:]
    if "--trajectories" in args:
        wanted = [a for a in args if a != "--trajectories"]
        unknown = set(wanted) - set(TRAJ_NETS)
        if unknown:
            sys.exit(f"no trajectory for: {', '.join(sorted(unknown))} (have {', '.join(TRAJ_NETS)})")
        make_trajectories(wanted)
        return
    wanted = set(args)
    unknown = wanted - {n.name for n in NETS}
    if unknown:
        sys.exit(f"unknown fixture(s): {', '.join(sorted(unknown))}")
    for net in NETS:
        if not wanted or net.name in wanted:
            make(net)


if __name__ == "__main__":
    main()
