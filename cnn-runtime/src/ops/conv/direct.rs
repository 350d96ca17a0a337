//! Direct convolution for layers with few input channels (a network's RGB or grey-scale stem):
//! no im2col matrix. Each block of [`R`] output channels × `P·16` output columns of one output
//! row sums its `C·KH·KW` taps in registers, one vector load of input and `R` broadcast weights
//! per tap.
//!
//! The input is first copied once per sample into zero-padded rows split into column phases
//! (`phase[c, py, r, i] = padded[c, py, i·SW + r]`), so that the `SW` strided columns a tap
//! reads are contiguous, and the weights are packed once per layer as `[c_out / R, taps, R]`.
//! With `R = 8` and 32 columns the accumulators take 16 AVX-512 registers.

#[cfg(feature = "std")]
use std::vec::Vec;

use super::{Conv2dParams, Epilogue, PostOp};
use crate::ops::activation::Activation;
use crate::ops::pool::{Pool2dParams, PoolKind};
use crate::simd::Simd;
use crate::store::Scratch;
use crate::tuning::{DIRECT_MAX_C_IN, DIRECT_MIN_MACS_PER_SPLIT};

/// Output channels per register block.
pub const R: usize = 8;
/// Output columns per vector.
const LANES: usize = 16;

/// Whether `p` runs directly ([`Algorithm::Direct`](super::Algorithm::Direct)): one group of at
/// most 8 input channels, no dilation, a kernel larger than 1×1 no wider than 16, stride ≤ 4.
pub const fn applies(p: &Conv2dParams) -> bool {
    p.groups == 1
        && p.c_in <= DIRECT_MAX_C_IN
        && p.dilation[0] == 1
        && p.dilation[1] == 1
        && (p.kernel[0] > 1 || p.kernel[1] > 1)
        && p.kernel[1] <= 16
        && p.stride[0] <= 4
        && p.stride[1] <= 4
        && p.out_hw[0] > 0
        && p.out_hw[1] > 0
}

/// Elements of one phase row: blocks of up to 32 columns plus the taps' reach past them.
const fn phase_row(p: &Conv2dParams) -> usize {
    p.out_hw[1].next_multiple_of(2 * LANES) + (p.kernel[1] - 1) / p.stride[1] + 1
}

/// Scratch elements for one sample: the padded, phase-split input `[C, H + 2·PH, SW, row]`.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    p.c_in * (p.in_hw[0] + 2 * p.padding[0]) * p.stride[1] * phase_row(p)
}

/// Elements of the packed weights, `[⌈c_out / R⌉, C·KH·KW, R]`.
pub const fn weight_len(p: &Conv2dParams) -> usize {
    p.c_out.div_ceil(R) * p.fan_in() * R
}

/// Packs PyTorch's `[c_out, c_in, KH, KW]` weights as `[⌈c_out / R⌉, C·KH·KW, R]`, zero for
/// the channels past `c_out` in the last block.
#[cfg(feature = "std")]
pub fn pack_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let mut packed = Vec::new();
    pack_weights_into(p, weight, &mut packed);
    packed
}

/// [`pack_weights`] into `packed`, reusing its allocation (training updates the weights every
/// step).
#[cfg(feature = "std")]
pub(crate) fn pack_weights_into(p: &Conv2dParams, weight: &[f32], packed: &mut Vec<f32>) {
    packed.clear();
    packed.resize(weight_len(p), 0.0);
    pack_weights_to(p, weight, packed);
}

/// [`pack_weights`] into `packed`, which holds exactly [`weight_len`] values.
///
/// # Panics
/// If `packed` or `weight` is shorter than its layout.
pub(crate) fn pack_weights_to(p: &Conv2dParams, weight: &[f32], packed: &mut [f32]) {
    let k = p.fan_in();
    let packed = &mut packed[..weight_len(p)];
    packed.fill(0.0);
    for (o, filter) in weight.chunks_exact(k).take(p.c_out).enumerate() {
        let block = &mut packed[(o / R) * k * R..(o / R + 1) * k * R];
        for (t, &w) in filter.iter().enumerate() {
            block[t * R + o % R] = w;
        }
    }
}

/// `out = epilogue(bias + conv(input, weight))` for `n` samples, like
/// [`im2col::conv2d`](super::im2col::conv2d), with `packed` from [`pack_weights`]. With
/// `threads > 1` (on a worker of the pool) the channel blocks of large layers are shared out.
///
/// # Panics
/// If a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let w = (packed, bias);
    conv2d_with(p, None, n, input, w, epilogue, threads, out, scratch);
}

/// Whether [`conv2d_pooled`] takes `pool` after `p`: a direct convolution followed by a 2×2,
/// stride-2 max or average pool without padding over its `c_out` planes, every window whole.
pub const fn pools(p: &Conv2dParams, pool: &Pool2dParams) -> bool {
    let [oh, ow] = pool.out_hw;
    applies(p)
        && pool.kernel[0] == 2
        && pool.kernel[1] == 2
        && pool.stride[0] == 2
        && pool.stride[1] == 2
        && pool.padding[0] == 0
        && pool.padding[1] == 0
        && pool.channels == p.c_out
        && pool.in_hw[0] == p.out_hw[0]
        && pool.in_hw[1] == p.out_hw[1]
        && oh > 0
        && ow > 0
        && 2 * oh <= p.out_hw[0]
        && 2 * ow <= p.out_hw[1]
}

/// [`conv2d`] followed by `pool` ([`pools`]), in one pass: each window's two rows are folded
/// in registers as each block's two output rows come out of its sums, and only `out: [n,
/// c_out, OH / 2, OW / 2]` is written. The same bits as [`conv2d`] then
/// [`pool2d`](crate::ops::pool::pool2d). The last row and column of an odd count, which the
/// pool drops, are not computed. The epilogue's activation is ReLU or none (the others are
/// applied to whole planes).
///
/// # Panics
/// If `pool` is not a pool [`pools`] takes, the epilogue has a residual or an activation other
/// than ReLU, or a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the pool
pub fn conv2d_pooled(
    p: &Conv2dParams,
    pool: &Pool2dParams,
    n: usize,
    input: &[f32],
    (packed, bias): (&[f32], Option<&[f32]>),
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    assert!(
        pools(p, pool),
        "the pool does not fuse into the direct convolution"
    );
    assert!(
        epilogue.residual.is_none() && matches!(epilogue.act, None | Some(Activation::Relu)),
        "a pooled convolution takes no residual and no activation but ReLU"
    );
    #[cfg(test)]
    tests::POOLED.set(tests::POOLED.get() + 1);
    let w = (packed, bias);
    conv2d_with(p, Some(pool), n, input, w, epilogue, threads, out, scratch);
}

/// [`conv2d`], or [`conv2d_pooled`] with `pool`.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the pool
fn conv2d_with(
    p: &Conv2dParams,
    pool: Option<&Pool2dParams>,
    n: usize,
    input: &[f32],
    (packed, bias): (&[f32], Option<&[f32]>),
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let (out_len, plane) = match pool {
        Some(q) => (q.out_len(), q.out_hw[0] * q.out_hw[1]),
        None => (p.out_len(), p.out_hw[0] * p.out_hw[1]),
    };
    let phases = checked_phases(p, n, input, bias, epilogue, (out, out_len), scratch);
    assert!(packed.len() >= weight_len(p), "packed weights too short");
    let blocks = p.c_out.div_ceil(R);
    let parts = if p.macs() >= DIRECT_MIN_MACS_PER_SPLIT {
        threads.clamp(1, blocks)
    } else {
        1
    };
    let (n_parts, per) = (parts, blocks.div_ceil(parts));
    let kind = pool.map(|q| q.kind);
    // LOOP over samples
    for (sample, (x, y)) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(out_len))
        .take(n)
        .enumerate()
    {
        split_phases(p, x, phases);
        let phases = &*phases;
        // LOOP over groups of channel blocks, shared out over threads
        let parts = y[..out_len].chunks_mut(per * R * plane);
        crate::threads::for_each(n_parts, parts, |i, y| {
            let first = i * per * R;
            let w = &packed[i * per * p.fan_in() * R..];
            let plane0 = sample * p.c_out + first;
            run(p, kind, phases, (w, bias), epilogue, [first, plane0], y);
        });
    }
}

/// The checks every form of the direct convolution starts with (a convolution it applies to,
/// input, output of `out_len` per sample, bias and epilogue long enough for `n` samples), and the
/// phase-split input's scratch, zeroed once per call (the scratch is shared with other layers):
/// the padding, and the slack past the last column, stay zero for every sample. (Zeroing only
/// those per sample, a few short fills per row, made tiny 5% slower.)
///
/// # Panics
/// If a check fails.
fn checked_phases<'s>(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    (out, out_len): (&[f32], usize),
    scratch: &'s mut (impl Scratch + ?Sized),
) -> &'s mut [f32] {
    assert!(applies(p), "direct convolution does not apply");
    assert!(input.len() >= n * p.in_len(), "conv2d input too short");
    assert!(out.len() >= n * out_len, "conv2d output too short");
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "conv2d bias too short");
    }
    epilogue.check(p.c_out, n * p.out_len());
    let phases = &mut scratch.at_least(scratch_len(p))[..scratch_len(p)];
    phases.fill(0.0);
    phases
}

/// [`conv2d`] in bf16 (f32 accumulation): the phase-split input is gathered, one panel of
/// output columns at a time, straight into the bf16 GEMM's pairs of taps (an im2col matrix
/// that is never whole in memory and never stored in f32), times `w16`, the weights' rows
/// `[c_out, C·KH·KW]` as pairs ([`pairs_into`](crate::gemm::bf16::pairs_into)); then bias and
/// epilogue per output channel. Same scratch as [`conv2d`]. With `threads > 1` (on a worker of
/// the pool) large layers split their output channels.
///
/// # Panics
/// If a slice is shorter than its layout.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
pub(crate) fn conv2d_bf16(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    w16: &[u32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    use crate::gemm::bf16;
    let (k, plane) = (p.fan_in(), p.out_hw[0] * p.out_hw[1]);
    let phases = checked_phases(p, n, input, bias, epilogue, (out, p.out_len()), scratch);
    let mut plan = Bf16Plan::new(p, w16, bias, epilogue, threads);
    let (k2, post) = (plan.k2, plan.post.take());
    // Output channels `first..` (as many as `y` holds): GEMM with bias and epilogue in
    // registers (or after it, with an activation other than ReLU), then the residual.
    let rows = |sample: usize, fill: Fill<'_>, first: usize, y: &mut [f32]| {
        let m = y.len() / plane;
        let w = &w16[first * k2..(first + m) * k2];
        let b = bf16::B::Fill(fill);
        if let Some((coef, relu)) = &post {
            let post = bf16::RowPost {
                coef: &coef[first..first + m],
                relu: *relu,
            };
            bf16::gemm_post(m, k, plane, w, b, y, post);
        } else {
            bf16::gemm(m, k, plane, w, b, y, false);
            for (o, row) in y.chunks_exact_mut(plane).enumerate() {
                epilogue.channel(bias, first + o).apply(row);
            }
        }
        for (o, row) in y.chunks_exact_mut(plane).enumerate() {
            epilogue.after(sample * p.c_out + first + o, row);
        }
    };
    plan.each_sample(p, (input, n), (out, p.out_len(), plane), phases, rows);
}

/// A sample's panels of taps, gathered on demand (`bf16::B::Fill`).
#[cfg(feature = "std")]
type Fill<'f> = &'f (dyn Fn(usize, &mut [u32]) + Sync);

/// What both bf16 forms of the direct convolution ([`conv2d_bf16`], [`conv2d_bf16_pooled`])
/// set up once per call.
#[cfg(feature = "std")]
struct Bf16Plan {
    /// Pairs of taps per row of the weights.
    k2: usize,
    /// Threads the output channels are split over, and whether this layer splits at all.
    parts: usize,
    split: bool,
    /// Where each tap reads output `(0, 0)` in the phases ([`tap_offsets`]).
    taps: Vec<usize>,
    /// The GEMM's row epilogue ([`Epilogue::gemm_rows`]).
    post: Option<(super::RowCoef, bool)>,
    /// One input row split into its phases, zero in the padding (the same for every row).
    row_phases: Vec<f32>,
}

#[cfg(feature = "std")]
impl Bf16Plan {
    /// # Panics
    /// If `w16` is shorter than the weights' pairs.
    fn new(
        p: &Conv2dParams,
        w16: &[u32],
        bias: Option<&[f32]>,
        epilogue: Epilogue<'_>,
        threads: usize,
    ) -> Self {
        let k2 = crate::gemm::bf16::pairs(p.fan_in());
        assert!(w16.len() >= p.c_out * k2, "conv2d weight too short");
        let parts = crate::tuning::row_parts(threads, p.c_out);
        Bf16Plan {
            k2,
            parts,
            split: crate::tuning::splits(parts, p.macs()),
            taps: tap_offsets(p),
            post: epilogue.gemm_rows(bias, p.c_out),
            row_phases: vec![0.0; p.stride[1] * phase_row(p)],
        }
    }

    /// For each of the `n` samples of `input` and of `out` (`out_len` values per sample,
    /// `per_channel` per output channel): the sample's phases as pairs ([`split_pairs`]), then
    /// `body(sample, fill, first, y)` with `fill` gathering its panels ([`fill_panel`]) and `y`
    /// the output channels `first..` it holds: one block per thread when the layer splits,
    /// else all at once.
    fn each_sample(
        &mut self,
        p: &Conv2dParams,
        (input, n): (&[f32], usize),
        (out, out_len, per_channel): (&mut [f32], usize, usize),
        phases: &mut [f32],
        body: impl Fn(usize, Fill<'_>, usize, &mut [f32]) + Sync,
    ) {
        // LOOP over samples
        for (sample, (x, y)) in input
            .chunks_exact(p.in_len())
            .zip(out.chunks_exact_mut(out_len))
            .take(n)
            .enumerate()
        {
            split_pairs(p, x, phases, &mut self.row_phases);
            let (phases, taps) = (&*phases, &self.taps);
            let fill = |j0: usize, panel: &mut [u32]| fill_panel(p, phases, taps, j0, panel);
            let y = &mut y[..p.c_out * per_channel];
            if self.split {
                // LOOP over output-channel blocks, one per thread; each gathers its own panels.
                let per = p.c_out.div_ceil(self.parts);
                let blocks = y.chunks_mut(per * per_channel);
                crate::threads::for_each(self.parts, blocks, |i, y| {
                    body(sample, &fill, i * per, y)
                });
            } else {
                body(sample, &fill, 0, y);
            }
        }
    }
}

/// Whether [`conv2d_bf16_pooled`] takes `pool` after `p`: a pool of the convolution's output
/// with more than one output row, its rows' padding narrower than their stride (so that a band
/// of pool rows starts at a whole stride), without `ceil_mode`.
pub(crate) const fn bands(p: &Conv2dParams, pool: &Pool2dParams) -> bool {
    pool.channels == p.c_out
        && pool.in_hw[0] == p.out_hw[0]
        && pool.in_hw[1] == p.out_hw[1]
        && pool.out_hw[0] > 1
        && pool.padding[0] < pool.stride[0]
        && !pool.ceil_mode
}

#[cfg(feature = "std")]
std::thread_local! {
    /// [`conv2d_bf16_pooled`]'s band of convolution rows and pooled rows, per thread.
    static BAND: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`conv2d_bf16`] then `pool` ([`bands`]), band by band: the convolution's rows that
/// `rows_per_band` rows of the pool read go to a buffer of the thread's own (rows shared with
/// the next band are kept, not computed again), and are pooled from there while they are in
/// cache, so that an output too large for L2 (stem224's 3.2 MB) is never written whole and read
/// back. `out: [n, c_out, PH, PW]`; the bits of the two steps (each value is computed by the
/// same GEMM tile code and pooled by the same kernel from the same window). With `threads > 1`
/// (on a worker of the pool) large layers split their output channels.
///
/// # Panics
/// Unless [`bands`]; if the epilogue has a residual, or a slice is shorter than its layout.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)] // the convolution's arguments, the pool and the band
pub(crate) fn conv2d_bf16_pooled(
    p: &Conv2dParams,
    pool: &Pool2dParams,
    n: usize,
    input: &[f32],
    (w16, bias): (&[u32], Option<&[f32]>),
    epilogue: Epilogue<'_>,
    (threads, rows_per_band): (usize, usize),
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    use crate::gemm::bf16;
    assert!(bands(p, pool), "the pool does not take bands");
    #[cfg(test)]
    tests::BANDED.set(tests::BANDED.get() + 1);
    assert!(epilogue.residual.is_none(), "a residual before a pool");
    let (k, [oh, ow]) = (p.fan_in(), p.out_hw);
    let ([kh, sh, ph], [pool_h, pool_w]) = (
        [pool.kernel[0], pool.stride[0], pool.padding[0]],
        pool.out_hw,
    );
    let pooled = pool_h * pool_w;
    let phases = checked_phases(p, n, input, bias, epilogue, (out, pool.out_len()), scratch);
    let mut plan = Bf16Plan::new(p, w16, bias, epilogue, threads);
    let (k2, post) = (plan.k2, plan.post.take());
    let per_band = rows_per_band.clamp(1, pool_h);
    // Pool rows before a band's first that its rows also feed (windows reaching above it, into
    // the padding of the pool's own call): computed and dropped.
    let extra = usize::from(ph > 0);
    // The most convolution rows a band holds.
    let cap = ((per_band - 1 + extra) * sh + kh).min(oh);
    // Output channels `first..` (as many as `y` holds), band by band.
    let channels = |_: usize, fill: Fill<'_>, first: usize, y: &mut [f32]| {
        let m = y.len() / pooled;
        let mut buf = BAND.with(std::cell::Cell::take);
        let pooled_rows = (per_band + extra) * pool_w;
        let len = m * cap * ow + pooled_rows + pool.scratch_len();
        // From a cache line: the GEMM's tiles store rows of the band.
        let (band, rest) = buf.at_least(len)[..len].split_at_mut(m * cap * ow);
        let (rows, pool_scratch) = rest.split_at_mut(pooled_rows);
        let w = &w16[first * k2..(first + m) * k2];
        // Convolution rows `held` are in the band, row `held.start` first.
        let mut held = 0..0;
        // LOOP over bands of pool rows
        for q0 in (0..pool_h).step_by(per_band) {
            let q1 = (q0 + per_band).min(pool_h);
            let skip = if q0 == 0 { 0 } else { extra };
            let start = (q0 - skip) * sh;
            let end = ((q1 - 1) * sh + kh).saturating_sub(ph).min(oh);
            // The rows this band shares with the last one (from `start`, which never
            // comes before the last band's) move to the top.
            let kept = start..held.end.max(start);
            if !kept.is_empty() {
                for plane in band.chunks_exact_mut(cap * ow) {
                    let from = (kept.start - held.start) * ow..(kept.end - held.start) * ow;
                    plane.copy_within(from, 0);
                }
            }
            let new = kept.end..end;
            held = start..end;
            let c = &mut band[(new.start - start) * ow..];
            let cols = new.len() * ow;
            let b = bf16::B::Fill(&|j0: usize, panel: &mut [u32]| fill(new.start * ow + j0, panel));
            if let Some((coef, relu)) = &post {
                let post = bf16::RowPost {
                    coef: &coef[first..first + m],
                    relu: *relu,
                };
                bf16::gemm_post_strided(m, k, cols, w, b, (c, cap * ow), post);
            } else {
                bf16::gemm_strided(m, k, cols, (w, k2), b, (c, cap * ow), false);
                for (o, plane) in band.chunks_exact_mut(cap * ow).enumerate() {
                    let row = &mut plane[(new.start - start) * ow..(new.end - start) * ow];
                    epilogue.channel(bias, first + o).apply(row);
                }
            }
            // LOOP over channels: the band's pool rows (and the dropped ones before them)
            let sub = Pool2dParams {
                channels: 1,
                in_hw: [end - start, ow],
                out_hw: [q1 - q0 + skip, pool_w],
                ..*pool
            };
            for (plane, out) in band.chunks_exact(cap * ow).zip(y.chunks_exact_mut(pooled)) {
                let rows = &mut rows[..sub.out_len()];
                let x = &plane[..sub.in_len()];
                crate::ops::pool::pool2d_in(&sub, 1, x, rows, pool_scratch);
                out[q0 * pool_w..q1 * pool_w].copy_from_slice(&rows[skip * pool_w..]);
            }
        }
        BAND.with(|b| b.set(buf));
    };
    plan.each_sample(
        p,
        (input, n),
        (out, pool.out_len(), pooled),
        phases,
        channels,
    );
}

/// Where each tap `t = (c·KH + ki)·KW + kj` reads output `(0, 0)` in the phase-split input:
/// `phase[c, ki, kj mod SW, kj / SW]` (output row `oy` is `oy·SH·SW·row` further).
#[cfg(feature = "std")]
fn tap_offsets(p: &Conv2dParams) -> Vec<usize> {
    let [kh, kw] = p.kernel;
    let (sw, row) = (p.stride[1], phase_row(p));
    let padded_h = p.in_hw[0] + 2 * p.padding[0];
    (0..p.fan_in())
        .map(|t| {
            let (c, ki, kj) = (t / (kh * kw), t / kw % kh, t % kw);
            ((c * padded_h + ki) * sw + kj % sw) * row + kj / sw
        })
        .collect()
}

/// One panel of the bf16 GEMM's B for [`conv2d_bf16`]: output positions `j0..j0 + NR` (of
/// `OH·OW`, row-major) of every tap, as pairs of taps `(2q, 2q + 1)` per row `q` of the panel,
/// zero past the last tap and the last position, from the phases of [`split_pairs`]. Tap `t`
/// at output `(oy, ox)` is the low half of `phases[taps[t] + oy·SH·SW·row + ox]`, and the high
/// half is the next tap of the same kernel row: a pair of taps in one kernel row (all but one
/// pair in two of a `KW`-tap row) is a run of whole words copied, any other pair is put
/// together from two low halves.
#[cfg(feature = "std")]
fn fill_panel(p: &Conv2dParams, phases: &[f32], taps: &[usize], j0: usize, panel: &mut [u32]) {
    crate::simd::with_simd!(
        |s: S| {
            use crate::gemm::bf16::NR;
            let (row, ow, kw) = (phase_row(p), p.out_hw[1], p.kernel[1]);
            let step = p.stride[0] * p.stride[1] * row;
            let cols = NR.min(p.out_hw[0] * ow - j0);
            // The output rows the panel's columns cross: (first column in the panel, offset
            // in the phases, length).
            let mut runs = [(0, 0, 0); NR];
            let mut n_runs = 0;
            let mut j = j0;
            while j < j0 + cols {
                let (oy, ox) = (j / ow, j % ow);
                let len = (ow - ox).min(j0 + cols - j);
                runs[n_runs] = (j - j0, oy * step + ox, len);
                n_runs += 1;
                j += len;
            }
            let runs = &runs[..n_runs];
            // LOOP over pairs of taps (the panel's rows)
            for ((q, dst), pair) in panel.chunks_exact_mut(NR).enumerate().zip(taps.chunks(2)) {
                let (even, odd) = (pair[0], pair.get(1).copied());
                // Both taps in one kernel row: the even tap's words hold the pair.
                let whole = odd.is_some() && (2 * q) % kw != kw - 1;
                // LOOP over the runs
                for &(d, at, len) in runs {
                    let e = &phases[even + at..even + at + len];
                    let dst = &mut dst[d..d + len];
                    match odd {
                        _ if whole => copy_words::<S>(s, e, dst),
                        Some(o) => {
                            let o = &phases[o + at..o + at + len];
                            for ((d, e), o) in dst.iter_mut().zip(e).zip(o) {
                                *d = (e.to_bits() & 0xffff) | (o.to_bits() << 16);
                            }
                        }
                        None => {
                            for (d, e) in dst.iter_mut().zip(e) {
                                *d = e.to_bits() & 0xffff;
                            }
                        }
                    }
                }
                dst[cols..].fill(0);
            }
        },
        (p: &Conv2dParams, phases: &[f32], taps: &[usize], j0: usize, panel: &mut [u32])
    )
}

/// `dst[i] = src[i].to_bits()`, `S::LANES` at a time (a plain loop would become a call of
/// `memcpy`, as long as the run it copies on the short runs of a panel).
#[cfg(feature = "std")]
#[inline(always)]
fn copy_words<S: Simd>(s: S, src: &[f32], dst: &mut [u32]) {
    let mut src = src.chunks_exact(S::LANES);
    let mut dst = dst.chunks_exact_mut(S::LANES);
    for (x, d) in src.by_ref().zip(dst.by_ref()) {
        // SAFETY: `x` and `d` hold `S::LANES` elements each; a `u32` has the size of an `f32`
        // and takes any bits, and a vector move keeps every bit (NaNs included).
        unsafe { s.store(d.as_mut_ptr().cast::<f32>(), s.load(x.as_ptr())) };
    }
    for (d, x) in dst.into_remainder().iter_mut().zip(src.remainder()) {
        *d = x.to_bits();
    }
}

/// [`split_phases`] for [`conv2d_bf16`]: each padded column `c` of phase `r` holds the pair
/// `(x[c], x[c + 1])` in bf16 (its bits as an `f32`, never computed with), the value and its
/// right neighbour, so that a pair of taps of one kernel row is one word. `row_phases`: one
/// input row's phases (`SW·row` floats) in f32, zero in the padding, which must hold zeros
/// already (as must the padding of `phases`). With stride 2 (the usual stem), phase `r`'s
/// halves are the padded row's values from column `r` on, converted straight from the input.
#[cfg(feature = "std")]
fn split_pairs(p: &Conv2dParams, x: &[f32], phases: &mut [f32], row_phases: &mut [f32]) {
    crate::simd::with_simd_bf16!(
        |s: S| {
            use crate::gemm::bf16_pack::{convert_with, halves_mut, pair, pair_rows_with, words_mut};
            let [h, w] = p.in_hw;
            let (ph, pw, sw) = (p.padding[0], p.padding[1], p.stride[1]);
            let row = phase_row(p);
            let padded_h = h + 2 * ph;
            // LOOP over (channel, input row)
            for (c, planes) in phases.chunks_exact_mut(padded_h * sw * row).enumerate() {
                let rows = planes[ph * sw * row..].chunks_exact_mut(sw * row);
                for (src, dst) in x[c * h * w..(c + 1) * h * w].chunks_exact(w).zip(rows) {
                    if sw == 2 {
                        // Halves `k` of phase `r`: padded column `k + r`, input column
                        // `k + r − PW`.
                        let (even, odd) = dst.split_at_mut(row);
                        let (even, odd) = (halves_mut(words_mut(even)), halves_mut(words_mut(odd)));
                        let at = pw.min(even.len());
                        convert_with::<S>(s, src, &mut even[at..]);
                        match pw.checked_sub(1) {
                            Some(at) => {
                                let at = at.min(odd.len());
                                convert_with::<S>(s, src, &mut odd[at..])
                            }
                            None => convert_with::<S>(s, &src[1.min(w)..], odd),
                        }
                        continue;
                    }
                    super::phases::copy_row(src, row_phases, row, sw, pw);
                    // LOOP over the phases: the right neighbour of phase `r` is phase `r + 1`
                    // at the same index, that of the last phase the first one's next index.
                    for (r, out) in dst.chunks_exact_mut(row).enumerate() {
                        let out = words_mut(out);
                        let even = &row_phases[r * row..(r + 1) * row];
                        if r + 1 < sw {
                            let odd = &row_phases[(r + 1) * row..(r + 2) * row];
                            pair_rows_with::<S>(s, even, Some(odd), out);
                        } else {
                            let (out, last) = out.split_at_mut(row - 1);
                            pair_rows_with::<S>(s, even, Some(&row_phases[1..row]), out);
                            last[0] = pair(even[row - 1], 0.0);
                        }
                    }
                }
            }
        },
        (p: &Conv2dParams, x: &[f32], phases: &mut [f32], row_phases: &mut [f32])
    )
}

crate::simd::multiversion! {
/// Fills `phases` (see [`scratch_len`]) from one sample `x: [C, H, W]`, zero in the padding,
/// which must hold zeros already (the padding is the same for every sample).
fn split_phases(p: &Conv2dParams, x: &[f32], phases: &mut [f32]) {
    let [h, w] = p.in_hw;
    let [ph, pw] = p.padding;
    let sw = p.stride[1];
    let row = phase_row(p);
    let padded_h = h + 2 * ph;
    // LOOP over (channel, input row)
    for (c, planes) in phases.chunks_exact_mut(padded_h * sw * row).enumerate() {
        let rows = planes[ph * sw * row..].chunks_exact_mut(sw * row);
        for (src, dst) in x[c * h * w..(c + 1) * h * w].chunks_exact(w).zip(rows) {
            super::phases::copy_row(src, dst, row, sw, pw);
        }
    }
}
}

/// The channel blocks from `first` on (as many as `y: [·, OH, OW]` holds; with `pool`, `y:
/// [·, OH / 2, OW / 2]`) of one sample, on the best instruction set: 8 channels × 32 columns per
/// block with AVX-512, 8 × 8 with AVX2, 8 × 16 single lanes on the baseline. `[first,
/// first_plane]`: the first channel, and its plane's index in the batch (`sample · c_out +
/// first`, for the residual).
fn run(
    p: &Conv2dParams,
    pool: Option<PoolKind>,
    phases: &[f32],
    w: (&[f32], Option<&[f32]>),
    epilogue: Epilogue<'_>,
    first: [usize; 2],
    y: &mut [f32],
) {
    crate::simd::with_simd!(|s: S| {
        if S::LANES == 1 {
            blocks::<S, LANES>(s, p, pool, phases, w, epilogue, first, y)
        } else if S::LANES == 16 && p.out_hw[1] > 16 {
            blocks::<S, 2>(s, p, pool, phases, w, epilogue, first, y)
        } else {
            blocks::<S, 1>(s, p, pool, phases, w, epilogue, first, y)
        }
    }, (
        p: &Conv2dParams,
        pool: Option<PoolKind>,
        phases: &[f32],
        w: (&[f32], Option<&[f32]>),
        epilogue: Epilogue<'_>,
        first: [usize; 2],
        y: &mut [f32],
    ))
}

/// [`run`] with `S` vectors: `V` of them per channel and block (16 single lanes with `Scalar`).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `run`'s arguments plus the token
fn blocks<S: Simd, const V: usize>(
    s: S,
    p: &Conv2dParams,
    pool: Option<PoolKind>,
    phases: &[f32],
    (w, bias): (&[f32], Option<&[f32]>),
    epilogue: Epilogue<'_>,
    first: [usize; 2],
    y: &mut [f32],
) {
    let [oh, ow] = p.out_hw;
    let k = p.fan_in();
    // With a pool, `y` holds the pooled planes and only the rows and columns it reads are
    // computed.
    let [rows, cols] = match pool {
        Some(_) => [oh / 2, ow / 2],
        None => [oh, ow],
    };
    let plane = rows * cols;
    let channels = y.len() / plane;
    let width = V * S::LANES;
    let reach = Reach::new(p);
    let [first, first_plane] = first;
    // LOOP over blocks of R output channels
    for (b, w) in w.chunks_exact(k * R).take(channels.div_ceil(R)).enumerate() {
        let live = R.min(channels - b * R);
        let y = &mut y[b * R * plane..(b * R + live) * plane];
        // The bias starts the sums. A folded batch norm and ReLU are applied in registers;
        // other activations (and then the batch norm too) after the block's planes are done,
        // while they are in cache (never with a pool).
        // With a residual, the activation waits for it: the batch norm stays in registers,
        // then `Epilogue::after` adds the residual and activates each finished plane.
        let posts: [PostOp; R] =
            core::array::from_fn(|r| epilogue.channel(bias, (first + b * R + r).min(p.c_out - 1)));
        let in_registers = posts[0].act.is_none();
        // (`relu` is only set with no other activation.)
        let mut post = Post {
            relu: posts[0].relu,
            fold: in_registers && posts[0].affine.is_some(),
            bias: [0.0; R],
            scale: [1.0; R],
            shift: [0.0; R],
        };
        for (r, op) in posts.iter().enumerate().take(live) {
            post.bias[r] = op.bias.unwrap_or(0.0);
            if let Some((m, s)) = op.affine {
                (post.scale[r], post.shift[r]) = (m, s);
            }
        }
        let Some(kind) = pool else {
            // LOOP over output rows
            for oy in 0..oh {
                // LOOP over blocks of `width` output columns
                for x0 in (0..ow).step_by(width) {
                    let acc = tile::<S, V>(s, p, (phases, &reach), w, &post, oy, x0);
                    let len = width.min(ow - x0);
                    for (a, out) in acc.iter().zip(y.chunks_exact_mut(plane)) {
                        store(s, a, &mut out[oy * ow + x0..oy * ow + x0 + len]);
                    }
                }
            }
            if !in_registers {
                for (op, row) in posts.iter().zip(y.chunks_exact_mut(plane)) {
                    PostOp { bias: None, ..*op }.apply(row);
                }
            }
            for (r, row) in y.chunks_exact_mut(plane).enumerate() {
                epilogue.after(first_plane + b * R + r, row);
            }
            continue;
        };
        let quarter = s.splat(&0.25);
        // LOOP over pooled rows
        for py in 0..rows {
            // LOOP over blocks of `width` of the output columns the pool reads
            for x0 in (0..2 * cols).step_by(width) {
                // The window's top row folded across its column pairs, then the bottom row's
                // pairs folded in: PyTorch's row-major order within each window.
                let acc = tile::<S, V>(s, p, (phases, &reach), w, &post, 2 * py, x0);
                let mut h = [[s.zero(); V]; R];
                for (h, a) in h.iter_mut().zip(&acc) {
                    for (j, h) in h.iter_mut().enumerate().take(V.div_ceil(2)) {
                        let (even, odd) = pairs(s, a, j);
                        *h = kind.accum_v(s, kind.first_v(s, even), odd);
                    }
                }
                let acc = tile::<S, V>(s, p, (phases, &reach), w, &post, 2 * py + 1, x0);
                let len = width.min(2 * cols - x0) / 2;
                for ((h, a), y) in h.iter_mut().zip(&acc).zip(y.chunks_exact_mut(plane)) {
                    for (j, h) in h.iter_mut().enumerate().take(V.div_ceil(2)) {
                        let (even, odd) = pairs(s, a, j);
                        *h = kind.accum_v(s, kind.accum_v(s, *h, even), odd);
                        if let PoolKind::Avg { .. } = kind {
                            *h = s.mul(*h, quarter);
                        }
                    }
                    let at = py * cols + x0 / 2;
                    store(s, h, &mut y[at..at + len]);
                }
            }
        }
    }
}

/// The even and odd columns of pair `j` of one channel's vectors: vectors `2j` and `2j + 1`
/// deinterleaved; with one vector (`V = 1`), its pairs in the lower half of each.
#[inline(always)]
fn pairs<S: Simd, const V: usize>(s: S, a: &[S::V; V], j: usize) -> (S::V, S::V) {
    if V == 1 {
        s.deinterleave(a[0], a[0])
    } else {
        s.deinterleave(a[2 * j], a[2 * j + 1])
    }
}

/// A block's per-channel start and in-register epilogue: the sums start at `bias`; then, when
/// `fold`, `·scale + shift` (two roundings, as `PostOp::apply`), and ReLU when `relu`.
struct Post {
    relu: bool,
    fold: bool,
    bias: [f32; R],
    scale: [f32; R],
    shift: [f32; R],
}

/// Where a block's taps read in the phase-split input, the same for every block of a layer:
/// kernel column `kj` at `cols[kj]` from its row's start (`(kj mod SW)·row + kj / SW`: its
/// phase, then its place in the phase), computed once per call instead of a division per tap.
struct Reach {
    cols: [usize; 16],
    /// The largest of `cols`.
    max_col: usize,
}

impl Reach {
    fn new(p: &Conv2dParams) -> Self {
        let (sw, prow) = (p.stride[1], phase_row(p));
        let mut reach = Reach {
            cols: [0; 16],
            max_col: 0,
        };
        for (kj, col) in reach.cols.iter_mut().enumerate().take(p.kernel[1]) {
            *col = (kj % sw) * prow + kj / sw;
            reach.max_col = reach.max_col.max(*col);
        }
        reach
    }
}

/// The `R × V` vectors of one block: output row `oy`, columns `x0..x0 + V·LANES` (past the
/// last column, values nobody stores), every tap of the packed weights `w`, then `post`.
///
/// # Panics
/// If the block's taps reach past `phases` or `w` holds fewer than `R` weights per tap.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the block's place and the token
fn tile<S: Simd, const V: usize>(
    s: S,
    p: &Conv2dParams,
    (phases, reach): (&[f32], &Reach),
    w: &[f32],
    post: &Post,
    oy: usize,
    x0: usize,
) -> [[S::V; V]; R] {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let (prow, padded_h) = (phase_row(p), p.in_hw[0] + 2 * p.padding[0]);
    let width = V * S::LANES;
    // Where the taps of input channel `c`, kernel row `ki` start: `(c·H' + oy·SH + ki)·rs + x0`.
    let rs = sw * prow;
    let first_row = oy * sh;
    // The last tap's row, at the farthest column, ends inside `phases`; every other lies before.
    let last = ((p.c_in - 1) * padded_h + first_row + kh - 1) * rs + x0 + reach.max_col + width;
    assert!(
        last <= phases.len() && w.len() >= p.fan_in() * R && kw <= 16,
        "direct block outside its input"
    );
    let mut acc = [[s.zero(); V]; R];
    for (a, bv) in acc.iter_mut().zip(&post.bias) {
        *a = [s.splat(bv); V];
    }
    let mut t = 0;
    // LOOP over input channels, kernel rows and columns: one tap each
    for c in 0..p.c_in {
        for ki in 0..kh {
            let base = (c * padded_h + first_row + ki) * rs + x0;
            for &col in &reach.cols[..kw] {
                let src = phases.as_ptr().wrapping_add(base + col);
                let mut xv = [s.zero(); V];
                for (v, x) in xv.iter_mut().enumerate() {
                    // SAFETY: tap `(c, ki, kj)` reads `V·LANES` floats from `base + col ≤
                    // last − width` (asserted above), so LANES from `v·LANES` are readable.
                    *x = unsafe { s.load(src.add(v * S::LANES)) };
                }
                // SAFETY: `t < C·KH·KW` and `w` holds `R` weights per tap (asserted above).
                let wt = unsafe { w.get_unchecked(t * R..(t + 1) * R) };
                t += 1;
                for (a, wr) in acc.iter_mut().zip(wt) {
                    let wr = s.splat(wr);
                    for (a, &x) in a.iter_mut().zip(&xv) {
                        *a = s.fmadd(wr, x, *a);
                    }
                }
            }
        }
    }
    if post.fold || post.relu {
        for (r, a) in acc.iter_mut().enumerate() {
            let (m, b) = (s.splat(&post.scale[r]), s.splat(&post.shift[r]));
            for a in a.iter_mut() {
                if post.fold {
                    *a = s.add(s.mul(*a, m), b);
                }
                if post.relu {
                    *a = s.max(s.zero(), *a);
                }
            }
        }
    }
    acc
}

/// Stores the first `dst.len()` (at most `V·LANES`) values of one channel's vectors `a`.
#[inline(always)]
fn store<S: Simd, const V: usize>(s: S, a: &[S::V; V], dst: &mut [f32]) {
    let len = dst.len();
    for (v, &a) in a.iter().enumerate() {
        let at = v * S::LANES;
        if at + S::LANES <= len {
            // SAFETY: `dst` holds `len` floats, LANES of them from `at` on.
            unsafe { s.store(dst.as_mut_ptr().add(at), a) };
        } else if at < len {
            // SAFETY: `len − at < LANES` floats from `at` on are in `dst` (a masked store: no
            // `memcpy` call per row).
            unsafe { s.store_first(dst.as_mut_ptr().add(at), a, len - at) };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::activation::Activation;
    use crate::ops::conv::im2col;
    use crate::ops::conv::tests::naive;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    /// Scratch as other layers leave it: every value NaN.
    fn dirty() -> Vec<f32> {
        vec![f32::NAN; 1 << 16]
    }

    std::thread_local! {
        /// Calls of [`conv2d_pooled`] on this thread.
        pub(crate) static POOLED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Calls of [`conv2d_bf16_pooled`] on this thread.
        pub(crate) static BANDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The bf16 GEMM's panels gathered from [`split_pairs`]'s phases hold, bit for bit, the
    /// pairs of taps of the definition (`x` at the padded position each tap reads, zero in the
    /// padding and past the last tap and the last output) on every bf16 path, for strides 1
    /// to 4 (stride 2 converts straight from the input, the others through `row_phases`),
    /// kernel rows of 1 to 16 taps (pairs within a row, across rows, and a last tap alone),
    /// padding wider than the kernel's reach, panels that cross output rows and a short last
    /// panel, and values that round (ties, NaN, infinities, −0, subnormals); a second sample
    /// overwrites the first one's phases.
    #[test]
    fn bf16_panels_hold_the_definition_s_pairs_of_taps() {
        use crate::gemm::bf16::NR;
        use crate::gemm::bf16_pack::pair;
        // (c_in, kernel, stride, padding, [h, w])
        let cases = [
            (3, [7, 7], [2, 2], [3, 3], [23, 21]),
            (3, [3, 3], [2, 2], [1, 1], [16, 64]),
            (2, [3, 3], [1, 1], [1, 1], [9, 70]),
            (1, [5, 4], [3, 2], [2, 0], [13, 11]),
            (4, [2, 5], [1, 3], [0, 2], [6, 17]),
            (2, [3, 16], [4, 4], [1, 7], [10, 40]),
            (3, [1, 3], [2, 1], [0, 0], [7, 67]),
            (1, [2, 2], [2, 2], [0, 0], [4, 5]),
        ];
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::from_bits(0x3f80_8000), // a tie, rounds to even (down)
            f32::from_bits(0x3f81_8000), // a tie, rounds to even (up)
            f32::from_bits(0x0000_0001), // the smallest subnormal
            f32::from_bits(0x7f7f_ffff), // rounds up to infinity
        ];
        for (c_in, kernel, stride, padding, in_hw) in cases {
            let out = |i| out_len(in_hw[i], kernel[i], stride[i], padding[i], 1, false).unwrap();
            let p = Conv2dParams {
                c_in,
                c_out: 8,
                groups: 1,
                kernel,
                stride,
                padding,
                dilation: [1, 1],
                in_hw,
                out_hw: [out(0), out(1)],
            };
            assert!(applies(&p), "{p:?}");
            let taps = tap_offsets(&p);
            let k2 = p.fan_in().div_ceil(2);
            let [oh, ow] = p.out_hw;
            crate::simd::testing::each_bf16_path(|on| {
                let mut phases = dirty();
                let phases = &mut phases[..scratch_len(&p)];
                phases.fill(0.0);
                let mut row_phases = vec![0.0; p.stride[1] * phase_row(&p)];
                for sample in 0..2u64 {
                    let mut x = rand_vec(p.in_len(), 40 + sample);
                    for (i, v) in x.iter_mut().enumerate().skip(sample as usize).step_by(7) {
                        *v = specials[i % specials.len()];
                    }
                    split_pairs(&p, &x, phases, &mut row_phases);
                    // The padded input's value that tap `t` reads at output `j`.
                    let tap = |t: usize, j: usize| {
                        let (c, ki, kj) = (
                            t / (kernel[0] * kernel[1]),
                            t / kernel[1] % kernel[0],
                            t % kernel[1],
                        );
                        let (iy, ix) = (
                            (j / ow * stride[0] + ki) as isize - padding[0] as isize,
                            (j % ow * stride[1] + kj) as isize - padding[1] as isize,
                        );
                        let inside = (0..in_hw[0] as isize).contains(&iy)
                            && (0..in_hw[1] as isize).contains(&ix);
                        if inside {
                            x[(c * in_hw[0] + iy as usize) * in_hw[1] + ix as usize]
                        } else {
                            0.0
                        }
                    };
                    // LOOP over panels
                    for j0 in (0..oh * ow).step_by(NR) {
                        let mut panel = vec![0xdead_beef_u32; k2 * NR];
                        fill_panel(&p, phases, &taps, j0, &mut panel);
                        for (q, row) in panel.chunks_exact(NR).enumerate() {
                            for (jj, &got) in row.iter().enumerate() {
                                let j = j0 + jj;
                                let want = if j >= oh * ow {
                                    0
                                } else {
                                    let odd = (2 * q + 1 < p.fan_in()).then(|| tap(2 * q + 1, j));
                                    pair(tap(2 * q, j), odd.unwrap_or(0.0))
                                };
                                assert_eq!(
                                    got,
                                    want,
                                    "{p:?} on {}: sample {sample}, pair {q}, output {j}",
                                    on.name()
                                );
                            }
                        }
                    }
                }
            });
        }
    }

    /// A bf16 direct convolution then a pool, band by band ([`conv2d_bf16_pooled`]), gives
    /// the bits of [`conv2d_bf16`] then [`pool2d`](crate::ops::pool::pool2d), on every bf16
    /// path: bands of 1 to 3 pool rows and one band for all, pools with and without padding
    /// (rows shared between bands kept, the pool row before a band dropped), a stride-1 pool
    /// whose bands share two rows, a window narrower than its stride (rows no band reads), max
    /// and both averages, each form of the epilogue (in the GEMM and on the rows after it),
    /// NaN inputs, and channels split over two threads.
    #[test]
    fn bf16_bands_give_the_two_steps_bits() {
        use crate::ops::conv::Filters;
        use crate::Precision;
        // (c_in, c_out, kernel, stride, padding, [h, w], n, pool [kernel, stride, padding])
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            [usize; 2],
            usize,
            [usize; 3],
        );
        let cases: [Case; 6] = [
            (3, 40, 7, 2, 3, [61, 58], 1, [3, 2, 1]),
            (3, 33, 3, 2, 1, [30, 21], 2, [2, 2, 0]),
            (4, 35, 5, 1, 2, [13, 23], 1, [3, 1, 0]),
            (3, 32, 3, 1, 1, [17, 9], 1, [1, 2, 0]),
            (3, 64, 7, 2, 3, [64, 64], 1, [3, 2, 1]),
            (2, 40, 5, 2, 2, [23, 17], 1, [3, 3, 1]),
        ];
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (seed, &(c_in, c_out, k, stride, pad, in_hw, n, [pk, ps, pp])) in
            cases.iter().enumerate()
        {
            let side = |i: usize| out_len(in_hw[i], k, stride, pad, 1, false).unwrap();
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [1, 1],
                in_hw,
                out_hw: [side(0), side(1)],
            };
            assert!(p.multiplies_in_bf16(), "{p:?}");
            let s = seed as u64 * 10 + 300;
            let mut x = rand_vec(n * p.in_len(), s);
            if seed == 1 {
                x[7] = f32::NAN;
            }
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let mut filters = Filters::new(wt, Some(b.clone()));
            filters.set_precision(Precision::Bf16);
            let w16 = filters.for_bf16(&p).unwrap();
            let affine = Some((&scale[..], &shift[..]));
            let e = |affine, act| Epilogue {
                affine,
                act,
                residual: None,
            };
            let kinds = [
                PoolKind::Max,
                PoolKind::Avg {
                    count_include_pad: true,
                },
                PoolKind::Avg {
                    count_include_pad: false,
                },
            ];
            let epilogues = [
                (None, Epilogue::default()),
                (Some(&b[..]), e(affine, Some(Activation::Relu))),
                (Some(&b[..]), e(None, Some(Activation::Gelu))),
                (None, e(affine, None)),
            ];
            let q = |kind| {
                let side = |i: usize| out_len(p.out_hw[i], pk, ps, pp, 1, false).unwrap();
                Pool2dParams {
                    kind,
                    channels: c_out,
                    kernel: [pk, pk],
                    stride: [ps, ps],
                    padding: [pp, pp],
                    ceil_mode: false,
                    in_hw: p.out_hw,
                    out_hw: [side(0), side(1)],
                }
            };
            crate::simd::testing::each_bf16_path(|on| {
                for (i, kind) in kinds.into_iter().enumerate() {
                    let q = q(kind);
                    assert!(bands(&p, &q), "{p:?} {q:?}");
                    let (bias, epilogue) = epilogues[(seed + i) % epilogues.len()];
                    let mut conv = vec![f32::NAN; n * p.out_len()];
                    conv2d_bf16(&p, n, &x, &w16, bias, epilogue, 1, &mut conv, &mut dirty());
                    let mut want = vec![f32::NAN; n * q.out_len()];
                    crate::ops::pool::pool2d(&q, n, &conv, &mut want);
                    for rows in [1, 2, 3, q.out_hw[0]] {
                        for threads in [1, 2] {
                            let mut got = vec![f32::NAN; n * q.out_len()];
                            crate::threads::install(threads, || {
                                conv2d_bf16_pooled(
                                    &p,
                                    &q,
                                    n,
                                    &x,
                                    (&w16, bias),
                                    epilogue,
                                    (threads, rows),
                                    &mut got,
                                    &mut dirty(),
                                );
                            });
                            assert!(
                                bits(&got) == bits(&want),
                                "{p:?} {q:?} on {}: {rows} rows a band, {threads} threads, first difference at {:?}",
                                on.name(),
                                got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits())
                            );
                        }
                    }
                }
            });
        }
    }

    /// At every instruction-set level; the epilogue forms are in `conv::tests`.
    #[test]
    fn matches_naive_convolution_over_awkward_shapes() {
        // (c_in, c_out, kernel, stride, padding, [h, w], n)
        let cases = [
            (3, 16, [3, 3], [1, 1], [1, 1], [32, 32], 2),
            (1, 6, [5, 5], [1, 1], [2, 2], [28, 28], 1),
            (6, 16, [5, 5], [1, 1], [0, 0], [14, 14], 3),
            (3, 64, [7, 7], [2, 2], [3, 3], [40, 37], 1),
            (3, 32, [3, 3], [2, 2], [1, 1], [17, 64], 1),
            (8, 9, [3, 1], [1, 3], [0, 1], [5, 50], 2),
            (2, 1, [1, 3], [4, 1], [2, 0], [9, 3], 1),
            (5, 17, [2, 16], [3, 4], [1, 7], [12, 70], 1),
            (3, 7, [4, 4], [1, 2], [0, 0], [4, 33], 1),
        ];
        for (seed, &(c_in, c_out, kernel, stride, padding, [h, w], n)) in cases.iter().enumerate() {
            let out_hw = [
                out_len(h, kernel[0], stride[0], padding[0], 1, false).unwrap(),
                out_len(w, kernel[1], stride[1], padding[1], 1, false).unwrap(),
            ];
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel,
                stride,
                padding,
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw,
            };
            assert!(applies(&p), "{p:?}");
            let s = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), s);
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let packed = pack_weights(&p, &wt);
            for bias in [Some(&b[..]), None] {
                let want = naive(&p, n, &x, &wt, bias);
                crate::simd::testing::each_level(|_| {
                    for threads in [1, 2, 3] {
                        let mut got = vec![f32::NAN; n * p.out_len()];
                        crate::threads::install(threads, || {
                            conv2d(
                                &p,
                                n,
                                &x,
                                &packed,
                                bias,
                                Epilogue::default(),
                                threads,
                                &mut got,
                                &mut dirty(),
                            )
                        });
                        assert_close(&got, &want, 1e-5);
                    }
                });
            }
        }
    }

    #[test]
    fn the_epilogue_and_threads_change_no_bit() {
        let p = Conv2dParams {
            c_in: 3,
            c_out: 30,
            groups: 1,
            kernel: [7, 7],
            stride: [2, 2],
            padding: [3, 3],
            dilation: [1, 1],
            in_hw: [64, 64],
            out_hw: [32, 32],
        };
        assert!(
            p.macs() >= DIRECT_MIN_MACS_PER_SPLIT,
            "the case must be split"
        );
        let x = rand_vec(2 * p.in_len(), 1);
        let wt = rand_vec(p.c_out * p.fan_in(), 2);
        let b = rand_vec(p.c_out, 3);
        let (scale, shift) = (rand_vec(p.c_out, 4), rand_vec(p.c_out, 5));
        let packed = pack_weights(&p, &wt);
        let epilogue = Epilogue {
            affine: Some((&scale, &shift)),
            act: Some(Activation::Gelu),
            residual: None,
        };
        let run = |threads: usize, epilogue| {
            let mut out = vec![f32::NAN; 2 * p.out_len()];
            crate::threads::install(threads, || {
                conv2d(
                    &p,
                    2,
                    &x,
                    &packed,
                    Some(&b),
                    epilogue,
                    threads,
                    &mut out,
                    &mut dirty(),
                )
            });
            out
        };
        let mut separate = run(1, Epilogue::default());
        epilogue.apply(0, 0, separate.chunks_exact_mut(1024).take(30));
        epilogue.apply(0, 30, separate.chunks_exact_mut(1024).skip(30));
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for threads in [1, 2, 3] {
            assert_eq!(bits(&run(threads, epilogue)), bits(&separate), "{threads}");
        }
        // And the im2col path agrees within rounding.
        let mut want = vec![0.0; 2 * p.out_len()];
        im2col::conv2d(
            &p,
            2,
            &x,
            &wt,
            Some(&b),
            epilogue,
            1,
            &mut want,
            &mut dirty(),
        );
        assert_close(&separate, &want, 1e-5);
    }

    /// Pooling in the convolution's pass gives the bits of the convolution then the pool, at
    /// every level, thread count, epilogue form and pool kind; with odd rows and columns the
    /// pool drops, rows wider than a buffer segment (71 columns), a partial channel block, a
    /// pool narrower than a vector, NaN inputs and infinite weights. And it agrees with a
    /// naive convolution and pool.
    #[test]
    fn pooling_in_the_pass_gives_the_separate_pool_s_bits() {
        // (c_in, c_out, kernel, stride, padding, [h, w], n)
        let cases = [
            (3, 16, [3, 3], [1, 1], [1, 1], [32, 32], 2),
            (1, 6, [5, 5], [1, 1], [2, 2], [28, 28], 1),
            (6, 16, [5, 5], [1, 1], [0, 0], [14, 14], 3),
            (3, 9, [3, 3], [1, 1], [1, 1], [15, 71], 1),
            (2, 5, [3, 3], [2, 2], [1, 1], [9, 9], 2),
            (3, 30, [7, 7], [2, 2], [3, 3], [32, 34], 1),
            (3, 4, [2, 2], [1, 1], [0, 0], [3, 3], 1),
            (4, 17, [3, 3], [1, 1], [1, 1], [6, 130], 1),
        ];
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (seed, &(c_in, c_out, kernel, stride, padding, [h, w], n)) in cases.iter().enumerate() {
            let out_hw = [
                out_len(h, kernel[0], stride[0], padding[0], 1, false).unwrap(),
                out_len(w, kernel[1], stride[1], padding[1], 1, false).unwrap(),
            ];
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel,
                stride,
                padding,
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw,
            };
            let s = seed as u64 * 10 + 100;
            let mut x = rand_vec(n * p.in_len(), s);
            let mut wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            if seed == 3 {
                // A NaN input and an infinite weight (−∞·0 from the padding is NaN too).
                x[5] = f32::NAN;
                wt[p.fan_in() + 1] = f32::INFINITY;
            }
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let packed = pack_weights(&p, &wt);
            let affine = Some((&scale[..], &shift[..]));
            let e = |affine, act| Epilogue {
                affine,
                act,
                residual: None,
            };
            for kind in [
                PoolKind::Max,
                PoolKind::Avg {
                    count_include_pad: false,
                },
            ] {
                let q = Pool2dParams {
                    kind,
                    channels: c_out,
                    kernel: [2, 2],
                    stride: [2, 2],
                    padding: [0, 0],
                    ceil_mode: false,
                    in_hw: out_hw,
                    out_hw: [out_hw[0] / 2, out_hw[1] / 2],
                };
                assert!(pools(&p, &q), "{p:?}");
                if seed == 5 {
                    assert!(
                        p.macs() >= DIRECT_MIN_MACS_PER_SPLIT,
                        "the case must be split"
                    );
                }
                for (bias, epilogue) in [
                    (None, Epilogue::default()),
                    (Some(&b[..]), Epilogue::default()),
                    (Some(&b[..]), e(affine, Some(Activation::Relu))),
                    (None, e(None, Some(Activation::Relu))),
                    (None, e(affine, None)),
                    (Some(&b[..]), e(None, Some(Activation::Relu))),
                ] {
                    let mut full = vec![f32::NAN; n * p.out_len()];
                    let mut want = vec![f32::NAN; n * q.out_len()];
                    conv2d(
                        &p,
                        n,
                        &x,
                        &packed,
                        bias,
                        epilogue,
                        1,
                        &mut full,
                        &mut dirty(),
                    );
                    crate::ops::pool::pool2d(&q, n, &full, &mut want);
                    crate::simd::testing::each_level(|level| {
                        for threads in [1, 2, 3] {
                            let mut got = vec![f32::NAN; n * q.out_len()];
                            crate::threads::install(threads, || {
                                conv2d_pooled(
                                    &p,
                                    &q,
                                    n,
                                    &x,
                                    (&packed, bias),
                                    epilogue,
                                    threads,
                                    &mut got,
                                    &mut dirty(),
                                )
                            });
                            assert_eq!(
                                bits(&got),
                                bits(&want),
                                "{p:?} {kind:?} {epilogue:?} {level:?} {threads}"
                            );
                        }
                    });
                }
                if seed == 3 {
                    // The naive convolution skips the padding instead of multiplying by it.
                    continue;
                }
                // Against a naive convolution and pool, without an epilogue and with ReLU.
                let conv = naive(&p, n, &x, &wt, Some(&b));
                let [oh, ow] = q.out_hw;
                for relu in [false, true] {
                    let mut want = Vec::new();
                    for plane in conv.chunks_exact(out_hw[0] * out_hw[1]) {
                        for (py, px) in (0..oh).flat_map(|py| (0..ow).map(move |px| (py, px))) {
                            let at = |dy: usize, dx: usize| {
                                let v = plane[(2 * py + dy) * out_hw[1] + 2 * px + dx];
                                if relu {
                                    v.max(0.0)
                                } else {
                                    v
                                }
                            };
                            let v = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                            want.push(match kind {
                                PoolKind::Max if v.iter().any(|v| v.is_nan()) => f32::NAN,
                                PoolKind::Max => v.into_iter().fold(f32::NEG_INFINITY, f32::max),
                                PoolKind::Avg { .. } => v.iter().sum::<f32>() / 4.0,
                            });
                        }
                    }
                    let mut got = vec![f32::NAN; n * q.out_len()];
                    let ep = e(None, relu.then_some(Activation::Relu));
                    let w = (&packed[..], Some(&b[..]));
                    conv2d_pooled(&p, &q, n, &x, w, ep, 1, &mut got, &mut dirty());
                    assert_close(&got, &want, 1e-5);
                }
            }
        }
    }

    /// A block checks that its taps stay inside the phase-split input: with exactly the
    /// farthest block's reach the blocks run, with one value less they panic (at every level,
    /// so every block width, and at strides 1, 2 and 2×3).
    #[test]
    fn a_block_checks_the_reach_of_its_taps() {
        use crate::simd::Isa;
        for (stride, kernel) in [([1, 1], [3, 3]), ([2, 2], [3, 3]), ([2, 3], [5, 7])] {
            let p = Conv2dParams {
                c_in: 3,
                c_out: 8,
                groups: 1,
                kernel,
                stride,
                padding: [1, 1],
                dilation: [1, 1],
                in_hw: [9, 40],
                out_hw: [
                    out_len(9, kernel[0], stride[0], 1, 1, false).unwrap(),
                    out_len(40, kernel[1], stride[1], 1, 1, false).unwrap(),
                ],
            };
            let w = pack_weights(&p, &vec![0.5; p.c_out * p.fan_in()]);
            crate::simd::testing::each_level(|level| {
                // The block width of the level, and where the last block's farthest tap ends.
                let [oh, ow] = p.out_hw;
                let width = match level {
                    Isa::Avx512 if ow > 16 => 32,
                    Isa::Avx512 | Isa::Baseline => 16,
                    Isa::Avx2 => 8,
                };
                let x0 = (ow - 1) / width * width;
                let rs = p.stride[1] * phase_row(&p);
                let row = ((p.c_in - 1) * (p.in_hw[0] + 2) + (oh - 1) * p.stride[0]) * rs
                    + (p.kernel[0] - 1) * rs;
                let last = row + x0 + Reach::new(&p).max_col + width;
                let phases = vec![1.0; last];
                let mut y = vec![0.0; p.out_len()];
                let e = Epilogue::default();
                run(&p, None, &phases, (&w, None), e, [0, 0], &mut y);
                assert!(y.iter().all(|&v| v == 0.5 * p.fan_in() as f32), "{p:?}");
                let r = std::panic::catch_unwind(|| {
                    let mut y = vec![0.0; p.out_len()];
                    run(&p, None, &phases[..last - 1], (&w, None), e, [0, 0], &mut y);
                });
                assert!(r.is_err(), "{p:?} {level:?}: a block read past its input");
            });
        }
    }

    /// A pool the pass does not take: padded, 3×3, stride 1, ceil mode over an odd size, or
    /// over other channels or another size.
    #[test]
    fn pools_takes_only_whole_two_by_two_windows() {
        let p = Conv2dParams {
            c_in: 3,
            c_out: 8,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [9, 10],
            out_hw: [9, 10],
        };
        let q = Pool2dParams {
            kind: PoolKind::Max,
            channels: 8,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            ceil_mode: false,
            in_hw: [9, 10],
            out_hw: [4, 5],
        };
        assert!(pools(&p, &q));
        for bad in [
            Pool2dParams {
                padding: [1, 0],
                out_hw: [5, 5],
                ..q
            },
            Pool2dParams {
                padding: [0, 1],
                out_hw: [4, 6],
                ..q
            },
            Pool2dParams {
                kernel: [3, 2],
                out_hw: [4, 5],
                ..q
            },
            Pool2dParams {
                kernel: [2, 3],
                out_hw: [4, 4],
                ..q
            },
            Pool2dParams {
                stride: [1, 2],
                out_hw: [8, 5],
                ..q
            },
            Pool2dParams {
                stride: [2, 1],
                out_hw: [4, 9],
                ..q
            },
            Pool2dParams {
                ceil_mode: true,
                out_hw: [5, 5],
                ..q
            },
            Pool2dParams { channels: 7, ..q },
            Pool2dParams { in_hw: [9, 9], ..q },
            Pool2dParams {
                in_hw: [8, 10],
                ..q
            },
            Pool2dParams {
                out_hw: [0, 5],
                ..q
            },
            Pool2dParams {
                out_hw: [4, 0],
                ..q
            },
            // More pooled rows or columns than the convolution's output has pairs.
            Pool2dParams {
                out_hw: [5, 5],
                ..q
            },
            Pool2dParams {
                out_hw: [4, 6],
                ..q
            },
        ] {
            assert!(!pools(&p, &bad), "{bad:?}");
        }
        let dilated = Conv2dParams {
            dilation: [2, 2],
            out_hw: [7, 8],
            ..p
        };
        assert!(!pools(
            &dilated,
            &Pool2dParams {
                in_hw: [7, 8],
                out_hw: [3, 4],
                ..q
            }
        ));
    }
}
