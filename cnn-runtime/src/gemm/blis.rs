//! The BLIS loop nest around a micro-kernel: block C into `NC` columns (sized to the CPU's
//! L2, [`crate::tuning::gemm_nc`]), k into `KC` steps and
//! A into `MC` rows, pack each `KC×NC` block of B once into a thread-local buffer, and sweep
//! `MR×NR` tiles. A is read in place: the kernel broadcasts its elements, so packing it would
//! only copy the (constant) weights on every call.

use std::cell::Cell;

use super::kernel::TilePost;
use super::RowPost;
use crate::simd::Simd;

/// A micro-kernel and the block sizes that keep its panels in cache.
pub(super) trait Kernel {
    /// The vector token the kernel computes with.
    type S: Simd;
    /// Rows of a C tile (elements of A broadcast per k-step).
    const MR: usize;
    /// Columns of a C tile (vectors of packed B per k-step).
    const NR: usize;
    /// k-steps per packed block, the length of a micro-panel; also bounds how often a C tile
    /// is reloaded (once per `KC` steps).
    const KC: usize;
    /// Rows of A swept over one packed block of B: an `MC×KC` block of A stays in L2.
    const MC: usize;
    /// Rows of A per [`Kernel::dots`] block.
    const DR: usize;
    /// Rows of B per [`Kernel::dots`] block.
    const DQ: usize;

    /// `C[mr×nr] ← (C +) A[mr×kc] · B̃[kc×nr]` for `1 ≤ mr ≤ MR`, `1 ≤ nr ≤ NR`.
    ///
    /// + `a`: A's top-left element, `mr` rows of stride `rsa`, each with `kc` contiguous floats
    /// + `b`: B micro-panel, `kc` rows of stride `rsb`, each valid for `NR` reads
    /// + `c`: the tile's top-left element, row stride `rsc`, valid for `mr` rows of `nr` columns
    /// + `post`: a row epilogue applied to the finished values, its pointer valid for `mr` rows
    ///
    /// # Safety
    /// The pointers are valid as listed above.
    #[allow(clippy::too_many_arguments)] // the BLIS micro-kernel contract: two panels, one tile
    unsafe fn tile(
        s: Self::S,
        mr: usize,
        kc: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        nr: usize,
        load_c: bool,
        post: TilePost,
    );

    /// `C[r×q] ← (C +) A[r×k] · Bᵀ[k×q]` for `1 ≤ r ≤ DR`, `1 ≤ q ≤ DQ`, B stored `[n×k]`.
    ///
    /// + `a`: A's row `i`, `r` rows of stride `rsa`, each with `k` contiguous floats
    /// + `b`: B's row `j`, `q` rows of stride `rsb`, each with `k` contiguous floats
    /// + `c`: `C[i, j]`, row stride `rsc`, valid for `r` rows of `q` columns
    ///
    /// # Safety
    /// The pointers are valid as listed above.
    #[allow(clippy::too_many_arguments)] // two row panels and one block
    unsafe fn dots(
        s: Self::S,
        r: usize,
        q: usize,
        k: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        load_c: bool,
    );
}

thread_local! {
    /// The packed-B buffer, kept per thread so that steady-state calls do not allocate.
    static PACK_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `len` floats of `v` starting at a 64-byte boundary, growing `v` if needed.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + 16 {
        v.resize(len + 16, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(16);
    &mut v[off..off + len]
}

/// How many rows ahead `pack_b` prefetches B.
const PREFETCH_ROWS: usize = 4;

/// Hints row `p + PREFETCH_ROWS` of B (row stride `rsb`, `nc` columns) into cache: rows lie
/// `rsb` apart, too far for the hardware prefetcher to follow. Only a hint: any address is
/// allowed and nothing is read, so it changes speed, never a result.
#[inline(always)]
fn prefetch_ahead<S: Simd>(s: S, b: &[f32], p: usize, rsb: usize, nc: usize) {
    let ahead = b.as_ptr().wrapping_add((p + PREFETCH_ROWS) * rsb);
    for j in (0..nc).step_by(16) {
        s.prefetch(ahead.wrapping_add(j));
    }
}

/// Packs `kc` rows × `nc` columns of a row-major B (row stride `rsb`) into `NR`-column
/// micro-panels `dst[s·kc·NR + p·NR + j']` for column `j = s·NR + j'`, zero past column `nc`.
#[inline(always)]
fn pack_b<K: Kernel>(s: K::S, kc: usize, nc: usize, b: &[f32], rsb: usize, dst: &mut [f32]) {
    let full = nc / K::NR;
    // LOOP over k: one row of B streams into all micro-panels
    for p in 0..kc {
        let src = &b[p * rsb..p * rsb + nc];
        prefetch_ahead(s, b, p, rsb, nc);
        for s in 0..full {
            let at = s * kc * K::NR + p * K::NR;
            dst[at..at + K::NR].copy_from_slice(&src[s * K::NR..(s + 1) * K::NR]);
        }
        let rem = nc - full * K::NR;
        if rem > 0 {
            let at = full * kc * K::NR + p * K::NR;
            dst[at..at + rem].copy_from_slice(&src[full * K::NR..]);
            dst[at + rem..at + K::NR].fill(0.0);
        }
    }
}

/// `C[m×n] ← A[m×k] · B[k×n] (+ C if accumulate)` with B row-major (`(rsb, csb) = (n, 1)`; a
/// transposed B goes to [`gemm_dots`]); A and C row-major with their rows `lda ≥ k` and
/// `ldc ≥ n` apart (`a: (A, lda)`, `c: (C, ldc)`); with `(accumulate, post)` a row epilogue
/// ([`RowPost`], not with `accumulate`, at least `m` rows) applied to each finished value in
/// the tiles' registers.
///
/// Every element of C is one sequence of FMAs over k in order, restarted at the same `KC`
/// boundaries whatever `m` and `n` are, so row `i` of C is bit-identical however many rows are
/// computed with it (a conv split over output channels, a linear layer over a batch).
///
/// # Panics
/// If a slice is shorter than its matrix.
#[inline(always)]
pub(super) fn gemm<K: Kernel>(
    s: K::S,
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    (c, ldc): (&mut [f32], usize),
    (accumulate, post): (bool, Option<RowPost<'_>>),
) {
    assert!((rsb, csb) == (n, 1), "sgemm strides");
    if let Some(post) = post {
        assert!(
            post.coef.len() >= m && !accumulate,
            "sgemm row epilogue too short, or with accumulation"
        );
    }
    if super::degenerate([m, k, n], (a, lda), b, (c, ldc), accumulate) {
        return;
    }
    // Take full micro-panels straight from a row-major B instead of copying them when few row
    // tiles share each panel, or when all of B (≤ 256 KiB, rows ≤ 2 KiB) stays in L2 anyway.
    // Measured on Zen 4: 16x256x256 89 -> 115 GFLOP/s, 64x128x128 108 -> 115; 64x27x1024
    // (rows of 4 KiB) is faster packed.
    let direct_b = m <= 3 * K::MR || (k * n <= 1 << 16 && n <= 512);
    // k in equal blocks of at most KC, so that no block is a short tail
    let kc_max = k.div_ceil(k.div_ceil(K::KC));
    // Columns of B packed at once: the `KC×NC` block stays in half of this CPU's L2.
    let nc_block = crate::tuning::gemm_nc(crate::cache::caches().l2, K::KC, K::NR);
    let nc_max = nc_block.min(n).next_multiple_of(K::NR);
    let mut b_buf = PACK_B.take();
    let b_pack = aligned(
        &mut b_buf,
        if direct_b {
            kc_max * K::NR
        } else {
            kc_max * nc_max
        },
    );
    let c_ptr = c.as_mut_ptr();

    // LOOP over column blocks of C and B
    for jc in (0..n).step_by(nc_block) {
        let nc = nc_block.min(n - jc);
        // LOOP over k blocks
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            let load_c = accumulate || pc > 0;
            // The row epilogue on the last k block, once each value is complete.
            let post = post.filter(|_| pc + kc == k);
            let b_len = if direct_b {
                K::NR
            } else {
                nc.next_multiple_of(K::NR)
            };
            let b_block = &mut b_pack[..b_len * kc];
            if !direct_b {
                pack_b::<K>(s, kc, nc, &b[pc * n + jc..], n, b_block);
            }
            // LOOP over row blocks of C and A
            for ic in (0..m).step_by(K::MC) {
                let mc = K::MC.min(m - ic);
                // LOOP over NR-column micro-panels of B
                for jr in (0..nc).step_by(K::NR) {
                    let nr = K::NR.min(nc - jr);
                    let j = jc + jr;
                    let (b_panel, rs_panel) = if !direct_b {
                        (&b_block[jr * kc..(jr + K::NR) * kc], K::NR)
                    } else if nr == K::NR {
                        (&b[pc * n + j..], n)
                    } else {
                        let panel = &mut b_block[..kc * K::NR];
                        pack_b::<K>(s, kc, nr, &b[pc * n + j..], n, panel);
                        (&*panel, K::NR)
                    };
                    // LOOP over MR-row micro-panels of A
                    for ir in (0..mc).step_by(K::MR) {
                        let mr = K::MR.min(mc - ir);
                        let i = ic + ir;
                        // SAFETY: A rows `i..i + mr ≤ m` (`lda` apart),
                        // columns `pc..pc + kc ≤ k` lie inside `a` (asserted above). The B panel
                        // has `kc` rows of stride `rs_panel`, each with `NR` valid floats: packed
                        // ones by `pack_b`, direct ones because `j + NR ≤ n` and row
                        // `pc + kc − 1 < k` is inside `b` (asserted above). C rows `i..i + mr`
                        // (`ldc` apart) and columns `j..j + nr ≤ n` lie inside `c` (asserted above), a unique
                        // borrow that aliases neither `a` nor `b`. A row epilogue holds `m ≥ i + mr`
                        // rows (asserted above).
                        unsafe {
                            K::tile(
                                s,
                                mr,
                                kc,
                                a.as_ptr().add(i * lda + pc),
                                lda,
                                b_panel.as_ptr(),
                                rs_panel,
                                c_ptr.add(i * ldc + j),
                                ldc,
                                nr,
                                load_c,
                                post.map(|p| (p.coef[i..].as_ptr(), p.relu)),
                            );
                        }
                    }
                }
            }
        }
    }
    PACK_B.set(b_buf);
}

/// `C[m×n] ← A[m×k] · Bᵀ (+ C if accumulate)` for a `[n×k]` B as blocks of dot products, each
/// row of A against each row of B with no packing. Measured against packing B into micro-panels,
/// it is about as fast at batch 64 (`64×256×1000`) and 2–8× faster when B has few rows or A few, and
/// every `C[i, j]` is summed in one order whatever `m` is.
///
/// # Panics
/// If a slice is shorter than its matrix.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // sgemm's own signature plus the token
pub(super) fn gemm_dots<K: Kernel>(
    s: K::S,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    if super::degenerate([m, k, n], (a, k), b, (c, n), accumulate) {
        return;
    }
    let c_ptr = c.as_mut_ptr();
    // LOOP over row blocks of A and C
    for i in (0..m).step_by(K::DR) {
        let r = K::DR.min(m - i);
        // LOOP over row blocks of B, column blocks of C
        for j in (0..n).step_by(K::DQ) {
            let q = K::DQ.min(n - j);
            // SAFETY: A rows `i..i + r ≤ m`, B rows `j..j + q ≤ n` (each `k` floats) and C rows
            // `i..i + r`, columns `j..j + q` lie inside the slices (`degenerate` asserted it);
            // `c` is a unique borrow.
            unsafe {
                K::dots(
                    s,
                    r,
                    q,
                    k,
                    a.as_ptr().add(i * k),
                    k,
                    b.as_ptr().add(j * k),
                    k,
                    c_ptr.add(i * n + j),
                    n,
                    accumulate,
                );
            }
        }
    }
}
