//! Backward of upsampling by integer factors, nearest and bilinear.

use crate::ops::upsample::{Upsample2dParams, UpsampleMode};

/// One axis of the output → input mapping, the same arithmetic as the forward
/// ([`crate::ops::upsample`] module docs: PyTorch's `nearest_idx` and
/// `compute_source_index_and_lambda`, in f32).
#[derive(Debug, Clone, Copy)]
struct Axis {
    len_in: usize,
    len_out: usize,
    /// `f32(1 / scale)`.
    ratio: f32,
}

impl Axis {
    fn new(len_in: usize, len_out: usize, scale: usize) -> Self {
        let ratio = if scale > 0 {
            (1.0 / scale as f64) as f32
        } else {
            len_in as f32 / len_out as f32
        };
        Axis {
            len_in,
            len_out,
            ratio,
        }
    }

    fn nearest(&self, dst: usize) -> usize {
        if self.len_out == self.len_in {
            dst.min(self.len_in - 1)
        } else if self.len_out == 2 * self.len_in {
            dst >> 1
        } else {
            ((dst as f32 * self.ratio).floor() as usize).min(self.len_in - 1)
        }
    }

    /// `(i0, i1, λ0, λ1)`.
    fn linear(&self, dst: usize, align_corners: bool) -> (usize, usize, f32, f32) {
        if self.len_out == self.len_in {
            let i = dst.min(self.len_in - 1);
            return (i, i, 1.0, 0.0);
        }
        let src = if align_corners {
            let ratio = if self.len_out > 1 {
                (self.len_in - 1) as f32 / (self.len_out - 1) as f32
            } else {
                0.0
            };
            ratio * dst as f32
        } else {
            (self.ratio * (dst as f32 + 0.5) - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(self.len_in - 1);
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        let i1 = if i0 + 1 < self.len_in { i0 + 1 } else { i0 };
        (i0, i1, 1.0 - l1, l1)
    }
}

/// `dx` = the gradient of [`crate::ops::upsample::upsample2d`] w.r.t. its input: every output
/// gradient is added back to the input pixels it was read from, with the forward's weights,
/// as PyTorch's `upsample_{nearest,bilinear}2d_backward` do (scanning the output row-major;
/// bilinear adds `λʰ·λʷ·dy` to the pixels `(i0, j0)`, `(i0, j1)`, `(i1, j0)`, `(i1, j1)` in
/// that order, the product of the two weights rounded first).
///
/// + `n`: the batch size
/// + `dy`: `[n, channels, OH, OW]` row-major
/// + `dx`: `[n, channels, H, W]` row-major, overwritten
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn upsample2d_backward(p: &Upsample2dParams, n: usize, dy: &[f32], dx: &mut [f32]) {
    let planes = n * p.channels;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let (in_plane, out_plane) = (h_in * w_in, h_out * w_out);
    assert!(
        dy.len() >= planes * out_plane,
        "upsample2d_backward dy too short"
    );
    assert!(
        dx.len() >= planes * in_plane,
        "upsample2d_backward dx too short"
    );
    let dx = &mut dx[..planes * in_plane];
    dx.fill(0.0);
    // An empty input plane has an empty output plane (`OH·OW = H·SH·W·SW`, scales ≥ 1).
    if in_plane == 0 {
        return;
    }
    let ys = Axis::new(h_in, h_out, p.scale[0]);
    let xs = Axis::new(w_in, w_out, p.scale[1]);
    // LOOP over planes
    for (g, d) in dy
        .chunks_exact(out_plane)
        .zip(dx.chunks_exact_mut(in_plane))
        .take(planes)
    {
        match p.mode {
            UpsampleMode::Nearest => {
                // LOOP over output rows
                for (oy, row) in g.chunks_exact(w_out).enumerate() {
                    let src = &mut d[ys.nearest(oy) * w_in..][..w_in];
                    for (ox, &v) in row.iter().enumerate() {
                        src[xs.nearest(ox)] += v;
                    }
                }
            }
            UpsampleMode::Bilinear { align_corners } => {
                // LOOP over output rows
                for (oy, row) in g.chunks_exact(w_out).enumerate() {
                    let (i0, i1, h0, h1) = ys.linear(oy, align_corners);
                    for (ox, &v) in row.iter().enumerate() {
                        let (j0, j1, w0, w1) = xs.linear(ox, align_corners);
                        d[i0 * w_in + j0] += h0 * w0 * v;
                        d[i0 * w_in + j1] += h0 * w1 * v;
                        d[i1 * w_in + j0] += h1 * w0 * v;
                        d[i1 * w_in + j1] += h1 * w1 * v;
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
    use crate::test_util::rand_vec;

    fn params(
        channels: usize,
        scale: [usize; 2],
        mode: UpsampleMode,
        in_hw: [usize; 2],
    ) -> Upsample2dParams {
        Upsample2dParams {
            channels,
            scale,
            mode,
            in_hw,
            out_hw: [in_hw[0] * scale[0], in_hw[1] * scale[1]],
        }
    }

    /// The forward from the definition, in f64: nearest `⌊dst/scale⌋`; bilinear with the
    /// source `(dst + 0.5)/scale − 0.5` clamped at 0, or `dst·(in − 1)/(out − 1)`.
    fn forward_f64(p: &Upsample2dParams, n: usize, x: &[f64]) -> Vec<f64> {
        let [h, w] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let src =
            |dst: usize, len_in: usize, len_out: usize, scale: usize| -> (usize, usize, f64) {
                let s = match p.mode {
                    UpsampleMode::Bilinear {
                        align_corners: true,
                    } => {
                        if len_out > 1 {
                            dst as f64 * (len_in - 1) as f64 / (len_out - 1) as f64
                        } else {
                            0.0
                        }
                    }
                    _ => ((dst as f64 + 0.5) / scale as f64 - 0.5).max(0.0),
                };
                let i0 = (s.floor() as usize).min(len_in - 1);
                let i1 = (i0 + 1).min(len_in - 1);
                (i0, i1, (s - i0 as f64).clamp(0.0, 1.0))
            };
        let mut out = vec![0.0; n * p.channels * oh * ow];
        for plane in 0..n * p.channels {
            let xp = &x[plane * h * w..(plane + 1) * h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    out[plane * oh * ow + oy * ow + ox] = match p.mode {
                        UpsampleMode::Nearest => xp[(oy / p.scale[0]) * w + ox / p.scale[1]],
                        UpsampleMode::Bilinear { .. } => {
                            let (i0, i1, a) = src(oy, h, oh, p.scale[0]);
                            let (j0, j1, b) = src(ox, w, ow, p.scale[1]);
                            (1.0 - a) * ((1.0 - b) * xp[i0 * w + j0] + b * xp[i0 * w + j1])
                                + a * ((1.0 - b) * xp[i1 * w + j0] + b * xp[i1 * w + j1])
                        }
                    };
                }
            }
        }
        out
    }

    fn modes() -> [UpsampleMode; 3] {
        [
            UpsampleMode::Nearest,
            UpsampleMode::Bilinear {
                align_corners: false,
            },
            UpsampleMode::Bilinear {
                align_corners: true,
            },
        ]
    }

    /// `(channels, scale, in_hw)`: odd sizes, unequal scales, scale 1 on one axis, a 1-pixel axis.
    const CASES: &[(usize, [usize; 2], [usize; 2])] = &[
        (3, [2, 2], [5, 4]),
        (2, [2, 3], [3, 5]),
        (5, [3, 1], [4, 3]),
        (1, [1, 4], [1, 3]),
        (9, [3, 3], [2, 2]),
    ];

    /// Every mode and case against central differences of the f64 forward, batch 3.
    #[test]
    fn upsample_backward_matches_finite_differences() {
        let n = 3;
        for (i, &(c, scale, in_hw)) in CASES.iter().enumerate() {
            for mode in modes() {
                let p = params(c, scale, mode, in_hw);
                let x = rand_vec(n * p.in_len(), 60 + i as u64);
                let dy = rand_vec(n * p.out_len(), 61 + i as u64);
                let mut dx = vec![f32::NAN; x.len()];
                upsample2d_backward(&p, n, &dy, &mut dx);
                let fd = fd_grad(|v| dot(&dy, &forward_f64(&p, n, v)), &wide(&x), 1e-3);
                assert_grad(&dx, &fd, 1e-5, 1e-6 * max_abs(&fd));
            }
        }
    }

    /// The backward is the adjoint of the runtime's forward: `⟨up(x), dy⟩ = ⟨x, up_backward(dy)⟩`.
    #[test]
    fn backward_is_the_adjoint_of_the_forward() {
        let n = 3;
        for (i, &(c, scale, in_hw)) in CASES.iter().enumerate() {
            for mode in modes() {
                let p = params(c, scale, mode, in_hw);
                let x = rand_vec(n * p.in_len(), 70 + i as u64);
                let dy = rand_vec(n * p.out_len(), 71 + i as u64);
                let mut y = vec![0.0; dy.len()];
                crate::ops::upsample::upsample2d(&p, n, &x, &mut y);
                let mut dx = vec![0.0; x.len()];
                upsample2d_backward(&p, n, &dy, &mut dx);
                let (lhs, rhs) = (dot(&dy, &wide(&y)), dot(&dx, &wide(&x)));
                assert!(
                    (lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()),
                    "{mode:?} {lhs} vs {rhs}"
                );
            }
        }
    }

    /// Nearest ×2: each input pixel collects the sum of its 2×2 block.
    #[test]
    fn nearest_sums_blocks() {
        let p = params(1, [2, 2], UpsampleMode::Nearest, [1, 2]);
        let mut dx = [0.0; 2];
        upsample2d_backward(&p, 1, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &mut dx);
        assert_eq!(dx, [1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0]);
    }
}
