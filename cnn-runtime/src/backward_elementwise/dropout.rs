//! Dropout in training mode: a seeded mask, survivors scaled by `1/(1 − p)`, and its backward.

use crate::init::Rng;

/// The factor survivors are multiplied by: `f32(1/(1 − p))`, 0 for `p = 1` (PyTorch then
/// returns zeros), 1 for `p = 0`.
fn survivor_scale(p: f32) -> f32 {
    if p >= 1.0 {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// `nn.Dropout(p)` in training mode: each element survives independently with probability
/// `1 − p` and is scaled by `1/(1 − p)` (computed in f32 as `1.0 / (1.0 − p)`); the others
/// become 0. Element `i` (in row-major order) survives when the `i`-th draw
/// `rng.uniform(0, 1)` is `< 1 − p`, so the mask depends only on the generator's state
/// (one draw per element, also for `p = 0` and `p = 1`). PyTorch draws its mask from its own
/// generator: the masks differ from PyTorch's, the distribution and scaling do not.
///
/// + `p`: the drop probability, in `[0, 1]`
/// + `x`, `y`: the input and the output (overwritten), same length
/// + `mask`: overwritten with `true` where the element survived, same length; what
///   [`dropout_backward`] needs
///
/// # Panics
/// If `p` is outside `[0, 1]` (as PyTorch's "dropout probability has to be between 0 and 1")
/// or the slices differ in length.
pub fn dropout_train_forward(p: f32, rng: &mut Rng, x: &[f32], y: &mut [f32], mask: &mut [bool]) {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout probability has to be between 0 and 1"
    );
    assert!(
        x.len() == y.len() && y.len() == mask.len(),
        "dropout_train_forward: slices differ in length"
    );
    let keep = 1.0 - p;
    let scale = survivor_scale(p);
    for ((o, m), &v) in y.iter_mut().zip(mask.iter_mut()).zip(x) {
        *m = rng.uniform(0.0, 1.0) < keep;
        *o = if *m { v * scale } else { 0.0 };
    }
}

/// Backward of [`dropout_train_forward`]: `dx = dy · 1/(1 − p)` where `mask` is `true`, else
/// 0 (PyTorch's `dy · mask · scale`).
///
/// # Panics
/// If the slices differ in length.
pub fn dropout_backward(p: f32, mask: &[bool], dy: &[f32], dx: &mut [f32]) {
    assert!(
        mask.len() == dy.len() && dy.len() == dx.len(),
        "dropout_backward: slices differ in length"
    );
    let scale = survivor_scale(p);
    for ((d, &m), &g) in dx.iter_mut().zip(mask).zip(dy) {
        *d = if m { g * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward_elementwise::check::{assert_grad, dot, fd_grad, wide};
    use crate::test_util::rand_vec;

    /// The same seed gives the same mask; survivors are scaled, the rest are 0; the fraction
    /// kept is near `1 − p`.
    #[test]
    fn forward_is_seeded_and_scaled() {
        let x = rand_vec(10_007, 1);
        for p in [0.0f32, 0.2, 0.5, 0.9, 1.0] {
            let (mut y1, mut m1) = (vec![0.0; x.len()], vec![false; x.len()]);
            let (mut y2, mut m2) = (vec![0.0; x.len()], vec![false; x.len()]);
            dropout_train_forward(p, &mut Rng::new(7), &x, &mut y1, &mut m1);
            dropout_train_forward(p, &mut Rng::new(7), &x, &mut y2, &mut m2);
            assert_eq!(m1, m2);
            assert_eq!(y1, y2);
            let scale = if p == 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
            for i in 0..x.len() {
                assert_eq!(y1[i], if m1[i] { x[i] * scale } else { 0.0 });
            }
            let kept = m1.iter().filter(|&&m| m).count() as f64 / x.len() as f64;
            assert!((kept - (1.0 - p as f64)).abs() < 0.02, "p {p}: kept {kept}");
            let (mut y3, mut m3) = (vec![0.0; x.len()], vec![false; x.len()]);
            dropout_train_forward(p, &mut Rng::new(8), &x, &mut y3, &mut m3);
            if p > 0.0 && p < 1.0 {
                assert_ne!(m1, m3, "another seed, another mask");
            }
        }
    }

    /// With the mask fixed the forward is linear: the backward matches central differences
    /// of `x ↦ Σ dy·mask·x/(1 − p)` in f64.
    #[test]
    fn backward_matches_finite_differences() {
        for (p, len) in [(0.3f32, 333usize), (0.5, 17), (0.0, 9), (1.0, 9)] {
            let x = rand_vec(len, 3);
            let dy = rand_vec(len, 4);
            let (mut y, mut mask) = (vec![0.0; len], vec![false; len]);
            dropout_train_forward(p, &mut Rng::new(5), &x, &mut y, &mut mask);
            let mut dx = vec![0.0; len];
            dropout_backward(p, &mask, &dy, &mut dx);
            let scale = if p == 1.0 {
                0.0
            } else {
                1.0 / (1.0 - p as f64)
            };
            let f = |v: &[f64]| {
                let y: Vec<f64> = v
                    .iter()
                    .zip(&mask)
                    .map(|(&v, &m)| if m { v * scale } else { 0.0 })
                    .collect();
                dot(&dy, &y)
            };
            let fd = fd_grad(f, &wide(&x), 1e-3);
            assert_grad(&dx, &fd, 1e-6, 1e-7);
        }
    }
}
