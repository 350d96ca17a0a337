//! Max and average pooling, windowed and global, as one kernel with the kind as data.

#[cfg(feature = "std")]
use std::{cell::Cell, vec::Vec};

use crate::store::Scratch;

use crate::simd::{with_simd, Scalar, Simd};

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// PyTorch: `nn.MaxPool2d`; padding counts as −∞.
    Max,
    /// PyTorch: `nn.AvgPool2d`.
    Avg {
        /// With `true` the divisor counts padded positions inside the padded input (but never
        /// the `ceil_mode` overhang past it): `min(start + k, in + p) − start` per axis.
        /// With `false` it counts only real input positions.
        count_include_pad: bool,
    },
}

/// Shape of a pooling layer, computed once by the `cnn!` macro and emitted as a `const`.
///
/// A global pool (`nn.AdaptiveAvgPool2d(1)`, `nn.AdaptiveMaxPool2d(1)`) is the window
/// `kernel = stride = in_hw`, `padding = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Max or average.
    pub kind: PoolKind,
    /// Channels (pooled independently).
    pub channels: usize,
    /// Window `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Implicit padding on each side `[PH, PW]`.
    pub padding: [usize; 2],
    /// PyTorch's `ceil_mode` (already reflected in `out_hw`).
    pub ceil_mode: bool,
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW]`, from [`crate::shape::out_len`].
    pub out_hw: [usize; 2],
}

impl Pool2dParams {
    /// Elements of one input sample.
    pub const fn in_len(&self) -> usize {
        self.channels * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample.
    pub const fn out_len(&self) -> usize {
        self.channels * self.out_hw[0] * self.out_hw[1]
    }

    /// Scratch elements `pool2d_in` needs: a ring of `KH` horizontally reduced rows and one
    /// divisor per output column.
    pub const fn scratch_len(&self) -> usize {
        let kh = if self.kernel[0] > 1 {
            self.kernel[0]
        } else {
            1
        };
        (kh + 1) * self.out_hw[1]
    }
}

#[cfg(feature = "std")]
thread_local! {
    /// The separable kernel's scratch, reused across calls: a ring of `KH` horizontally reduced
    /// input rows, then one divisor per output column.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `out[n, c, y, x] = reduce over the window starting at (y·SH − PH, x·SW − PW)` of `input`.
///
/// + `n`: the batch size
/// + `input`: `[n, channels, H, W]` row-major
/// + `out`: `[n, channels, OH, OW]` row-major, overwritten
///
/// Planes are pooled independently, so a caller may pass any run of whole planes (say `n = 1`
/// and `channels` = the planes of one thread's share). Max pooling propagates NaN as PyTorch
/// does (a window holding NaN gives NaN), and folds each window in PyTorch's row-major order,
/// so ties between `−0` and `+0` also resolve as PyTorch's NCHW kernel does.
///
/// # Panics
/// If a slice is shorter than the layout above.
#[cfg(feature = "std")]
pub fn pool2d(p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32]) {
    let mut scratch = SCRATCH.with(Cell::take);
    let len = p.scratch_len();
    pool2d_in(p, n, input, out, &mut scratch.at_least(len)[..len]);
    SCRATCH.with(|s| s.set(scratch));
}

/// [`pool2d`] with the caller's scratch of at least [`Pool2dParams::scratch_len`] elements.
///
/// # Panics
/// If a slice is shorter than its layout.
pub fn pool2d_in(p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32], scratch: &mut [f32]) {
    with_simd!(
        |s: S| { pool2d_with::<S>(s, p, n, input, out, scratch) },
        (p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32], scratch: &mut [f32])
    )
}

/// [`pool2d_in`] with the vectors of `S`.
#[inline(always)]
fn pool2d_with<S: Simd>(
    s: S,
    p: &Pool2dParams,
    n: usize,
    input: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let planes = n * p.channels;
    let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
    assert!(input.len() >= planes * hw_in, "pool2d input too short");
    assert!(out.len() >= planes * hw_out, "pool2d output too short");
    if planes == 0 || hw_out == 0 {
        return;
    }
    let input = &input[..planes * hw_in];
    let out = &mut out[..planes * hw_out];
    if is_global(p) && hw_in > 0 {
        // LOOP over (sample, channel) planes
        for (x, y) in input.chunks_exact(hw_in).zip(out.iter_mut()) {
            *y = match p.kind {
                PoolKind::Max => max_all(x),
                PoolKind::Avg { .. } => sum_all(x) / hw_in as f32,
            };
        }
        return;
    }
    let [h, w] = p.in_hw;
    let [oh, ow] = p.out_hw;
    if p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0] && 2 * oh <= h && 2 * ow <= w
    {
        // The common pool(2): every window is whole, so every divisor is 4.
        match p.kind {
            PoolKind::Max => pool_2x2(s, PoolKind::Max, p, input, out),
            avg @ PoolKind::Avg { .. } => pool_2x2(s, avg, p, input, out),
        }
        return;
    }
    if p.kind == PoolKind::Max
        && p.kernel == [3, 3]
        && p.stride == [2, 2]
        && p.padding[0] == p.padding[1]
        && p.padding[0] <= 1
        && !p.ceil_mode
    {
        // ResNet's stem pool.
        max_3x3_s2(s, p, input, out);
        return;
    }
    // Specialise the window loop on the kind, so `accum` is resolved outside it.
    match p.kind {
        PoolKind::Max => pool_separable(s, PoolKind::Max, p, input, out, scratch),
        avg @ PoolKind::Avg { .. } => pool_separable(s, avg, p, input, out, scratch),
    }
}

/// Whether [`pool2d_channels_last`] takes the pool: a max pool over any window, or a global
/// pool (average or max).
pub(crate) fn takes_channels_last(p: &Pool2dParams) -> bool {
    is_global(p) || p.kind == PoolKind::Max
}

/// A window over the whole plane: `nn.AdaptiveAvgPool2d(1)`, `nn.AdaptiveMaxPool2d(1)`.
fn is_global(p: &Pool2dParams) -> bool {
    p.kernel == p.in_hw && p.padding == [0, 0] && p.out_hw == [1, 1]
}

/// [`pool2d`] of `n` samples laid out channel-last, `input: [n, H·W, C]` into
/// `out: [n, OH·OW, C]`, for the pools [`takes_channels_last`] names: each window's taps are
/// whole vectors of channels, folded in an order that gives the channels-first kernels' bits
/// (row-major for max, which the separable fold matches; [`sum_all`]'s and [`max_all`]'s
/// lanes for the global pools).
///
/// # Panics
/// If a slice is shorter than its layout, or the pool is a windowed average.
pub(crate) fn pool2d_channels_last(p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32]) {
    with_simd!(
        |s: S| { channels_last_with::<S>(s, p, n, input, out) },
        (p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32])
    )
}

/// [`pool2d_channels_last`] with the vectors of `S`.
#[inline(always)]
fn channels_last_with<S: Simd>(s: S, p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32]) {
    assert!(
        takes_channels_last(p),
        "pool2d: a channel-last windowed average"
    );
    let c = p.channels;
    let [h, w] = p.in_hw;
    let (hw_in, hw_out) = (h * w, p.out_hw[0] * p.out_hw[1]);
    assert!(input.len() >= n * c * hw_in, "pool2d input too short");
    assert!(out.len() >= n * c * hw_out, "pool2d output too short");
    if n == 0 || c == 0 || hw_out == 0 {
        return;
    }
    let global = is_global(p);
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [oh, ow] = p.out_hw;
    let lanes = S::LANES;
    // LOOP over samples
    for (x, y) in input
        .chunks_exact(hw_in * c)
        .zip(out.chunks_exact_mut(hw_out * c))
        .take(n)
    {
        if global {
            let y = &mut y[..c];
            // LOOP over blocks of channels: two vectors, one, or single channels
            if c >= 2 * lanes {
                for ch in vector_starts(c, 2 * lanes) {
                    global_last::<S, 2>(s, p.kind, x, c, ch, y);
                }
            } else if c >= lanes {
                global_last::<S, 1>(s, p.kind, x, c, 0, y);
                global_last::<S, 1>(s, p.kind, x, c, c - lanes, y);
            } else {
                for ch in 0..c {
                    global_last::<Scalar, 1>(Scalar, p.kind, x, c, ch, y);
                }
            }
            if let PoolKind::Avg { .. } = p.kind {
                y.iter_mut().for_each(|v| *v /= hw_in as f32);
            }
            continue;
        }
        // LOOP over output rows
        for (oy, y_row) in y.chunks_exact_mut(ow * c).enumerate().take(oh) {
            let (r0, r1, _) = window(oy, kh, sh, ph, h);
            // LOOP over output columns
            for (ox, y) in y_row.chunks_exact_mut(c).enumerate() {
                let (c0, c1, _) = window(ox, kw, sw, pw, w);
                let taps = [r0, r1, c0, c1];
                // LOOP over vectors of channels (single channels when fewer than a vector)
                if c >= lanes {
                    for ch in vector_starts(c, lanes) {
                        max_last(s, x, [w, c], taps, ch, y);
                    }
                } else {
                    for ch in 0..c {
                        max_last(Scalar, x, [w, c], taps, ch, y);
                    }
                }
            }
        }
    }
}

/// `y[ch..ch + LANES]` = the max of the window rows `r0..r1`, columns `c0..c1`
/// (`[r0, r1, c0, c1]`) of the channel-last plane `x` (`[w, c]`: its width and channels),
/// folded row-major; −∞ for an empty window.
#[inline(always)]
fn max_last<T: Simd>(
    t: T,
    x: &[f32],
    [w, c]: [usize; 2],
    [r0, r1, c0, c1]: [usize; 4],
    ch: usize,
    y: &mut [f32],
) {
    let n = T::LANES;
    // SAFETY: the slice is bounds-checked to hold the LANES floats read.
    let tap = |r: usize, col: usize| unsafe { t.load(x[(r * w + col) * c + ch..][..n].as_ptr()) };
    let acc = if r0 < r1 && c0 < c1 {
        // The first tap starts the fold (a max of one is the tap itself, NaN included).
        let mut acc = tap(r0, c0);
        // LOOP over the window's rows and columns, row-major, after the first
        for r in r0..r1 {
            let from = if r == r0 { c0 + 1 } else { c0 };
            for col in from..c1 {
                acc = t.max_fold(acc, tap(r, col));
            }
        }
        acc
    } else {
        t.splat(&f32::NEG_INFINITY)
    };
    // SAFETY: the slice is bounds-checked to hold the LANES floats written.
    unsafe { t.store(y[ch..ch + n].as_mut_ptr(), acc) };
}

/// `y[ch..ch + V·LANES]` = the sum (average) or max (max) of channels `ch..` over the `H·W`
/// positions of the channel-last plane `x` with `c` channels, in [`sum_all`]'s or
/// [`max_all`]'s order: `LANES` (8) running folds of every eighth position, then the rest.
/// `V` vectors at a time keep the folds in registers while each position's channels are read
/// once.
#[inline(always)]
fn global_last<T: Simd, const V: usize>(
    t: T,
    kind: PoolKind,
    x: &[f32],
    c: usize,
    ch: usize,
    y: &mut [f32],
) {
    let n = T::LANES;
    let hw = x.len() / c;
    let whole = hw / LANES * LANES;
    // SAFETY: the slice is bounds-checked to hold the LANES floats read.
    let at = |i: usize, v: usize| unsafe { t.load(x[i * c + ch + v * n..][..n].as_ptr()) };
    let max = kind == PoolKind::Max;
    let (init, start) = if max {
        (t.splat(&f32::NEG_INFINITY), t.splat(&f32::NEG_INFINITY))
    } else {
        (t.zero(), t.splat(&-0.0))
    };
    let fold = |a: T::V, b: T::V| if max { t.max_fold(a, b) } else { t.add(a, b) };
    let mut lanes = [[init; V]; LANES];
    // LOOP over groups of eight positions, one into each lane
    for i in (0..whole).step_by(LANES) {
        for (j, l) in lanes.iter_mut().enumerate() {
            for (v, l) in l.iter_mut().enumerate() {
                *l = fold(*l, at(i + j, v));
            }
        }
    }
    let mut tail = [start; V];
    for i in whole..hw {
        for (v, acc) in tail.iter_mut().enumerate() {
            *acc = fold(*acc, at(i, v));
        }
    }
    for (v, &tail) in tail.iter().enumerate() {
        let acc = if max {
            // `max_all`: the tail's fold, then each lane.
            lanes.iter().fold(tail, |a, l| fold(a, l[v]))
        } else {
            // `sum_all`: the lanes summed from −0, then the tail's sum.
            let sum = lanes.iter().fold(start, |a, l| fold(a, l[v]));
            fold(sum, tail)
        };
        // SAFETY: the slice is bounds-checked to hold the LANES floats written.
        unsafe { t.store(y[ch + v * n..][..n].as_mut_ptr(), acc) };
    }
}

impl PoolKind {
    /// The reduction's identity: −∞ for max (padding never wins), 0 for the sum.
    fn init(self) -> f32 {
        match self {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg { .. } => 0.0,
        }
    }

    /// `accum(init(), v)` in one step: `v` for max (−∞ or NaN win against −∞ alike), `0 + v`
    /// for the sum (which turns −0 into +0, as PyTorch's zero-initialised sum does).
    #[inline(always)]
    fn first(self, v: f32) -> f32 {
        match self {
            PoolKind::Max => v,
            PoolKind::Avg { .. } => 0.0 + v,
        }
    }

    /// Folds `v` into `acc`; a NaN wins a max, as in PyTorch's `val > max || isnan(val)`.
    #[inline(always)]
    fn accum(self, acc: f32, v: f32) -> f32 {
        match self {
            PoolKind::Max => {
                if v > acc || v.is_nan() {
                    v
                } else {
                    acc
                }
            }
            PoolKind::Avg { .. } => acc + v,
        }
    }

    /// [`PoolKind::first`] on every lane of `v`.
    #[inline(always)]
    pub(crate) fn first_v<S: Simd>(self, s: S, v: S::V) -> S::V {
        match self {
            PoolKind::Max => v,
            PoolKind::Avg { .. } => s.add(s.zero(), v),
        }
    }

    /// [`PoolKind::accum`] on every lane.
    #[inline(always)]
    pub(crate) fn accum_v<S: Simd>(self, s: S, acc: S::V, v: S::V) -> S::V {
        match self {
            PoolKind::Max => s.max_fold(acc, v),
            PoolKind::Avg { .. } => s.add(acc, v),
        }
    }

    /// The divisor extent of one axis: `padded` (positions inside the padded input) with
    /// `count_include_pad`, else `real` (positions inside the input); 1 for max.
    #[inline(always)]
    fn extent(self, padded: usize, real: usize) -> usize {
        match self {
            PoolKind::Max => 1,
            PoolKind::Avg { count_include_pad } => {
                if count_include_pad {
                    padded
                } else {
                    real
                }
            }
        }
    }
}

/// The clipped window of output index `o` on one axis: real input range `[lo, hi)` and the
/// divisor extent `min(start + k, in + p) − start` with `start = o·s − p`.
#[inline(always)]
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize, usize) {
    // Padded coordinates: the padded input is [0, len + 2p) and the real input [p, len + p).
    let start = o * s;
    let end = start + k;
    let padded = end.min(len + 2 * p).saturating_sub(start);
    let lo = start.max(p) - p;
    let hi = (end.min(len + p).saturating_sub(p)).max(lo);
    (lo, hi, padded)
}

/// The output indices `[lo, hi)` of one axis whose windows lie wholly inside the input;
/// `lo ≤ hi ≤ out`, and the indices outside are the border.
fn interior(k: usize, s: usize, p: usize, len: usize, out: usize) -> (usize, usize) {
    if k == 0 || s == 0 {
        return (0, 0);
    }
    let lo = p.div_ceil(s).min(out);
    let hi = if len + p >= k {
        (len + p - k) / s + 1
    } else {
        0
    };
    (lo, hi.min(out).max(lo))
}

/// The starts of `lanes`-wide vectors covering `0..len` (`len ≥ lanes`): whole vectors, then,
/// when `lanes` does not divide `len`, one ending at `len` that overlaps the one before. The
/// kernels below write outputs that depend on their inputs alone, so the overlap rewrites the
/// same values instead of leaving a scalar tail.
/// One comparison per step (a `map` chained with the last start cost 15% of the 3×3/2 max
/// pool's time).
#[inline(always)]
fn vector_starts(len: usize, lanes: usize) -> VectorStarts {
    VectorStarts {
        next: 0,
        last: len - lanes,
        lanes,
        done: false,
    }
}

/// [`vector_starts`]' iterator: `next`, `next + lanes`, … while below `last`, then `last`.
struct VectorStarts {
    next: usize,
    last: usize,
    lanes: usize,
    done: bool,
}

impl Iterator for VectorStarts {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.done {
            return None;
        }
        let at = if self.next >= self.last {
            self.done = true;
            self.last
        } else {
            self.next
        };
        self.next += self.lanes;
        Some(at)
    }
}

/// Pool(2, stride 2) with every window whole, folded in the generic kernel's order; each
/// vector of outputs from the deinterleaved columns of its two input rows.
#[inline(always)]
fn pool_2x2<S: Simd>(s: S, kind: PoolKind, p: &Pool2dParams, input: &[f32], out: &mut [f32]) {
    let [h, w] = p.in_hw;
    let [oh, ow] = p.out_hw;
    let n = S::LANES;
    let quarter = s.splat(&0.25);
    // LOOP over (sample, channel) planes
    for (x, y) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        // LOOP over output rows
        for (oy, row) in y.chunks_exact_mut(ow).enumerate() {
            let r0 = &x[2 * oy * w..2 * oy * w + 2 * ow];
            let r1 = &x[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
            if ow < n {
                // LOOP over output columns (fewer than a vector)
                for ((o, a), b) in row
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let acc = kind.accum(kind.first(a[0]), a[1]);
                    let acc = kind.accum(kind.accum(acc, b[0]), b[1]);
                    *o = match kind {
                        PoolKind::Max => acc,
                        PoolKind::Avg { .. } => acc * 0.25,
                    };
                }
                continue;
            }
            // LOOP over vectors of output columns
            for ox in vector_starts(ow, n) {
                // SAFETY: `ox + n ≤ ow`, so the `2n` values read from `2·ox` lie inside each
                // row of `2·ow`, and the `n` written inside `row`.
                unsafe {
                    let (a0, a1) = s.load_deinterleaved(r0[2 * ox..2 * (ox + n)].as_ptr());
                    let (b0, b1) = s.load_deinterleaved(r1[2 * ox..2 * (ox + n)].as_ptr());
                    let acc = kind.accum_v(s, kind.first_v(s, a0), a1);
                    let acc = kind.accum_v(s, kind.accum_v(s, acc, b0), b1);
                    let acc = match kind {
                        PoolKind::Max => acc,
                        PoolKind::Avg { .. } => s.mul(acc, quarter),
                    };
                    s.store(row[ox..ox + n].as_mut_ptr(), acc);
                }
            }
        }
    }
}

/// Max pool 3×3, stride 2, padding 0 or 1 (ResNet's stem pool), in strips of `LANES` output
/// columns going down the plane: each output row folds its three input rows' horizontal
/// windows, top to bottom, and keeps the bottom one for the next row (which starts there), so
/// that each input row is reduced once per strip with no buffer and no per-row bookkeeping (the
/// separable kernel spent most of its time in that on stem224's 112×112 planes). Windows are
/// folded row by row, left to right, as the separable kernel does (the same bits); the columns
/// whose windows cross the padding, and planes narrower than a vector, go one value at a time.
#[inline(always)]
fn max_3x3_s2<S: Simd>(s: S, p: &Pool2dParams, input: &[f32], out: &mut [f32]) {
    let kind = PoolKind::Max;
    let [h, w] = p.in_hw;
    let [oh, ow] = p.out_hw;
    let pad = p.padding[0];
    let n = S::LANES;
    #[cfg(test)]
    tests::MAX_3X3_S2.set(tests::MAX_3X3_S2.get() + 1);
    // Output columns `0..hi` have windows that end inside the row (those of the first start in
    // the padding with `pad = 1`, which `Row` covers), and `hi..ow` (one at most) do not.
    let hi = match (w + pad).checked_sub(3) {
        Some(end) => (end / 2 + 1).min(ow),
        None => 0,
    };
    let strips = hi >= n;
    let columns = if strips { hi..ow } else { 0..ow };
    // Output rows `1..whole` read three input rows each, the first the last of the row above.
    let whole = ((h + pad).saturating_sub(3) / 2 + 1).min(oh);
    // LOOP over (sample, channel) planes
    for (x, y) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        if strips {
            // LOOP over strips of output columns
            for col in vector_starts(hi, n) {
                let row = Row {
                    at: 2 * col,
                    w,
                    pad,
                };
                // Output row 0: input rows 0 to 2 − pad.
                let mut above = row.across(s, x, 0);
                let mut acc = above;
                for r in 1..(3 - pad).min(h) {
                    above = row.across(s, x, r);
                    acc = kind.accum_v(s, acc, above);
                }
                // SAFETY: `col + n ≤ hi ≤ ow`, inside row 0.
                unsafe { s.store(y[col..col + n].as_mut_ptr(), acc) };
                // LOOP over output rows whose three input rows all exist
                for oy in 1..whole {
                    let r = 2 * oy - pad;
                    let mid = row.across(s, x, r + 1);
                    let below = row.across(s, x, r + 2);
                    let acc = kind.accum_v(s, kind.accum_v(s, above, mid), below);
                    above = below;
                    let o = oy * ow + col;
                    // SAFETY: `col + n ≤ ow`, inside row `oy`.
                    unsafe { s.store(y[o..o + n].as_mut_ptr(), acc) };
                }
                // LOOP over the last output rows, whose windows the bottom cuts
                for oy in whole.max(1)..oh {
                    let r = 2 * oy - pad;
                    let mut acc = above;
                    for r in r + 1..(r + 3).min(h) {
                        above = row.across(s, x, r);
                        acc = kind.accum_v(s, acc, above);
                    }
                    let o = oy * ow + col;
                    // SAFETY: `col + n ≤ ow`, inside row `oy`.
                    unsafe { s.store(y[o..o + n].as_mut_ptr(), acc) };
                }
            }
        }
        // LOOP over output rows: the columns left (every column without strips)
        for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
            let (r0, r1, _) = window(oy, 3, 2, pad, h);
            for ox in columns.clone() {
                let (c0, c1, _) = window(ox, 3, 2, pad, w);
                let mut acc = kind.init();
                for r in r0..r1 {
                    for &v in &x[r * w + c0..r * w + c1] {
                        acc = kind.accum(acc, v);
                    }
                }
                out[ox] = acc;
            }
        }
    }
}

/// One strip of `LANES` output columns of [`max_3x3_s2`], from output column `at / 2`: its
/// windows' columns in each input row of width `w`.
#[derive(Clone, Copy)]
struct Row {
    at: usize,
    w: usize,
    pad: usize,
}

impl Row {
    /// The max of each window's three columns in input row `r` of the plane `x`, in order.
    /// Without padding the left and middle taps are the pairs at `at`, the right taps the odd
    /// half of the pairs one column on; with padding 1 the middle and right taps are the pairs
    /// at `at`, and the left taps the right ones moved up a lane, the value before `at` (or the
    /// padding's −∞, which any value or NaN replaces) shifted in.
    ///
    /// # Panics
    /// If the row does not hold the `2·LANES` values from `at` (and one more without padding).
    #[inline(always)]
    fn across<S: Simd>(self, s: S, x: &[f32], r: usize) -> S::V {
        let kind = PoolKind::Max;
        let n = S::LANES;
        let row = &x[r * self.w..(r + 1) * self.w];
        if self.pad == 0 {
            let x = &row[self.at..self.at + 2 * n + 1];
            // SAFETY: `x` holds `2n + 1` values: `2n` from its start and from one on.
            let ((left, mid), (_, right)) = unsafe {
                (
                    s.load_deinterleaved(x.as_ptr()),
                    s.load_deinterleaved(x[1..].as_ptr()),
                )
            };
            return kind.accum_v(s, kind.accum_v(s, left, mid), right);
        }
        let x = &row[self.at..self.at + 2 * n];
        // SAFETY: `x` holds `2n` values.
        let (mid, right) = unsafe { s.load_deinterleaved(x.as_ptr()) };
        let before = match self.at.checked_sub(1) {
            Some(i) => row[i],
            None => f32::NEG_INFINITY,
        };
        let left = s.shift_in(s.splat(&before), right);
        kind.accum_v(s, kind.accum_v(s, left, mid), right)
    }
}

/// Any window, separably: each input row is reduced horizontally once, into a ring of `KH`
/// rows of `OW` values, and each output row folds its window's rows of the ring. Both passes
/// keep the row-major order within a window, so max pooling picks the same element as a
/// window-by-window fold.
#[inline(always)]
fn pool_separable<S: Simd>(
    s: S,
    kind: PoolKind,
    p: &Pool2dParams,
    input: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let planes = out.len() / (h_out * w_out);
    let kh = kh.max(1);
    let (ring, divisor) =
        scratch.at_least((kh + 1) * w_out)[..(kh + 1) * w_out].split_at_mut(kh * w_out);
    // The column factor of each output's divisor.
    for (ox, d) in divisor.iter_mut().enumerate() {
        let (c0, c1, padded) = window(ox, kw, sw, pw, w_in);
        *d = kind.extent(padded, c1 - c0) as f32;
    }
    let cols = interior(kw, sw, pw, w_in, w_out);
    // LOOP over (sample, channel) planes
    for plane in 0..planes {
        let x = &input[plane * h_in * w_in..(plane + 1) * h_in * w_in];
        let y = &mut out[plane * h_out * w_out..(plane + 1) * h_out * w_out];
        // Input rows below `next` have been reduced; the next one goes to slot `free`, so a
        // window's rows sit in consecutive slots (mod KH) ending just before `free`.
        let (mut next, mut free) = (0, 0);
        // LOOP over output rows
        for (oy, y_row) in y.chunks_exact_mut(w_out).enumerate() {
            let (r0, r1, padded_h) = window(oy, kh, sh, ph, h_in);
            // LOOP over input rows new to this window
            for r in next.max(r0)..r1 {
                let slot = &mut ring[free * w_out..(free + 1) * w_out];
                reduce_row(
                    s,
                    kind,
                    &x[r * w_in..(r + 1) * w_in],
                    [kw, sw, pw],
                    cols,
                    slot,
                );
                free = if free + 1 == kh { 0 } else { free + 1 };
            }
            next = next.max(r1);
            let first = free + kh - (r1 - r0);
            let first = if first >= kh { first - kh } else { first };
            let slot = |i: usize| {
                let s = if first + i >= kh {
                    first + i - kh
                } else {
                    first + i
                };
                &ring[s * w_out..(s + 1) * w_out]
            };
            let n = S::LANES;
            match r1 - r0 {
                0 => y_row.fill(kind.init()),
                1 => y_row.copy_from_slice(slot(0)),
                rows @ 2..=3 if w_out >= n => {
                    let (a, b, c) = (slot(0), slot(1), slot(rows - 1));
                    // LOOP over vectors of output columns
                    for i in vector_starts(w_out, n) {
                        // SAFETY: `i + n ≤ w_out`, the length of every row here.
                        unsafe {
                            let acc = kind.accum_v(
                                s,
                                s.load(a[i..i + n].as_ptr()),
                                s.load(b[i..i + n].as_ptr()),
                            );
                            let acc = if rows == 3 {
                                kind.accum_v(s, acc, s.load(c[i..i + n].as_ptr()))
                            } else {
                                acc
                            };
                            s.store(y_row[i..i + n].as_mut_ptr(), acc);
                        }
                    }
                }
                3 => {
                    let (a, b, c) = (slot(0), slot(1), slot(2));
                    for (((o, &a), &b), &c) in y_row.iter_mut().zip(a).zip(b).zip(c) {
                        *o = kind.accum(kind.accum(a, b), c);
                    }
                }
                rows => {
                    let (a, b) = (slot(0), slot(1));
                    for ((o, &a), &b) in y_row.iter_mut().zip(a).zip(b) {
                        *o = kind.accum(a, b);
                    }
                    // LOOP over the window's remaining rows
                    for i in 2..rows {
                        for (o, &v) in y_row.iter_mut().zip(slot(i)) {
                            *o = kind.accum(*o, v);
                        }
                    }
                }
            }
            if let PoolKind::Avg { .. } = kind {
                let dh = kind.extent(padded_h, r1 - r0) as f32;
                for (o, &d) in y_row.iter_mut().zip(divisor.iter()) {
                    *o /= dh * d;
                }
            }
        }
    }
}

/// `out[ox]` = the fold of input row `x` over the columns of window `ox`, for `[KW, SW, PW]`;
/// `cols` are the interior outputs (see [`interior`]).
#[inline(always)]
fn reduce_row<S: Simd>(
    s: S,
    kind: PoolKind,
    x: &[f32],
    [kw, sw, pw]: [usize; 3],
    cols: (usize, usize),
    out: &mut [f32],
) {
    let (lo, hi) = cols;
    // LOOP over border columns
    for ox in (0..lo).chain(hi..out.len()) {
        let (c0, c1, _) = window(ox, kw, sw, pw, x.len());
        out[ox] = x[c0..c1].iter().fold(kind.init(), |a, &v| kind.accum(a, v));
    }
    let n = hi - lo;
    if n == 0 {
        return;
    }
    // Interior windows start at `(lo + i)·SW − PW` and lie inside `x`.
    let start = lo * sw - pw;
    let x = &x[start..start + (n - 1) * sw + kw];
    let out = &mut out[lo..hi];
    let lanes = S::LANES;
    match (kw, sw) {
        (2..=3, 2) if n >= lanes => {
            // LOOP over vectors of outputs: taps `x[2i]`, `x[2i+1]` and (for three) the odd
            // half of the values from `x[2i+1]`, i.e. `x[2i+2]`.
            for i in vector_starts(n, lanes) {
                // SAFETY: `i + lanes ≤ n` and `x` holds `2n + kw − 2` values, so the `2·lanes`
                // read from `2i` (and for three taps from `2i + 1`) lie inside it; the
                // `lanes` written lie inside `out`.
                unsafe {
                    let (e, o) = s.load_deinterleaved(x[2 * i..2 * (i + lanes)].as_ptr());
                    let mut acc = kind.accum_v(s, kind.first_v(s, e), o);
                    if kw == 3 {
                        let at = 2 * i + 1;
                        let (_, third) = s.load_deinterleaved(x[at..at + 2 * lanes].as_ptr());
                        acc = kind.accum_v(s, acc, third);
                    }
                    s.store(out[i..i + lanes].as_mut_ptr(), acc);
                }
            }
        }
        (3, 2) => {
            // Pairs `x[2i], x[2i+1]` first, then the third taps `x[2i+2]`: both loops load
            // whole vectors and deinterleave them.
            for (o, c) in out.iter_mut().zip(x.chunks_exact(2)) {
                *o = kind.accum(kind.first(c[0]), c[1]);
            }
            let (last, body) = out.split_last_mut().expect("n > 0");
            for (o, c) in body.iter_mut().zip(x[2..].chunks_exact(2)) {
                *o = kind.accum(*o, c[0]);
            }
            *last = kind.accum(*last, x[2 * n]);
        }
        (2, 2) => {
            for (o, c) in out.iter_mut().zip(x.chunks_exact(2)) {
                *o = kind.accum(kind.first(c[0]), c[1]);
            }
        }
        (_, 1) => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = kind.first(v);
            }
            // LOOP over window columns
            for t in 1..kw {
                for (o, &v) in out.iter_mut().zip(&x[t..]) {
                    *o = kind.accum(*o, v);
                }
            }
        }
        _ => strided_taps(kind, x, kw, sw, out),
    }
}

/// [`reduce_row`]'s interior for any window and stride, tap by tap over all outputs.
#[inline(always)]
fn strided_taps(kind: PoolKind, x: &[f32], kw: usize, sw: usize, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x.iter().step_by(sw)) {
        *o = kind.first(v);
    }
    // LOOP over window columns
    for t in 1..kw {
        for (o, &v) in out.iter_mut().zip(x[t..].iter().step_by(sw)) {
            *o = kind.accum(*o, v);
        }
    }
}

const LANES: usize = 8;

/// Max of `x` with NaN propagation, in `LANES` independent lanes so it vectorises.
fn max_all(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = PoolKind::Max.accum(*l, v);
        }
    }
    let acc = tail
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| PoolKind::Max.accum(a, v));
    lanes.iter().fold(acc, |a, &v| PoolKind::Max.accum(a, v))
}

/// Sum of `x` in `LANES` independent lanes so it vectorises.
fn sum_all(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    std::thread_local! {
        /// Calls of [`max_3x3_s2`] on this thread.
        pub(super) static MAX_3X3_S2: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    use super::*;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    const MAX: PoolKind = PoolKind::Max;
    const AVG_PAD: PoolKind = PoolKind::Avg {
        count_include_pad: true,
    };
    const AVG: PoolKind = PoolKind::Avg {
        count_include_pad: false,
    };

    fn params(
        kind: PoolKind,
        channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        in_hw: [usize; 2],
    ) -> Pool2dParams {
        let axis = |a: usize| {
            out_len(in_hw[a], kernel[a], stride[a], padding[a], 1, ceil_mode)
                .expect("the case fits its input")
        };
        Pool2dParams {
            kind,
            channels,
            kernel,
            stride,
            padding,
            ceil_mode,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// Window by window in signed coordinates, with PyTorch's divisor rules spelled out.
    fn naive(p: &Pool2dParams, n: usize, x: &[f32]) -> Vec<f32> {
        let [h, w] = p.in_hw.map(|v| v as isize);
        let [kh, kw] = p.kernel.map(|v| v as isize);
        let [ph, pw] = p.padding.map(|v| v as isize);
        let [oh, ow] = p.out_hw;
        let mut out = Vec::new();
        for plane in 0..n * p.channels {
            let x = &x[plane * (h * w) as usize..];
            for oy in 0..oh {
                for ox in 0..ow {
                    let y0 = (oy * p.stride[0]) as isize - ph;
                    let x0 = (ox * p.stride[1]) as isize - pw;
                    let (mut max, mut sum, mut real) = (f32::NEG_INFINITY, 0.0f64, 0);
                    for iy in y0..y0 + kh {
                        for ix in x0..x0 + kw {
                            if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                continue;
                            }
                            let v = x[(iy * w + ix) as usize];
                            if v.is_nan() || v > max {
                                max = v;
                            }
                            sum += v as f64;
                            real += 1;
                        }
                    }
                    let padded = ((y0 + kh).min(h + ph) - y0) * ((x0 + kw).min(w + pw) - x0);
                    out.push(match p.kind {
                        PoolKind::Max => max,
                        PoolKind::Avg {
                            count_include_pad: true,
                        } => (sum / padded as f64) as f32,
                        PoolKind::Avg {
                            count_include_pad: false,
                        } => (sum / real as f64) as f32,
                    });
                }
            }
        }
        out
    }

    /// `(channels, kernel, stride, padding, ceil_mode, [h, w], n)`.
    type Case = (
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        bool,
        [usize; 2],
        usize,
    );

    const CASES: &[Case] = &[
        (3, [2, 2], [2, 2], [0, 0], false, [8, 8], 1),
        (3, [2, 2], [2, 2], [0, 0], true, [5, 5], 2),
        (2, [2, 2], [2, 2], [0, 0], false, [7, 9], 2),
        (1, [2, 2], [2, 2], [0, 0], true, [6, 4], 1),
        (2, [3, 3], [2, 2], [1, 1], true, [37, 37], 1),
        (2, [3, 3], [2, 2], [1, 1], false, [37, 37], 3),
        (4, [3, 3], [2, 2], [1, 1], true, [6, 6], 1),
        (2, [3, 2], [1, 2], [1, 0], true, [7, 5], 2),
        (1, [2, 4], [3, 3], [1, 2], true, [10, 11], 1),
        (3, [3, 3], [1, 1], [1, 1], false, [4, 6], 1),
        (2, [1, 1], [2, 2], [0, 0], false, [5, 4], 2),
        (2, [1, 1], [2, 2], [0, 0], true, [5, 4], 1),
        (5, [3, 3], [3, 3], [1, 1], true, [1, 1], 1),
        (2, [2, 2], [5, 5], [1, 1], true, [9, 9], 1),
        (3, [7, 7], [7, 7], [0, 0], false, [7, 7], 2),
        (2, [5, 3], [5, 3], [0, 0], false, [5, 3], 3),
        (4, [1, 1], [1, 1], [0, 0], false, [1, 1], 2),
        (2, [13, 13], [13, 13], [0, 0], true, [13, 13], 1),
        (3, [3, 3], [2, 2], [0, 0], false, [9, 17], 2),
        (2, [3, 3], [2, 2], [0, 0], true, [8, 8], 1),
        (2, [3, 3], [2, 2], [1, 1], false, [1, 1], 1),
        (1, [3, 3], [2, 2], [1, 1], true, [2, 40], 1),
        (3, [2, 2], [2, 2], [0, 0], false, [2, 9], 1),
        (2, [2, 2], [2, 2], [0, 0], false, [4, 3], 1),
        (2, [2, 2], [2, 2], [1, 1], true, [7, 6], 1),
        (2, [3, 3], [3, 2], [1, 0], false, [10, 33], 1),
        (1, [5, 5], [1, 1], [2, 2], false, [6, 19], 2),
        (1, [4, 3], [1, 3], [2, 1], true, [5, 20], 1),
    ];

    #[test]
    fn matches_naive_windows_over_awkward_shapes() {
        for (seed, &(c, k, s, pad, ceil, hw, n)) in CASES.iter().enumerate() {
            for kind in [MAX, AVG_PAD, AVG] {
                let p = params(kind, c, k, s, pad, ceil, hw);
                let x = rand_vec(n * p.in_len(), seed as u64);
                let want = naive(&p, n, &x);
                crate::simd::testing::each_level(|_| {
                    let mut out = vec![f32::NAN; n * p.out_len()];
                    pool2d(&p, n, &x, &mut out);
                    assert_close(&out, &want, 1e-6);
                });
            }
        }
    }

    /// The channel-last kernel gives the channels-first kernels' bits for every pool it takes
    /// (max over the awkward windows, global average and max), at every level, for channel
    /// counts below, at, between and past whole vectors, with NaNs (payloads differ), signed
    /// zeros and ties in the input; the windowed average is refused.
    #[test]
    fn channel_last_pools_give_the_channels_first_bits() {
        let to_last = |x: &[f32], n: usize, c: usize| {
            let hw = x.len() / n / c;
            let mut y = vec![0.0; x.len()];
            for s in 0..n {
                for ch in 0..c {
                    for i in 0..hw {
                        y[(s * hw + i) * c + ch] = x[(s * c + ch) * hw + i];
                    }
                }
            }
            y
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut cases: Vec<Pool2dParams> = Vec::new();
        for &(_, k, s, pad, ceil, hw, _) in CASES {
            cases.push(params(MAX, 1, k, s, pad, ceil, hw));
        }
        for hw in [[1, 1], [3, 5], [8, 8], [7, 9], [28, 28]] {
            for kind in [MAX, AVG, AVG_PAD] {
                cases.push(params(kind, 1, hw, hw, [0, 0], false, hw));
            }
        }
        for (seed, case) in cases.iter().enumerate() {
            for c in [1, 3, 8, 16, 17, 40] {
                let p = Pool2dParams {
                    channels: c,
                    ..*case
                };
                assert!(takes_channels_last(&p), "{p:?}");
                let n = 2;
                let mut x = rand_vec(n * p.in_len(), seed as u64 * 7 + c as u64);
                // Specials: NaNs with two payloads (for max: a global average would be NaN
                // nearly everywhere and show nothing else), zeros of both signs, exact ties.
                let nan = p.kind == PoolKind::Max;
                for (i, v) in x.iter_mut().enumerate() {
                    *v = match (i * 7 + seed) % 23 {
                        0 if nan => f32::from_bits(0x7fc0_0001),
                        1 if nan => f32::from_bits(0xffc0_0002),
                        2..=5 => 0.0,
                        6..=9 => -0.0,
                        10 => 0.5,
                        _ => *v,
                    };
                }
                let want = {
                    let mut y = vec![f32::NAN; n * p.out_len()];
                    pool2d(&p, n, &x, &mut y);
                    to_last(&y, n, c)
                };
                let x_last = to_last(&x, n, c);
                // A sum's NaN payload depends on which operand the instruction names first,
                // which the compiler may swap: averages compare NaN as NaN.
                let canon = |v: &[f32]| match p.kind {
                    PoolKind::Max => bits(v),
                    PoolKind::Avg { .. } => bits(v)
                        .into_iter()
                        .map(|b| {
                            if f32::from_bits(b).is_nan() {
                                0x7fc0_0000
                            } else {
                                b
                            }
                        })
                        .collect(),
                };
                crate::simd::testing::each_level(|level| {
                    let mut got = vec![f32::NAN; n * p.out_len()];
                    pool2d_channels_last(&p, n, &x_last, &mut got);
                    assert_eq!(canon(&got), canon(&want), "{p:?} at {}", level.name());
                });
            }
        }
        let avg = params(AVG, 4, [2, 2], [2, 2], [0, 0], false, [4, 4]);
        assert!(!takes_channels_last(&avg));
        let refused = std::panic::catch_unwind(|| {
            pool2d_channels_last(&avg, 1, &[0.0; 64], &mut [0.0; 16]);
        });
        assert!(refused.is_err(), "a channel-last windowed average");
    }

    /// Every `(kernel, stride, padding)` a fast path or a specialised row loop takes, and a few
    /// that take none, on every width 1..=72 (narrower than a vector, one and several whole
    /// vectors of 16 outputs, and a last vector overlapping the one before; odd and even) and a
    /// few heights, with and without `ceil_mode`, for every kind; max pooling also sees NaNs
    /// sprinkled through the input and signed zeros, and must match bit for bit.
    #[test]
    fn fast_paths_match_naive_over_widths() {
        let windows: [(usize, usize, usize); 9] = [
            (3, 2, 1),
            (3, 2, 0),
            (2, 2, 0),
            (2, 2, 1),
            (3, 1, 1),
            (2, 1, 0),
            (5, 3, 2),
            (4, 4, 1),
            // Whole 2×2 windows at another stride: not the pool(2) fast path.
            (2, 3, 0),
        ];
        for (seed, &(k, s, pad)) in windows.iter().enumerate() {
            for w in 1..=72 {
                for h in [1, 2, 3, 4, 7, 12] {
                    for ceil in [false, true] {
                        let ok = |len| out_len(len, k, s, pad, 1, ceil).is_some_and(|o| o > 0);
                        if !ok(h) || !ok(w) {
                            continue;
                        }
                        for kind in [MAX, AVG_PAD, AVG] {
                            let (c, n) = (2, 1);
                            let p = params(kind, c, [k, k], [s, s], [pad, pad], ceil, [h, w]);
                            let mut x = rand_vec(n * p.in_len(), (seed * 64 + w) as u64);
                            if kind == MAX {
                                for i in (w * h / 3..x.len()).step_by(7 + w) {
                                    x[i] = f32::NAN;
                                }
                                // Ties of −0 and +0 where every value around is negative.
                                for i in (0..x.len()).step_by(5) {
                                    x[i] = -x[i].abs();
                                }
                                for i in (1..x.len()).step_by(3) {
                                    x[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
                                }
                            }
                            let want = naive(&p, n, &x);
                            crate::simd::testing::each_level(|level| {
                                let mut out = vec![f32::NAN; n * p.out_len()];
                                pool2d(&p, n, &x, &mut out);
                                let what = format!(
                                    "{kind:?} k{k} s{s} p{pad} ceil={ceil} {h}x{w} at {}",
                                    level.name()
                                );
                                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                                    let ok = if kind == MAX {
                                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                                    } else {
                                        (a - b).abs() <= 1e-6 * (1.0 + b.abs())
                                    };
                                    assert!(ok, "{what}: index {i}: got {a}, expected {b}");
                                }
                            });
                        }
                    }
                }
            }
        }
    }

    /// The engine may pool a run of whole planes on each thread: the result of one call over
    /// planes `[a, b)` with `channels = b − a` equals that part of the call over all planes.
    #[test]
    fn sub_ranges_of_planes_pool_alike() {
        for &(c, k, s, pad, ceil, hw, n) in CASES {
            for kind in [MAX, AVG_PAD, AVG] {
                let p = params(kind, c, k, s, pad, ceil, hw);
                let x = rand_vec(n * p.in_len(), 11);
                let mut whole = vec![0.0; n * p.out_len()];
                pool2d(&p, n, &x, &mut whole);
                let (hw_in, hw_out) = (hw[0] * hw[1], p.out_hw[0] * p.out_hw[1]);
                let planes = n * c;
                for (a, b) in [(0, 1), (1, planes), (planes / 2, planes)] {
                    if a >= b {
                        continue;
                    }
                    let part = Pool2dParams {
                        channels: b - a,
                        ..p
                    };
                    let mut out = vec![0.0; (b - a) * hw_out];
                    pool2d(&part, 1, &x[a * hw_in..b * hw_in], &mut out);
                    assert_eq!(out, whole[a * hw_out..b * hw_out], "{p:?} planes {a}..{b}");
                }
            }
        }
    }

    /// ResNet's stem pool (max, 3×3, stride 2, padding 0 or 1) runs its own kernel
    /// ([`max_3x3_s2`], whose results `fast_paths_match_naive_over_widths` checks); averages,
    /// `ceil_mode`, other paddings and other windows do not.
    #[test]
    fn the_stem_pool_runs_its_own_kernel() {
        for (kind, k, s, pad, ceil, fast) in [
            (MAX, 3, 2, 1, false, true),
            (MAX, 3, 2, 0, false, true),
            (AVG_PAD, 3, 2, 1, false, false),
            (AVG, 3, 2, 0, false, false),
            (MAX, 3, 2, 1, true, false),
            (MAX, 5, 2, 2, false, false),
            (MAX, 3, 1, 1, false, false),
            (MAX, 2, 2, 0, false, false),
        ] {
            let p = params(kind, 2, [k, k], [s, s], [pad, pad], ceil, [9, 40]);
            let x = rand_vec(p.in_len(), 3);
            let mut out = vec![0.0; p.out_len()];
            MAX_3X3_S2.set(0);
            pool2d(&p, 1, &x, &mut out);
            assert_eq!(MAX_3X3_S2.get() > 0, fast, "{p:?}");
        }
        // Rows and columns padded differently take the general kernel.
        let mut p = params(MAX, 1, [3, 3], [2, 2], [1, 1], false, [9, 40]);
        p.padding = [1, 0];
        p.out_hw = [5, 19];
        let x = rand_vec(p.in_len(), 4);
        let mut out = vec![0.0; p.out_len()];
        MAX_3X3_S2.set(0);
        pool2d(&p, 1, &x, &mut out);
        assert_eq!(MAX_3X3_S2.get(), 0);
    }

    /// Max pooling picks the first maximal element in row-major order, as PyTorch's NCHW
    /// kernel does, so a window holding both zeros returns the sign of the first one.
    #[test]
    fn max_ties_between_zeros_keep_row_major_order() {
        // 3×3 s2 p1 on 4×4: the window of output (1, 1) covers rows 1..4, columns 1..4.
        let mut x = [-1.0f32; 16];
        x[4 + 2] = -0.0; // row 1, column 2
        x[2 * 4 + 1] = 0.0; // row 2, column 1
        let p = params(MAX, 1, [3, 3], [2, 2], [1, 1], false, [4, 4]);
        let mut out = [0.0; 4];
        pool2d(&p, 1, &x, &mut out);
        assert!(out[3] == 0.0 && out[3].is_sign_negative(), "{out:?}");
    }

    #[test]
    fn ceil_mode_output_lengths_follow_pytorch() {
        assert_eq!(
            params(MAX, 1, [2, 2], [2, 2], [0, 0], true, [5, 5]).out_hw,
            [3, 3]
        );
        assert_eq!(
            params(MAX, 1, [3, 3], [2, 2], [1, 1], true, [37, 37]).out_hw,
            [19, 19]
        );
        assert_eq!(
            params(MAX, 1, [3, 3], [2, 2], [1, 1], true, [6, 6]).out_hw,
            [4, 4]
        );
    }

    #[test]
    fn avg_k2_s1_p1_divisors_by_hand() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 9];
        let p = params(AVG_PAD, 1, [2, 2], [1, 1], [1, 1], false, [2, 2]);
        pool2d(&p, 1, &x, &mut out);
        assert_eq!(out, [0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0]);
        let p = Pool2dParams { kind: AVG, ..p };
        pool2d(&p, 1, &x, &mut out);
        assert_eq!(out, [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
    }

    #[test]
    fn ceil_overhang_is_not_counted_by_hand() {
        // 2×5 input, k2 s2 ceil: the last window holds only column 4.
        let x = [1.0, 5.0, 2.0, 0.0, 7.0, 3.0, -1.0, 4.0, 6.0, -2.0];
        let mut out = [0.0; 3];
        for (kind, want) in [
            (MAX, [5.0, 6.0, 7.0]),
            (AVG_PAD, [2.0, 3.0, 2.5]),
            (AVG, [2.0, 3.0, 2.5]),
        ] {
            let p = params(kind, 1, [2, 2], [2, 2], [0, 0], true, [2, 5]);
            assert_eq!(p.out_hw, [1, 3]);
            pool2d(&p, 1, &x, &mut out);
            assert_eq!(out, want, "{kind:?}");
        }
        // 1×6 input, k3 s2 p1 ceil: the last window starts at 5 and covers 5 and padding 6,
        // then overhangs past the padded end; PyTorch divides by 2 with count_include_pad.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0; 4];
        let p = params(AVG_PAD, 1, [1, 3], [1, 2], [0, 1], true, [1, 6]);
        assert_eq!(p.out_hw, [1, 4]);
        pool2d(&p, 1, &x, &mut out);
        assert_eq!(out, [1.0, 3.0, 5.0, 3.0]);
    }

    /// `interior` is exactly the outputs whose windows lie inside the input (by brute force
    /// over small axes): the border the generic path takes is no wider than it must be.
    #[test]
    fn interior_is_exactly_the_whole_windows() {
        for k in 1..6 {
            for s in 1..5 {
                for p in 0..k {
                    for len in 1..24 {
                        if len + 2 * p < k {
                            continue;
                        }
                        let out = (len + 2 * p - k) / s + 1;
                        let whole: Vec<usize> = (0..out)
                            .filter(|&o| o * s >= p && o * s - p + k <= len)
                            .collect();
                        let (lo, hi) = interior(k, s, p, len, out);
                        let want = match (whole.first(), whole.last()) {
                            (Some(&a), Some(&b)) => (a, b + 1),
                            _ => (lo, lo),
                        };
                        assert_eq!((lo, hi), want, "k {k}, s {s}, p {p}, len {len}");
                        assert!(whole.len() == hi - lo, "contiguous");
                    }
                }
            }
        }
    }

    #[test]
    fn max_propagates_nan() {
        let x = [f32::NAN, 1.0, 2.0, 3.0, 4.0, f32::NAN, 9.0, 8.0];
        let mut out = [0.0; 4];
        let p = params(MAX, 1, [1, 2], [1, 2], [0, 0], false, [1, 8]);
        pool2d(&p, 1, &x, &mut out);
        assert!(out[0].is_nan() && out[2].is_nan(), "{out:?}");
        assert_eq!([out[1], out[3]], [3.0, 9.0]);
    }

    #[test]
    fn global_pools_reduce_each_plane() {
        for (hw, nan_at) in [([7, 7], 13), ([5, 3], 14), ([1, 1], 0), ([9, 9], 80)] {
            let (c, n) = (3, 2);
            let mut x = rand_vec(n * c * hw[0] * hw[1], 5);
            for kind in [MAX, AVG_PAD, AVG] {
                let p = params(kind, c, hw, hw, [0, 0], false, hw);
                assert_eq!(p.out_hw, [1, 1]);
                let mut out = vec![0.0; n * c];
                pool2d(&p, n, &x, &mut out);
                assert_close(&out, &naive(&p, n, &x), 1e-6);
            }
            x[hw[0] * hw[1] + nan_at] = f32::NAN;
            let p = params(MAX, c, hw, hw, [0, 0], false, hw);
            let mut out = vec![0.0; n * c];
            pool2d(&p, n, &x, &mut out);
            assert!(!out[0].is_nan() && out[1].is_nan(), "{hw:?}: {out:?}");
        }
    }
}
