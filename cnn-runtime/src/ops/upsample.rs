//! Upsampling by integer factors, nearest or bilinear, with PyTorch's index arithmetic.
//!
//! Each output coordinate on each axis maps to a source coordinate, computed in f32 as
//! PyTorch's CPU kernel does (`aten/src/ATen/native/UpSample.h`), so that every output picks
//! the same input pixels and weights:
//!
//! + nearest: `src = min(⌊dst · r⌋, in − 1)` with `r = f32(1 / scale)`, except that
//!   `out = in` copies and `out = 2·in` takes `dst / 2`. For most scales this is `⌊dst / scale⌋`,
//!   but not for all: `r` rounds down for scales 41, 47, 55, 61, …, and then PyTorch maps
//!   `dst = 41` (scale 41) to source 0, not 1. We follow PyTorch.
//! + bilinear, `align_corners = false`: `src = max(r·(dst + 0.5) − 0.5, 0)` with
//!   `r = f32(1 / scale)` (`area_pixel_compute_source_index` with the scale factor as given);
//!   `align_corners = true`: `src = dst · (in − 1)/(out − 1)` (0 when `out = 1`). Then
//!   `i0 = min(⌊src⌋, in − 1)`, `i1 = min(i0 + 1, in − 1)`, `λ1 = clamp(src − i0, 0, 1)`,
//!   `λ0 = 1 − λ1`, and `out = λ0ʰ·(λ0ʷ·x[i0, j0] + λ1ʷ·x[i0, j1]) + λ1ʰ·(λ0ʷ·x[i1, j0] + λ1ʷ·x[i1, j1])`.
//!   An axis with `out = in` copies (`i0 = i1 = dst`, `λ = (1, 0)`).
//!
//! The rules are PyTorch's, but bilinear values agree to rounding, not bit for bit: PyTorch
//! 2.15's CPU kernel, as built, evaluates `r·(dst + 0.5) − 0.5` with a fused multiply-add (it
//! returns `0.49999997` where plain f32 arithmetic gives `0.5`), which can also move a source
//! that is an integer in f32 to just below it (another pixel pair, the same blend to rounding).
//! No evaluation order we tried reproduces all of its bits, so the tests compare within `1e-6`.

#[cfg(not(feature = "std"))]
use crate::math::Float as _;

/// How [`upsample2d`] fills the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpsampleMode {
    /// PyTorch: `mode='nearest'`: each output copies one input pixel.
    Nearest,
    /// PyTorch: `mode='bilinear'`: each output blends the 2×2 input pixels around its source
    /// position.
    Bilinear {
        /// PyTorch's `align_corners`: with `true` the corner pixels of input and output are
        /// aligned, with `false` (PyTorch's default) their centres are spaced by the scale.
        align_corners: bool,
    },
}

/// Shape of an upsampling layer, computed once by the `cnn!` macro and emitted as a `const`.
///
/// PyTorch: `nn.Upsample(scale_factor=(sh, sw), mode='nearest' | 'bilinear', align_corners)`
/// with integer factors, so `out_hw = [H·sh, W·sw]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Upsample2dParams {
    /// Channels (upsampled independently).
    pub channels: usize,
    /// Integer scale factors `[SH, SW]`, at least 1.
    pub scale: [usize; 2],
    /// Nearest or bilinear.
    pub mode: UpsampleMode,
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW] = [H·SH, W·SW]`.
    pub out_hw: [usize; 2],
}

impl Upsample2dParams {
    /// Elements of one input sample.
    pub const fn in_len(&self) -> usize {
        self.channels * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample.
    pub const fn out_len(&self) -> usize {
        self.channels * self.out_hw[0] * self.out_hw[1]
    }
}

/// `out[n, c, y, x] = input[n, c, src(y), src(x)]` (nearest), or the bilinear blend of the
/// four input pixels around `(src(y), src(x))`, with PyTorch's `src` (module docs). Planes are
/// independent: a caller splitting the work over threads hands each part a run of whole planes
/// as a descriptor with fewer `channels` (as the executor does for pooling).
///
/// + `n`: the batch size
/// + `input`: `[n, channels, H, W]` row-major
/// + `out`: `[n, channels, OH, OW]` row-major, overwritten
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn upsample2d(p: &Upsample2dParams, n: usize, input: &[f32], out: &mut [f32]) {
    let planes = n * p.channels;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let (in_plane, out_plane) = (h_in * w_in, h_out * w_out);
    assert!(
        input.len() >= planes * in_plane,
        "upsample2d input too short"
    );
    assert!(
        out.len() >= planes * out_plane,
        "upsample2d output too short"
    );
    if out_plane == 0 {
        return;
    }
    if in_plane == 0 {
        // Only reachable with a descriptor whose out_hw is not in_hw·scale; nothing to read.
        out[..planes * out_plane].fill(0.0);
        return;
    }
    let ys = Axis::new(h_in, h_out, p.scale[0]);
    let xs = Axis::new(w_in, w_out, p.scale[1]);
    let planes = input
        .chunks_exact(in_plane)
        .zip(out.chunks_exact_mut(out_plane))
        .take(planes);
    match p.mode {
        UpsampleMode::Nearest => {
            // LOOP over planes
            for (x, y) in planes {
                // LOOP over output rows
                for (oy, dst) in y.chunks_exact_mut(w_out).enumerate() {
                    let src = &x[ys.nearest(oy) * w_in..][..w_in];
                    // LOOP over output columns
                    for (ox, d) in dst.iter_mut().enumerate() {
                        *d = src[xs.nearest(ox)];
                    }
                }
            }
        }
        UpsampleMode::Bilinear { align_corners } => {
            // LOOP over planes
            for (x, y) in planes {
                // LOOP over output rows
                for (oy, dst) in y.chunks_exact_mut(w_out).enumerate() {
                    let (i0, i1, h0, h1) = ys.linear(oy, align_corners);
                    let (r0, r1) = (&x[i0 * w_in..][..w_in], &x[i1 * w_in..][..w_in]);
                    // LOOP over output columns
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let (j0, j1, w0, w1) = xs.linear(ox, align_corners);
                        let top = w0 * r0[j0] + w1 * r0[j1];
                        let bottom = w0 * r1[j0] + w1 * r1[j1];
                        *d = h0 * top + h1 * bottom;
                    }
                }
            }
        }
    }
}

/// One axis of the mapping from output to input coordinates.
#[derive(Debug, Clone, Copy)]
struct Axis {
    /// Input size, at least 1.
    len_in: usize,
    /// Output size.
    len_out: usize,
    /// `f32(1 / scale)`, PyTorch's `compute_scales_value` for a given scale factor.
    ratio: f32,
}

impl Axis {
    fn new(len_in: usize, len_out: usize, scale: usize) -> Self {
        let ratio = if scale > 0 {
            (1.0 / scale as f64) as f32
        } else {
            // Only with a descriptor the macro never emits; PyTorch's ratio without a scale.
            len_in as f32 / len_out as f32
        };
        Axis {
            len_in,
            len_out,
            ratio,
        }
    }

    /// PyTorch's `nearest_idx` (`dst < len_out`).
    #[inline]
    fn nearest(&self, dst: usize) -> usize {
        if self.len_out == self.len_in {
            dst
        } else if self.len_out == 2 * self.len_in {
            dst >> 1
        } else {
            ((dst as f32 * self.ratio).floor() as usize).min(self.len_in - 1)
        }
    }

    /// PyTorch's `compute_source_index_and_lambda`: `(i0, i1, λ0, λ1)`.
    #[inline]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, rand_vec};

    /// `(channels, scale, [h, w], n)`: scale 1 on one or both axes, 2, 3 and 4, H ≠ W, 1×1
    /// and single-row or single-column inputs, batches of 1 and 3.
    const CASES: &[(usize, [usize; 2], [usize; 2], usize)] = &[
        (1, [2, 2], [2, 2], 1),
        (3, [2, 2], [5, 4], 3),
        (2, [3, 2], [4, 7], 1),
        (5, [1, 4], [3, 5], 3),
        (1, [4, 3], [1, 1], 3),
        (2, [1, 1], [4, 3], 1),
        (4, [3, 3], [7, 1], 1),
        (3, [2, 1], [1, 6], 3),
        (1, [3, 4], [6, 5], 1),
    ];

    const MODES: [UpsampleMode; 3] = [
        UpsampleMode::Nearest,
        UpsampleMode::Bilinear {
            align_corners: false,
        },
        UpsampleMode::Bilinear {
            align_corners: true,
        },
    ];

    fn params(
        c: usize,
        scale: [usize; 2],
        in_hw: [usize; 2],
        mode: UpsampleMode,
    ) -> Upsample2dParams {
        Upsample2dParams {
            channels: c,
            scale,
            mode,
            in_hw,
            out_hw: [in_hw[0] * scale[0], in_hw[1] * scale[1]],
        }
    }

    /// The definition in f64 on one axis: `(i0, i1, λ0, λ1)` for bilinear, `(⌊dst/scale⌋, _, 1, 0)`
    /// for nearest.
    fn source(
        dst: usize,
        len_in: usize,
        scale: usize,
        mode: UpsampleMode,
    ) -> (usize, usize, f64, f64) {
        let len_out = len_in * scale;
        let src = match mode {
            UpsampleMode::Nearest => return (dst / scale, dst / scale, 1.0, 0.0),
            UpsampleMode::Bilinear {
                align_corners: false,
            } => ((dst as f64 + 0.5) / scale as f64 - 0.5).max(0.0),
            UpsampleMode::Bilinear {
                align_corners: true,
            } if len_out > 1 => dst as f64 * (len_in - 1) as f64 / (len_out - 1) as f64,
            UpsampleMode::Bilinear { .. } => 0.0,
        };
        let i0 = (src.floor() as usize).min(len_in - 1);
        let l1 = (src - i0 as f64).clamp(0.0, 1.0);
        ((i0), (i0 + 1).min(len_in - 1), 1.0 - l1, l1)
    }

    fn naive(p: &Upsample2dParams, n: usize, x: &[f32]) -> Vec<f32> {
        let [h, w] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let mut out = Vec::with_capacity(n * p.out_len());
        for plane in x.chunks_exact(h * w).take(n * p.channels) {
            let at = |i: usize, j: usize| plane[i * w + j] as f64;
            for y in 0..oh {
                let (i0, i1, h0, h1) = source(y, h, p.scale[0], p.mode);
                for xo in 0..ow {
                    let (j0, j1, w0, w1) = source(xo, w, p.scale[1], p.mode);
                    let v = h0 * (w0 * at(i0, j0) + w1 * at(i0, j1))
                        + h1 * (w0 * at(i1, j0) + w1 * at(i1, j1));
                    out.push(v as f32);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_over_awkward_shapes() {
        for (i, &(c, scale, in_hw, n)) in CASES.iter().enumerate() {
            for mode in MODES {
                let p = params(c, scale, in_hw, mode);
                let x = rand_vec(n * p.in_len(), i as u64);
                let mut out = vec![f32::NAN; n * p.out_len()];
                upsample2d(&p, n, &x, &mut out);
                let want = naive(&p, n, &x);
                if mode == UpsampleMode::Nearest {
                    assert_eq!(out, want, "{p:?}");
                } else {
                    assert_close(&out, &want, 1e-6);
                }
            }
        }
    }

    #[test]
    fn leaves_the_rest_of_the_output_alone() {
        let p = params(2, [2, 3], [3, 2], MODES[1]);
        let x = rand_vec(p.in_len() + 5, 1);
        let mut out = vec![7.0; p.out_len() + 5];
        upsample2d(&p, 1, &x, &mut out);
        assert_eq!(out[p.out_len()..], [7.0; 5]);
        assert!(out[..p.out_len()].iter().all(|v| v.abs() < 1.0));
    }

    /// Produced by PyTorch 2.15, `x = torch.tensor([[[[1., 2.], [3., 4.]]]])`:
    /// `nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)(x)`. By hand: the
    /// source of output `d` is `max((d + 0.5)/2 − 0.5, 0) = 0, 0.25, 0.75, 1.25` (the last
    /// clamped to the edge pixel), so a row `[a, b]` becomes
    /// `[a, 0.75a + 0.25b, 0.25a + 0.75b, b]`.
    #[test]
    fn pytorch_2x2_bilinear_half_pixel() {
        let p = params(1, [2, 2], [2, 2], MODES[1]);
        let mut out = [0.0; 16];
        upsample2d(&p, 1, &[1.0, 2.0, 3.0, 4.0], &mut out);
        #[rustfmt::skip]
        let want = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(out, want);
    }

    /// Produced by PyTorch 2.15, `x = torch.tensor([[[[1., 2.], [3., 4.]]]])`:
    /// `nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)(x)`. By hand: the
    /// source of output `d` is `d·(2 − 1)/(4 − 1) = d/3`, so a row `[a, b]` becomes
    /// `[a, (2a + b)/3, (a + 2b)/3, b]`; PyTorch's f32 values, pasted, differ from the exact
    /// thirds in the last bit.
    #[test]
    fn pytorch_2x2_bilinear_align_corners() {
        let p = params(1, [2, 2], [2, 2], MODES[2]);
        let mut out = [0.0; 16];
        upsample2d(&p, 1, &[1.0, 2.0, 3.0, 4.0], &mut out);
        #[rustfmt::skip]
        let torch = [
            1.0, 1.3333333, 1.6666667, 2.0,
            1.6666666, 2.0, 2.3333335, 2.6666665,
            2.3333335, 2.6666665, 3.0, 3.3333335,
            3.0, 3.3333333, 3.6666667, 4.0,
        ];
        assert_close(&out, &torch, 1e-6);
        let third = |a: f32, b: f32| [a, (2.0 * a + b) / 3.0, (a + 2.0 * b) / 3.0, b];
        let rows = [third(1.0, 2.0), third(3.0, 4.0)];
        for (d, row) in out.chunks_exact(4).enumerate() {
            let hand: Vec<f32> = (0..4)
                .map(|j| {
                    let t = d as f32 / 3.0;
                    (1.0 - t) * rows[0][j] + t * rows[1][j]
                })
                .collect();
            assert_close(row, &hand, 1e-6);
        }
    }

    /// Produced by PyTorch 2.15, `x = torch.tensor([[[[1., 2.], [3., 4.]]]])`:
    /// `nn.Upsample(scale_factor=(2, 3), mode='bilinear', align_corners=False)(x)`,
    /// `nn.Upsample(scale_factor=(3, 2), mode='bilinear', align_corners=True)(x)` and
    /// `nn.Upsample(scale_factor=(2, 3), mode='nearest')(x)`.
    #[test]
    fn pytorch_2x2_rectangular_scales() {
        #[rustfmt::skip]
        let cases: [(UpsampleMode, [usize; 2], [f32; 24]); 3] = [
            (MODES[1], [2, 3], [
                1.0, 1.0, 1.3333334, 1.6666667, 2.0, 2.0,
                1.5, 1.5, 1.8333334, 2.1666667, 2.5, 2.5,
                2.5, 2.5, 2.8333335, 3.1666665, 3.5, 3.5,
                3.0, 3.0, 3.3333335, 3.6666667, 4.0, 4.0,
            ]),
            (MODES[2], [3, 2], [
                1.0, 1.3333333, 1.6666667, 2.0,
                1.4, 1.7333332, 2.0666666, 2.4,
                1.8000001, 2.1333334, 2.4666667, 2.8000002,
                2.2, 2.5333333, 2.8666668, 3.2,
                2.6, 2.9333334, 3.2666667, 3.6,
                3.0, 3.3333333, 3.6666667, 4.0,
            ]),
            (MODES[0], [2, 3], [
                1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
                1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
                3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
                3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
            ]),
        ];
        for (mode, scale, torch) in cases {
            let p = params(1, scale, [2, 2], mode);
            let mut out = [0.0; 24];
            upsample2d(&p, 1, &[1.0, 2.0, 3.0, 4.0], &mut out);
            assert_close(&out, &torch, 1e-6);
        }
    }

    /// Produced by PyTorch 2.15, `x = torch.tensor([[[[0.5, -2., 4., 1.]]]])`:
    /// `nn.Upsample(scale_factor=(1, 3), mode='bilinear', align_corners=False)(x)` and `=True`.
    /// By hand, without corners the source of output `d` is `(d + 0.5)/3 − 0.5 = (d − 1)/3`,
    /// clamped to `[0, 3]` (`d = 2`: `0.5 + (−2 − 0.5)/3 = −1/3`); with corners `d·3/11`. The
    /// height axis (scale 1) copies. PyTorch's f32 values (`2.3841858e-7` for an exact 0) are
    /// pasted.
    #[test]
    fn pytorch_row_scale_3_interior() {
        let x = [0.5, -2.0, 4.0, 1.0];
        #[rustfmt::skip]
        let cases = [
            (MODES[1], [
                0.5, 0.49999997, -0.33333343, -1.1666667, -2.0, 2.3841858e-7,
                2.0000005, 4.0, 2.9999995, 1.9999998, 1.0, 1.0,
            ]),
            (MODES[2], [
                0.5, -0.18181819, -0.8636364, -1.5454547, -1.4545453, 0.18181825,
                1.8181825, 3.454546, 3.4545453, 2.6363635, 1.8181818, 1.0,
            ]),
        ];
        for (mode, torch) in cases {
            let p = params(1, [1, 3], [1, 4], mode);
            let mut out = [0.0; 12];
            upsample2d(&p, 1, &x, &mut out);
            assert_close(&out, &torch, 1e-6);
        }
        let p = params(1, [1, 3], [1, 4], MODES[1]);
        let mut out = [0.0; 12];
        upsample2d(&p, 1, &x, &mut out);
        assert_close(&out[2..3], &[0.5 + (-2.0 - 0.5) / 3.0], 1e-6);
    }

    /// PyTorch 2.15: `nn.Upsample(scale_factor=(1, 41), mode='nearest')` on a row of 3 maps
    /// output column 41 to input 0 and 82 to 1 (`⌊41 · f32(1/41)⌋ = 0`), every other column
    /// `d` to `⌊d / 41⌋`.
    #[test]
    fn nearest_rounds_the_scale_as_pytorch() {
        let p = params(1, [1, 41], [1, 3], UpsampleMode::Nearest);
        let mut out = vec![0.0; 123];
        upsample2d(&p, 1, &[0.0, 1.0, 2.0], &mut out);
        for (d, &v) in out.iter().enumerate() {
            let want = match d {
                41 => 0,
                82 => 1,
                d => d / 41,
            };
            assert_eq!(v, want as f32, "column {d}");
        }
    }
}
