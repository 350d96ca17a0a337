//! 2-D convolution: the descriptor ([`Conv2dParams`]), the algorithm chosen once from it
//! ([`Algorithm`]), the per-channel work after the sums ([`Epilogue`], [`PostOp`]) and the one
//! entry point, [`forward`].
//!
//! ```text
//! forward ─┬─ Winograd   winograd/   3×3, stride 1, one group, ≥ 16 channels in and out
//!          ├─ Direct     direct.rs   one group of ≤ 8 input channels (a network's stem)
//!          ├─ Depthwise  depthwise/  groups = c_in = c_out > 1
//!          └─ Im2col     im2col.rs   everything else: im2col + one GEMM per group
//! ```
//!
//! `phases.rs` holds the zero-padded, stride-phase-split copies of the input that the direct
//! and depthwise kernels read.

pub mod depthwise;
pub mod direct;
pub mod im2col;
mod phases;
#[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
mod tiles;
pub mod winograd;

#[cfg(feature = "std")]
use std::{boxed::Box, sync::OnceLock, vec::Vec};

use crate::store::{Buf, Scratch};
use crate::Precision;
#[cfg(feature = "std")]
use std::vec;

use crate::ops::activation::{activation, Activation};
use crate::ops::pool::Pool2dParams;
use crate::simd::multiversion;

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
    /// A 3×3 convolution of stride 1 and padding 1 (the output as large as the input), one
    /// group: the tests' most common shape.
    #[cfg(test)]
    pub(crate) const fn same3x3(c_in: usize, c_out: usize, hw: [usize; 2]) -> Self {
        Conv2dParams {
            c_in,
            c_out,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: hw,
            out_hw: hw,
        }
    }

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

    /// One filter per channel (`groups = c_in = c_out > 1`).
    pub const fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups == self.c_out && self.groups > 1
    }

    /// The algorithm [`forward`] runs this convolution with; the only place it is chosen.
    pub const fn algorithm(&self) -> Algorithm {
        if winograd::applies(self) {
            Algorithm::Winograd
        } else if direct::applies(self) {
            Algorithm::Direct
        } else if self.is_depthwise() {
            Algorithm::Depthwise
        } else {
            Algorithm::Im2col
        }
    }

    /// Whether the convolution multiplies in bf16 when its layer is set to
    /// [`Precision::Bf16`]: Winograd, im2col, and direct convolutions of at least
    /// `DIRECT_BF16_MIN_TAPS` (27) taps and `DIRECT_BF16_MIN_C_OUT` (32) output channels; depthwise
    /// convolutions and the other direct ones stay f32.
    pub const fn multiplies_in_bf16(&self) -> bool {
        use crate::tuning::{DIRECT_BF16_MIN_C_OUT, DIRECT_BF16_MIN_TAPS};
        match self.algorithm() {
            Algorithm::Winograd | Algorithm::Im2col => true,
            Algorithm::Direct => {
                self.fan_in() >= DIRECT_BF16_MIN_TAPS && self.c_out >= DIRECT_BF16_MIN_C_OUT
            }
            Algorithm::Depthwise => false,
        }
    }

    /// Elements of the weights in the layout of [`algorithm`](Self::algorithm) (what
    /// [`prepare_into`] writes), 0 where it reads PyTorch's layout.
    pub const fn prepared_len(&self) -> usize {
        match self.algorithm() {
            Algorithm::Winograd => winograd::weight_len(self),
            Algorithm::Direct => direct::weight_len(self),
            Algorithm::Depthwise | Algorithm::Im2col => 0,
        }
    }

    /// Scratch elements [`forward`] needs for one sample: exactly what the
    /// [`algorithm`](Self::algorithm) that runs uses (the inference workspace, `WORKSPACE_LEN`,
    /// is sized by it; [`scratch_len`](Self::scratch_len) also covers im2col for training).
    pub const fn forward_scratch_len(&self) -> usize {
        match self.algorithm() {
            Algorithm::Winograd => winograd::scratch_len(self),
            Algorithm::Direct => direct::scratch_len(self),
            Algorithm::Depthwise | Algorithm::Im2col => self.im2col_len(),
        }
    }

    /// Scratch elements one sample needs: the most of [`im2col_len`](Self::im2col_len) and
    /// what the [`algorithm`](Self::algorithm) needs beyond it (Winograd's transforms, the
    /// direct kernel's phase-split input), so that a workspace sized by it runs any kernel.
    pub const fn scratch_len(&self) -> usize {
        let len = self.im2col_len();
        let own = match self.algorithm() {
            Algorithm::Winograd => winograd::scratch_len(self),
            Algorithm::Direct => direct::scratch_len(self),
            Algorithm::Depthwise | Algorithm::Im2col => 0,
        };
        if own > len {
            own
        } else {
            len
        }
    }

    /// Scratch elements of the im2col matrix of one sample (0 when the convolution skips
    /// im2col), or of the depthwise kernel's padded plane for a depthwise convolution.
    pub const fn im2col_len(&self) -> usize {
        if self.is_depthwise() {
            depthwise::scratch_len(self)
        } else {
            im2col::scratch_len(self)
        }
    }
}

/// How [`forward`] computes a convolution, a function of its [`Conv2dParams`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Winograd F(m×m, 3×3) ([`winograd`]).
    Winograd,
    /// Register-blocked direct convolution over a phase-split copy ([`direct`]).
    Direct,
    /// One filter per plane, summed in registers ([`depthwise`]).
    Depthwise,
    /// im2col + one GEMM per group ([`im2col`]).
    Im2col,
}

/// Where a tensor's channels lie in each sample: `[C, H, W]`, PyTorch's and every kernel's, or
/// `[H, W, C]`, what Winograd's transforms read and write, which the executor keeps between
/// the layers that take it (see `winograd::conv2d_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Layout {
    /// `[C, H, W]`.
    #[default]
    ChannelsFirst,
    /// `[H, W, C]`.
    ChannelsLast,
}

/// Work a convolution applies to its output while it is still in cache:
/// `y = act(y·scale[o] + shift[o] + residual[n, o])`, a batch norm with running statistics,
/// a residual connection and an activation, each optional. [`Epilogue::default`] does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `(scale, shift)` per output channel, from `ops::batchnorm::scale_shift`.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// An element-wise activation applied last.
    pub act: Option<Activation>,
    /// A tensor laid out like the convolution's output, `[n, c_out, OH, OW]`, added after the
    /// bias and the folded batch norm and before the activation (PyTorch's
    /// `act(bn(conv(x)) + r)`, the end of a residual block).
    pub residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// The work for output channel `c`, after adding `bias[c]` when there is a bias. With a
    /// residual, the activation is left to [`after`](Self::after), which must follow once the
    /// channel's plane is complete.
    #[inline]
    pub(crate) fn channel(&self, bias: Option<&[f32]>, c: usize) -> PostOp {
        let act = if self.residual.is_some() {
            None
        } else {
            self.act
        };
        PostOp {
            bias: bias.map(|b| b[c]),
            affine: self.affine.map(|(scale, shift)| (scale[c], shift[c])),
            relu: act == Some(Activation::Relu),
            act: act.filter(|&a| a != Activation::Relu),
        }
    }

    /// The bias, folded batch norm and ReLU of output channels `0..c_out` as the GEMMs' row
    /// epilogue (`[add, scale, shift]` per channel and the ReLU flag, see
    /// [`RowPost`](crate::gemm::RowPost)): the same bits as [`PostOp::apply`]. `None` when the
    /// channels' [`PostOp`] has another activation, which runs on whole rows, or no step at all.
    #[cfg(feature = "std")]
    pub(crate) fn gemm_rows(&self, bias: Option<&[f32]>, c_out: usize) -> Option<(RowCoef, bool)> {
        // Which steps there are does not depend on the channel: decided on channel 0, before
        // anything is allocated (a GEMM of 20 µs lost 4% to building the steps it then
        // did not use).
        let first = (c_out > 0).then(|| self.channel(bias, 0))?;
        let nothing = first.bias.is_none() && first.affine.is_none() && !first.relu;
        if first.act.is_some() || nothing {
            return None;
        }
        let mut coef = ROW_COEF.with(|c| c.take());
        coef.clear();
        coef.extend((0..c_out).map(|c| self.channel(bias, c).row_coef()));
        Some((RowCoef(coef), first.relu))
    }

    /// The rest of the work on a finished output plane after [`channel`](Self::channel)'s
    /// [`PostOp`]: with a residual, `row += residual[plane]` and then the activation; nothing
    /// otherwise. `plane` is the plane's index in the batch, `sample · c_out + channel`, and
    /// `row` the whole plane (`OH·OW` values).
    #[inline]
    pub(crate) fn after(&self, plane: usize, row: &mut [f32]) {
        let Some(residual) = self.residual else {
            return;
        };
        let len = row.len();
        let r = &residual[plane * len..(plane + 1) * len];
        add_relu(row, r, self.act == Some(Activation::Relu));
        if let Some(act) = self.act.filter(|&a| a != Activation::Relu) {
            activation(act, row);
        }
    }

    /// Applies the epilogue (no bias) to the output planes `rows` of channels `first, first +
    /// 1, …`, which are planes `first_plane, first_plane + 1, …` of the batch (for the
    /// residual).
    #[cfg(test)]
    pub(crate) fn apply<'a>(
        &self,
        first: usize,
        first_plane: usize,
        rows: impl Iterator<Item = &'a mut [f32]>,
    ) {
        for (o, row) in rows.enumerate() {
            self.channel(None, first + o).apply(row);
            self.after(first_plane + o, row);
        }
    }

    /// Checks that the affine slices cover `c_out` channels and the residual `len` values (the
    /// output's length), as every kernel does on entry.
    ///
    /// # Panics
    /// If they are shorter.
    pub(crate) fn check(&self, c_out: usize, len: usize) {
        if let Some((scale, shift)) = self.affine {
            assert!(
                scale.len() >= c_out && shift.len() >= c_out,
                "conv2d epilogue too short"
            );
        }
        if let Some(r) = self.residual {
            assert!(r.len() >= len, "conv2d residual too short");
        }
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The buffer of [`RowCoef`], kept per thread so that steady-state calls do not allocate.
    static ROW_COEF: core::cell::Cell<Vec<[f32; 3]>> = const { core::cell::Cell::new(Vec::new()) };
}

/// The coefficients [`Epilogue::gemm_rows`] made, `[add, scale, shift]` per output channel, in
/// a buffer kept per thread: given back when dropped.
#[cfg(feature = "std")]
pub(crate) struct RowCoef(Vec<[f32; 3]>);

#[cfg(feature = "std")]
impl core::ops::Deref for RowCoef {
    type Target = [[f32; 3]];
    fn deref(&self) -> &[[f32; 3]] {
        &self.0
    }
}

#[cfg(feature = "std")]
impl Drop for RowCoef {
    fn drop(&mut self) {
        let coef = core::mem::take(&mut self.0);
        // (Not while the thread's locals are being destroyed: then the buffer is just freed.)
        let _ = ROW_COEF.try_with(|c| c.set(coef));
    }
}

multiversion! {
/// `v = v + r`, then PyTorch's ReLU when `relu` (NaN stays NaN): a residual connection (also
/// the executor's, so that a fused and an unfused residual round alike).
pub(crate) fn add_relu(row: &mut [f32], r: &[f32], relu: bool) {
    if relu {
        row.iter_mut().zip(r).for_each(|(v, &r)| {
            let w = *v + r;
            *v = if w < 0.0 { 0.0 } else { w };
        });
    } else {
        row.iter_mut().zip(r).for_each(|(v, &r)| *v += r);
    }
}
}

/// What happens to the sums of one output channel, in this order, each step optional:
/// `y = act(max0((y + bias)·scale + shift))`. The kernels apply the first three steps in
/// registers where they can ([`PostOp::apply`] on a row otherwise), and `act` to whole rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PostOp {
    /// Added first.
    pub(crate) bias: Option<f32>,
    /// `(scale, shift)`: `y·scale + shift`, two roundings, as the separate batch-norm kernel.
    pub(crate) affine: Option<(f32, f32)>,
    /// PyTorch's ReLU (NaN stays NaN), in the same pass.
    pub(crate) relu: bool,
    /// Any other activation, applied to the row afterwards.
    pub(crate) act: Option<Activation>,
}

impl PostOp {
    /// The first three steps as the GEMMs' row epilogue applies them (`RowPost`):
    /// `[add, scale, shift]`, with `−0`, `1`, `−0` for the absent steps (which then change no
    /// bit).
    pub(crate) fn row_coef(&self) -> [f32; 3] {
        let (scale, shift) = self.affine.unwrap_or((1.0, -0.0));
        [self.bias.unwrap_or(-0.0), scale, shift]
    }

    /// Applies every step to one row of the channel, the first three in one pass.
    #[inline]
    pub(crate) fn apply(self, row: &mut [f32]) {
        let (a, b) = self.affine.map_or((None, 0.0), |(a, b)| (Some(a), b));
        bias_affine_relu(row, self.bias, a, b, self.relu);
        if let Some(act) = self.act {
            activation(act, row);
        }
    }
}

multiversion! {
/// `v = max0((v + bias)·a + b)` with each step optional: the bias add, the affine map (two
/// roundings, as the separate batch-norm kernel) and PyTorch's ReLU (NaN stays NaN).
fn bias_affine_relu(row: &mut [f32], bias: Option<f32>, a: Option<f32>, b: f32, relu: bool) {
    // Specialised per combination, so that each loop body is branch-free.
    match (bias, a, relu) {
        (None, None, false) => {}
        (Some(c), None, false) => row.iter_mut().for_each(|v| *v += c),
        (Some(c), Some(a), false) => row.iter_mut().for_each(|v| *v = (*v + c) * a + b),
        (Some(c), Some(a), true) => row.iter_mut().for_each(|v| {
            let w = (*v + c) * a + b;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (Some(c), None, true) => row.iter_mut().for_each(|v| {
            let w = *v + c;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (None, Some(a), false) => row.iter_mut().for_each(|v| *v = *v * a + b),
        (None, Some(a), true) => row.iter_mut().for_each(|v| {
            let w = *v * a + b;
            *v = if w < 0.0 { 0.0 } else { w };
        }),
        (None, None, true) => row.iter_mut().for_each(|v| {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }),
    }
}
}

/// PyTorch's tensors of one convolution, and a copy of the weights in the layout its
/// [`Algorithm`] reads (Winograd's `U`, the direct kernel's packing): made at compile time for
/// an embedded network, otherwise on first use.
#[derive(Debug, Clone)]
pub struct Filters {
    weight: Buf,
    bias: Option<Buf>,
    /// The kernel's layout, laid out by the `cnn!` macro (an embedded network).
    fixed: Option<&'static [f32]>,
    /// The kernel's layout, made on first use (or after training changed the weights). Boxed,
    /// and absent in an embedded network, so that the struct has no interior mutability of
    /// its own and an embedded network can be a constant (`EMBEDDED`).
    #[cfg(feature = "std")]
    prepared: Option<Box<Lazy>>,
    /// What the layer multiplies in.
    precision: Precision,
    /// With [`Precision::Bf16`], the weights as the bf16 GEMM reads them (Winograd's `U`
    /// packed per position, im2col's rows as pairs), made on first use.
    #[cfg(feature = "std")]
    bf16: crate::gemm::bf16::Cache,
    /// With [`Precision::Bf16`] on AMX tiles, a Winograd-shaped layer's weights as the tiles'
    /// convolution reads them (one packed B per tap), made on first use.
    #[cfg(feature = "std")]
    tiles: crate::gemm::bf16::Cache,
}

/// The weights in a kernel's layout and the convolution they were made for, made on first use.
#[cfg(feature = "std")]
type Lazy = OnceLock<(Conv2dParams, Vec<f32>)>;

impl PartialEq for Filters {
    fn eq(&self, other: &Self) -> bool {
        self.weight == other.weight && self.bias == other.bias
    }
}

impl Filters {
    /// `weight: [c_out, c_in/groups, KH, KW]` and `bias: [c_out]`, PyTorch's layouts.
    #[cfg(feature = "std")]
    pub fn new(weight: Vec<f32>, bias: Option<Vec<f32>>) -> Self {
        Filters {
            weight: Buf::Owned(weight),
            bias: bias.map(Buf::Owned),
            fixed: None,
            prepared: Some(Box::default()),
            precision: Precision::F32,
            bf16: Default::default(),
            tiles: Default::default(),
        }
    }

    /// Static tensors of an embedded network, with `prepared` the weights already in the
    /// layout of the layer's algorithm (`None` where it reads PyTorch's layout).
    pub const fn embedded(
        weight: &'static [f32],
        bias: Option<&'static [f32]>,
        prepared: Option<&'static [f32]>,
    ) -> Self {
        Filters {
            weight: Buf::Static(weight),
            bias: Buf::from_static(bias),
            fixed: prepared,
            #[cfg(feature = "std")]
            prepared: None,
            precision: Precision::F32,
            #[cfg(feature = "std")]
            bf16: crate::gemm::bf16::Cache::EMPTY,
            #[cfg(feature = "std")]
            tiles: crate::gemm::bf16::Cache::EMPTY,
        }
    }

    /// What the layer multiplies in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Gives the layer its bf16 weights made at compile time (a constant: see
    /// `gemm::bf16::Cache`); without `std`, where nothing runs in bf16, nothing.
    pub(crate) const fn mark_bf16(&mut self, w16: &'static [u32]) {
        #[cfg(feature = "std")]
        {
            self.bf16.set_fixed(w16);
        }
        #[cfg(not(feature = "std"))]
        let _ = w16;
    }

    /// Sets the precision without a cache cell (a constant: see `gemm::bf16::Cache`).
    pub(crate) const fn mark_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Makes the layer multiply in `precision`; the bf16 copy of the weights is made on the
    /// next use in bf16 (and kept when switching back and forth).
    #[cfg(feature = "std")]
    pub(crate) fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        if precision == Precision::Bf16 {
            self.bf16.enable();
            self.tiles.enable();
        }
    }

    /// With [`Precision::Bf16`] and an algorithm that multiplies in bf16 (all but depthwise),
    /// the weights in the bf16 GEMM's layout; `None` otherwise.
    ///
    /// # Panics
    /// As [`for_kernel`](Self::for_kernel).
    #[cfg(feature = "std")]
    fn for_bf16(&self, p: &Conv2dParams) -> Option<std::borrow::Cow<'_, [u32]>> {
        if self.precision != Precision::Bf16 || !p.multiplies_in_bf16() {
            return None;
        }
        Some(self.bf16.get(|| {
            // Only Winograd's bf16 weights come from its prepared `U`: asking the direct
            // kernel for its f32 packing would make (and keep) one it never uses in bf16.
            let prepared = match p.algorithm() {
                Algorithm::Winograd => self.for_kernel(p),
                _ => &[],
            };
            bf16_weights(p, &self.weight, prepared)
        }))
    }

    /// With [`Precision::Bf16`] on the AMX path and a convolution the tiles run in place of
    /// Winograd (`tiles::applies`), the weights as they read them; `None` otherwise.
    #[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
    fn for_tiles(&self, p: &Conv2dParams) -> Option<std::borrow::Cow<'_, [u32]>> {
        if self.precision != Precision::Bf16 || !tiles::applies(p) {
            return None;
        }
        if let (Buf::Static(w), false) = (&self.weight, self.tiles.keeps()) {
            // A constant's layer (an embedded network) has no cell: kept per process.
            return Some(std::borrow::Cow::Borrowed(tiles::static_weights(p, w)));
        }
        Some(self.tiles.get(|| tiles::pack_weights(p, &self.weight)))
    }

    /// `[c_out, c_in/groups, KH, KW]` row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// `[c_out]`, absent for `bias=False`.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Lets `f` update the weight and the bias in place (training), then brings the copy in
    /// the algorithm's layout up to date, in its own buffer (no allocation after the first
    /// step; an embedded network's static copy is replaced by one on the heap).
    #[cfg(feature = "std")]
    pub(crate) fn update<R>(&mut self, f: impl FnOnce(&mut [f32], Option<&mut [f32]>) -> R) -> R {
        let r = f(&mut self.weight, self.bias.as_deref_mut());
        let lazy = self.prepared.get_or_insert_with(Box::default);
        if self.fixed.take().is_some() {
            // The static copy is stale: the next use makes one from the new weights.
            **lazy = OnceLock::new();
        }
        // Made again from the new weights on next use.
        self.bf16.clear();
        self.tiles.clear();
        if let Some((p, mut w)) = lazy.take() {
            match p.algorithm() {
                Algorithm::Winograd => {
                    winograd::transform_weights_in_place(&p, &self.weight, &mut w)
                }
                Algorithm::Direct => direct::pack_weights_into(&p, &self.weight, &mut w),
                Algorithm::Depthwise | Algorithm::Im2col => {}
            }
            let _ = lazy.set((p, w));
        }
        r
    }

    /// The weights in the layout `p.algorithm()` reads.
    ///
    /// # Panics
    /// If an earlier call prepared them for other parameters; without `std`, if an algorithm
    /// that needs its own layout has none (the macro always lays it out).
    fn for_kernel(&self, p: &Conv2dParams) -> &[f32] {
        match p.algorithm() {
            Algorithm::Depthwise | Algorithm::Im2col => &self.weight,
            Algorithm::Winograd | Algorithm::Direct => match self.fixed {
                Some(fixed) => fixed,
                #[cfg(feature = "std")]
                None => {
                    let make = match p.algorithm() {
                        Algorithm::Winograd => winograd::transform_weights,
                        _ => direct::pack_weights,
                    };
                    let lazy = self.prepared.as_ref().expect("filters without a layout");
                    let (q, w) = lazy.get_or_init(|| (*p, make(p, &self.weight)));
                    assert_eq!(q, p, "filters prepared for another convolution");
                    w.as_slice()
                }
                #[cfg(not(feature = "std"))]
                None => panic!("embedded filters without their prepared layout"),
            },
        }
    }
}

/// [`bf16_weights_into`] into a new vector.
#[cfg(feature = "std")]
fn bf16_weights(p: &Conv2dParams, weight: &[f32], prepared: &[f32]) -> Vec<u32> {
    let mut out = vec![0; bf16_weights_len(p)];
    bf16_weights_into(p, weight, prepared, &mut out);
    out
}

/// `u32` elements of [`bf16_weights_into`]'s layout for `p` (0 where `p` does not
/// [multiply in bf16](Conv2dParams::multiplies_in_bf16)).
pub const fn bf16_weights_len(p: &Conv2dParams) -> usize {
    use crate::gemm::bf16_pack::{packed_len, pairs};
    if !p.multiplies_in_bf16() {
        return 0;
    }
    match p.algorithm() {
        Algorithm::Winograd => {
            let xis = winograd::weight_len(p) / (p.c_in * p.c_out);
            xis * packed_len(p.c_in, p.c_out)
        }
        _ => p.c_out * pairs(p.fan_in()),
    }
}

/// The weights of `p` in the bf16 GEMM's layout, into `out` ([`bf16_weights_len`] values):
/// Winograd's `U[ξ]` (`[c_in, c_out]` each, from `prepared`, what [`prepare_into`] wrote; read
/// for Winograd only) packed one position after another, or, for im2col and the direct kernel,
/// `weight`'s rows (PyTorch's `[c_out, C/G·KH·KW]`) as pairs. What a layer in bf16 makes on first use, and what
/// the `cnn!` macro lays out at compile time for an embedded network declared
/// `#[precision(bf16)]`. Nothing is written where `p` does not multiply in bf16.
///
/// # Panics
/// If a slice is shorter than its layout.
pub fn bf16_weights_into(p: &Conv2dParams, weight: &[f32], prepared: &[f32], out: &mut [u32]) {
    use crate::gemm::bf16_pack::{pack_b, packed_len, pairs_into};
    let out = &mut out[..bf16_weights_len(p)];
    if out.is_empty() {
        return;
    }
    match p.algorithm() {
        Algorithm::Winograd => {
            let (c_in, c_out) = (p.c_in, p.c_out);
            let per = packed_len(c_in, c_out);
            let u = &prepared[..winograd::weight_len(p)];
            for (u, dst) in u.chunks_exact(c_in * c_out).zip(out.chunks_exact_mut(per)) {
                pack_b(c_in, c_out, u, (c_out, 1), dst);
            }
        }
        _ => pairs_into(weight, p.c_out, p.fan_in(), out),
    }
}

/// The weights of `p` in the layout its algorithm reads, written into `out` (which must hold
/// [`Conv2dParams::prepared_len`] values): what [`Filters`] makes on first use, and what the
/// `cnn!` macro lays out at compile time for an embedded network. `false` (nothing written)
/// for the algorithms that read PyTorch's layout.
pub fn prepare_into(p: &Conv2dParams, weight: &[f32], out: &mut [f32]) -> bool {
    match p.algorithm() {
        Algorithm::Winograd => winograd::transform_weights_to(p, weight, out),
        Algorithm::Direct => direct::pack_weights_to(p, weight, out),
        Algorithm::Depthwise | Algorithm::Im2col => return false,
    }
    true
}

/// `out[n, o, y, x] = epilogue(bias[o] + Σ_{c,i,j} weight[o, c, i, j] · input[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d])`
/// (zero outside the input) for every sample of the batch, by `p.algorithm()`. The epilogue
/// rounds as the batch norm and activation kernels run separately would. With `threads > 1`
/// (on a worker of the pool) large convolutions split over that many threads; the result does
/// not change.
///
/// + `n`: the batch size
/// + `input`: `[n, c_in, H, W]` row-major
/// + `filters`: the layer's weight and bias, only ever used with this `p`
/// + `epilogue`: its slices `[c_out]`
/// + `out`: `[n, c_out, OH, OW]` row-major, overwritten
/// + `scratch`: grown as the algorithm needs (at most `p.scratch_len()`), never shrunk
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)] // the layer, the batch and its buffers
pub fn forward(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    filters: &Filters,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    #[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
    if let Some(wt) = filters.for_tiles(p) {
        let input = (input, Layout::ChannelsFirst);
        let b = filters.bias();
        tiles::conv2d(
            p,
            n,
            input,
            &wt,
            b,
            epilogue,
            threads,
            (out, false),
            scratch,
        );
        return;
    }
    let (w, b) = (filters.for_kernel(p), filters.bias());
    #[cfg(feature = "std")]
    if let Some(w16) = filters.for_bf16(p) {
        match p.algorithm() {
            Algorithm::Winograd => {
                winograd::conv2d_bf16(p, n, input, &w16, b, epilogue, threads, out, scratch)
            }
            Algorithm::Direct => {
                direct::conv2d_bf16(p, n, input, &w16, b, epilogue, threads, out, scratch)
            }
            _ => im2col::conv2d_bf16(p, n, input, &w16, b, epilogue, threads, out, scratch),
        }
        return;
    }
    match p.algorithm() {
        Algorithm::Winograd => winograd::conv2d(p, n, input, w, b, epilogue, threads, out, scratch),
        Algorithm::Direct => direct::conv2d(p, n, input, w, b, epilogue, threads, out, scratch),
        Algorithm::Depthwise => {
            depthwise::conv2d(p, n, input, w, b, epilogue, threads, out, scratch)
        }
        Algorithm::Im2col => im2col::conv2d(p, n, input, w, b, epilogue, threads, out, scratch),
    }
}

/// Whether a layer of shape `p` in bf16 runs on the AMX tiles' own convolution (`tiles`) on
/// this thread, in place of Winograd: its weights then come from the layer's `f32` ones, not
/// from a `U` made ahead of time.
#[cfg(test)]
pub(crate) fn runs_on_tiles(p: &Conv2dParams) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
    {
        tiles::applies(p)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = p;
        false
    }
}

/// Whether [`forward_pooled`] takes `pool` after the layer `p` with `filters` and `act`: a
/// direct convolution that multiplies in f32, followed by ReLU or no activation and a pool
/// [`direct::pools`] takes; or one that multiplies in bf16, with an output larger than half of
/// L2 per sample, and a pool [`direct::bands`] takes.
pub(crate) fn fuses_pool(
    p: &Conv2dParams,
    filters: &Filters,
    act: Option<Activation>,
    pool: &Pool2dParams,
) -> bool {
    let bf16 = filters.precision() == Precision::Bf16 && p.multiplies_in_bf16();
    if p.algorithm() != Algorithm::Direct {
        return false;
    }
    if bf16 {
        return direct::bands(p, pool) && 4 * p.out_len() > crate::cache::caches().l2 / 2;
    }
    matches!(act, None | Some(Activation::Relu)) && direct::pools(p, pool)
}

/// Pool rows per band of [`direct::conv2d_bf16_pooled`]: as many as keep the convolution rows
/// they read, of every output channel, within a quarter of L2 (at least one).
#[cfg(feature = "std")]
fn band_rows(p: &Conv2dParams, pool: &Pool2dParams) -> usize {
    let row = 4 * p.c_out * p.out_hw[1];
    let rows = crate::cache::caches().l2 / 4 / row.max(1);
    (rows + pool.stride[0]).saturating_sub(pool.kernel[0]) / pool.stride[0].max(1)
}

/// [`forward`] then [`pool2d`](crate::ops::pool::pool2d) with `pool`, in one pass: in f32
/// in the direct kernel's registers ([`direct::conv2d_pooled`]), in bf16 band by band
/// ([`direct::conv2d_bf16_pooled`]); `out: [n, c_out, PH, PW]`, the same bits.
///
/// # Panics
/// Unless [`fuses_pool`] with the epilogue's activation; if the epilogue has a residual, or a
/// slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // forward's arguments and the pool
pub(crate) fn forward_pooled(
    p: &Conv2dParams,
    pool: &Pool2dParams,
    n: usize,
    input: &[f32],
    filters: &Filters,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    assert!(
        fuses_pool(p, filters, epilogue.act, pool),
        "the pool does not fuse"
    );
    #[cfg(feature = "std")]
    if let Some(w16) = filters.for_bf16(p) {
        let w = (&w16[..], filters.bias());
        let band = (threads, band_rows(p, pool));
        direct::conv2d_bf16_pooled(p, pool, n, input, w, epilogue, band, out, scratch);
        return;
    }
    let w = (filters.for_kernel(p), filters.bias());
    direct::conv2d_pooled(p, pool, n, input, w, epilogue, threads, out, scratch);
}

/// [`forward`] with the input in `layout` (channel-last only for Winograd, see
/// [`Algorithm`]); returns the output's layout: channel-last from Winograd without a residual
/// (its output transform writes it so), channels-first otherwise.
///
/// # Panics
/// As [`forward`], and if the input is channel-last for another algorithm.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)] // forward's arguments and the layout
pub(crate) fn forward_in(
    p: &Conv2dParams,
    n: usize,
    (input, layout): (&[f32], Layout),
    filters: &Filters,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) -> Layout {
    if p.algorithm() != Algorithm::Winograd {
        assert_eq!(
            layout,
            Layout::ChannelsFirst,
            "conv2d: a channel-last input for {:?}",
            p.algorithm()
        );
        forward(p, n, input, filters, epilogue, threads, out, scratch);
        return Layout::ChannelsFirst;
    }
    let out_layout = match epilogue.residual {
        Some(_) => Layout::ChannelsFirst,
        None => Layout::ChannelsLast,
    };
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(wt) = filters.for_tiles(p) {
        let out_last = (out, out_layout == Layout::ChannelsLast);
        let b = filters.bias();
        tiles::conv2d(
            p,
            n,
            (input, layout),
            &wt,
            b,
            epilogue,
            threads,
            out_last,
            scratch,
        );
        return out_layout;
    }
    let (w, b) = (filters.for_kernel(p), filters.bias());
    let w16 = filters.for_bf16(p);
    let layouts = [layout, out_layout];
    let u = (w, w16.as_deref());
    winograd::conv2d_in(p, n, input, u, b, epilogue, threads, out, scratch, layouts);
    out_layout
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    /// The GEMMs' row epilogue for each form of the channels' steps: `−0`, `1`, `−0` for the
    /// absent ones and the ReLU flag; `None` (a separate pass, or nothing) with no step at all,
    /// with another activation, and with no channel.
    #[test]
    fn the_gemm_row_epilogue_of_each_form() {
        let (bias, scale, shift) = ([0.5, -2.0], [3.0, 0.25], [1.0, -4.0]);
        let affine = Some((&scale[..], &shift[..]));
        let relu = Some(Activation::Relu);
        let e = |affine, act| Epilogue {
            affine,
            act,
            residual: None,
        };
        let rows = |e: Epilogue<'_>, bias: Option<&[f32]>, c_out: usize| {
            e.gemm_rows(bias, c_out).map(|(coef, relu)| {
                let bits: Vec<[u32; 3]> = coef.iter().map(|c| c.map(f32::to_bits)).collect();
                (bits, relu)
            })
        };
        let want = |coef: [[f32; 3]; 2], relu: bool| {
            Some((coef.iter().map(|c| c.map(f32::to_bits)).collect(), relu))
        };
        let z = -0.0;
        for (e, b, coef) in [
            (
                e(None, None),
                Some(&bias[..]),
                want([[0.5, 1.0, z], [-2.0, 1.0, z]], false),
            ),
            (
                e(affine, relu),
                None,
                want([[z, 3.0, 1.0], [z, 0.25, -4.0]], true),
            ),
            (e(None, relu), None, want([[z, 1.0, z], [z, 1.0, z]], true)),
            (
                e(affine, None),
                Some(&bias[..]),
                want([[0.5, 3.0, 1.0], [-2.0, 0.25, -4.0]], false),
            ),
            (e(None, None), None, None),
            (e(affine, Some(Activation::Gelu)), Some(&bias[..]), None),
        ] {
            assert_eq!(rows(e, b, 2), coef, "{e:?}, bias {b:?}");
        }
        assert_eq!(
            rows(e(affine, relu), Some(&bias[..]), 0),
            None,
            "no channel"
        );
    }

    /// The reference epilogue in f64, for the convolution tests: `act((y·scale + shift) + r)` per
    /// element of `y: [n, c_out, hw]` (the convolution with its bias, in f64), with the batch norm
    /// `affine = (scale, shift)` per channel and the residual `r` optional. Returns the expected
    /// values and, for [`assert_close_mag`], each one's magnitude: `mag` (the sum of the
    /// absolute values of the convolution's terms) carried through the same steps.
    pub(crate) fn reference_epilogue(
        y: &[f64],
        mag: &[f64],
        c_out: usize,
        hw: usize,
        affine: Option<(&[f32], &[f32])>,
        r: Option<&[f32]>,
        act: Option<Activation>,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut want = Vec::with_capacity(y.len());
        let mut size = Vec::with_capacity(y.len());
        for (i, (&v, &m)) in y.iter().zip(mag).enumerate() {
            let c = i / hw % c_out;
            let (mut v, mut m) = (v, m);
            if let Some((scale, shift)) = affine {
                let (a, b) = (scale[c] as f64, shift[c] as f64);
                (v, m) = (v * a + b, m * a.abs() + b.abs());
            }
            if let Some(r) = r {
                (v, m) = (v + r[i] as f64, m + (r[i] as f64).abs());
            }
            v = match act {
                None => v,
                Some(Activation::Relu) => v.max(0.0),
                Some(Activation::Relu6) => v.clamp(0.0, 6.0),
                Some(Activation::LeakyRelu(s)) => {
                    if v < 0.0 {
                        v * s as f64
                    } else {
                        v
                    }
                }
                Some(Activation::Sigmoid) => 1.0 / (1.0 + (-v).exp()),
                Some(Activation::Tanh) => v.tanh(),
                Some(Activation::Silu) => v / (1.0 + (-v).exp()),
                Some(Activation::Gelu) => {
                    0.5 * v * (1.0 + crate::ops::activation::erf(v / core::f64::consts::SQRT_2))
                }
                Some(Activation::Hardswish) => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
                Some(Activation::Hardsigmoid) => (v / 6.0 + 0.5).clamp(0.0, 1.0),
            };
            want.push(v);
            size.push(m * act.map_or(1.0, lipschitz));
        }
        (want, size)
    }

    /// The most `act` can stretch an error of its input (the largest slope): an error `e`
    /// before the activation is at most `lipschitz · e` after it.
    pub(crate) fn lipschitz(act: Activation) -> f64 {
        match act {
            Activation::Relu | Activation::Relu6 | Activation::Tanh => 1.0,
            Activation::LeakyRelu(s) => (s.abs() as f64).max(1.0),
            Activation::Sigmoid => 0.25,
            // max of x·σ(x)' + σ(x) is 1.0998; of GELU's slope 1.1289; of (2x + 3)/6 on [−3, 3] 1.5.
            Activation::Silu => 1.1,
            Activation::Gelu => 1.13,
            Activation::Hardswish => 1.5,
            Activation::Hardsigmoid => 1.0 / 6.0,
        }
    }

    /// Every activation, and none: the epilogue forms the kernel tests run.
    pub(crate) const ACTS: [Option<Activation>; 10] = [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Sigmoid),
        Some(Activation::Tanh),
        Some(Activation::Silu),
        Some(Activation::Gelu),
        Some(Activation::Hardswish),
        Some(Activation::Hardsigmoid),
    ];

    /// `(bias, batch norm, residual, activation)` combinations a kernel test runs: every
    /// combination of the first three with no activation, ReLU (applied in registers where the
    /// kernel can) and ReLU6 (applied to whole planes), then each other activation once with a
    /// rotating combination. With `few` (the large cases, there for their thread splits), two
    /// forms with a residual: the batch norm and ReLU, and nothing else.
    pub(crate) fn epilogue_forms(few: bool) -> Vec<(bool, bool, bool, Option<Activation>)> {
        if few {
            return vec![
                (true, true, true, Some(Activation::Relu)),
                (true, false, true, None),
            ];
        }
        let mut forms = Vec::new();
        for bits in 0..8 {
            for &act in &ACTS[..3] {
                forms.push((bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, act));
            }
        }
        for (i, &act) in ACTS[3..].iter().enumerate() {
            let bits = i * 3 + 1;
            forms.push((bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, act));
        }
        forms
    }

    /// Asserts `|got − want| ≤ tol · (1 + mag)` element-wise, naming the first bad index: a
    /// relative error bound sized by each value's magnitude `mag` (see [`reference_epilogue`]), so
    /// that values which cancel to near zero are judged by the size of their terms.
    #[track_caller]
    pub(crate) fn assert_close_mag(got: &[f32], want: &[f64], mag: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "length mismatch: {what}");
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(
                err <= tol * (1.0 + m),
                "mismatch at index {i}: got {g}, expected {w} (magnitude {m}, tol {tol}): {what}"
            );
        }
    }

    /// `(c_in, c_out, groups, kernel, stride, padding, dilation, [h, w], n, bias)`.
    pub(crate) type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
        bool,
    );

    pub(crate) const CASES: &[Case] = &[
        (3, 16, 1, [3, 3], [1, 1], [1, 1], [1, 1], [8, 8], 1, true),
        (4, 4, 4, [3, 5], [2, 1], [1, 2], [2, 1], [7, 5], 3, true),
        (8, 6, 1, [1, 1], [1, 1], [0, 0], [1, 1], [5, 7], 3, true),
        (8, 6, 2, [1, 1], [1, 1], [0, 0], [3, 2], [5, 7], 1, false),
        (5, 7, 1, [1, 1], [2, 2], [0, 0], [1, 1], [9, 6], 2, true),
        (6, 6, 3, [1, 1], [1, 1], [1, 0], [1, 1], [4, 4], 1, true),
        (3, 5, 1, [2, 2], [3, 3], [0, 0], [1, 1], [11, 10], 1, true),
        (2, 4, 1, [3, 2], [4, 5], [1, 1], [1, 1], [9, 13], 2, false),
        (3, 4, 1, [1, 1], [1, 1], [0, 0], [1, 1], [1, 1], 3, true),
        (3, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1, true),
        (2, 2, 1, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 2, false),
        (8, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1], [6, 6], 3, true),
        (8, 8, 8, [3, 3], [2, 2], [1, 1], [1, 1], [7, 7], 1, false),
        (6, 6, 6, [3, 3], [3, 2], [0, 2], [2, 2], [9, 8], 2, true),
        (3, 3, 3, [1, 1], [2, 2], [1, 1], [1, 1], [1, 1], 1, false),
        (5, 5, 5, [2, 4], [1, 3], [1, 2], [1, 1], [4, 10], 2, true),
        (6, 4, 2, [3, 3], [1, 2], [2, 0], [2, 2], [8, 9], 1, true),
        (6, 9, 3, [2, 3], [1, 1], [0, 1], [1, 3], [5, 8], 3, true),
        (4, 4, 4, [5, 5], [1, 1], [2, 2], [1, 1], [3, 3], 1, true),
        (1, 3, 1, [7, 7], [2, 2], [3, 3], [1, 1], [16, 12], 1, true),
        (3, 2, 1, [3, 3], [1, 1], [4, 4], [1, 1], [2, 3], 1, true),
        (16, 32, 1, [3, 3], [1, 1], [1, 1], [1, 1], [13, 13], 2, true),
    ];

    pub(crate) fn params(c: &Case) -> Conv2dParams {
        let &(c_in, c_out, groups, kernel, stride, padding, dilation, in_hw, _, _) = c;
        let axis = |a: usize| {
            out_len(
                in_hw[a],
                kernel[a],
                stride[a],
                padding[a],
                dilation[a],
                false,
            )
            .expect("the case fits its input")
        };
        Conv2dParams {
            c_in,
            c_out,
            groups,
            kernel,
            stride,
            padding,
            dilation,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// The reference convolution for every conv kernel's tests: any groups, stride, padding and
    /// dilation, `bias + Σ w·x` in f64, rounded to f32.
    pub(crate) fn naive(
        p: &Conv2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        naive64(p, n, x, w, b).0.iter().map(|&v| v as f32).collect()
    }

    /// [`naive`] in f64, and for each output the sum of the absolute values of its terms
    /// (`|bias| + Σ |w·x|`), which sizes its rounding error.
    pub(crate) fn naive64(
        p: &Conv2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let [kh, kw] = p.kernel;
        let [h, wd] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let mut out = vec![0.0; n * p.out_len()];
        let mut mag = vec![0.0; n * p.out_len()];
        for s in 0..n {
            for o in 0..p.c_out {
                let g = o / c_out_g;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[o] as f64);
                        let mut size = acc.abs();
                        for c in 0..c_in_g {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * p.stride[0] + i * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let ix = (xo * p.stride[1] + j * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let ci = g * c_in_g + c;
                                    let xv =
                                        x[((s * p.c_in + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((o * c_in_g + c) * kh + i) * kw + j];
                                    acc += xv as f64 * wv as f64;
                                    size += (xv as f64 * wv as f64).abs();
                                }
                            }
                        }
                        out[((s * p.c_out + o) * oh + y) * ow + xo] = acc;
                        mag[((s * p.c_out + o) * oh + y) * ow + xo] = size;
                    }
                }
            }
        }
        (out, mag)
    }

    /// `(case, the algorithm it must run, thread counts)`: odd sizes, `c_out` off the direct
    /// kernel's blocks of 8, strides 2, padding, groups, batches of 3, and one case per
    /// algorithm large enough to be split over threads.
    const RESIDUAL_CASES: &[(Case, Algorithm, &[usize])] = &[
        (
            (16, 19, 1, [3, 3], [1, 1], [1, 1], [1, 1], [9, 11], 3, true),
            Algorithm::Winograd,
            &[1],
        ),
        (
            (17, 24, 1, [3, 3], [1, 1], [1, 0], [1, 1], [13, 16], 2, true),
            Algorithm::Winograd,
            &[1],
        ),
        (
            (64, 66, 1, [3, 3], [1, 1], [1, 1], [1, 1], [24, 24], 1, true),
            Algorithm::Winograd,
            &[1, 2, 3],
        ),
        (
            (3, 13, 1, [3, 3], [2, 2], [1, 1], [1, 1], [17, 19], 3, true),
            Algorithm::Direct,
            &[1],
        ),
        (
            (5, 7, 1, [5, 3], [1, 2], [2, 0], [1, 1], [9, 20], 2, true),
            Algorithm::Direct,
            &[1],
        ),
        (
            (3, 30, 1, [7, 7], [2, 2], [3, 3], [1, 1], [64, 64], 2, true),
            Algorithm::Direct,
            &[1, 2, 3],
        ),
        // Rows of 37: several blocks of 8 and 16 lanes (two vectors with AVX-512), and a tail.
        (
            (4, 9, 1, [3, 3], [1, 1], [1, 1], [1, 1], [6, 37], 2, true),
            Algorithm::Direct,
            &[1],
        ),
        (
            (5, 5, 5, [3, 3], [2, 2], [1, 1], [1, 1], [9, 7], 3, true),
            Algorithm::Depthwise,
            &[1],
        ),
        // Large enough to split over threads (it used to be 6 channels of 7×37, which never
        // did: the split check below found it).
        (
            (
                32,
                32,
                32,
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                [16, 37],
                2,
                true,
            ),
            Algorithm::Depthwise,
            &[1, 2],
        ),
        (
            (6, 9, 3, [2, 3], [1, 1], [0, 1], [1, 3], [5, 8], 3, true),
            Algorithm::Im2col,
            &[1],
        ),
        (
            (9, 7, 1, [1, 1], [1, 1], [0, 0], [1, 1], [5, 7], 3, true),
            Algorithm::Im2col,
            &[1],
        ),
        (
            (12, 5, 1, [3, 3], [2, 2], [1, 1], [1, 1], [9, 11], 3, true),
            Algorithm::Im2col,
            &[1],
        ),
        (
            (32, 48, 1, [3, 3], [2, 2], [1, 1], [1, 1], [48, 48], 1, true),
            Algorithm::Im2col,
            &[1, 2, 3],
        ),
    ];

    /// Every algorithm at every instruction-set level this CPU has, with every epilogue form
    /// (bias or not, folded batch norm or not, residual or not, each activation or none),
    /// against the f64 definition ([`naive64`], [`reference_epilogue`]) with a tolerance
    /// relative to the size of each value's terms. The large cases (there for their thread
    /// splits) run fewer combinations, at the best level only.
    /// Every algorithm gives the same bits from a scratch full of NaN (left by other layers,
    /// which share it) as from a fresh one, at every level and in both precisions, and the
    /// direct convolution's pooled form too: no kernel reads scratch it did not write.
    #[test]
    fn scratch_left_dirty_by_other_layers_changes_no_bit() {
        use crate::ops::pool::{Pool2dParams, PoolKind};
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (i, (case, algorithm, _)) in RESIDUAL_CASES.iter().enumerate() {
            let p = params(case);
            assert_eq!(p.algorithm(), *algorithm, "{case:?}");
            let n = case.8;
            let x = rand_vec(n * p.in_len(), 3000 + i as u64);
            let w = rand_vec(p.c_out * p.fan_in(), 3100 + i as u64);
            let b = rand_vec(p.c_out, 3200 + i as u64);
            let pool = Pool2dParams {
                kind: PoolKind::Max,
                channels: p.c_out,
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                ceil_mode: false,
                in_hw: p.out_hw,
                out_hw: [p.out_hw[0] / 2, p.out_hw[1] / 2],
            };
            crate::simd::testing::each_level(|level| {
                for precision in [Precision::F32, Precision::Bf16] {
                    let mut filters = Filters::new(w.clone(), Some(b.clone()));
                    filters.set_precision(precision);
                    let run = |scratch: &mut Vec<f32>| {
                        let mut out = vec![f32::NAN; n * p.out_len()];
                        let e = Epilogue::default();
                        forward(&p, n, &x, &filters, e, 1, &mut out, scratch);
                        if fuses_pool(&p, &filters, None, &pool) {
                            let mut pooled = vec![f32::NAN; n * pool.out_len()];
                            forward_pooled(&p, &pool, n, &x, &filters, e, 1, &mut pooled, scratch);
                            out.extend(pooled);
                        }
                        out
                    };
                    let want = run(&mut Vec::new());
                    let mut dirty = vec![f32::NAN; p.forward_scratch_len() + 64];
                    let got = run(&mut dirty);
                    assert_eq!(bits(&got), bits(&want), "{case:?} {level:?} {precision:?}");
                }
            });
        }
    }

    #[test]
    fn the_residual_is_added_after_the_batch_norm_and_before_the_activation_by_every_algorithm() {
        let all_levels = crate::simd::testing::levels();
        let mut seen = Vec::new();
        for (i, (case, algorithm, threads)) in RESIDUAL_CASES.iter().enumerate() {
            let p = params(case);
            assert_eq!(p.algorithm(), *algorithm, "{case:?}");
            seen.push(p.algorithm());
            let n = case.8;
            let seed = 1000 + i as u64 * 10;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let (scale, shift) = (rand_vec(p.c_out, seed + 3), rand_vec(p.c_out, seed + 4));
            // Residuals about as large as the outputs, so that the ReLU's sign flips.
            let r: Vec<f32> = rand_vec(n * p.out_len(), seed + 5)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let tol = match (p.algorithm(), winograd::out_tile(&p)) {
                (Algorithm::Winograd, 4) => 1e-5,
                (Algorithm::Winograd, _) => 2e-6,
                _ => 1e-6,
            };
            let big = threads.len() > 1;
            // The thread splits do not depend on the level: the large cases run at the best.
            let levels = if big {
                &all_levels[..1]
            } else {
                &all_levels[..]
            };
            let hw = p.out_hw[0] * p.out_hw[1];
            let with_bias = b.clone();
            let ys = [true, false].map(|bias| {
                let bias = bias.then_some(&with_bias[..]);
                naive64(&p, n, &x, &w, bias)
            });
            for (bias, affine, residual, act) in epilogue_forms(big) {
                let (y, mag) = &ys[usize::from(!bias)];
                let affine = affine.then_some((&scale[..], &shift[..]));
                let residual = residual.then_some(&r[..]);
                let bias = bias.then(|| b.clone());
                let epilogue = Epilogue {
                    affine,
                    act,
                    residual,
                };
                let (want, size) = reference_epilogue(y, mag, p.c_out, hw, affine, residual, act);
                for &level in levels {
                    crate::simd::testing::with_isa(level, || {
                        // Fresh filters: the prepared copy is made at this level.
                        let filters = Filters::new(w.clone(), bias.clone());
                        for &threads in *threads {
                            let mut out = vec![f32::NAN; n * p.out_len()];
                            let spread = crate::threads::install(threads, || {
                                // (Nothing left over from an earlier call on this worker.)
                                crate::threads::take_spread();
                                forward(
                                    &p,
                                    n,
                                    &x,
                                    &filters,
                                    epilogue,
                                    threads,
                                    &mut out,
                                    &mut Vec::new(),
                                );
                                crate::threads::take_spread()
                            });
                            // The large cases are there for their splits: they must happen.
                            assert_eq!(
                                spread > 0,
                                threads > 1,
                                "{algorithm:?} {case:?}: {threads} threads"
                            );
                            let what = format!(
                                "{algorithm:?} {case:?} at {}, bias {}, bn {}, residual {}, \
                                 {act:?}, {threads} threads",
                                level.name(),
                                bias.is_some(),
                                affine.is_some(),
                                residual.is_some()
                            );
                            assert_close_mag(&out, &want, &size, tol, &what);
                        }
                    });
                }
            }
        }
        for a in [
            Algorithm::Winograd,
            Algorithm::Direct,
            Algorithm::Depthwise,
            Algorithm::Im2col,
        ] {
            assert!(seen.contains(&a), "no case runs {a:?}");
        }
    }

    #[test]
    fn the_default_epilogue_does_nothing() {
        let e = Epilogue::default();
        let op = e.channel(None, 3);
        assert_eq!(
            op,
            PostOp {
                bias: None,
                affine: None,
                relu: false,
                act: None
            }
        );
        let mut row = vec![-1.5, 0.0, 2.0, f32::NAN];
        let before: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        op.apply(&mut row);
        e.after(7, &mut row);
        e.apply(0, 0, core::iter::once(&mut row[..]));
        assert_eq!(row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), before);
        e.check(5, 100);
    }

    #[test]
    fn with_a_residual_the_activation_waits_for_it() {
        let (scale, shift, r) = ([2.0f32; 2], [-1.0f32; 2], [1.0f32, -3.0, 0.5, 2.5]);
        let e = Epilogue {
            affine: Some((&scale, &shift)),
            act: Some(Activation::Relu),
            residual: Some(&r),
        };
        let op = e.channel(Some(&[0.5, 0.25]), 1);
        assert_eq!((op.relu, op.act), (false, None), "deferred to `after`");
        // Plane 1 of two planes of 2: (v + 0.25)·2 − 1 + r[2..4], then ReLU.
        let mut row = [-1.0f32, 0.0];
        op.apply(&mut row);
        e.after(1, &mut row);
        assert_eq!(row, [0.0, 2.0]);
        let wrong = std::panic::catch_unwind(|| e.check(2, 5));
        assert!(wrong.is_err(), "a short residual must be refused");
    }

    #[test]
    fn matches_direct_convolution_over_awkward_shapes() {
        for (seed, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.8, case.9);
            let seed = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let bias = has_bias.then_some(&b[..]);
            let mut out = vec![f32::NAN; n * p.out_len()];
            let mut scratch = vec![f32::NAN; 3];
            let run = if p.is_depthwise() {
                depthwise::conv2d
            } else {
                im2col::conv2d
            };
            run(
                &p,
                n,
                &x,
                &w,
                bias,
                Epilogue::default(),
                1,
                &mut out,
                &mut scratch,
            );
            assert!(scratch.len() >= p.im2col_len(), "{case:?}");
            let want = naive(&p, n, &x, &w, bias);
            assert_close(&out, &want, 1e-5);
        }
    }

    /// A scratch buffer of `forward_scratch_len()` (what sizes `WORKSPACE_LEN`) is never grown
    /// by the algorithm that runs (at any level), and the result is right: an undersized
    /// figure fails here, with no size retyped from the kernels' formulas.
    #[test]
    fn scratch_len_covers_every_algorithm_that_applies() {
        let residual_cases = RESIDUAL_CASES.iter().map(|(case, ..)| case);
        for (seed, case) in CASES.iter().chain(residual_cases).enumerate() {
            let p = params(case);
            let n = case.8;
            let x = rand_vec(n * p.in_len(), seed as u64);
            let w = rand_vec(p.c_out * p.fan_in(), seed as u64 + 1);
            let want = naive(&p, n, &x, &w, None);
            let tol = if p.algorithm() == Algorithm::Winograd {
                2e-4
            } else {
                1e-5
            };
            crate::simd::testing::each_level(|level| {
                let filters = Filters::new(w.clone(), None);
                let mut scratch =
                    Vec::with_capacity(p.forward_scratch_len() + crate::store::LINE - 1);
                let (at, room) = (scratch.as_ptr(), scratch.capacity());
                let mut out = vec![f32::NAN; n * p.out_len()];
                let e = Epilogue::default();
                forward(&p, n, &x, &filters, e, 1, &mut out, &mut scratch);
                assert!(
                    scratch.as_ptr() == at && scratch.capacity() == room,
                    "{:?} {case:?} at {}: grew to {}, forward_scratch_len {}",
                    p.algorithm(),
                    level.name(),
                    scratch.len(),
                    p.forward_scratch_len()
                );
                assert_close(&out, &want, tol);
            });
            assert!(p.scratch_len() >= p.im2col_len(), "{case:?}");
            assert!(p.scratch_len() >= p.forward_scratch_len(), "{case:?}");
        }
    }

    #[test]
    fn forward_runs_the_chosen_algorithm_on_every_shape() {
        for (seed, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.8, case.9);
            let seed = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.c_out * p.fan_in(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let filters = Filters::new(w.clone(), has_bias.then(|| b.clone()));
            let mut out = vec![f32::NAN; n * p.out_len()];
            let mut scratch = Vec::new();
            forward(
                &p,
                n,
                &x,
                &filters,
                Epilogue::default(),
                1,
                &mut out,
                &mut scratch,
            );
            assert!(
                scratch.len() < p.scratch_len() + crate::store::LINE,
                "{case:?}"
            );
            let want = naive(&p, n, &x, &w, has_bias.then_some(&b[..]));
            let tol = if p.algorithm() == Algorithm::Winograd {
                2e-4
            } else {
                1e-5
            };
            assert_close(&out, &want, tol);
        }
    }

    /// A convolution with an empty output (0 rows or 0 columns; the macro never plans one,
    /// but the kernels take any descriptor) writes nothing and reads nothing, whichever
    /// algorithm its other sizes would pick.
    #[test]
    fn an_empty_output_is_a_no_op() {
        for case in [&CASES[0], &CASES[11], &CASES[2], &CASES[21], &CASES[19]] {
            let full = params(case);
            for out_hw in [[0, full.out_hw[1]], [full.out_hw[0], 0]] {
                let p = Conv2dParams { out_hw, ..full };
                assert_ne!(p.algorithm(), Algorithm::Winograd, "{case:?}");
                assert_ne!(p.algorithm(), Algorithm::Direct, "{case:?}");
                let filters = Filters::new(rand_vec(p.c_out * p.fan_in(), 1), None);
                let x = rand_vec(2 * p.in_len(), 2);
                let mut out = [f32::NAN; 3];
                forward(
                    &p,
                    2,
                    &x,
                    &filters,
                    Epilogue::default(),
                    1,
                    &mut out[..0],
                    &mut Vec::new(),
                );
                assert!(out.iter().all(|v| v.is_nan()));
            }
        }
    }

    #[test]
    fn each_algorithm_is_chosen_for_its_shapes() {
        let p = params(&CASES[21]);
        assert_eq!(p.algorithm(), Algorithm::Winograd);
        assert_eq!(params(&CASES[0]).algorithm(), Algorithm::Direct);
        assert_eq!(params(&CASES[11]).algorithm(), Algorithm::Depthwise);
        assert_eq!(params(&CASES[2]).algorithm(), Algorithm::Im2col);
        let filters = Filters::new(vec![0.5; p.c_out * p.fan_in()], None);
        let mut out = vec![0.0; p.out_len()];
        let x = vec![1.0; p.in_len()];
        let e = Epilogue::default();
        forward(&p, 1, &x, &filters, e, 1, &mut out, &mut Vec::new());
        let other = Conv2dParams { c_out: 16, ..p };
        let wrong = std::panic::catch_unwind(|| {
            let mut out = vec![0.0; other.out_len()];
            forward(&other, 1, &x, &filters, e, 1, &mut out, &mut Vec::new());
        });
        assert!(
            wrong.is_err(),
            "filters prepared for `p` must not run `other`"
        );
    }

    /// A bf16 direct convolution and a pool run in bands from an output of more than half of
    /// L2 per sample, not at exactly half; f32 (a 3×3 pool its registers do not take) and
    /// pools that [`direct::bands`] refuses never do. The bands hold as many pool rows as keep
    /// their convolution rows within a quarter of L2, one more would not.
    #[test]
    fn bf16_bands_from_half_of_l2_sized_to_a_quarter() {
        use crate::ops::pool::PoolKind;
        let l2 = crate::cache::caches().l2;
        // 32 channels of 64 rows: exactly half of L2 with `l2 / 256 / 64` columns.
        let conv = |w: usize| {
            let p = Conv2dParams {
                c_in: 3,
                c_out: 32,
                groups: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
                dilation: [1, 1],
                in_hw: [64, w],
                out_hw: [64, w],
            };
            assert!(p.multiplies_in_bf16());
            p
        };
        let pool = |p: &Conv2dParams, k: usize, s: usize, pad: usize, ceil: bool| {
            let side = |i: usize| out_len(p.out_hw[i], k, s, pad, 1, ceil).unwrap();
            Pool2dParams {
                kind: PoolKind::Max,
                channels: p.c_out,
                kernel: [k, k],
                stride: [s, s],
                padding: [pad, pad],
                ceil_mode: ceil,
                in_hw: p.out_hw,
                out_hw: [side(0), side(1)],
            }
        };
        let half = l2 / 256 / 64;
        assert_eq!(4 * conv(half).out_len(), l2 / 2, "an L2 of whole kilobytes");
        let mut f = Filters::new(rand_vec(32 * 27, 1), None);
        f.set_precision(Precision::Bf16);
        let relu = Some(Activation::Relu);
        for (w, k, s, pad, ceil, bands) in [
            (half, 3, 2, 1, false, false),
            (half + 1, 3, 2, 1, false, true),
            (half + 1, 2, 2, 0, false, true),
            (half + 1, 3, 2, 1, true, false),
            (half + 1, 3, 1, 1, false, false),
        ] {
            let p = conv(w);
            assert_eq!(
                fuses_pool(&p, &f, relu, &pool(&p, k, s, pad, ceil)),
                bands,
                "{w} k{k} s{s} p{pad}"
            );
        }
        let mut f32 = f.clone();
        f32.set_precision(Precision::F32);
        let p = conv(half + 1);
        assert!(!fuses_pool(&p, &f32, relu, &pool(&p, 3, 2, 1, false)));
        // Band sizes: convolution rows of `row` bytes, `(rows − 1)·stride + kernel` of them.
        for (c_out, ow, k, s) in [
            (64, 112, 3, 2),
            (32, 300, 2, 2),
            (16, 50, 3, 2),
            (200, 700, 3, 2),
        ] {
            let p = Conv2dParams {
                c_out,
                out_hw: [64, ow],
                in_hw: [64, ow],
                ..conv(ow)
            };
            let q = pool(&p, k, s, 0, false);
            let rows = band_rows(&p, &q);
            let bytes = |r: usize| (r.saturating_sub(1) * s + k) * 4 * c_out * ow;
            assert!(
                rows == 0 || bytes(rows) <= l2 / 4,
                "{c_out} {ow}: {rows} rows"
            );
            assert!(bytes(rows + 1) > l2 / 4, "{c_out} {ow}: {rows} rows");
        }
    }

    /// In bf16, a direct convolution multiplies in bf16 from 27 taps on (a 3×3 RGB stem, 8×8 at
    /// one input channel, 4 channels of 4×4), not at 26 (2×13) or 25 (lenet5's first, 5×5 at
    /// one channel), and from 32 output channels on, not at 31 (lenet5's second convolution,
    /// 150 taps to 16 channels, stays f32).
    #[test]
    fn direct_convolutions_multiply_in_bf16_from_27_taps_and_32_channels() {
        let p = |c_in: usize, kernel: [usize; 2], c_out: usize| Conv2dParams {
            c_in,
            c_out,
            groups: 1,
            kernel,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            in_hw: [80, 80],
            out_hw: [81 - kernel[0], 81 - kernel[1]],
        };
        for (c_in, kernel, c_out, bf16) in [
            (1, [8, 8], 32, true),
            (4, [4, 4], 40, true),
            (3, [3, 3], 64, true),
            (3, [3, 3], 32, true),
            (2, [1, 13], 32, false),
            (1, [5, 5], 64, false),
            (1, [8, 8], 31, false),
            (6, [5, 5], 16, false),
        ] {
            let p = p(c_in, kernel, c_out);
            assert_eq!(p.algorithm(), Algorithm::Direct, "{p:?}");
            assert_eq!(p.multiplies_in_bf16(), bf16, "{p:?}");
        }
    }

    /// The bf16 weights' lengths, by hand: Winograd F(4×4) 16 → 24 is 36 positions of 8 pairs
    /// × one 64-column panel; F(2×2) 16 → 70 is 16 positions of 8 pairs × two panels; an
    /// 81-tap im2col 3×3 of 9 → 10 channels (stride 2) is 10 rows of 41 pairs; a 9-tap direct
    /// stem stays f32 (none).
    #[test]
    fn bf16_weight_lengths_by_hand() {
        let conv = |c_in, c_out, stride: usize, side: usize| Conv2dParams {
            c_in,
            c_out,
            groups: 1,
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [side * stride, side * stride],
            out_hw: [side, side],
        };
        for (p, algorithm, len) in [
            (conv(16, 24, 1, 32), Algorithm::Winograd, 36 * 8 * 64),
            (conv(16, 70, 1, 8), Algorithm::Winograd, 16 * 8 * 128),
            (conv(9, 10, 2, 9), Algorithm::Im2col, 10 * 41),
            (conv(1, 8, 1, 9), Algorithm::Direct, 0),
        ] {
            assert_eq!(p.algorithm(), algorithm, "{p:?}");
            assert_eq!(bf16_weights_len(&p), len, "{p:?}");
        }
    }

    /// Two filters are equal when their weights and biases are (the prepared copies aside).
    #[test]
    fn filters_are_equal_when_weight_and_bias_are() {
        let f = |w: f32, b: Option<f32>| Filters::new(vec![w; 4], b.map(|b| vec![b; 2]));
        assert!(f(1.0, Some(2.0)) == f(1.0, Some(2.0)));
        assert!(f(1.0, None) == f(1.0, None));
        assert!(f(1.0, Some(2.0)) != f(1.0, Some(3.0)), "bias differs");
        assert!(f(1.0, Some(2.0)) != f(0.5, Some(2.0)), "weight differs");
        assert!(f(1.0, None) != f(1.0, Some(2.0)), "bias absent");
    }

    /// The bf16 direct and im2col convolutions apply bias, batch norm and ReLU inside their
    /// GEMM: every epilogue form gives the bits of the convolution with its bias alone
    /// followed by the separate pass (`PostOp::apply`, then `Epilogue::after`), on every bf16
    /// path, on one thread and split over two.
    #[test]
    fn bf16_epilogues_in_the_gemm_give_the_bits_of_the_separate_pass() {
        let conv = |c_in, c_out, groups, k: usize, stride: usize, pad, side: usize| {
            let out = (side + 2 * pad - k) / stride + 1;
            Conv2dParams {
                c_in,
                c_out,
                groups,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [1, 1],
                in_hw: [side, side],
                out_hw: [out, out],
            }
        };
        // A direct stem large enough to split its channels, an odd im2col with groups, a 1×1.
        for p in [
            conv(3, 40, 1, 7, 2, 3, 64),
            conv(9, 14, 2, 3, 2, 1, 13),
            conv(32, 64, 1, 1, 1, 0, 24),
        ] {
            assert!(p.multiplies_in_bf16(), "{p:?}");
            assert_ne!(p.algorithm(), Algorithm::Winograd, "{p:?}");
            let n = 2;
            let x = rand_vec(n * p.in_len(), 61);
            let wt = rand_vec(p.c_out * p.fan_in(), 62);
            let b = rand_vec(p.c_out, 63);
            let (scale, shift) = (rand_vec(p.c_out, 64), rand_vec(p.c_out, 65));
            let r = rand_vec(n * p.out_len(), 66);
            let hw = p.out_hw[0] * p.out_hw[1];
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // The stem is there for its split over threads: the forms of each step in
            // registers and of the residual; the small cases take every form.
            let large = p.kernel == [7, 7];
            let forms = if large {
                vec![
                    (true, true, false, Some(Activation::Relu)),
                    (false, false, false, Some(Activation::Relu)),
                    (true, false, false, Some(Activation::Gelu)),
                    (false, true, true, Some(Activation::Relu)),
                ]
            } else {
                epilogue_forms(false)
            };
            crate::simd::testing::each_bf16_path(|on| {
                for &(bias, affine, residual, act) in &forms {
                    let mut filters = Filters::new(wt.clone(), bias.then(|| b.clone()));
                    filters.set_precision(Precision::Bf16);
                    let epilogue = Epilogue {
                        affine: affine.then_some((&scale[..], &shift[..])),
                        act,
                        residual: residual.then_some(&r[..]),
                    };
                    let run = |threads: usize, epilogue| {
                        let mut y = vec![f32::NAN; n * p.out_len()];
                        crate::threads::install(threads, || {
                            let mut scratch = Vec::new();
                            forward(&p, n, &x, &filters, epilogue, threads, &mut y, &mut scratch)
                        });
                        y
                    };
                    let mut want = run(1, Epilogue::default());
                    for (plane, row) in want.chunks_exact_mut(hw).enumerate() {
                        epilogue.channel(None, plane % p.c_out).apply(row);
                        epilogue.after(plane, row);
                    }
                    for threads in if large { &[1, 2][..] } else { &[1][..] } {
                        let threads = *threads;
                        assert_eq!(
                            bits(&run(threads, epilogue)),
                            bits(&want),
                            "{p:?} on {}, {threads} threads: bias {bias}, affine {affine}, \
                             residual {residual}, {act:?}",
                            on.name()
                        );
                    }
                }
            });
        }
    }

    /// In bf16 each algorithm that multiplies in bf16 (Winograd F(2×2) and F(4×4), im2col with
    /// groups, strides, dilation and 1×1, the direct kernel over its gathered taps) stays
    /// within its bf16 tolerance of the f64 definition, at every level, with every epilogue
    /// form in turn; the bf16 GEMM is the path that ran, and the depthwise kernel ignores the
    /// precision (bit-identical to f32).
    #[test]
    fn bf16_stays_within_its_tolerance_of_the_f64_definition() {
        use crate::simd::{bf16_path, testing::take_ran_bf16, Bf16Path};
        // (c_in, c_out, groups, kernel, stride, padding, [h, w], n): the first six run
        // Winograd (F(2×2) below 12 outputs a side, F(4×4) from 12; odd `c_in` pads each row
        // of pairs, and leaves channels past the last vector to the scalar tail), then four
        // im2col, five direct (an odd number of taps, output rows that cross the GEMM's panels
        // of 64 columns, strides 2 to 4, a batch of 3 with a residual, one large enough to
        // split over threads); the last two stay f32: a direct convolution of fewer than
        // DIRECT_BF16_MIN_TAPS taps and a depthwise one.
        type Case = (usize, usize, usize, usize, usize, usize, [usize; 2], usize);
        use Algorithm::{Depthwise, Direct, Im2col, Winograd};
        let algorithms = [
            [Winograd; 6].as_slice(),
            &[Im2col; 4],
            &[Direct; 6],
            &[Depthwise],
        ];
        let cases: [Case; 17] = [
            (16, 24, 1, 3, 1, 1, [7, 9], 2),
            (32, 17, 1, 3, 1, 1, [14, 13], 1),
            (64, 64, 1, 3, 1, 1, [16, 16], 1),
            (19, 24, 1, 3, 1, 1, [9, 7], 2),
            (17, 20, 1, 3, 1, 1, [13, 12], 1),
            // 8 rows of F(4×4) tiles in blocks of 7: a short last block.
            (32, 32, 1, 3, 1, 1, [32, 32], 1),
            (24, 40, 1, 3, 2, 1, [11, 10], 2),
            (32, 48, 4, 3, 1, 1, [9, 9], 1),
            (33, 65, 1, 1, 1, 0, [5, 7], 3),
            (17, 9, 1, 5, 2, 2, [12, 11], 1),
            (3, 32, 1, 7, 2, 3, [20, 20], 1),
            (3, 33, 1, 5, 1, 2, [13, 70], 2),
            (4, 35, 1, 5, 3, 2, [17, 23], 2),
            (5, 37, 1, 4, 4, 0, [18, 21], 3),
            (3, 64, 1, 7, 2, 3, [64, 64], 1),
            (2, 40, 1, 3, 2, 1, [9, 9], 1),
            (16, 16, 16, 3, 1, 1, [9, 9], 2),
        ];
        let algorithms = algorithms.concat();
        for (seed, &(c_in, c_out, groups, k, stride, pad, [h, w], n)) in cases.iter().enumerate() {
            let out = |side| out_len(side, k, stride, pad, 1, false).unwrap();
            let p = Conv2dParams {
                c_in,
                c_out,
                groups,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw: [out(h), out(w)],
            };
            let s = seed as u64 * 11 + 5;
            let x = rand_vec(n * p.in_len(), s);
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let r = rand_vec(n * p.out_len(), s + 5);
            let (y, mag) = tests::naive64(&p, n, &x, &wt, Some(&b));
            let act = ACTS[seed % ACTS.len()];
            let affine = (seed % 2 == 0).then_some((&scale[..], &shift[..]));
            let residual = (seed % 3 == 1).then_some(&r[..]);
            let epilogue = Epilogue {
                affine,
                act,
                residual,
            };
            let hw = p.out_hw[0] * p.out_hw[1];
            let (want, size) = reference_epilogue(&y, &mag, c_out, hw, affine, residual, act);
            let mut f32_filters = Filters::new(wt.clone(), Some(b.clone()));
            let mut filters = f32_filters.clone();
            filters.set_precision(Precision::Bf16);
            f32_filters.set_precision(Precision::F32);
            assert_eq!(p.algorithm(), algorithms[seed], "case {seed}");
            let bf16 = seed < 15;
            assert_eq!(p.multiplies_in_bf16(), bf16, "case {seed}");
            // The large direct case splits its output channels over threads.
            let large = p.algorithm() == Algorithm::Direct && c_out == 64;
            // Both operands rounded to 8 bits: 2⁻⁸ of the terms' size per product. Winograd
            // rounds the transformed operands, whose constants (up to 8 in F(4×4)'s output
            // transform) stretch that further.
            let tol = match (p.algorithm(), winograd::out_tile(&p)) {
                (Algorithm::Winograd, 4) => 2f64.powi(-4),
                (Algorithm::Winograd, _) => 2f64.powi(-6),
                _ => 2f64.powi(-7),
            };
            crate::simd::testing::each_bf16_path(|on| {
                let level = crate::simd::isa();
                for threads in [1, 2] {
                    let run = |f: &Filters| {
                        let mut got = vec![f32::NAN; n * p.out_len()];
                        // Scratch full of NaN: a value the kernel reads without writing it
                        // (the padding of a pair, say) shows.
                        let mut scratch = vec![f32::NAN; p.scratch_len()];
                        let mut call = || {
                            crate::threads::take_spread();
                            forward(&p, n, &x, f, epilogue, threads, &mut got, &mut scratch);
                            crate::threads::take_spread()
                        };
                        // One thread on this one, so that it records the path that ran.
                        let spread = if threads == 1 {
                            call()
                        } else {
                            crate::threads::install(threads, call)
                        };
                        if large && f.precision == Precision::Bf16 {
                            assert_eq!(spread > 0, threads > 1, "{p:?}: {threads} threads");
                        }
                        got
                    };
                    take_ran_bf16();
                    let got = run(&filters);
                    let ran = take_ran_bf16();
                    let what = format!("bf16 {:?} {p:?} on {}", p.algorithm(), on.name());
                    if !bf16 {
                        assert!(ran.is_empty(), "{what}: ran the bf16 GEMM");
                        let exact = run(&f32_filters);
                        assert!(got
                            .iter()
                            .zip(&exact)
                            .all(|(a, b)| a.to_bits() == b.to_bits()));
                        continue;
                    }
                    // The calling thread's GEMMs, on the level's path.
                    let path = bf16_path();
                    assert_eq!(path, on, "{what}");
                    assert!(
                        threads > 1 || ran == [path],
                        "{what}: ran {ran:?}, not {path:?}"
                    );
                    assert!(level != crate::simd::Isa::Avx2 || path == Bf16Path::Fma(level));
                    assert_close_mag(&got, &want, &size, tol, &what);
                    // And it is not f32: some output moved.
                    let exact = run(&f32_filters);
                    assert!(got != exact, "{what}: bf16 gave the f32 result");
                }
            });
            // The bf16 weights were made once and kept (set_precision gave the cache its
            // cell); f32 filters keep none.
            if bf16 {
                let kept = filters.bf16.get(|| panic!("bf16 weights made again"));
                assert!(matches!(kept, std::borrow::Cow::Borrowed(_)));
            }
            assert!(matches!(
                f32_filters.bf16.get(Vec::new),
                std::borrow::Cow::Owned(_)
            ));
        }
    }
}
