//! The floating-point functions `core` lacks. With `std` the kernels call the inherent methods
//! (`f32::exp`, …); without it, files that need them import [`Float`], whose methods of the
//! same names call musl's libm (the `libm` crate), so the kernel code reads the same either
//! way. (Inherent methods win over trait methods, so with `std` the trait is not used.)

/// `exp`, `tanh`, `sqrt`, `floor` and `mul_add` for `f32` and `f64` without `std`.
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) trait Float: Sized {
    /// `eˣ`.
    fn exp(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The square root, correctly rounded (IEEE 754), as `std`'s.
    fn sqrt(self) -> Self;
    /// The largest integer not above `self`.
    fn floor(self) -> Self;
    /// `self·a + b` with one rounding.
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Float for f32 {
    fn exp(self) -> f32 {
        libm::expf(self)
    }
    fn tanh(self) -> f32 {
        libm::tanhf(self)
    }
    fn sqrt(self) -> f32 {
        libm::sqrtf(self)
    }
    fn floor(self) -> f32 {
        libm::floorf(self)
    }
    fn mul_add(self, a: f32, b: f32) -> f32 {
        libm::fmaf(self, a, b)
    }
}

impl Float for f64 {
    fn exp(self) -> f64 {
        libm::exp(self)
    }
    fn tanh(self) -> f64 {
        libm::tanh(self)
    }
    fn sqrt(self) -> f64 {
        libm::sqrt(self)
    }
    fn floor(self) -> f64 {
        libm::floor(self)
    }
    fn mul_add(self, a: f64, b: f64) -> f64 {
        libm::fma(self, a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::Float;

    /// The libm functions `no_std` builds use agree with `std`'s: `sqrt`, `floor` and
    /// `mul_add` exactly (all are correctly rounded), `exp` and `tanh` within 2 ulp.
    #[test]
    fn libm_agrees_with_std() {
        let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
        for i in -2000..2000 {
            let x = i as f32 * 0.0173 + 0.001;
            assert_eq!(Float::sqrt(x.abs()), x.abs().sqrt(), "sqrt {x}");
            assert_eq!(Float::floor(x), x.floor(), "floor {x}");
            assert_eq!(
                Float::mul_add(x, 1.7, -0.3),
                x.mul_add(1.7, -0.3),
                "fma {x}"
            );
            assert!(ulps(Float::exp(x), x.exp()) <= 2, "exp {x}");
            assert!(ulps(Float::tanh(x), x.tanh()) <= 2, "tanh {x}");
            let y = f64::from(x);
            assert_eq!(Float::sqrt(y.abs()), y.abs().sqrt(), "sqrt {y}");
            assert_eq!(Float::floor(y), y.floor(), "floor {y}");
            assert_eq!(
                Float::mul_add(y, 1.7, -0.3),
                y.mul_add(1.7, -0.3),
                "fma {y}"
            );
            assert!(
                (Float::exp(y) - y.exp()).abs() <= 4.0 * f64::EPSILON * y.exp(),
                "exp {y}"
            );
            assert!(
                (Float::tanh(y) - y.tanh()).abs() <= 4.0 * f64::EPSILON,
                "tanh {y}"
            );
        }
    }
}
