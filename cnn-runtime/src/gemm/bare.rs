//! The GEMM without `std`: no packing buffers (no thread-local storage, no allocator), loops
//! the compiler vectorises for the target's features. Four rows of A share each pass over a
//! row of B, so that B streams through the cache a quarter as often.

/// `C[m×n] ← A[m×k] · B (+ C if accumulate)` with B's element `(p, j)` at `b[p·rsb + j·csb]`,
/// `(rsb, csb)` = `(n, 1)` (row-major) or `(1, k)` (B transposed, a `Linear` weight); A and C
/// row-major and contiguous. Each `C[i, j]` sums its `k` products in order `p = 0, 1, …`.
///
/// # Panics
/// If a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)] // sgemm's own signature plus B's strides
#[cfg_attr(feature = "std", allow(dead_code))] // with `std` only the tests call it
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    accumulate: bool,
) {
    if super::degenerate([m, k, n], (a, k), b, (c, n), accumulate) {
        return;
    }
    let (a, c) = (&a[..m * k], &mut c[..m * n]);
    if !accumulate {
        c.fill(0.0);
    }
    if csb == 1 {
        let b = &b[..(k - 1) * rsb + n];
        // LOOP over blocks of 4 rows of C: each row of B is added, scaled, to all four
        let mut rows = c.chunks_exact_mut(4 * n);
        let mut i = 0;
        for block in &mut rows {
            let (c0, rest) = block.split_at_mut(n);
            let (c1, rest) = rest.split_at_mut(n);
            let (c2, c3) = rest.split_at_mut(n);
            for p in 0..k {
                let row = &b[p * rsb..p * rsb + n];
                let [a0, a1, a2, a3] = [0, 1, 2, 3].map(|r| a[(i + r) * k + p]);
                for ((((v0, v1), v2), v3), &w) in c0
                    .iter_mut()
                    .zip(c1.iter_mut())
                    .zip(c2.iter_mut())
                    .zip(c3.iter_mut())
                    .zip(row)
                {
                    *v0 += a0 * w;
                    *v1 += a1 * w;
                    *v2 += a2 * w;
                    *v3 += a3 * w;
                }
            }
            i += 4;
        }
        // LOOP over the remaining rows, one at a time
        for c_row in rows.into_remainder().chunks_exact_mut(n) {
            for p in 0..k {
                let av = a[i * k + p];
                for (v, &w) in c_row.iter_mut().zip(&b[p * rsb..p * rsb + n]) {
                    *v += av * w;
                }
            }
            i += 1;
        }
    } else {
        // B transposed (`rsb` = 1): column j of B is the contiguous row j of the `[n×k]`
        // matrix, and each C value a dot product of two contiguous rows.
        debug_assert_eq!(rsb, 1, "B's strides are (n, 1) or (1, k)");
        for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
            let a_row = &a[i * k..(i + 1) * k];
            for (j, v) in c_row.iter_mut().enumerate() {
                let b_col = &b[j * csb..j * csb + k];
                let mut sum = 0.0;
                for (&x, &y) in a_row.iter().zip(b_col) {
                    sum += x * y;
                }
                *v += sum;
            }
        }
    }
}

/// [`gemm`] with A's and C's rows `lda` and `ldc` apart: one row at a time (each row of C sums
/// in the same order as in [`gemm`], so the bits are the same).
///
/// # Panics
/// If a slice is shorter than its matrix, or a stride shorter than its row.
#[cfg_attr(feature = "std", allow(dead_code))] // with `std` only the tests call it
pub(crate) fn gemm_strided(
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    strides_b: (usize, usize),
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) {
    if super::degenerate([m, k, n], (a, lda), b, (c, ldc), accumulate) {
        return;
    }
    // LOOP over rows of A and C
    for i in 0..m {
        let c_row = &mut c[i * ldc..i * ldc + n];
        gemm(1, k, n, &a[i * lda..], b, strides_b, c_row, accumulate);
    }
}
