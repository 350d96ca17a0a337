//! Gradients of a 2-D convolution ([`conv2d_backward`]), by im2col and GEMM.
//!
//! For each sample and group, with `cols = im2col(x_g)` (`[C/G·KH·KW, OH·OW]`, the matrix the
//! forward GEMM multiplies):
//!
//! + `dW_g += dY_g · colsᵀ` (`[O/G, OH·OW] × [OH·OW, C/G·KH·KW]`), summed over the samples in
//!   order. [`im2row`] writes `colsᵀ` directly, so that this is a plain `sgemm` (about twice
//!   as fast as `sgemm_bt` over `cols` with its long `k = OH·OW`);
//! + `dX_g = col2im(W_gᵀ · dY_g)`: the GEMM gives, for every tap and output pixel, what flows
//!   back to the input pixel under that tap, and [`col2im`] adds it there (the adjoint of
//!   im2col). The weight is transposed once per call into the scratch. A 1×1 stride-1
//!   unpadded convolution skips col2im: the GEMM writes `dX_g` directly.

use crate::ops::conv::im2col;
use crate::ops::conv::Conv2dParams;
use crate::simd::multiversion;

/// Scratch elements [`conv2d_backward`] needs: the transposed weight (`c_out · c_in/groups ·
/// KH · KW`, used only when `dx` is computed) and one group's im2col matrix
/// (`c_in/groups · KH · KW · OH · OW`).
pub const fn conv2d_backward_scratch_len(p: &Conv2dParams) -> usize {
    p.c_out * p.fan_in() + cols_len(p)
}

/// Elements of one group's im2col matrix, `c_in/groups · KH · KW · OH · OW`.
pub(super) const fn cols_len(p: &Conv2dParams) -> usize {
    p.fan_in() * p.out_hw[0] * p.out_hw[1]
}

/// The gradients of `y = conv2d(x, weight) + bias` (PyTorch's `nn.Conv2d`, any stride, padding,
/// dilation and groups) given `dy = ∂L/∂y`, over a batch of `n` samples:
///
/// + `dx[s, c, iy, ix] = Σ dy[s, o, oy, ox] · weight[o, c mod C/G, i, j]` over the output
///   channels `o` of `c`'s group and the `(oy, ox, i, j)` with `iy = oy·SH − PH + i·DH`,
///   `ix = ox·SW − PW + j·DW` (0 for input pixels no tap reaches);
/// + `dw[o, c, i, j] = Σ_{s, oy, ox} dy[s, o, oy, ox] · x[s, g·C/G + c, iy, ix]` (zero padding);
/// + `db[o] = Σ_{s, oy, ox} dy[s, o, oy, ox]`.
///
/// Arguments:
///
/// + `x`: the forward input, `[n, c_in, H, W]` row-major
/// + `weight`: `[c_out, c_in/groups, KH, KW]` (read only when `dx` is given)
/// + `dy`: `[n, c_out, OH, OW]`
/// + `dx`: `[n, c_in, H, W]`, overwritten; `None` skips it (a network's first layer)
/// + `dw`: `[c_out, c_in/groups, KH, KW]`, overwritten with the sum over the batch
/// + `db`: `[c_out]`, overwritten; `None` for a layer without bias
/// + `scratch`: grown to [`conv2d_backward_scratch_len`] if shorter, never shrunk
///
/// Runs on the calling thread; the f32 sums run in a fixed order (deterministic).
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)] // the layer, the batch, its tensors and gradients
pub fn conv2d_backward(
    p: &Conv2dParams,
    n: usize,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) {
    let w_len = p.c_out * p.fan_in();
    assert!(dy.len() >= n * p.out_len(), "conv2d_backward dy too short");
    if let Some(db) = db {
        assert!(db.len() >= p.c_out, "conv2d_backward db too short");
        super::channel_sums(n, p.c_out, p.out_hw[0] * p.out_hw[1], dy, db);
    }
    let wt_len = if dx.is_some() { w_len } else { 0 };
    let len = wt_len + cols_len(p);
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let (wt, cols) = scratch.split_at_mut(wt_len);
    let dx = match dx {
        Some(dx) => {
            assert!(weight.len() >= w_len, "conv2d_backward weight too short");
            let (m, k) = (p.c_out / p.groups, p.fan_in());
            // weight: (G, O/G, C/G·KH·KW) → wt: (G, C/G·KH·KW, O/G)
            // LOOP over groups
            for (wg, wtg) in weight[..w_len]
                .chunks_exact((m * k).max(1))
                .zip(wt.chunks_exact_mut((m * k).max(1)))
            {
                crate::transpose::dense(m, k, wg, wtg);
            }
            Some((&*wt, dx))
        }
        None => None,
    };
    grads(p, n, x, dy, dx, dw, cols);
}

/// `dw` (overwritten) and, if given, `dx` (overwritten) of [`conv2d_backward`], with the
/// transposed weight `wt: [G, C/G·KH·KW, O/G]` beside `dx`; `cols` holds at least
/// [`cols_len`] elements. Also the weight gradient of a transposed convolution,
/// with the roles of `x` and `dy` exchanged.
///
/// # Panics
/// If a slice is shorter than its layout.
pub(super) fn grads(
    p: &Conv2dParams,
    n: usize,
    x: &[f32],
    dy: &[f32],
    mut dx: Option<(&[f32], &mut [f32])>,
    dw: &mut [f32],
    cols: &mut [f32],
) {
    let (in_len, out_len) = (p.in_len(), p.out_len());
    let (c_in_g, m, k) = (p.c_in / p.groups, p.c_out / p.groups, p.fan_in());
    let (hw_in, n_cols) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
    assert!(x.len() >= n * in_len, "conv2d_backward x too short");
    assert!(dy.len() >= n * out_len, "conv2d_backward dy too short");
    assert!(dw.len() >= p.c_out * k, "conv2d_backward dw too short");
    if let Some((wt, dx)) = &dx {
        assert!(wt.len() >= p.c_out * k, "conv2d_backward weight too short");
        assert!(dx.len() >= n * in_len, "conv2d_backward dx too short");
    }
    let dw = &mut dw[..p.c_out * k];
    dw.fill(0.0);
    let skip = im2col::skips(p);
    if let Some((_, dx)) = &mut dx {
        // Every element is written below unless a tap misses it (or the GEMM writes it whole).
        if !skip || m == 0 {
            dx[..n * in_len].fill(0.0);
        }
    }
    if n_cols == 0 || m == 0 {
        return;
    }
    let cols = &mut cols[..cols_len(p)];

    // LOOP over samples
    for s in 0..n {
        let xs = &x[s * in_len..(s + 1) * in_len];
        let dys = &dy[s * out_len..(s + 1) * out_len];
        // LOOP over groups
        for g in 0..p.groups {
            let xg = &xs[g * c_in_g * hw_in..(g + 1) * c_in_g * hw_in];
            let dyg = &dys[g * m * n_cols..(g + 1) * m * n_cols];
            let dwg = &mut dw[g * m * k..(g + 1) * m * k];
            im2row(p, xg, cols);
            // dy: (O/G, OH·OW)  colsᵀ: (OH·OW, C/G·KH·KW)  dw: (O/G, C/G·KH·KW), summed over
            // the samples
            if m < SMALL_M {
                outer_products(m, n_cols, k, dyg, cols, dwg);
            } else {
                crate::gemm::sgemm(m, n_cols, k, dyg, cols, dwg, true);
            }
            let Some((wt, dx)) = &mut dx else {
                continue;
            };
            let wtg = &wt[g * k * m..(g + 1) * k * m];
            let dxg = &mut dx[s * in_len + g * c_in_g * hw_in..][..c_in_g * hw_in];
            if skip {
                // wt: (C/G, O/G)  dy: (O/G, H·W)  dx: (C/G, H·W)
                crate::gemm::sgemm(k, m, n_cols, wtg, dyg, dxg, false);
            } else {
                // wt: (C/G·KH·KW, O/G)  dy: (O/G, OH·OW)  cols: (C/G·KH·KW, OH·OW)
                crate::gemm::sgemm(k, m, n_cols, wtg, dyg, cols, false);
                col2im(p, cols, dxg);
            }
        }
    }
}

/// Groups with fewer output channels (depthwise: 1) sum their weight gradient in
/// [`outer_products`]: a GEMM of so few rows spends its time packing.
const SMALL_M: usize = 4;

multiversion! {
/// `dw[m×k] += dy[m×n] · rows[n×k]` (all row-major), one row of `rows` at a time: for each
/// column `j` of `dy`, `dw[o] += dy[o, j] · rows[j]` for every row `o`, in order.
fn outer_products(m: usize, n: usize, k: usize, dy: &[f32], rows: &[f32], dw: &mut [f32]) {
    let dw = &mut dw[..m * k];
    // LOOP over the columns of dy (output pixels)
    for (j, row) in rows.chunks_exact(k).take(n).enumerate() {
        // LOOP over the rows of dw (output channels)
        for (o, acc) in dw.chunks_exact_mut(k).enumerate() {
            let d = dy[o * n + j];
            for (a, &r) in acc.iter_mut().zip(row) {
                *a += d * r;
            }
        }
    }
}
}

multiversion! {
/// Unfolds one group of one sample, `x: [C/G, H, W]`, into the transpose of its im2col matrix,
/// `rows: [OH·OW, C/G·KH·KW]`:
/// `rows[y·OW + x, (c·KH + i)·KW + j] = x[c, y·SH − PH + i·DH, x·SW − PW + j·DW]`, zero in the
/// padding. Each output pixel's row is written in order.
fn im2row(p: &Conv2dParams, x: &[f32], rows: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let k = p.fan_in();
    // LOOP over output rows: the block `[OW, C/G·KH·KW]` of their pixels
    for (oy, block) in rows.chunks_exact_mut(w_out * k).take(h_out).enumerate() {
        // LOOP over input channels of the group
        for (c, xc) in x.chunks_exact(h_in * w_in).enumerate() {
            // LOOP over kernel rows
            for ki in 0..kh {
                let iy = (oy * sh + ki * dh).wrapping_sub(ph);
                let src = (iy < h_in).then(|| &xc[iy * w_in..(iy + 1) * w_in]);
                // LOOP over kernel columns
                for kj in 0..kw {
                    let t = (c * kh + ki) * kw + kj;
                    let off_w = kj * dw;
                    // Output columns whose tap lands inside the input: [lo, hi).
                    let (lo, hi) = match src {
                        Some(_) => {
                            let lo = pw.saturating_sub(off_w).div_ceil(sw).min(w_out);
                            let hi = (w_in + pw)
                                .saturating_sub(off_w)
                                .div_ceil(sw)
                                .clamp(lo, w_out);
                            (lo, hi)
                        }
                        None => (w_out, w_out),
                    };
                    let column = block[t..].iter_mut().step_by(k);
                    // LOOP over output columns
                    for (ox, d) in column.enumerate() {
                        *d = match src {
                            Some(src) if (lo..hi).contains(&ox) => src[ox * sw + off_w - pw],
                            _ => 0.0,
                        };
                    }
                }
            }
        }
    }
}
}

multiversion! {
/// The adjoint of `im2col`: adds `cols: [C/G·KH·KW, OH·OW]` into one group of one sample's
/// input gradient `dx: [C/G, H, W]`,
/// `dx[c, y·SH − PH + i·DH, x·SW − PW + j·DW] += cols[(c·KH + i)·KW + j, y·OW + x]`, dropping
/// what falls in the padding.
fn col2im(p: &Conv2dParams, cols: &[f32], dx: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let mut rows = cols.chunks_exact(h_out * w_out);
    // LOOP over input channels of the group
    for xc in dx.chunks_exact_mut(h_in * w_in) {
        // LOOP over kernel rows
        for ki in 0..kh {
            // LOOP over kernel columns
            for kj in 0..kw {
                // The invariant is set up by `grads`: `cols` holds C/G·KH·KW rows.
                let row = rows.next().expect("col2im: cols has a row per tap");
                let off_w = kj * dw;
                // Output columns whose tap lands inside the input: [lo, hi).
                let lo = pw.saturating_sub(off_w).div_ceil(sw).min(w_out);
                let hi = (w_in + pw)
                    .saturating_sub(off_w)
                    .div_ceil(sw)
                    .clamp(lo, w_out);
                if lo == hi {
                    continue;
                }
                // Input column of output column `lo` (≥ 0 by the choice of `lo`).
                let x0 = lo * sw + off_w - pw;
                // LOOP over output rows
                for (oy, src) in row.chunks_exact(w_out).enumerate() {
                    let iy = (oy * sh + ki * dh).wrapping_sub(ph);
                    if iy >= h_in {
                        continue;
                    }
                    let dst = &mut xc[iy * w_in..(iy + 1) * w_in];
                    if sw == 1 {
                        let dst = &mut dst[x0..x0 + (hi - lo)];
                        for (d, &v) in dst.iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        // LOOP over output columns
                        for (d, &v) in dst[x0..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                            *d += v;
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
    use crate::backward::tests::{check_finite_differences, to_f64};
    use crate::ops::conv::tests::assert_close_mag;
    use crate::ops::conv::Epilogue;
    use crate::ops::conv_transpose::{self, ConvTranspose2dParams};
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    /// `(c_in, c_out, groups, kernel, stride, padding, dilation, [h, w], n)`.
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
    );

    /// Odd sizes, H ≠ W, strides 1–3 (and kernels smaller than the stride, which skip input
    /// pixels), padding (also wider than the input), dilation 2, rectangular kernels, groups 2
    /// and 3 with `c_in/G ≠ c_out/G` (a transposed weight or a missing group offset reads
    /// other values), depthwise, 1×1 with and without the im2col skip, `c_out` off multiples
    /// of 8, batches of 1–3, and a case large enough for several GEMM blocks.
    const CASES: &[Case] = &[
        (3, 5, 1, [3, 3], [1, 1], [1, 1], [1, 1], [7, 6], 3),
        (4, 6, 2, [3, 2], [2, 1], [1, 0], [1, 1], [9, 7], 2),
        (6, 6, 6, [3, 3], [2, 2], [1, 1], [1, 1], [7, 8], 3),
        (4, 4, 4, [3, 3], [1, 1], [2, 2], [2, 2], [6, 5], 1),
        (5, 7, 1, [1, 1], [1, 1], [0, 0], [1, 1], [5, 7], 3),
        (6, 9, 3, [1, 1], [2, 2], [0, 0], [1, 1], [9, 6], 2),
        (6, 4, 2, [1, 1], [1, 1], [1, 0], [1, 1], [4, 4], 1),
        (3, 4, 1, [5, 3], [3, 2], [2, 1], [1, 2], [13, 11], 2),
        (2, 3, 1, [2, 2], [3, 3], [0, 0], [1, 1], [10, 11], 1),
        (8, 10, 2, [3, 3], [2, 2], [1, 1], [2, 2], [11, 9], 3),
        (3, 2, 1, [3, 3], [1, 1], [4, 4], [1, 1], [2, 3], 1),
        (1, 17, 1, [7, 7], [2, 2], [3, 3], [1, 1], [15, 12], 3),
        (6, 10, 2, [2, 3], [3, 1], [1, 2], [2, 1], [8, 7], 3),
        (16, 19, 1, [3, 3], [1, 1], [1, 1], [1, 1], [9, 11], 2),
        (32, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1], [16, 16], 1),
    ];

    fn params(c: &Case) -> Conv2dParams {
        let &(c_in, c_out, groups, kernel, stride, padding, dilation, in_hw, _) = c;
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

    /// Input position `(iy, ix)` under tap `(i, j)` of output `(oy, ox)`, if inside the input.
    fn tap(p: &Conv2dParams, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let iy = (oy * p.stride[0] + i * p.dilation[0]) as isize - p.padding[0] as isize;
        let ix = (ox * p.stride[1] + j * p.dilation[1]) as isize - p.padding[1] as isize;
        let inside = iy >= 0 && ix >= 0 && iy < p.in_hw[0] as isize && ix < p.in_hw[1] as isize;
        inside.then_some((iy as usize, ix as usize))
    }

    /// The forward convolution in f64, from its definition: `y = b + Σ w·x`.
    fn forward64(p: &Conv2dParams, n: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let ([kh, kw], [h, wd], [oh, ow]) = (p.kernel, p.in_hw, p.out_hw);
        let mut y = vec![0.0; n * p.out_len()];
        for s in 0..n {
            for o in 0..p.c_out {
                let g = o / c_out_g;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b[o];
                        for c in 0..c_in_g {
                            for i in 0..kh {
                                for j in 0..kw {
                                    if let Some((iy, ix)) = tap(p, oy, ox, i, j) {
                                        let ci = g * c_in_g + c;
                                        acc += w[((o * c_in_g + c) * kh + i) * kw + j]
                                            * x[((s * p.c_in + ci) * h + iy) * wd + ix];
                                    }
                                }
                            }
                        }
                        y[((s * p.c_out + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    /// The gradients in f64 and their magnitudes (the sum of the absolute values of each
    /// one's terms), from the definition: every product `dy·w` and `dy·x` of every output
    /// and tap, added where it belongs.
    struct Naive {
        dx: (Vec<f64>, Vec<f64>),
        dw: (Vec<f64>, Vec<f64>),
        db: (Vec<f64>, Vec<f64>),
    }

    fn naive(p: &Conv2dParams, n: usize, x: &[f32], w: &[f32], dy: &[f32]) -> Naive {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let ([kh, kw], [h, wd], [oh, ow]) = (p.kernel, p.in_hw, p.out_hw);
        let zeros = |len| (vec![0.0; len], vec![0.0; len]);
        let mut r = Naive {
            dx: zeros(n * p.in_len()),
            dw: zeros(p.c_out * p.fan_in()),
            db: zeros(p.c_out),
        };
        let add = |(v, m): &mut (Vec<f64>, Vec<f64>), i: usize, t: f64| {
            v[i] += t;
            m[i] += t.abs();
        };
        for s in 0..n {
            for o in 0..p.c_out {
                let g = o / c_out_g;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let d = dy[((s * p.c_out + o) * oh + oy) * ow + ox] as f64;
                        add(&mut r.db, o, d);
                        for c in 0..c_in_g {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let Some((iy, ix)) = tap(p, oy, ox, i, j) else {
                                        continue;
                                    };
                                    let xi = ((s * p.c_in + g * c_in_g + c) * h + iy) * wd + ix;
                                    let wi = ((o * c_in_g + c) * kh + i) * kw + j;
                                    add(&mut r.dx, xi, d * w[wi] as f64);
                                    add(&mut r.dw, wi, d * x[xi] as f64);
                                }
                            }
                        }
                    }
                }
            }
        }
        r
    }

    #[test]
    fn the_cases_would_catch_a_transposed_weight_or_a_missing_group_offset() {
        let grouped = CASES
            .iter()
            .map(params)
            .any(|p| p.groups > 1 && !p.is_depthwise() && p.c_in / p.groups != p.c_out / p.groups);
        assert!(grouped, "a grouped case with c_in/G ≠ c_out/G");
        assert!(CASES.iter().map(params).any(|p| p.is_depthwise()));
        assert!(CASES.iter().map(params).any(|p| p.kernel[0] != p.kernel[1]));
        assert!(CASES.iter().map(params).any(|p| im2col::skips(&p)));
    }

    #[test]
    fn conv2d_backward_matches_the_definition_and_finite_differences() {
        for (i, case) in CASES.iter().enumerate() {
            let p = params(case);
            let n = case.8;
            let seed = 500 + 10 * i as u64;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let dy = rand_vec(n * p.out_len(), seed + 3);
            let what = format!("{case:?}");

            let mut dx = vec![f32::NAN; n * p.in_len()];
            let mut dw = vec![f32::NAN; p.c_out * p.fan_in()];
            let mut db = vec![f32::NAN; p.c_out];
            let mut scratch = vec![f32::NAN; 3];
            conv2d_backward(
                &p,
                n,
                &x,
                &w,
                &dy,
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut scratch,
            );
            assert_eq!(scratch.len(), conv2d_backward_scratch_len(&p), "{what}");

            let r = naive(&p, n, &x, &w, &dy);
            let tol = 2e-6;
            assert_close_mag(&dx, &r.dx.0, &r.dx.1, tol, &format!("dx {what}"));
            assert_close_mag(&dw, &r.dw.0, &r.dw.1, tol, &format!("dw {what}"));
            assert_close_mag(&db, &r.db.0, &r.db.1, tol, &format!("db {what}"));

            // Without dx and db: the same dw, bit for bit, and a scratch big enough already.
            let mut dw2 = vec![f32::NAN; dw.len()];
            conv2d_backward(&p, n, &x, &w, &dy, None, &mut dw2, None, &mut scratch);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dw2), bits(&dw), "{what}");

            // L = Σ dy·conv(x, w, b), in f64.
            let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
            let dot = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
            let by_x = |x: &[f64]| dot(forward64(&p, n, x, &w64, &b64));
            let by_w = |w: &[f64]| dot(forward64(&p, n, &x64, w, &b64));
            let by_b = |b: &[f64]| dot(forward64(&p, n, &x64, &w64, b));
            let fd = |loss: &dyn Fn(&[f64]) -> f64,
                      v: &[f64],
                      got: &[f32],
                      (want, mag): &(Vec<f64>, Vec<f64>),
                      s: u64,
                      name: &str| {
                let what = format!("{name} {what}");
                check_finite_differences(loss, v, got, want, mag, seed + s, tol, &what)
            };
            fd(&by_x, &x64, &dx, &r.dx, 5, "dx");
            fd(&by_w, &w64, &dw, &r.dw, 6, "dw");
            fd(&by_b, &b64, &db, &r.db, 7, "db");
        }
    }

    #[test]
    fn dx_is_the_transposed_convolution_of_dy() {
        // The forward kernel of `ConvTranspose2d` with the same weight, sized to the input
        // (output padding covers the rows and columns the convolution's stride left out).
        for (i, case) in CASES.iter().enumerate() {
            let p = params(case);
            let n = case.8;
            let t = ConvTranspose2dParams {
                c_in: p.c_out,
                c_out: p.c_in,
                groups: p.groups,
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                output_padding: [0, 1].map(|a| {
                    p.in_hw[a] + 2 * p.padding[a]
                        - (p.out_hw[a] - 1) * p.stride[a]
                        - p.dilation[a] * (p.kernel[a] - 1)
                        - 1
                }),
                dilation: p.dilation,
                in_hw: p.out_hw,
                out_hw: p.in_hw,
            };
            let seed = 700 + 10 * i as u64;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let dy = rand_vec(n * p.out_len(), seed + 2);
            let mut dx = vec![f32::NAN; n * p.in_len()];
            let mut dw = vec![f32::NAN; w.len()];
            let mut scratch = Vec::new();
            conv2d_backward(
                &p,
                n,
                &x,
                &w,
                &dy,
                Some(&mut dx),
                &mut dw,
                None,
                &mut scratch,
            );
            let mut want = vec![f32::NAN; n * p.in_len()];
            let plain = Epilogue::default();
            conv_transpose::forward(&t, n, &dy, &w, None, plain, 1, &mut want, &mut scratch);
            assert_close(&dx, &want, 1e-5);
        }
    }

    #[test]
    fn an_empty_batch_has_zero_weight_and_bias_gradients() {
        for case in CASES {
            let p = params(case);
            let mut dw = vec![f32::NAN; p.c_out * p.fan_in()];
            let mut db = vec![f32::NAN; p.c_out];
            let w = vec![1.0; dw.len()];
            let mut dx: Vec<f32> = Vec::new();
            conv2d_backward(
                &p,
                0,
                &[],
                &w,
                &[],
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut Vec::new(),
            );
            assert!(dw.iter().chain(&db).all(|&v| v == 0.0), "{case:?}");
        }
    }

    #[test]
    fn hand_computed_3x3_ones_with_padding() {
        // y = conv(x, ones 3×3, pad 1) on a 3×3 input; dy = 1 everywhere. Each input pixel
        // feeds as many outputs as it has neighbours (itself included) inside the image, and
        // each tap sees as many input pixels as the shifted image keeps.
        let p = params(&(1, 1, 1, [3, 3], [1, 1], [1, 1], [1, 1], [3, 3], 1));
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let (mut dx, mut dw, mut db) = ([0.0; 9], [0.0; 9], [0.0]);
        conv2d_backward(
            &p,
            1,
            &x,
            &[1.0; 9],
            &[1.0; 9],
            Some(&mut dx),
            &mut dw,
            Some(&mut db),
            &mut Vec::new(),
        );
        assert_eq!(dx, [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
        // Tap (0, 0) reads x[y − 1, x − 1] for outputs y, x ≥ 1: 1 + 2 + 4 + 5.
        assert_eq!(dw, [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]);
        assert_eq!(db, [9.0]);
    }

    #[test]
    #[should_panic(expected = "conv2d_backward dx too short")]
    fn a_short_gradient_panics() {
        let p = params(&CASES[0]);
        let mut dx = vec![0.0; p.in_len() - 1];
        let mut dw = vec![0.0; p.c_out * p.fan_in()];
        conv2d_backward(
            &p,
            1,
            &vec![0.0; p.in_len()],
            &dw.clone(),
            &vec![0.0; p.out_len()],
            Some(&mut dx),
            &mut dw,
            None,
            &mut Vec::new(),
        );
    }
}
