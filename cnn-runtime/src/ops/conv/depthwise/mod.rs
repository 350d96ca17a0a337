//! Depthwise convolution (`groups = c_in = c_out`): one filter per `[H, W]` plane, summed in
//! registers, `ROWS` (4) output rows × `LANES` (16) output columns at a time.

mod inplace;
mod scalar;
mod simd;
#[cfg(test)]
mod tests;

use super::phases::{copy, copy_row};
use super::{Conv2dParams, Epilogue, PostOp};
use crate::ops::activation::activation;
use crate::simd::Simd;
use crate::store::Scratch;
use crate::tuning::DEPTHWISE_MIN_MACS_PER_SPLIT;

/// Output columns one register block holds per row.
const LANES: usize = 16;
/// Output rows one register block holds: independent accumulator chains, and taps of
/// neighbouring rows that read the same input row share its load.
const ROWS: usize = 4;

/// Scratch elements [`depthwise`] needs: one zero-padded input plane split into `SW` column
/// phases, `[H + 2·PH, SW, phase_row]`, so that every tap reads contiguous values.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    (p.in_hw[0] + 2 * p.padding[0]) * p.stride[1] * phase_row(p)
}

/// Length of one phase row: the output width, the kernel's reach and one block of slack.
const fn phase_row(p: &Conv2dParams) -> usize {
    p.out_hw[1] + (p.kernel[1] - 1) * p.dilation[1] / p.stride[1] + LANES
}

/// The depthwise convolution of a batch of `n` samples, with the arguments of
/// [`im2col::conv2d`](super::im2col::conv2d). With `threads > 1` (on a worker of the pool) and
/// enough work, the `n · c_out` planes split into `threads` runs, each with its own
/// [`scratch_len`] part of `scratch`; the result does not change.
///
/// # Panics
/// If `p` is not depthwise or a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let (in_len, out_len) = (p.in_len(), p.out_len());
    assert!(input.len() >= n * in_len, "conv2d input too short");
    assert!(out.len() >= n * out_len, "conv2d output too short");
    let (x, y) = (&input[..n * in_len], &mut out[..n * out_len]);
    let planes = n * p.c_out;
    let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
    let parts = threads.min(planes);
    if parts < 2 || n * p.macs() < DEPTHWISE_MIN_MACS_PER_SPLIT || hw_out == 0 {
        depthwise(p, 0, x, weight, bias, epilogue, y, scratch);
        return;
    }
    // LOOP over runs of whole planes, one per thread, each with its own padded-plane scratch
    let per = planes.div_ceil(parts);
    let len = scratch_len(p).max(1);
    let runs = x
        .chunks(per * hw_in)
        .zip(y.chunks_mut(per * hw_out))
        .zip(scratch.at_least(parts * len).chunks_exact_mut(len));
    crate::threads::for_each(parts, runs, |i, ((x, y), phases)| {
        checked_planes(p, i * per, x, weight, bias, epilogue, y, phases);
    });
}

/// Depthwise convolution of `k` consecutive (sample, channel) planes, the first of them plane
/// `first_plane` of the batch, followed by `epilogue`:
/// `out[i, y, x] = act((bias[c] + Σ_{a,b} weight[c, 0, a, b] · input[i, y·SH − PH + a·DH, x·SW − PW + b·DW]) · scale[c] + shift[c])`
/// with `c = (first_plane + i) mod c_out`, zero outside the input. Each output is rounded
/// exactly as by the convolution alone followed by the epilogue's `PostOp::apply`, and does
/// not depend on how the batch is split into calls.
///
/// + `input`: `[k, H, W]` row-major, planes `first_plane..first_plane + k` of `[N·C, H, W]`
/// + `weight`: `[c_out, 1, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `epilogue`: its slices `[c_out]`
/// + `out`: `[k, OH, OW]` row-major, overwritten; its length sets `k`
/// + `scratch`: grown to [`scratch_len`] if shorter, never shrunk
///
/// # Panics
/// If `p` is not depthwise, `out` is not a whole number of planes, or a slice is shorter than
/// the layout above.
#[allow(clippy::too_many_arguments)] // the kernel's arguments plus the plane range
pub fn depthwise(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let len = scratch_len(p);
    let scratch = scratch.at_least(len);
    checked_planes(
        p,
        first_plane,
        input,
        weight,
        bias,
        epilogue,
        out,
        &mut scratch[..len],
    );
}

/// [`depthwise`] with its scratch already sized: `phases` holds at least [`scratch_len`]
/// floats (one thread's part when the planes are split).
#[allow(clippy::too_many_arguments)] // the kernel's arguments plus the plane range
fn checked_planes(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    phases: &mut [f32],
) {
    let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
    assert!(
        p.is_depthwise(),
        "depthwise called on a grouped convolution"
    );
    if hw_out == 0 {
        return;
    }
    assert!(
        out.len().is_multiple_of(hw_out),
        "depthwise output is not whole planes"
    );
    let k = out.len() / hw_out;
    assert!(input.len() >= k * hw_in, "depthwise input too short");
    assert!(
        weight.len() >= p.c_out * p.kernel[0] * p.kernel[1],
        "depthwise weight too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "depthwise bias too short");
    }
    epilogue.check(p.c_out, (first_plane + k) * hw_out);
    let len = scratch_len(p);
    assert!(phases.len() >= len, "depthwise scratch too short");
    planes(
        p,
        first_plane,
        &input[..k * hw_in],
        weight,
        bias,
        epilogue,
        out,
        &mut phases[..len],
    );
}

/// The per-plane constants of the register blocks.
struct Geometry {
    kh: usize,
    kw: usize,
    sh: usize,
    dh: usize,
    sw: usize,
    dw: usize,
    w_out: usize,
    /// [`phase_row`].
    row: usize,
    /// Distance between padded rows in the scratch plane, `SW · phase_row`.
    rs: usize,
    /// [`Geometry::start`] of the first [`MAX_KW`] tap columns.
    starts: [usize; MAX_KW],
}

impl Geometry {
    /// Where tap column `b` starts in a padded row: phase `(b·DW) mod SW`, index `(b·DW) / SW`.
    #[inline(always)]
    fn start(&self, b: usize) -> usize {
        (b * self.dw % self.sw) * self.row + b * self.dw / self.sw
    }
}

/// Kernel widths up to this read their tap offsets from [`Geometry::starts`].
const MAX_KW: usize = 16;

/// The first three steps of a channel's [`PostOp`] in the branch-free form the blocks apply
/// before they store: `(sum + bias) · scale + shift`, floored at `floor` (see
/// `scalar::finish`).
#[derive(Clone, Copy)]
struct Post {
    bias: f32,
    scale: f32,
    shift: f32,
    /// 0 for ReLU, −∞ otherwise.
    floor: f32,
}

impl Post {
    /// A missing bias is 0, a missing affine map `(1, 0)`, no ReLU a floor of −∞: none of them
    /// changes a bit of a sum that starts at +0.
    fn new(op: PostOp) -> Self {
        let (scale, shift) = op.affine.unwrap_or((1.0, 0.0));
        Post {
            bias: op.bias.unwrap_or(0.0),
            scale,
            shift,
            floor: if op.relu { 0.0 } else { f32::NEG_INFINITY },
        }
    }
}

/// [`depthwise`] after its checks; `phases` is exactly [`scratch_len`] long. Runs on the best
/// instruction set: FMA register blocks of `zmm` or `ymm` vectors, or plain Rust (one multiply
/// and one add per tap) on the baseline.
#[allow(clippy::too_many_arguments)] // `depthwise`'s arguments
fn planes(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    phases: &mut [f32],
) {
    crate::simd::with_simd!(|s: S| {
        run::<S>(s, p, first_plane, input, weight, bias, epilogue, out, phases)
    }, (
        p: &Conv2dParams,
        first_plane: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue<'_>,
        out: &mut [f32],
        phases: &mut [f32],
    ))
}

/// [`planes`] with `S` vectors; [`Scalar`](crate::simd::Scalar) (one lane) selects the
/// plain-Rust blocks ([`scalar`]), the others the SIMD blocks ([`simd`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `depthwise`'s arguments plus the token
fn run<S: Simd>(
    s: S,
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    phases: &mut [f32],
) {
    let [kh, kw] = p.kernel;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (sw, dw) = (p.stride[1], p.dilation[1]);
    let row = phase_row(p);
    let mut g = Geometry {
        kh,
        kw,
        sh: p.stride[0],
        dh: p.dilation[0],
        sw,
        dw,
        w_out,
        row,
        rs: sw * row,
        starts: [0; MAX_KW],
    };
    for b in 0..kw.min(MAX_KW) {
        g.starts[b] = g.start(b);
    }
    // MobileNet's 3×3 layers read their planes in place (SIMD levels), the others a padded copy.
    let in_place = S::LANES > 1 && inplace::fits(p) && !padded_only();
    // The padding is the same for every plane: zero it once, then copy only the inside.
    if !in_place {
        phases.fill(0.0);
    }
    // LOOP over (sample, channel) planes
    for (i, y) in out.chunks_exact_mut(h_out * w_out).enumerate() {
        let x = &input[i * h_in * w_in..(i + 1) * h_in * w_in];
        let c = (first_plane + i) % p.c_out;
        let taps = &weight[c * kh * kw..(c + 1) * kh * kw];
        let op = epilogue.channel(bias, c);
        if in_place {
            #[cfg(test)]
            tests::IN_PLACE.set(tests::IN_PLACE.get() + 1);
            inplace::plane(s, p, x, taps, Post::new(op), y);
            finish_plane(op, epilogue, first_plane + i, y);
            continue;
        }
        // LOOP over input rows: padded row PH + iy holds input row iy.
        for (iy, src) in x.chunks_exact(w_in.max(1)).enumerate() {
            let dst = &mut phases[(ph + iy) * g.rs..(ph + iy + 1) * g.rs];
            match (S::LANES > 1, sw) {
                (true, 1) => {
                    let m = src.len().min(row.saturating_sub(pw));
                    let at = pw.min(row);
                    copy(s, &src[..m], &mut dst[at..at + m]);
                }
                _ => copy_row(src, dst, row, sw, pw),
            }
        }
        let post = Post::new(op);
        let phases = &*phases;
        if S::LANES == 1 {
            if kh == 3 && kw == 3 {
                scalar::plane::<3, 3>(&g, phases, taps, post, y);
            } else {
                scalar::plane::<0, 0>(&g, phases, taps, post, y);
            }
        } else {
            simd::simd_plane(s, &g, phases, taps, post, y);
        }
        finish_plane(op, epilogue, first_plane + i, y);
    }
}

/// The rest of plane `plane`'s epilogue after the blocks' `Post`: the other activations, or the
/// residual and then any activation, while the plane is in cache.
#[inline(always)]
fn finish_plane(op: PostOp, epilogue: Epilogue<'_>, plane: usize, y: &mut [f32]) {
    if let Some(act) = op.act {
        activation(act, y);
    }
    epilogue.after(plane, y);
}

/// Whether the in-place blocks are turned off (a test's switch, to compare them with the
/// padded copy bit for bit); always `false` outside the crate's tests.
#[inline(always)]
fn padded_only() -> bool {
    #[cfg(test)]
    return tests::PADDED_ONLY.get();
    #[cfg(not(test))]
    false
}
