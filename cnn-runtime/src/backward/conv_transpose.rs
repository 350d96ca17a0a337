//! Gradients of a 2-D transposed convolution ([`conv_transpose2d_backward`]).
//!
//! A transposed convolution is the input gradient of the convolution [`as_conv`] (same kernel,
//! stride, padding, dilation and groups; channels and sizes exchanged), whose weight layout
//! `[c_out', c_in'/G, KH, KW]` is PyTorch's transposed-convolution layout `[c_in, c_out/G, KH,
//! KW]` unchanged. So, with `y = conv_transpose(x, W)`:
//!
//! + `dX = conv2d(dY, W)`: the ordinary convolution of the output gradient (its im2col kernel);
//! + `dW` is that convolution's weight gradient with `dY` as its input and `x` as its output
//!   gradient ([`conv2d_backward`](super::conv2d_backward)'s GEMMs, shared);
//! + `db` sums `dY` per channel.

use super::conv::{cols_len, grads};
use crate::ops::conv::im2col;
use crate::ops::conv::{Conv2dParams, Epilogue};
use crate::ops::conv_transpose::ConvTranspose2dParams;

/// The convolution whose input gradient `p` computes: input `[c_out, OH, OW]`, output
/// `[c_in, H, W]`, the same kernel, stride, padding, dilation and groups. (Its output size is
/// `p.in_hw` whatever `output_padding` added: the extra rows and columns only feed taps.)
const fn as_conv(p: &ConvTranspose2dParams) -> Conv2dParams {
    Conv2dParams {
        c_in: p.c_out,
        c_out: p.c_in,
        groups: p.groups,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        in_hw: p.out_hw,
        out_hw: p.in_hw,
    }
}

/// Scratch elements [`conv_transpose2d_backward`] needs: the im2col matrix of one group of
/// `dy`, `c_out/groups · KH · KW · H · W`.
pub const fn conv_transpose2d_backward_scratch_len(p: &ConvTranspose2dParams) -> usize {
    cols_len(&as_conv(p))
}

/// The gradients of `y = conv_transpose2d(x, weight) + bias` (PyTorch's `nn.ConvTranspose2d`,
/// any stride, padding, output padding, dilation and groups) given `dy = ∂L/∂y`, over a batch of
/// `n` samples. With `(oy, ox) = (i·SH − PH + ki·DH, j·SW − PW + kj·DW)` the output pixel input
/// pixel `(i, j)` feeds through tap `(ki, kj)`, and `o` ranging over the output channels of
/// `c`'s group (`o' = o mod C_out/G`):
///
/// + `dx[s, c, i, j] = Σ_{o, ki, kj} weight[c, o', ki, kj] · dy[s, o, oy, ox]` (taps that land
///   outside the output contribute nothing);
/// + `dw[c, o', ki, kj] = Σ_{s, i, j} x[s, c, i, j] · dy[s, o, oy, ox]`;
/// + `db[o] = Σ_{s, oy, ox} dy[s, o, oy, ox]`.
///
/// Arguments:
///
/// + `x`: the forward input, `[n, c_in, H, W]` row-major
/// + `weight`: `[c_in, c_out/groups, KH, KW]` (PyTorch's layout; read only when `dx` is given)
/// + `dy`: `[n, c_out, OH, OW]`
/// + `dx`: `[n, c_in, H, W]`, overwritten; `None` skips it
/// + `dw`: `[c_in, c_out/groups, KH, KW]`, overwritten with the sum over the batch
/// + `db`: `[c_out]`, overwritten; `None` for a layer without bias
/// + `scratch`: grown to [`conv_transpose2d_backward_scratch_len`] if shorter, never shrunk
///
/// Runs on the calling thread; the f32 sums run in a fixed order (deterministic).
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)] // the layer, the batch, its tensors and gradients
pub fn conv_transpose2d_backward(
    p: &ConvTranspose2dParams,
    n: usize,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) {
    let q = as_conv(p);
    assert!(
        x.len() >= n * p.in_len(),
        "conv_transpose2d_backward x too short"
    );
    assert!(
        dy.len() >= n * p.out_len(),
        "conv_transpose2d_backward dy too short"
    );
    assert!(
        dw.len() >= p.weight_len(),
        "conv_transpose2d_backward dw too short"
    );
    if let Some(db) = db {
        assert!(
            db.len() >= p.c_out,
            "conv_transpose2d_backward db too short"
        );
        super::channel_sums(n, p.c_out, p.out_hw[0] * p.out_hw[1], dy, db);
    }
    if let Some(dx) = dx {
        assert!(
            dx.len() >= n * p.in_len(),
            "conv_transpose2d_backward dx too short"
        );
        assert!(
            weight.len() >= p.weight_len(),
            "conv_transpose2d_backward weight too short"
        );
        // dy: (n, O, OH, OW) * weight (C, O/G, KH, KW) → dx: (n, C, H, W), a convolution
        let plain = Epilogue::default();
        im2col::conv2d(&q, n, dy, weight, None, plain, 1, dx, scratch);
    }
    let scratch =
        crate::store::Scratch::at_least(scratch, conv_transpose2d_backward_scratch_len(p));
    // The convolution's weight gradient, with dy as its input and x as its output gradient.
    grads(&q, n, dy, x, None, dw, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward::tests::{check_finite_differences, to_f64, Probe};
    use crate::ops::conv::tests::assert_close_mag;
    use crate::test_util::rand_vec;

    /// `(c_in, c_out, groups, kernel, stride, padding, output_padding, dilation, [h, w], n)`.
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
    );

    /// Strides 1–3 (kernels smaller and larger than the stride), padding, output padding (also
    /// ≥ the stride, which dilation allows), dilation 2, rectangular kernels, H ≠ W, groups 2
    /// and 3 with `c_in/G ≠ c_out/G`, depthwise, 1×1 with and without the direct path, 1×1
    /// inputs, `c_out` off multiples of 8, batches of 1–3, and a case large enough for
    /// several GEMM blocks.
    const CASES: &[Case] = &[
        (3, 5, 1, [3, 3], [1, 1], [1, 1], [0, 0], [1, 1], [6, 5], 3),
        (4, 6, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], [5, 5], 2),
        (4, 6, 2, [3, 2], [2, 3], [1, 0], [1, 2], [1, 1], [4, 5], 3),
        (5, 5, 5, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], [5, 4], 2),
        (6, 9, 3, [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], [4, 6], 3),
        (6, 4, 2, [1, 1], [2, 2], [0, 0], [1, 0], [1, 1], [3, 5], 2),
        (3, 7, 1, [3, 3], [2, 2], [2, 2], [1, 0], [2, 2], [5, 6], 1),
        (2, 4, 1, [2, 3], [3, 3], [0, 1], [2, 1], [1, 1], [4, 3], 2),
        (2, 3, 1, [3, 3], [1, 1], [0, 0], [1, 1], [2, 2], [4, 4], 1),
        (8, 10, 2, [3, 3], [1, 1], [0, 0], [0, 0], [1, 1], [7, 7], 1),
        (3, 4, 1, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], [1, 1], 3),
        (16, 24, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], [6, 7], 2),
    ];

    fn params(c: &Case) -> ConvTranspose2dParams {
        let &(c_in, c_out, groups, kernel, stride, padding, output_padding, dilation, in_hw, _) = c;
        let axis = |a: usize| {
            (in_hw[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + output_padding[a] + 1
                - 2 * padding[a]
        };
        ConvTranspose2dParams {
            c_in,
            c_out,
            groups,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// Every `(input pixel, tap, output pixel)` of the scatter that lands inside the output:
    /// `f(i, j, ki, kj, oy, ox)`.
    fn scatter(
        p: &ConvTranspose2dParams,
        mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
    ) {
        let ([kh, kw], [h, w], [oh, ow]) = (p.kernel, p.in_hw, p.out_hw);
        for i in 0..h {
            for j in 0..w {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let oy =
                            (i * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                        let ox =
                            (j * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                        if oy >= 0 && ox >= 0 && oy < oh as isize && ox < ow as isize {
                            f(i, j, ki, kj, oy as usize, ox as usize);
                        }
                    }
                }
            }
        }
    }

    /// The forward transposed convolution in f64, from its definition: every input value
    /// times every weight of its channel, added at the output pixel it lands on, plus `b`.
    fn forward64(p: &ConvTranspose2dParams, n: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let ([kh, kw], [h, wd], [oh, ow]) = (p.kernel, p.in_hw, p.out_hw);
        let plane = oh * ow;
        let mut y: Vec<f64> = (0..n * p.out_len())
            .map(|i| b[i / plane % p.c_out])
            .collect();
        for s in 0..n {
            for c in 0..p.c_in {
                let g = c / c_in_g;
                for ol in 0..c_out_g {
                    let o = g * c_out_g + ol;
                    scatter(p, |i, j, ki, kj, oy, ox| {
                        y[((s * p.c_out + o) * oh + oy) * ow + ox] += x
                            [((s * p.c_in + c) * h + i) * wd + j]
                            * w[((c * c_out_g + ol) * kh + ki) * kw + kj];
                    });
                }
            }
        }
        y
    }

    /// `(dx, dw, db)` in f64 with their magnitudes, from the definition.
    type Grads = [(Vec<f64>, Vec<f64>); 3];

    fn naive(p: &ConvTranspose2dParams, n: usize, x: &[f32], w: &[f32], dy: &[f32]) -> Grads {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let ([kh, kw], [h, wd], [oh, ow]) = (p.kernel, p.in_hw, p.out_hw);
        let zeros = |len| (vec![0.0; len], vec![0.0; len]);
        let [mut dx, mut dw, mut db] =
            [zeros(n * p.in_len()), zeros(p.weight_len()), zeros(p.c_out)];
        let add = |(v, m): &mut (Vec<f64>, Vec<f64>), i: usize, t: f64| {
            v[i] += t;
            m[i] += t.abs();
        };
        for (i, &d) in dy[..n * p.out_len()].iter().enumerate() {
            add(&mut db, i / (oh * ow) % p.c_out, d as f64);
        }
        for s in 0..n {
            for c in 0..p.c_in {
                let g = c / c_in_g;
                for ol in 0..c_out_g {
                    let o = g * c_out_g + ol;
                    scatter(p, |i, j, ki, kj, oy, ox| {
                        let d = dy[((s * p.c_out + o) * oh + oy) * ow + ox] as f64;
                        let xi = ((s * p.c_in + c) * h + i) * wd + j;
                        let wi = ((c * c_out_g + ol) * kh + ki) * kw + kj;
                        add(&mut dx, xi, d * w[wi] as f64);
                        add(&mut dw, wi, d * x[xi] as f64);
                    });
                }
            }
        }
        [dx, dw, db]
    }

    #[test]
    fn conv_transpose2d_backward_matches_the_definition_and_finite_differences() {
        let ps: Vec<_> = CASES.iter().map(params).collect();
        assert!(ps.iter().any(|p| p.groups > 1
            && p.c_in != p.groups
            && p.c_in / p.groups != p.c_out / p.groups));
        assert!(ps.iter().any(|p| p.output_padding[0] >= p.stride[0]));
        assert!(ps.iter().any(|p| p.writes_directly()));
        for (i, (case, p)) in CASES.iter().zip(&ps).enumerate() {
            let n = case.9;
            let seed = 900 + 10 * i as u64;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.weight_len(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let dy = rand_vec(n * p.out_len(), seed + 3);
            let what = format!("{case:?}");

            let mut dx = vec![f32::NAN; n * p.in_len()];
            let mut dw = vec![f32::NAN; p.weight_len()];
            let mut db = vec![f32::NAN; p.c_out];
            let mut scratch = vec![f32::NAN; 3];
            conv_transpose2d_backward(
                p,
                n,
                &x,
                &w,
                &dy,
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut scratch,
            );
            assert_eq!(
                scratch.len(),
                conv_transpose2d_backward_scratch_len(p) + crate::store::LINE - 1,
                "{what}"
            );

            let r = naive(p, n, &x, &w, &dy);
            let tol = 2e-6;
            for (name, got, (want, mag)) in
                [("dx", &dx, &r[0]), ("dw", &dw, &r[1]), ("db", &db, &r[2])]
            {
                assert_close_mag(got, want, mag, tol, &format!("{name} {what}"));
            }

            // Without dx and db: the same dw, bit for bit.
            let mut dw2 = vec![f32::NAN; dw.len()];
            conv_transpose2d_backward(p, n, &x, &w, &dy, None, &mut dw2, None, &mut scratch);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dw2), bits(&dw), "{what}");

            // L = Σ dy·conv_transpose(x, w, b), in f64.
            let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
            let dot = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
            let by_x = |x: &[f64]| dot(forward64(p, n, x, &w64, &b64));
            let by_w = |w: &[f64]| dot(forward64(p, n, &x64, w, &b64));
            let by_b = |b: &[f64]| dot(forward64(p, n, &x64, &w64, b));
            let checks: [Probe; 3] = [
                (&by_x, &x64, &dx, "dx"),
                (&by_w, &w64, &dw, "dw"),
                (&by_b, &b64, &db, "db"),
            ];
            for (k, (loss, v, got, name)) in checks.into_iter().enumerate() {
                let (want, mag) = &r[k];
                let what = format!("{name} {what}");
                check_finite_differences(loss, v, got, want, mag, seed + 5 + k as u64, tol, &what);
            }
        }
    }

    #[test]
    fn an_empty_batch_has_zero_weight_and_bias_gradients() {
        for case in CASES {
            let p = params(case);
            let mut dw = vec![f32::NAN; p.weight_len()];
            let mut db = vec![f32::NAN; p.c_out];
            let w = vec![1.0; dw.len()];
            let mut dx: Vec<f32> = Vec::new();
            conv_transpose2d_backward(
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
    fn hand_computed_stride_2() {
        // One channel, x = [1, 2] (1×2), kernel 1×3 of ones, stride 2: y = [1, 1, 1+2, 2, 2]
        // (1×5). dy = [1, 2, 3, 4, 5]: dx[j] = dy[2j] + dy[2j+1] + dy[2j+2], dw[k] = Σ_j
        // x[j]·dy[2j + k], db = Σ dy.
        let p = params(&(1, 1, 1, [1, 3], [1, 2], [0, 0], [0, 0], [1, 1], [1, 2], 1));
        assert_eq!(p.out_hw, [1, 5]);
        let (mut dx, mut dw, mut db) = ([0.0; 2], [0.0; 3], [0.0]);
        let dy = [1.0, 2.0, 3.0, 4.0, 5.0];
        conv_transpose2d_backward(
            &p,
            1,
            &[1.0, 2.0],
            &[1.0; 3],
            &dy,
            Some(&mut dx),
            &mut dw,
            Some(&mut db),
            &mut Vec::new(),
        );
        assert_eq!(dx, [6.0, 12.0]);
        assert_eq!(dw, [1.0 + 6.0, 2.0 + 8.0, 3.0 + 10.0]);
        assert_eq!(db, [15.0]);
    }
}
