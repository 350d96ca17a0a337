//! What a network costs, computed at expansion time, and `#[budget(...)]` checked against it.
//!
//! - **RAM** is exactly what `forward_in` needs: `4 × (WORKSPACE_LEN + INPUT_LEN + OUTPUT_LEN)`
//!   bytes. The workspace is the [`Layout`] computed here with the runtime's own `scratch_len`
//!   functions (the descriptors are built as `expand` emits them); `expand` emits it as
//!   literals, so the generated `WORKSPACE_LEN` is this figure.
//! - **Flash** is the weights plus a code estimate: with `#[weights]`, the bytes of the
//!   `__CORE` blob `prepare` lays out (what a `no_std` build keeps), else `4 × PARAMS`; the code
//!   is the sum of [`CODE_SIZES`] over the kernels the network uses.
//! - **MACs** are the network's `MACS` per sample.
//!
//! Every figure uses checked arithmetic, and the runtime's `const fn`s (which do not check) are
//! called only on descriptors whose generous `u128` bound fits in `usize` ([`fits`]), so an
//! absurd network is an error and never a panic.

use quote::ToTokens;
use syn::Lit;

use cnn_runtime::__private::{
    Conv2dParams, ConvTranspose2dParams, Pool2dParams, PoolKind as RtPoolKind,
};

use crate::args::{ConvArgs, LayerKind, PoolKind};
use crate::ast::{Budget, Limit, Network};
use crate::shape::{Block, Plan, Planned};
use crate::tensor::Shape;

// ---------------------------------------------------------------------------------------------
// Values of `#[budget(...)]`

/// A byte size: `65536`, `"65536"`, `"64K"` or `64K`, `"1M"`, `"2G"` (also `KiB`, `MiB`,
/// `GiB`), 1024-based, whole numbers only.
pub fn parse_size(lit: &Lit) -> Result<usize, String> {
    size_str(&lit_text(lit)?)
}

/// A count: `5_000_000`, `"5000000"`; no unit.
pub fn parse_count(lit: &Lit) -> Result<usize, String> {
    let text = lit_text(lit)?;
    let (digits, unit) = split_unit(&text);
    if !unit.is_empty() {
        return Err(format!(
            "a count of multiply-accumulates is a whole number such as `5_000_000`, found `{text}` (units are for byte sizes)"
        ));
    }
    number(digits, &text)
}

/// The literal's text: a string's contents, or an integer's digits and suffix (`64K` lexes as
/// the integer 64 with the suffix `K`).
fn lit_text(lit: &Lit) -> Result<String, String> {
    match lit {
        Lit::Str(s) => Ok(s.value()),
        Lit::Int(i) => Ok(format!("{}{}", i.base10_digits(), i.suffix())),
        Lit::Float(f) => Err(format!(
            "expected a whole number, found `{}` (no fractions: write `\"1536K\"` for 1.5M)",
            f.to_token_stream()
        )),
        other => Err(format!(
            "expected a size such as `\"64K\"` or a number such as `65536`, found `{}`",
            other.to_token_stream()
        )),
    }
}

/// `"64K"` → 65536.
fn size_str(text: &str) -> Result<usize, String> {
    let (digits, unit) = split_unit(text);
    let n = number(digits, text)?;
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "`{text}` is not a whole number of bytes (no fractions: write `\"1536K\"` for 1.5M)"
        ));
    }
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: a size is a whole number of bytes, optionally followed by `K`, `M` or `G` (1024-based: `64K` is 65,536 bytes)"
            ))
        }
    };
    n.checked_mul(1usize << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `("64", "K")` from `"64K"`: the leading digits and underscores, and the rest.
fn split_unit(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Digits (with `_` separators) as a `usize`, checked.
fn number(digits: &str, text: &str) -> Result<usize, String> {
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("expected a whole number, found `{text}`"));
    }
    let mut n: usize = 0;
    for d in digits.bytes().filter(|&b| b != b'_') {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// The workspace

/// `WorkspaceLayout` as numbers: what `expand` emits as literals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub activations: usize,
    pub scratch: usize,
    pub channels: usize,
    pub stack: Vec<usize>,
}

impl Layout {
    /// `WorkspaceLayout::sample_len`, checked: `2·activations + scratch + 2·channels + Σ stack`.
    pub fn sample_len(&self) -> Option<usize> {
        let stack = self
            .stack
            .iter()
            .try_fold(0usize, |sum, &s| sum.checked_add(s))?;
        self.activations
            .checked_mul(2)?
            .checked_add(self.scratch)?
            .checked_add(self.channels.checked_mul(2)?)?
            .checked_add(stack)
    }
}

/// The layout of `plan`'s workspace; `Err` names a layer whose scratch is too large to
/// compute.
pub fn layout(plan: &Plan) -> Result<Layout, (&Planned, String)> {
    let all = plan.all();
    let activations = all
        .iter()
        .map(|l| l.output.len())
        .fold(plan.input.iter().product(), usize::max);
    let mut scratch = 0;
    for l in &all {
        let len = scratch_len(l).ok_or_else(|| {
            (
                *l,
                format!(
                    "`{}` is too large: its scratch buffer does not fit in `usize`",
                    l.layer.name
                ),
            )
        })?;
        scratch = scratch.max(len);
    }
    let channels = all
        .iter()
        .map(|l| match &l.layer.kind {
            LayerKind::Conv(a) | LayerKind::ConvTranspose(a, _) => a.c_out.v,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let mut stack = Vec::new();
    stack_sizes(&plan.layers, 0, &mut stack);
    Ok(Layout {
        activations,
        scratch,
        channels,
        stack,
    })
}

/// The layer's scratch for one sample, by the runtime's own functions (a convolution's
/// `forward_scratch_len`, what its algorithm uses; the others' `scratch_len`); `None` when the
/// descriptor is too large to compute it without overflow.
fn scratch_len(l: &Planned) -> Option<usize> {
    match &l.layer.kind {
        LayerKind::Conv(a) => {
            let p = conv2d_params(l, a);
            fits(conv_bound(&p)).then(|| p.forward_scratch_len())
        }
        LayerKind::ConvTranspose(a, op) => {
            let p = conv_transpose_params(l, a, op.v);
            fits(conv_transpose_bound(&p)).then(|| p.scratch_len())
        }
        LayerKind::Pool(_) | LayerKind::GlobalPool(_) => {
            let p = pool_params(l)?;
            let bound = (p.kernel[0] as u128 + 2) * (p.out_hw[1] as u128 + 1);
            fits(bound).then(|| p.scratch_len())
        }
        _ => Some(0),
    }
}

/// Whether a `u128` bound of a `usize` computation fits in `usize`.
pub fn fits(bound: u128) -> bool {
    bound <= usize::MAX as u128
}

/// A bound of every intermediate of `Conv2dParams::forward_scratch_len` (and `scratch_len`:
/// im2col, depthwise, direct, Winograd): each is a sum of at most 38 products of a channel count, a padded height, a
/// padded width (plus the kernel's reach and one block of slack) and the kernel and stride.
fn conv_bound(p: &Conv2dParams) -> u128 {
    let u = |x: usize| x as u128;
    let reach = |i| u(p.kernel[i]) * u(p.dilation[i]);
    let h = u(p.in_hw[0]) + 2 * u(p.padding[0]) + reach(0) + u(p.out_hw[0]) + 1;
    let w = u(p.in_hw[1]) + 2 * u(p.padding[1]) + reach(1) + u(p.out_hw[1]) + 64;
    (u(p.c_in) + u(p.c_out) + 1)
        .saturating_mul(h)
        .saturating_mul(w)
        .saturating_mul(u(p.kernel[0]) * u(p.kernel[1]) + 1)
        .saturating_mul(u(p.stride[0]) + u(p.stride[1]) + 1)
        .saturating_mul(64)
}

/// A bound of `ConvTranspose2dParams::scratch_len`: its weights plus one group's columns.
fn conv_transpose_bound(p: &ConvTranspose2dParams) -> u128 {
    let u = |x: usize| x as u128;
    (u(p.c_in) + 1)
        .saturating_mul(u(p.c_out) + 1)
        .saturating_mul(u(p.kernel[0]) * u(p.kernel[1]) + 1)
        .saturating_mul(u(p.in_hw[0]) * u(p.in_hw[1]) + 1)
        .saturating_mul(2)
}

/// `[H, W]` of a shape (`[1, 1]` for a flat tensor), as `expand::parts` takes it.
fn hw(s: Shape) -> [usize; 2] {
    match s {
        Shape::Chw { h, w, .. } => [h, w],
        Shape::Flat(_) => [1, 1],
    }
}

/// The descriptor `expand` emits for a `conv` (and `prepare` builds).
fn conv2d_params(l: &Planned, a: &ConvArgs) -> Conv2dParams {
    Conv2dParams {
        c_in: a.c_in.v,
        c_out: a.c_out.v,
        groups: a.groups.v,
        kernel: a.kernel.v,
        stride: a.stride.v,
        padding: a.padding.v,
        dilation: a.dilation.v,
        in_hw: hw(l.input),
        out_hw: hw(l.output),
    }
}

/// The descriptor `expand` emits for a `convtranspose`.
fn conv_transpose_params(
    l: &Planned,
    a: &ConvArgs,
    output_padding: [usize; 2],
) -> ConvTranspose2dParams {
    ConvTranspose2dParams {
        c_in: a.c_in.v,
        c_out: a.c_out.v,
        groups: a.groups.v,
        kernel: a.kernel.v,
        stride: a.stride.v,
        padding: a.padding.v,
        output_padding,
        dilation: a.dilation.v,
        in_hw: hw(l.input),
        out_hw: hw(l.output),
    }
}

/// The descriptor `expand` emits for a windowed or global pool.
fn pool_params(l: &Planned) -> Option<Pool2dParams> {
    let kind = |k: PoolKind| match k {
        PoolKind::Max => RtPoolKind::Max,
        PoolKind::Avg { count_include_pad } => RtPoolKind::Avg { count_include_pad },
    };
    let channels = l.input.dims()[0];
    let in_hw = hw(l.input);
    match &l.layer.kind {
        LayerKind::Pool(a) => Some(Pool2dParams {
            kind: kind(a.kind),
            channels,
            kernel: a.kernel.v,
            stride: a.stride.v,
            padding: a.padding.v,
            ceil_mode: a.ceil_mode,
            in_hw,
            out_hw: hw(l.output),
        }),
        LayerKind::GlobalPool(k) => Some(Pool2dParams {
            kind: kind(*k),
            channels,
            kernel: in_hw,
            stride: in_hw,
            padding: [0, 0],
            ceil_mode: false,
            in_hw,
            out_hw: [1, 1],
        }),
        _ => None,
    }
}

/// The largest tensor (elements per sample) each depth of the executor's stack holds: a residual
/// keeps its input there (then its shortcut's output), a concat its input and, one deeper, its
/// output as the branches fill it.
fn stack_sizes(layers: &[Planned], depth: usize, sizes: &mut Vec<usize>) {
    fn hold(sizes: &mut Vec<usize>, d: usize, len: usize) {
        if sizes.len() <= d {
            sizes.resize(d + 1, 0);
        }
        sizes[d] = sizes[d].max(len);
    }
    for l in layers {
        match &l.block {
            None => {}
            Some(Block::Residual { body, shortcut }) => {
                hold(sizes, depth, l.input.len());
                if let Some(sc) = shortcut {
                    hold(sizes, depth, l.output.len());
                    stack_sizes(sc, depth + 1, sizes);
                }
                stack_sizes(body, depth + 1, sizes);
            }
            Some(Block::Concat(branches)) => {
                hold(sizes, depth, l.input.len());
                hold(sizes, depth + 1, l.output.len());
                for b in branches {
                    stack_sizes(b, depth + 2, sizes);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The code estimate

/// A piece of the runtime a network may link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    Executor,
    Conv,
    BatchNorm,
    Gemm,
    ConvTranspose,
    Linear,
    Pool,
    Activation,
    Softmax,
    Upsample,
    Blocks,
}

/// Bytes of code each kernel adds to a linked x86-64 release `no_std` program (SSE2 baseline,
/// no `target-feature`s, no LTO, `panic = "abort"`, Rust 1.95.0): **an estimate, for x86-64
/// only**. A Cortex-M build differs (Thumb-2 is typically smaller), and so do AVX builds and
/// LTO (which const-propagates the embedded descriptors: the digits program drops from 104 KB
/// to 67 KB of code).
///
/// Measured on 2026-12-05 by difference: one `no_std` static library per network (`cnn` with
/// `default-features = false`, `#[weights]` and `static NET = Net::EMBEDDED`, one `extern "C"`
/// function calling `forward_in`), each linked alone into a C program with `gcc
/// -Wl,--gc-sections`, its code symbols summed (`nm -S`, `tools/code_sizes.py` splits them by
/// kernel). The base network `input(16, 8, 8) fc(10)` holds 7,031 bytes (executor, linear,
/// GEMM, glue); each other row is what one more layer of that kind adds to it (`relu`,
/// `conv` of each algorithm, `bn`, `maxpool`, `softmax`, `upsample`, `convtranspose`, a
/// `residual` or `concat` around a `conv`). Checks: digits 104,361 bytes measured, 104,079
/// estimated; the same with `bn` (TinyNet) 104,251 and 104,046; a network with every block and
/// layer kind 128,730 and 130,786.
///
/// What the linker keeps follows the executor's calls, not the layers: `conv::forward` picks
/// the algorithm at run time, so any `conv` links all four algorithms (a direct, a Winograd, an
/// im2col and a depthwise network each add the same 74,871 bytes: direct about 15 KB,
/// Winograd 23 KB, im2col 9 KB, depthwise 16 KB, the dispatch and epilogue the rest), and its
/// fused call links the batch-norm kernel. Activations are one function, with `libm`'s `exp`,
/// `expf`, `expm1f`, `tanhf`.
pub const CODE_SIZES: [(Kernel, &str, usize); 11] = [
    (Kernel::Executor, "executor", 3_430),
    (Kernel::Conv, "conv (all four algorithms)", 72_110),
    (Kernel::BatchNorm, "batch norm", 2_750),
    (Kernel::Gemm, "GEMM", 2_459),
    (Kernel::ConvTranspose, "convtranspose", 13_517),
    (Kernel::Linear, "linear", 560),
    (Kernel::Pool, "pooling", 18_225),
    (Kernel::Activation, "activations", 3_886),
    (Kernel::Softmax, "softmax", 1_095),
    (Kernel::Upsample, "upsample", 5_886),
    (Kernel::Blocks, "residual/concat", 6_703),
];

/// The generated `forward_in` and `__cnn_run` of one network (inlined into its caller): a base
/// and a few instructions per planned layer (fitted to the programs above).
pub const GLUE_BASE: usize = 560;
/// See [`GLUE_BASE`].
pub const GLUE_PER_LAYER: usize = 11;

/// The kernels `plan` uses, sorted, each once.
pub fn kernels(plan: &Plan) -> Vec<Kernel> {
    let mut used = vec![Kernel::Executor];
    for l in plan.all() {
        match &l.layer.kind {
            // `conv::forward` picks the algorithm at run time: all four are linked, and the
            // fused call links the batch-norm kernel.
            LayerKind::Conv(_) => used.extend([Kernel::Conv, Kernel::BatchNorm, Kernel::Gemm]),
            LayerKind::ConvTranspose(..) => {
                used.extend([Kernel::ConvTranspose, Kernel::BatchNorm, Kernel::Gemm]);
            }
            LayerKind::Linear(_) => used.extend([Kernel::Linear, Kernel::Gemm]),
            LayerKind::Pool(_) | LayerKind::GlobalPool(_) => used.push(Kernel::Pool),
            LayerKind::Activation(_) => used.push(Kernel::Activation),
            LayerKind::Softmax => used.push(Kernel::Softmax),
            LayerKind::BatchNorm(_) => used.push(Kernel::BatchNorm),
            LayerKind::Upsample(_) => used.push(Kernel::Upsample),
            LayerKind::Residual(_) | LayerKind::Concat(_) => used.push(Kernel::Blocks),
            LayerKind::Flatten | LayerKind::Dropout(_) | LayerKind::Identity => {}
        }
    }
    used.sort();
    used.dedup();
    used
}

// ---------------------------------------------------------------------------------------------
// The figures

/// Every figure of one network, computed for every network (the workspace literals and the
/// `RAM_BYTES` / `FLASH_BYTES` constants come from here) and checked against `#[budget]`.
#[derive(Clone, Debug)]
pub struct Figures {
    pub layout: Layout,
    /// `WORKSPACE_LEN`, `INPUT_LEN`, `OUTPUT_LEN` (f32 values).
    pub workspace: usize,
    pub input: usize,
    pub output: usize,
    /// `4 × (workspace + input + output)` bytes.
    pub ram: usize,
    /// Bytes of weights in flash: the `__CORE` blob with `#[weights]`, else `4 × PARAMS`.
    pub weights: usize,
    /// Whether `weights` is the embedded blob (else `4 × PARAMS`).
    pub embedded: bool,
    /// Each kernel used and its estimated bytes, then the generated glue.
    pub code_parts: Vec<(&'static str, usize)>,
    /// Their sum.
    pub code: usize,
    /// `weights + code`.
    pub flash: usize,
    pub macs: usize,
}

/// The figures of `plan`; `core_bytes` is the size of the embedded `__CORE` blob, if any.
/// `Err` for a network too large to compute them (an absurd declaration, never a panic).
pub fn figures(net: &Network, plan: &Plan, core_bytes: Option<usize>) -> syn::Result<Figures> {
    let layout = layout(plan).map_err(|(l, msg)| syn::Error::new_spanned(&l.layer.tokens, msg))?;
    let too_large = |what: &str| {
        syn::Error::new(
            net.ident.span(),
            format!(
                "network `{}` is too large: its {what} does not fit in `usize`",
                net.ident
            ),
        )
    };
    let workspace = layout.sample_len().ok_or_else(|| too_large("workspace"))?;
    let input: usize = plan.input.iter().product();
    let output = plan.output().len();
    let ram = workspace
        .checked_add(input)
        .and_then(|n| n.checked_add(output))
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| too_large("RAM figure"))?;
    // `shape::plan` checked that these sums fit.
    let params: usize = plan.layers.iter().map(|l| l.params).sum();
    let macs: usize = plan.layers.iter().map(|l| l.macs).sum();
    let weights = match core_bytes {
        Some(b) => b,
        None => params
            .checked_mul(4)
            .ok_or_else(|| too_large("weight size"))?,
    };
    let mut code_parts: Vec<(&'static str, usize)> = kernels(plan)
        .into_iter()
        .filter_map(|k| CODE_SIZES.iter().find(|(c, ..)| *c == k))
        .map(|&(_, name, bytes)| (name, bytes))
        .collect();
    let glue = GLUE_PER_LAYER
        .saturating_mul(plan.all().len())
        .saturating_add(GLUE_BASE);
    code_parts.push(("forward_in glue", glue));
    let code = code_parts
        .iter()
        .try_fold(0usize, |s, &(_, b)| s.checked_add(b))
        .ok_or_else(|| too_large("code estimate"))?;
    let flash = weights
        .checked_add(code)
        .ok_or_else(|| too_large("flash figure"))?;
    Ok(Figures {
        layout,
        workspace,
        input,
        output,
        ram,
        weights,
        embedded: core_bytes.is_some(),
        code_parts,
        code,
        flash,
        macs,
    })
}

/// Every overrun of `budget`, each pointing at its `key = value` in the attribute.
pub fn check(net: &Network, budget: &Budget, f: &Figures, plan: &Plan) -> syn::Result<()> {
    let name = &net.ident;
    let mut errors = Vec::new();
    let over = |limit: &Limit, msg: String| syn::Error::new_spanned(&limit.tokens, msg);
    if let Some(limit) = budget.ram.as_ref().filter(|l| f.ram > l.value) {
        errors.push(over(
            limit,
            format!(
                "network `{name}` needs {} bytes of RAM, over its budget of {} bytes (`{}`)\n\
                 RAM = 4 bytes × (workspace {} + input {} + output {} f32 values), what `forward_in` needs",
                sep(f.ram),
                sep(limit.value),
                limit.text,
                sep(f.workspace),
                sep(f.input),
                sep(f.output),
            ),
        ));
    }
    if let Some(limit) = budget.flash.as_ref().filter(|l| f.flash > l.value) {
        let parts: Vec<String> = f
            .code_parts
            .iter()
            .map(|(k, b)| format!("{k} {}", sep(*b)))
            .collect();
        let weights = if f.embedded {
            "as embedded by `#[weights]`"
        } else {
            "4 bytes × parameters"
        };
        errors.push(over(
            limit,
            format!(
                "network `{name}` needs about {} bytes of flash, over its budget of {} bytes (`{}`)\n\
                 flash = weights {} ({weights}) + code {} (an x86-64 estimate: {})",
                sep(f.flash),
                sep(limit.value),
                limit.text,
                sep(f.weights),
                sep(f.code),
                parts.join(", "),
            ),
        ));
    }
    if let Some(limit) = budget.macs.as_ref().filter(|l| f.macs > l.value) {
        let mut layers: Vec<&Planned> = plan.layers.iter().filter(|l| l.macs > 0).collect();
        layers.sort_by_key(|l| std::cmp::Reverse(l.macs));
        let top: Vec<String> = layers
            .iter()
            .take(3)
            .map(|l| format!("`{}` {} {}", l.key, l.layer.dsl, sep(l.macs)))
            .collect();
        errors.push(over(
            limit,
            format!(
                "network `{name}` needs {} multiply-accumulates per sample, over its budget of {} (`{}`)\n\
                 the largest layers: {}",
                sep(f.macs),
                sep(limit.value),
                limit.text,
                top.join(", "),
            ),
        ));
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}

/// `71168` → `"71,168"`.
pub fn sep(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
