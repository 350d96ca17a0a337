//! Every layer and argument name the DSL knows, in one table read by the parser, the argument
//! decoder and the "did you mean" hints.

pub const INPUT: &str = "input";

pub const CONV: &[&str] = &["conv", "conv2d"];
pub const CONV_TRANSPOSE: &[&str] = &["convtranspose", "convt", "conv_transpose2d"];
pub const UPSAMPLE: &[&str] = &["upsample"];
pub const BN: &[&str] = &["bn", "batchnorm", "batchnorm2d"];
pub const RELU: &[&str] = &["relu"];
pub const RELU6: &[&str] = &["relu6"];
pub const LEAKY_RELU: &[&str] = &["leakyrelu", "leaky_relu"];
pub const SIGMOID: &[&str] = &["sigmoid"];
pub const TANH: &[&str] = &["tanh"];
pub const SILU: &[&str] = &["swish", "silu"];
pub const GELU: &[&str] = &["gelu"];
pub const HARDSWISH: &[&str] = &["hardswish", "hard_swish"];
pub const HARDSIGMOID: &[&str] = &["hardsigmoid", "hard_sigmoid"];
pub const SOFTMAX: &[&str] = &["softmax"];
pub const MAXPOOL: &[&str] = &["maxpool", "maxpool2d"];
pub const AVGPOOL: &[&str] = &["avgpool", "avgpool2d"];
pub const GLOBAL_AVGPOOL: &[&str] = &["globalavgpool", "gap", "global_avg_pool"];
pub const GLOBAL_MAXPOOL: &[&str] = &["globalmaxpool", "gmp", "global_max_pool"];
pub const FLATTEN: &[&str] = &["flatten"];
pub const FC: &[&str] = &["fc", "linear", "dense"];
pub const DROPOUT: &[&str] = &["dropout"];
pub const IDENTITY: &[&str] = &["identity"];
pub const RESIDUAL: &[&str] = &["residual"];
pub const CONCAT: &[&str] = &["concat"];
pub const BRANCH: &str = "branch";
pub const SHORTCUT: &str = "shortcut";

/// All layer names, for "did you mean" hints.
pub const LAYERS: &[&[&str]] = &[
    &[INPUT],
    CONV,
    CONV_TRANSPOSE,
    UPSAMPLE,
    BN,
    RELU,
    RELU6,
    LEAKY_RELU,
    SIGMOID,
    TANH,
    SILU,
    GELU,
    HARDSWISH,
    HARDSIGMOID,
    SOFTMAX,
    MAXPOOL,
    AVGPOOL,
    GLOBAL_AVGPOOL,
    GLOBAL_MAXPOOL,
    FLATTEN,
    FC,
    DROPOUT,
    IDENTITY,
    RESIDUAL,
    CONCAT,
    &[BRANCH],
];

/// What values an argument takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A positive integer.
    Positive,
    /// A positive integer or a pair `(h, w)` of them.
    PositivePair,
    /// A non-negative integer or a pair `(h, w)` of them.
    NonNegativePair,
    /// A number (integer or float).
    Float,
    /// `true` or `false`.
    Bool,
    /// One of these bare names, e.g. `mode=nearest`.
    Name(&'static [&'static str]),
}

/// One argument a layer accepts.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// The PyTorch keyword, the canonical name.
    pub name: &'static str,
    /// The DSL short form written glued to the number, `k3`, or called with a pair, `k(3, 5)`.
    pub short: Option<&'static str>,
    pub kind: ValueKind,
}

const fn param(name: &'static str, short: Option<&'static str>, kind: ValueKind) -> Param {
    Param { name, short, kind }
}

use ValueKind::*;

pub const KERNEL_SIZE: &str = "kernel_size";
pub const STRIDE: &str = "stride";
pub const PADDING: &str = "padding";
pub const DILATION: &str = "dilation";
pub const GROUPS: &str = "groups";
pub const BIAS: &str = "bias";
pub const NUM_FEATURES: &str = "num_features";
pub const EPS: &str = "eps";
pub const MOMENTUM: &str = "momentum";
pub const AFFINE: &str = "affine";
pub const TRACK_RUNNING_STATS: &str = "track_running_stats";
pub const NEGATIVE_SLOPE: &str = "negative_slope";
pub const CEIL_MODE: &str = "ceil_mode";
pub const COUNT_INCLUDE_PAD: &str = "count_include_pad";
pub const IN_FEATURES: &str = "in_features";
pub const OUT_FEATURES: &str = "out_features";
pub const P: &str = "p";
pub const OUTPUT_PADDING: &str = "output_padding";
pub const SCALE_FACTOR: &str = "scale_factor";
pub const MODE: &str = "mode";
pub const ALIGN_CORNERS: &str = "align_corners";
pub const NEAREST: &str = "nearest";
pub const BILINEAR: &str = "bilinear";

/// Bare flags: `nobias` means `bias=false`, `ceil` means `ceil_mode=true`.
pub const FLAGS: &[(&str, &str, bool)] = &[("nobias", BIAS, false), ("ceil", CEIL_MODE, true)];

/// `conv(IN -> OUT, …)`, positional after the channels in PyTorch's order.
pub const CONV_ARGS: &[Param] = &[
    param(KERNEL_SIZE, Some("k"), PositivePair),
    param(STRIDE, Some("s"), PositivePair),
    param(PADDING, Some("p"), NonNegativePair),
    param(DILATION, Some("d"), PositivePair),
    param(GROUPS, Some("g"), Positive),
    param(BIAS, None, Bool),
];

/// `convtranspose(IN -> OUT, …)`, positional after the channels in PyTorch's order
/// (`nn.ConvTranspose2d(in, out, kernel_size, stride, padding, output_padding, groups, bias,
/// dilation)`).
pub const CONV_TRANSPOSE_ARGS: &[Param] = &[
    param(KERNEL_SIZE, Some("k"), PositivePair),
    param(STRIDE, Some("s"), PositivePair),
    param(PADDING, Some("p"), NonNegativePair),
    param(OUTPUT_PADDING, None, NonNegativePair),
    param(GROUPS, Some("g"), Positive),
    param(BIAS, None, Bool),
    param(DILATION, Some("d"), PositivePair),
];

/// `upsample(2)`, `upsample(scale_factor=(2, 3), mode=bilinear, align_corners=true)`.
pub const UPSAMPLE_ARGS: &[Param] = &[
    param(SCALE_FACTOR, None, PositivePair),
    param(MODE, None, Name(&[NEAREST, BILINEAR])),
    param(ALIGN_CORNERS, None, Bool),
];

pub const BN_ARGS: &[Param] = &[
    param(NUM_FEATURES, None, Positive),
    param(EPS, None, Float),
    param(MOMENTUM, None, Float),
    param(AFFINE, None, Bool),
    param(TRACK_RUNNING_STATS, None, Bool),
];

pub const LEAKY_RELU_ARGS: &[Param] = &[param(NEGATIVE_SLOPE, None, Float)];

pub const MAXPOOL_ARGS: &[Param] = &[
    param(KERNEL_SIZE, Some("k"), PositivePair),
    param(STRIDE, Some("s"), PositivePair),
    param(PADDING, Some("p"), NonNegativePair),
    param(CEIL_MODE, None, Bool),
];

pub const AVGPOOL_ARGS: &[Param] = &[
    param(KERNEL_SIZE, Some("k"), PositivePair),
    param(STRIDE, Some("s"), PositivePair),
    param(PADDING, Some("p"), NonNegativePair),
    param(CEIL_MODE, None, Bool),
    param(COUNT_INCLUDE_PAD, None, Bool),
];

/// `fc(OUT)` or `fc(IN -> OUT)`; the first positional is `out_features`.
pub const FC_ARGS: &[Param] = &[
    param(OUT_FEATURES, None, Positive),
    param(BIAS, None, Bool),
    param(IN_FEATURES, None, Positive),
];

pub const DROPOUT_ARGS: &[Param] = &[param(P, None, Float)];

pub const NO_ARGS: &[Param] = &[];
