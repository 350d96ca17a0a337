//! `BatchNorm2d` in training mode: the forward with batch statistics and the running-stats
//! update, and its backward.

use crate::ops::batchnorm::BatchNormParams;

/// The momentum as PyTorch holds it: the f64 nearest to the shortest decimal of the f32
/// (`0.1f32` → `0.1f64`), which is the Python float the module was built with.
fn momentum_f64(m: f32) -> f64 {
    use std::fmt::Write;
    /// The shortest decimal of an f32 (at most 48 bytes), written without allocating: a
    /// training step must not allocate.
    struct Decimal {
        bytes: [u8; 64],
        len: usize,
    }
    impl Write for Decimal {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut d = Decimal {
        bytes: [0; 64],
        len: 0,
    };
    write!(d, "{m}")
        .ok()
        .and_then(|()| std::str::from_utf8(&d.bytes[..d.len]).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(m as f64)
}

/// Training-mode `BatchNorm2d` forward: per channel, the statistics of this batch over N, H, W,
/// `y = (x − mean)·inv_std·weight + bias` (folded as `x·scale + shift` in f32, like
/// [`crate::ops::batchnorm::batchnorm`]), and, with `running`, PyTorch's update
/// `running_mean ← (1 − momentum)·running_mean + momentum·mean` and
/// `running_var ← (1 − momentum)·running_var + momentum·var_unbiased`.
///
/// The statistics follow PyTorch's CPU kernel: the mean is summed in f64 and rounded to f32;
/// `var_sum = Σ (x − mean)²` is summed in f64 and rounded to f32; `inv_std =
/// 1/√(var_sum/M + eps)` (the biased variance, `M = n·H·W`) and the unbiased variance
/// `var_sum/(M − 1)` are evaluated in f64; the running update is evaluated in f64, with the
/// momentum read back as its decimal (`0.1f32` counts as the Python float `0.1`).
///
/// + `n`: the batch size
/// + `x`: `[n, channels, H, W]` row-major; `y`: the same layout, overwritten
/// + `weight`, `bias`: `[channels]`, `None` for `affine=false` (1 and 0)
/// + `running`: `(running_mean, running_var)`, updated in place; `None` for
///   `track_running_stats=false`
/// + `mean`, `inv_std`: `[channels]`, overwritten with what [`batchnorm_backward`] needs
///
/// # Panics
/// If a slice is shorter than the layout above, or if `n·H·W < 2` (PyTorch refuses training
/// with one value per channel: "Expected more than 1 value per channel when training").
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_forward(
    p: &BatchNormParams,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    running: Option<(&mut [f32], &mut [f32])>,
    mean: &mut [f32],
    inv_std: &mut [f32],
) {
    let (c, hw) = (p.channels, p.hw);
    let len = n * c * hw;
    assert!(
        x.len() >= len && y.len() >= len,
        "batchnorm_train_forward: x or y too short"
    );
    assert!(
        mean.len() >= c && inv_std.len() >= c,
        "batchnorm_train_forward: stats too short"
    );
    for s in [weight, bias].into_iter().flatten() {
        assert!(
            s.len() >= c,
            "batchnorm_train_forward: weight or bias too short"
        );
    }
    let count = n * hw;
    assert!(
        count > 1 || c == 0,
        "batchnorm_train_forward: expected more than 1 value per channel when training"
    );
    let mut running = running;
    if let Some((rm, rv)) = &running {
        assert!(
            rm.len() >= c && rv.len() >= c,
            "batchnorm_train_forward: running statistics too short"
        );
    }
    let momentum = momentum_f64(p.momentum);
    // LOOP over channels
    for ch in 0..c {
        let plane = |s: usize| (s * c + ch) * hw..(s * c + ch + 1) * hw;
        let sum: f64 = (0..n)
            .flat_map(|s| x[plane(s)].iter())
            .map(|&v| v as f64)
            .sum();
        let m = (sum / count as f64) as f32;
        let var_sum = (0..n)
            .flat_map(|s| x[plane(s)].iter())
            .map(|&v| {
                let d = v as f64 - m as f64;
                d * d
            })
            .sum::<f64>() as f32;
        let istd = (1.0 / (var_sum as f64 / count as f64 + p.eps as f64).sqrt()) as f32;
        mean[ch] = m;
        inv_std[ch] = istd;
        if let Some((rm, rv)) = &mut running {
            let unbiased = var_sum as f64 / (count - 1) as f64;
            rm[ch] = (momentum * m as f64 + (1.0 - momentum) * rm[ch] as f64) as f32;
            rv[ch] = (momentum * unbiased + (1.0 - momentum) * rv[ch] as f64) as f32;
        }
        let scale = istd * weight.map_or(1.0, |w| w[ch]);
        let shift = bias.map_or(0.0, |b| b[ch]) - m * scale;
        // LOOP over samples
        for s in 0..n {
            for (o, &v) in y[plane(s)].iter_mut().zip(&x[plane(s)]) {
                *o = v * scale + shift;
            }
        }
    }
}

/// Backward of [`batchnorm_train_forward`] (batch statistics, so the gradient flows through
/// the mean and the variance too), PyTorch's `batch_norm_backward` in training mode:
/// with `Σdy` and `Σ(x − mean)·dy` per channel (f64, sample then position order), `M = n·H·W`,
///
/// + `dx = (dy − Σdy/M − (x − mean)·inv_std²·Σ(x − mean)·dy/M) · inv_std · weight`
///   (evaluated in f64 per element)
/// + `dweight = inv_std · Σ(x − mean)·dy`, `dbias = Σdy`.
///
/// + `x`, `dy`, `dx`: `[n, channels, H, W]` row-major; `dx` overwritten
/// + `weight`: `[channels]`, `None` for `affine=false`
/// + `mean`, `inv_std`: what the forward wrote
/// + `dparams`: `(dweight, dbias)`, `[channels]` each, overwritten; `None` for `affine=false`
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    p: &BatchNormParams,
    n: usize,
    x: &[f32],
    dy: &[f32],
    weight: Option<&[f32]>,
    mean: &[f32],
    inv_std: &[f32],
    dx: &mut [f32],
    dparams: Option<(&mut [f32], &mut [f32])>,
) {
    let (c, hw) = (p.channels, p.hw);
    let len = n * c * hw;
    assert!(
        x.len() >= len && dy.len() >= len && dx.len() >= len,
        "batchnorm_backward: x, dy or dx too short"
    );
    assert!(
        mean.len() >= c && inv_std.len() >= c,
        "batchnorm_backward: stats too short"
    );
    if let Some(w) = weight {
        assert!(w.len() >= c, "batchnorm_backward: weight too short");
    }
    let mut dparams = dparams;
    if let Some((dw, db)) = &dparams {
        assert!(
            dw.len() >= c && db.len() >= c,
            "batchnorm_backward: dweight or dbias too short"
        );
    }
    let count = (n * hw) as f64;
    // LOOP over channels
    for ch in 0..c {
        let plane = |s: usize| (s * c + ch) * hw..(s * c + ch + 1) * hw;
        let (m, istd) = (mean[ch] as f64, inv_std[ch] as f64);
        let (mut sum, mut dotp) = (0.0f64, 0.0f64);
        for s in 0..n {
            for (&v, &g) in x[plane(s)].iter().zip(&dy[plane(s)]) {
                sum += g as f64;
                dotp += (v as f64 - m) * g as f64;
            }
        }
        let w = weight.map_or(1.0, |w| w[ch] as f64);
        let k = dotp * istd * istd / count;
        let grad_mean = sum / count;
        for s in 0..n {
            let range = plane(s);
            for ((o, &v), &g) in dx[range.clone()]
                .iter_mut()
                .zip(&x[range.clone()])
                .zip(&dy[range])
            {
                *o = ((g as f64 - grad_mean - (v as f64 - m) * k) * istd * w) as f32;
            }
        }
        if let Some((dw, db)) = &mut dparams {
            dw[ch] = (dotp * istd) as f32;
            db[ch] = sum as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward_elementwise::check::{
        assert_grad, conv2d_f64, dot, fd_grad, fixture_bytes, max_abs, tensor, tensor_f32, wide,
    };
    use crate::test_util::rand_vec;

    #[test]
    fn momentum_is_read_back_as_its_shortest_decimal() {
        assert_eq!(momentum_f64(0.1), 0.1f64);
        assert_eq!(momentum_f64(0.01), 0.01f64);
        assert_eq!(momentum_f64(0.3), 0.3f64);
        assert_eq!(momentum_f64(1.0), 1.0f64);
        assert_eq!(momentum_f64(0.0), 0.0f64);
        // The longest decimals an f32 prints (no exponent) still fit the buffer.
        assert_eq!(momentum_f64(1e-45), 1e-45f64);
        assert_eq!(momentum_f64(f32::MIN_POSITIVE), 1.1754944e-38f64);
        assert_eq!(momentum_f64(f32::MAX), 3.4028235e38f64);
    }

    fn params(channels: usize, hw: usize, affine: bool) -> BatchNormParams {
        BatchNormParams {
            channels,
            hw,
            eps: 1e-5,
            momentum: 0.1,
            affine,
            track_running_stats: true,
        }
    }

    /// The training-mode forward from the definition in f64: `(y, mean, biased var, unbiased var)`.
    fn forward_f64(
        p: &BatchNormParams,
        n: usize,
        x: &[f64],
        weight: Option<&[f64]>,
        bias: Option<&[f64]>,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (c, hw) = (p.channels, p.hw);
        let mut y = x.to_vec();
        let (mut means, mut vars, mut unbiased) = (vec![], vec![], vec![]);
        for ch in 0..c {
            let idx = |s: usize, i: usize| (s * c + ch) * hw + i;
            let m = (n * hw) as f64;
            let mean = (0..n)
                .flat_map(|s| (0..hw).map(move |i| (s, i)))
                .map(|(s, i)| x[idx(s, i)])
                .sum::<f64>()
                / m;
            let ss: f64 = (0..n)
                .flat_map(|s| (0..hw).map(move |i| (s, i)))
                .map(|(s, i)| (x[idx(s, i)] - mean).powi(2))
                .sum();
            let (w, b) = (weight.map_or(1.0, |w| w[ch]), bias.map_or(0.0, |b| b[ch]));
            for s in 0..n {
                for i in 0..hw {
                    y[idx(s, i)] = (x[idx(s, i)] - mean) / (ss / m + p.eps as f64).sqrt() * w + b;
                }
            }
            means.push(mean);
            vars.push(ss / m);
            unbiased.push(ss / (m - 1.0));
        }
        (y, means, vars, unbiased)
    }

    /// `(channels, hw, n)`: odd sizes, batch 3, channels not a multiple of 8, one value per
    /// sample (hw 1).
    const CASES: &[(usize, usize, usize)] =
        &[(3, 35, 3), (5, 1, 3), (1, 9, 2), (11, 6, 3), (2, 2, 1)];

    /// Forward output, saved statistics and the running update against the f64 definition.
    #[test]
    fn train_forward_matches_f64() {
        for (i, &(c, hw, n)) in CASES.iter().enumerate() {
            let p = BatchNormParams {
                momentum: 0.3,
                ..params(c, hw, true)
            };
            let x: Vec<f32> = rand_vec(n * c * hw, 40 + i as u64)
                .iter()
                .map(|v| 2.0 * v + 0.5)
                .collect();
            let w: Vec<f32> = rand_vec(c, 41).iter().map(|v| 1.0 + 0.5 * v).collect();
            let b = rand_vec(c, 42);
            let (mut rm, mut rv) = (rand_vec(c, 43), vec![1.25; c]);
            let (rm0, rv0) = (rm.clone(), rv.clone());
            let (mut y, mut mean, mut istd) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
            batchnorm_train_forward(
                &p,
                n,
                &x,
                &mut y,
                Some(&w),
                Some(&b),
                Some((&mut rm, &mut rv)),
                &mut mean,
                &mut istd,
            );
            let (y64, m64, v64, u64_) =
                forward_f64(&p, n, &wide(&x), Some(&wide(&w)), Some(&wide(&b)));
            assert_grad(&y, &y64, 1e-5, 1e-5);
            assert_grad(&mean, &m64, 1e-6, 1e-7);
            let istd64: Vec<f64> = v64.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            assert_grad(&istd, &istd64, 1e-6, 0.0);
            let rm64: Vec<f64> = (0..c).map(|k| 0.7 * rm0[k] as f64 + 0.3 * m64[k]).collect();
            let rv64: Vec<f64> = (0..c)
                .map(|k| 0.7 * rv0[k] as f64 + 0.3 * u64_[k])
                .collect();
            assert_grad(&rm, &rm64, 1e-6, 1e-7);
            assert_grad(&rv, &rv64, 1e-6, 1e-7);
            // The inference kernel with batch statistics gives the same output.
            let mut y2 = x.clone();
            crate::ops::batchnorm::batchnorm(&p, n, &mut y2, Some(&w), Some(&b), None);
            crate::test_util::assert_close(&y, &y2, 1e-5);
        }
    }

    /// dx, dweight and dbias against central differences of the f64 forward, affine and not.
    /// In the forward, `y` one value short of `n × channels × H × W` is refused by name.
    #[test]
    #[should_panic(expected = "batchnorm_train_forward: x or y too short")]
    fn train_forward_refuses_a_short_output() {
        let (n, c, hw) = (2, 3, 4);
        let p = params(c, hw, false);
        let x = rand_vec(n * c * hw, 1);
        let mut y = vec![0.0; n * c * hw - 1];
        let (mut mean, mut inv_std) = (vec![0.0; c], vec![0.0; c]);
        batchnorm_train_forward(&p, n, &x, &mut y, None, None, None, &mut mean, &mut inv_std);
    }

    /// `dx` one value short of `n × channels × H × W` is refused by name.
    #[test]
    #[should_panic(expected = "batchnorm_backward: x, dy or dx too short")]
    fn backward_refuses_a_short_dx() {
        let (n, c, hw) = (2, 3, 4);
        let p = params(c, hw, false);
        let x = rand_vec(n * c * hw, 1);
        let mut dx = vec![0.0; n * c * hw - 1];
        let (mean, inv_std) = (vec![0.0; c], vec![1.0; c]);
        batchnorm_backward(&p, n, &x, &x, None, &mean, &inv_std, &mut dx, None);
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (i, &(c, hw, n)) in CASES.iter().enumerate() {
            for affine in [true, false] {
                let p = params(c, hw, affine);
                let x: Vec<f32> = rand_vec(n * c * hw, 50 + i as u64)
                    .iter()
                    .map(|v| 2.0 * v + 0.5)
                    .collect();
                let dy = rand_vec(x.len(), 51 + i as u64);
                let w: Vec<f32> = rand_vec(c, 52).iter().map(|v| 1.0 + 0.5 * v).collect();
                let b = rand_vec(c, 53);
                let (wo, bo) = if affine {
                    (Some(&w[..]), Some(&b[..]))
                } else {
                    (None, None)
                };
                let (mut y, mut mean, mut istd) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
                batchnorm_train_forward(&p, n, &x, &mut y, wo, bo, None, &mut mean, &mut istd);
                let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
                let dparams = if affine {
                    Some((&mut dw[..], &mut db[..]))
                } else {
                    None
                };
                batchnorm_backward(&p, n, &x, &dy, wo, &mean, &istd, &mut dx, dparams);
                let (x64, w64, b64) = (wide(&x), wide(&w), wide(&b));
                let (wr, br) = if affine {
                    (Some(&w64[..]), Some(&b64[..]))
                } else {
                    (None, None)
                };
                let fd = fd_grad(|v| dot(&dy, &forward_f64(&p, n, v, wr, br).0), &x64, 1e-5);
                // dx cancels terms of size |dy|·inv_std·|w| (with two values per channel it
                // is almost 0): the absolute tolerance is relative to those terms.
                let terms = max_abs(&wide(&dy))
                    * max_abs(&wide(&istd))
                    * if affine { max_abs(&wide(&w)) } else { 1.0 };
                assert_grad(&dx, &fd, 1e-4, 1e-5 * max_abs(&fd) + 1e-6 * terms);
                if affine {
                    let fdw = fd_grad(
                        |v| dot(&dy, &forward_f64(&p, n, &x64, Some(v), Some(&b64)).0),
                        &w64,
                        1e-5,
                    );
                    assert_grad(&dw, &fdw, 1e-5, 1e-6 * max_abs(&fdw));
                    let fdb = fd_grad(
                        |v| dot(&dy, &forward_f64(&p, n, &x64, Some(&w64), Some(v)).0),
                        &b64,
                        1e-5,
                    );
                    assert_grad(&db, &fdb, 1e-5, 1e-6 * max_abs(&fdb));
                }
            }
        }
    }

    /// The first BatchNorm of a fixture, whose input is the first conv of the stored input:
    /// its `after.1.running_{mean,var}` after PyTorch's one training-mode forward.
    fn check_first_bn(name: &str, channels: usize, momentum: f32, affine: bool) {
        let io = fixture_bytes(&format!("{name}.io.safetensors"));
        let wt = fixture_bytes(&format!("{name}.safetensors"));
        let x = tensor(&io, "input");
        let st = safetensors::SafeTensors::deserialize(&io).unwrap();
        let shape = st.tensor("input").unwrap().shape().to_vec();
        let (n, ci, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (conv, [oh, ow]) = conv2d_f64(
            &x,
            [n, ci, h, w],
            &tensor(&wt, "0.weight"),
            &tensor(&wt, "0.bias"),
            channels,
            3,
            1,
        );
        let conv: Vec<f32> = conv.iter().map(|&v| v as f32).collect();
        let p = BatchNormParams {
            momentum,
            ..params(channels, oh * ow, affine)
        };
        let (mut rm, mut rv) = (
            tensor_f32(&wt, "1.running_mean"),
            tensor_f32(&wt, "1.running_var"),
        );
        let (mut y, mut mean, mut istd) = (
            vec![0.0; conv.len()],
            vec![0.0; channels],
            vec![0.0; channels],
        );
        let (wb, bb) = if affine {
            (tensor_f32(&wt, "1.weight"), tensor_f32(&wt, "1.bias"))
        } else {
            (vec![], vec![])
        };
        let (wo, bo) = if affine {
            (Some(&wb[..]), Some(&bb[..]))
        } else {
            (None, None)
        };
        batchnorm_train_forward(
            &p,
            n,
            &conv,
            &mut y,
            wo,
            bo,
            Some((&mut rm, &mut rv)),
            &mut mean,
            &mut istd,
        );
        let want_m = tensor(&io, "after.1.running_mean");
        let want_v = tensor(&io, "after.1.running_var");
        // The conv is computed in f64 here and in f32 by PyTorch: a few ulps of the statistics.
        assert_grad(&rm, &want_m, 1e-5, 1e-6 * max_abs(&want_m));
        assert_grad(&rv, &want_v, 1e-5, 1e-6 * max_abs(&want_v));
    }

    /// `tiny_net` (`conv(3 -> 16, k3, p1) bn`): PyTorch's running statistics after one
    /// training-mode forward.
    #[test]
    fn fixture_tiny_net_running_stats() {
        check_first_bn("tiny_net", 16, 0.1, true);
    }

    /// `bn_variants` (`conv(4 -> 8, k3, p1) bn(affine=false)`): the same for affine=false.
    #[test]
    fn fixture_bn_variants_running_stats() {
        check_first_bn("bn_variants", 8, 0.1, false);
    }
}
