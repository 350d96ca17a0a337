//! Element-wise activations and softmax over channels.

#[cfg(not(feature = "std"))]
use crate::math::Float as _;

use crate::simd::multiversion;

/// An element-wise activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// PyTorch: `nn.ReLU()`: `max(x, 0)`.
    Relu,
    /// PyTorch: `nn.LeakyReLU(negative_slope)`: `x` if `x ≥ 0` else `negative_slope · x`.
    LeakyRelu(f32),
    /// PyTorch: `nn.Sigmoid()`: `1 / (1 + e^−x)`.
    Sigmoid,
    /// PyTorch: `nn.Tanh()`.
    Tanh,
    /// PyTorch: `nn.SiLU()`: `x · sigmoid(x)`.
    Silu,
    /// PyTorch: `nn.GELU()` (exact): `x/2 · (1 + erf(x/√2))`.
    Gelu,
    /// PyTorch: `nn.ReLU6()`: `min(max(x, 0), 6)`.
    Relu6,
    /// PyTorch: `nn.Hardswish()`: `x · relu6(x + 3) / 6`, rounded in that order.
    Hardswish,
    /// PyTorch: `nn.Hardsigmoid()`: `relu6(x + 3) / 6`.
    Hardsigmoid,
}

multiversion! {
/// Applies `act` to every element of `x` in place.
pub fn activation(act: Activation, x: &mut [f32]) {
    match act {
        Activation::Relu => {
            for v in x {
                // Not `f32::max`, which would turn NaN into 0; PyTorch keeps NaN.
                *v = if *v < 0.0 { 0.0 } else { *v };
            }
        }
        Activation::LeakyRelu(slope) => {
            for v in x {
                *v = if *v > 0.0 { *v } else { *v * slope };
            }
        }
        Activation::Sigmoid => {
            for v in x {
                *v = sigmoid(*v);
            }
        }
        Activation::Tanh => {
            for v in x {
                *v = v.tanh();
            }
        }
        Activation::Silu => {
            for v in x {
                *v *= sigmoid(*v);
            }
        }
        Activation::Gelu => {
            for v in x {
                let z = *v as f64;
                *v = (0.5 * z * (1.0 + erf(z * core::f64::consts::FRAC_1_SQRT_2))) as f32;
            }
        }
        Activation::Relu6 => {
            for v in x {
                *v = relu6(*v);
            }
        }
        Activation::Hardswish => {
            for v in x {
                *v = *v * relu6(*v + 3.0) / 6.0;
            }
        }
        Activation::Hardsigmoid => {
            for v in x {
                *v = relu6(*v + 3.0) / 6.0;
            }
        }
    }
}
}

/// `min(max(x, 0), 6)` with NaN kept and −0 kept, as PyTorch's `hardtanh(x, 0, 6)`.
#[inline(always)]
fn relu6(x: f32) -> f32 {
    // Not `f32::max`/`f32::min`, which would turn NaN into 0 or 6.
    let y = if x < 0.0 { 0.0 } else { x };
    if y > 6.0 {
        6.0
    } else {
        y
    }
}

/// `1 / (1 + e^−x)`, with `e^x / (1 + e^x)` for negative `x` so no `exp` overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function `erf(x) = 2/√π ∫₀ˣ e^−t² dt`, to within 1e-15.
///
/// Below 2.5 it sums `2/√π · e^−x² · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, whose terms are all
/// positive (no cancellation); from 2.5 it evaluates the continued fraction
/// `erfc(x) = e^−x²/√π · 1/(x + ½/(x + 1/(x + 3⁄2/(x + …))))` backwards from depth 30;
/// from 6 on, `1 − erf(x)` is below half an f64 ulp of 1.
pub(crate) fn erf(x: f64) -> f64 {
    const SERIES_BELOW: f64 = 2.5;
    const CF_DEPTH: u32 = 30;
    let a = x.abs();
    let r = if a < SERIES_BELOW {
        let two_a2 = 2.0 * a * a;
        let (mut term, mut sum, mut denom) = (a, a, 3.0);
        while term > 1e-17 * sum {
            term *= two_a2 / denom;
            sum += term;
            denom += 2.0;
        }
        core::f64::consts::FRAC_2_SQRT_PI * (-a * a).exp() * sum
    } else if a < 6.0 {
        let mut f = a;
        for k in (1..=CF_DEPTH).rev() {
            f = a + (k as f64 * 0.5) / f;
        }
        1.0 - core::f64::consts::FRAC_2_SQRT_PI * 0.5 * (-a * a).exp() / f
    } else if a >= 6.0 {
        1.0
    } else {
        return x; // NaN
    };
    r.copysign(x)
}

/// PyTorch: `nn.Softmax(dim=1)`: `y[n, c, s] = e^{x[n,c,s] − m} / Σ_c' e^{x[n,c',s] − m}` with `m` the
/// maximum over channels, in place.
///
/// + `x`: `[n, channels, spatial]` row-major, `spatial = H·W` (1 for a flat tensor)
///
/// # Panics
/// If `x` is shorter than the layout above.
pub fn softmax(n: usize, channels: usize, spatial: usize, x: &mut [f32]) {
    let len = channels * spatial;
    assert!(x.len() >= n * len, "softmax input too short");
    if len == 0 {
        return;
    }
    // LOOP over samples
    for sample in x[..n * len].chunks_exact_mut(len) {
        // LOOP over spatial positions; channel `c` of position `s` sits at `c·spatial + s`.
        for s in 0..spatial {
            let mut m = f32::NEG_INFINITY;
            for c in 0..channels {
                m = m.max(sample[c * spatial + s]);
            }
            let mut sum = 0.0f32;
            for c in 0..channels {
                let e = (sample[c * spatial + s] - m).exp();
                sample[c * spatial + s] = e;
                sum += e;
            }
            for c in 0..channels {
                sample[c * spatial + s] /= sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, assert_close_rel, rand_vec};

    /// Random values over `[-10, 10)` plus the edges: zeros, large magnitudes, overflow bait.
    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = rand_vec(1000, 3).iter().map(|v| 10.0 * v).collect();
        x.extend([
            0.0, -0.0, 1e-7, -1e-7, 15.0, -15.0, 88.0, -88.0, 89.0, -89.0, 100.0, -100.0, 1e4,
            -1e4, 1e30, -1e30,
        ]);
        x.extend(kinks());
        x
    }

    /// The kink points of relu6, hardswish and hardsigmoid (−3, 0, 3, 6) and their neighbours.
    fn kinks() -> Vec<f32> {
        [-6.0f32, -3.0, 0.0, 3.0, 6.0]
            .iter()
            .flat_map(|&k| [k.next_down(), k, k.next_up(), -k])
            .collect()
    }

    fn naive(act: Activation, x: f32) -> f32 {
        let z = x as f64;
        let y = match act {
            Activation::Relu => z.max(0.0),
            Activation::LeakyRelu(s) => {
                if z > 0.0 {
                    z
                } else {
                    z * s as f64
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Activation::Tanh => z.tanh(),
            Activation::Silu => z / (1.0 + (-z).exp()),
            Activation::Gelu => unreachable!("checked against mpmath values instead"),
            Activation::Relu6 => naive_relu6(z),
            Activation::Hardswish => z * naive_relu6(z + 3.0) / 6.0,
            Activation::Hardsigmoid => naive_relu6(z + 3.0) / 6.0,
        };
        y as f32
    }

    /// `min(max(z, 0), 6)`, NaN kept.
    fn naive_relu6(z: f64) -> f64 {
        if z.is_nan() {
            z
        } else {
            z.clamp(0.0, 6.0)
        }
    }

    #[test]
    fn elementwise_activations_match_f64() {
        let x = inputs();
        for act in [
            Activation::Relu,
            Activation::LeakyRelu(0.01),
            Activation::LeakyRelu(0.2),
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Silu,
            Activation::Relu6,
            Activation::Hardswish,
            Activation::Hardsigmoid,
        ] {
            let want: Vec<f32> = x.iter().map(|&v| naive(act, v)).collect();
            crate::simd::testing::each_level(|_| {
                let mut y = x.clone();
                activation(act, &mut y);
                assert!(y.iter().all(|v| v.is_finite()), "{act:?}");
                // Relative to each value: the tails (sigmoid and SiLU at −15, −88) must keep
                // their size and sign, not just be within 1e-6 of it. The floor is f32's smallest
                // normal: below it (sigmoid(−89)) values have few bits.
                assert_close_rel(&y, &want, 1e-6, f32::MIN_POSITIVE as f64);
            });
        }
    }

    #[test]
    fn sigmoid_and_silu_saturate_without_overflow() {
        let mut y = [-1e30, -1000.0, -100.0, 1000.0, 1e30];
        activation(Activation::Sigmoid, &mut y);
        assert_eq!([y[0], y[1], y[3], y[4]], [0.0, 0.0, 1.0, 1.0]);
        assert!(y[2] > 0.0 && y[2] < 1e-43, "sigmoid(-100) = {}", y[2]);
        let mut y = [-1000.0, 1000.0];
        activation(Activation::Silu, &mut y);
        assert_eq!(y, [0.0, 1000.0]);
    }

    #[test]
    fn nan_propagates() {
        for act in [
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Silu,
            Activation::Gelu,
            Activation::Relu6,
            Activation::Hardswish,
            Activation::Hardsigmoid,
        ] {
            let mut y = [f32::NAN];
            activation(act, &mut y);
            assert!(y[0].is_nan(), "{act:?}");
        }
    }

    /// Over lengths that leave every vector-loop tail, with NaN, ±Inf and the kinks at every
    /// position: the f64 formula, element by element, with the same sign on every zero.
    #[test]
    fn hard_activations_match_f64_over_awkward_lengths() {
        let mut special = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        special.extend(kinks());
        for act in [
            Activation::Relu6,
            Activation::Hardswish,
            Activation::Hardsigmoid,
        ] {
            for (seed, len) in [
                0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 257,
            ]
            .into_iter()
            .enumerate()
            {
                let mut x: Vec<f32> = rand_vec(len, seed as u64).iter().map(|v| 8.0 * v).collect();
                for (i, v) in x.iter_mut().enumerate() {
                    if i % 3 == seed % 3 {
                        *v = special[(i + seed) % special.len()];
                    }
                }
                let mut y = x.clone();
                activation(act, &mut y);
                for (i, (&got, &xi)) in y.iter().zip(&x).enumerate() {
                    let want = naive(act, xi);
                    let ok = if want == 0.0 {
                        got.to_bits() == want.to_bits()
                    } else {
                        got == want
                            || (got.is_nan() && want.is_nan())
                            || (got - want).abs() <= 1e-6 * (1.0 + want.abs())
                    };
                    assert!(
                        ok,
                        "{act:?}, len {len}, [{i}] = {xi}: {got}, f64 gives {want}"
                    );
                }
            }
        }
    }

    /// Produced by
    /// ```python
    /// x = torch.tensor([inf, -inf, nan, 0.0, -0.0, 1.0, -1.0, -3.0, 3.0, 6.0, -6.0,
    ///                   -2.9999998, -3.0000002, 2.9999998, 6.0000005, -1e-7, 1e30, -1e30, 6e37,
    ///                   0.1, -2.5, 4.5])
    /// F.relu6(x), F.hardswish(x), F.hardsigmoid(x)
    /// ```
    /// (torch 2.15.0, CPU; its vectorised and scalar paths agree). Bit for bit, the sign of
    /// zero included: hardswish is `x · relu6(x + 3) / 6` in that order, so `6e37` overflows to
    /// Inf and `−Inf` gives NaN (`−Inf · 0`), as in PyTorch.
    #[test]
    fn hard_activations_match_pytorch_bit_for_bit() {
        const INF: f32 = f32::INFINITY;
        const NAN: f32 = f32::NAN;
        let x = [
            INF,
            -INF,
            NAN,
            0.0,
            -0.0,
            1.0,
            -1.0,
            -3.0,
            3.0,
            6.0,
            -6.0,
            (-3.0f32).next_up(),
            (-3.0f32).next_down(),
            3.0f32.next_down(),
            6.0f32.next_up(),
            -1e-7,
            1e30,
            -1e30,
            6e37,
            0.1,
            -2.5,
            4.5,
        ];
        let cases: [(Activation, [f32; 22]); 3] = [
            (
                Activation::Relu6,
                [
                    6.0,
                    0.0,
                    NAN,
                    0.0,
                    -0.0,
                    1.0,
                    0.0,
                    0.0,
                    3.0,
                    6.0,
                    0.0,
                    0.0,
                    0.0,
                    2.999_999_8,
                    6.0,
                    0.0,
                    6.0,
                    0.0,
                    6.0,
                    0.1,
                    0.0,
                    4.5,
                ],
            ),
            (
                Activation::Hardswish,
                [
                    INF,
                    NAN,
                    NAN,
                    0.0,
                    -0.0,
                    0.666_666_7,
                    -0.333_333_34,
                    -0.0,
                    3.0,
                    6.0,
                    -0.0,
                    -1.192_092_8e-7,
                    -0.0,
                    2.999_999_8,
                    6.000_000_5,
                    -5e-8,
                    1.000_000_1e30,
                    -0.0,
                    INF,
                    0.051_666_666,
                    -0.208_333_33,
                    4.5,
                ],
            ),
            (
                Activation::Hardsigmoid,
                [
                    1.0,
                    0.0,
                    NAN,
                    0.5,
                    0.5,
                    0.666_666_7,
                    0.333_333_34,
                    0.0,
                    1.0,
                    1.0,
                    0.0,
                    3.973_643e-8,
                    0.0,
                    1.0,
                    1.0,
                    0.5,
                    1.0,
                    0.0,
                    1.0,
                    0.516_666_65,
                    0.083_333_336,
                    1.0,
                ],
            ),
        ];
        for (act, want) in cases {
            // Every offset, so that each value passes through the vector body and the tail.
            for offset in 0..17 {
                let mut y = vec![0.5f32; offset];
                y.extend(x);
                activation(act, &mut y);
                for (i, (&got, &want)) in y[offset..].iter().zip(&want).enumerate() {
                    assert!(
                        (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits(),
                        "{act:?}({}) = {got:e}, PyTorch gives {want:e}",
                        x[i]
                    );
                }
            }
        }
    }

    /// Produced by `mpmath.erf(mpmath.mpf(x))` at `mp.dps = 30`.
    #[allow(clippy::excessive_precision)] // mpmath's 17 significant digits, pasted as printed
    const ERF: &[(f64, f64)] = &[
        (-6.0, -0.99999999999999998),
        (-4.0, -0.9999999845827421),
        (-3.5, -0.99999925690162766),
        (-2.5, -0.99959304798255504),
        (-2.0, -0.99532226501895273),
        (-1.25, -0.92290012825645823),
        (-0.3, -0.32862675945912743),
        (-1e-3, -0.0011283787909692364),
        (0.0, 0.0),
        (1e-8, 1.1283791670955125e-8),
        (0.1, 0.11246291601828489),
        (0.5, 0.52049987781304654),
        (1.0, 0.84270079294971487),
        (1.5, 0.96610514647531073),
        (2.0, 0.99532226501895273),
        (2.4999, 0.99959283009966655),
        (2.5, 0.99959304798255504),
        (3.0, 0.99997790950300141),
        (4.0, 0.9999999845827421),
        (5.5, 0.99999999999999264),
        (6.5, 1.0),
    ];

    #[test]
    fn erf_matches_known_values() {
        for &(x, want) in ERF {
            let got = erf(x);
            assert!(
                (got - want).abs() < 1e-15,
                "erf({x}) = {got}, expected {want}"
            );
        }
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn erf_is_odd_and_monotone() {
        let mut prev = -1.0;
        for i in -700..=700 {
            let x = i as f64 / 100.0;
            let e = erf(x);
            assert_eq!(e, -erf(-x), "erf is odd at {x}");
            assert!(e >= prev, "erf decreases at {x}: {prev} then {e}");
            prev = e;
        }
    }

    /// Produced by `x/2 · (1 + mpmath.erf(x/√2))` at `mp.dps = 30` (`torch.nn.GELU()` exact).
    #[test]
    #[allow(clippy::excessive_precision)] // mpmath's 17 significant digits, pasted as printed
    fn gelu_matches_known_values() {
        let x = [-8.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 8.0];
        let want = [
            -4.9767684594174275e-15,
            -0.0040496940948902836,
            -0.15865525393145705,
            -0.15426876936299345,
            0.0,
            0.34573123063700655,
            0.84134474606854295,
            1.9544997361036416,
            2.9959503059051097,
            7.999999999999995,
        ];
        let mut y = x;
        activation(Activation::Gelu, &mut y);
        // Relative to each value, even GELU(−8) = −5e-15, so that a zero or a positive value
        // fails. There `1 + erf(−5.66)` cancels in f64: erf's absolute error (below 1e-15) is
        // a few per cent of the 2.5e-15 left (measured 1.8%); PyTorch's f32 gives −0 there.
        for ((&x, &got), &want) in x.iter().zip(&y).zip(&want) {
            let rtol = if x < -5.0 { 0.05 } else { 1e-6 };
            assert_close_rel(&[got], &[want as f32], rtol, 0.0);
        }
    }

    fn naive_softmax(n: usize, c: usize, s: usize, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for b in 0..n {
            for p in 0..s {
                let at = |ch: usize| (b * c + ch) * s + p;
                let denom: f64 = (0..c).map(|ch| (x[at(ch)] as f64).exp()).sum();
                for ch in 0..c {
                    out[at(ch)] = ((x[at(ch)] as f64).exp() / denom) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn softmax_matches_f64_over_shapes() {
        for (seed, &(n, c, s)) in [(1, 10, 1), (3, 7, 1), (2, 5, 9), (1, 1, 4), (4, 33, 3)]
            .iter()
            .enumerate()
        {
            let x: Vec<f32> = rand_vec(n * c * s, seed as u64)
                .iter()
                .map(|v| 8.0 * v)
                .collect();
            let mut y = x.clone();
            softmax(n, c, s, &mut y);
            // Probabilities down to e^−16 of the largest: relative to each one.
            assert_close_rel(&y, &naive_softmax(n, c, s, &x), 1e-5, 0.0);
        }
    }

    #[test]
    fn softmax_subtracts_the_max() {
        // e^1000 overflows f32; after subtracting the max these are e^0 and e^−1.
        let mut y = [1000.0, 999.0, -1000.0];
        softmax(1, 3, 1, &mut y);
        let e = (-1.0f64).exp();
        assert_close(
            &y,
            &[(1.0 / (1.0 + e)) as f32, (e / (1.0 + e)) as f32, 0.0],
            1e-6,
        );
        // Each position subtracts the max over its own channels (position 1's is channel 1,
        // 1000, which any other value would overflow with): `[c, s]` at `c·2 + s`.
        let mut y = [0.5, -1000.0, 0.25, 1000.0, 0.0, 999.0];
        softmax(1, 3, 2, &mut y);
        let q = [0.5f64.exp(), 0.25f64.exp(), 1.0];
        let d = q[0] + q[1] + q[2];
        let want = [
            q[0] / d,
            0.0,
            q[1] / d,
            1.0 / (1.0 + e),
            q[2] / d,
            e / (1.0 + e),
        ];
        assert_close(&y, &want.map(|v| v as f32), 1e-6);
        let mut y = [f32::NAN, 1.0, 2.0];
        softmax(1, 3, 1, &mut y);
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
    }
}
