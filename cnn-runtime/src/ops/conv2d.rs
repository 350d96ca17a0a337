//! 2-D convolution as im2col + one GEMM per group (1×1 stride-1 unpadded convolutions skip im2col).

/// Shape of a `Conv2d` layer, computed once by the `cnn!` macro and emitted as a `const`.
///
/// PyTorch: `nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups)`; pairs are `[H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channel groups; divides `c_in` and `c_out`.
    pub groups: usize,
    /// Kernel `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[PH, PW]`.
    pub padding: [usize; 2],
    /// Dilation `[DH, DW]`.
    pub dilation: [usize; 2],
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW]`.
    pub out_hw: [usize; 2],
}

impl Conv2dParams {
    /// `[c_out, c_in / groups, KH, KW]`, the PyTorch weight shape.
    pub const fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_out,
            self.c_in / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    /// Elements of one input sample, `c_in·H·W`.
    pub const fn in_len(&self) -> usize {
        self.c_in * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample, `c_out·OH·OW`.
    pub const fn out_len(&self) -> usize {
        self.c_out * self.out_hw[0] * self.out_hw[1]
    }

    /// `c_in / groups · KH · KW`: inputs that feed one output value (the `fan_in` of PyTorch's
    /// initialisation and the `k` of the GEMM).
    pub const fn fan_in(&self) -> usize {
        self.c_in / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Multiply-accumulates for one sample.
    pub const fn macs(&self) -> usize {
        self.out_len() * self.fan_in()
    }

    /// Scratch elements `conv2d` needs for one sample's im2col matrix (0 when it skips im2col).
    pub const fn scratch_len(&self) -> usize {
        todo!()
    }
}

/// `out[n, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · input[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d]`
/// (zero outside the input), for every sample of the batch.
///
/// + `n`: the batch size
/// + `input`: `[n, c_in, H, W]` row-major
/// + `weight`: `[c_out, c_in/groups, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `out`: `[n, c_out, OH, OW]` row-major, overwritten
/// + `scratch`: grown to `p.scratch_len()` if shorter, never shrunk
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    todo!()
}
