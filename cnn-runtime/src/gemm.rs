//! The only call site of `matrixmultiply::sgemm`.

/// `C[m×n] ← A[m×k] · B[k×n] (+ C if accumulate)`; all row-major and contiguous.
///
/// # Panics
/// If a slice is shorter than its matrix.
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    gemm_strided(m, k, n, a, b, (n as isize, 1), c, accumulate);
}

/// `C[m×n] ← A[m×k] · Bᵀ (+ C if accumulate)` where `B` is `[n×k]` row-major (a `Linear`
/// weight); `A` and `C` row-major and contiguous.
///
/// # Panics
/// If a slice is shorter than its matrix.
#[cfg(test)]
pub(crate) fn sgemm_bt(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    gemm_strided(m, k, n, a, b, (1, k as isize), c, accumulate);
}

#[allow(clippy::too_many_arguments)] // one private helper mirroring sgemm's own signature
fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    (rsb, csb): (isize, isize),
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "sgemm operand too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the assert bounds every offset the strides reach: A at (k, 1) up to m·k,
    // B at (n, 1) or (1, k) up to k·n, C at (n, 1) up to m·n. `c` is a unique borrow, so it
    // cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, rand_vec};

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], bt: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    let bv = if bt { b[j * k + l] } else { b[l * n + j] };
                    s += a[i * k + l] as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_over_awkward_shapes() {
        let mnks = [
            (1, 1, 1),
            (63, 2, 10),
            (0, 64, 4),
            (4, 0, 7),
            (5, 7, 0),
            (16, 16, 16),
            (17, 33, 9),
            (64, 27, 1024),
            (3, 4096, 10),
        ];
        for (seed, &(m, k, n)) in mnks.iter().enumerate() {
            let a = rand_vec(m * k, seed as u64);
            let b = rand_vec(k * n, seed as u64 + 100);
            for bt in [false, true] {
                for accumulate in [false, true] {
                    let init = rand_vec(m * n, 7);
                    let mut c = init.clone();
                    if bt {
                        sgemm_bt(m, k, n, &a, &b, &mut c, accumulate);
                    } else {
                        sgemm(m, k, n, &a, &b, &mut c, accumulate);
                    }
                    let mut want = naive(m, k, n, &a, &b, bt);
                    if accumulate {
                        want.iter_mut().zip(&init).for_each(|(w, i)| *w += i);
                    }
                    assert_close(&c, &want, 1e-4);
                }
            }
        }
    }
}
