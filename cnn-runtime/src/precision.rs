//! The arithmetic a network's convolutions and linear layers multiply in.

/// The precision of the multiplications of a network's convolutions and linear layers.
///
/// `F32` (the default) is PyTorch's own arithmetic. `Bf16` rounds both operands of every
/// multiplication to bfloat16 (8 bits of mantissa; weights once, when the network first runs in
/// bf16, activations as they enter the product) and sums the exact products in f32, as
/// PyTorch's autocast to bf16 on CPU and OpenVINO's bf16 inference do. It runs on AVX512_BF16's
/// `vdpbf16ps` where the CPU has it (about twice the f32 rate) and on an exact software
/// equivalent elsewhere (same results, f32 speed).
///
/// In bf16, Winograd's α² GEMMs, im2col convolutions, the direct convolutions of a network's
/// stem (≤ 8 input channels) of at least 27 taps and 32 output channels (their taps gathered
/// into the bf16 GEMM) and linear layers multiply in bf16; other stems, depthwise and
/// transposed convolutions, and
/// everything between the layers (transforms, batch norms, activations, pooling) stay f32.
/// Outputs differ from f32 by about 2⁻⁸ of the size of the terms per layer (`docs/pytorch.md`
/// gives the tolerance per depth).
///
/// Declare it with `#[precision(bf16)]` on a `cnn!` network, or choose at run time with
/// `Model::set_precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 operands and sums: PyTorch's numbers.
    #[default]
    F32,
    /// bf16 operands, f32 sums.
    Bf16,
}

impl Precision {
    /// `"f32"` or `"bf16"`, as `#[precision(…)]` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl core::fmt::Display for Precision {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Precision {
    type Err = ParsePrecisionError;

    /// `"f32"` or `"bf16"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(ParsePrecisionError),
        }
    }
}

/// A string that names no [`Precision`] (they are `f32` and `bf16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsePrecisionError;

impl core::fmt::Display for ParsePrecisionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown precision, expected `f32` or `bf16`")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParsePrecisionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_nothing_else_parses() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(Precision::F32.name(), "f32");
        assert_eq!(Precision::Bf16.name(), "bf16");
        assert_eq!(Precision::default(), Precision::F32);
        for bad in ["", "F32", "bf16 ", "fp16", "f64"] {
            assert_eq!(
                bad.parse::<Precision>(),
                Err(ParsePrecisionError),
                "{bad:?}"
            );
        }
        assert_eq!(
            ParsePrecisionError.to_string(),
            "unknown precision, expected `f32` or `bf16`"
        );
    }
}
