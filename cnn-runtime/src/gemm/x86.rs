//! x86_64 micro-kernels: AVX-512F with a 6×64 tile (24 `zmm` accumulators) and AVX2+FMA with
//! a 6×16 tile (12 `ymm` accumulators), each behind one `#[target_feature]` wrapper that takes
//! the instruction set's token.
//!
//! The AVX-512 tile was chosen by measurement on a Zen 4 core (issue 4's bench machine), where
//! 6×64 beat 14×32 by 5–25% and 8×48 by more: it needs the fewest loads per FMA (10 per 24) and
//! fits every `N` of the benchmark nets' convolutions (multiples of 64 or ≥ 784).

use super::blis::{self, Kernel};
use super::kernel::{dots, tile, TilePost};
use super::RowPost;
use crate::simd::{Avx2, Avx512, Simd};

/// Calls `tile::<$simd, MR, $nv>` with `MR = $mr`, one instantiation per row count; `$args` is
/// the tuple of `tile`'s arguments.
macro_rules! tile_by_mr {
    ($simd:ty, $nv:literal, $mr:expr, $args:ident, [$($m:literal)*]) => {
        match $mr {
            $(
                // SAFETY: forwarded from `Kernel::tile` with `mr = $m`; the `$nv` vectors read
                // of each B row lie within its `NR` floats.
                $m => unsafe {
                    let (s, kc, a, rsa, b, rsb, c, rsc, nr, load_c, post) = $args;
                    if post.is_some() {
                        tile::<$simd, $m, $nv, true>(s, kc, a, rsa, b, rsb, c, rsc, nr, load_c, post)
                    } else {
                        tile::<$simd, $m, $nv, false>(s, kc, a, rsa, b, rsb, c, rsc, nr, load_c, None)
                    }
                },
            )*
            _ => unreachable!("tile rows out of range"),
        }
    };
}

/// Calls `dots::<$simd, R, Q>` with `(R, Q) = ($r, $q)`, one instantiation per block shape.
macro_rules! dots_by_rq {
    ($simd:ty, $r:expr, $q:expr, $args:tt, [$(($rr:literal, $qq:literal))*]) => {
        match ($r, $q) {
            $(
                // SAFETY: forwarded from `Kernel::dots` with `(r, q) = ($rr, $qq)`.
                ($rr, $qq) => unsafe { dots::<$simd, $rr, $qq> $args },
            )*
            _ => unreachable!("dot block out of range"),
        }
    };
}

/// The 16 `(r, q)` pairs of a 4×4 dot block.
macro_rules! dots_4x4 {
    ($simd:ty, $r:expr, $q:expr, $args:tt) => {
        dots_by_rq!(
            $simd,
            $r,
            $q,
            $args,
            [
                (4, 4)(4, 3)(4, 2)(4, 1)(3, 4)(3, 3)(3, 2)(3, 1)(2, 4)(2, 3)(2, 2)(2, 1)(1, 4)(
                    1, 3
                )(1, 2)(1, 1)
            ]
        )
    };
}

/// 6×64 tile: per k-step 4 loads of B, 6 broadcasts of A, 24 FMAs.
pub(super) struct Avx512Kernel;

impl Kernel for Avx512Kernel {
    type S = Avx512;
    const MR: usize = 6;
    const NR: usize = 64;
    const KC: usize = 256;
    const MC: usize = 24 * 6;
    const DR: usize = 4;
    const DQ: usize = 4;

    #[inline(always)]
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
    ) {
        let args = (s, kc, a, rsa, b, rsb, c, rsc, nr, load_c, post);
        // Only the vectors that hold some of the `nr` columns are computed.
        match nr.div_ceil(Avx512::LANES) {
            4 => tile_by_mr!(Avx512, 4, mr, args, [6 5 4 3 2 1]),
            3 => tile_by_mr!(Avx512, 3, mr, args, [6 5 4 3 2 1]),
            2 => tile_by_mr!(Avx512, 2, mr, args, [6 5 4 3 2 1]),
            1 => tile_by_mr!(Avx512, 1, mr, args, [6 5 4 3 2 1]),
            _ => unreachable!("tile columns out of range"),
        }
    }

    #[inline(always)]
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
    ) {
        dots_4x4!(Avx512, r, q, (s, k, a, rsa, b, rsb, c, rsc, load_c))
    }
}

/// 6×16 tile: per k-step 2 loads of B, 6 broadcasts of A, 12 FMAs.
pub(super) struct Avx2Kernel;

impl Kernel for Avx2Kernel {
    type S = Avx2;
    const MR: usize = 6;
    const NR: usize = 16;
    const KC: usize = 256;
    const MC: usize = 24 * 6;
    const DR: usize = 4;
    const DQ: usize = 4;

    #[inline(always)]
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
    ) {
        let args = (s, kc, a, rsa, b, rsb, c, rsc, nr, load_c, post);
        // Only the vectors that hold some of the `nr` columns are computed.
        match nr.div_ceil(Avx2::LANES) {
            2 => tile_by_mr!(Avx2, 2, mr, args, [6 5 4 3 2 1]),
            1 => tile_by_mr!(Avx2, 1, mr, args, [6 5 4 3 2 1]),
            _ => unreachable!("tile columns out of range"),
        }
    }

    #[inline(always)]
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
    ) {
        dots_4x4!(Avx2, r, q, (s, k, a, rsa, b, rsb, c, rsc, load_c))
    }
}

/// [`blis::gemm`] compiled for AVX-512F, the only feature its kernel uses; the token proves
/// it (and the rest of [`Isa::Avx512`](crate::simd::Isa::Avx512)).
#[target_feature(enable = "avx512f")]
pub(super) fn gemm_avx512(
    s: Avx512,
    mkn: [usize; 3],
    a: (&[f32], usize),
    b: &[f32],
    c: (&mut [f32], usize),
    post: (bool, Option<RowPost<'_>>),
) {
    let n = mkn[2];
    blis::gemm::<Avx512Kernel>(s, mkn, a, b, (n, 1), c, post)
}

/// [`blis::gemm`] compiled for AVX2 and FMA; the token proves them.
#[target_feature(enable = "avx2,fma")]
pub(super) fn gemm_avx2(
    s: Avx2,
    mkn: [usize; 3],
    a: (&[f32], usize),
    b: &[f32],
    c: (&mut [f32], usize),
    post: (bool, Option<RowPost<'_>>),
) {
    let n = mkn[2];
    blis::gemm::<Avx2Kernel>(s, mkn, a, b, (n, 1), c, post)
}

/// [`blis::gemm_dots`] (B transposed, a `Linear` weight) compiled for AVX-512F: a function of
/// its own, so that the register allocation of its 4×4 block of dot products does not depend
/// on the loop nest of [`gemm_avx512`].
#[target_feature(enable = "avx512f")]
pub(super) fn gemm_bt_avx512(
    s: Avx512,
    [m, k, n]: [usize; 3],
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    blis::gemm_dots::<Avx512Kernel>(s, m, k, n, a, b, c, accumulate)
}

/// [`blis::gemm_dots`] compiled for AVX2 and FMA, as [`gemm_bt_avx512`].
#[target_feature(enable = "avx2,fma")]
pub(super) fn gemm_bt_avx2(
    s: Avx2,
    [m, k, n]: [usize; 3],
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    blis::gemm_dots::<Avx2Kernel>(s, m, k, n, a, b, c, accumulate)
}
