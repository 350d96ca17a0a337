//! SGEMM for the conv and linear kernels.
//!
//! On x86_64 a BLIS loop nest ([`blis`]) packs A and B into thread-local buffers and sweeps an
//! AVX-512F 6×64 or AVX2+FMA 6×16 micro-kernel ([`x86`]); elsewhere, and at
//! [`Isa::Baseline`], `matrixmultiply::sgemm` runs. The level is the one every kernel runs at,
//! [`crate::simd::isa`] (so `CNN_SIMD` pins it here too).

mod bare;
#[cfg(feature = "std")]
pub(crate) mod bf16;
pub(crate) mod bf16_pack;
#[cfg(feature = "std")]
mod blis;
#[cfg(feature = "std")]
mod kernel;
#[cfg(all(target_arch = "x86_64", feature = "std"))]
mod x86;

use crate::simd::{isa, Isa};

/// What the GEMM does to each value `v` of C's row `i` in registers, before storing it:
/// `(v + add)·scale + shift` with `[add, scale, shift] = coef[i]`, each step rounded, then
/// PyTorch's ReLU (NaN stays NaN) when `relu`. With `−0`, `1` and `−0` for the steps a row does
/// not have, each value comes out with the bits of the steps it has alone (`v + −0 = v`,
/// `v·1 = v`): the convolutions' `PostOp` without a separate pass over their output. The f32
/// ([`sgemm_post`]) and the bf16 GEMMs take it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowPost<'a> {
    /// `[add, scale, shift]` per row of C.
    pub(crate) coef: &'a [[f32; 3]],
    /// PyTorch's ReLU last.
    pub(crate) relu: bool,
}

impl RowPost<'_> {
    /// [`RowPost`]'s steps for one value of row `i`, as the tiles apply them.
    pub(crate) fn apply(&self, i: usize, v: f32) -> f32 {
        post_value(v, self.coef[i], self.relu)
    }

    /// Applies the steps to the first `n` values of each of C's first `m` rows (`ldc` apart):
    /// the GEMMs whose tiles do not apply them.
    fn rows(&self, c: &mut [f32], ldc: usize, m: usize, n: usize) {
        // LOOP over rows of C
        for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
            row[..n].iter_mut().for_each(|v| *v = self.apply(i, *v));
        }
    }
}

/// `(v + add)·scale + shift`, then `max(0, ·)` when `relu` (NaN and `−0` kept): one value of
/// [`RowPost`].
#[inline(always)]
pub(crate) fn post_value(v: f32, [add, scale, shift]: [f32; 3], relu: bool) -> f32 {
    let y = (v + add) * scale + shift;
    if relu && y < 0.0 {
        0.0
    } else {
        y
    }
}

/// The checks and the empty cases every GEMM starts with: panics if an operand is shorter than
/// its matrix (A's rows `lda ≥ k` apart, C's `ldc ≥ n`); with no row or column there is nothing
/// to do, and with `k = 0` the product is zero (C's rows are zeroed unless accumulating). `true`
/// when that was all.
fn degenerate(
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) -> bool {
    assert!(lda >= k && ldc >= n, "sgemm strides shorter than the rows");
    let rows = |ld: usize, len: usize| if m == 0 { 0 } else { (m - 1) * ld + len };
    assert!(
        a.len() >= rows(lda, k) && b.len() >= k * n && c.len() >= rows(ldc, n),
        "sgemm operand too short"
    );
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            // LOOP over rows of C
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return true;
    }
    false
}

/// `C[m×n] ← A[m×k] · B[k×n] (+ C if accumulate)`; all row-major and contiguous. On the x86_64
/// paths row `i` of C is bit-identical whatever `m` is.
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
    gemm_on(isa(), m, k, n, a, b, false, c, accumulate);
}

/// `C[m×n] ← post(A[m×k] · B[k×n])`: [`sgemm`] with each value of row `i` passed through
/// `post`'s `coef[i]` before it is stored (in the tile's registers on the x86_64 paths), the
/// bits of [`sgemm`] followed by [`RowPost::apply`].
///
/// # Panics
/// If a slice is shorter than its matrix, or `post` has fewer than `m` rows.
pub(crate) fn sgemm_post(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    post: RowPost<'_>,
) {
    post_on(isa(), [m, k, n], a, b, c, post)
}

/// [`sgemm_post`] at a given instruction-set level.
///
/// # Panics
/// As [`sgemm_post`], or if the CPU lacks the level's features.
fn post_on(
    isa: Isa,
    [m, k, n]: [usize; 3],
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    post: RowPost<'_>,
) {
    assert!(post.coef.len() >= m, "sgemm row epilogue too short");
    gemm_strided_on(
        isa,
        [m, k, n],
        (a, k),
        b,
        false,
        (c, n),
        (false, Some(post)),
    )
}

/// `C[m×n] ← A[m×k] · Bᵀ (+ C if accumulate)` where `B` is `[n×k]` row-major (a `Linear`
/// weight); `A` and `C` row-major and contiguous. On the x86_64 paths row `i` of C is
/// bit-identical whatever `m` is (a sample's result does not depend on its batch).
///
/// # Panics
/// If a slice is shorter than its matrix.
pub(crate) fn sgemm_bt(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    gemm_on(isa(), m, k, n, a, b, true, c, accumulate);
}

/// [`sgemm`] with A's rows `lda ≥ k` values apart and C's `ldc ≥ n` (`a: (A, lda)`,
/// `c: (C, ldc)`); the values between rows are neither read nor written. Row `i` of C is
/// bit-identical to [`sgemm`]'s.
///
/// # Panics
/// If a slice is shorter than its matrix, or a stride shorter than its row.
pub(crate) fn sgemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], usize),
    b: &[f32],
    c: (&mut [f32], usize),
    accumulate: bool,
) {
    gemm_strided_on(isa(), [m, k, n], a, b, false, c, (accumulate, None));
}

/// [`sgemm`] (`bt = false`) or [`sgemm_bt`] (`bt = true`) at a given instruction-set level.
///
/// # Panics
/// If a slice is shorter than its matrix, or the CPU lacks the level's features.
#[allow(clippy::too_many_arguments)] // sgemm's own signature plus the level and B's layout
pub(crate) fn gemm_on(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    bt: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    gemm_strided_on(isa, [m, k, n], (a, k), b, bt, (c, n), (accumulate, None))
}

/// [`gemm_on`] with A's and C's row strides, as [`sgemm_strided`], and a row epilogue
/// (`(accumulate, post)`: never both; B not transposed with one).
///
/// # Panics
/// If a slice is shorter than its matrix, a stride shorter than its row, or the CPU lacks the
/// level's features.
fn gemm_strided_on(
    isa: Isa,
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    bt: bool,
    (c, ldc): (&mut [f32], usize),
    (accumulate, post): (bool, Option<RowPost<'_>>),
) {
    debug_assert!(post.is_none() || !(accumulate || bt));
    if degenerate([m, k, n], (a, lda), b, (c, ldc), accumulate) {
        if let Some(post) = post {
            // Zero rows when `k = 0` (nothing when there is no row or column).
            post.rows(c, ldc, m, n);
        }
        return;
    }
    assert!(isa.available(), "sgemm level `{}` unavailable", isa.name());
    // A `Linear` layer's product (B transposed) is dense; the strided rows are Winograd's.
    assert!(
        !bt || (lda == k && ldc == n),
        "sgemm with B transposed takes dense A and C"
    );
    let strides_b = if bt { (1, k) } else { (n, 1) };
    #[cfg(not(feature = "std"))]
    {
        // No packing buffers without `std`: loops vectorised for the target's features.
        let _ = isa;
        bare::gemm_strided([m, k, n], (a, lda), b, strides_b, (c, ldc), accumulate);
        if let Some(post) = post {
            post.rows(c, ldc, m, n);
        }
    }
    #[cfg(feature = "std")]
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` asserted every feature of AVX-512 above, which is what the
        // token promises and more than `gemm_avx512` is compiled with.
        Isa::Avx512 => unsafe {
            use crate::simd::{Avx512, Simd};
            #[cfg(test)]
            crate::simd::testing::note(Isa::Avx512);
            let s = Avx512::new_unchecked();
            if bt {
                x86::gemm_bt_avx512(s, [m, k, n], a, b, c, accumulate)
            } else {
                x86::gemm_avx512(s, [m, k, n], (a, lda), b, (c, ldc), (accumulate, post))
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` asserted AVX2 and FMA above, the token's and `gemm_avx2`'s
        // features.
        Isa::Avx2 => unsafe {
            use crate::simd::{Avx2, Simd};
            #[cfg(test)]
            crate::simd::testing::note(Isa::Avx2);
            let s = Avx2::new_unchecked();
            if bt {
                x86::gemm_bt_avx2(s, [m, k, n], a, b, c, accumulate)
            } else {
                x86::gemm_avx2(s, [m, k, n], (a, lda), b, (c, ldc), (accumulate, post))
            }
        },
        _ => {
            // The tests count the path that ran, not the level asked for.
            #[cfg(test)]
            crate::simd::testing::note(Isa::Baseline);
            portable([m, k, n], (a, lda), b, strides_b, (c, ldc), accumulate);
            if let Some(post) = post {
                post.rows(c, ldc, m, n);
            }
        }
    }
}

/// `matrixmultiply::sgemm` with B's element `(p, j)` at `b[p·rsb + j·csb]` and A's and C's
/// rows `lda` and `ldc` apart.
#[cfg(feature = "std")]
fn portable(
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) {
    if degenerate([m, k, n], (a, lda), b, (c, ldc), accumulate) {
        return;
    }
    // SAFETY: the assert in `degenerate` bounds every offset the strides reach: A at (lda, 1)
    // up to (m − 1)·lda + k, B at (n, 1) or (1, k) up to k·n, C at (ldc, 1) up to
    // (m − 1)·ldc + n. `c` is a unique borrow, so it cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            ldc as isize,
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

    /// `(m, k, n)`: empty matrices, every tile remainder of both kernels, single rows and
    /// columns, k across several `KC` blocks, and the im2col shapes of the benchmark nets.
    const MKNS: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (63, 2, 10),
        (0, 64, 4),
        (4, 0, 7),
        (5, 7, 0),
        (16, 16, 16),
        (17, 33, 9),
        (13, 300, 31),
        (14, 5, 32),
        (15, 9, 33),
        (6, 3, 17),
        (7, 40, 47),
        (29, 11, 65),
        (1, 600, 100),
        (100, 600, 1),
        (2, 3, 1030),
        (130, 520, 70),
        (250, 20, 40),
        (64, 27, 1024),
        (16, 576, 1024),
        (256, 2304, 64),
        (3, 4096, 10),
        (64, 4096, 10),
    ];

    /// Says on stderr, loudly, that the `path` kernels go untested here, and returns whether
    /// they do.
    fn skipped(path: Isa) -> bool {
        let skip = !path.available();
        if skip {
            eprintln!(
                "SKIPPED: the `{}` GEMM is not tested: this CPU lacks it",
                path.name()
            );
        }
        skip
    }

    fn check_path(path: Isa) {
        if skipped(path) {
            return;
        }
        for (seed, &(m, k, n)) in MKNS.iter().enumerate() {
            let a = rand_vec(m * k, seed as u64);
            let b = rand_vec(k * n, seed as u64 + 100);
            for bt in [false, true] {
                let want = naive(m, k, n, &a, &b, bt);
                for accumulate in [false, true] {
                    let init = rand_vec(m * n, 7);
                    let mut c = init.clone();
                    gemm_on(path, m, k, n, &a, &b, bt, &mut c, accumulate);
                    let mut want = want.clone();
                    if accumulate {
                        want.iter_mut().zip(&init).for_each(|(w, i)| *w += i);
                    }
                    // f32 sums of k products of values in [-1, 1): error grows like √k.
                    let tol = 1e-5 * (k as f32).sqrt().max(1.0) * 4.0;
                    println!("{} m={m} k={k} n={n} bt={bt} acc={accumulate}", path.name());
                    assert_close(&c, &want, tol);
                }
            }
        }
    }

    /// The GEMM of `no_std` builds (no packing buffers), on the same shapes, with B row-major
    /// and transposed, overwriting and accumulating; its result does not depend on `m` (each
    /// row of C sums in order), and it leaves C past `m·n` alone.
    #[test]
    fn bare_matches_naive_over_awkward_shapes() {
        for (seed, &(m, k, n)) in MKNS.iter().enumerate() {
            let a = rand_vec(m * k, seed as u64);
            let b = rand_vec(k * n, seed as u64 + 100);
            for bt in [false, true] {
                let strides = if bt { (1, k) } else { (n, 1) };
                let want = naive(m, k, n, &a, &b, bt);
                for accumulate in [false, true] {
                    let init = rand_vec(m * n + 3, 7);
                    let mut c = init.clone();
                    bare::gemm(m, k, n, &a, &b, strides, &mut c, accumulate);
                    let mut want = want.clone();
                    if accumulate {
                        want.iter_mut().zip(&init).for_each(|(w, i)| *w += i);
                    }
                    let tol = 1e-5 * (k as f32).sqrt().max(1.0) * 4.0;
                    assert_close(&c[..m * n], &want, tol);
                    assert_eq!(c[m * n..], init[m * n..], "m={m} k={k} n={n}: wrote past C");
                    // With A's and C's rows apart: the same bits, nothing written between.
                    let (lda, ldc) = (k + 3, n + 2);
                    let mut sa = vec![f32::NAN; m * lda];
                    for i in 0..m {
                        sa[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
                    }
                    let mut sc = vec![9.0; m * ldc];
                    for i in 0..m {
                        sc[i * ldc..i * ldc + n].copy_from_slice(&init[i * n..(i + 1) * n]);
                    }
                    bare::gemm_strided(
                        [m, k, n],
                        (&sa, lda),
                        &b,
                        strides,
                        (&mut sc, ldc),
                        accumulate,
                    );
                    for i in 0..m {
                        assert_eq!(
                            sc[i * ldc..i * ldc + n],
                            c[i * n..(i + 1) * n],
                            "strided row {i}"
                        );
                        assert_eq!(sc[i * ldc + n..(i + 1) * ldc], [9.0; 2], "between rows {i}");
                    }
                    // Row by row (m = 1): the same bits.
                    for i in 0..m {
                        let mut row = init[i * n..(i + 1) * n].to_vec();
                        bare::gemm(1, k, n, &a[i * k..], &b, strides, &mut row, accumulate);
                        assert_eq!(row, c[i * n..(i + 1) * n], "m={m} k={k} n={n} row {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn avx512_matches_naive_over_awkward_shapes() {
        check_path(Isa::Avx512);
    }

    #[test]
    fn avx2_matches_naive_over_awkward_shapes() {
        check_path(Isa::Avx2);
    }

    #[test]
    fn portable_matches_naive_over_awkward_shapes() {
        check_path(Isa::Baseline);
    }

    /// `sgemm`, `sgemm_bt` and `sgemm_post` run the level they are asked for (forced per
    /// thread), and its result.
    #[test]
    fn public_entry_points_match_naive_at_every_level() {
        let (m, k, n) = (17, 33, 9);
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        crate::simd::testing::each_level(|level| {
            let before = crate::simd::testing::ran()[level as usize];
            let mut c = vec![0.0; m * n];
            sgemm(m, k, n, &a, &b, &mut c, false);
            assert_close(&c, &naive(m, k, n, &a, &b, false), 1e-4);
            let mut direct = vec![0.0; m * n];
            gemm_on(level, m, k, n, &a, &b, false, &mut direct, false);
            assert_eq!(c, direct, "sgemm at {}", level.name());
            sgemm_bt(m, k, n, &a, &b, &mut c, false);
            assert_close(&c, &naive(m, k, n, &a, &b, true), 1e-4);
            gemm_on(level, m, k, n, &a, &b, true, &mut direct, false);
            assert_eq!(c, direct, "sgemm_bt at {}", level.name());
            // sgemm_post: sgemm's values through the row epilogue.
            let coef: Vec<[f32; 3]> = (0..m).map(|i| [0.5, -1.5, i as f32]).collect();
            let post = RowPost {
                coef: &coef,
                relu: true,
            };
            sgemm_post(m, k, n, &a, &b, &mut c, post);
            sgemm(m, k, n, &a, &b, &mut direct, false);
            post.rows(&mut direct, n, m, n);
            assert_eq!(c, direct, "sgemm_post at {}", level.name());
            let after = crate::simd::testing::ran()[level as usize];
            assert_eq!(after - before, 6, "{} ran", level.name());
        });
    }

    /// `sgemm_post` at every level equals `sgemm` followed by the convolutions' separate
    /// `PostOp` pass, bit for bit, for every form of the row epilogue (bias, folded batch norm,
    /// ReLU, each present or not): over tile remainders, k across several `KC` blocks (the
    /// epilogue on the last one only, after C is added), rows of NaN and of zeros, and sums
    /// that come out as `−0`.
    #[test]
    fn the_row_epilogue_gives_the_bits_of_the_separate_pass_at_every_level() {
        use crate::ops::conv::PostOp;
        let shapes = [
            (1, 1, 1),
            (7, 40, 47),
            (14, 5, 32),
            (13, 300, 31),
            (29, 11, 65),
            (130, 520, 70),
            (6, 3, 130),
            (64, 32, 256),
        ];
        for path in Isa::ALL.into_iter().filter(|p| !skipped(*p)) {
            for (seed, &(m, k, n)) in shapes.iter().enumerate() {
                let mut a = rand_vec(m * k, seed as u64 + 40);
                let b = rand_vec(k * n, seed as u64 + 140);
                if m > 2 {
                    a[k..2 * k].fill(0.0);
                    a[2 * k] = f32::NAN;
                }
                let [bias, scale, shift] = [0, 1, 2].map(|i| rand_vec(m, seed as u64 * 3 + i));
                let mut plain = vec![0.0; m * n];
                gemm_on(path, m, k, n, &a, &b, false, &mut plain, false);
                for form in 0..8 {
                    let (with_bias, affine, relu) = (form & 1 != 0, form & 2 != 0, form & 4 != 0);
                    let posts: Vec<PostOp> = (0..m)
                        .map(|i| PostOp {
                            bias: with_bias.then_some(bias[i]),
                            // Row 1 (zeros) gets a negative scale and a −0 shift: −0 out.
                            affine: affine.then_some(if i == 1 {
                                (-2.0, -0.0)
                            } else {
                                (scale[i], shift[i])
                            }),
                            relu,
                            act: None,
                        })
                        .collect();
                    let coef: Vec<[f32; 3]> = posts.iter().map(PostOp::row_coef).collect();
                    let mut want = plain.clone();
                    for (post, row) in posts.iter().zip(want.chunks_exact_mut(n)) {
                        post.apply(row);
                    }
                    let mut got = vec![f32::NAN; m * n];
                    let post = RowPost { coef: &coef, relu };
                    post_on(path, [m, k, n], &a, &b, &mut got, post);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let what = format!("{m}x{k}x{n} on {}, form {form}", path.name());
                    assert_eq!(bits(&got), bits(&want), "{what}");
                }
            }
        }
    }

    /// With `k = 0` the epilogue sees sums of `+0`: a negative scale and a `−0` shift give `−0`,
    /// which ReLU keeps, and a bias of 1 with scale −1 gives −1, which ReLU floors; and an
    /// epilogue shorter than the rows is refused.
    #[test]
    fn the_row_epilogue_of_empty_sums_and_a_short_one() {
        let coef: [[f32; 3]; 3] = [[-0.0, -1.0, -0.0], [1.0, -1.0, -0.0], [2.0, 3.0, 0.5]];
        for path in Isa::ALL.into_iter().filter(|p| p.available()) {
            for relu in [false, true] {
                let mut got = vec![f32::NAN; 3 * 4];
                post_on(
                    path,
                    [3, 0, 4],
                    &[],
                    &[],
                    &mut got,
                    RowPost { coef: &coef, relu },
                );
                let want: Vec<f32> = (0..12)
                    .map(|i| post_value(0.0, coef[i / 4], relu))
                    .collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "relu {relu} on {}", path.name());
                assert_eq!(got[0].to_bits(), (-0.0f32).to_bits());
                assert_eq!(got[4], if relu { 0.0 } else { -1.0 });
            }
            let short = std::panic::catch_unwind(|| {
                let post = RowPost {
                    coef: &coef[..2],
                    relu: false,
                };
                post_on(path, [3, 2, 4], &[0.0; 6], &[0.0; 8], &mut [0.0; 12], post)
            });
            assert!(short.is_err(), "a short epilogue on {}", path.name());
        }
    }

    #[test]
    fn leaves_c_outside_the_matrix_alone() {
        for path in Isa::ALL.into_iter().filter(|p| p.available()) {
            let (m, k, n) = (15, 9, 33);
            let a = rand_vec(m * k, 3);
            let b = rand_vec(k * n, 4);
            let mut c = vec![7.0; m * n + 5];
            gemm_on(path, m, k, n, &a, &b, false, &mut c, false);
            assert_eq!(&c[m * n..], &[7.0; 5], "{}", path.name());
        }
    }

    /// With A's rows `lda > k` and C's `ldc > n` apart (`sgemm_strided`, Winograd's tile-major
    /// operands), every level writes the dense call's rows bit for bit, accumulating too, and
    /// nothing between them; `k = 0` zeroes only the rows.
    #[test]
    fn strided_rows_equal_the_dense_rows_at_every_level() {
        for &(m, k, n) in &[
            (13, 300, 31),
            (7, 40, 47),
            (6, 3, 17),
            (4, 0, 7),
            (29, 11, 65),
        ] {
            let (lda, ldc) = (k + 5, n + 3);
            let a = rand_vec(m * k, 8);
            let b = rand_vec(k * n, 9);
            let mut sa = vec![f32::NAN; m * lda];
            for i in 0..m {
                sa[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
            }
            let init = rand_vec(m * ldc, 10);
            for path in Isa::ALL.into_iter().filter(|p| p.available()) {
                for accumulate in [false, true] {
                    let mut dense: Vec<f32> =
                        (0..m * n).map(|i| init[i / n * ldc + i % n]).collect();
                    gemm_on(path, m, k, n, &a, &b, false, &mut dense, accumulate);
                    let mut c = init.clone();
                    let len = (m - 1) * ldc + n;
                    gemm_strided_on(
                        path,
                        [m, k, n],
                        (&sa, lda),
                        &b,
                        false,
                        (&mut c[..len], ldc),
                        (accumulate, None),
                    );
                    for i in 0..m {
                        let what = format!(
                            "{} {m}x{k}x{n} accumulate {accumulate} row {i}",
                            path.name()
                        );
                        assert_eq!(c[i * ldc..i * ldc + n], dense[i * n..(i + 1) * n], "{what}");
                        assert_eq!(
                            c[i * ldc + n..(i + 1) * ldc],
                            init[i * ldc + n..(i + 1) * ldc],
                            "{what}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "sgemm strides shorter than the rows")]
    fn a_stride_shorter_than_a_row_panics() {
        let mut c = vec![0.0; 6];
        sgemm_strided(2, 3, 2, (&[0.0; 6], 2), &[0.0; 6], (&mut c, 2), false);
    }

    #[test]
    fn rows_do_not_depend_on_how_many_are_computed() {
        for path in [Isa::Avx512, Isa::Avx2] {
            if skipped(path) {
                continue;
            }
            for &(m, k, n) in &[(64, 300, 70), (20, 600, 1030), (7, 33, 10), (64, 4096, 10)] {
                let a = rand_vec(m * k, 5);
                let b = rand_vec(k * n, 6);
                for bt in [false, true] {
                    let mut all = vec![0.0; m * n];
                    gemm_on(path, m, k, n, &a, &b, bt, &mut all, false);
                    for i in [0, m / 2, m - 1] {
                        let mut one = vec![0.0; n];
                        gemm_on(path, 1, k, n, &a[i * k..], &b, bt, &mut one, false);
                        assert_eq!(
                            one,
                            all[i * n..(i + 1) * n],
                            "{} m={m} bt={bt}",
                            path.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "sgemm operand too short")]
    fn short_operand_panics() {
        let mut c = vec![0.0; 3];
        sgemm(2, 2, 2, &[0.0; 4], &[0.0; 4], &mut c, false);
    }
}
