//! 2-D convolution as im2col + one GEMM per group (1×1 stride-1 unpadded convolutions skip im2col).

use crate::ops::activation::{activation, Activation};
use crate::simd::multiversion;

/// Shape of a `Conv2d` layer, computed once by the `cnn!` macro and emitted as a `const`.
///
/// PyTorch: `nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups)`; pairs are `[H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channel groups; divides `c_in` and `c_out`.
    pub groups: usize,
    /// Kernel `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[PH, PW]`.
    pub padding: [usize; 2],
    /// Dilation `[DH, DW]`.
    pub dilation: [usize; 2],
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW]`.
    pub out_hw: [usize; 2],
}

impl Conv2dParams {
    /// `[c_out, c_in / groups, KH, KW]`, the PyTorch weight shape.
    pub const fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_out,
            self.c_in / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    /// Elements of one input sample, `c_in·H·W`.
    pub const fn in_len(&self) -> usize {
        self.c_in * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample, `c_out·OH·OW`.
    pub const fn out_len(&self) -> usize {
        self.c_out * self.out_hw[0] * self.out_hw[1]
    }

    /// `c_in / groups · KH · KW`: inputs that feed one output value (the `fan_in` of PyTorch's
    /// initialisation and the `k` of the GEMM).
    pub const fn fan_in(&self) -> usize {
        self.c_in / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Multiply-accumulates for one sample.
    pub const fn macs(&self) -> usize {
        self.out_len() * self.fan_in()
    }

    /// Scratch elements one sample needs: the most of the im2col matrix (0 when the convolution
    /// skips im2col), the Winograd transforms when [`winograd::applies`](super::winograd::applies)
    /// and the phase-split input when [`direct::applies`](super::direct::applies).
    pub const fn scratch_len(&self) -> usize {
        let mut len = self.im2col_len();
        if super::winograd::applies(self) && super::winograd::scratch_len(self) > len {
            len = super::winograd::scratch_len(self);
        }
        if super::direct::applies(self) && super::direct::scratch_len(self) > len {
            len = super::direct::scratch_len(self);
        }
        len
    }

    /// Scratch elements of [`conv2d_fused`]'s im2col matrix for one sample.
    pub const fn im2col_len(&self) -> usize {
        if self.is_depthwise() {
            super::depthwise::scratch_len(self)
        } else if self.skips_im2col() {
            0
        } else {
            self.fan_in() * self.out_hw[0] * self.out_hw[1]
        }
    }

    /// One filter per channel (`groups = c_in = c_out`): run directly, without im2col.
    pub const fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups == self.c_out && self.groups > 1
    }

    // A 1×1 kernel at stride 1 without padding reads each input pixel once, in order: the input
    // already is the cols matrix (dilation never moves a 1×1 tap).
    const fn skips_im2col(&self) -> bool {
        self.kernel[0] == 1
            && self.kernel[1] == 1
            && self.stride[0] == 1
            && self.stride[1] == 1
            && self.padding[0] == 0
            && self.padding[1] == 0
    }
}

/// Work `conv2d` applies to each group's output while it is still in cache:
/// `y = act(y·scale[o] + shift[o])`, a batch norm with running statistics and an activation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `(scale, shift)` per output channel, from [`crate::ops::batchnorm::scale_shift`].
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// An element-wise activation applied last.
    pub act: Option<Activation>,
}

/// `out[n, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · input[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d]`
/// (zero outside the input), for every sample of the batch.
///
/// + `n`: the batch size
/// + `input`: `[n, c_in, H, W]` row-major
/// + `weight`: `[c_out, c_in/groups, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `out`: `[n, c_out, OH, OW]` row-major, overwritten
/// + `scratch`: grown to `p.scratch_len()` if shorter, never shrunk
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    conv2d_fused(
        p,
        n,
        input,
        weight,
        bias,
        Epilogue::default(),
        1,
        out,
        scratch,
    );
}

/// [`conv2d`] followed by `epilogue` on each group's output, with the same rounding as running
/// the batch norm and activation kernels separately. With `threads > 1`, large convolutions
/// split their output channels over that many threads (the result does not change).
///
/// # Panics
/// If a slice is shorter than the layout of [`conv2d`] or the epilogue's `[c_out]`.
#[allow(clippy::too_many_arguments)] // conv2d's arguments plus the epilogue
pub fn conv2d_fused(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (in_len, out_len) = (p.in_len(), p.out_len());
    let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
    let (m, k, n_cols) = (c_out_g, p.fan_in(), p.out_hw[0] * p.out_hw[1]);
    let hw_in = p.in_hw[0] * p.in_hw[1];
    assert!(input.len() >= n * in_len, "conv2d input too short");
    assert!(weight.len() >= p.c_out * k, "conv2d weight too short");
    assert!(out.len() >= n * out_len, "conv2d output too short");
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "conv2d bias too short");
    }
    if let Some((scale, shift)) = epilogue.affine {
        assert!(
            scale.len() >= p.c_out && shift.len() >= p.c_out,
            "conv2d epilogue too short"
        );
    }
    if n_cols == 0 {
        return;
    }
    if p.is_depthwise() {
        let (x, y) = (&input[..n * in_len], &mut out[..n * out_len]);
        super::depthwise::depthwise(p, 0, x, weight, bias, epilogue, y, scratch);
        return;
    }
    let skip = p.skips_im2col();
    if !skip && scratch.len() < p.im2col_len() {
        scratch.resize(p.im2col_len(), 0.0);
    }

    // LOOP over samples
    for s in 0..n {
        let x = &input[s * in_len..(s + 1) * in_len];
        let y = &mut out[s * out_len..(s + 1) * out_len];
        // LOOP over groups
        for g in 0..p.groups {
            let xg = &x[g * c_in_g * hw_in..(g + 1) * c_in_g * hw_in];
            let yg = &mut y[g * m * n_cols..(g + 1) * m * n_cols];
            let wg = &weight[g * m * k..(g + 1) * m * k];
            let cols = if skip {
                xg
            } else {
                let cols = &mut scratch[..k * n_cols];
                im2col(p, xg, cols);
                &*cols
            };
            // Rows `first..` of this group's output: GEMM, then bias and epilogue in one pass.
            let rows = |first: usize, w: &[f32], y: &mut [f32]| {
                let m = y.len() / n_cols;
                // weight: (G, O/G, C/G·KH·KW)  cols: (C/G·KH·KW, OH·OW)  out: (G, O/G, OH·OW)
                crate::gemm::sgemm(m, k, n_cols, w, cols, y, false);
                let c0 = g * c_out_g + first;
                for (o, row) in y.chunks_exact_mut(n_cols).enumerate() {
                    finish(row, bias.map(|b| b[c0 + o]), epilogue, c0 + o);
                }
            };
            let parts = threads.min(m / MIN_ROWS_PER_THREAD).max(1);
            if parts == 1 || m * k * n_cols < MIN_MACS_PER_SPLIT {
                rows(0, wg, yg);
                continue;
            }
            // LOOP over output-channel blocks, one per thread; the im2col matrix is shared.
            let per = m.div_ceil(parts);
            let blocks = yg.chunks_mut(per * n_cols).zip(wg.chunks(per * k));
            crate::threads::for_each(parts, blocks, |i, (y, w)| rows(i * per, w, y));
        }
    }
}

/// Output channels below which a convolution is not split across threads.
const MIN_ROWS_PER_THREAD: usize = 8;
/// Multiply-accumulates below which a thread costs more than it saves.
const MIN_MACS_PER_SPLIT: usize = 4 << 20;

/// Applies `epilogue` to output rows of channels `first, first + 1, …`.
pub(crate) fn apply<'a>(
    epilogue: Epilogue<'_>,
    first: usize,
    rows: impl Iterator<Item = &'a mut [f32]>,
) {
    for (o, row) in rows.enumerate() {
        finish(row, None, epilogue, first + o);
    }
}

/// `row = epilogue(row + bias)` for one row of channel `c`, in one pass where the epilogue is a
/// folded batch norm and/or ReLU: the same operations, in the same order, as adding the bias
/// and then running [`apply`].
fn finish(row: &mut [f32], bias: Option<f32>, epilogue: Epilogue<'_>, c: usize) {
    let (a, b) = epilogue
        .affine
        .map_or((None, 0.0), |(scale, shift)| (Some(scale[c]), shift[c]));
    let relu = epilogue.act == Some(Activation::Relu);
    bias_affine_relu(row, bias, a, b, relu);
    match epilogue.act {
        None | Some(Activation::Relu) => {}
        Some(act) => activation(act, row),
    }
}

multiversion! {
/// `v = max0((v + bias)·a + b)` with each step optional: the bias add, the affine map (two
/// roundings, as the separate batch-norm kernel) and PyTorch's ReLU (NaN stays NaN).
fn bias_affine_relu(row: &mut [f32], bias: Option<f32>, a: Option<f32>, b: f32, relu: bool) {
    // Specialised per combination, so that each loop body is branch-free.
    match (bias, a, relu) {
        (None, None, false) => {}
        (Some(c), None, false) => row.iter_mut().for_each(|v| *v += c),
        (Some(c), Some(a), false) => row.iter_mut().for_each(|v| *v = (*v + c) * a + b),
        (Some(c), Some(a), true) => row.iter_mut().for_each(|v| {
            let w = (*v + c) * a + b;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (Some(c), None, true) => row.iter_mut().for_each(|v| {
            let w = *v + c;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (None, Some(a), false) => row.iter_mut().for_each(|v| *v = *v * a + b),
        (None, Some(a), true) => row.iter_mut().for_each(|v| {
            let w = *v * a + b;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (None, None, true) => row.iter_mut().for_each(|v| {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }),
    }
}
}

multiversion! {
/// Unfolds one group of one sample, `x: [C/G, H, W]`, into `cols: [C/G·KH·KW, OH·OW]`:
/// `cols[(c·KH + i)·KW + j, y·OW + x] = x[c, y·SH − PH + i·DH, x·SW − PW + j·DW]`, zero in the
/// padding.
fn im2col(p: &Conv2dParams, x: &[f32], cols: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let mut rows = cols.chunks_exact_mut(h_out * w_out);
    // LOOP over input channels of the group
    for xc in x.chunks_exact(h_in * w_in) {
        // LOOP over kernel rows
        for ki in 0..kh {
            // LOOP over kernel columns
            for kj in 0..kw {
                // The invariant is set up by `conv2d`: `cols` holds C/G·KH·KW rows.
                let row = rows.next().expect("im2col: cols has a row per tap");
                let off_w = kj * dw;
                // Output columns whose tap lands inside the input at stride 1: [lo, hi).
                let lo = pw.saturating_sub(off_w).min(w_out);
                let hi = (w_in + pw).saturating_sub(off_w).clamp(lo, w_out);
                // LOOP over output rows
                for (oy, dst) in row.chunks_exact_mut(w_out).enumerate() {
                    let iy = (oy * sh + ki * dh).wrapping_sub(ph);
                    if iy >= h_in {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &xc[iy * w_in..(iy + 1) * w_in];
                    if sw == 1 {
                        dst[..lo].fill(0.0);
                        if lo < hi {
                            dst[lo..hi].copy_from_slice(&src[lo + off_w - pw..hi + off_w - pw]);
                        }
                        dst[hi..].fill(0.0);
                    } else {
                        // LOOP over output columns
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * sw + off_w).wrapping_sub(pw);
                            *d = if ix < w_in { src[ix] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    /// `(c_in, c_out, groups, kernel, stride, padding, dilation, [h, w], n, bias)`.
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
        bool,
    );

    const CASES: &[Case] = &[
        (3, 16, 1, [3, 3], [1, 1], [1, 1], [1, 1], [8, 8], 1, true),
        (4, 4, 4, [3, 5], [2, 1], [1, 2], [2, 1], [7, 5], 3, true),
        (8, 6, 1, [1, 1], [1, 1], [0, 0], [1, 1], [5, 7], 3, true),
        (8, 6, 2, [1, 1], [1, 1], [0, 0], [3, 2], [5, 7], 1, false),
        (5, 7, 1, [1, 1], [2, 2], [0, 0], [1, 1], [9, 6], 2, true),
        (6, 6, 3, [1, 1], [1, 1], [1, 0], [1, 1], [4, 4], 1, true),
        (3, 5, 1, [2, 2], [3, 3], [0, 0], [1, 1], [11, 10], 1, true),
        (2, 4, 1, [3, 2], [4, 5], [1, 1], [1, 1], [9, 13], 2, false),
        (3, 4, 1, [1, 1], [1, 1], [0, 0], [1, 1], [1, 1], 3, true),
        (3, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1, true),
        (2, 2, 1, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 2, false),
        (8, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1], [6, 6], 3, true),
        (8, 8, 8, [3, 3], [2, 2], [1, 1], [1, 1], [7, 7], 1, false),
        (6, 6, 6, [3, 3], [3, 2], [0, 2], [2, 2], [9, 8], 2, true),
        (3, 3, 3, [1, 1], [2, 2], [1, 1], [1, 1], [1, 1], 1, false),
        (5, 5, 5, [2, 4], [1, 3], [1, 2], [1, 1], [4, 10], 2, true),
        (6, 4, 2, [3, 3], [1, 2], [2, 0], [2, 2], [8, 9], 1, true),
        (6, 9, 3, [2, 3], [1, 1], [0, 1], [1, 3], [5, 8], 3, true),
        (4, 4, 4, [5, 5], [1, 1], [2, 2], [1, 1], [3, 3], 1, true),
        (1, 3, 1, [7, 7], [2, 2], [3, 3], [1, 1], [16, 12], 1, true),
        (3, 2, 1, [3, 3], [1, 1], [4, 4], [1, 1], [2, 3], 1, true),
        (16, 32, 1, [3, 3], [1, 1], [1, 1], [1, 1], [13, 13], 2, true),
    ];

    fn params(c: &Case) -> Conv2dParams {
        let &(c_in, c_out, groups, kernel, stride, padding, dilation, in_hw, _, _) = c;
        let axis = |a: usize| {
            out_len(
                in_hw[a],
                kernel[a],
                stride[a],
                padding[a],
                dilation[a],
                false,
            )
            .expect("the case fits its input")
        };
        Conv2dParams {
            c_in,
            c_out,
            groups,
            kernel,
            stride,
            padding,
            dilation,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// The reference convolution for every conv kernel's tests: any groups, stride, padding and
    /// dilation, `bias + Σ w·x` in f64.
    pub(crate) fn naive(
        p: &Conv2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let [kh, kw] = p.kernel;
        let [h, wd] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let mut out = vec![0.0; n * p.out_len()];
        for s in 0..n {
            for o in 0..p.c_out {
                let g = o / c_out_g;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[o] as f64);
                        for c in 0..c_in_g {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * p.stride[0] + i * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let ix = (xo * p.stride[1] + j * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let ci = g * c_in_g + c;
                                    let xv =
                                        x[((s * p.c_in + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((o * c_in_g + c) * kh + i) * kw + j];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((s * p.c_out + o) * oh + y) * ow + xo] = acc as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_direct_convolution_over_awkward_shapes() {
        for (seed, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.8, case.9);
            let seed = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let bias = has_bias.then_some(&b[..]);
            let mut out = vec![f32::NAN; n * p.out_len()];
            let mut scratch = vec![f32::NAN; 3];
            conv2d(&p, n, &x, &w, bias, &mut out, &mut scratch);
            assert!(scratch.len() >= p.im2col_len(), "{case:?}");
            let want = naive(&p, n, &x, &w, bias);
            assert_close(&out, &want, 1e-5);
        }
    }

    #[test]
    fn splitting_output_channels_over_threads_changes_nothing() {
        for (c_in, c_out, groups) in [(16, 64, 1), (64, 66, 2)] {
            let p = Conv2dParams {
                c_in,
                c_out,
                groups,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
                dilation: [1, 1],
                in_hw: [24, 24],
                out_hw: [24, 24],
            };
            assert!(
                p.macs() / groups >= MIN_MACS_PER_SPLIT,
                "the case must be split"
            );
            let x = rand_vec(p.in_len(), 3);
            let w = rand_vec(p.c_out * p.fan_in(), 4);
            let b = rand_vec(p.c_out, 5);
            let (scale, shift) = (rand_vec(p.c_out, 6), rand_vec(p.c_out, 7));
            let epilogue = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Relu),
            };
            let run = |threads| {
                let mut out = vec![f32::NAN; p.out_len()];
                // On a worker of a pool of that many threads, as `run_batch` calls it.
                crate::threads::install(threads, || {
                    conv2d_fused(
                        &p,
                        1,
                        &x,
                        &w,
                        Some(&b),
                        epilogue,
                        threads,
                        &mut out,
                        &mut Vec::new(),
                    )
                });
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = run(1);
            for threads in [2, 3, 7] {
                assert_eq!(run(threads), one, "{threads} threads, {groups} groups");
            }
        }
    }

    #[test]
    fn scratch_len_covers_every_algorithm_that_applies() {
        for case in CASES {
            let p = params(case);
            let depthwise = p.groups > 1 && p.groups == p.c_in && p.groups == p.c_out;
            let skip = p.kernel == [1, 1] && p.stride == [1, 1] && p.padding == [0, 0];
            let per_group = p.c_in / p.groups * p.kernel[0] * p.kernel[1];
            let want = if depthwise {
                let row = p.out_hw[1] + (p.kernel[1] - 1) * p.dilation[1] / p.stride[1] + 16;
                (p.in_hw[0] + 2 * p.padding[0]) * p.stride[1] * row
            } else if skip {
                0
            } else {
                per_group * p.out_hw[0] * p.out_hw[1]
            };
            assert_eq!(p.im2col_len(), want, "{case:?}");
            let winograd = super::super::winograd::applies(&p);
            let w = super::super::winograd::scratch_len(&p);
            let direct = super::super::direct::applies(&p);
            let d = super::super::direct::scratch_len(&p);
            let want = if winograd { want.max(w) } else { want };
            let want = if direct { want.max(d) } else { want };
            assert_eq!(p.scratch_len(), want, "{case:?}");
        }
    }

    #[test]
    fn scratch_is_grown_never_shrunk_and_reusable() {
        let p = params(&CASES[0]);
        let x = rand_vec(p.in_len(), 1);
        let w = rand_vec(p.c_out * p.fan_in(), 2);
        let mut first = vec![0.0; p.out_len()];
        let mut scratch = Vec::new();
        conv2d(&p, 1, &x, &w, None, &mut first, &mut scratch);
        assert_eq!(scratch.len(), p.scratch_len());
        let mut second = vec![0.0; p.out_len()];
        let mut big = vec![f32::NAN; p.scratch_len() + 100];
        conv2d(&p, 1, &x, &w, None, &mut second, &mut big);
        assert_eq!(big.len(), p.scratch_len() + 100);
        assert_eq!(first, second);
    }

    #[test]
    fn hand_computed_3x3_ones_with_padding() {
        // Each output sums the 3×3 neighbourhood of a 3×3 input of ones, plus bias 0.5.
        let p = params(&(1, 1, 1, [3, 3], [1, 1], [1, 1], [1, 1], [3, 3], 1, true));
        let mut out = vec![0.0; 9];
        conv2d(
            &p,
            1,
            &[1.0; 9],
            &[1.0; 9],
            Some(&[0.5]),
            &mut out,
            &mut Vec::new(),
        );
        assert_eq!(out, [4.5, 6.5, 4.5, 6.5, 9.5, 6.5, 4.5, 6.5, 4.5]);
    }
}
