//! Shape inference: walks the layers from `input(C, H, W)`, checking each against the rules of
//! `check.rs`, and stops at the first shape error of a network (later shapes would be nonsense).

use crate::args::{Layer, LayerKind, Sp};
use crate::check;
use crate::ctxt::{Ctxt, Violation};
use crate::tensor::Shape;

/// A layer with the shapes around it, its `state_dict` key prefix and, for a block, the plans of
/// its paths.
#[derive(Clone, Debug)]
pub struct Planned {
    pub layer: Layer,
    /// Index in the list that holds it (`nn.Sequential` index).
    pub index: usize,
    /// `state_dict` key prefix: `"3"` at the top, `"3.body.0"`, `"5.branches.1.0"` in blocks.
    pub key: String,
    /// Blocks around this layer (0 at the top).
    pub depth: usize,
    pub input: Shape,
    pub output: Shape,
    /// Learnable parameters (of all its layers, for a block).
    pub params: usize,
    /// Multiply-accumulates per sample (convolutions and linear layers).
    pub macs: usize,
    pub block: Option<Block>,
}

/// The planned paths of a block.
#[derive(Clone, Debug)]
pub enum Block {
    Residual {
        body: Vec<Planned>,
        shortcut: Option<Vec<Planned>>,
    },
    Concat(Vec<Vec<Planned>>),
}

impl Planned {
    /// This layer and, for a block, every layer inside it, depth first in `state_dict` order.
    pub fn walk(&self) -> Vec<&Planned> {
        let mut out = vec![self];
        match &self.block {
            None => {}
            Some(Block::Residual { body, shortcut }) => {
                for l in body.iter().chain(shortcut.iter().flatten()) {
                    out.extend(l.walk());
                }
            }
            Some(Block::Concat(branches)) => {
                for l in branches.iter().flatten() {
                    out.extend(l.walk());
                }
            }
        }
        out
    }
}

pub struct Plan {
    pub input: [usize; 3],
    pub layers: Vec<Planned>,
}

impl Plan {
    pub fn output(&self) -> Shape {
        self.layers.last().map_or(
            Shape::Chw {
                c: self.input[0],
                h: self.input[1],
                w: self.input[2],
            },
            |l| l.output,
        )
    }

    /// Every layer at every depth, in `state_dict` order (a block before its layers).
    pub fn all(&self) -> Vec<&Planned> {
        self.layers.iter().flat_map(Planned::walk).collect()
    }
}

/// PyTorch's output length of one axis (see `cnn_runtime::shape::out_len`, which must agree:
/// both test suites run `testdefs/out_len_cases.rs`).
// ceil_mode drops the last window when it would start inside the right padding:
// maxpool(k2, s2, ceil) on 5 -> 3, but maxpool(k2, s2, p1, ceil) on 1 -> 1, not 2.
pub fn out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let (i, k, s, p, d) = (
        input as i128,
        kernel as i128,
        stride as i128,
        padding as i128,
        dilation as i128,
    );
    if s <= 0 || d <= 0 || k <= 0 {
        return None;
    }
    let span = i
        .checked_add(p.checked_mul(2)?)?
        .checked_sub(d.checked_mul(k - 1)?)?
        .checked_sub(1)?;
    if span < 0 {
        return None;
    }
    let mut out = if ceil_mode {
        (span + s - 1) / s + 1
    } else {
        span / s + 1
    };
    if ceil_mode && (out - 1) * s >= i + p {
        out -= 1;
    }
    if out <= 0 {
        return None;
    }
    usize::try_from(out).ok()
}

/// PyTorch's output length of one axis of a transposed convolution,
/// `(in − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1`; `Err(Some(n))`
/// when that is not positive, `Err(None)` when it does not fit a `usize`.
pub fn transposed_len(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
) -> Result<usize, Option<i128>> {
    let (i, k, s, p, d, op) = (
        input as i128,
        kernel as i128,
        stride as i128,
        padding as i128,
        dilation as i128,
        output_padding as i128,
    );
    let out = (|| {
        (i - 1)
            .checked_mul(s)?
            .checked_sub(p.checked_mul(2)?)?
            .checked_add(d.checked_mul(k - 1)?)?
            .checked_add(op)?
            .checked_add(1)
    })()
    .ok_or(None)?;
    if out <= 0 {
        return Err(Some(out));
    }
    usize::try_from(out).map_err(|_| None)
}

struct Walk<'a> {
    cx: &'a mut Ctxt,
    trail: Vec<(String, Shape)>,
}

impl Walk<'_> {
    /// Reports `msg` at `span` with the shapes that led here, and stops the walk.
    fn fail<T>(&mut self, span: proc_macro2::Span, msg: String) -> Option<T> {
        self.cx.error_at(span, format!("{msg}\n{}", self.trail()));
        None
    }

    fn fail_layer<T>(&mut self, layer: &Layer, msg: String) -> Option<T> {
        self.cx
            .error_spanned(&layer.tokens, format!("{msg}\n{}", self.trail()));
        None
    }

    fn report<T>(&mut self, layer: &Layer, v: Violation) -> Option<T> {
        match v.span {
            Some(span) => self.fail(span, v.msg),
            None => self.fail_layer(layer, v.msg),
        }
    }

    fn trail(&self) -> String {
        const KEEP: usize = 6;
        let steps = &self.trail[1..];
        let skipped = steps.len().saturating_sub(KEEP);
        let mut out = format!("shapes: {}", self.trail[0].1);
        if skipped > 0 {
            out += &format!(" -> … ({skipped} layers)");
        }
        let mut after_open = false;
        for (name, shape) in &steps[skipped..] {
            out += if after_open { " " } else { " -> " };
            // A block's opening (`residual body {`) stands alone: the next layer follows it.
            after_open = name.ends_with('{');
            if after_open {
                out += name;
            } else {
                out += &format!("{name} -> {shape}");
            }
        }
        out
    }
}

/// Walks the layers from `input`, checking each layer against the shape it receives
/// (`check::layer`) before inferring its output.
pub fn plan(cx: &mut Ctxt, input: [Sp<usize>; 3], layers: Vec<Layer>) -> Option<Plan> {
    let [c, h, w] = input.map(|d| d.v);
    let start = Shape::Chw { c, h, w };
    let mut walk = Walk {
        cx,
        trail: vec![(String::new(), start)],
    };
    if c.checked_mul(h).and_then(|n| n.checked_mul(w)).is_none() {
        return walk.fail(
            input[0].span,
            format!("input [{c}, {h}, {w}] has too many elements"),
        );
    }
    let (planned, _) = plan_list(&mut walk, layers, start, "", 0)?;
    let total = |f: fn(&Planned) -> usize| {
        planned
            .iter()
            .try_fold(0usize, |sum, l| sum.checked_add(f(l)))
    };
    if total(|l| l.params).is_none() || total(|l| l.macs).is_none() {
        return walk.fail(input[0].span, "the network has too many parameters".into());
    }
    Some(Plan {
        input: [c, h, w],
        layers: planned,
    })
}

/// Plans one list of layers (the network's or a block path's) from `shape`; keys are
/// `{prefix}{index}`. Returns the planned layers and the list's output shape.
fn plan_list(
    walk: &mut Walk<'_>,
    layers: Vec<Layer>,
    start: Shape,
    prefix: &str,
    depth: usize,
) -> Option<(Vec<Planned>, Shape)> {
    let mut planned: Vec<Planned> = Vec::with_capacity(layers.len() + 1);
    let mut shape = start;
    for layer in layers {
        if let (LayerKind::Linear(_), Shape::Chw { c, h, w }) = (&layer.kind, shape) {
            let flat = Shape::Flat(c * h * w);
            let index = planned.len();
            planned.push(Planned {
                layer: Layer {
                    kind: LayerKind::Flatten,
                    name: syn::Ident::new("flatten", layer.name.span()),
                    tokens: layer.tokens.clone(),
                    dsl: crate::args::IMPLICIT_FLATTEN.into(),
                },
                index,
                key: format!("{prefix}{index}"),
                depth,
                input: shape,
                output: flat,
                params: 0,
                macs: 0,
                block: None,
            });
            walk.trail.push(("flatten".into(), flat));
            shape = flat;
        }
        if let Err(v) = check::layer(&layer, shape) {
            return walk.report(&layer, v);
        }
        let index = planned.len();
        let key = format!("{prefix}{index}");
        let (output, block) = match &layer.kind {
            LayerKind::Residual(r) => residual(walk, &layer, r, shape, &key, depth)?,
            LayerKind::Concat(branches) => concat(walk, &layer, branches, shape, &key, depth)?,
            _ => (infer(walk, &layer, shape)?, None),
        };
        walk.trail.push((layer.name.to_string(), output));
        let cost = match &block {
            Some(b) => block_cost(b),
            None => cost(&layer, shape, output),
        };
        let Some((params, macs)) = cost else {
            return walk.fail_layer(&layer, format!("`{}` has too many parameters", layer.name));
        };
        planned.push(Planned {
            layer,
            index,
            key,
            depth,
            input: shape,
            output,
            params,
            macs,
            block,
        });
        shape = output;
    }
    Some((planned, shape))
}

/// Parameters and MACs of a block: the sums over its paths, `None` on overflow.
fn block_cost(block: &Block) -> Option<(usize, usize)> {
    let paths: Vec<&Vec<Planned>> = match block {
        Block::Residual { body, shortcut } => std::iter::once(body).chain(shortcut).collect(),
        Block::Concat(branches) => branches.iter().collect(),
    };
    let (mut params, mut macs) = (0usize, 0usize);
    for l in paths.into_iter().flatten() {
        params = params.checked_add(l.params)?;
        macs = macs.checked_add(l.macs)?;
    }
    Some((params, macs))
}

/// Plans both paths of a residual block from `input`; they must end in the same shape.
fn residual(
    walk: &mut Walk<'_>,
    layer: &Layer,
    r: &crate::args::ResidualArgs,
    input: Shape,
    key: &str,
    depth: usize,
) -> Option<(Shape, Option<Block>)> {
    let mark = walk.trail.len();
    walk.trail.push(("residual body {".into(), input));
    let (body, body_out) = plan_list(
        walk,
        r.body.clone(),
        input,
        &format!("{key}.body."),
        depth + 1,
    )?;
    let body_trail = walk.trail.split_off(mark);
    let (shortcut, sc_out, sc_trail) = match &r.shortcut {
        Some(sc) => {
            walk.trail.push(("shortcut {".into(), input));
            let (planned, out) = plan_list(
                walk,
                sc.clone(),
                input,
                &format!("{key}.shortcut."),
                depth + 1,
            )?;
            let trail = walk.trail.split_off(mark);
            (Some(planned), out, Some(trail))
        }
        None => (None, input, None),
    };
    if body_out != sc_out {
        // The steps of one path after its opening marker, from the block's input.
        let path = |t: &[(String, Shape)]| {
            let steps: Vec<String> = t[1..].iter().map(|(n, s)| format!("{n} -> {s}")).collect();
            format!("{input} -> {}", steps.join(" -> "))
        };
        let shortcut_text = match &sc_trail {
            Some(t) => format!("the shortcut ends in {sc_out} ({})", path(t)),
            None => format!(
                "the identity shortcut passes the block's input {input} unchanged; a body that changes the shape needs `residual(shortcut {{ … }}) {{ … }}`"
            ),
        };
        return walk.fail_layer(
            layer,
            format!(
                "`residual` adds its body and its shortcut, but the body ends in {body_out} ({}) and {shortcut_text}",
                path(&body_trail)
            ),
        );
    }
    Some((body_out, Some(Block::Residual { body, shortcut })))
}

/// Plans every branch of a concat block from `input`; all must end in feature maps of one H×W.
fn concat(
    walk: &mut Walk<'_>,
    layer: &Layer,
    branches: &[crate::args::Branch],
    input: Shape,
    key: &str,
    depth: usize,
) -> Option<(Shape, Option<Block>)> {
    let mark = walk.trail.len();
    let mut planned = Vec::with_capacity(branches.len());
    let mut ends = Vec::with_capacity(branches.len());
    for (i, b) in branches.iter().enumerate() {
        walk.trail.push((format!("branch {i} {{"), input));
        let (p, out) = plan_list(
            walk,
            b.layers.clone(),
            input,
            &format!("{key}.branches.{i}."),
            depth + 1,
        )?;
        walk.trail.truncate(mark);
        planned.push(p);
        ends.push((b.span, out));
    }
    let listing = || {
        let parts: Vec<String> = ends
            .iter()
            .enumerate()
            .map(|(i, (_, s))| format!("branch {i}: {s}"))
            .collect();
        parts.join(", ")
    };
    let mut channels = 0usize;
    let mut hw = None;
    for &(span, end) in &ends {
        match end {
            Shape::Flat(_) => {
                return walk.fail(
                    span,
                    format!(
                        "`concat` joins feature maps along channels, but this branch ends in a flat tensor {end}; ends: {}",
                        listing()
                    ),
                )
            }
            Shape::Chw { c, h, w } => {
                if let Some((h0, w0)) = hw {
                    if (h, w) != (h0, w0) {
                        return walk.fail(
                            span,
                            format!(
                                "`concat` needs every branch to end in the same height and width, expected {h0}×{w0} (branch 0), found {h}×{w}; ends: {}",
                                listing()
                            ),
                        );
                    }
                } else {
                    hw = Some((h, w));
                }
                channels = match channels.checked_add(c) {
                    Some(n) => n,
                    None => return walk.fail_layer(layer, "`concat` has too many channels".into()),
                };
            }
        }
    }
    let Some((h, w)) = hw else {
        return walk.fail_layer(layer, "`concat` has no branch".into());
    };
    let out = checked(walk, layer, [channels, h, w])?;
    Some((out, Some(Block::Concat(planned))))
}

/// Parameters and multiply-accumulates of one layer, `None` on overflow.
fn cost(layer: &Layer, input: Shape, output: Shape) -> Option<(usize, usize)> {
    match &layer.kind {
        LayerKind::Conv(a) => {
            let fan_in = (a.c_in.v / a.groups.v)
                .checked_mul(a.kernel.v[0])?
                .checked_mul(a.kernel.v[1])?;
            let weights = fan_in.checked_mul(a.c_out.v)?;
            let params = weights.checked_add(if a.bias { a.c_out.v } else { 0 })?;
            Some((params, output.len().checked_mul(fan_in)?))
        }
        LayerKind::ConvTranspose(a, _) => {
            // Every input value feeds `c_out/groups · KH · KW` outputs.
            let taps = (a.c_out.v / a.groups.v)
                .checked_mul(a.kernel.v[0])?
                .checked_mul(a.kernel.v[1])?;
            let weights = taps.checked_mul(a.c_in.v)?;
            let params = weights.checked_add(if a.bias { a.c_out.v } else { 0 })?;
            Some((params, input.len().checked_mul(taps)?))
        }
        LayerKind::BatchNorm(a) => Some((
            if a.affine {
                input.dims()[0].checked_mul(2)?
            } else {
                0
            },
            0,
        )),
        LayerKind::Linear(a) => {
            let weights = input.len().checked_mul(a.out_features.v)?;
            let params = weights.checked_add(if a.bias { a.out_features.v } else { 0 })?;
            Some((params, weights))
        }
        _ => Some((0, 0)),
    }
}

/// The output of one layer, for an input its rules accepted.
fn infer(walk: &mut Walk<'_>, layer: &Layer, shape: Shape) -> Option<Shape> {
    match (&layer.kind, shape) {
        (
            LayerKind::Activation(_)
            | LayerKind::Softmax
            | LayerKind::Dropout(_)
            | LayerKind::Identity,
            s,
        ) => Some(s),
        (LayerKind::Flatten, s) => Some(Shape::Flat(s.len())),
        (LayerKind::Linear(a), _) => Some(Shape::Flat(a.out_features.v)),
        (LayerKind::BatchNorm(_), s @ Shape::Chw { .. }) => Some(s),
        (LayerKind::GlobalPool(_), Shape::Chw { c, .. }) => Some(Shape::Chw { c, h: 1, w: 1 }),
        (LayerKind::Conv(a), Shape::Chw { h, w, .. }) => {
            let [oh, ow] = spatial(
                walk,
                layer,
                [h, w],
                a.kernel,
                a.stride.v,
                a.padding.v,
                a.dilation.v,
                false,
            )?;
            checked(walk, layer, [a.c_out.v, oh, ow])
        }
        (LayerKind::ConvTranspose(a, op), Shape::Chw { h, w, .. }) => {
            let mut out = [0; 2];
            for axis in 0..2 {
                let i = [h, w][axis];
                match transposed_len(
                    i,
                    a.kernel.v[axis],
                    a.stride.v[axis],
                    a.padding.v[axis],
                    a.dilation.v[axis],
                    op.v[axis],
                ) {
                    Ok(n) => out[axis] = n,
                    Err(n) => {
                        let what = ["height", "width"][axis];
                        let msg = match n {
                            Some(n) => format!(
                                "`{}` output {what} would be {n}, from (in − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1 = ({i} − 1)·{} − 2·{} + {}·({} − 1) + {} + 1; it must be positive",
                                layer.name,
                                a.stride.v[axis],
                                a.padding.v[axis],
                                a.dilation.v[axis],
                                a.kernel.v[axis],
                                op.v[axis]
                            ),
                            None => format!("`{}` output {what} is too large", layer.name),
                        };
                        return walk.fail(a.padding.span, msg);
                    }
                }
            }
            checked(walk, layer, [a.c_out.v, out[0], out[1]])
        }
        (LayerKind::Upsample(a), Shape::Chw { c, h, w }) => {
            match (h.checked_mul(a.scale.v[0]), w.checked_mul(a.scale.v[1])) {
                (Some(oh), Some(ow)) => checked(walk, layer, [c, oh, ow]),
                _ => walk.fail_layer(
                    layer,
                    format!(
                        "the output of `{}` [{c}, {h}·{}, {w}·{}] has too many elements",
                        layer.name, a.scale.v[0], a.scale.v[1]
                    ),
                ),
            }
        }
        (LayerKind::Pool(a), Shape::Chw { c, h, w }) => {
            let [oh, ow] = spatial(
                walk,
                layer,
                [h, w],
                a.kernel,
                a.stride.v,
                a.padding.v,
                [1, 1],
                a.ceil_mode,
            )?;
            checked(walk, layer, [c, oh, ow])
        }
        (LayerKind::Residual(_) | LayerKind::Concat(_), _) => walk.fail_layer(
            layer,
            format!(
                "internal error: block `{}` reached single-layer shape inference",
                layer.name
            ),
        ),
        (
            LayerKind::Conv(_)
            | LayerKind::ConvTranspose(..)
            | LayerKind::Upsample(_)
            | LayerKind::BatchNorm(_)
            | LayerKind::Pool(_)
            | LayerKind::GlobalPool(_),
            Shape::Flat(_),
        ) => walk.fail_layer(
            layer,
            format!(
                "internal error: `{}` reached shape inference with a flat input",
                layer.name
            ),
        ),
    }
}

#[allow(clippy::too_many_arguments)] // the conv/pool geometry, as PyTorch names it
fn spatial(
    walk: &mut Walk<'_>,
    layer: &Layer,
    hw: [usize; 2],
    kernel: Sp<[usize; 2]>,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Option<[usize; 2]> {
    let mut out = [0; 2];
    for axis in 0..2 {
        match out_len(
            hw[axis],
            kernel.v[axis],
            stride[axis],
            padding[axis],
            dilation[axis],
            ceil_mode,
        ) {
            Some(n) => out[axis] = n,
            None => {
                let what = ["height", "width"][axis];
                let k = kernel.v[axis];
                let dilated = match (k - 1)
                    .checked_mul(dilation[axis])
                    .and_then(|e| e.checked_add(1))
                {
                    Some(e) if e != k => format!(" (dilated to {e})"),
                    Some(_) => String::new(),
                    None => " (dilated beyond any size)".into(),
                };
                let padded = hw[axis] as u128 + 2 * padding[axis] as u128;
                let name = &layer.name;
                return walk.fail(
                    kernel.span,
                    format!("`{name}` kernel {what} {k}{dilated} is larger than the padded input {what} {padded}"),
                );
            }
        }
    }
    Some(out)
}

/// Rust's limit for one value: a sample of f32s must not exceed `isize::MAX` bytes.
fn fits([c, h, w]: [usize; 3]) -> bool {
    c.checked_mul(h)
        .and_then(|n| n.checked_mul(w))
        .and_then(|n| n.checked_mul(4))
        .is_some_and(|bytes| bytes <= isize::MAX as usize)
}

fn checked(walk: &mut Walk<'_>, layer: &Layer, [c, h, w]: [usize; 3]) -> Option<Shape> {
    if !fits([c, h, w]) {
        return walk.fail_layer(
            layer,
            format!(
                "the output of `{}` [{c}, {h}, {w}] has too many elements",
                layer.name
            ),
        );
    }
    Some(Shape::Chw { c, h, w })
}

#[cfg(test)]
mod tests {
    use super::out_len;

    /// `(input, kernel, stride, padding, dilation, ceil_mode, expected)`.
    type Case = (usize, usize, usize, usize, usize, bool, Option<usize>);

    const CASES: &[Case] = include!("../../testdefs/out_len_cases.rs");

    #[test]
    fn out_len_matches_the_shared_table() {
        for &(i, k, s, p, d, ceil, want) in CASES {
            assert_eq!(
                out_len(i, k, s, p, d, ceil),
                want,
                "out_len({i}, k{k}, s{s}, p{p}, d{d}, ceil={ceil})"
            );
        }
    }
}
