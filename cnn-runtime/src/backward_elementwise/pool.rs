//! Backward of max and average pooling, windowed and global.

use crate::ops::pool::{Pool2dParams, PoolKind};

/// The clipped window of output index `o` on one axis, as PyTorch's CPU kernels compute it:
/// the real input range `[lo, hi)` and the padded extent `min(start + k, in + p) − start`
/// (`start = o·s − p`), the average's divisor factor with `count_include_pad`.
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize, usize) {
    // Padded coordinates: the padded input is [0, len + 2p), the real input [p, len + p).
    let start = o * s;
    let end = start + k;
    let padded = end.min(len + 2 * p).saturating_sub(start);
    let lo = start.max(p) - p;
    let hi = end.min(len + p).saturating_sub(p).max(lo);
    (lo, hi, padded)
}

/// `dx` = the gradient of [`crate::ops::pool::pool2d`] w.r.t. its input, given `dy`.
///
/// + Max: each output's gradient goes to one element of its window, the one PyTorch's
///   `max_pool2d_with_indices` records: scanning the clipped window row-major from the
///   value −∞ and the window's first element, an element replaces the current one when
///   `v > max` or `v` is NaN (so the *first* of tied maxima, the *last* NaN). Gradients of
///   overlapping windows add up, in output row-major order.
/// + Avg: each output's `dy / divisor` is added to every real element of its window, with
///   PyTorch's divisor: the window clipped to the padded input (never the `ceil_mode`
///   overhang past it) with `count_include_pad`, else the number of real elements. A window
///   with no real element (impossible for shapes PyTorch accepts) passes nothing.
/// + A global pool is the window `kernel = in_hw` (the max of the plane, or `dy / (H·W)` to
///   every element, as `adaptive_{max,avg}_pool2d` backward for output size 1).
///
/// + `n`: the batch size
/// + `input`: the forward's input `[n, channels, H, W]`; read only for max pooling (pass
///   `&[]` for average pooling)
/// + `dy`: `[n, channels, OH, OW]`
/// + `dx`: `[n, channels, H, W]`, overwritten
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn pool2d_backward(p: &Pool2dParams, n: usize, input: &[f32], dy: &[f32], dx: &mut [f32]) {
    let planes = n * p.channels;
    let [h, w] = p.in_hw;
    let [oh, ow] = p.out_hw;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let (hw_in, hw_out) = (h * w, oh * ow);
    assert!(dy.len() >= planes * hw_out, "pool2d_backward dy too short");
    assert!(dx.len() >= planes * hw_in, "pool2d_backward dx too short");
    if p.kind == PoolKind::Max {
        assert!(
            input.len() >= planes * hw_in,
            "pool2d_backward input too short"
        );
    }
    let dx = &mut dx[..planes * hw_in];
    dx.fill(0.0);
    if hw_in == 0 {
        return;
    }
    // LOOP over (sample, channel) planes
    for plane in 0..planes {
        let g = &dy[plane * hw_out..(plane + 1) * hw_out];
        let d = &mut dx[plane * hw_in..(plane + 1) * hw_in];
        // LOOP over output rows
        for oy in 0..oh {
            let (r0, r1, padded_h) = window(oy, kh, sh, ph, h);
            // LOOP over output columns
            for ox in 0..ow {
                let (c0, c1, padded_w) = window(ox, kw, sw, pw, w);
                if r0 >= r1 || c0 >= c1 {
                    continue;
                }
                let grad = g[oy * ow + ox];
                match p.kind {
                    PoolKind::Max => {
                        let x = &input[plane * hw_in..(plane + 1) * hw_in];
                        let (mut best, mut at) = (f32::NEG_INFINITY, r0 * w + c0);
                        for r in r0..r1 {
                            for c in c0..c1 {
                                let v = x[r * w + c];
                                if v > best || v.is_nan() {
                                    best = v;
                                    at = r * w + c;
                                }
                            }
                        }
                        d[at] += grad;
                    }
                    PoolKind::Avg { count_include_pad } => {
                        let divisor = if count_include_pad {
                            padded_h * padded_w
                        } else {
                            (r1 - r0) * (c1 - c0)
                        };
                        let share = grad / divisor as f32;
                        for r in r0..r1 {
                            for v in &mut d[r * w + c0..r * w + c1] {
                                *v += share;
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
    use crate::backward_elementwise::check::{assert_grad, dot, fd_grad, max_abs, wide};
    use crate::shape::out_len;
    use crate::test_util::rand_vec;

    /// A descriptor with `out_hw` from the crate's `out_len` (PyTorch's formula, ceil_mode rule).
    #[allow(clippy::too_many_arguments)]
    fn params(
        kind: PoolKind,
        channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        in_hw: [usize; 2],
    ) -> Pool2dParams {
        let o =
            |a: usize| out_len(in_hw[a], kernel[a], stride[a], padding[a], 1, ceil_mode).unwrap();
        Pool2dParams {
            kind,
            channels,
            kernel,
            stride,
            padding,
            ceil_mode,
            in_hw,
            out_hw: [o(0), o(1)],
        }
    }

    /// The forward from the definition in f64: every window in padded coordinates, windows
    /// starting past the padded input's end (`ceil_mode` overhang) clipped to it.
    fn forward_f64(p: &Pool2dParams, n: usize, x: &[f64]) -> Vec<f64> {
        let [h, w] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let mut out = vec![0.0; n * p.channels * oh * ow];
        for plane in 0..n * p.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (y0, x0) = (
                        (oy * p.stride[0]) as isize - p.padding[0] as isize,
                        (ox * p.stride[1]) as isize - p.padding[1] as isize,
                    );
                    let (mut max, mut sum, mut real, mut padded) =
                        (f64::NEG_INFINITY, 0.0, 0usize, 0usize);
                    for ky in 0..p.kernel[0] as isize {
                        for kx in 0..p.kernel[1] as isize {
                            let (iy, ix) = (y0 + ky, x0 + kx);
                            let in_padded = iy < (h + p.padding[0]) as isize
                                && ix < (w + p.padding[1]) as isize;
                            if in_padded {
                                padded += 1;
                            }
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                let v = x[plane * h * w + iy as usize * w + ix as usize];
                                max = max.max(v);
                                sum += v;
                                real += 1;
                            }
                        }
                    }
                    out[plane * oh * ow + oy * ow + ox] = match p.kind {
                        PoolKind::Max => max,
                        PoolKind::Avg { count_include_pad } => {
                            sum / if count_include_pad { padded } else { real } as f64
                        }
                    };
                }
            }
        }
        out
    }

    /// `(kernel, stride, padding, ceil_mode, in_hw, channels)`: odd sizes, stride ≠ kernel,
    /// padding, ceil_mode with an overhanging last window, global windows.
    #[allow(clippy::type_complexity)]
    const CASES: &[([usize; 2], [usize; 2], [usize; 2], bool, [usize; 2], usize)] = &[
        ([2, 2], [2, 2], [0, 0], false, [6, 8], 3),
        ([2, 2], [2, 2], [0, 0], true, [7, 5], 5),
        ([3, 3], [2, 2], [1, 1], true, [7, 9], 3),
        ([3, 3], [2, 2], [1, 1], false, [8, 6], 2),
        ([3, 2], [1, 2], [1, 0], false, [5, 7], 3),
        ([2, 3], [3, 2], [1, 1], true, [8, 7], 1),
        ([3, 3], [1, 1], [1, 1], false, [4, 5], 3),
        ([5, 4], [5, 4], [0, 0], false, [5, 4], 9),
        ([4, 4], [3, 3], [2, 2], true, [9, 11], 2),
        ([1, 1], [2, 2], [0, 0], true, [5, 5], 3),
    ];

    fn kinds() -> [PoolKind; 3] {
        [
            PoolKind::Max,
            PoolKind::Avg {
                count_include_pad: true,
            },
            PoolKind::Avg {
                count_include_pad: false,
            },
        ]
    }

    /// Every kind and case against central differences of the f64 forward, batch 3.
    #[test]
    fn pool_backward_matches_finite_differences() {
        let n = 3;
        for (i, &(kernel, stride, padding, ceil, in_hw, channels)) in CASES.iter().enumerate() {
            for kind in kinds() {
                let p = params(kind, channels, kernel, stride, padding, ceil, in_hw);
                let x = rand_vec(n * p.in_len(), 100 + i as u64);
                let dy = rand_vec(n * p.out_len(), 200 + i as u64);
                let mut dx = vec![f32::NAN; x.len()];
                pool2d_backward(&p, n, &x, &dy, &mut dx);
                let fd = fd_grad(|v| dot(&dy, &forward_f64(&p, n, v)), &wide(&x), 1e-6);
                assert_grad(&dx, &fd, 1e-5, 1e-6 * max_abs(&fd));
            }
        }
    }

    /// The forward kernel and the f64 reference agree on these descriptors (so the cases
    /// test what the runtime computes), and average pooling's backward is the adjoint of the
    /// runtime's forward: `⟨pool(x), dy⟩ = ⟨x, pool_backward(dy)⟩`.
    #[test]
    fn avg_backward_is_the_adjoint_of_the_forward() {
        let n = 3;
        for (i, &(kernel, stride, padding, ceil, in_hw, channels)) in CASES.iter().enumerate() {
            for kind in kinds() {
                let p = params(kind, channels, kernel, stride, padding, ceil, in_hw);
                let x = rand_vec(n * p.in_len(), 300 + i as u64);
                let mut y = vec![0.0; n * p.out_len()];
                crate::ops::pool::pool2d(&p, n, &x, &mut y);
                let want = forward_f64(&p, n, &wide(&x));
                assert_grad(&y, &want, 1e-6, 1e-6);
                if kind == PoolKind::Max {
                    continue;
                }
                let dy = rand_vec(n * p.out_len(), 400 + i as u64);
                let mut dx = vec![0.0; x.len()];
                pool2d_backward(&p, n, &[], &dy, &mut dx);
                let lhs = dot(&dy, &wide(&y));
                let rhs = dot(&dx, &wide(&x));
                assert!(
                    (lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()),
                    "{lhs} vs {rhs}"
                );
            }
        }
    }

    /// Ties go to the first maximal element in row-major order, −∞ windows to their first
    /// element, NaN to the last NaN; overlapping windows add up. (The first case's expected
    /// `dx` is PyTorch 2.15's `x.grad` for the same input and `dy`.)
    #[test]
    fn max_routes_as_pytorch() {
        let p = params(PoolKind::Max, 1, [2, 2], [2, 2], [0, 0], false, [2, 6]);
        let x = [
            1.0,
            3.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            3.0,
            3.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            1.0,
            f32::NAN,
        ];
        let mut dx = [0.0; 12];
        pool2d_backward(&p, 1, &x, &[1.0, 2.0, 4.0], &mut dx);
        assert_eq!(
            dx,
            [0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0]
        );
        // Checked with PyTorch 2.15's `max_pool2d` backward: the last NaN of the window.
        let p = params(PoolKind::Max, 1, [2, 2], [2, 2], [0, 0], false, [2, 2]);
        let mut dx = [0.0; 4];
        pool2d_backward(&p, 1, &[f32::NAN, f32::NAN, 1.0, f32::NAN], &[1.0], &mut dx);
        assert_eq!(dx, [0.0, 0.0, 0.0, 1.0]);
        pool2d_backward(&p, 1, &[f32::NAN, f32::NAN, 1.0, 2.0], &[1.0], &mut dx);
        assert_eq!(dx, [0.0, 1.0, 0.0, 0.0]);
        // Stride 1: the shared maximum gets both windows' gradients.
        let p = params(PoolKind::Max, 1, [1, 2], [1, 1], [0, 0], false, [1, 3]);
        let mut dx = [0.0; 3];
        pool2d_backward(&p, 1, &[0.0, 5.0, 1.0], &[1.0, 2.0], &mut dx);
        assert_eq!(dx, [0.0, 3.0, 0.0]);
    }

    /// A global pool (kernel = input size) spreads `dy / (H·W)` or routes to the first maximum.
    #[test]
    fn global_pools() {
        let p = params(
            PoolKind::Avg {
                count_include_pad: true,
            },
            2,
            [3, 5],
            [3, 5],
            [0, 0],
            false,
            [3, 5],
        );
        let mut dx = vec![0.0; 30];
        pool2d_backward(&p, 1, &[], &[1.5, -3.0], &mut dx);
        assert!(dx[..15].iter().all(|&v| v == 0.1));
        assert!(dx[15..].iter().all(|&v| v == -0.2));
        let p = Pool2dParams {
            kind: PoolKind::Max,
            ..p
        };
        let mut x = vec![0.0; 30];
        x[7] = 2.0;
        x[9] = 2.0;
        x[20] = -1.0;
        let mut dx = vec![9.0; 30];
        pool2d_backward(&p, 1, &x, &[1.5, -3.0], &mut dx);
        let mut want = vec![0.0; 30];
        want[7] = 1.5;
        want[15] = -3.0;
        assert_eq!(dx, want);
    }
}
