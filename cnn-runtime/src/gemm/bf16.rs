//! bf16 GEMM with f32 accumulation: the multiplications of a network declared with
//! `Precision::Bf16` (Winograd's α² GEMMs, im2col convolutions, linear layers).
//!
//! Operands are rounded to bf16 (round to nearest even; subnormals flush to zero, NaN stays NaN)
//! and stored as **pairs**: one `u32` holds the bf16 values of two consecutive `k`, the even one
//! in the low half, which is the operand layout of AVX512_BF16's `vdpbf16ps`.
//!
//! + A is row-major pairs `[m, k₂]` with `k₂ = ⌈k/2⌉` (an odd `k` is padded with a zero);
//! + B is packed once into panels of [`NR`] columns, `[⌈n/NR⌉, k₂, NR]` ([`pack_b`]): the weights
//!   at load, or an im2col matrix per call.
//!
//! Every element of C is one chain of f32 roundings over the pairs in order:
//! `c ← c + a₂ₚ₊₁·b₂ₚ₊₁`, then `c ← c + a₂ₚ·b₂ₚ` (a product of two bf16 values is exact in
//! f32, so each step rounds once). That is `vdpbf16ps` bit for bit (checked on this CPU by
//! the tests when it has the instruction), and what the FMA paths compute at every level, so
//! every path ([`Bf16Path`]) gives the same bits; the level only changes the speed.

use std::borrow::Cow;
use std::boxed::Box;
use std::cell::Cell;
use std::vec::Vec;

use crate::simd::{bf16_path, Bf16Path, Isa, Scalar, Simd};
use crate::store::{to_line, LINE};

/// Rows of a tile of C at every level.
const MR: usize = 6;

#[cfg(test)]
use super::bf16_pack::{convert, pair};
pub(crate) use super::bf16_pack::{halves_mut, pack_b, packed_len, pairs, pairs_into, NR};
#[cfg(test)]
use crate::simd::to_bf16;

/// The f32 value of bf16 bits (exact).
#[cfg(test)]
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to bf16 and back: what a bf16 operand contributes.
#[cfg(test)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// f32 scratch as `u32` pairs over the same bytes (a kernel keeps its bf16 operands in the
/// f32 scratch it is given).
pub(crate) fn f32_as_pairs(v: &[f32]) -> &[u32] {
    // SAFETY: `u32` has the size and alignment of `f32` and every bit pattern is valid; the
    // result covers the same bytes and borrows `v`.
    unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<u32>(), v.len()) }
}

/// [`f32_as_pairs`], mutable.
pub(crate) fn f32_as_pairs_mut(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: as in `f32_as_pairs`; any bits written through the result are a valid `f32`
    // too, and the result reborrows `v` uniquely.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u32>(), v.len()) }
}

/// A way to compute `acc + a₂ₚ₊₁·b₂ₚ₊₁ + a₂ₚ·b₂ₚ` on vectors of pairs, in that order, rounding
/// after each addition.
trait Dot: Copy {
    /// The f32 vector type the accumulators live in.
    type S: Simd;
    /// A vector of `LANES` pairs.
    type P: Copy;
    /// The f32 token.
    fn simd(self) -> Self::S;
    /// `LANES` pairs from `p`.
    ///
    /// # Safety
    /// `p` is valid for `LANES` reads.
    unsafe fn load(self, p: *const u32) -> Self::P;
    /// The pair at `p` in every lane.
    ///
    /// # Safety
    /// `p` is valid for one read.
    unsafe fn splat(self, p: *const u32) -> Self::P;
    /// `acc + a.odd·b.odd`, rounded, `+ a.even·b.even`, rounded, lane by lane.
    fn dot(self, acc: <Self::S as Simd>::V, a: Self::P, b: Self::P) -> <Self::S as Simd>::V;
}

/// Scalar pairs through two `mul_add`s (exact products, one rounding each).
#[derive(Clone, Copy)]
struct ScalarDot;

/// The two halves of a pair as f32: `(even, odd)`.
#[inline(always)]
fn halves(p: u32) -> (f32, f32) {
    (f32::from_bits(p << 16), f32::from_bits(p & 0xffff_0000))
}

impl Dot for ScalarDot {
    type S = Scalar;
    type P = u32;
    #[inline(always)]
    fn simd(self) -> Scalar {
        Scalar
    }
    #[inline(always)]
    unsafe fn load(self, p: *const u32) -> u32 {
        // SAFETY: the caller guarantees one readable `u32`.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn splat(self, p: *const u32) -> u32 {
        // SAFETY: as `load`.
        unsafe { *p }
    }
    #[inline(always)]
    fn dot(self, acc: f32, a: u32, b: u32) -> f32 {
        let ((ae, ao), (be, bo)) = (halves(a), halves(b));
        // The products are exact, so `acc + a·b` rounds once, as a fused multiply-add does.
        let acc = acc + ao * bo;
        acc + ae * be
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::Dot;
    use crate::simd::{Avx2, Avx512, Simd};

    /// AVX-512F: the halves of each pair as two f32 vectors, two FMAs.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512Fma(pub(super) Avx512);

    /// AVX512_BF16: one `vdpbf16ps` per vector of pairs.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512Dot(pub(super) Avx512);

    /// AVX2 + FMA: the halves of each pair as two f32 vectors, two FMAs.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2Fma(pub(super) Avx2);

    /// The mask of a pair's odd (high) half.
    const HIGH: i32 = 0xffff_0000_u32 as i32;

    impl Dot for Avx512Fma {
        type S = Avx512;
        type P = __m512i;
        #[inline(always)]
        fn simd(self) -> Avx512 {
            self.0
        }
        #[inline(always)]
        unsafe fn load(self, p: *const u32) -> __m512i {
            // SAFETY: the token proves AVX-512F; the caller guarantees 16 readable `u32`.
            unsafe { _mm512_loadu_si512(p.cast()) }
        }
        #[inline(always)]
        unsafe fn splat(self, p: *const u32) -> __m512i {
            // SAFETY: the token proves AVX-512F; the caller guarantees one readable `u32`.
            unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
        }
        #[inline(always)]
        fn dot(self, acc: __m512, a: __m512i, b: __m512i) -> __m512 {
            // SAFETY: the token proves AVX-512F.
            unsafe {
                let high = _mm512_set1_epi32(HIGH);
                let (ao, bo) = (_mm512_and_si512(a, high), _mm512_and_si512(b, high));
                let (ae, be) = (_mm512_slli_epi32::<16>(a), _mm512_slli_epi32::<16>(b));
                let acc = _mm512_fmadd_ps(_mm512_castsi512_ps(ao), _mm512_castsi512_ps(bo), acc);
                _mm512_fmadd_ps(_mm512_castsi512_ps(ae), _mm512_castsi512_ps(be), acc)
            }
        }
    }

    impl Dot for Avx512Dot {
        type S = Avx512;
        type P = __m512i;
        #[inline(always)]
        fn simd(self) -> Avx512 {
            self.0
        }
        #[inline(always)]
        unsafe fn load(self, p: *const u32) -> __m512i {
            // SAFETY: the caller's guarantee, passed on (the same loads as the FMA path).
            unsafe { Avx512Fma(self.0).load(p) }
        }
        #[inline(always)]
        unsafe fn splat(self, p: *const u32) -> __m512i {
            // SAFETY: as `load`.
            unsafe { Avx512Fma(self.0).splat(p) }
        }
        #[inline(always)]
        fn dot(self, acc: __m512, a: __m512i, b: __m512i) -> __m512 {
            // SAFETY: this token is only made by `gemm_dot`, whose `target_feature` includes
            // avx512bf16 and which runs only where `Bf16Path::Dot` was detected.
            unsafe {
                _mm512_dpbf16_ps(
                    acc,
                    core::mem::transmute::<__m512i, __m512bh>(a),
                    core::mem::transmute::<__m512i, __m512bh>(b),
                )
            }
        }
    }

    impl Dot for Avx2Fma {
        type S = Avx2;
        type P = __m256i;
        #[inline(always)]
        fn simd(self) -> Avx2 {
            self.0
        }
        #[inline(always)]
        unsafe fn load(self, p: *const u32) -> __m256i {
            // SAFETY: the token proves AVX2; the caller guarantees 8 readable `u32`.
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
        #[inline(always)]
        unsafe fn splat(self, p: *const u32) -> __m256i {
            // SAFETY: the token proves AVX2; the caller guarantees one readable `u32`.
            unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
        }
        #[inline(always)]
        fn dot(self, acc: __m256, a: __m256i, b: __m256i) -> __m256 {
            // SAFETY: the token proves AVX2 and FMA.
            unsafe {
                let high = _mm256_set1_epi32(HIGH);
                let (ao, bo) = (_mm256_and_si256(a, high), _mm256_and_si256(b, high));
                let (ae, be) = (_mm256_slli_epi32::<16>(a), _mm256_slli_epi32::<16>(b));
                let acc = _mm256_fmadd_ps(_mm256_castsi256_ps(ao), _mm256_castsi256_ps(bo), acc);
                _mm256_fmadd_ps(_mm256_castsi256_ps(ae), _mm256_castsi256_ps(be), acc)
            }
        }
    }

    /// [`super::gemm_with`] with `vdpbf16ps`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    pub(super) unsafe fn gemm_dot(g: super::Gemm<'_>, c: &mut [f32]) {
        // SAFETY: the caller guarantees AVX-512, the token's features.
        let s = unsafe { Avx512::new_unchecked() };
        super::gemm_with::<Avx512Dot, 4>(Avx512Dot(s), g, c)
    }

    /// [`super::gemm_with`] with AVX-512F FMAs.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn gemm_avx512(g: super::Gemm<'_>, c: &mut [f32]) {
        // SAFETY: the caller guarantees AVX-512, the token's features.
        let s = unsafe { Avx512::new_unchecked() };
        super::gemm_with::<Avx512Fma, 4>(Avx512Fma(s), g, c)
    }

    /// [`super::gemm_with`] with AVX2 FMAs.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2(g: super::Gemm<'_>, c: &mut [f32]) {
        // SAFETY: the caller guarantees AVX2 and FMA, the token's features.
        let s = unsafe { Avx2::new_unchecked() };
        super::gemm_with::<Avx2Fma, 2>(Avx2Fma(s), g, c)
    }
}

/// Where B comes from.
#[derive(Clone, Copy)]
pub(crate) enum B<'a> {
    /// Already packed by [`pack_b`] (weights).
    Packed(&'a [u32]),
    /// f32, element `(p, j)` at `b[p·rsb + j·csb]`, packed one panel at a time per call.
    F32(&'a [f32], (usize, usize)),
    /// Written one panel at a time by the function: `fill(j0, panel)` writes the panel of
    /// columns `j0..j0 + NR` in [`pack_b`]'s layout (`k₂` rows of [`NR`] pairs, zero past
    /// row `k` and column `n`): a B that is never whole in memory (the direct convolution's
    /// taps, gathered from its input).
    Fill(&'a (dyn Fn(usize, &mut [u32]) + Sync)),
}

pub(crate) use super::RowPost;

/// One product `C[m×n] ← (C +) A·B`, C row-major with row stride `n`.
#[derive(Clone, Copy)]
pub(crate) struct Gemm<'a> {
    m: usize,
    k: usize,
    n: usize,
    a: &'a [u32],
    b: B<'a>,
    /// A's row stride in pairs (≥ ⌈k/2⌉).
    lda: usize,
    /// C's row stride (≥ n).
    ldc: usize,
    accumulate: bool,
    /// Applied to each finished value (never with `accumulate`).
    post: Option<RowPost<'a>>,
}

impl<'a> Gemm<'a> {
    /// Grows `buf` (kept per thread) to hold a panel that [`panel`](Self::panel) packs or
    /// fills there.
    fn panel_room(&self, buf: &mut Vec<u32>) {
        let len = pairs(self.k) * NR + LINE - 1;
        if matches!(self.b, B::F32(..) | B::Fill(_)) && buf.len() < len {
            buf.resize(len, 0);
        }
    }

    /// Panel `jp` of B ([`NR`] columns, `k₂` rows of pairs): the packed one where it is, or
    /// packed or filled into `buf` (grown by [`panel_room`](Self::panel_room)) from a cache
    /// line's start.
    fn panel<'b>(&self, jp: usize, buf: &'b mut [u32]) -> &'b [u32]
    where
        'a: 'b,
    {
        let k2 = pairs(self.k);
        let at = to_line(buf);
        match self.b {
            B::Packed(b) => &b[jp * k2 * NR..(jp + 1) * k2 * NR],
            B::F32(b, (rsb, csb)) => {
                let cols = NR.min(self.n - jp * NR);
                let panel = &mut buf[at..at + k2 * NR];
                pack_b(self.k, cols, &b[jp * NR * csb..], (rsb, csb), panel);
                panel
            }
            B::Fill(fill) => {
                let panel = &mut buf[at..at + k2 * NR];
                fill(jp * NR, panel);
                panel
            }
        }
    }
}

thread_local! {
    /// One packed panel of an f32 B, kept per thread so that steady-state calls do not allocate.
    static PANEL: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// An A operand converted to pairs by [`with_pairs`].
    static PAIRS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// Calls `f` with the rows `[rows, k]` of `src` as pairs ([`pairs_into`]), in a buffer kept
/// per thread (no allocation in steady state).
pub(crate) fn with_pairs<R>(src: &[f32], rows: usize, k: usize, f: impl FnOnce(&[u32]) -> R) -> R {
    let len = rows * pairs(k);
    let mut buf = PAIRS.take();
    if buf.len() < len + LINE - 1 {
        buf.resize(len + LINE - 1, 0);
    }
    let at = to_line(&buf);
    pairs_into(src, rows, k, &mut buf[at..at + len]);
    let r = f(&buf[at..at + len]);
    PAIRS.set(buf);
    r
}

/// A copy of a weight in the bf16 GEMM's layout: made on first use, or laid out at compile
/// time. A made copy lives in a boxed cell that only a `&mut` method creates
/// ([`Cache::enable`]), so that a layer without one has no interior mutability and can sit in
/// a constant (an embedded network); such a layer makes its copy on every call, unless the
/// `cnn!` macro gave it one in static data ([`Cache::set_fixed`]). A cache: two always compare
/// equal, and a clone starts empty, with a cell (or shares the static copy).
#[derive(Debug, Default)]
pub(crate) struct Cache(Slot);

/// Where a [`Cache`]'s copy is.
#[derive(Debug, Default)]
enum Slot {
    /// Nowhere: made on every call.
    #[default]
    None,
    /// Made on first use, then kept.
    Cell(Box<std::sync::OnceLock<Lines>>),
    /// In static data, made at compile time.
    Static(&'static [u32]),
}

impl Clone for Cache {
    /// An empty cache with its cell (a clone of a constant converts once), or the same static
    /// copy.
    fn clone(&self) -> Self {
        match self.0 {
            Slot::Static(w) => Cache(Slot::Static(w)),
            _ => Cache(Slot::Cell(Box::default())),
        }
    }
}

impl PartialEq for Cache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Cache {
    /// No cell: the copy is made on every call until [`enable`](Self::enable).
    pub(crate) const EMPTY: Cache = Cache(Slot::None);

    /// Takes the copy made at compile time, in static data, in place of none or another
    /// static one (a constant's).
    ///
    /// # Panics
    /// If the cache has a cell (it was enabled: not a constant's).
    pub(crate) const fn set_fixed(&mut self, w: &'static [u32]) {
        assert!(
            !matches!(self.0, Slot::Cell(_)),
            "bf16 weights made ahead of time are for constants"
        );
        // Neither `None` nor `Static` owns anything: nothing is leaked.
        core::mem::forget(core::mem::replace(&mut self.0, Slot::Static(w)));
    }

    /// Gives the cache its cell, so that the copy is made once (a static copy stays).
    pub(crate) fn enable(&mut self) {
        if let Slot::None = self.0 {
            self.0 = Slot::Cell(Box::default());
        }
    }

    /// The copy, made by `make` if there is none yet (every time without a cell).
    pub(crate) fn get(&self, make: impl FnOnce() -> Vec<u32>) -> Cow<'_, [u32]> {
        match &self.0 {
            Slot::Static(w) => Cow::Borrowed(w),
            Slot::Cell(cell) => Cow::Borrowed(cell.get_or_init(|| Lines::new(make())).get()),
            Slot::None => Cow::Owned(make()),
        }
    }

    /// Whether the copy is kept (a cell or static data), not made on every call.
    pub(crate) fn keeps(&self) -> bool {
        !matches!(self.0, Slot::None)
    }

    /// Drops the copy (the weight changed): a static copy is replaced by a cell.
    pub(crate) fn clear(&mut self) {
        match &mut self.0 {
            Slot::Cell(cell) => **cell = std::sync::OnceLock::new(),
            Slot::Static(_) => self.0 = Slot::Cell(Box::default()),
            Slot::None => {}
        }
    }
}

/// A kept copy, from a cache line's start ([`crate::store::LINE`]): the tiles load B from it in
/// place.
#[derive(Debug)]
pub(crate) struct Lines {
    buf: Vec<u32>,
    at: usize,
}

impl Lines {
    /// `v` as it is if it starts a line, else copied to one that does.
    pub(crate) fn new(v: Vec<u32>) -> Self {
        if to_line(&v) == 0 {
            return Lines { buf: v, at: 0 };
        }
        let mut buf = Vec::with_capacity(v.len() + LINE - 1);
        let at = to_line(buf.spare_capacity_mut());
        buf.resize(at, 0);
        buf.extend_from_slice(&v);
        Lines { buf, at }
    }

    /// The copy.
    pub(crate) fn get(&self) -> &[u32] {
        &self.buf[self.at..]
    }
}

/// `C[m×n] ← A·B (+ C if accumulate)` with A as pairs `[m, ⌈k/2⌉]` ([`pairs_into`]) and f32
/// accumulation, on the path [`bf16_path`] picks; every path gives the same bits. Row `i` of C
/// does not depend on `m`.
///
/// # Panics
/// If a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)] // the GEMM's own signature
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[u32],
    b: B<'_>,
    c: &mut [f32],
    accumulate: bool,
) {
    gemm_strided(m, k, n, (a, pairs(k)), b, (c, n), accumulate)
}

/// `C[m×n] ← post(A·B)`: [`gemm`] with each value of row `i` passed through `post`'s
/// `coef[i]` in registers before it is stored ([`RowPost`]).
///
/// # Panics
/// If a slice is shorter than its matrix or `post` has fewer than `m` rows.
pub(crate) fn gemm_post(
    m: usize,
    k: usize,
    n: usize,
    a: &[u32],
    b: B<'_>,
    c: &mut [f32],
    post: RowPost<'_>,
) {
    let g = Gemm {
        m,
        k,
        n,
        a,
        b,
        lda: pairs(k),
        ldc: n,
        accumulate: false,
        post: Some(post),
    };
    gemm_on(bf16_path(), g, c)
}

/// [`gemm_post`] with C's rows `ldc ≥ n` values apart (`c: (C, ldc)`); the values between
/// rows are neither read nor written.
///
/// # Panics
/// As [`gemm_post`], and if `ldc < n`.
pub(crate) fn gemm_post_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[u32],
    b: B<'_>,
    (c, ldc): (&mut [f32], usize),
    post: RowPost<'_>,
) {
    let g = Gemm {
        m,
        k,
        n,
        a,
        b,
        lda: pairs(k),
        ldc,
        accumulate: false,
        post: Some(post),
    };
    gemm_on(bf16_path(), g, c)
}

/// [`gemm`] with A's rows `lda ≥ ⌈k/2⌉` pairs apart and C's rows `ldc ≥ n` values apart
/// (`a: (A, lda)`, `c: (C, ldc)`); the values between rows are neither read nor written.
///
/// # Panics
/// If a slice is shorter than its matrix, or a stride shorter than its row.
#[allow(clippy::too_many_arguments)] // the GEMM's own signature
pub(crate) fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    (a, lda): (&[u32], usize),
    b: B<'_>,
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) {
    gemm_on(
        bf16_path(),
        Gemm {
            m,
            k,
            n,
            a,
            b,
            lda,
            ldc,
            accumulate,
            post: None,
        },
        c,
    )
}

/// [`gemm`] on a given path.
///
/// # Panics
/// If a slice is shorter than its matrix or the CPU lacks the path's features.
fn gemm_on(path: Bf16Path, g: Gemm<'_>, c: &mut [f32]) {
    let (k2, n) = (pairs(g.k), g.n);
    assert!(
        g.ldc >= n && g.lda >= k2,
        "bf16 gemm stride shorter than its rows"
    );
    let rows = |ld: usize, len: usize| if g.m == 0 { 0 } else { (g.m - 1) * ld + len };
    assert!(
        g.a.len() >= rows(g.lda, k2) && c.len() >= rows(g.ldc, n),
        "bf16 gemm operand too short"
    );
    if let Some(post) = g.post {
        assert!(
            post.coef.len() >= g.m && !g.accumulate,
            "bf16 gemm row epilogue too short, or with accumulation"
        );
    }
    match g.b {
        B::Packed(b) => assert!(b.len() >= packed_len(g.k, n), "bf16 packed B too short"),
        B::F32(b, (rsb, csb)) => assert!(
            g.k == 0 || n == 0 || b.len() > (g.k - 1) * rsb + (n - 1) * csb,
            "bf16 B operand too short"
        ),
        B::Fill(_) => {}
    }
    if g.m == 0 || n == 0 {
        return;
    }
    if g.k == 0 {
        if !g.accumulate {
            // LOOP over rows of C
            for (i, row) in c.chunks_mut(g.ldc).take(g.m).enumerate() {
                let v = g.post.map_or(0.0, |p| p.apply(i, 0.0));
                row[..n].fill(v);
            }
        }
        return;
    }
    #[cfg(test)]
    crate::simd::testing::note_bf16(path);
    match path {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        Bf16Path::Amx => {
            assert!(crate::simd::amx_available(), "AMX tiles unavailable");
            // SAFETY: asserted just above: AMX-BF16 with the permission, AVX-512 and
            // AVX512_BF16; the operands passed the checks above, and `m, n, k > 0`.
            unsafe { amx::gemm_amx(g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Bf16Path::Dot => {
            assert!(crate::simd::bf16_dot_available(), "vdpbf16ps unavailable");
            // SAFETY: asserted just above: AVX-512 and AVX512_BF16.
            unsafe { x86::gemm_dot(g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Bf16Path::Fma(Isa::Avx512) => {
            assert!(Isa::Avx512.available(), "avx512 unavailable");
            // SAFETY: asserted just above.
            unsafe { x86::gemm_avx512(g, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Bf16Path::Fma(Isa::Avx2) => {
            assert!(Isa::Avx2.available(), "avx2 unavailable");
            // SAFETY: asserted just above.
            unsafe { x86::gemm_avx2(g, c) }
        }
        _ => gemm_with::<ScalarDot, 16>(ScalarDot, g, c),
    }
}

/// The loop nest: panel by panel of B (packed here when it is f32), tiles of `MR` rows by
/// `NV·LANES` columns. `NV·LANES` divides [`NR`].
#[inline(always)]
fn gemm_with<D: Dot, const NV: usize>(d: D, g: Gemm<'_>, c: &mut [f32]) {
    let (m, k2, n) = (g.m, pairs(g.k), g.n);
    let width = NV * D::S::LANES;
    debug_assert_eq!(NR % width, 0);
    let mut buf = PANEL.take();
    g.panel_room(&mut buf);
    let c_ptr = c.as_mut_ptr();
    // LOOP over panels of B
    for jp in 0..n.div_ceil(NR) {
        let panel = g.panel(jp, &mut buf);
        // LOOP over column strips of the panel
        for j0 in (jp * NR..(jp * NR + NR).min(n)).step_by(width) {
            let nr = width.min(n - j0);
            // Only the vectors that hold some of the `nr` columns are computed (a narrow B, as
            // a classifier's 10 outputs, would otherwise cost a whole strip).
            let vectors = nr.div_ceil(D::S::LANES);
            let b_ptr = panel[j0 - jp * NR..].as_ptr();
            // LOOP over row tiles of A and C
            for i in (0..m).step_by(MR) {
                let mr = MR.min(m - i);
                let args = (
                    d,
                    k2,
                    g.a[i * g.lda..].as_ptr(),
                    g.lda,
                    b_ptr,
                    c_ptr.wrapping_add(i * g.ldc + j0),
                    g.ldc,
                    nr,
                    g.accumulate,
                    g.post.map(|p| (p.coef[i..].as_ptr(), p.relu)),
                );
                // SAFETY: A rows `i..i + mr ≤ m` (`lda` apart) hold `k₂` pairs each (asserted in `gemm_on`);
                // the strip has `k₂` rows of `NR` pairs with `j0 − jp·NR + width ≤ NR` readable
                // from `b_ptr`; C rows `i..i + mr` (`ldc` apart), columns `j0..j0 + nr ≤ n` lie
                // inside `c` (asserted: `(m − 1)·ldc + n` values), a unique borrow; a row
                // epilogue has `m` rows (asserted), so `mr` from row `i`.
                unsafe {
                    match vectors {
                        1 => tile_rows::<D, 1>(mr, args),
                        2 if NV > 2 => tile_rows::<D, 2>(mr, args),
                        3 if NV > 3 => tile_rows::<D, 3>(mr, args),
                        _ => tile_rows::<D, NV>(mr, args),
                    }
                }
            }
        }
    }
    PANEL.set(buf);
}

/// [`tile`] with `R = mr` rows (1 to 6) and `V` vectors of columns.
///
/// # Safety
/// As [`tile`]'s, with `nr ≤ V·LANES`.
#[inline(always)]
unsafe fn tile_rows<D: Dot, const V: usize>(mr: usize, args: TileArgs<D>) {
    // SAFETY: the caller's guarantee, for each row count.
    unsafe {
        match mr {
            6 => tile::<D, 6, V>(args),
            5 => tile::<D, 5, V>(args),
            4 => tile::<D, 4, V>(args),
            3 => tile::<D, 3, V>(args),
            2 => tile::<D, 2, V>(args),
            _ => tile::<D, 1, V>(args),
        }
    }
}

/// A tile's arguments: the token, `k₂`, A's first row and its stride, B's strip, C's tile and
/// its stride, the columns to write, whether to add to C, and the row epilogue's coefficients
/// from the tile's first row with its ReLU flag ([`RowPost`]).
type TileArgs<D> = (
    D,
    usize,
    *const u32,
    usize,
    *const u32,
    *mut f32,
    usize,
    usize,
    bool,
    Option<(*const [f32; 3], bool)>,
);

/// `C[R×nr] ← (C +) A[R×k₂] · B[k₂×NV·LANES]` with `R·NV` accumulators in registers over the
/// whole `k₂` loop (B's strip rows lie [`NR`] pairs apart).
///
/// # Safety
/// `a` is valid for `R` rows of stride `rsa` with `k₂` pairs; `b` for `k₂` rows of `NV·LANES`
/// pairs, `NR` apart; `c` for `R` rows of stride `rsc` and `nr ≤ NV·LANES` columns; a row
/// epilogue's pointer for `R` triples.
#[inline(always)]
unsafe fn tile<D: Dot, const R: usize, const NV: usize>(
    (d, k2, a, rsa, b, c, rsc, nr, load_c, post): TileArgs<D>,
) {
    let s = d.simd();
    let lanes = D::S::LANES;
    let mut acc = [[s.zero(); NV]; R];
    let (mut a, mut b) = (a, b);
    // LOOP over pairs of k
    for _ in 0..k2 {
        // SAFETY: `b` points at one of the `k₂` rows of the strip, each with `NV·LANES` pairs.
        let bv: [D::P; NV] = core::array::from_fn(|v| unsafe { d.load(b.add(v * lanes)) });
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `r < R` of A holds `k₂` pairs; `a` is at one of them.
            let ar = unsafe { d.splat(a.add(r * rsa)) };
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = d.dot(*acc, ar, bv);
            }
        }
        a = a.wrapping_add(1);
        b = b.wrapping_add(NR);
    }
    if let Some((coef, relu)) = post {
        // LOOP over the tile's rows: `RowPost`'s steps, in its order
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the epilogue holds a triple for each of the tile's `R` rows.
            let [add, scale, shift] = unsafe { *coef.add(r) };
            let (add, scale, shift) = (s.splat(&add), s.splat(&scale), s.splat(&shift));
            for x in acc.iter_mut() {
                let y = s.add(s.mul(s.add(*x, add), scale), shift);
                *x = if relu { s.max(s.zero(), y) } else { y };
            }
        }
    }
    if nr == NV * lanes {
        // LOOP over the tile's rows: whole vectors straight to C
        for (r, acc) in acc.iter().enumerate() {
            for (v, &x) in acc.iter().enumerate() {
                let at = c.wrapping_add(r * rsc + v * lanes);
                // SAFETY: row `r < R` of C holds `nr = NV·LANES` valid columns from `c`.
                unsafe { s.store(at, if load_c { s.add(s.load(at), x) } else { x }) };
            }
        }
        return;
    }
    let mut row = [0.0f32; NR];
    // LOOP over the tile's rows: through a buffer, then the `nr` valid columns
    for (r, acc) in acc.iter().enumerate() {
        for (v, &x) in acc.iter().enumerate() {
            // SAFETY: `row` holds `NR ≥ NV·LANES` floats.
            unsafe { s.store(row.as_mut_ptr().add(v * lanes), x) };
        }
        // SAFETY: row `r < R` of C holds `nr` valid columns from `c`, borrowed by no one else.
        let out = unsafe { core::slice::from_raw_parts_mut(c.add(r * rsc), nr) };
        if load_c {
            out.iter_mut().zip(&row).for_each(|(o, &x)| *o += x);
        } else {
            out.copy_from_slice(&row[..nr]);
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod amx;
#[cfg(test)]
mod tests;
