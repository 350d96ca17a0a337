//! Backward of the element-wise activations and of softmax over channels.

use crate::ops::activation::{erf, Activation};

/// Which tensor of the forward pass [`activation_backward`] reads for an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The activation's input `x`.
    Input,
    /// The activation's output `y` (PyTorch's `sigmoid_backward` and `tanh_backward` use it).
    Output,
}

/// What `act`'s backward needs: the output for [`Activation::Sigmoid`] and
/// [`Activation::Tanh`], the input for every other activation. ([`Activation::Relu`] works from
/// either, since `x ≤ 0` exactly where `y ≤ 0`; this names the input.)
pub fn saved_for_backward(act: Activation) -> Saved {
    match act {
        Activation::Sigmoid | Activation::Tanh => Saved::Output,
        _ => Saved::Input,
    }
}

/// `dx = dy · act'(…)` element-wise, with PyTorch's derivative (its `*_backward` kernels),
/// including the value it picks at a kink. (Hardswish: PyTorch 2.15's `hardswish_backward`
/// gives 0 at exactly −3 and `dy` at exactly 3, i.e. the open interval, checked with
/// `torch.autograd.grad`; older documentation shows the closed one.)
///
/// | activation | `dx` | from |
/// |---|---|---|
/// | `Relu` | `dy` if `x > 0`, else 0 (0 at `x = 0`; NaN input passes `dy`, as `threshold_backward`) | `x` or `y` |
/// | `LeakyRelu(s)` | `dy` if `x > 0`, else `dy·s` (`s` at `x = 0`) | `x` |
/// | `Sigmoid` | `dy·(1 − y)·y` | `y` |
/// | `Tanh` | `dy·(1 − y²)` | `y` |
/// | `Silu` | `dy·σ·(1 + x·(1 − σ))`, `σ = sigmoid(x)` | `x` |
/// | `Gelu` | `dy·(Φ(x) + x·φ(x))`, `Φ(x) = (1 + erf(x/√2))/2`, `φ` the normal density (f64 inside) | `x` |
/// | `Relu6` | 0 if `x ≤ 0` or `x ≥ 6`, else `dy` (`hardtanh_backward`) | `x` |
/// | `Hardswish` | 0 if `x ≤ −3`, `dy·(x/3 + 1/2)` if `−3 < x < 3`, `dy` if `x ≥ 3` (NaN passes `dy`) | `x` |
/// | `Hardsigmoid` | `dy/6` if `−3 < x < 3`, else 0 | `x` |
///
/// + `saved`: the tensor [`saved_for_backward`] names (`x` or `y`), any length
/// + `dy`, `dx`: the gradients w.r.t. the output and the input, same length as `saved`
///
/// # Panics
/// If the three slices differ in length.
pub fn activation_backward(act: Activation, saved: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(
        saved.len() == dy.len() && dy.len() == dx.len(),
        "activation_backward: slices differ in length"
    );
    /// `dx = f(saved, dy)` element-wise, `f` inlined into the loop (so it vectorises).
    #[inline(always)]
    fn each(saved: &[f32], dy: &[f32], dx: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        for ((d, &s), &g) in dx.iter_mut().zip(saved).zip(dy) {
            *d = f(s, g);
        }
    }
    match act {
        Activation::Relu => each(saved, dy, dx, |x, g| if x <= 0.0 { 0.0 } else { g }),
        Activation::LeakyRelu(slope) => {
            each(saved, dy, dx, |x, g| if x > 0.0 { g } else { g * slope })
        }
        Activation::Sigmoid => each(saved, dy, dx, |y, g| g * (1.0 - y) * y),
        Activation::Tanh => each(saved, dy, dx, |y, g| g * (1.0 - y * y)),
        Activation::Silu => each(saved, dy, dx, |x, g| {
            let s = sigmoid(x);
            g * s * (1.0 + x * (1.0 - s))
        }),
        Activation::Gelu => each(saved, dy, dx, |x, g| {
            let z = x as f64;
            let cdf = 0.5 * (1.0 + erf(z * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * z * z).exp()
                * (0.5 * std::f64::consts::FRAC_2_SQRT_PI)
                * std::f64::consts::FRAC_1_SQRT_2;
            (g as f64 * (cdf + z * pdf)) as f32
        }),
        Activation::Relu6 => each(
            saved,
            dy,
            dx,
            |x, g| if x <= 0.0 || x >= 6.0 { 0.0 } else { g },
        ),
        Activation::Hardswish => each(saved, dy, dx, |x, g| {
            if x <= -3.0 {
                0.0
            } else if x < 3.0 {
                g * (x / 3.0 + 0.5)
            } else {
                g
            }
        }),
        Activation::Hardsigmoid => each(saved, dy, dx, |x, g| {
            if x > -3.0 && x < 3.0 {
                g * (1.0 / 6.0)
            } else {
                0.0
            }
        }),
    }
}

/// `1 / (1 + e^−x)`, through `e^x / (1 + e^x)` for negative `x` so that no `exp` overflows.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Backward of `nn.Softmax(dim=1)` from its output:
/// `dx[c] = y[c] · (dy[c] − Σ_c' dy[c']·y[c'])` at each sample and spatial position, the sum
/// accumulated in f64 in channel order.
///
/// + `y`, `dy`, `dx`: `[n, channels, spatial]` row-major, `spatial = H·W` (1 for `[n, K]`)
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn softmax_backward(
    n: usize,
    channels: usize,
    spatial: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let len = channels * spatial;
    assert!(
        y.len() >= n * len && dy.len() >= n * len && dx.len() >= n * len,
        "softmax_backward: slice too short"
    );
    if len == 0 {
        return;
    }
    // LOOP over samples
    for s in 0..n {
        let base = s * len;
        // LOOP over spatial positions; channel `c` of position `p` sits at `c·spatial + p`.
        for p in 0..spatial {
            let at = |c: usize| base + c * spatial + p;
            let dot: f64 = (0..channels)
                .map(|c| dy[at(c)] as f64 * y[at(c)] as f64)
                .sum();
            for c in 0..channels {
                dx[at(c)] = (y[at(c)] as f64 * (dy[at(c)] as f64 - dot)) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward_elementwise::check::{assert_grad, dot, fd_grad, max_abs, wide};
    use crate::test_util::rand_vec;

    const ALL: [Activation; 10] = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::LeakyRelu(0.01),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Silu,
        Activation::Gelu,
        Activation::Relu6,
        Activation::Hardswish,
        Activation::Hardsigmoid,
    ];

    /// The forward from the definitions, in f64.
    fn forward_f64(act: Activation, z: f64) -> f64 {
        let relu6 = |v: f64| v.clamp(0.0, 6.0);
        match act {
            Activation::Relu => z.max(0.0),
            Activation::LeakyRelu(s) => {
                if z >= 0.0 {
                    z
                } else {
                    s as f64 * z
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Activation::Tanh => z.tanh(),
            Activation::Silu => z / (1.0 + (-z).exp()),
            Activation::Gelu => 0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2)),
            Activation::Relu6 => relu6(z),
            Activation::Hardswish => z * relu6(z + 3.0) / 6.0,
            Activation::Hardsigmoid => relu6(z + 3.0) / 6.0,
        }
    }

    /// The forward in f32 as the runtime computes it, for the `saved` tensor.
    fn saved(act: Activation, x: &[f32]) -> Vec<f32> {
        match saved_for_backward(act) {
            Saved::Input => x.to_vec(),
            Saved::Output => {
                let mut y = x.to_vec();
                crate::ops::activation::activation(act, &mut y);
                y
            }
        }
    }

    /// Whether `x` lies within `margin` of a kink of `act` (where differences are meaningless).
    fn near_kink(act: Activation, x: f32, margin: f32) -> bool {
        let kinks: &[f32] = match act {
            Activation::Relu | Activation::LeakyRelu(_) => &[0.0],
            Activation::Relu6 => &[0.0, 6.0],
            Activation::Hardswish | Activation::Hardsigmoid => &[-3.0, 3.0],
            _ => &[],
        };
        kinks.iter().any(|k| (x - k).abs() < margin)
    }

    /// Central differences of the f64 definition agree with the backward, for every activation,
    /// over `[-8, 8)` (odd length, away from kinks).
    #[test]
    fn activations_match_finite_differences() {
        let x: Vec<f32> = rand_vec(1001, 11).iter().map(|v| 8.0 * v).collect();
        let dy = rand_vec(x.len(), 12);
        for act in ALL {
            let mut dx = vec![0.0; x.len()];
            activation_backward(act, &saved(act, &x), &dy, &mut dx);
            for i in 0..x.len() {
                if near_kink(act, x[i], 1e-3) {
                    continue;
                }
                let z = x[i] as f64;
                let h = 1e-5;
                let fd =
                    (forward_f64(act, z + h) - forward_f64(act, z - h)) / (2.0 * h) * dy[i] as f64;
                // Sigmoid and tanh work from the f32 output: a few f32 ulps of y.
                assert_grad(&dx[i..=i], &[fd], 1e-5, 2e-7);
            }
        }
    }

    /// The value PyTorch's backward picks at and around each kink.
    #[test]
    fn kinks_follow_pytorch() {
        let cases: &[(Activation, f32, f32)] = &[
            (Activation::Relu, 0.0, 0.0),
            (Activation::Relu, -0.0, 0.0),
            (Activation::Relu, 1e-30, 1.0),
            (Activation::Relu, -1e-30, 0.0),
            (Activation::LeakyRelu(0.2), 0.0, 0.2),
            (Activation::LeakyRelu(0.2), 1e-30, 1.0),
            (Activation::Relu6, 0.0, 0.0),
            (Activation::Relu6, 6.0, 0.0),
            (Activation::Relu6, 6.0f32.next_down(), 1.0),
            (Activation::Relu6, 1e-30, 1.0),
            (Activation::Hardswish, -3.0, 0.0),
            (Activation::Hardswish, (-3.0f32).next_down(), 0.0),
            (Activation::Hardswish, (-3.0f32).next_up(), -0.49999994),
            (Activation::Hardswish, 3.0, 1.0),
            (Activation::Hardswish, 3.0f32.next_down(), 1.5),
            (Activation::Hardswish, 3.0f32.next_up(), 1.0),
            (Activation::Hardswish, 0.0, 0.5),
            (Activation::Hardsigmoid, -3.0, 0.0),
            (Activation::Hardsigmoid, 3.0, 0.0),
            (Activation::Hardsigmoid, (-3.0f32).next_up(), 1.0 / 6.0),
            (Activation::Hardsigmoid, 3.0f32.next_down(), 1.0 / 6.0),
            (Activation::Gelu, 0.0, 0.5),
            (Activation::Silu, 0.0, 0.5),
            (Activation::Sigmoid, 0.0, 0.25),
            (Activation::Tanh, 0.0, 1.0),
        ];
        for &(act, x, want) in cases {
            let mut dx = [0.0];
            activation_backward(act, &saved(act, &[x]), &[1.0], &mut dx);
            assert_eq!(dx[0], want, "{act:?} at {x}");
        }
        // NaN: threshold, hardtanh and hardswish backward pass the gradient through,
        // leaky_relu scales it, hardsigmoid gives 0, the smooth ones give NaN (PyTorch 2.15).
        let mut dx = [0.0];
        activation_backward(Activation::LeakyRelu(0.2), &[f32::NAN], &[1.0], &mut dx);
        assert_eq!(dx[0], 0.2);
        activation_backward(Activation::Hardsigmoid, &[f32::NAN], &[1.0], &mut dx);
        assert_eq!(dx[0], 0.0);
        for act in [Activation::Relu, Activation::Relu6, Activation::Hardswish] {
            let mut dx = [0.0];
            activation_backward(act, &[f32::NAN], &[2.0], &mut dx);
            assert_eq!(dx[0], 2.0, "{act:?}");
        }
        for act in [Activation::Sigmoid, Activation::Gelu, Activation::Silu] {
            let mut dx = [0.0];
            activation_backward(act, &[f32::NAN], &[2.0], &mut dx);
            assert!(dx[0].is_nan(), "{act:?}");
        }
    }

    /// Values of `torch.autograd.grad` (PyTorch 2.15, float32) for `dy = 1`, at points off the
    /// kinks: SiLU, GELU, Hardswish, Hardsigmoid and LeakyReLU.
    #[test]
    fn matches_pytorch_values() {
        let cases: &[(Activation, f32, f32)] = &[
            (Activation::Silu, -2.5, -0.099_401_11),
            (Activation::Silu, 1.25, 0.993_680_8),
            (Activation::Gelu, -2.5, -0.037_611_08),
            (Activation::Gelu, 0.75, 0.999_225_7),
            (Activation::Hardswish, -1.25, 0.083_333_34),
            (Activation::Hardswish, 2.5, 1.333_333_3),
            (Activation::Hardsigmoid, 1.0, 0.166_666_67),
            (Activation::LeakyRelu(0.2), -1.0, 0.2),
        ];
        for &(act, x, want) in cases {
            let mut dx = [0.0];
            activation_backward(act, &saved(act, &[x]), &[1.0], &mut dx);
            assert!(
                (dx[0] - want).abs() <= 2e-6 * (1.0 + want.abs()),
                "{act:?} at {x}: {} vs {want}",
                dx[0]
            );
        }
    }

    fn softmax_f64(n: usize, c: usize, s: usize, x: &[f64]) -> Vec<f64> {
        let mut y = x.to_vec();
        for b in 0..n {
            for p in 0..s {
                let at = |ch: usize| (b * c + ch) * s + p;
                let m = (0..c).map(|ch| x[at(ch)]).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..c).map(|ch| (x[at(ch)] - m).exp()).sum();
                for ch in 0..c {
                    y[at(ch)] = (x[at(ch)] - m).exp() / sum;
                }
            }
        }
        y
    }

    /// Softmax backward against central differences of the f64 softmax, over channel counts
    /// 1, 3, 10, 13 with spatial 1, 7 and 15 and batch 3.
    #[test]
    fn softmax_matches_finite_differences() {
        for (c, s) in [(1, 1), (3, 7), (10, 1), (13, 15), (5, 4)] {
            let n = 3;
            let len = n * c * s;
            let x: Vec<f32> = rand_vec(len, 7 + c as u64)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            let dy = rand_vec(len, 8 + s as u64);
            let mut y = x.clone();
            crate::ops::activation::softmax(n, c, s, &mut y);
            let mut dx = vec![0.0; len];
            softmax_backward(n, c, s, &y, &dy, &mut dx);
            let fd = fd_grad(|v| dot(&dy, &softmax_f64(n, c, s, v)), &wide(&x), 1e-5);
            assert_grad(&dx, &fd, 1e-5, 1e-6 * max_abs(&fd));
        }
    }
}
