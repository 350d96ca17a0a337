//! Max and average pooling, windowed and global, as one kernel with the kind as data.

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// PyTorch: `nn.MaxPool2d`; padding counts as −∞.
    Max,
    /// PyTorch: `nn.AvgPool2d`.
    Avg {
        /// With `true` the divisor counts padded positions inside the padded input (but never
        /// the `ceil_mode` overhang past it): `min(start + k, in + p) − start` per axis.
        /// With `false` it counts only real input positions.
        count_include_pad: bool,
    },
}

/// Shape of a pooling layer, computed once by the `cnn!` macro and emitted as a `const`.
///
/// A global pool (`nn.AdaptiveAvgPool2d(1)`, `nn.AdaptiveMaxPool2d(1)`) is the window
/// `kernel = stride = in_hw`, `padding = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Max or average.
    pub kind: PoolKind,
    /// Channels (pooled independently).
    pub channels: usize,
    /// Window `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Implicit padding on each side `[PH, PW]`.
    pub padding: [usize; 2],
    /// PyTorch's `ceil_mode` (already reflected in `out_hw`).
    pub ceil_mode: bool,
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW]`, from [`crate::shape::out_len`].
    pub out_hw: [usize; 2],
}

impl Pool2dParams {
    /// Elements of one input sample.
    pub const fn in_len(&self) -> usize {
        self.channels * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample.
    pub const fn out_len(&self) -> usize {
        self.channels * self.out_hw[0] * self.out_hw[1]
    }
}

/// `out[n, c, y, x] = reduce over the window starting at (y·SH − PH, x·SW − PW)` of `input`.
///
/// + `n`: the batch size
/// + `input`: `[n, channels, H, W]` row-major
/// + `out`: `[n, channels, OH, OW]` row-major, overwritten
///
/// Max pooling propagates NaN as PyTorch does (a window holding NaN gives NaN).
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn pool2d(p: &Pool2dParams, n: usize, input: &[f32], out: &mut [f32]) {
    todo!()
}
