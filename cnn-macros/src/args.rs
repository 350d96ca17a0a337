//! Decodes raw layer entries into typed layers with PyTorch's defaults filled in.

use std::collections::BTreeMap;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{Ident, Lit};

use crate::ast::{Arg, Item, Value};
use crate::ctxt::Ctxt;
use crate::suggest;
use crate::symbol::{self, Param, ValueKind};

/// A value with the span of the tokens that gave it (the layer name when defaulted).
#[derive(Clone, Copy, Debug)]
pub struct Sp<T> {
    pub v: T,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub kind: LayerKind,
    pub name: Ident,
    /// The entry as written, for errors spanning the layer.
    pub tokens: TokenStream,
    /// The entry as written, normalised for display: `conv(3 -> 16, k3, p1)`.
    pub dsl: String,
}

#[derive(Clone, Debug)]
pub enum LayerKind {
    Conv(ConvArgs),
    /// `convtranspose`: the convolution's arguments, plus `output_padding`.
    ConvTranspose(ConvArgs, Sp<[usize; 2]>),
    Upsample(UpsampleArgs),
    BatchNorm(BatchNormArgs),
    Activation(Activation),
    Softmax,
    Pool(PoolArgs),
    GlobalPool(PoolKind),
    Flatten,
    Linear(LinearArgs),
    Dropout(f64),
    Identity,
    /// `residual(shortcut { … }) { … }`: `body(x) + shortcut(x)`.
    Residual(ResidualArgs),
    /// `concat { branch { … } … }`: the branches' outputs along channels.
    Concat(Vec<Branch>),
}

/// The two paths of a residual block.
#[derive(Clone, Debug)]
pub struct ResidualArgs {
    pub body: Vec<Layer>,
    /// `None` for the identity.
    pub shortcut: Option<Vec<Layer>>,
}

/// One `branch { … }` of a concat block (empty for the identity).
#[derive(Clone, Debug)]
pub struct Branch {
    pub layers: Vec<Layer>,
    /// The `branch` keyword.
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ConvArgs {
    pub c_in: Sp<usize>,
    pub c_out: Sp<usize>,
    pub kernel: Sp<[usize; 2]>,
    pub stride: Sp<[usize; 2]>,
    pub padding: Sp<[usize; 2]>,
    pub dilation: Sp<[usize; 2]>,
    pub groups: Sp<usize>,
    pub bias: bool,
}

/// `nn.Upsample` with integer factors.
#[derive(Clone, Debug)]
pub struct UpsampleArgs {
    pub scale: Sp<[usize; 2]>,
    /// `mode=bilinear`, else nearest.
    pub bilinear: bool,
    /// `align_corners`, when written (PyTorch accepts it only with an interpolating mode).
    pub align_corners: Option<Sp<bool>>,
}

#[derive(Clone, Debug)]
pub struct BatchNormArgs {
    /// `num_features`, when written.
    pub channels: Option<Sp<usize>>,
    pub eps: f64,
    pub momentum: f64,
    pub affine: bool,
    pub track_running_stats: bool,
}

/// `cnn_runtime::ops::activation::Activation`, with the slope kept in f64 until expansion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Silu,
    Gelu,
    Relu6,
    Hardswish,
    Hardsigmoid,
}

/// `cnn_runtime::ops::pool::PoolKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

#[derive(Clone, Debug)]
pub struct PoolArgs {
    pub kind: PoolKind,
    pub kernel: Sp<[usize; 2]>,
    pub stride: Sp<[usize; 2]>,
    pub padding: Sp<[usize; 2]>,
    pub ceil_mode: bool,
}

#[derive(Clone, Debug)]
pub struct LinearArgs {
    pub in_features: Option<Sp<usize>>,
    pub out_features: Sp<usize>,
    pub bias: bool,
}

/// `input(C, H, W)`.
pub fn decode_input(cx: &mut Ctxt, item: &Item) -> Option<[Sp<usize>; 3]> {
    let mut dims = Vec::new();
    for arg in &item.args {
        match arg {
            Arg::Positional(v) => dims.push(positive(cx, "input", v)?),
            other => {
                cx.error_at(
                    arg_span(other),
                    "`input` takes three positive numbers: `input(C, H, W)`",
                );
                return None;
            }
        }
    }
    match <[Sp<usize>; 3]>::try_from(dims) {
        Ok(dims) => Some(dims),
        Err(dims) => {
            cx.error_spanned(
                &item.tokens,
                format!(
                    "`input` takes three dimensions `input(C, H, W)`, found {}",
                    dims.len()
                ),
            );
            None
        }
    }
}

/// Decodes the layers of a list (the network's, or a block's), every problem reported; an
/// `input` inside a block is one of them.
pub fn decode_list(cx: &mut Ctxt, items: &[Item]) -> Vec<Layer> {
    let mut layers = Vec::with_capacity(items.len());
    for item in items {
        if item.name == symbol::INPUT {
            cx.error_at(
                item.name.span(),
                "`input(C, H, W)` belongs at the top of the network, not inside a block",
            );
            continue;
        }
        if let Some(layer) = decode(cx, item) {
            layers.push(layer);
        }
    }
    layers
}

/// Decodes one layer; `None` after reporting every problem with it.
pub fn decode(cx: &mut Ctxt, item: &Item) -> Option<Layer> {
    let name = item.name.to_string();
    let is = |names: &[&str]| names.contains(&name.as_str());
    if is(symbol::RESIDUAL) || is(symbol::CONCAT) || name == symbol::BRANCH {
        return block(cx, item);
    }
    if let Some(body) = &item.body {
        cx.error_at(
            body.span,
            format!("`{name}` takes no `{{ … }}` body; only `residual`, `concat` and `branch` hold layers"),
        );
        return None;
    }
    let before = cx.len();
    let kind = if is(symbol::CONV) {
        conv(cx, item, symbol::CONV_ARGS).map(|(c, _)| LayerKind::Conv(c))
    } else if is(symbol::CONV_TRANSPOSE) {
        conv(cx, item, symbol::CONV_TRANSPOSE_ARGS).map(|(c, a)| {
            let op = a.pair_or(symbol::OUTPUT_PADDING, [0, 0], item);
            LayerKind::ConvTranspose(c, op)
        })
    } else if is(symbol::UPSAMPLE) {
        upsample(cx, item)
    } else if is(symbol::BN) {
        let a = Args::decode(cx, item, symbol::BN_ARGS, false);
        Some(LayerKind::BatchNorm(BatchNormArgs {
            channels: a.int(symbol::NUM_FEATURES),
            eps: a.float_in(cx, symbol::EPS, 1e-5, Range::Positive),
            momentum: a.float_in(cx, symbol::MOMENTUM, 0.1, Range::Unit),
            affine: a.bool(symbol::AFFINE, true),
            track_running_stats: a.bool(symbol::TRACK_RUNNING_STATS, true),
        }))
    } else if is(symbol::LEAKY_RELU) {
        let a = Args::decode(cx, item, symbol::LEAKY_RELU_ARGS, false);
        Some(LayerKind::Activation(Activation::LeakyRelu(a.float_in(
            cx,
            symbol::NEGATIVE_SLOPE,
            0.01,
            Range::Any,
        ))))
    } else if is(symbol::MAXPOOL) || is(symbol::AVGPOOL) {
        pool(cx, item, is(symbol::MAXPOOL))
    } else if is(symbol::FC) {
        linear(cx, item)
    } else if is(symbol::DROPOUT) {
        let a = Args::decode(cx, item, symbol::DROPOUT_ARGS, false);
        Some(LayerKind::Dropout(a.float_in(
            cx,
            symbol::P,
            0.5,
            Range::Unit,
        )))
    } else {
        let simple = [
            (symbol::RELU, LayerKind::Activation(Activation::Relu)),
            (symbol::SIGMOID, LayerKind::Activation(Activation::Sigmoid)),
            (symbol::TANH, LayerKind::Activation(Activation::Tanh)),
            (symbol::SILU, LayerKind::Activation(Activation::Silu)),
            (symbol::GELU, LayerKind::Activation(Activation::Gelu)),
            (symbol::RELU6, LayerKind::Activation(Activation::Relu6)),
            (
                symbol::HARDSWISH,
                LayerKind::Activation(Activation::Hardswish),
            ),
            (
                symbol::HARDSIGMOID,
                LayerKind::Activation(Activation::Hardsigmoid),
            ),
            (symbol::SOFTMAX, LayerKind::Softmax),
            (
                symbol::GLOBAL_AVGPOOL,
                LayerKind::GlobalPool(PoolKind::Avg {
                    count_include_pad: true,
                }),
            ),
            (symbol::GLOBAL_MAXPOOL, LayerKind::GlobalPool(PoolKind::Max)),
            (symbol::FLATTEN, LayerKind::Flatten),
            (symbol::IDENTITY, LayerKind::Identity),
        ];
        match simple.into_iter().find(|(names, _)| is(names)) {
            Some((_, kind)) => {
                Args::decode(cx, item, symbol::NO_ARGS, false);
                Some(kind)
            }
            None => {
                let all = symbol::LAYERS
                    .iter()
                    .flat_map(|names| names.iter().copied());
                cx.error_at(
                    item.name.span(),
                    format!("unknown layer `{name}`{}", suggest::hint(&name, all)),
                );
                None
            }
        }
    };
    if cx.len() > before {
        return None;
    }
    Some(Layer {
        kind: kind?,
        name: item.name.clone(),
        tokens: item.tokens.clone(),
        dsl: pretty(&item.tokens),
    })
}

/// `residual { … }`, `residual(shortcut { … }) { … }` and `concat { branch { … } … }`.
fn block(cx: &mut Ctxt, item: &Item) -> Option<Layer> {
    let name = item.name.to_string();
    if name == symbol::BRANCH {
        cx.error_at(
            item.name.span(),
            "`branch { … }` goes inside `concat { … }`, one per concatenated path",
        );
        return None;
    }
    let residual = symbol::RESIDUAL.contains(&name.as_str());
    let Some(body) = &item.body else {
        let example = if residual {
            "`residual { conv(…) bn … }`"
        } else {
            "`concat { branch { … } branch { … } }`"
        };
        cx.error_spanned(
            &item.tokens,
            format!("`{name}` needs a body in braces, e.g. {example}"),
        );
        return None;
    };
    let before = cx.len();
    let mut shortcut: Option<Vec<Layer>> = None;
    for arg in &item.args {
        match arg {
            Arg::Block { key, body } if residual && key == symbol::SHORTCUT => {
                if shortcut.is_some() {
                    cx.error_at(key.span(), "duplicate `shortcut`; a residual block has one");
                } else if body.items.is_empty() {
                    cx.error_at(
                        body.span,
                        "empty `shortcut {}`; the identity shortcut is the default: write `residual { … }`",
                    );
                } else {
                    shortcut = Some(decode_list(cx, &body.items));
                }
            }
            other if residual => cx.error_at(
                arg_span(other),
                "`residual` takes one optional argument, `shortcut { … }`: `residual(shortcut { conv(64 -> 128, k1, s2) bn }) { … }`",
            ),
            other => cx.error_at(arg_span(other), "`concat` takes no arguments, only `branch { … }` entries in its body"),
        }
    }
    let kind = if residual {
        if body.items.is_empty() {
            cx.error_at(
                body.span,
                "empty residual body; `residual { … }` needs at least one layer (x + x is not a block)",
            );
        }
        let body = decode_list(cx, &body.items);
        LayerKind::Residual(ResidualArgs { body, shortcut })
    } else {
        if body.items.is_empty() {
            cx.error_at(
                body.span,
                "empty `concat {}`; it needs at least one `branch { … }`",
            );
        }
        let mut branches = Vec::with_capacity(body.items.len());
        for entry in &body.items {
            if entry.name != symbol::BRANCH {
                cx.error_at(
                    entry.name.span(),
                    format!(
                        "`concat` holds `branch {{ … }}` entries only, found `{}`; wrap the layers in `branch {{ … }}`",
                        entry.name
                    ),
                );
                continue;
            }
            if let Some(arg) = entry.args.first() {
                cx.error_at(arg_span(arg), "`branch` takes no arguments");
            }
            match &entry.body {
                Some(b) => branches.push(Branch {
                    layers: decode_list(cx, &b.items),
                    span: entry.name.span(),
                }),
                None => cx.error_at(
                    entry.name.span(),
                    "`branch` needs a body in braces: `branch { … }`, or `branch {}` for the identity",
                ),
            }
        }
        LayerKind::Concat(branches)
    };
    if cx.len() > before {
        return None;
    }
    let dsl = block_dsl(&kind);
    Some(Layer {
        kind,
        name: item.name.clone(),
        tokens: item.name.to_token_stream(),
        dsl,
    })
}

/// A block's head as `LayerInfo::dsl` shows it; the layers inside have rows of their own.
fn block_dsl(kind: &LayerKind) -> String {
    match kind {
        LayerKind::Residual(ResidualArgs { shortcut: None, .. }) => "residual { … }".into(),
        LayerKind::Residual(_) => "residual(shortcut { … }) { … }".into(),
        LayerKind::Concat(branches) => format!("concat {{ {} branches }}", branches.len()),
        _ => String::new(),
    }
}

/// The display text of the flatten the planner inserts before an `fc` on a feature map.
pub const IMPLICIT_FLATTEN: &str = "(implicit flatten)";

fn conv(cx: &mut Ctxt, item: &Item, params: &'static [Param]) -> Option<(ConvArgs, Args)> {
    let a = Args::decode(cx, item, params, true);
    let Some((c_in, c_out)) = a.given.arrow else {
        if !a.failed {
            cx.error_spanned(
                &item.tokens,
                format!(
                    "`{}` needs its channels as `IN -> OUT`, e.g. `{0}(3 -> 16, k3)`",
                    item.name
                ),
            );
        }
        return None;
    };
    let Some(kernel) = a.pair(symbol::KERNEL_SIZE) else {
        if !a.failed {
            cx.error_spanned(
                &item.tokens,
                format!(
                    "`{}` needs a kernel size, e.g. `k3`, `k(3, 5)` or `kernel_size=3`",
                    item.name
                ),
            );
        }
        return None;
    };
    let conv = ConvArgs {
        c_in,
        c_out,
        kernel,
        stride: a.pair_or(symbol::STRIDE, [1, 1], item),
        padding: a.pair_or(symbol::PADDING, [0, 0], item),
        dilation: a.pair_or(symbol::DILATION, [1, 1], item),
        groups: a.int(symbol::GROUPS).unwrap_or(Sp {
            v: 1,
            span: item.name.span(),
        }),
        bias: a.bool(symbol::BIAS, true),
    };
    Some((conv, a))
}

fn upsample(cx: &mut Ctxt, item: &Item) -> Option<LayerKind> {
    let a = Args::decode(cx, item, symbol::UPSAMPLE_ARGS, false);
    let Some(scale) = a.pair(symbol::SCALE_FACTOR) else {
        if !a.failed {
            cx.error_spanned(
                &item.tokens,
                format!(
                    "`{}` needs a scale factor, e.g. `{0}(2)`, `{0}((2, 3))` or `{0}(scale_factor=2, mode=bilinear)`",
                    item.name
                ),
            );
        }
        return None;
    };
    let align_corners = match a.given.values.get(symbol::ALIGN_CORNERS) {
        Some(&Sp {
            v: Decoded::Bool(b),
            span,
        }) => Some(Sp { v: b, span }),
        _ => None,
    };
    Some(LayerKind::Upsample(UpsampleArgs {
        scale,
        bilinear: a.name(symbol::MODE) == Some(symbol::BILINEAR),
        align_corners,
    }))
}

fn pool(cx: &mut Ctxt, item: &Item, max: bool) -> Option<LayerKind> {
    let params = if max {
        symbol::MAXPOOL_ARGS
    } else {
        symbol::AVGPOOL_ARGS
    };
    let a = Args::decode(cx, item, params, false);
    let Some(kernel) = a.pair(symbol::KERNEL_SIZE) else {
        if !a.failed {
            cx.error_spanned(
                &item.tokens,
                format!(
                    "`{}` needs a kernel size, e.g. `{0}(2)` or `{0}(k3, s2, p1)`",
                    item.name
                ),
            );
        }
        return None;
    };
    let kind = if max {
        PoolKind::Max
    } else {
        PoolKind::Avg {
            count_include_pad: a.bool(symbol::COUNT_INCLUDE_PAD, true),
        }
    };
    Some(LayerKind::Pool(PoolArgs {
        kind,
        stride: a.pair(symbol::STRIDE).unwrap_or(kernel),
        kernel,
        padding: a.pair_or(symbol::PADDING, [0, 0], item),
        ceil_mode: a.bool(symbol::CEIL_MODE, false),
    }))
}

fn linear(cx: &mut Ctxt, item: &Item) -> Option<LayerKind> {
    let a = Args::decode(cx, item, symbol::FC_ARGS, true);
    if a.given.repeats_arrow(cx) {
        return None;
    }
    let (in_features, out_features) = match (a.given.arrow, a.int(symbol::OUT_FEATURES)) {
        (Some((i, o)), _) => (Some(i), o),
        (None, Some(o)) => (a.int(symbol::IN_FEATURES), o),
        (None, None) => {
            if !a.failed {
                cx.error_spanned(
                    &item.tokens,
                    format!(
                        "`{}` needs its output size, e.g. `{0}(10)` or `{0}(4096 -> 10)`",
                        item.name
                    ),
                );
            }
            return None;
        }
    };
    Some(LayerKind::Linear(LinearArgs {
        in_features,
        out_features,
        bias: a.bool(symbol::BIAS, true),
    }))
}

#[derive(Clone, Copy, Debug)]
enum Decoded {
    Int(usize),
    Pair([usize; 2]),
    Float(f64),
    Bool(bool),
    Name(&'static str),
}

#[derive(Clone, Copy)]
enum Range {
    Any,
    Positive,
    Unit,
}

/// Each argument of a layer at most once, however it is spelled (serde's `Attr::set`):
/// `conv(3 -> 16, k3, stride=1, s2)` reports ``duplicate argument `stride` `` on `s2`.
#[derive(Default)]
struct Given {
    values: BTreeMap<&'static str, Sp<Decoded>>,
    /// `IN -> OUT`, an argument of its own.
    arrow: Option<(Sp<usize>, Sp<usize>)>,
}

impl Given {
    /// Whether `name` has no value yet; if it has one, reports the duplicate at `span`.
    fn vacant(&self, cx: &mut Ctxt, name: &str, span: Span) -> bool {
        if self.values.contains_key(name) {
            Given::duplicate(cx, name, span);
            return false;
        }
        true
    }

    fn set(&mut self, cx: &mut Ctxt, name: &'static str, v: Sp<Decoded>) {
        if self.vacant(cx, name, v.span) {
            self.values.insert(name, v);
        }
    }

    /// Whether `IN -> OUT` is still unset; if not, reports the duplicate at `span`.
    fn arrow_vacant(&self, cx: &mut Ctxt, span: Span) -> bool {
        if self.arrow.is_some() {
            cx.error_at(span, "duplicate `IN -> OUT` argument");
            return false;
        }
        true
    }

    /// `fc`'s `IN -> OUT` also gives `out_features` and `in_features`: `fc(4096 -> 10,
    /// out_features=10)` is reported on the `10` of the arrow, `fc(4096 -> 10, in_features=4096)`
    /// on the keyword's value.
    fn repeats_arrow(&self, cx: &mut Ctxt) -> bool {
        let Some((_, out)) = self.arrow else {
            return false;
        };
        let (name, span) = if self.values.contains_key(symbol::OUT_FEATURES) {
            (symbol::OUT_FEATURES, out.span)
        } else if let Some(given) = self.values.get(symbol::IN_FEATURES) {
            (symbol::IN_FEATURES, given.span)
        } else {
            return false;
        };
        Given::duplicate(cx, name, span);
        true
    }

    fn duplicate(cx: &mut Ctxt, name: &str, span: Span) {
        cx.error_at(span, format!("duplicate argument `{name}`"));
    }
}

/// The arguments of one layer, checked against its parameter table.
struct Args {
    given: Given,
    failed: bool,
}

impl Args {
    fn decode(cx: &mut Ctxt, item: &Item, params: &'static [Param], arrow_ok: bool) -> Args {
        let layer = item.name.to_string();
        let before = cx.len();
        let mut args = Args {
            given: Given::default(),
            failed: false,
        };
        let mut positional = 0usize;
        for arg in &item.args {
            match arg {
                Arg::Arrow { from, .. } if !arrow_ok => cx.error_at(
                    from.span(),
                    format!("`{layer}` takes no `IN -> OUT` argument"),
                ),
                Arg::Arrow { from, to } => args.arrow(cx, &layer, from, to, positional),
                Arg::Keyword { key, value } => {
                    let name = key.to_string();
                    match params
                        .iter()
                        .find(|p| p.name == name || p.short == Some(&*name))
                    {
                        Some(p) => args.set(cx, p, key.span(), value),
                        None => unknown_arg(cx, &layer, key, params),
                    }
                }
                Arg::Call { key, value } => {
                    let name = key.to_string();
                    match params
                        .iter()
                        .find(|p| p.short == Some(&*name) || p.name == name)
                    {
                        Some(p) => args.set(cx, p, key.span(), value),
                        None => unknown_arg(cx, &layer, key, params),
                    }
                }
                Arg::Bare(ident) => args.bare(cx, &layer, ident, params),
                Arg::Block { key, .. } => cx.error_at(
                    key.span(),
                    format!("`{layer}` takes no `{key} {{ … }}` argument; only `residual(shortcut {{ … }})` does"),
                ),
                Arg::Positional(value) if params.is_empty() => cx.error_at(
                    value.span(),
                    format!("`{layer}` takes no arguments, found `{}`", value.text()),
                ),
                Arg::Positional(value) => {
                    let skip = usize::from(
                        arrow_ok
                            && args.given.arrow.is_some()
                            && symbol::FC.contains(&layer.as_str()),
                    );
                    match params.get(positional + skip) {
                        Some(p) => args.set(cx, p, value.span(), value),
                        None => cx.error_at(
                            value.span(),
                            format!(
                                "too many positional arguments for `{layer}`; expected at most {}",
                                params.len().saturating_sub(skip)
                            ),
                        ),
                    }
                    positional += 1;
                }
            }
        }
        args.failed = cx.len() > before;
        args
    }

    fn arrow(&mut self, cx: &mut Ctxt, layer: &str, from: &Value, to: &Value, positional: usize) {
        if !self.given.arrow_vacant(cx, from.span()) {
            return;
        }
        if !self.given.values.is_empty() || positional > 0 {
            cx.error_at(from.span(), "`IN -> OUT` must be the first argument");
            return;
        }
        let what = if symbol::CONV.contains(&layer) || symbol::CONV_TRANSPOSE.contains(&layer) {
            "channels"
        } else {
            "features"
        };
        let i = positive(cx, &format!("input {what}"), from);
        let o = positive(cx, &format!("output {what}"), to);
        if let (Some(i), Some(o)) = (i, o) {
            self.given.arrow = Some((i, o));
        }
    }

    fn bare(&mut self, cx: &mut Ctxt, layer: &str, ident: &Ident, params: &'static [Param]) {
        let name = ident.to_string();
        if let Some(&(_, target, value)) = symbol::FLAGS.iter().find(|f| f.0 == name) {
            if let Some(p) = params.iter().find(|p| p.name == target) {
                self.insert(
                    cx,
                    p,
                    Sp {
                        v: Decoded::Bool(value),
                        span: ident.span(),
                    },
                );
                return;
            }
        }
        if let Some((p, word)) = params.iter().find_map(|p| match p.kind {
            ValueKind::Name(words) => words.iter().find(|w| **w == name).map(|w| (p, *w)),
            _ => None,
        }) {
            self.insert(
                cx,
                p,
                Sp {
                    v: Decoded::Name(word),
                    span: ident.span(),
                },
            );
            return;
        }
        if let Some(p) = params
            .iter()
            .find(|p| p.name == name && p.kind == ValueKind::Bool)
        {
            self.insert(
                cx,
                p,
                Sp {
                    v: Decoded::Bool(true),
                    span: ident.span(),
                },
            );
            return;
        }
        let split = name
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(name.len());
        let (prefix, digits) = name.split_at(split);
        let short = params.iter().find(|p| p.short == Some(prefix));
        match short {
            Some(p) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                let Ok(v) = digits.parse::<usize>() else {
                    cx.error_at(ident.span(), format!("`{name}`: {digits} is too large"));
                    return;
                };
                if v == 0 && matches!(p.kind, ValueKind::Positive | ValueKind::PositivePair) {
                    cx.error_at(
                        ident.span(),
                        format!("`{}` must be positive, found 0", p.name),
                    );
                    return;
                }
                let v = match p.kind {
                    ValueKind::Positive => Decoded::Int(v),
                    _ => Decoded::Pair([v, v]),
                };
                self.insert(
                    cx,
                    p,
                    Sp {
                        v,
                        span: ident.span(),
                    },
                );
            }
            _ => unknown_arg(cx, layer, ident, params),
        }
    }

    fn set(&mut self, cx: &mut Ctxt, p: &'static Param, key_span: Span, value: &Value) {
        if !self.given.vacant(cx, p.name, key_span) {
            return;
        }
        if let Some(v) = convert(cx, p, value) {
            self.insert(
                cx,
                p,
                Sp {
                    v,
                    span: value.span(),
                },
            );
        }
    }

    fn insert(&mut self, cx: &mut Ctxt, p: &'static Param, v: Sp<Decoded>) {
        self.given.set(cx, p.name, v);
    }

    fn int(&self, name: &str) -> Option<Sp<usize>> {
        match self.given.values.get(name)? {
            Sp {
                v: Decoded::Int(v),
                span,
            } => Some(Sp { v: *v, span: *span }),
            _ => None,
        }
    }

    fn pair(&self, name: &str) -> Option<Sp<[usize; 2]>> {
        match self.given.values.get(name)? {
            Sp {
                v: Decoded::Pair(v),
                span,
            } => Some(Sp { v: *v, span: *span }),
            _ => None,
        }
    }

    fn name(&self, name: &str) -> Option<&'static str> {
        match self.given.values.get(name)? {
            Sp {
                v: Decoded::Name(v),
                ..
            } => Some(v),
            _ => None,
        }
    }

    fn pair_or(&self, name: &str, default: [usize; 2], item: &Item) -> Sp<[usize; 2]> {
        self.pair(name).unwrap_or(Sp {
            v: default,
            span: item.name.span(),
        })
    }

    fn bool(&self, name: &str, default: bool) -> bool {
        match self.given.values.get(name) {
            Some(Sp {
                v: Decoded::Bool(b),
                ..
            }) => *b,
            _ => default,
        }
    }

    fn float_in(&self, cx: &mut Ctxt, name: &str, default: f64, range: Range) -> f64 {
        let Some(&Sp {
            v: Decoded::Float(v),
            span,
        }) = self.given.values.get(name)
        else {
            return default;
        };
        let ok = match range {
            Range::Any => true,
            Range::Positive => v > 0.0,
            Range::Unit => (0.0..=1.0).contains(&v),
        };
        if !ok {
            let want = match range {
                Range::Any => "finite",
                Range::Positive => "positive",
                Range::Unit => "between 0 and 1",
            };
            cx.error_at(span, format!("`{name}` must be {want}, found {v}"));
        }
        v
    }
}

fn unknown_arg(cx: &mut Ctxt, layer: &str, key: &Ident, params: &[Param]) {
    let name = key.to_string();
    if params.is_empty() {
        cx.error_at(
            key.span(),
            format!("`{layer}` takes no arguments, found `{name}`"),
        );
        return;
    }
    let mut known: Vec<&str> = params.iter().map(|p| p.name).collect();
    known.extend(params.iter().filter_map(|p| p.short));
    known.extend(
        symbol::FLAGS
            .iter()
            .filter(|f| params.iter().any(|p| p.name == f.1))
            .map(|f| f.0),
    );
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &name[..name.len() - digits.len()];
    let hint = match suggest::closest(&name, known.iter().copied()) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => match suggest::closest(prefix, params.iter().filter_map(|p| p.short)) {
            Some(c) if !digits.is_empty() => format!("; did you mean `{c}{digits}`?"),
            _ => {
                let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                format!("; expected one of {}", list.join(", "))
            }
        },
    };
    cx.error_at(
        key.span(),
        format!("unknown argument `{name}` for `{layer}`{hint}"),
    );
}

/// Checks a value against the kind its parameter takes.
fn convert(cx: &mut Ctxt, p: &Param, value: &Value) -> Option<Decoded> {
    let name = p.name;
    match p.kind {
        ValueKind::Positive => positive(cx, name, value).map(|s| Decoded::Int(s.v)),
        ValueKind::PositivePair | ValueKind::NonNegativePair => {
            let positive = p.kind == ValueKind::PositivePair;
            match value {
                Value::Tuple { elems, .. } if elems.len() == 2 => {
                    let h = integer(cx, name, &elems[0], positive);
                    let w = integer(cx, name, &elems[1], positive);
                    Some(Decoded::Pair([h?, w?]))
                }
                Value::Tuple { elems, .. } => {
                    cx.error_at(
                        value.span(),
                        format!(
                            "`{name}` expects an integer or a pair `(h, w)`, found {} values",
                            elems.len()
                        ),
                    );
                    None
                }
                _ => integer(cx, name, value, positive).map(|v| Decoded::Pair([v, v])),
            }
        }
        ValueKind::Float => {
            let (neg, lit) = match value {
                Value::Lit(l) => (false, l),
                Value::Neg(_, l) => (true, l),
                _ => return wrong_kind(cx, name, "a number", value),
            };
            let v = match lit {
                Lit::Float(f) => f.base10_parse::<f64>(),
                Lit::Int(i) => i.base10_parse::<f64>(),
                _ => return wrong_kind(cx, name, "a number", value),
            };
            match v {
                Ok(v) if v.is_finite() && (v as f32).is_finite() => {
                    Some(Decoded::Float(if neg { -v } else { v }))
                }
                Ok(_) => {
                    cx.error_at(
                        value.span(),
                        format!("`{name}` must be a finite 32-bit float"),
                    );
                    None
                }
                Err(e) => {
                    cx.push(e);
                    None
                }
            }
        }
        ValueKind::Bool => match value {
            Value::Lit(Lit::Bool(b)) => Some(Decoded::Bool(b.value)),
            Value::Ident(i) if i == "True" || i == "False" => {
                cx.error_at(
                    i.span(),
                    format!(
                        "`{name}` expects `true` or `false`, found `{i}`; write it in lowercase, as in Rust"
                    ),
                );
                None
            }
            _ => wrong_kind(cx, name, "`true` or `false`", value),
        },
        ValueKind::Name(words) => {
            let written = match value {
                Value::Ident(i) => Some(i.to_string()),
                Value::Lit(Lit::Str(s)) => Some(s.value()),
                _ => None,
            };
            match written.and_then(|w| words.iter().find(|x| **x == w)) {
                Some(w) => Some(Decoded::Name(w)),
                None => {
                    let list: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                    wrong_kind(cx, name, &format!("one of {}", list.join(", ")), value)
                }
            }
        }
    }
}

fn wrong_kind<T>(cx: &mut Ctxt, name: &str, want: &str, value: &Value) -> Option<T> {
    cx.error_at(
        value.span(),
        format!("`{name}` expects {want}, found `{}`", value.text()),
    );
    None
}

fn positive(cx: &mut Ctxt, name: &str, value: &Value) -> Option<Sp<usize>> {
    integer(cx, name, value, true).map(|v| Sp {
        v,
        span: value.span(),
    })
}

/// `kernel_size` in backticks, a phrase such as "output channels" as is.
fn quoted(name: &str) -> String {
    if name.contains(' ') {
        name.to_string()
    } else {
        format!("`{name}`")
    }
}

fn integer(cx: &mut Ctxt, name: &str, value: &Value, positive: bool) -> Option<usize> {
    let name = quoted(name);
    let want = if positive {
        "a positive integer"
    } else {
        "a non-negative integer"
    };
    match value {
        Value::Lit(Lit::Int(i)) => match i.base10_parse::<usize>() {
            Ok(0) if positive => {
                cx.error_at(i.span(), format!("{name} must be positive, found 0"));
                None
            }
            Ok(v) => Some(v),
            Err(_) => {
                cx.error_at(
                    i.span(),
                    format!("{name} value {} is too large", i.base10_digits()),
                );
                None
            }
        },
        Value::Neg(_, Lit::Int(i)) if i.base10_digits().bytes().all(|b| b == b'0') && !positive => {
            Some(0)
        }
        Value::Neg(_, l) => {
            cx.error_at(
                value.span(),
                format!(
                    "{name} must be {}, found -{}",
                    if positive { "positive" } else { "non-negative" },
                    quote::ToTokens::to_token_stream(l)
                ),
            );
            None
        }
        _ => {
            cx.error_at(
                value.span(),
                format!("{name} expects {want}, found `{}`", value.text()),
            );
            None
        }
    }
}

fn arg_span(arg: &Arg) -> Span {
    match arg {
        Arg::Arrow { from, .. } => from.span(),
        Arg::Keyword { key, .. } | Arg::Call { key, .. } => key.span(),
        Arg::Bare(i) => i.span(),
        Arg::Positional(v) => v.span(),
        Arg::Block { key, .. } => key.span(),
    }
}

/// `conv (3 -> 16 , k3)` as `conv(3 -> 16, k3)`.
pub fn pretty(tokens: &TokenStream) -> String {
    let mut out = String::new();
    for tt in tokens.clone() {
        match tt {
            proc_macro2::TokenTree::Group(g) => {
                out.push('(');
                out.push_str(&pretty_inner(&g.stream()));
                out.push(')');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

fn pretty_inner(tokens: &TokenStream) -> String {
    let mut out = String::new();
    let mut prev_minus = false;
    for tt in tokens.clone() {
        match &tt {
            proc_macro2::TokenTree::Group(g) => {
                out.push('(');
                out.push_str(&pretty_inner(&g.stream()));
                out.push(')');
            }
            proc_macro2::TokenTree::Punct(p) => match p.as_char() {
                ',' => out.push_str(", "),
                '-' if p.spacing() == proc_macro2::Spacing::Joint => {
                    out.push_str(" -");
                    prev_minus = true;
                    continue;
                }
                '>' if prev_minus => out.push_str("> "),
                c => out.push(c),
            },
            other => out.push_str(&other.to_token_stream().to_string()),
        }
        prev_minus = false;
    }
    out
}
