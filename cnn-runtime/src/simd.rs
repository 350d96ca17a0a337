//! Run-time choice of the instruction set for the element-wise and data-movement kernels.
//!
//! The crate is compiled for the baseline target, so a plain loop vectorises to SSE2 at best.
//! [`multiversion!`] compiles a kernel body three times, for AVX-512, AVX2+FMA and the
//! baseline, and calls the best one the CPU supports, detected once. LLVM does not contract
//! `a * b + c` into a fused multiply-add without fast-math flags, so all three versions return
//! the same bits.

use std::sync::OnceLock;

/// An instruction-set level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// The best level this CPU supports, detected once; `CNN_SIMD=avx2|baseline` (read once) caps
/// it, so that tests can run every version.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let detected = detect();
        match std::env::var("CNN_SIMD").as_deref() {
            Ok("baseline") => Isa::Baseline,
            Ok("avx2") if detected != Isa::Baseline => Isa::Avx2,
            _ => detected,
        }
    })
}

fn detect() -> Isa {
    {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }
}

/// Defines `fn name(args) -> ret { body }` that runs `body` compiled for the best [`isa`].
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::simd::isa() {
                    // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                    $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Evaluates `$body` with the type `$s` naming the best [`Simd`](crate::gemm::Simd)
/// implementation this CPU has (`Avx512`, `Avx2`, else `Scalar`), inside a function compiled
/// with that instruction set; `$body` sees the listed arguments and returns `()`. The body's
/// own `unsafe` blocks may rely on the CPU having `$s`'s features.
macro_rules! with_simd {
    ($s:ident => $body:block, ($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) {
                type $s = $crate::gemm::Avx512;
                $body
            }
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) {
                type $s = $crate::gemm::Avx2;
                $body
            }
            match $crate::simd::isa() {
                // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::simd::Isa::Baseline => {}
            }
        }
        {
            type $s = $crate::gemm::Scalar;
            $body
        }
    }};
}
pub(crate) use with_simd;
