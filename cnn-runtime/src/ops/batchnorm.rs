//! Batch normalisation in inference mode, or with batch statistics.

#[cfg(not(feature = "std"))]
use crate::math::Float as _;

/// Shape and options of a `BatchNorm2d` layer, emitted by the `cnn!` macro as a `const`.
///
/// PyTorch: `nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// `num_features`: channels.
    pub channels: usize,
    /// `H·W` of the tensor it normalises.
    pub hw: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Running-statistics momentum (only used in training, kept for the PyTorch twin).
    pub momentum: f32,
    /// Whether `weight` and `bias` exist.
    pub affine: bool,
    /// Whether running statistics exist; without them the batch statistics are used.
    pub track_running_stats: bool,
}

/// `y = (x − mean) / √(var + eps) · weight + bias`, per channel, in place.
///
/// `mean` and `var` are `running_mean` and `running_var` when given; with `None` they are the
/// statistics of this batch over N, H, W (biased variance), as PyTorch does for
/// `track_running_stats=False` even in eval mode. `weight`/`bias` `None` mean 1 and 0.
///
/// + `n`: the batch size
/// + `x`: `[n, channels, H, W]` row-major
/// + `weight`, `bias`, `running_mean`, `running_var`: `[channels]`
///
/// # Panics
/// If a slice is shorter than the layout above. The caller rejects batch statistics over a
/// single value (`n·H·W = 1`) before calling.
pub fn batchnorm(
    p: &BatchNormParams,
    n: usize,
    x: &mut [f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    running: Option<(&[f32], &[f32])>,
) {
    let (c, hw) = (p.channels, p.hw);
    assert!(x.len() >= n * c * hw, "batchnorm input too short");
    for s in [weight, bias].into_iter().flatten() {
        assert!(s.len() >= c, "batchnorm weight or bias too short");
    }
    if let Some((mean, var)) = running {
        assert!(
            mean.len() >= c && var.len() >= c,
            "batchnorm running statistics too short"
        );
    }
    // LOOP over channels
    for ch in 0..c {
        // PyTorch CPU folds the statistics into one scale and shift per channel, with
        // invstd = 1/√(var + eps) in f32 for running statistics and in f64 for batch ones.
        let (mean, invstd) = match running {
            Some((mean, var)) => (mean[ch], running_invstd(var[ch], p.eps)),
            None => batch_stats(x, n, c, hw, ch, p.eps),
        };
        let (scale, shift) = fold(mean, invstd, weight.map(|w| w[ch]), bias.map(|b| b[ch]));
        // LOOP over samples
        for s in 0..n {
            let plane = &mut x[(s * c + ch) * hw..(s * c + ch + 1) * hw];
            for v in plane {
                *v = *v * scale + shift;
            }
        }
    }
}

fn running_invstd(var: f32, eps: f32) -> f32 {
    1.0 / (var + eps).sqrt()
}

fn fold(mean: f32, invstd: f32, weight: Option<f32>, bias: Option<f32>) -> (f32, f32) {
    let scale = invstd * weight.unwrap_or(1.0);
    (scale, bias.unwrap_or(0.0) - mean * scale)
}

/// The per-channel `scale` and `shift` with which [`batchnorm`] computes `y = x·scale + shift`
/// from running statistics, so that a convolution can apply them in its epilogue with the same
/// rounding.
///
/// # Panics
/// If a slice is shorter than `p.channels`.
pub fn scale_shift(
    p: &BatchNormParams,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    (mean, var): (&[f32], &[f32]),
    scale: &mut [f32],
    shift: &mut [f32],
) {
    let c = p.channels;
    assert!(mean.len() >= c && var.len() >= c && scale.len() >= c && shift.len() >= c);
    for ch in 0..c {
        let invstd = running_invstd(var[ch], p.eps);
        (scale[ch], shift[ch]) = fold(mean[ch], invstd, weight.map(|w| w[ch]), bias.map(|b| b[ch]));
    }
}

/// Mean and `1/√(var + eps)` of channel `ch` over N, H, W (biased variance), two-pass in f64.
fn batch_stats(x: &[f32], n: usize, c: usize, hw: usize, ch: usize, eps: f32) -> (f32, f32) {
    let planes = || (0..n).map(move |s| &x[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
    let count = (n * hw) as f64;
    let sum: f64 = planes().flatten().map(|&v| v as f64).sum();
    let mean = sum / count;
    let sq: f64 = planes()
        .flatten()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum();
    let invstd = 1.0 / (sq / count + eps as f64).sqrt();
    (mean as f32, invstd as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, rand_vec};

    fn params(channels: usize, hw: usize, affine: bool, track: bool) -> BatchNormParams {
        BatchNormParams {
            channels,
            hw,
            eps: 1e-5,
            momentum: 0.1,
            affine,
            track_running_stats: track,
        }
    }

    /// The defining formula in f64, with batch statistics when `running` is `None`.
    fn naive(
        p: &BatchNormParams,
        n: usize,
        x: &[f32],
        weight: Option<&[f32]>,
        bias: Option<&[f32]>,
        running: Option<(&[f32], &[f32])>,
    ) -> Vec<f32> {
        let (c, hw) = (p.channels, p.hw);
        let mut out = x.to_vec();
        for ch in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|s| x[(s * c + ch) * hw..(s * c + ch + 1) * hw].iter())
                .map(|&v| v as f64)
                .collect();
            let (mean, var) = match running {
                Some((m, v)) => (m[ch] as f64, v[ch] as f64),
                None => {
                    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                    let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
                        / vals.len() as f64;
                    (mean, var)
                }
            };
            let w = weight.map_or(1.0, |w| w[ch] as f64);
            let b = bias.map_or(0.0, |b| b[ch] as f64);
            for s in 0..n {
                for i in 0..hw {
                    let idx = (s * c + ch) * hw + i;
                    let y = (x[idx] as f64 - mean) / (var + p.eps as f64).sqrt() * w + b;
                    out[idx] = y as f32;
                }
            }
        }
        out
    }

    /// `(channels, hw, n)`.
    const CASES: &[(usize, usize, usize)] = &[
        (1, 1, 2),
        (3, 64, 1),
        (16, 49, 3),
        (5, 7, 2),
        (8, 1, 4),
        (2, 1024, 1),
    ];

    #[test]
    fn running_statistics_match_the_formula() {
        for (seed, &(c, hw, n)) in CASES.iter().enumerate() {
            let seed = seed as u64 * 10;
            let x = rand_vec(n * c * hw, seed);
            let mean = rand_vec(c, seed + 1);
            let var: Vec<f32> = rand_vec(c, seed + 2).iter().map(|v| v + 1.5).collect();
            let w = rand_vec(c, seed + 3);
            let b = rand_vec(c, seed + 4);
            for affine in [true, false] {
                let p = params(c, hw, affine, true);
                let (w, b) = if affine {
                    (Some(&w[..]), Some(&b[..]))
                } else {
                    (None, None)
                };
                let mut y = x.clone();
                batchnorm(&p, n, &mut y, w, b, Some((&mean, &var)));
                assert_close(&y, &naive(&p, n, &x, w, b, Some((&mean, &var))), 1e-5);
            }
        }
    }

    #[test]
    fn batch_statistics_match_the_formula() {
        // An offset far from zero makes a one-pass f32 variance visibly wrong. With it, the
        // `x·scale + shift` form (PyTorch's) itself loses about |mean·scale|·2⁻²⁴ to cancellation.
        for (offset, tol) in [(0.0, 1e-5), (100.0, 1e-4)] {
            for (seed, &(c, hw, n)) in CASES.iter().enumerate() {
                let seed = seed as u64 * 10;
                let x: Vec<f32> = rand_vec(n * c * hw, seed)
                    .iter()
                    .map(|v| offset + v)
                    .collect();
                let w = rand_vec(c, seed + 3);
                let b = rand_vec(c, seed + 4);
                for affine in [true, false] {
                    let p = params(c, hw, affine, false);
                    let (w, b) = if affine {
                        (Some(&w[..]), Some(&b[..]))
                    } else {
                        (None, None)
                    };
                    let mut y = x.clone();
                    batchnorm(&p, n, &mut y, w, b, None);
                    assert_close(&y, &naive(&p, n, &x, w, b, None), tol);
                }
            }
        }
    }

    #[test]
    fn batch_statistics_by_hand() {
        // One channel holding 1, 2, 3, 4 over two samples: mean 2.5, biased variance 1.25.
        let p = params(1, 2, true, false);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        batchnorm(&p, 2, &mut x, Some(&[2.0]), Some(&[0.5]), None);
        let s = 2.0 / (1.25f64 + 1e-5).sqrt();
        let want = [-1.5, -0.5, 0.5, 1.5].map(|d: f64| (d * s + 0.5) as f32);
        assert_close(&x, &want, 1e-6);
    }

    /// Values far from zero with a spread 10⁷ times smaller, and a mean that f64 cannot hold
    /// exactly (1e9 + 128/3): the two-pass variance `Σ(v − m)²/n` stays exact to f32, where
    /// `Σv²/n − m²` or anything that lets the rounding of `m` count `n` times does not.
    /// Checked against the variance computed exactly: d = (v − 1e9)/64 takes 0, 1, 1 in turn,
    /// so the variance is 64²·(2/3 − 4/9) = 64²·2/9.
    #[test]
    fn batch_statistics_of_values_far_from_zero_are_exact() {
        let (n, c, hw) = (2, 3, 30);
        let mut x = vec![0.0f32; n * c * hw];
        for (i, v) in x.iter_mut().enumerate() {
            let d = [0.0, 1.0, 1.0][(i % hw) % 3];
            *v = 1e9 + 64.0 * d;
        }
        let var = 64.0f64 * 64.0 * 2.0 / 9.0;
        let eps = 1e-5f32;
        for ch in 0..c {
            let (mean, invstd) = batch_stats(&x, n, c, hw, ch, eps);
            assert_eq!(mean, (1e9f64 + 128.0 / 3.0) as f32, "channel {ch}");
            let want = 1.0 / (var + eps as f64).sqrt();
            let rel = (invstd as f64 - want).abs() / want;
            assert!(
                rel < 1e-6,
                "channel {ch}: 1/σ {invstd}, want {want} ({rel:e} off)"
            );
        }
    }
}
