//! Gradients of a fully connected layer ([`linear_backward`]): two GEMMs and a column sum.

use crate::ops::linear::LinearParams;

/// Scratch elements [`linear_backward`] needs for a batch of `n`: `dy` transposed,
/// `out_features · n`.
pub const fn linear_backward_scratch_len(p: &LinearParams, n: usize) -> usize {
    p.out_features * n
}

/// The gradients of `y = x · weightᵀ + bias` (PyTorch's `nn.Linear`) given `dy = ∂L/∂y`, over a
/// batch of `n` samples:
///
/// + `dx[s, i] = Σ_o dy[s, o] · weight[o, i]` (`dx = dy · W`, one GEMM);
/// + `dw[o, i] = Σ_s dy[s, o] · x[s, i]` (`dw = dyᵀ · x`, one GEMM over `dy` transposed into
///   the scratch);
/// + `db[o] = Σ_s dy[s, o]`.
///
/// Arguments:
///
/// + `x`: the forward input, `[n, in_features]` row-major
/// + `weight`: `[out_features, in_features]` (PyTorch's layout; read only when `dx` is given)
/// + `dy`: `[n, out_features]`
/// + `dx`: `[n, in_features]`, overwritten; `None` skips it
/// + `dw`: `[out_features, in_features]`, overwritten with the sum over the batch
/// + `db`: `[out_features]`, overwritten; `None` for a layer without bias
/// + `scratch`: grown to [`linear_backward_scratch_len`] if shorter, never shrunk
///
/// Runs on the calling thread; the f32 sums run in a fixed order (deterministic).
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)] // the layer, the batch, its tensors and gradients
pub fn linear_backward(
    p: &LinearParams,
    n: usize,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) {
    let (k, m) = (p.in_features, p.out_features);
    assert!(x.len() >= n * k, "linear_backward x too short");
    assert!(dy.len() >= n * m, "linear_backward dy too short");
    assert!(dw.len() >= m * k, "linear_backward dw too short");
    if let Some(db) = db {
        assert!(db.len() >= m, "linear_backward db too short");
        super::channel_sums(n, m, 1, dy, db);
    }
    if let Some(dx) = dx {
        assert!(weight.len() >= m * k, "linear_backward weight too short");
        assert!(dx.len() >= n * k, "linear_backward dx too short");
        // dy: (N, O)  weight: (O, I)  dx: (N, I)
        crate::gemm::sgemm(n, m, k, dy, weight, dx, false);
    }
    let dw = &mut dw[..m * k];
    if n == 0 {
        dw.fill(0.0);
        return;
    }
    let len = linear_backward_scratch_len(p, n);
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let dyt = &mut scratch[..len];
    crate::transpose::dense(n, m, dy, dyt);
    // dyᵀ: (O, N)  x: (N, I)  dw: (O, I)
    crate::gemm::sgemm(m, n, k, dyt, x, dw, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backward::tests::{check_finite_differences, to_f64, Probe};
    use crate::ops::conv::tests::assert_close_mag;
    use crate::test_util::rand_vec;

    /// `y = b + x·wᵀ` in f64.
    fn forward64(p: &LinearParams, n: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (k, m) = (p.in_features, p.out_features);
        let mut y = vec![0.0; n * m];
        for s in 0..n {
            for o in 0..m {
                y[s * m + o] = b[o] + (0..k).map(|i| x[s * k + i] * w[o * k + i]).sum::<f64>();
            }
        }
        y
    }

    /// `[dx, dw, db]` in f64 with their magnitudes, from the definition.
    fn naive(
        p: &LinearParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> [(Vec<f64>, Vec<f64>); 3] {
        let (k, m) = (p.in_features, p.out_features);
        let zeros = |len| (vec![0.0; len], vec![0.0; len]);
        let [mut dx, mut dw, mut db] = [zeros(n * k), zeros(m * k), zeros(m)];
        let add = |(v, mag): &mut (Vec<f64>, Vec<f64>), i: usize, t: f64| {
            v[i] += t;
            mag[i] += t.abs();
        };
        for s in 0..n {
            for o in 0..m {
                let d = dy[s * m + o] as f64;
                add(&mut db, o, d);
                for i in 0..k {
                    add(&mut dx, s * k + i, d * w[o * k + i] as f64);
                    add(&mut dw, o * k + i, d * x[s * k + i] as f64);
                }
            }
        }
        [dx, dw, db]
    }

    #[test]
    fn linear_backward_matches_the_definition_and_finite_differences() {
        // (n, in_features, out_features): single rows and columns, in ≠ out both ways (a
        // transposed weight reads out of place), GEMM tile remainders, k over several blocks,
        // and an empty batch.
        let cases = [
            (1, 1, 1),
            (3, 7, 5),
            (4, 64, 33),
            (2, 3, 1),
            (5, 1, 8),
            (3, 300, 17),
            (17, 40, 9),
            (2, 9, 20),
            (0, 4, 4),
        ];
        for (c, &(n, in_features, out_features)) in cases.iter().enumerate() {
            let p = LinearParams {
                in_features,
                out_features,
            };
            let seed = 300 + 10 * c as u64;
            let (k, m) = (in_features, out_features);
            let x = rand_vec(n * k, seed);
            let w = rand_vec(m * k, seed + 1);
            let b = rand_vec(m, seed + 2);
            let dy = rand_vec(n * m, seed + 3);
            let what = format!("n {n}, in {k}, out {m}");

            let mut dx = vec![f32::NAN; n * k];
            let mut dw = vec![f32::NAN; m * k];
            let mut db = vec![f32::NAN; m];
            let mut scratch = Vec::new();
            linear_backward(
                &p,
                n,
                &x,
                &w,
                &dy,
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut scratch,
            );
            assert_eq!(scratch.len(), linear_backward_scratch_len(&p, n), "{what}");

            let r = naive(&p, n, &x, &w, &dy);
            let tol = 2e-6;
            for (name, got, (want, mag)) in
                [("dx", &dx, &r[0]), ("dw", &dw, &r[1]), ("db", &db, &r[2])]
            {
                assert_close_mag(got, want, mag, tol, &format!("{name} {what}"));
            }

            let mut dw2 = vec![f32::NAN; dw.len()];
            linear_backward(&p, n, &x, &w, &dy, None, &mut dw2, None, &mut scratch);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dw2), bits(&dw), "{what}");

            // L = Σ dy·linear(x, w, b), in f64.
            let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
            let dot = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
            let by_x = |x: &[f64]| dot(forward64(&p, n, x, &w64, &b64));
            let by_w = |w: &[f64]| dot(forward64(&p, n, &x64, w, &b64));
            let by_b = |b: &[f64]| dot(forward64(&p, n, &x64, &w64, b));
            let checks: [Probe; 3] = [
                (&by_x, &x64, &dx, "dx"),
                (&by_w, &w64, &dw, "dw"),
                (&by_b, &b64, &db, "db"),
            ];
            for (i, (loss, v, got, name)) in checks.into_iter().enumerate() {
                let (want, mag) = &r[i];
                let what = format!("{name} {what}");
                check_finite_differences(loss, v, got, want, mag, seed + 5 + i as u64, tol, &what);
            }
        }
    }

    #[test]
    fn by_hand() {
        // y = W·x + b with W = [[1, 0], [0, 1], [1, −1]]; batch of two, dy = [[1, 2, 3], [0, 1, −1]].
        let p = LinearParams {
            in_features: 2,
            out_features: 3,
        };
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0];
        let x = [2.0, 5.0, -1.0, 3.0];
        let dy = [1.0, 2.0, 3.0, 0.0, 1.0, -1.0];
        let (mut dx, mut dw, mut db) = ([0.0; 4], [0.0; 6], [0.0; 3]);
        let mut scratch = Vec::new();
        linear_backward(
            &p,
            2,
            &x,
            &w,
            &dy,
            Some(&mut dx),
            &mut dw,
            Some(&mut db),
            &mut scratch,
        );
        // dx = dy·W
        assert_eq!(dx, [4.0, -1.0, -1.0, 2.0]);
        // dw[o] = Σ_s dy[s, o]·x[s]
        assert_eq!(dw, [2.0, 5.0, 4.0 - 1.0, 10.0 + 3.0, 6.0 + 1.0, 15.0 - 3.0]);
        assert_eq!(db, [1.0, 3.0, 2.0]);
    }
}
