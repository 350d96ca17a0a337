//! Training: the [`Train`] trait every `cnn!` network implements (train-mode forward pass,
//! generated backward pass, one-call training step, freezing), the [`Loss`]es over class
//! targets and [`mse`].
//!
//! The macro generates, per network, a forward pass that keeps what the backward needs in a
//! [`TrainCache`] and a backward pass that walks the same layers in reverse with every shape
//! known at compile time (see [`tape`](self) for how tensors are numbered). The numerics follow
//! PyTorch 2.x in training mode: batch norm with batch statistics and running-statistics
//! updates, dropout with a seeded mask, and the layers' gradients as autograd computes them.

mod tape;

pub use tape::{BackWork, TrainCache};

use ndarray::{Array, ArrayView, ArrayView1, ArrayView2, ArrayView4, Dimension, IxDyn};

use crate::grads::{Grads, ParamSpec, Parameters};
use crate::init::Rng;
use crate::optim::Optimizer;
use crate::store::LINE;
use crate::{Error, Model};

/// A loss over class targets, for [`Train::train_step`] and [`Loss::compute`]. Mean reduction,
/// as PyTorch's default.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Loss<'a> {
    /// `F.cross_entropy(logits, targets)`: the network's output are logits.
    CrossEntropy,
    /// `F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)`.
    CrossEntropyWith {
        /// A weight per class (`[K]`), or `None` for 1.
        weight: Option<&'a [f32]>,
        /// `ε` in `[0, 1]`: the target distribution is `(1 − ε)·onehot + ε/K`.
        label_smoothing: f32,
    },
    /// `F.nll_loss(torch.log(probs), targets)`: for a network that ends in `softmax`, whose
    /// output are probabilities.
    NllOfProbs,
}

impl Loss<'_> {
    /// The loss of `out` (`[N, K]`) against `targets` (`[N]` class indices), and its gradient
    /// `∂loss/∂out` (`[N, K]`), as [`Train::backward`] takes it.
    ///
    /// ```
    /// use cnn_runtime::Loss;
    /// use cnn_runtime::ndarray::{array, Array1};
    /// let logits = array![[2.0f32, 0.0], [0.0, 0.0]];
    /// let (loss, d) = Loss::CrossEntropy.compute(logits.view(), Array1::from(vec![0, 1]).view()).unwrap();
    /// // (−log softmax(2, 0)[0] − log 0.5) / 2
    /// assert!((loss - 0.410_037_6).abs() < 1e-6);
    /// assert_eq!(d.dim(), (2, 2));
    /// ```
    ///
    /// # Errors
    /// [`Error::Targets`] when `targets` does not have `N` entries, a target is `≥ K`, the class
    /// weights are not `K` long, or the label smoothing is outside `[0, 1]`.
    pub fn compute(
        &self,
        out: ArrayView2<'_, f32>,
        targets: ArrayView1<'_, usize>,
    ) -> Result<(f32, ndarray::Array2<f32>), Error> {
        let (n, k) = out.dim();
        let out: Vec<f32> = out.iter().copied().collect();
        let targets: Vec<usize> = targets.iter().copied().collect();
        let mut d = vec![0.0; n * k];
        let loss = self.compute_into(n, k, &out, &targets, &mut d)?;
        let d = ndarray::Array2::from_shape_vec((n, k), d).expect("n·k elements");
        Ok((loss, d))
    }

    /// [`Loss::compute`] on row-major slices: `out` and `d` of `n·k`, `targets` of any length
    /// (checked against `n`).
    pub(crate) fn compute_into(
        &self,
        n: usize,
        k: usize,
        out: &[f32],
        targets: &[usize],
        d: &mut [f32],
    ) -> Result<f32, Error> {
        if targets.len() != n {
            return Err(Error::Targets {
                expected: format!("{n} class indices (one per sample)"),
                found: format!("{}", targets.len()),
            });
        }
        if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= k) {
            return Err(Error::Targets {
                expected: format!("class indices below {k}"),
                found: format!("target {t} for sample {i}"),
            });
        }
        use crate::backward_elementwise::{cross_entropy, nll_of_probs};
        Ok(match *self {
            Loss::CrossEntropy => cross_entropy(n, k, out, targets, None, 0.0, d),
            Loss::CrossEntropyWith {
                weight,
                label_smoothing,
            } => {
                if let Some(w) = weight {
                    if w.len() != k {
                        return Err(Error::Targets {
                            expected: format!("{k} class weights"),
                            found: format!("{}", w.len()),
                        });
                    }
                }
                if !(0.0..=1.0).contains(&label_smoothing) {
                    return Err(Error::Targets {
                        expected: "a label smoothing in [0, 1]".into(),
                        found: format!("{label_smoothing}"),
                    });
                }
                cross_entropy(n, k, out, targets, weight, label_smoothing, d)
            }
            Loss::NllOfProbs => nll_of_probs(n, k, out, targets, d),
        })
    }
}

/// `F.mse_loss(pred, target)` (mean reduction) and its gradient `∂loss/∂pred`, for a network
/// whose output is regressed onto `target` (a feature map, say): pass the gradient to
/// [`Train::backward`].
///
/// # Errors
/// [`Error::Targets`] when `target`'s shape differs from `pred`'s.
pub fn mse<D: Dimension>(
    pred: ArrayView<'_, f32, D>,
    target: ArrayView<'_, f32, D>,
) -> Result<(f32, Array<f32, D>), Error> {
    if pred.shape() != target.shape() {
        return Err(Error::Targets {
            expected: format!("a target of shape {:?}", pred.shape()),
            found: format!("{:?}", target.shape()),
        });
    }
    let p: Vec<f32> = pred.iter().copied().collect();
    let t: Vec<f32> = target.iter().copied().collect();
    let mut d = vec![0.0; p.len()];
    let loss = crate::backward_elementwise::mse(&p, &t, &mut d);
    let d = Array::from_shape_vec(pred.raw_dim(), d).expect("same element count");
    Ok((loss, d))
}

/// The buffers a training step holds, known at compile time: `Train::TRAIN_LAYOUT`, from which
/// [`TrainLayout::bytes`] gives the exact size for a batch size (`forward_train`/`backward`
/// through [`Train::train_step`] on one thread; the optimizer's own state comes on top: one
/// parameter-sized buffer for SGD with momentum, two for Adam).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainLayout {
    /// Elements per sample of every tensor of the graph (the input first, then each layer's
    /// output; `flatten` and `identity` have none of their own). Kept, and their gradients.
    pub slots: &'static [usize],
    /// Channels of each `bn` (its batch mean and `1/std` are kept).
    pub batch_norms: &'static [usize],
    /// Elements per sample at each `dropout` (a mask byte each).
    pub dropouts: &'static [usize],
    /// Elements of all parameter tensors (their gradients).
    pub params: usize,
    /// Parameter tensors (a presence flag each).
    pub param_tensors: usize,
    /// Elements of the largest weight and of the largest bias (each of the 7 other chunks of a
    /// batch sums its weight gradient apart; a frozen layer's gradient lands in one more).
    pub largest_weight: usize,
    /// See [`TrainLayout::largest_weight`].
    pub largest_bias: usize,
    /// The convolutions' forward scratch (elements, whatever the batch size).
    pub forward_scratch: usize,
    /// The convolutions' backward scratch, per chunk of the batch.
    pub backward_scratch: usize,
    /// The fully connected layers' backward scratch per sample of a chunk (the largest
    /// `out_features`).
    pub backward_scratch_per_sample: usize,
    /// Elements per sample of the output (the loss gradient).
    pub output: usize,
}

impl TrainLayout {
    /// Bytes of the buffers a training step holds for a batch of `n` samples: every tensor and
    /// its gradient (`2·Σ slots·n`), one more of the largest (a second gradient being added),
    /// batch statistics, dropout masks, parameter gradients, per-chunk partial gradients and
    /// scratch, the output gradient, in f32 (masks and flags one byte).
    pub const fn bytes(&self, n: usize) -> usize {
        let (mut sum, mut largest, mut i) = (0, 0, 0);
        while i < self.slots.len() {
            sum += self.slots[i];
            if self.slots[i] > largest {
                largest = self.slots[i];
            }
            i += 1;
        }
        let (mut bn, mut i) = (0, 0);
        while i < self.batch_norms.len() {
            bn += 2 * self.batch_norms[i];
            i += 1;
        }
        let (mut masks, mut i) = (0, 0);
        while i < self.dropouts.len() {
            masks += self.dropouts[i] * n;
            i += 1;
        }
        let (per, chunks) = tape::chunk_plan(n);
        let chunks_used = if chunks == 0 { 1 } else { chunks };
        let per_chunk = self.largest_weight + self.largest_bias;
        let partials = if chunks > 1 {
            (chunks - 1) * per_chunk
        } else {
            0
        };
        let scratch_b = if self.backward_scratch > self.backward_scratch_per_sample * per {
            self.backward_scratch
        } else {
            self.backward_scratch_per_sample * per
        };
        let floats = 2 * sum * n
            + largest * n
            + bn
            + self.params
            + per_chunk
            + partials
            + self.forward_scratch
            + (LINE - 1)
            + chunks_used * (scratch_b + LINE - 1)
            + self.output * n;
        let slots = if self.slots.is_empty() {
            1
        } else {
            self.slots.len()
        };
        4 * floats + masks + slots + self.param_tensors
    }
}

/// What a network keeps for training beside its layers: which top-level layers are frozen,
/// the generator of dropout masks, and the buffers a training step reuses. It takes no part in
/// comparisons (`==` ignores it) and clones as a fresh state with the same frozen layers and
/// generator.
#[doc(hidden)]
pub struct TrainState {
    rng: Rng,
    frozen: Vec<bool>,
    cache: TrainCache,
    work: BackWork,
    grads: Option<Grads>,
    d_out: Vec<f32>,
    /// The batch size the buffers are reserved for.
    reserved: usize,
}

impl TrainState {
    /// Reserves every buffer of a step over `n` samples, exactly.
    fn reserve(&mut self, layout: &TrainLayout, n: usize, specs: &'static [ParamSpec]) {
        self.cache.reserve(layout, n);
        self.work.reserve(layout, n);
        if self.d_out.capacity() < n * layout.output {
            self.d_out
                .reserve_exact(n * layout.output - self.d_out.len());
        }
        self.grads.get_or_insert_with(|| Grads::new(specs));
        self.reserved = self.reserved.max(n);
    }

    /// Bytes of the buffers' contents.
    fn capacity_bytes(&self) -> usize {
        self.cache.capacity_bytes()
            + self.work.capacity_bytes()
            + self.d_out.capacity() * 4
            + self.grads.as_ref().map_or(0, Grads::capacity_bytes)
    }

    /// The state of a new network: nothing frozen, dropout masks drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        TrainState {
            rng: Rng::new(seed ^ 0xD00D_5EED),
            frozen: Vec::new(),
            cache: TrainCache::default(),
            work: BackWork::default(),
            grads: None,
            d_out: Vec::new(),
            reserved: 0,
        }
    }

    /// Whether top-level layer `i` is frozen.
    fn is_frozen(&self, i: usize) -> bool {
        self.frozen.get(i).copied().unwrap_or(false)
    }

    /// The lowest top-level layer holding a parameter that is not frozen (`usize::MAX` when
    /// every one is): the backward pass stops below it.
    fn lowest_trainable(&self, specs: &[ParamSpec]) -> usize {
        specs
            .iter()
            .map(|s| s.top)
            .filter(|&t| !self.is_frozen(t))
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// A network's [`TrainState`], made on first use: absent in a new or embedded network (so that
/// an embedded network can be a constant), set by `seeded` or the first training call. Takes
/// no part in comparisons, as the state itself.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct TrainSlot(Option<Box<TrainState>>);

impl TrainSlot {
    /// No state yet (a fresh one, seed 0, on first use).
    pub const fn empty() -> Self {
        TrainSlot(None)
    }

    /// The state of a new network seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        TrainSlot(Some(Box::new(TrainState::new(seed))))
    }

    /// The state, or a fresh one's when there is none yet.
    pub fn get(&self) -> &TrainState {
        static FRESH: std::sync::OnceLock<TrainState> = std::sync::OnceLock::new();
        match &self.0 {
            Some(state) => state,
            None => FRESH.get_or_init(TrainState::default),
        }
    }

    /// The state, made now when there is none yet.
    pub fn get_mut(&mut self) -> &mut TrainState {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for TrainSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for TrainState {
    fn default() -> Self {
        TrainState::new(0)
    }
}

impl Clone for TrainState {
    fn clone(&self) -> Self {
        TrainState {
            rng: self.rng.clone(),
            frozen: self.frozen.clone(),
            ..TrainState::default()
        }
    }
}

impl PartialEq for TrainState {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for TrainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let frozen: Vec<usize> = (0..self.frozen.len()).filter(|&i| self.frozen[i]).collect();
        f.debug_struct("TrainState")
            .field("frozen", &frozen)
            .finish_non_exhaustive()
    }
}

/// Training for a `cnn!` network: every generated network implements it (bring it into scope
/// with `use cnn::Train;`). The `cnn` crate's documentation has a complete example.
///
/// Parameters and gradients are named by their `state_dict` keys; a frozen layer
/// ([`Train::freeze`]) gets neither gradient nor update. Convolutions run on
/// [`num_threads`](crate::num_threads) threads, and the weighted layers' gradients are summed
/// over 8 fixed chunks of the batch in a fixed order, so a step's result is the same bits for
/// any thread count.
pub trait Train: Model + Parameters {
    /// Every learnable parameter tensor, in `state_dict` order.
    #[doc(hidden)]
    const PARAM_SPECS: &'static [ParamSpec];

    /// The buffers of a training step, from the compile-time plan:
    /// `Self::TRAIN_LAYOUT.bytes(n)` is what [`Train::train_step`] holds for a batch of `n`.
    const TRAIN_LAYOUT: TrainLayout;

    /// The generated train-mode forward pass: `x` checked and copied into `cache`, then every
    /// layer, dropout masks drawn from `rng`.
    #[doc(hidden)]
    fn __forward_train(
        &mut self,
        x: ArrayView4<'_, f32>,
        dropout: bool,
        rng: &mut Rng,
        cache: &mut TrainCache,
    ) -> Result<(), Error>;

    /// The generated backward pass from the output gradient already in `work`; layers at
    /// top-level index below `lowest` are skipped, frozen layers get no gradient.
    #[doc(hidden)]
    fn __backward(
        &self,
        cache: &TrainCache,
        work: &mut BackWork,
        grads: &mut Grads,
        frozen: &dyn Fn(usize) -> bool,
        lowest: usize,
    );

    /// The network's training state.
    #[doc(hidden)]
    fn __train_state(&self) -> &TrainState;

    /// The network's training state, mutably.
    #[doc(hidden)]
    fn __train_state_mut(&mut self) -> &mut TrainState;

    /// The forward pass in training mode (`model.train()`) on a batch `[N, C, H, W]`:
    /// batch norms normalise with the batch's statistics and update their running statistics
    /// and `num_batches_tracked`; `dropout` layers drop with the network's seeded generator
    /// when `dropout` is true and are the identity when it is false (deterministic; how the
    /// fixtures' gradients were made). Returns the output and what [`Train::backward`] needs.
    ///
    /// # Errors
    /// [`Error::InputShape`] when C, H, W differ from [`Model::INPUT_SHAPE`];
    /// [`Error::BatchStatistics`] when a `bn` sees one value per channel.
    fn forward_train(
        &mut self,
        x: ArrayView4<'_, f32>,
        dropout: bool,
    ) -> Result<(Array<f32, Self::Dim>, TrainCache), Error> {
        let mut cache = TrainCache::default();
        let mut rng = self.__train_state().rng.clone();
        let r = self.__forward_train(x, dropout, &mut rng, &mut cache);
        self.__train_state_mut().rng = rng;
        r?;
        let mut shape = vec![cache.batch_size()];
        shape.extend_from_slice(Self::OUTPUT_SHAPE);
        let out = Array::from_shape_vec(IxDyn(&shape), cache.output().to_vec())
            .and_then(|a| a.into_dimensionality::<Self::Dim>())
            .expect("the output slot holds N × OUTPUT_SHAPE elements");
        Ok((out, cache))
    }

    /// The gradients of a loss with respect to every parameter not frozen, given the forward
    /// pass's `cache` and `d_out = ∂loss/∂output` (the output's shape), as PyTorch's
    /// `loss.backward()` computes them.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when `cache` comes from another network or `d_out`'s shape is not
    /// the output's.
    fn backward(
        &self,
        cache: &TrainCache,
        d_out: ArrayView<'_, f32, Self::Dim>,
    ) -> Result<Grads, Error> {
        check_cache::<Self>(cache)?;
        let mut shape = vec![cache.batch_size()];
        shape.extend_from_slice(Self::OUTPUT_SHAPE);
        if d_out.shape() != shape.as_slice() {
            return Err(Error::Mismatch {
                what: "d_out",
                expected: format!("the output's shape {shape:?}"),
                found: format!("{:?}", d_out.shape()),
            });
        }
        let mut work = BackWork::default();
        let mut grads = Grads::new(Self::PARAM_SPECS);
        work.begin(cache, d_out.iter());
        let st = self.__train_state();
        let lowest = st.lowest_trainable(Self::PARAM_SPECS);
        self.__backward(cache, &mut work, &mut grads, &|i| st.is_frozen(i), lowest);
        Ok(grads)
    }

    /// One training step on a batch: the train-mode forward pass (dropout on), `loss` against
    /// the class `targets`, the backward pass and `opt`'s update of every parameter not
    /// frozen. Returns the loss. Reuses the network's buffers: once a first step has run, a
    /// step of the same batch size allocates nothing (with an optimizer whose state exists).
    ///
    /// # Errors
    /// As [`Train::forward_train`]; [`Error::Targets`] for targets that do not fit, or a
    /// network whose output is a feature map (use [`Train::forward_train`], your loss and
    /// [`Train::backward`]); the optimizer's errors.
    fn train_step<O: Optimizer + ?Sized>(
        &mut self,
        x: ArrayView4<'_, f32>,
        targets: ArrayView1<'_, usize>,
        loss: Loss<'_>,
        opt: &mut O,
    ) -> Result<f32, Error> {
        let [k] = Self::OUTPUT_SHAPE else {
            return Err(Error::Targets {
                expected: "a network with a flat output [N, K] for class targets".into(),
                found: format!("output shape {:?}", Self::OUTPUT_SHAPE),
            });
        };
        let k = *k;
        let mut st = std::mem::take(self.__train_state_mut());
        let r = (|| {
            let n = x.dim().0;
            if st.reserved < n || st.grads.is_none() {
                st.reserve(&Self::TRAIN_LAYOUT, n, Self::PARAM_SPECS);
            }
            self.__forward_train(x, true, &mut st.rng, &mut st.cache)?;
            st.d_out.resize(n * k, 0.0);
            let value = match targets.as_slice() {
                Some(t) => loss.compute_into(n, k, st.cache.output(), t, &mut st.d_out)?,
                None => {
                    let t: Vec<usize> = targets.iter().copied().collect();
                    loss.compute_into(n, k, st.cache.output(), &t, &mut st.d_out)?
                }
            };
            let lowest = st.lowest_trainable(Self::PARAM_SPECS);
            let grads = st.grads.as_mut().expect("reserved above");
            grads.clear();
            st.work.begin(&st.cache, st.d_out.iter());
            let frozen = |i: usize| st.frozen.get(i).copied().unwrap_or(false);
            self.__backward(&st.cache, &mut st.work, grads, &frozen, lowest);
            opt.step(self, grads)?;
            Ok(value)
        })();
        *self.__train_state_mut() = st;
        r
    }

    /// Freezes top-level layers by index (the index of [`Model::LAYERS`] at depth 0, the first
    /// number of their `state_dict` keys): their parameters get no gradient and no update, and
    /// the backward pass stops below the lowest layer still trained (fine-tuning a classifier
    /// costs only its own backward). Batch norms in frozen layers still update their running
    /// statistics in training mode, as in PyTorch with `requires_grad_(False)`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] for an index that is not a top-level layer (nothing is frozen then).
    fn freeze(&mut self, layers: impl IntoIterator<Item = usize>) -> Result<(), Error> {
        let count = Self::LAYERS.iter().filter(|l| l.depth == 0).count();
        let layers: Vec<usize> = layers.into_iter().collect();
        if let Some(&bad) = layers.iter().find(|&&i| i >= count) {
            return Err(Error::Mismatch {
                what: "layer",
                expected: format!("a top-level layer index below {count}"),
                found: format!("{bad}"),
            });
        }
        let st = self.__train_state_mut();
        st.frozen.resize(count, false);
        for i in layers {
            st.frozen[i] = true;
        }
        Ok(())
    }

    /// Bytes the buffers of [`Train::train_step`] hold now: after a step on a batch of `n`
    /// on one thread, exactly `Self::TRAIN_LAYOUT.bytes(n)` (the largest batch so far counts).
    fn train_buffer_bytes(&self) -> usize {
        self.__train_state().capacity_bytes()
    }

    /// Trains every layer again.
    fn unfreeze_all(&mut self) {
        self.__train_state_mut().frozen.clear();
    }

    /// The frozen top-level layers, in increasing order.
    fn frozen_layers(&self) -> Vec<usize> {
        let f = &self.__train_state().frozen;
        (0..f.len()).filter(|&i| f[i]).collect()
    }

    /// Restarts the generator of dropout masks from `seed` (a new network's starts from its
    /// `seeded` seed, a loaded one's from 0).
    fn set_dropout_seed(&mut self, seed: u64) {
        self.__train_state_mut().rng = TrainState::new(seed).rng;
    }
}

/// `Err(Error::Mismatch)` unless `cache` was filled by network `M`.
fn check_cache<M: Model>(cache: &TrainCache) -> Result<(), Error> {
    if cache.model() == M::NAME {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: "cache",
            expected: format!("a TrainCache from forward_train of `{}`", M::NAME),
            found: if cache.model().is_empty() {
                "an empty cache".into()
            } else {
                format!("one from `{}`", cache.model())
            },
        })
    }
}

/// Copies the batch `x` into slot 0 of `cache` after checking its shape: the start of every
/// generated train-mode forward pass.
///
/// # Errors
/// [`Error::InputShape`] when `x`'s C, H, W are not `shape`.
#[doc(hidden)]
pub fn begin_forward(
    cache: &mut TrainCache,
    model: &'static str,
    x: ArrayView4<'_, f32>,
    shape: [usize; 3],
    counts: [usize; 4],
) -> Result<(), Error> {
    let (n, c, h, w) = x.dim();
    if [c, h, w] != shape {
        return Err(Error::InputShape {
            expected: shape.to_vec(),
            found: vec![n, c, h, w],
        });
    }
    let slot = cache.begin(model, n, c * h * w, counts);
    match x.as_slice() {
        Some(s) => slot.copy_from_slice(s),
        None => {
            for (d, &v) in slot.iter_mut().zip(x.iter()) {
                *d = v;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The trait's provided methods on a network written by hand (what `cnn!` generates for
    //! `input(1, 2, 2) flatten fc(3) tanh dropout(0.5) fc(2)`), without the macro.

    use super::*;
    use crate::layers::Linear;
    use crate::ops::activation::Activation;
    use crate::ops::linear::LinearParams;
    use crate::optim::{Adam, Sgd};
    use crate::{LayerInfo, WorkspaceLayout};
    use ndarray::{Array1, Array2, Array4, ArrayViewMut, Ix2};

    #[derive(Debug, Clone, PartialEq)]
    struct Unit {
        fc0: Linear,
        fc1: Linear,
        state: TrainState,
    }

    const P0: LinearParams = LinearParams {
        in_features: 4,
        out_features: 3,
    };
    const P1: LinearParams = LinearParams {
        in_features: 3,
        out_features: 2,
    };

    const fn info(index: usize, key: &'static str, output: &'static [usize]) -> LayerInfo {
        LayerInfo {
            index,
            key,
            depth: 0,
            dsl: "",
            torch: "",
            output,
            params: 0,
            macs: 0,
        }
    }

    impl Model for Unit {
        type Input = [[[f32; 2]; 2]; 1];
        type Output = [f32; 2];
        type Dim = Ix2;
        const NAME: &'static str = "Unit";
        const INPUT_SHAPE: [usize; 3] = [1, 2, 2];
        const OUTPUT_SHAPE: &'static [usize] = &[2];
        const PARAMS: usize = 23;
        const MACS: usize = 18;
        const LAYERS: &'static [LayerInfo] = &[
            info(0, "0", &[4]),
            info(1, "1", &[3]),
            info(2, "2", &[3]),
            info(3, "3", &[3]),
            info(4, "4", &[2]),
        ];
        const WORKSPACE: WorkspaceLayout = WorkspaceLayout {
            activations: 4,
            scratch: 0,
            channels: 0,
            stack: &[],
        };
        const TORCH: &'static str = "";

        fn from_safetensors(_: &[u8]) -> Result<Self, Error> {
            Err(Error::Safetensors {
                reason: "the unit network has no weight file".into(),
            })
        }

        fn to_safetensors(&self) -> Vec<u8> {
            let mut out = crate::weights::TensorWriter::new();
            self.fc0.save(&mut out);
            self.fc1.save(&mut out);
            out.finish()
        }

        fn seeded(seed: u64) -> Self {
            let mut rng = Rng::new(seed);
            Unit {
                fc0: Linear::seeded("1", P0, true, &mut rng),
                fc1: Linear::seeded("4", P1, true, &mut rng),
                state: TrainState::new(seed),
            }
        }

        fn forward_batch(&self, _: ArrayView4<'_, f32>) -> Result<Array2<f32>, Error> {
            Err(Error::Safetensors {
                reason: "the unit network only trains".into(),
            })
        }

        fn forward_into(
            &self,
            _: ArrayView4<'_, f32>,
            _: ArrayViewMut<'_, f32, Ix2>,
            _: &mut crate::Workspace,
        ) -> Result<(), Error> {
            Err(Error::Safetensors {
                reason: "the unit network only trains".into(),
            })
        }

        fn forward(&self, _: &Self::Input) -> Self::Output {
            [f32::NAN; 2]
        }

        fn set_precision(&mut self, _: crate::Precision) {}

        fn precision(&self) -> crate::Precision {
            crate::Precision::F32
        }
    }

    impl Parameters for Unit {
        fn visit_params_mut(
            &mut self,
            f: &mut crate::grads::ParamVisitor<'_>,
        ) -> Result<(), Error> {
            self.fc0.visit_params(&["1.weight", "1.bias"], 0, f)?;
            self.fc1.visit_params(&["4.weight", "4.bias"], 2, f)
        }
    }

    impl Train for Unit {
        const PARAM_SPECS: &'static [ParamSpec] = &[
            ParamSpec {
                key: "1.weight",
                shape: &[3, 4],
                top: 1,
            },
            ParamSpec {
                key: "1.bias",
                shape: &[3],
                top: 1,
            },
            ParamSpec {
                key: "4.weight",
                shape: &[2, 3],
                top: 4,
            },
            ParamSpec {
                key: "4.bias",
                shape: &[2],
                top: 4,
            },
        ];
        const TRAIN_LAYOUT: TrainLayout = TrainLayout {
            slots: &[4, 3, 3, 3, 2],
            batch_norms: &[],
            dropouts: &[3],
            params: 23,
            param_tensors: 4,
            largest_weight: 12,
            largest_bias: 3,
            forward_scratch: 0,
            backward_scratch: 0,
            backward_scratch_per_sample: 3,
            output: 2,
        };

        fn __forward_train(
            &mut self,
            x: ArrayView4<'_, f32>,
            dropout: bool,
            rng: &mut Rng,
            t: &mut TrainCache,
        ) -> Result<(), Error> {
            begin_forward(t, "Unit", x, [1, 2, 2], [5, 0, 1, 4])?;
            t.linear(&self.fc0, 0, 1);
            t.activation(Activation::Tanh, 1, 2);
            t.dropout(0.5, dropout, rng, 2, 3, 0);
            t.linear(&self.fc1, 3, 4);
            Ok(())
        }

        fn __backward(
            &self,
            c: &TrainCache,
            b: &mut BackWork,
            g: &mut Grads,
            frozen: &dyn Fn(usize) -> bool,
            lowest: usize,
        ) {
            if lowest > 4 {
                return;
            }
            b.linear(&self.fc1, c, (3, 4), g, 2, !frozen(4), lowest < 4);
            if lowest > 3 {
                return;
            }
            b.dropout(0.5, c, (2, 3, 0));
            if lowest > 2 {
                return;
            }
            b.activation(Activation::Tanh, c, (1, 2));
            if lowest > 1 {
                return;
            }
            b.linear(&self.fc0, c, (0, 1), g, 0, !frozen(1), false);
        }

        fn __train_state(&self) -> &TrainState {
            &self.state
        }

        fn __train_state_mut(&mut self) -> &mut TrainState {
            &mut self.state
        }
    }

    fn data() -> (Array4<f32>, Array1<usize>) {
        let x = Array4::from_shape_fn((5, 1, 2, 2), |(n, _, h, w)| {
            ((n * 3 + h * 2 + w) % 7) as f32 / 3.0 - 1.0
        });
        (x, Array1::from(vec![0, 1, 1, 0, 1]))
    }

    #[test]
    fn train_step_lowers_the_loss_and_holds_exactly_its_layout() {
        let mut net = Unit::seeded(1);
        let (x, y) = data();
        let mut opt = Sgd::new(0.5).momentum(0.9);
        let first = net
            .train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
            .unwrap();
        assert_eq!(net.train_buffer_bytes(), Unit::TRAIN_LAYOUT.bytes(5));
        let mut last = first;
        for _ in 0..40 {
            last = net
                .train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
                .unwrap();
        }
        assert!(last < first * 0.5, "{first} → {last}");
        assert_eq!(net.train_buffer_bytes(), Unit::TRAIN_LAYOUT.bytes(5));
        // A larger batch grows every buffer to exactly its size.
        // (One sample more: the output gradient's room grows from 10 to exactly 12.)
        let x6 = Array4::from_shape_fn((6, 1, 2, 2), |(n, _, h, w)| (n + h + w) as f32 / 9.0);
        let y6 = Array1::from(vec![0, 1, 0, 1, 0, 1]);
        net.train_step(x6.view(), y6.view(), Loss::CrossEntropy, &mut opt.clone())
            .unwrap();
        assert_eq!(net.train_buffer_bytes(), Unit::TRAIN_LAYOUT.bytes(6));
        // The same step as forward_train (dropout on) + compute + backward + step.
        let (mut a, mut b) = (net.clone(), net.clone());
        let (mut oa, mut ob) = (opt.clone(), opt);
        let la = a
            .train_step(x.view(), y.view(), Loss::CrossEntropy, &mut oa)
            .unwrap();
        let (out, cache) = b.forward_train(x.view(), true).unwrap();
        let (lb, d) = Loss::CrossEntropy.compute(out.view(), y.view()).unwrap();
        let g = b.backward(&cache, d.view()).unwrap();
        ob.step(&mut b, &g).unwrap();
        assert_eq!(la, lb);
        assert_eq!(a.to_safetensors(), b.to_safetensors());
    }

    #[test]
    fn freezing_stops_the_backward_pass_below_the_lowest_trained_layer() {
        let mut net = Unit::seeded(2);
        let (x, y) = data();
        assert!(matches!(
            net.freeze([5]),
            Err(Error::Mismatch { what: "layer", .. })
        ));
        assert!(net.frozen_layers().is_empty());
        let (out, cache) = net.forward_train(x.view(), false).unwrap();
        let (_, d) = Loss::CrossEntropy.compute(out.view(), y.view()).unwrap();
        let all = net.backward(&cache, d.view()).unwrap();
        assert_eq!(all.len(), 4);
        net.freeze([1]).unwrap();
        assert_eq!(net.frozen_layers(), [1]);
        let top = net.backward(&cache, d.view()).unwrap();
        assert_eq!(
            top.iter().map(|(k, _, _)| k).collect::<Vec<_>>(),
            ["4.weight", "4.bias"]
        );
        assert_eq!(top.get("4.weight"), all.get("4.weight"));
        net.freeze([4]).unwrap();
        assert!(net.backward(&cache, d.view()).unwrap().is_empty());
        let before = net.to_safetensors();
        net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut Adam::new(0.1))
            .unwrap();
        assert_eq!(net.to_safetensors(), before, "everything frozen");
        net.unfreeze_all();
        net.freeze([4]).unwrap();
        let g = net.backward(&cache, d.view()).unwrap();
        assert_eq!(g.get("1.weight"), all.get("1.weight"));
        assert_eq!(g.len(), 2);
        assert!(format!("{:?}", net.state).contains("frozen: [4]"));
        assert_eq!(net.state.clone().frozen, net.state.frozen);
    }

    #[test]
    fn bad_caches_gradients_and_targets_are_errors() {
        let mut net = Unit::seeded(3);
        let (x, y) = data();
        let (out, cache) = net.forward_train(x.view(), false).unwrap();
        let e = net
            .backward(&TrainCache::default(), out.view())
            .unwrap_err();
        assert!(e.to_string().contains("an empty cache"), "{e}");
        let e = net
            .backward(&cache, Array2::zeros((5, 3)).view())
            .unwrap_err();
        assert!(e.to_string().contains("[5, 2]"), "{e}");
        let wrong = Array4::<f32>::zeros((2, 1, 2, 3));
        assert!(matches!(
            net.forward_train(wrong.view(), false),
            Err(Error::InputShape { .. })
        ));
        let mut opt = Sgd::new(0.1);
        for (targets, what) in [
            (vec![0, 1], "5 class indices"),
            (vec![0, 1, 2, 0, 0], "target 2 for sample 2"),
        ] {
            let e = net
                .train_step(
                    x.view(),
                    Array1::from(targets).view(),
                    Loss::CrossEntropy,
                    &mut opt,
                )
                .unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let w = [1.0f32, 2.0, 3.0];
        for loss in [
            Loss::CrossEntropyWith {
                weight: Some(&w),
                label_smoothing: 0.0,
            },
            Loss::CrossEntropyWith {
                weight: None,
                label_smoothing: -0.1,
            },
        ] {
            assert!(matches!(
                net.train_step(x.view(), y.view(), loss, &mut opt),
                Err(Error::Targets { .. })
            ));
        }
        // Weighted and smoothed cross-entropy is accepted and finite.
        let loss = Loss::CrossEntropyWith {
            weight: Some(&w[..2]),
            label_smoothing: 0.1,
        };
        let l = net.train_step(x.view(), y.view(), loss, &mut opt).unwrap();
        assert!(l.is_finite() && l > 0.0);
        // Gradients of another network.
        let mut other = Grads::new(&[ParamSpec {
            key: "1.weight",
            shape: &[3, 4],
            top: 1,
        }]);
        let _ = other.weight_bias(0, false);
        let e = opt.step(&mut net, &other).unwrap_err();
        assert!(matches!(e, Error::Mismatch { what: "grads", .. }), "{e}");
        let mut shaped = Grads::new(&[ParamSpec {
            key: "1.weight",
            shape: &[4, 4],
            top: 1,
        }]);
        let _ = shaped.weight_bias(0, false);
        assert!(opt.step(&mut net, &shaped).is_err());
        // mse: shapes must agree.
        let a = Array2::<f32>::zeros((2, 3));
        assert!(matches!(
            mse(a.view(), Array2::zeros((3, 2)).view()),
            Err(Error::Targets { .. })
        ));
        let (l, d) = mse(a.view(), Array2::from_elem((2, 3), 1.0).view()).unwrap();
        assert_eq!(l, 1.0);
        assert!(d.iter().all(|&v| (v + 2.0 / 6.0).abs() < 1e-7));
    }

    #[test]
    fn dropout_draws_from_the_networks_generator() {
        let (x, _) = data();
        let mut a = Unit::seeded(4);
        let mut b = Unit::seeded(4);
        let (ya, _) = a.forward_train(x.view(), true).unwrap();
        let (yb, _) = b.forward_train(x.view(), true).unwrap();
        assert_eq!(ya, yb);
        let (ya2, _) = a.forward_train(x.view(), true).unwrap();
        assert_ne!(ya, ya2, "the generator moves on");
        let mut c = a.clone();
        let (ya3, _) = a.forward_train(x.view(), true).unwrap();
        let (yc3, _) = c.forward_train(x.view(), true).unwrap();
        assert_eq!(ya3, yc3, "a clone continues the same masks");
        b.set_dropout_seed(4);
        let (yb2, _) = b.forward_train(x.view(), true).unwrap();
        assert_eq!(yb2, ya, "restarted from the seed");
        let (y0, _) = a.forward_train(x.view(), false).unwrap();
        let (y1, _) = a.forward_train(x.view(), false).unwrap();
        assert_eq!(y0, y1);
        assert_eq!(TrainState::new(1), TrainState::new(2), "not compared");
    }

    /// `Model::RAM_BYTES`' default: 4 bytes for each float of the workspace, the input
    /// (1×2×2) and the output (2).
    #[test]
    fn ram_bytes_count_the_workspace_the_input_and_the_output() {
        assert_eq!(Unit::RAM_BYTES, 4 * (Unit::WORKSPACE.sample_len() + 4 + 2));
        assert_eq!(Unit::WEIGHT_BYTES, 4 * 23);
        assert_eq!(Unit::FLASH_BYTES, Unit::WEIGHT_BYTES);
    }
}
