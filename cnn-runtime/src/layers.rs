//! Parameter holders of the weighted layers: the fields of a generated network struct.
//!
//! Each holder pairs a `const` descriptor computed by the `cnn!` macro with its tensors and its
//! `state_dict` key prefix (`"3"`, or `"3.body.0"` inside a block). All three follow one convention:
//!
//! + `load(weights, key, params[, bias])` reads the tensors under `{key}.weight`, …
//! + `seeded(key, params[, bias], rng)` initialises them the way PyTorch does
//! + `save(&self, out)` writes them back under the same keys
//!
//! where `bias` says whether the layer has one (`nobias` / `bias=False` otherwise).

#[cfg(feature = "std")]
use std::{format, vec, vec::Vec};

#[cfg(feature = "std")]
use crate::grads::ParamVisitor;
#[cfg(feature = "std")]
use crate::init::Rng;
use crate::ops::batchnorm::{self, BatchNormParams};
use crate::ops::conv::{Conv2dParams, Filters};
use crate::ops::conv_transpose::ConvTranspose2dParams;
use crate::ops::linear::{self, LinearParams};
use crate::store::Buf;
#[cfg(feature = "std")]
use crate::weights::{TensorWriter, Weights};
#[cfg(feature = "std")]
use crate::Error;
use crate::Precision;

#[cfg(feature = "std")]
/// `{key}.weight` of `weight_shape` and, when `bias_len` is given, `{key}.bias` of that
/// length: the tensors of every layer with a weight and an optional bias.
fn read_weight_bias(
    w: &Weights<'_>,
    key: &'static str,
    weight_shape: &[usize],
    bias_len: Option<usize>,
) -> Result<(Vec<f32>, Option<Vec<f32>>), Error> {
    let weight = w.f32(&format!("{key}.weight"), weight_shape)?;
    let bias = match bias_len {
        Some(len) => Some(w.f32(&format!("{key}.bias"), &[len])?),
        None => None,
    };
    Ok((weight, bias))
}

#[cfg(feature = "std")]
/// PyTorch's default initialisation of a weight and an optional bias: both
/// `U(−1/√fan_in, 1/√fan_in)`, the weight drawn first.
fn seed_weight_bias(
    rng: &mut Rng,
    weight_len: usize,
    bias_len: Option<usize>,
    fan_in: usize,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let weight = rng.fan_in_uniform(weight_len, fan_in);
    let bias = bias_len.map(|len| rng.fan_in_uniform(len, fan_in));
    (weight, bias)
}

#[cfg(feature = "std")]
/// Visits a weight and an optional bias as parameters `base` and `base + 1`, under
/// `keys[0]` and `keys[1]` (the generated code's constant `state_dict` keys).
fn visit_weight_bias(
    keys: &[&'static str],
    base: usize,
    weight: &mut [f32],
    bias: Option<&mut [f32]>,
    f: &mut ParamVisitor<'_>,
) -> Result<(), Error> {
    f(base, keys[0], weight)?;
    match bias {
        Some(b) => f(base + 1, keys[1], b),
        None => Ok(()),
    }
}

#[cfg(feature = "std")]
/// Writes `{key}.weight` and, when present, `{key}.bias`.
fn write_weight_bias(
    out: &mut TensorWriter,
    key: &'static str,
    weight_shape: &[usize],
    weight: &[f32],
    bias: Option<&[f32]>,
) {
    out.f32(format!("{key}.weight"), weight_shape, weight);
    if let Some(b) = bias {
        out.f32(format!("{key}.bias"), &[b.len()], b);
    }
}

/// PyTorch: `nn.Conv2d`, parameters `weight [c_out, c_in/groups, KH, KW]` and `bias [c_out]`.
///
/// The tensors are read-only once built, because [`Filters`] keeps a copy of the weights in the
/// layout of the convolution's algorithm, made on first use.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// The shape, fixed at compile time.
    pub(crate) params: Conv2dParams,
    /// The `state_dict` key prefix.
    key: &'static str,
    /// The weight and bias.
    pub(crate) filters: Filters,
}

impl Conv2d {
    /// A layer of an embedded network: tensors in static data, and `prepared` the weights in
    /// the layout of `params.algorithm()` (Winograd's `U`, the direct kernel's packing; `None`
    /// for the algorithms that read PyTorch's layout), all laid out by the `cnn!` macro at
    /// compile time. Without `std`, `weight` may be empty when `prepared` is given.
    pub const fn embedded(
        key: &'static str,
        params: Conv2dParams,
        weight: &'static [f32],
        bias: Option<&'static [f32]>,
        prepared: Option<&'static [f32]>,
    ) -> Self {
        Conv2d {
            params,
            key,
            filters: Filters::embedded(weight, bias, prepared),
        }
    }

    /// What the layer multiplies in.
    pub fn precision(&self) -> Precision {
        self.filters.precision()
    }

    /// The layer multiplying in `precision`, for constants (an embedded network declared
    /// `#[precision(bf16)]`): without the cell [`set_precision`](Self::set_precision) gives it,
    /// a constant makes its bf16 weights on every call; a clone of it keeps them.
    pub const fn with_precision(mut self, precision: Precision) -> Self {
        self.filters.mark_precision(precision);
        self
    }

    /// The layer with its weights in the bf16 GEMM's layout made ahead of time, `w16` as
    /// `bf16_weights_into` (in the hidden `__private` module) writes them for this layer:
    /// an embedded network declared `#[precision(bf16)]` gets them from the `cnn!` macro in
    /// static data, so that it converts nothing at run time. They are dropped (and made again
    /// from the weights on first use) when training changes the weights.
    ///
    /// # Panics
    /// If the layer has made its own bf16 copy (it was set to bf16 at run time); on first use
    /// in bf16, if `w16` is shorter than that layout.
    pub const fn with_bf16_weights(mut self, w16: &'static [u32]) -> Self {
        self.filters.mark_bf16(w16);
        self
    }

    /// Makes the layer multiply in `precision` (see [`Precision`]; depthwise convolutions stay
    /// f32); the bf16 copy of the weights is made on next use.
    #[cfg(feature = "std")]
    pub fn set_precision(&mut self, precision: Precision) {
        self.filters.set_precision(precision);
    }

    #[cfg(feature = "std")]
    /// Reads `{key}.weight` and, when `bias`, `{key}.bias`.
    ///
    /// # Errors
    /// A missing, mis-shaped or mistyped tensor.
    pub fn load(
        w: &Weights<'_>,
        key: &'static str,
        params: Conv2dParams,
        bias: bool,
    ) -> Result<Self, Error> {
        let (weight, bias) =
            read_weight_bias(w, key, &params.weight_shape(), bias.then_some(params.c_out))?;
        Ok(Conv2d {
            params,
            key,
            filters: Filters::new(weight, bias),
        })
    }

    #[cfg(feature = "std")]
    /// PyTorch's default initialisation: weight and bias `U(−1/√fan_in, 1/√fan_in)`.
    pub fn seeded(key: &'static str, params: Conv2dParams, bias: bool, rng: &mut Rng) -> Self {
        let weight_len = params.weight_shape().iter().product();
        let (weight, bias) = seed_weight_bias(
            rng,
            weight_len,
            bias.then_some(params.c_out),
            params.fan_in(),
        );
        Conv2d {
            params,
            key,
            filters: Filters::new(weight, bias),
        }
    }

    /// Whether this layer, `bn` and `act`, then `pool`, run as one pass
    /// (`ops::conv::forward_pooled`): a batch norm that folds, and a convolution, activation
    /// and pool that `ops::conv::fuses_pool` takes.
    pub(crate) fn fuses_pool(
        &self,
        bn: Option<&BatchNorm2d>,
        act: Option<crate::ops::activation::Activation>,
        pool: &crate::ops::pool::Pool2dParams,
    ) -> bool {
        bn.is_none_or(BatchNorm2d::folds)
            && crate::ops::conv::fuses_pool(&self.params, &self.filters, act, pool)
    }

    #[cfg(feature = "std")]
    /// Writes the tensors under `{key}.weight` and `{key}.bias`.
    pub fn save(&self, out: &mut TensorWriter) {
        write_weight_bias(
            out,
            self.key,
            &self.params.weight_shape(),
            self.filters.weight(),
            self.filters.bias(),
        );
    }

    #[cfg(feature = "std")]
    /// Calls `f` on the weight (parameter `base`, key `keys[0]`) and the bias (`base + 1`,
    /// `keys[1]`), for an optimizer; the kernel's copy of the weights is made again on next use.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn visit_params(
        &mut self,
        keys: &[&'static str],
        base: usize,
        f: &mut ParamVisitor<'_>,
    ) -> Result<(), Error> {
        self.filters
            .update(|w, b| visit_weight_bias(keys, base, w, b, f))
    }
}

/// PyTorch: `nn.ConvTranspose2d`, parameters `weight [c_in, c_out/groups, KH, KW]` (input
/// channels first) and `bias [c_out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose2d {
    /// The shape, fixed at compile time.
    pub(crate) params: ConvTranspose2dParams,
    /// The `state_dict` key prefix.
    key: &'static str,
    /// `[c_in, c_out/groups, KH, KW]` row-major.
    pub(crate) weight: Buf,
    /// `[c_out]`, absent for `nobias`.
    pub(crate) bias: Option<Buf>,
}

impl ConvTranspose2d {
    /// A layer of an embedded network, its tensors in static data.
    pub const fn embedded(
        key: &'static str,
        params: ConvTranspose2dParams,
        weight: &'static [f32],
        bias: Option<&'static [f32]>,
    ) -> Self {
        ConvTranspose2d {
            params,
            key,
            weight: Buf::Static(weight),
            bias: Buf::from_static(bias),
        }
    }

    #[cfg(feature = "std")]
    /// Reads `{key}.weight` and, when `bias`, `{key}.bias`.
    ///
    /// # Errors
    /// A missing, mis-shaped or mistyped tensor.
    pub fn load(
        w: &Weights<'_>,
        key: &'static str,
        params: ConvTranspose2dParams,
        bias: bool,
    ) -> Result<Self, Error> {
        let (weight, bias) =
            read_weight_bias(w, key, &params.weight_shape(), bias.then_some(params.c_out))?;
        Ok(ConvTranspose2d {
            params,
            key,
            weight: weight.into(),
            bias: bias.map(Buf::from),
        })
    }

    #[cfg(feature = "std")]
    /// PyTorch's default initialisation: weight and bias `U(−1/√fan_in, 1/√fan_in)`, where
    /// PyTorch computes `fan_in` from the weight's dimension 1, `c_out/groups · KH · KW`.
    pub fn seeded(
        key: &'static str,
        params: ConvTranspose2dParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let (weight, bias) = seed_weight_bias(
            rng,
            params.weight_len(),
            bias.then_some(params.c_out),
            params.taps_per_input(),
        );
        ConvTranspose2d {
            params,
            key,
            weight: weight.into(),
            bias: bias.map(Buf::from),
        }
    }

    #[cfg(feature = "std")]
    /// Writes the tensors under `{key}.weight` and `{key}.bias`.
    pub fn save(&self, out: &mut TensorWriter) {
        write_weight_bias(
            out,
            self.key,
            &self.params.weight_shape(),
            &self.weight,
            self.bias.as_deref(),
        );
    }

    #[cfg(feature = "std")]
    /// Calls `f` on the weight (parameter `base`, key `keys[0]`) and the bias (`base + 1`,
    /// `keys[1]`), for an optimizer.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn visit_params(
        &mut self,
        keys: &[&'static str],
        base: usize,
        f: &mut ParamVisitor<'_>,
    ) -> Result<(), Error> {
        visit_weight_bias(keys, base, &mut self.weight, self.bias.as_deref_mut(), f)
    }
}

/// PyTorch: `nn.BatchNorm2d`, parameters `weight`, `bias` (if affine), buffers `running_mean`,
/// `running_var`, `num_batches_tracked` (if tracking running statistics).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// The shape and options, fixed at compile time.
    pub(crate) params: BatchNormParams,
    /// The `state_dict` key prefix, for error messages.
    pub(crate) key: &'static str,
    /// `[C]` scale, when affine.
    pub(crate) weight: Option<Buf>,
    /// `[C]` shift, when affine.
    pub(crate) bias: Option<Buf>,
    /// `[C]` running mean and variance, when tracking running statistics.
    pub(crate) running: Option<(Buf, Buf)>,
    /// Training steps PyTorch counted, kept for the round trip.
    pub(crate) num_batches_tracked: Option<i64>,
    /// The eval-mode map `y·scale + shift` per channel (`[C]` each), computed at compile time
    /// for an embedded network from the tensors above (`ops::batchnorm::scale_shift`), so that
    /// a convolution before it applies it in its epilogue without computing it; dropped when
    /// the tensors change (training).
    pub(crate) folded: Option<(&'static [f32], &'static [f32])>,
}

/// The tensors and options; `folded` is derived from them (and absent outside an embedded
/// network), so it takes no part.
impl PartialEq for BatchNorm2d {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.key == other.key
            && self.weight == other.weight
            && self.bias == other.bias
            && self.running == other.running
            && self.num_batches_tracked == other.num_batches_tracked
    }
}

impl BatchNorm2d {
    /// A layer of an embedded network: `tensors` are `[weight, bias, running_mean,
    /// running_var]` in static data (each `None` where the options have none; without `std`
    /// they may be empty when `folded` is given), and `folded` the eval-mode `(scale, shift)`
    /// per channel, computed by the `cnn!` macro at compile time when the layer tracks running
    /// statistics.
    pub const fn embedded(
        key: &'static str,
        params: BatchNormParams,
        tensors: [Option<&'static [f32]>; 4],
        num_batches_tracked: Option<i64>,
        folded: Option<(&'static [f32], &'static [f32])>,
    ) -> Self {
        let [weight, bias, mean, var] = tensors;
        BatchNorm2d {
            params,
            key,
            weight: Buf::from_static(weight),
            bias: Buf::from_static(bias),
            running: match (mean, var) {
                (Some(m), Some(v)) => Some((Buf::Static(m), Buf::Static(v))),
                _ => None,
            },
            num_batches_tracked,
            folded,
        }
    }

    #[cfg(feature = "std")]
    /// Reads the parameters and buffers the options call for.
    ///
    /// # Errors
    /// A missing, mis-shaped or mistyped tensor.
    pub fn load(
        w: &Weights<'_>,
        key: &'static str,
        params: BatchNormParams,
    ) -> Result<Self, Error> {
        let c = [params.channels];
        let (weight, bias) = if params.affine {
            (
                Some(w.f32(&format!("{key}.weight"), &c)?.into()),
                Some(w.f32(&format!("{key}.bias"), &c)?.into()),
            )
        } else {
            (None, None)
        };
        let (running, num_batches_tracked) = if params.track_running_stats {
            (
                Some((
                    w.f32(&format!("{key}.running_mean"), &c)?.into(),
                    w.f32(&format!("{key}.running_var"), &c)?.into(),
                )),
                Some(w.int_scalar(&format!("{key}.num_batches_tracked"))?),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm2d {
            params,
            key,
            weight,
            bias,
            running,
            num_batches_tracked,
            folded: None,
        })
    }

    #[cfg(feature = "std")]
    /// PyTorch's initial state: weight 1, bias 0, running mean 0, running variance 1. Draws
    /// nothing from `rng` (the state is constant); it is there for the holders' one convention.
    pub fn seeded(key: &'static str, params: BatchNormParams, _rng: &mut Rng) -> Self {
        let c = params.channels;
        BatchNorm2d {
            params,
            key,
            weight: params.affine.then(|| vec![1.0; c].into()),
            bias: params.affine.then(|| vec![0.0; c].into()),
            running: params
                .track_running_stats
                .then(|| (vec![0.0; c].into(), vec![1.0; c].into())),
            num_batches_tracked: params.track_running_stats.then_some(0),
            folded: None,
        }
    }

    #[cfg(feature = "std")]
    /// Writes the tensors under their `state_dict` keys.
    pub fn save(&self, out: &mut TensorWriter) {
        let (i, c) = (self.key, [self.params.channels]);
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            out.f32(format!("{i}.weight"), &c, w);
            out.f32(format!("{i}.bias"), &c, b);
        }
        if let Some((m, v)) = &self.running {
            out.f32(format!("{i}.running_mean"), &c, m);
            out.f32(format!("{i}.running_var"), &c, v);
        }
        if let Some(t) = self.num_batches_tracked {
            out.i64_scalar(format!("{i}.num_batches_tracked"), t);
        }
    }

    #[cfg(feature = "std")]
    /// Calls `f` on the weight (parameter `base`, key `keys[0]`) and the bias (`base + 1`,
    /// `keys[1]`) of an affine batch norm, for an optimizer; nothing without them.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn visit_params(
        &mut self,
        keys: &[&'static str],
        base: usize,
        f: &mut ParamVisitor<'_>,
    ) -> Result<(), Error> {
        self.folded = None;
        match (&mut self.weight, &mut self.bias) {
            (Some(w), Some(b)) => visit_weight_bias(keys, base, w, Some(b), f),
            _ => Ok(()),
        }
    }

    #[cfg(feature = "std")]
    /// Training mode on a batch of `n`: `y` normalised with the batch statistics, `mean` and
    /// `inv_std` (`[channels]`) kept for the backward pass, and, when the layer tracks them,
    /// the running statistics updated and `num_batches_tracked` counted up, as PyTorch.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`] when there is one value per channel (`n·H·W < 2`).
    pub(crate) fn train_forward(
        &mut self,
        n: usize,
        x: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        inv_std: &mut [f32],
    ) -> Result<(), Error> {
        let p = self.params;
        if n * p.hw < 2 {
            return Err(Error::BatchStatistics {
                layer: self.key,
                shape: vec![n, p.channels, p.hw],
            });
        }
        crate::backward_elementwise::batchnorm_train_forward(
            &p,
            n,
            x,
            y,
            self.weight.as_deref(),
            self.bias.as_deref(),
            self.running.as_mut().map(|(m, v)| (&mut m[..], &mut v[..])),
            mean,
            inv_std,
        );
        self.folded = None;
        if let Some(t) = &mut self.num_batches_tracked {
            *t += 1;
        }
        Ok(())
    }

    #[cfg(feature = "std")]
    /// Normalises a batch of `n` samples in place.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`] when batch statistics are needed and there is only one value
    /// per channel (`n·H·W = 1`).
    #[cfg(feature = "std")]
    pub(crate) fn forward(&self, n: usize, x: &mut [f32]) -> Result<(), Error> {
        if self.normalise(n, x) {
            Ok(())
        } else {
            // n ≥ 1 here, so H·W = 1: the map is 1×1.
            Err(Error::BatchStatistics {
                layer: self.key,
                shape: vec![n, self.params.channels, 1, 1],
            })
        }
    }

    /// Normalises a batch of `n` samples in place; `false` (and `x` untouched) when batch
    /// statistics are needed and there is only one value per channel (`n·H·W = 1`).
    pub(crate) fn normalise(&self, n: usize, x: &mut [f32]) -> bool {
        let p = &self.params;
        if n == 0 {
            return true;
        }
        if self.running.is_none() && n * p.hw <= 1 {
            return false;
        }
        batchnorm::batchnorm(
            p,
            n,
            x,
            self.weight.as_deref(),
            self.bias.as_deref(),
            self.running.as_ref().map(|(m, v)| (&m[..], &v[..])),
        );
        true
    }

    /// The `state_dict` key prefix.
    pub(crate) fn key(&self) -> &'static str {
        self.key
    }

    /// Whether it folds into a convolution's epilogue: running statistics (or their map made
    /// at compile time), not the batch's own.
    pub(crate) fn folds(&self) -> bool {
        self.folded.is_some() || self.running.is_some()
    }
}

/// PyTorch: `nn.Linear`, parameters `weight [out, in]` and `bias [out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// The shape, fixed at compile time.
    pub(crate) params: LinearParams,
    /// The `state_dict` key prefix.
    key: &'static str,
    /// `[out_features, in_features]` row-major.
    pub(crate) weight: Buf,
    /// `[out_features]`, absent for `nobias`.
    pub(crate) bias: Option<Buf>,
    /// What the layer multiplies in.
    precision: Precision,
    /// With [`Precision::Bf16`], `weightᵀ` packed for the bf16 GEMM, made on first use.
    #[cfg(feature = "std")]
    bf16: crate::gemm::bf16::Cache,
}

impl Linear {
    /// A layer with these tensors, in f32.
    fn with(key: &'static str, params: LinearParams, weight: Buf, bias: Option<Buf>) -> Self {
        Linear {
            params,
            key,
            weight,
            bias,
            precision: Precision::F32,
            #[cfg(feature = "std")]
            bf16: Default::default(),
        }
    }

    /// What the layer multiplies in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The layer multiplying in `precision`, for constants: as
    /// [`Conv2d::with_precision`].
    pub const fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The layer with its weight in the bf16 GEMM's layout made ahead of time, `w16` as
    /// `bf16_weight_into` (in the hidden `__private` module) writes it: as
    /// [`Conv2d::with_bf16_weights`].
    ///
    /// # Panics
    /// If the layer has made its own bf16 copy (it was set to bf16 at run time); on first use
    /// in bf16, if `w16` is shorter than that layout.
    #[cfg_attr(not(feature = "std"), allow(unused_mut))]
    pub const fn with_bf16_weights(mut self, w16: &'static [u32]) -> Self {
        #[cfg(feature = "std")]
        {
            self.bf16.set_fixed(w16);
        }
        #[cfg(not(feature = "std"))]
        let _ = w16;
        self
    }

    /// Makes the layer multiply in `precision` (see [`Precision`]); the bf16 copy of the
    /// weight is made on next use.
    #[cfg(feature = "std")]
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        if precision == Precision::Bf16 {
            self.bf16.enable();
        }
    }

    /// A layer of an embedded network, its tensors in static data.
    pub const fn embedded(
        key: &'static str,
        params: LinearParams,
        weight: &'static [f32],
        bias: Option<&'static [f32]>,
    ) -> Self {
        Linear {
            params,
            key,
            weight: Buf::Static(weight),
            bias: Buf::from_static(bias),
            precision: Precision::F32,
            #[cfg(feature = "std")]
            bf16: crate::gemm::bf16::Cache::EMPTY,
        }
    }

    #[cfg(feature = "std")]
    /// Reads `{key}.weight` and, when `bias`, `{key}.bias`.
    ///
    /// # Errors
    /// A missing, mis-shaped or mistyped tensor.
    pub fn load(
        w: &Weights<'_>,
        key: &'static str,
        params: LinearParams,
        bias: bool,
    ) -> Result<Self, Error> {
        let (o, i) = (params.out_features, params.in_features);
        let (weight, bias) = read_weight_bias(w, key, &[o, i], bias.then_some(o))?;
        Ok(Linear::with(
            key,
            params,
            weight.into(),
            bias.map(Buf::from),
        ))
    }

    #[cfg(feature = "std")]
    /// PyTorch's default initialisation: weight and bias `U(−1/√in, 1/√in)`.
    pub fn seeded(key: &'static str, params: LinearParams, bias: bool, rng: &mut Rng) -> Self {
        let (o, i) = (params.out_features, params.in_features);
        let (weight, bias) = seed_weight_bias(rng, o * i, bias.then_some(o), i);
        Linear::with(key, params, weight.into(), bias.map(Buf::from))
    }

    #[cfg(feature = "std")]
    /// Writes the tensors under `{key}.weight` and `{key}.bias`.
    pub fn save(&self, out: &mut TensorWriter) {
        let shape = [self.params.out_features, self.params.in_features];
        write_weight_bias(out, self.key, &shape, &self.weight, self.bias.as_deref());
    }

    #[cfg(feature = "std")]
    /// Calls `f` on the weight (parameter `base`, key `keys[0]`) and the bias (`base + 1`,
    /// `keys[1]`), for an optimizer.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn visit_params(
        &mut self,
        keys: &[&'static str],
        base: usize,
        f: &mut ParamVisitor<'_>,
    ) -> Result<(), Error> {
        self.bf16.clear();
        visit_weight_bias(keys, base, &mut self.weight, self.bias.as_deref_mut(), f)
    }

    /// Runs the layer on a batch of `n` samples, in its precision.
    pub(crate) fn forward(&self, n: usize, input: &[f32], out: &mut [f32]) {
        #[cfg(feature = "std")]
        if self.precision == Precision::Bf16 {
            let p = &self.params;
            let w16 = self.bf16.get(|| {
                let mut packed = vec![0; linear::bf16_weight_len(p)];
                linear::bf16_weight_into(p, &self.weight, &mut packed);
                packed
            });
            linear::linear_bf16(p, n, input, &w16, self.bias.as_deref(), out);
            return;
        }
        linear::linear(
            &self.params,
            n,
            input,
            &self.weight,
            self.bias.as_deref(),
            out,
        );
    }
}

#[cfg(test)]
/// A batch norm of `channels` on maps of `hw` values, with random running statistics
/// and affine parameters, or without running statistics (batch statistics).
pub(crate) fn batch_norm(channels: usize, hw: usize, running: bool, seed: u64) -> BatchNorm2d {
    let params = BatchNormParams {
        channels,
        hw,
        eps: 1e-3,
        momentum: 0.1,
        affine: true,
        track_running_stats: running,
    };
    let mut bn = BatchNorm2d::seeded("1", params, &mut crate::init::Rng::new(seed));
    let r = crate::test_util::rand_vec(4 * channels, seed);
    let c = channels;
    if running {
        bn.running = Some((
            r[..c].to_vec().into(),
            r[c..2 * c].iter().map(|v| v.abs() + 0.5).collect(),
        ));
    }
    bn.weight = Some(r[2 * c..3 * c].iter().map(|v| 2.0 * v).collect());
    bn.bias = Some(r[3 * c..].to_vec().into());
    bn
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// In bf16 a layer packs its weight once, on first use, and keeps it: `set_precision`
    /// gives the cache its cell. In f32 it has none (nothing to keep).
    #[test]
    fn a_layer_set_to_bf16_packs_its_weight_once() {
        let p = LinearParams {
            in_features: 5,
            out_features: 3,
        };
        let weight: Vec<f32> = (0..15).map(|i| i as f32 / 7.0 - 1.0).collect();
        let mut fc = Linear::with("0", p, Buf::Owned(weight.clone()), None);
        fc.set_precision(Precision::F32);
        assert!(
            matches!(fc.bf16.get(Vec::new), Cow::Owned(_)),
            "no cell in f32"
        );
        fc.set_precision(Precision::Bf16);
        let mut out = [0.0f32; 6];
        fc.forward(2, &[0.5; 10], &mut out);
        let mut want = vec![0; crate::gemm::bf16::packed_len(5, 3)];
        crate::gemm::bf16::pack_b(5, 3, &weight, (1, 5), &mut want);
        match fc.bf16.get(|| panic!("packed a second time")) {
            Cow::Borrowed(kept) => assert_eq!(kept, &want[..]),
            Cow::Owned(_) => panic!("the packed weight was not kept"),
        }
        // A layer made for a constant has no cell (it packs on every call); its clone does.
        let constant =
            Linear::with("0", p, Buf::Owned(weight), None).with_precision(Precision::Bf16);
        assert!(matches!(constant.bf16.get(Vec::new), Cow::Owned(_)));
        let copy = constant.clone();
        copy.forward(2, &[0.5; 10], &mut out);
        assert!(matches!(
            copy.bf16.get(|| panic!("the clone packed again")),
            Cow::Borrowed(_)
        ));
    }

    /// bf16 weights made ahead of time (the `cnn!` macro's, for an embedded network) are the
    /// ones a constant multiplies by, in place of its own conversion; a clone shares them;
    /// once training changes the weights, the layer makes its own from the new ones.
    #[test]
    fn bf16_weights_made_ahead_of_time_are_used_until_the_weights_change() {
        let p = LinearParams {
            in_features: 5,
            out_features: 3,
        };
        let weight: Vec<f32> = (0..15).map(|i| i as f32 / 7.0 - 1.0).collect();
        let mut made = vec![0; linear::bf16_weight_len(&p)];
        linear::bf16_weight_into(&p, &weight, &mut made);
        let made: &'static [u32] = Box::leak(made.into_boxed_slice());
        let x = [0.5, -1.0, 2.0, 0.25, 1.5];
        let run = |fc: &Linear| {
            let mut out = [0.0f32; 3];
            fc.forward(1, &x, &mut out);
            out
        };
        let constant = |w16: &'static [u32]| {
            Linear::with("0", p, Buf::Owned(weight.clone()), None)
                .with_precision(Precision::Bf16)
                .with_bf16_weights(w16)
        };
        let mut own = Linear::with("0", p, Buf::Owned(weight.clone()), None);
        own.set_precision(Precision::Bf16);
        let fc = constant(made);
        assert_eq!(run(&fc), run(&own));
        match fc.bf16.get(|| panic!("converted at run time")) {
            Cow::Borrowed(w) => assert!(std::ptr::eq(w, made)),
            Cow::Owned(_) => panic!("not the static copy"),
        }
        // Zeros in place of the weights: the product is zero, so they are what it used.
        let zeros: &'static [u32] = Box::leak(vec![0; made.len()].into_boxed_slice());
        assert_eq!(run(&constant(zeros)), [0.0; 3]);
        let mut copy = constant(zeros).clone();
        assert_eq!(run(&copy), [0.0; 3], "a clone keeps the static copy");
        // A training step changes the weights: the static copy is dropped, the next use
        // converts the new weights (here the same ones) and keeps them.
        copy.visit_params(&["0.weight"], 0, &mut |_, _, _| Ok(()))
            .unwrap();
        assert_eq!(run(&copy), run(&own));
        assert!(matches!(
            copy.bf16.get(|| panic!("converted twice")),
            Cow::Borrowed(_)
        ));
        // A layer that made its own copy is not a constant.
        let set_at_run_time = std::panic::catch_unwind(|| own.clone().with_bf16_weights(made));
        assert!(set_at_run_time.is_err());
    }

    /// The same for a convolution, with the weights laid out as `bf16_weights_into` writes
    /// them for each algorithm that multiplies in bf16.
    #[test]
    fn a_convolution_multiplies_by_its_bf16_weights_made_ahead_of_time() {
        use crate::ops::conv::{bf16_weights_into, bf16_weights_len, prepare_into};
        // Winograd, im2col (stride 2), direct (a 7×7 RGB stem).
        for (seed, (c_in, k, stride)) in [(16, 3, 1), (16, 3, 2), (3, 7, 2)].into_iter().enumerate()
        {
            let cp = Conv2dParams {
                c_in,
                c_out: 32,
                groups: 1,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                in_hw: [12, 12],
                out_hw: [12 / stride, 12 / stride],
            };
            assert!(cp.multiplies_in_bf16());
            let layer = || Conv2d::seeded("0", cp, true, &mut Rng::new(seed as u64));
            let mut own = layer();
            own.set_precision(Precision::Bf16);
            let w = own.filters.weight().to_vec();
            let mut prepared = vec![0.0; cp.prepared_len()];
            prepare_into(&cp, &w, &mut prepared);
            let mut made = vec![0; bf16_weights_len(&cp)];
            bf16_weights_into(&cp, &w, &prepared, &mut made);
            let made: &'static [u32] = Box::leak(made.into_boxed_slice());
            let constant = |w16| {
                layer()
                    .with_precision(Precision::Bf16)
                    .with_bf16_weights(w16)
            };
            let x = crate::test_util::rand_vec(cp.in_len(), 4);
            let run = |c: &Conv2d| {
                let mut out = vec![f32::NAN; cp.out_len()];
                let e = crate::ops::conv::Epilogue::default();
                crate::ops::conv::forward(&cp, 1, &x, &c.filters, e, 1, &mut out, &mut Vec::new());
                out
            };
            let want = run(&own);
            assert_eq!(run(&constant(made)), want, "{cp:?}");
            if crate::ops::conv::runs_on_tiles(&cp) {
                // The tiles read the f32 weights (packed their own way), not Winograd's `U`.
                continue;
            }
            let zeros: &'static [u32] = Box::leak(vec![0; made.len()].into_boxed_slice());
            let bias = own.filters.bias().unwrap().to_vec();
            let plane = cp.out_hw[0] * cp.out_hw[1];
            let only_bias: Vec<f32> = bias.iter().flat_map(|&b| vec![b; plane]).collect();
            assert_eq!(run(&constant(zeros)), only_bias, "{cp:?}");
        }
    }

    /// Two batch norms are equal when their tensors and options are, the eval-mode fold aside.
    #[test]
    fn batch_norms_are_equal_when_their_tensors_are() {
        let p = BatchNormParams {
            channels: 2,
            hw: 4,
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
            track_running_stats: true,
        };
        let bn = BatchNorm2d::seeded("1", p, &mut Rng::new(2));
        assert!(bn == bn.clone());
        let mut folded = bn.clone();
        folded.folded = Some((&[1.0, 1.0], &[0.0, 0.0]));
        assert!(folded == bn, "the fold is derived, not compared");
        let differ = |f: &dyn Fn(&mut BatchNorm2d)| {
            let mut other = bn.clone();
            f(&mut other);
            assert!(other != bn);
        };
        differ(&|b| b.weight = Some(vec![2.0, 2.0].into()));
        differ(&|b| b.bias = Some(vec![0.5, 0.5].into()));
        differ(&|b| b.running = Some((vec![1.0, 0.0].into(), vec![1.0, 1.0].into())));
        differ(&|b| b.num_batches_tracked = Some(7));
        differ(&|b| b.params.eps = 1e-3);
        differ(&|b| b.key = "2");
    }

    /// A transposed convolution hands its weight and bias to the optimiser under their keys and
    /// indices, and takes what it writes.
    #[test]
    fn a_transposed_convolution_visits_its_weight_and_bias() {
        use crate::ops::conv_transpose::ConvTranspose2dParams;
        let p = ConvTranspose2dParams {
            c_in: 2,
            c_out: 3,
            groups: 1,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            in_hw: [2, 2],
            out_hw: [4, 4],
        };
        let mut layer = ConvTranspose2d::seeded("4", p, true, &mut Rng::new(1));
        let mut seen = Vec::new();
        layer
            .visit_params(&["4.weight", "4.bias"], 7, &mut |i, key, v| {
                seen.push((i, key, v.len()));
                v.fill(i as f32);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [(7, "4.weight", 24), (8, "4.bias", 3)]);
        assert!(layer.weight.iter().all(|&w| w == 7.0));
        assert_eq!(layer.bias.as_deref(), Some(&[8.0; 3][..]));
    }

    /// Each layer reports the precision it was set to, at run time and for constants, and
    /// its bf16 copy does not enter equality: a layer equals its clone, packed or not.
    #[test]
    fn layers_report_their_precision_and_equal_their_clones() {
        let p = LinearParams {
            in_features: 4,
            out_features: 2,
        };
        let mut fc = Linear::with("0", p, Buf::Owned(vec![0.25; 8]), None);
        assert_eq!(fc.precision(), Precision::F32);
        fc.set_precision(Precision::Bf16);
        assert_eq!(fc.precision(), Precision::Bf16);
        let fresh = fc.clone();
        fc.forward(1, &[1.0; 4], &mut [0.0; 2]);
        assert!(
            fc == fresh && fresh == fc.clone(),
            "the bf16 copy entered equality"
        );
        let constant = Linear::with("0", p, Buf::Owned(vec![0.25; 8]), None);
        assert_eq!(
            constant.with_precision(Precision::Bf16).precision(),
            Precision::Bf16
        );

        let cp = Conv2dParams {
            c_in: 2,
            c_out: 3,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [6, 6],
            out_hw: [6, 6],
        };
        let mut conv = Conv2d::seeded("1", cp, true, &mut Rng::new(7));
        assert_eq!(conv.precision(), Precision::F32);
        conv.set_precision(Precision::Bf16);
        assert_eq!(conv.precision(), Precision::Bf16);
        assert!(conv == conv.clone());
        let constant = Conv2d::seeded("1", cp, true, &mut Rng::new(7));
        assert_eq!(
            constant.with_precision(Precision::Bf16).precision(),
            Precision::Bf16
        );
    }
}
