#!/usr/bin/env python3
"""Write the PyTorch golden fixtures of `tests/data/`: one network per fixture, three files each.

Every network is declared here twice, side by side: the `cnn!` layer text of each layer and the
PyTorch module it stands for. From them this script builds the `nn.Sequential` twin, gives it
seeded weights (BatchNorm gets non-trivial affine parameters and running statistics), draws a
standard-normal input batch, and stores what PyTorch computes:

  NAME.json              the network (dsl, torch repr, per-module layer text and output shape,
                         state_dict keys), tolerances, the f32-vs-f64 error of PyTorch itself
  NAME.safetensors       the state_dict, exactly as `model.state_dict()` saves it
  NAME.io.safetensors    input, eval output, and the training-mode quantities (output, running
                         statistics after one step, loss, gradients) for the training work

`tests/data/README.md` documents every key and the tolerance rule. The tests never run this
script (nor PyTorch); they read the committed files.

Run (by hand, never in CI):
    pip install torch==2.15.0 safetensors numpy
    python3 tools/make_fixtures.py            # all fixtures
    python3 tools/make_fixtures.py tiny_net   # some of them
"""
import copy
import json
import math
import pathlib
import sys
import zlib

import torch
from safetensors.torch import save_file
from torch import nn

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"

# A layer: its `cnn!` text and its PyTorch module. `FLAT` is the flatten the macro inserts before
# the first `fc` on a feature map: it is a module of the Sequential (indices count it) but not
# part of the dsl text.
FLAT = "(implicit flatten)"


class Net:
    """One fixture: name, Rust struct name, input batch shape, layers, dsl separator, and the
    standard deviation of the input batch (larger than 1 where the values must reach a kink, such
    as relu6's at 6)."""

    def __init__(self, name, struct, input_shape, layers, sep=" ", input_std=1.0):
        self.name = name
        self.struct = struct
        self.input_shape = input_shape
        self.layers = layers
        self.sep = sep
        self.input_std = input_std

    def dsl(self):
        c, h, w = self.input_shape[1:]
        texts = [f"input({c}, {h}, {w})"] + [t for t, _ in self.layers if t != FLAT]
        return self.sep.join(texts)


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


def kind(text):
    """The layer's kind: the layer name of its dsl text (`flatten` for the implicit one)."""
    return "flatten" if text == FLAT else text.split("(")[0]


def rms(t):
    return math.sqrt(float((t.double() ** 2).mean())) if t.numel() else 0.0


def sig(x):
    """Three significant digits, so that the json stays readable."""
    return float(f"{x:.3g}")


def init(model, gen):
    """Seeded, non-trivial parameters. Conv and fc weights are He-normal (std sqrt(2 / fan_in)),
    so that activations stay of order one through the depth and an error in a late layer is not
    hidden by shrinking values; biases N(0, 0.1). BatchNorm gets random affine parameters and
    running statistics."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in)
            if m.bias is not None:
                m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.affine:
                m.weight.data = 0.5 + torch.rand(c, generator=gen)
                m.bias.data = 0.2 * torch.randn(c, generator=gen)
            if m.track_running_stats:
                m.running_mean.data = 0.2 * torch.randn(c, generator=gen)
                m.running_var.data = 0.5 + torch.rand(c, generator=gen)
                m.num_batches_tracked.data = torch.tensor(3, dtype=torch.long)


def training_step(model, x, loss_of):
    """Training-mode forward (Dropout as the identity, so the result is deterministic), loss,
    backward. Returns the output, the loss, the gradients and the updated running stats."""
    model = copy.deepcopy(model)
    for i, m in enumerate(model):
        if isinstance(m, nn.Dropout):
            model[i] = nn.Identity()
    model.train()
    model.zero_grad()
    out = model(x)
    loss = loss_of(out)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    stats = {}
    for i, m in enumerate(model):
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            stats[f"after.{i}.running_mean"] = m.running_mean.detach().clone()
            stats[f"after.{i}.running_var"] = m.running_var.detach().clone()
    return out.detach(), loss.detach(), grads, stats


def make(net):
    seed = zlib.crc32(net.name.encode())
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[copy.deepcopy(m) for _, m in net.layers])
    init(model, gen)
    model.eval()
    x = torch.randn(net.input_shape, generator=gen)
    if net.input_std != 1.0:
        x = net.input_std * x

    with torch.no_grad():
        out = model(x)
        out64 = copy.deepcopy(model).double()(x.double())
        shapes, h = [], x[:1]
        for m in model:
            h = m(h)
            shapes.append(list(h.shape[1:]))

    io = {"input": x, "output": out}
    f64 = {"output": out - out64}
    classifier = out.dim() == 2
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

    depth = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in model)
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
        "modules": [
            {
                "index": i,
                "layer": text,
                "kind": kind(text),
                "implicit": text == FLAT,
                "torch": repr(m),
                "out_shape": shapes[i],
            }
            for i, ((text, _), m) in enumerate(zip(net.layers, model))
        ],
        "state_dict": {
            k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
            for k, v in state.items()
        },
        "io_keys": sorted(io),
        "tolerances": tolerances,
        "loss": ("nll_loss(log(train_output), target)" if classifier and isinstance(model[-1], nn.Softmax)
                 else "cross_entropy(train_output, target)" if classifier
                 else "mean(train_output ** 2) / 2"),
        "train_mode": "BatchNorm in training mode (batch statistics, biased variance for "
                      "normalisation, running stats updated with unbiased variance); Dropout as identity",
        "seed": seed,
        "torch_version": torch.__version__.split("+")[0],
        "f32_vs_f64_max_abs": {k: sig(float(d.abs().max())) for k, d in f64.items()},
    }
    if net.input_std != 1.0:
        meta["input_std"] = net.input_std
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, OUT / f"{net.name}.safetensors")
    save_file({k: v.contiguous() for k, v in io.items()}, OUT / f"{net.name}.io.safetensors")
    (OUT / f"{net.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    worst = max(meta["f32_vs_f64_max_abs"][k] / max(tolerances[k]["atol"], 1e-30) for k in tolerances)
    print(f"{net.name}: {len(state)} tensors, output {list(out.shape)}, "
          f"PyTorch f32 vs f64 at {100 * worst:.1f}% of the tolerance (worst key)")


def main():
    torch.use_deterministic_algorithms(True)
    wanted = set(sys.argv[1:])
    unknown = wanted - {n.name for n in NETS}
    if unknown:
        sys.exit(f"unknown fixture(s): {', '.join(sorted(unknown))}")
    for net in NETS:
        if not wanted or net.name in wanted:
            make(net)


if __name__ == "__main__":
    main()
