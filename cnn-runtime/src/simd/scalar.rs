//! One `f32` lane in plain Rust: the tails of the vector loops, and CPUs without AVX2.

#[cfg(not(feature = "std"))]
use crate::math::Float as _;

use super::Simd;

/// The one-lane token; it needs no CPU feature, so anyone may create it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    type M = bool;
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Scalar
    }
    #[inline(always)]
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn splat(self, x: &f32) -> f32 {
        *x
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn fmadd(self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn max_fold(self, acc: f32, v: f32) -> f32 {
        if v > acc || v.is_nan() {
            v
        } else {
            acc
        }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(self, p: *const f32) -> (f32, f32) {
        // SAFETY: the caller guarantees two readable floats at `p`.
        unsafe { (*p, *p.add(1)) }
    }
    #[inline(always)]
    fn deinterleave(self, a: f32, b: f32) -> (f32, f32) {
        (a, b)
    }
    #[inline(always)]
    fn shift_in(self, prev: f32, _: f32) -> f32 {
        prev
    }
    #[inline(always)]
    fn prefetch(self, _: *const f32) {}
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable float at `p`.
        unsafe { *p }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> bool {
        lo == 0 && hi > 0
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, m: bool) -> f32 {
        if m {
            // SAFETY: the caller guarantees a readable float at `p` when lane 0 is in `m`.
            unsafe { *p }
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees one writable float at `p`.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, v: f32, n: usize) {
        if n > 0 {
            // SAFETY: the caller guarantees `n` (here 1) writable floats at `p`.
            unsafe { *p = v }
        }
    }
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut u16, v: f32) {
        // SAFETY: the caller guarantees one writable `u16` at `p`.
        unsafe { *p = super::to_bf16(v) }
    }
    #[inline(always)]
    unsafe fn store_bf16_pairs(self, p: *mut u32, even: f32, odd: f32) {
        let pair = super::to_bf16(even) as u32 | (super::to_bf16(odd) as u32) << 16;
        // SAFETY: the caller guarantees one writable `u32` at `p`.
        unsafe { *p = pair }
    }
    #[inline(always)]
    unsafe fn transpose_block(self, from: *const f32, _: usize, to: *mut f32, _: usize) {
        // SAFETY: the caller guarantees one readable float at `from`, one writable at `to`.
        unsafe { *to = *from }
    }
}
