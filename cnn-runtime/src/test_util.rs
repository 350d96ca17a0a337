//! Helpers shared by the kernel tests.

#[cfg(feature = "std")]
use crate::gemm::bf16::from_bf16;
#[cfg(feature = "std")]
use crate::simd::Chain;

/// Asserts `|a − b| ≤ tol · (1 + |b|)` element-wise, naming the first bad index.
///
/// The bound is absolute (`tol`) for values below 1: meant for outputs whose terms are of
/// order 1, where the rounding error is that size whatever the value. Where small values
/// matter in themselves (activation tails, probabilities), use [`assert_close_rel`].
#[track_caller]
pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * (1.0 + y.abs());
        assert!(
            ok,
            "mismatch at index {i}: got {x}, expected {y} (tol {tol})"
        );
    }
}

/// Asserts `|a − b| ≤ atol + rtol · |b|` element-wise (NaN matches NaN, and equal values
/// match, infinities included), naming the first bad index: relative to each value, with an
/// absolute floor `atol` for values that round to zero or below f32's normal range.
#[track_caller]
pub(crate) fn assert_close_rel(a: &[f32], b: &[f32], rtol: f64, atol: f64) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x as f64 - y as f64).abs();
        let ok = (x.is_nan() && y.is_nan())
            || x == y
            || (y.is_finite() && err <= atol + rtol * (y as f64).abs());
        assert!(
            ok,
            "mismatch at index {i}: got {x:e}, expected {y:e} (rtol {rtol:e}, atol {atol:e})"
        );
    }
}

/// `len` deterministic values in `[-1, 1)`.
pub(crate) fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::init::Rng::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// `x`, or a zero of its sign where it is subnormal (AMX's flush of inputs and results).
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// The sum of products of `k₂` pairs `a(p)·b(p)` in `chain`'s order of roundings, by hand:
/// what every path of that chain must give bit for bit.
#[cfg(feature = "std")]
pub(crate) fn chain_sum(
    chain: Chain,
    k2: usize,
    a: impl Fn(usize) -> u32,
    b: impl Fn(usize) -> u32,
) -> f32 {
    let halves = |p: u32| (from_bf16(p as u16), from_bf16((p >> 16) as u16));
    match chain {
        Chain::Pairs => (0..k2).fold(0.0f32, |acc, p| {
            let ((ae, ao), (be, bo)) = (halves(a(p)), halves(b(p)));
            let acc = ao.mul_add(bo, acc);
            ae.mul_add(be, acc)
        }),
        Chain::Tiles => {
            let mut acc = 0.0f32;
            // LOOP over blocks of 16 pairs: two chains from zero, then into the sum
            for blk in (0..k2).step_by(16) {
                let (mut even, mut odd) = (0.0f32, 0.0f32);
                for p in blk..(blk + 16).min(k2) {
                    let ((ae, ao), (be, bo)) = (halves(a(p)), halves(b(p)));
                    even = ftz(ftz(ae).mul_add(ftz(be), even));
                    odd = ftz(ftz(ao).mul_add(ftz(bo), odd));
                }
                acc = ftz(acc + ftz(even + odd));
            }
            acc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relative_check_refuses_a_zero_or_a_flipped_sign_in_the_tail() {
        // sigmoid(−15), SiLU(−15): tiny values that an absolute 1e-6 would wave through.
        for tail in [3.059e-7f32, -4.589e-6] {
            let bad = [0.0, -tail, tail * 1.001];
            for b in bad {
                let r = std::panic::catch_unwind(|| assert_close_rel(&[b], &[tail], 1e-6, 1e-30));
                assert!(r.is_err(), "{b} passed for {tail}");
            }
            assert_close_rel(&[tail * (1.0 + 1e-7)], &[tail], 1e-6, 1e-30);
        }
        // What the absolute check cannot see: zero for sigmoid(−15).
        assert_close(&[0.0], &[3.059e-7], 1e-6);
        assert_close_rel(
            &[f32::NAN, f32::INFINITY],
            &[f32::NAN, f32::INFINITY],
            1e-6,
            0.0,
        );
        let inf =
            std::panic::catch_unwind(|| assert_close_rel(&[f32::MAX], &[f32::INFINITY], 1e-6, 0.0));
        assert!(inf.is_err());
    }
}
