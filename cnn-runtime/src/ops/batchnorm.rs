//! Batch normalisation in inference mode, or with batch statistics.

/// Shape and options of a `BatchNorm2d` layer, emitted by the `cnn!` macro as a `const`.
///
/// PyTorch: `nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// `num_features`: channels.
    pub channels: usize,
    /// `H·W` of the tensor it normalises.
    pub hw: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Running-statistics momentum (only used in training, kept for the PyTorch twin).
    pub momentum: f32,
    /// Whether `weight` and `bias` exist.
    pub affine: bool,
    /// Whether running statistics exist; without them the batch statistics are used.
    pub track_running_stats: bool,
}

/// `y = (x − mean) / √(var + eps) · weight + bias`, per channel, in place.
///
/// `mean` and `var` are `running_mean` and `running_var` when given; with `None` they are the
/// statistics of this batch over N, H, W (biased variance), as PyTorch does for
/// `track_running_stats=False` even in eval mode. `weight`/`bias` `None` mean 1 and 0.
///
/// + `n`: the batch size
/// + `x`: `[n, channels, H, W]` row-major
/// + `weight`, `bias`, `running_mean`, `running_var`: `[channels]`
///
/// # Panics
/// If a slice is shorter than the layout above. The caller rejects batch statistics over a
/// single value (`n·H·W = 1`) before calling.
pub fn batchnorm(
    p: &BatchNormParams,
    n: usize,
    x: &mut [f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    running: Option<(&[f32], &[f32])>,
) {
    todo!()
}
