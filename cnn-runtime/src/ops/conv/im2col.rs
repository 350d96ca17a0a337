//! Convolution as im2col + one GEMM per group; a 1×1 stride-1 unpadded convolution skips
//! im2col, because its input already is the cols matrix.

use super::{Conv2dParams, Epilogue};
use crate::simd::multiversion;
use crate::store::Scratch;
use crate::tuning::{row_parts, splits};

/// Scratch elements of one sample's im2col matrix `[C/G·KH·KW, OH·OW]`, 0 when [`skips`].
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    if skips(p) {
        0
    } else {
        p.fan_in() * p.out_hw[0] * p.out_hw[1]
    }
}

/// A 1×1 kernel at stride 1 without padding reads each input pixel once, in order: the input
/// already is the cols matrix (dilation never moves a 1×1 tap).
pub const fn skips(p: &Conv2dParams) -> bool {
    p.kernel[0] == 1
        && p.kernel[1] == 1
        && p.stride[0] == 1
        && p.stride[1] == 1
        && p.padding[0] == 0
        && p.padding[1] == 0
}

/// `out[n, o, y, x] = epilogue(bias[o] + Σ_{c,i,j} weight[o, c, i, j] · input[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d])`
/// (zero outside the input) for every sample of the batch, with the same rounding as running
/// the batch norm and activation kernels separately. With `threads > 1` (on a worker of the
/// pool), large convolutions split their output channels over that many threads (the result
/// does not change).
///
/// + `n`: the batch size
/// + `input`: `[n, c_in, H, W]` row-major
/// + `weight`: `[c_out, c_in/groups, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `epilogue`: its slices `[c_out]`
/// + `out`: `[n, c_out, OH, OW]` row-major, overwritten
/// + `scratch`: grown to [`scratch_len`] if shorter, never shrunk
///
/// # Panics
/// If a slice is shorter than the layout above.
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
    assert!(
        weight.len() >= p.c_out * p.fan_in(),
        "conv2d weight too short"
    );
    conv2d_with(
        p,
        n,
        input,
        Rows::F32(weight),
        bias,
        epilogue,
        threads,
        out,
        scratch,
    )
}

/// [`conv2d`] in bf16: `w16` is the weight's rows `[c_out, C/G·KH·KW]` as bf16 pairs
/// (`gemm::bf16::pairs_into`); the im2col matrix is rounded to bf16 as the GEMM packs it, and
/// the sums are f32.
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
    let k2 = crate::gemm::bf16::pairs(p.fan_in());
    assert!(w16.len() >= p.c_out * k2, "conv2d weight too short");
    conv2d_with(
        p,
        n,
        input,
        Rows::Bf16(w16),
        bias,
        epilogue,
        threads,
        out,
        scratch,
    )
}

/// The weight rows `[c_out, k]` as the GEMM reads them.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// f32, `k` per row.
    F32(&'a [f32]),
    /// bf16 pairs, `⌈k/2⌉` per row.
    #[cfg(feature = "std")]
    Bf16(&'a [u32]),
}

impl<'a> Rows<'a> {
    /// Rows `first..first + rows` of a matrix with `k` columns.
    fn rows(self, first: usize, rows: usize, k: usize) -> Rows<'a> {
        match self {
            Rows::F32(w) => Rows::F32(&w[first * k..(first + rows) * k]),
            #[cfg(feature = "std")]
            Rows::Bf16(w) => {
                let k2 = crate::gemm::bf16::pairs(k);
                Rows::Bf16(&w[first * k2..(first + rows) * k2])
            }
        }
    }

    /// `y[m × n] = self[m × k] · cols[k × n]`, with `post` (`[add, scale, shift]` per row and
    /// the ReLU flag) the row epilogue applied in the GEMM's registers; whether it was.
    fn gemm(
        self,
        m: usize,
        k: usize,
        n: usize,
        cols: &[f32],
        y: &mut [f32],
        post: Option<(&[[f32; 3]], bool)>,
    ) -> bool {
        match self {
            Rows::F32(w) => match post {
                Some((coef, relu)) => {
                    let post = crate::gemm::RowPost { coef, relu };
                    crate::gemm::sgemm_post(m, k, n, w, cols, y, post);
                    true
                }
                None => {
                    crate::gemm::sgemm(m, k, n, w, cols, y, false);
                    false
                }
            },
            #[cfg(feature = "std")]
            Rows::Bf16(w) => {
                use crate::gemm::bf16;
                let b = bf16::B::F32(cols, (n, 1));
                match post {
                    Some((coef, relu)) => {
                        bf16::gemm_post(m, k, n, w, b, y, bf16::RowPost { coef, relu });
                        true
                    }
                    None => {
                        bf16::gemm(m, k, n, w, b, y, false);
                        false
                    }
                }
            }
        }
    }
}

/// [`conv2d`] with the weights as `weight` holds them.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
fn conv2d_with(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    weight: Rows<'_>,
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let (in_len, out_len) = (p.in_len(), p.out_len());
    let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
    let (m, k, n_cols) = (c_out_g, p.fan_in(), p.out_hw[0] * p.out_hw[1]);
    let hw_in = p.in_hw[0] * p.in_hw[1];
    assert!(input.len() >= n * in_len, "conv2d input too short");
    assert!(out.len() >= n * out_len, "conv2d output too short");
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "conv2d bias too short");
    }
    epilogue.check(p.c_out, n * out_len);
    if n_cols == 0 {
        return;
    }
    let skip = skips(p);
    let scratch = scratch.at_least(scratch_len(p));
    // The GEMM's row epilogue, for every output channel (without `std`, whose GEMM has no
    // such epilogue and which allocates nothing, a separate pass).
    #[cfg(feature = "std")]
    let post = epilogue.gemm_rows(bias, p.c_out);
    #[cfg(not(feature = "std"))]
    let post: Option<([[f32; 3]; 0], bool)> = None;

    // LOOP over samples
    for s in 0..n {
        let x = &input[s * in_len..(s + 1) * in_len];
        let y = &mut out[s * out_len..(s + 1) * out_len];
        // LOOP over groups
        for g in 0..p.groups {
            let xg = &x[g * c_in_g * hw_in..(g + 1) * c_in_g * hw_in];
            let yg = &mut y[g * m * n_cols..(g + 1) * m * n_cols];
            let wg = weight.rows(g * m, m, k);
            let cols = if skip {
                xg
            } else {
                let cols = &mut scratch[..k * n_cols];
                im2col(p, xg, cols);
                &*cols
            };
            // Rows `first..` of this group's output: GEMM, then bias and epilogue in one pass
            // (in registers in the bf16 GEMM), and the residual and activation while the
            // plane is in cache.
            let rows = |first: usize, y: &mut [f32]| {
                let m = y.len() / n_cols;
                let c0 = g * c_out_g + first;
                let post = post.as_ref().map(|(coef, relu)| (&coef[c0..c0 + m], *relu));
                // weight: (G, O/G, C/G·KH·KW)  cols: (C/G·KH·KW, OH·OW)  out: (G, O/G, OH·OW)
                let done = wg.rows(first, m, k).gemm(m, k, n_cols, cols, y, post);
                for (o, row) in y.chunks_exact_mut(n_cols).enumerate() {
                    if !done {
                        epilogue.channel(bias, c0 + o).apply(row);
                    }
                    epilogue.after(s * p.c_out + c0 + o, row);
                }
            };
            let parts = row_parts(threads, m);
            if !splits(parts, m * k * n_cols) {
                rows(0, yg);
                continue;
            }
            // LOOP over output-channel blocks, one per thread; the im2col matrix is shared.
            let per = m.div_ceil(parts);
            let blocks = yg.chunks_mut(per * n_cols);
            crate::threads::for_each(parts, blocks, |i, y| rows(i * per, y));
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
mod tests {
    use super::*;
    use crate::ops::activation::Activation;
    use crate::ops::conv::tests::{params, CASES};
    use crate::test_util::rand_vec;
    use crate::tuning::MIN_MACS_PER_SPLIT;

    /// [`conv2d`] without an epilogue, on one thread.
    fn plain(
        p: &Conv2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        conv2d(p, n, x, w, b, Epilogue::default(), 1, out, scratch);
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
                residual: None,
            };
            let run = |threads| {
                let mut out = vec![f32::NAN; p.out_len()];
                // On a worker of a pool of that many threads, as `run_batch` calls it.
                crate::threads::install(threads, || {
                    conv2d(
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
    fn scratch_is_grown_never_shrunk_and_reusable() {
        let p = params(&CASES[0]);
        let x = rand_vec(p.in_len(), 1);
        let w = rand_vec(p.c_out * p.fan_in(), 2);
        let mut first = vec![0.0; p.out_len()];
        let mut scratch = Vec::new();
        plain(&p, 1, &x, &w, None, &mut first, &mut scratch);
        assert_eq!(scratch.len(), p.scratch_len() + crate::store::LINE - 1);
        let mut second = vec![0.0; p.out_len()];
        let mut big = vec![f32::NAN; p.scratch_len() + 100];
        plain(&p, 1, &x, &w, None, &mut second, &mut big);
        assert_eq!(big.len(), p.scratch_len() + 100);
        assert_eq!(first, second);
    }

    #[test]
    fn hand_computed_3x3_ones_with_padding() {
        // Each output sums the 3×3 neighbourhood of a 3×3 input of ones, plus bias 0.5.
        let p = params(&(1, 1, 1, [3, 3], [1, 1], [1, 1], [1, 1], [3, 3], 1, true));
        let mut out = vec![0.0; 9];
        plain(
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
