//! Helpers shared by the kernel tests.

/// Asserts `|a − b| ≤ tol · (1 + |b|)` element-wise, naming the first bad index.
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

/// `len` deterministic values in `[-1, 1)`.
pub(crate) fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::init::Rng::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}
