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

/// The reference epilogue in f64, for the convolution tests: `act((y·scale + shift) + r)` per
/// element of `y: [n, c_out, hw]` (the convolution with its bias, in f64), with the batch norm
/// `affine = (scale, shift)` per channel and the residual `r` optional. Returns the expected
/// values and, for [`assert_close_mag`], each one's magnitude: `mag` (the sum of the
/// absolute values of the convolution's terms) carried through the same steps.
pub(crate) fn reference_epilogue(
    y: &[f64],
    mag: &[f64],
    c_out: usize,
    hw: usize,
    affine: Option<(&[f32], &[f32])>,
    r: Option<&[f32]>,
    act: Option<crate::ops::activation::Activation>,
) -> (Vec<f64>, Vec<f64>) {
    use crate::ops::activation::Activation;
    let mut want = Vec::with_capacity(y.len());
    let mut size = Vec::with_capacity(y.len());
    for (i, (&v, &m)) in y.iter().zip(mag).enumerate() {
        let c = i / hw % c_out;
        let (mut v, mut m) = (v, m);
        if let Some((scale, shift)) = affine {
            let (a, b) = (scale[c] as f64, shift[c] as f64);
            (v, m) = (v * a + b, m * a.abs() + b.abs());
        }
        if let Some(r) = r {
            (v, m) = (v + r[i] as f64, m + (r[i] as f64).abs());
        }
        v = match act {
            None => v,
            Some(Activation::Relu) => v.max(0.0),
            Some(Activation::Relu6) => v.clamp(0.0, 6.0),
            Some(other) => unimplemented!("reference for {other:?}"),
        };
        want.push(v);
        size.push(m);
    }
    (want, size)
}

/// Asserts `|got − want| ≤ tol · (1 + mag)` element-wise, naming the first bad index: a
/// relative error bound sized by each value's magnitude `mag` (see [`reference_epilogue`]), so
/// that values which cancel to near zero are judged by the size of their terms.
#[track_caller]
pub(crate) fn assert_close_mag(got: &[f32], want: &[f64], mag: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "length mismatch: {what}");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + m),
            "mismatch at index {i}: got {g}, expected {w} (magnitude {m}, tol {tol}): {what}"
        );
    }
}
