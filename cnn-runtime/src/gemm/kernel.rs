//! The micro-kernels, generic over the SIMD vector type: one `MR×NR` tile of C from broadcast A
//! and vectors of B ([`tile`]), and an `R×Q` block of dot products of rows ([`dots`]).

use core::mem::MaybeUninit;

use crate::simd::Simd;

/// The widest tile, `NV·LANES`, that a partial write-back can buffer.
const MAX_NR: usize = 64;

/// A tile's row epilogue ([`RowPost`](super::RowPost)): the coefficients of the tile's first
/// row (one triple per row from there) and the ReLU flag.
pub(super) type TilePost = Option<(*const [f32; 3], bool)>;

/// Hints the `rows` rows of `width` floats of a C tile (row stride `rsc`) into cache, so that
/// they arrive while the k loop runs. Only a hint: any address is allowed and nothing is read.
#[inline(always)]
fn prefetch_tile<S: Simd>(s: S, c: *mut f32, rsc: usize, rows: usize, width: usize) {
    // LOOP over the tile's rows: its first and last element
    for i in 0..rows {
        let row = c.wrapping_add(i * rsc);
        s.prefetch(row);
        s.prefetch(row.wrapping_add(width - 1));
    }
}

/// `C[MR×nr] ← (C +) A[MR×kc] · B̃[kc×nr]`: `MR` rows of A broadcast against `NV` vectors of B
/// per step, `MR·NV` accumulators held in registers for the whole `kc` loop.
///
/// + `a`: A's top-left element, `MR` rows of stride `rsa`, `kc` contiguous floats of each read
/// + `b`: B micro-panel, `kc` rows of stride `rsb`, the first `NV·LANES` of each read
/// + `c`: the tile's top-left element, row stride `rsc`; `MR` rows of `nr ≤ NV·LANES` columns
///   written (read first when `load_c`)
/// + `post`: applied to each finished value (after C is added), `MR` triples read; `POST`
///   says whether there is one (a separate instantiation, so that the GEMMs without one keep
///   their code: the epilogue's branches cost up to 4% on short k)
///
/// # Safety
/// The pointers are valid for the reads and writes listed above.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the BLIS micro-kernel contract: two panels, one tile
pub(super) unsafe fn tile<S: Simd, const MR: usize, const NV: usize, const POST: bool>(
    s: S,
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
) {
    assert!(NV * S::LANES <= MAX_NR, "tile wider than MAX_NR");
    prefetch_tile(s, c, rsc, MR, NV * S::LANES);
    let mut acc = [[s.zero(); NV]; MR];
    let (mut a, mut b) = (a, b);
    // LOOP over k: one rank-1 update of the tile per step
    for _ in 0..kc {
        let mut bv = [s.zero(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            // SAFETY: `b` points at one of the `kc` rows, each valid for `NV·LANES` reads.
            *bv = unsafe { s.load(b.add(v * S::LANES)) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `a` points at one of the `kc` columns of `MR` readable rows.
            let ai = s.splat(unsafe { &*a.add(i * rsa) });
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = s.fmadd(ai, bv, *acc);
            }
        }
        // Wrapping: after the last step the pointers may leave the panels; they are not read.
        a = a.wrapping_add(1);
        b = b.wrapping_add(rsb);
    }
    let full = nr == NV * S::LANES;
    let mut load_c = load_c;
    // With `POST` false (no epilogue: `post` is `None`) none of this is compiled.
    if let (true, true, Some((coef, relu))) = (POST, full, post) {
        // `post_value`'s steps in its order, on the registers, after C is added when `load_c`:
        // one branch-free loop per step, so that each unrolls and `acc` stays in registers (a
        // loop over all steps with branches inside, or a `flatten`ed iterator, kept `acc` on
        // the stack through the k loop: the GEMM ran at half speed).
        if load_c {
            // LOOP over the tile's rows: add C
            for (i, acc) in acc.iter_mut().enumerate() {
                for (v, x) in acc.iter_mut().enumerate() {
                    // SAFETY: row `i < MR` holds `nr = NV·LANES` valid columns from `c`.
                    *x = s.add(
                        unsafe { s.load(c.wrapping_add(i * rsc + v * S::LANES)) },
                        *x,
                    );
                }
            }
            load_c = false;
        }
        // LOOP over the tile's rows: the affine steps
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the epilogue holds a triple for each of the tile's `MR` rows.
            let [add, scale, shift] = unsafe { *coef.add(i) };
            let (add, scale, shift) = (s.splat(&add), s.splat(&scale), s.splat(&shift));
            for x in acc.iter_mut() {
                *x = s.add(s.mul(s.add(*x, add), scale), shift);
            }
        }
        if relu {
            // LOOP over the tile's values: PyTorch's ReLU (`max(0, x)` keeps NaN and −0)
            for acc in acc.iter_mut() {
                for x in acc.iter_mut() {
                    *x = s.max(s.zero(), *x);
                }
            }
        }
    }
    if full {
        // LOOP over the tile's rows: write back whole vectors
        for (i, acc) in acc.iter().enumerate() {
            for (v, &x) in acc.iter().enumerate() {
                let p = c.wrapping_add(i * rsc + v * S::LANES);
                // SAFETY: row `i < MR` holds `nr = NV·LANES` valid columns from `c`.
                unsafe {
                    let x = if load_c { s.add(s.load(p), x) } else { x };
                    s.store(p, x);
                }
            }
        }
    } else {
        // A partial tile goes through a buffer, so that `acc` is only ever indexed by constants
        // and stays in registers. The buffer is not zeroed first: a zeroed one was (on one
        // compiler version) set up before the k loop of every tile, full ones included.
        let mut buf = [[MaybeUninit::<f32>::uninit(); MAX_NR]; MR];
        for (acc, buf) in acc.iter().zip(buf.iter_mut()) {
            for (v, &x) in acc.iter().enumerate() {
                // SAFETY: `buf` rows hold `MAX_NR ≥ NV·LANES` floats.
                unsafe { s.store(buf.as_mut_ptr().cast::<f32>().add(v * S::LANES), x) };
            }
        }
        // SAFETY: rows `i < MR` of C hold `nr` valid columns from `c`, an epilogue MR triples;
        // the first `NV·LANES ≥ nr` floats of each row of `buf` were written just above.
        unsafe { write_partial(&buf, c, rsc, nr, load_c, post) };
    }
}

/// `C[i, ..nr] ← (C +) buf[i, ..nr]` for every row of `buf`: the write-back of a partial tile,
/// kept out of line so that the kernels' hot loops stay small.
///
/// # Safety
/// `c` is valid for reads and writes of `buf.len()` rows of stride `rsc`, `nr ≤ MAX_NR` columns;
/// the first `nr` floats of each row of `buf` are initialised; an epilogue's pointer is valid
/// for `buf.len()` triples.
#[cold]
#[inline(never)]
unsafe fn write_partial(
    buf: &[[MaybeUninit<f32>; MAX_NR]],
    c: *mut f32,
    rsc: usize,
    nr: usize,
    load_c: bool,
    post: TilePost,
) {
    // LOOP over the tile's rows: add or copy `nr` columns, then the epilogue
    for (i, buf) in buf.iter().enumerate() {
        // SAFETY: the caller guarantees row `i` of C holds `nr` valid columns, and `c` is not
        // borrowed elsewhere while the kernel runs.
        let row = unsafe { core::slice::from_raw_parts_mut(c.add(i * rsc), nr) };
        // SAFETY: the caller initialised the first `nr ≤ MAX_NR` floats of the row.
        let buf = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<f32>(), nr) };
        if load_c {
            row.iter_mut().zip(buf).for_each(|(c, &x)| *c += x);
        } else {
            row.copy_from_slice(buf);
        }
        if let Some((coef, relu)) = post {
            // SAFETY: the caller guarantees a triple for each row.
            let coef = unsafe { *coef.add(i) };
            row.iter_mut()
                .for_each(|v| *v = super::post_value(*v, coef, relu));
        }
    }
}

/// `C[R×Q] ← (C +) A[R×k] · Bᵀ[k×Q]` where both A and B are read as rows (B is `[n×k]`): `R·Q`
/// dot products, `LANES` k-steps at a time, `R + Q` loads per `R·Q` FMAs.
///
/// + `a`: A's row `i`, `R` rows of stride `rsa`, `k` contiguous floats of each read
/// + `b`: B's row `j`, `Q` rows of stride `rsb`, `k` contiguous floats of each read
/// + `c`: `C[i, j]`, row stride `rsc`; `R` rows of `Q` columns written (read first when `load_c`)
///
/// # Safety
/// The pointers are valid for the reads and writes listed above.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // two row panels and one block
pub(super) unsafe fn dots<S: Simd, const R: usize, const Q: usize>(
    s: S,
    k: usize,
    a: *const f32,
    rsa: usize,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    load_c: bool,
) {
    let mut acc = [[s.zero(); Q]; R];
    let full = k - k % S::LANES;
    // LOOP over k, `LANES` steps at a time
    for p in (0..full).step_by(S::LANES) {
        let mut bv = [s.zero(); Q];
        for (q, bv) in bv.iter_mut().enumerate() {
            // SAFETY: row `q < Q` of B holds `k ≥ p + LANES` floats.
            *bv = unsafe { s.load(b.add(q * rsb + p)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `r < R` of A holds `k ≥ p + LANES` floats.
            let av = unsafe { s.load(a.add(r * rsa + p)) };
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = s.fmadd(av, bv, *acc);
            }
        }
    }
    // LOOP over the block: reduce the lanes, add the k tail, write back
    let mut lanes = [0.0f32; MAX_NR];
    for (r, acc) in acc.iter().enumerate() {
        for (q, &x) in acc.iter().enumerate() {
            // SAFETY: `lanes` holds `MAX_NR ≥ LANES` floats.
            unsafe { s.store(lanes.as_mut_ptr(), x) };
            let mut sum: f32 = lanes[..S::LANES].iter().sum();
            for p in full..k {
                // SAFETY: rows `r < R` of A and `q < Q` of B hold `k > p` floats.
                sum += unsafe { *a.add(r * rsa + p) * *b.add(q * rsb + p) };
            }
            let out = c.wrapping_add(r * rsc + q);
            // SAFETY: row `r < R` of C holds `Q > q` valid columns from `c`.
            unsafe { *out = if load_c { *out + sum } else { sum } };
        }
    }
}
