//! Element-wise activations and softmax over channels.

/// An element-wise activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// PyTorch: `nn.ReLU()`: `max(x, 0)`.
    Relu,
    /// PyTorch: `nn.LeakyReLU(negative_slope)`: `x` if `x ≥ 0` else `negative_slope · x`.
    LeakyRelu(f32),
    /// PyTorch: `nn.Sigmoid()`: `1 / (1 + e^−x)`.
    Sigmoid,
    /// PyTorch: `nn.Tanh()`.
    Tanh,
    /// PyTorch: `nn.SiLU()`: `x · sigmoid(x)`.
    Silu,
    /// PyTorch: `nn.GELU()` (exact): `x/2 · (1 + erf(x/√2))`.
    Gelu,
}

/// Applies `act` to every element of `x` in place.
pub fn activation(act: Activation, x: &mut [f32]) {
    todo!()
}

/// PyTorch: `nn.Softmax(dim=1)`: `y[n, c, s] = e^{x[n,c,s] − m} / Σ_c' e^{x[n,c',s] − m}` with `m` the
/// maximum over channels, in place.
///
/// + `x`: `[n, channels, spatial]` row-major, `spatial = H·W` (1 for a flat tensor)
///
/// # Panics
/// If `x` is shorter than the layout above.
pub fn softmax(n: usize, channels: usize, spatial: usize, x: &mut [f32]) {
    todo!()
}
