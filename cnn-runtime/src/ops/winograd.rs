//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3): each 2×2 output tile
//! comes from a 4×4 input tile with 16 multiplications per (input, output) channel pair instead
//! of 36, as 16 GEMMs over all tiles.
//!
//! With `d` a 4×4 input tile, `g` a 3×3 filter and
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`: `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`.

use super::conv2d::{apply, Conv2dParams, Epilogue};
use crate::simd::multiversion;

/// Whether [`conv2d`](super::conv2d::conv2d_fused) runs `p` with Winograd: a 3×3 kernel,
/// stride 1, no dilation, one group, and enough channels and tiles for the transforms to pay.
pub const fn applies(p: &Conv2dParams) -> bool {
    p.kernel[0] == 3
        && p.kernel[1] == 3
        && p.stride[0] == 1
        && p.stride[1] == 1
        && p.dilation[0] == 1
        && p.dilation[1] == 1
        && p.groups == 1
        && p.c_in >= 16
        && p.c_out >= 16
        && p.out_hw[0] >= 4
        && p.out_hw[1] >= 4
}

/// 2×2 output tiles of one sample.
pub const fn tiles(p: &Conv2dParams) -> usize {
    p.out_hw[0].div_ceil(2) * p.out_hw[1].div_ceil(2)
}

/// Scratch elements for one sample: the transformed input `[16, T, c_in]`, the products
/// `[16, T, c_out]`, and channel-last copies of the input `[H, W, c_in]` and output
/// `[OH, OW, c_out]`.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    16 * tiles(p) * (p.c_in + p.c_out)
        + p.in_hw[0] * p.in_hw[1] * p.c_in
        + p.out_hw[0] * p.out_hw[1] * p.c_out
}

/// Elements of the transformed weights, `[16, c_in, c_out]`.
pub const fn weight_len(p: &Conv2dParams) -> usize {
    16 * p.c_in * p.c_out
}

/// `U = G g Gᵀ` for every filter, laid out `[16, c_in, c_out]` (the GEMMs' B operands).
///
/// + `weight`: `[c_out, c_in, 3, 3]` (PyTorch's layout)
pub fn transform_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let (c_in, c_out) = (p.c_in, p.c_out);
    let mut u = vec![0.0f32; weight_len(p)];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &weight[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
            // Gg: 4×3, rows of G applied to the filter's rows.
            let mut gg = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, e) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + e);
                gg[2][j] = 0.5 * (a - b + e);
                gg[3][j] = e;
            }
            for (i, row) in gg.iter().enumerate() {
                let [a, b, e] = *row;
                let t = [a, 0.5 * (a + b + e), 0.5 * (a - b + e), e];
                for (j, &v) in t.iter().enumerate() {
                    u[((i * 4 + j) * c_in + c) * c_out + o] = v;
                }
            }
        }
    }
    u
}

/// The convolution of [`conv2d_fused`](super::conv2d::conv2d_fused) for a `p` where
/// [`applies`] holds, with transformed weights `u` from [`transform_weights`].
///
/// # Panics
/// If a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // conv2d_fused's arguments
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (c_in, c_out, t) = (p.c_in, p.c_out, tiles(p));
    assert!(u.len() >= weight_len(p), "winograd weights too short");
    if scratch.len() < scratch_len(p) {
        scratch.resize(scratch_len(p), 0.0);
    }
    let (v, rest) = scratch[..scratch_len(p)].split_at_mut(16 * t * c_in);
    let (m, rest) = rest.split_at_mut(16 * t * c_out);
    let (xt, yt) = rest.split_at_mut(p.in_hw[0] * p.in_hw[1] * c_in);
    // LOOP over samples
    for (x, y) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(p.out_len()))
        .take(n)
    {
        to_channels_last(x, c_in, xt);
        transform_input(p, xt, v);
        // LOOP over the 16 tile positions, split over threads: V[ξ] (T × C) · U[ξ] (C × O)
        let gemm = |xi: usize, m_xi: &mut [f32]| {
            let v_xi = &v[xi * t * c_in..(xi + 1) * t * c_in];
            let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
            crate::gemm::sgemm(t, c_in, c_out, v_xi, u_xi, m_xi, false);
        };
        let parts = if t * c_in * c_out * 16 >= 4 << 20 {
            threads.clamp(1, 16)
        } else {
            1
        };
        if parts == 1 {
            for (xi, m_xi) in m.chunks_exact_mut(t * c_out).enumerate() {
                gemm(xi, m_xi);
            }
        } else {
            let per = 16usize.div_ceil(parts);
            std::thread::scope(|scope| {
                let gemm = &gemm;
                let mut blocks = m.chunks_mut(per * t * c_out).enumerate();
                let (last, m_last) = blocks.next_back().expect("16 blocks");
                for (b, block) in blocks {
                    scope.spawn(move || {
                        for (i, m_xi) in block.chunks_exact_mut(t * c_out).enumerate() {
                            gemm(b * per + i, m_xi);
                        }
                    });
                }
                for (i, m_xi) in m_last.chunks_exact_mut(t * c_out).enumerate() {
                    gemm(last * per + i, m_xi);
                }
            });
        }
        transform_output(p, m, bias, yt);
        to_channels_first(yt, c_out, y);
        apply(epilogue, 0, y.chunks_exact_mut(p.out_hw[0] * p.out_hw[1]));
    }
}

/// Channels handled together by the transforms (one vector register per row of a tile).
const L: usize = 16;

multiversion! {
/// `[C, H·W]` to `[H·W, C]`.
fn to_channels_last(x: &[f32], c: usize, xt: &mut [f32]) {
    let hw = x.len() / c;
    for (ch, plane) in x.chunks_exact(hw).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            xt[i * c + ch] = v;
        }
    }
}
}

multiversion! {
/// `[H·W, C]` to `[C, H·W]`.
fn to_channels_first(yt: &[f32], c: usize, y: &mut [f32]) {
    let hw = y.len() / c;
    for (ch, plane) in y.chunks_exact_mut(hw).enumerate() {
        for (i, v) in plane.iter_mut().enumerate() {
            *v = yt[i * c + ch];
        }
    }
}
}

multiversion! {
/// `V[ξ, t, c] = (Bᵀ d B)[ξ]` for the 4×4 tile `d` of channel `c` at tile `t` (zero outside the
/// input), from the channel-last input `xt: [H, W, C]`, [`L`] channels at a time.
fn transform_input(p: &Conv2dParams, xt: &[f32], v: &mut [f32]) {
    let [h, w] = p.in_hw;
    let [ph, pw] = p.padding;
    let (th, tw) = (p.out_hw[0].div_ceil(2), p.out_hw[1].div_ceil(2));
    let (c_in, t_all) = (p.c_in, th * tw);
    // LOOP over tiles
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            // LOOP over blocks of L channels
            for c0 in (0..c_in).step_by(L) {
                let lanes = L.min(c_in - c0);
                let mut d = [[[0.0f32; L]; 4]; 4];
                for (i, row) in d.iter_mut().enumerate() {
                    let iy = (2 * ty + i).wrapping_sub(ph);
                    if iy >= h {
                        continue;
                    }
                    for (j, e) in row.iter_mut().enumerate() {
                        let ix = (2 * tx + j).wrapping_sub(pw);
                        if ix < w {
                            let at = (iy * w + ix) * c_in + c0;
                            e[..lanes].copy_from_slice(&xt[at..at + lanes]);
                        }
                    }
                }
                // Bᵀ d
                let mut b = [[[0.0f32; L]; 4]; 4];
                for j in 0..4 {
                    for l in 0..L {
                        b[0][j][l] = d[0][j][l] - d[2][j][l];
                        b[1][j][l] = d[1][j][l] + d[2][j][l];
                        b[2][j][l] = d[2][j][l] - d[1][j][l];
                        b[3][j][l] = d[1][j][l] - d[3][j][l];
                    }
                }
                // (Bᵀ d) B
                for (i, r) in b.iter().enumerate() {
                    let mut row = [[0.0f32; L]; 4];
                    for l in 0..L {
                        row[0][l] = r[0][l] - r[2][l];
                        row[1][l] = r[1][l] + r[2][l];
                        row[2][l] = r[2][l] - r[1][l];
                        row[3][l] = r[1][l] - r[3][l];
                    }
                    for (j, vals) in row.iter().enumerate() {
                        let at = ((i * 4 + j) * t_all + t) * c_in + c0;
                        v[at..at + lanes].copy_from_slice(&vals[..lanes]);
                    }
                }
            }
        }
    }
}
}

multiversion! {
/// `yt[2ty + i, 2tx + j, o] = bias[o] + (Aᵀ m A)[i, j]` with `m[ξ] = M[ξ, t, o]`, clipped to
/// the output, [`L`] channels at a time (`yt` is channel-last `[OH, OW, c_out]`).
fn transform_output(p: &Conv2dParams, m: &[f32], bias: Option<&[f32]>, yt: &mut [f32]) {
    let [oh, ow] = p.out_hw;
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let (c_out, t_all) = (p.c_out, th * tw);
    // LOOP over tiles
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            // LOOP over blocks of L output channels
            for o0 in (0..c_out).step_by(L) {
                let lanes = L.min(c_out - o0);
                let mut e = [[0.0f32; L]; 16];
                for (xi, lane) in e.iter_mut().enumerate() {
                    let at = (xi * t_all + t) * c_out + o0;
                    lane[..lanes].copy_from_slice(&m[at..at + lanes]);
                }
                let mut bv = [0.0f32; L];
                if let Some(b) = bias {
                    bv[..lanes].copy_from_slice(&b[o0..o0 + lanes]);
                }
                // Aᵀ m: 2×4
                let mut a = [[[0.0f32; L]; 4]; 2];
                for j in 0..4 {
                    for l in 0..L {
                        a[0][j][l] = e[j][l] + e[4 + j][l] + e[8 + j][l];
                        a[1][j][l] = e[4 + j][l] - e[8 + j][l] - e[12 + j][l];
                    }
                }
                for (i, r) in a.iter().enumerate() {
                    let oy = 2 * ty + i;
                    if oy >= oh {
                        continue;
                    }
                    let mut vals = [[0.0f32; L]; 2];
                    for l in 0..L {
                        vals[0][l] = bv[l] + (r[0][l] + r[1][l] + r[2][l]);
                        vals[1][l] = bv[l] + (r[1][l] - r[2][l] - r[3][l]);
                    }
                    for (j, val) in vals.iter().enumerate() {
                        let ox = 2 * tx + j;
                        if ox < ow {
                            let at = (oy * ow + ox) * c_out + o0;
                            yt[at..at + lanes].copy_from_slice(&val[..lanes]);
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
    use crate::ops::conv2d::conv2d_fused;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    #[test]
    fn matches_im2col_convolution_over_awkward_shapes() {
        // (c_in, c_out, padding, [h, w], n, bias)
        let cases = [
            (16, 16, [1, 1], [8, 8], 1, true),
            (16, 24, [1, 1], [7, 9], 2, false),
            (20, 16, [0, 0], [9, 6], 1, true),
            (16, 32, [2, 1], [5, 5], 3, true),
            (17, 19, [1, 0], [4, 11], 1, true),
            (64, 64, [1, 1], [16, 16], 1, true),
        ];
        for (seed, &(c_in, c_out, padding, [h, w], n, bias)) in cases.iter().enumerate() {
            let out_hw = [
                out_len(h, 3, 1, padding[0], 1, false).unwrap(),
                out_len(w, 3, 1, padding[1], 1, false).unwrap(),
            ];
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding,
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw,
            };
            assert!(applies(&p));
            let s = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), s);
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let bias = bias.then_some(&b[..]);
            let epilogue = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Tanh),
            };
            let u = transform_weights(&p, &wt);
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; n * p.out_len()];
                conv2d(
                    &p,
                    n,
                    &x,
                    &u,
                    bias,
                    epilogue,
                    threads,
                    &mut got,
                    &mut Vec::new(),
                );
                let mut want = vec![f32::NAN; n * p.out_len()];
                let mut scratch = Vec::new();
                conv2d_fused(&p, n, &x, &wt, bias, epilogue, 1, &mut want, &mut scratch);
                assert_close(&got, &want, 2e-5);
            }
        }
    }
}
