//! Fully connected layer through one GEMM.

/// Shape of a `Linear` layer, emitted by the `cnn!` macro as a `const`.
///
/// PyTorch: `nn.Linear(in_features, out_features, bias=True)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearParams {
    /// Inputs per sample.
    pub in_features: usize,
    /// Outputs per sample.
    pub out_features: usize,
}

/// `out[n, o] = bias[o] + Σ_i input[n, i] · weight[o, i]`.
///
/// + `input`: `[n, in_features]` row-major
/// + `weight`: `[out_features, in_features]` row-major (PyTorch's layout)
/// + `bias`: `[out_features]`, or `None`
/// + `out`: `[n, out_features]`, overwritten
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn linear(
    p: &LinearParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    todo!()
}
