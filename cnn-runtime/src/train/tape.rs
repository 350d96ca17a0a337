//! The two halves of a training step that generated code drives: [`TrainCache`], the
//! train-mode forward pass that keeps every tensor its backward needs, and [`BackWork`], the
//! backward pass over it.
//!
//! `cnn!` numbers every tensor of the network's graph at compile time (a *slot*: 0 is the
//! input, each layer's output the next number; `flatten` and `identity` reuse their input's
//! slot) and emits one call per layer with its slots, then the backward calls in reverse. So
//! there is no tape of boxed operations: the cache holds only tensors, by slot, and every call
//! knows its layer's shapes. A slot's output always has a higher number than its inputs.
//!
//! Buffers are grown, never shrunk: a second step of the same batch size allocates nothing.

use crate::backward::{conv2d_backward, conv_transpose2d_backward, linear_backward};
use crate::backward_elementwise::{
    activation_backward, batchnorm_backward, dropout_backward, dropout_train_forward,
    pool2d_backward, saved_for_backward, softmax_backward, upsample2d_backward, Saved,
};
use crate::grads::Grads;
use crate::init::Rng;
use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear};
use crate::ops::activation::{activation, softmax, Activation};
use crate::ops::conv::{self, Epilogue};
use crate::ops::pool::{pool2d, Pool2dParams};
use crate::ops::upsample::{upsample2d, Upsample2dParams};
use crate::ops::{conv_transpose, linear};
use crate::store::LINE;
use crate::threads::{for_each, install, num_threads};
use crate::Error;

use super::TrainLayout;

/// `v` resized to `len` (grown with zeros; the contents are about to be overwritten).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

/// Slot `i` (read) and slot `o` (written, resized to `len`) of `slots`, for `i < o`.
fn read_write(slots: &mut [Vec<f32>], i: usize, o: usize, len: usize) -> (&[f32], &mut [f32]) {
    assert!(i < o, "slot {o} must come after its input {i}");
    let (head, tail) = slots.split_at_mut(o);
    (&head[i], sized(&mut tail[0], len))
}

/// Runs `f(threads)` with the thread count of [`num_threads`]: on a worker of the pool when it
/// is above 1 (where the kernels split their work), else on the calling thread.
fn on_threads<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    let t = num_threads();
    if t > 1 {
        install(t, || f(t))
    } else {
        f(1)
    }
}

/// The sample chunks a weighted layer's backward splits a batch into, whatever the thread
/// count: each chunk's weight gradient is summed apart, then the chunks' are added in order,
/// so the result is the same bits for any number of threads.
pub(crate) const CHUNKS: usize = 8;

/// `(samples per chunk, chunks)` of a batch of `n` (one chunk of at least one sample when
/// `n ≤ 1`).
pub(crate) const fn chunk_plan(n: usize) -> (usize, usize) {
    let per = n.div_ceil(CHUNKS);
    let per = if per == 0 { 1 } else { per };
    (per, n.div_ceil(per))
}

/// Grows `v`'s capacity to exactly `cap` if it is smaller (never shrinks).
fn at_least<T>(v: &mut Vec<T>, cap: usize) {
    if v.capacity() < cap {
        v.reserve_exact(cap - v.len());
    }
}

/// Bytes of the contents `v` has room for.
fn held<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// A weighted layer's backward kernel on one chunk of samples: `(n, x, dy, dx, dw, db,
/// scratch)`, as [`conv2d_backward`] without the layer.
type ChunkKernel<'a> = dyn Fn(usize, &[f32], &[f32], Option<&mut [f32]>, &mut [f32], Option<&mut [f32]>, &mut Vec<f32>)
    + Sync
    + 'a;

/// The other chunks' weight and bias gradients and every chunk's scratch.
#[derive(Debug, Clone, Default)]
struct Partials {
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
}

/// A weighted layer's gradients over a batch of `n` (`in_len`/`out_len` elements per sample of
/// `x`/`dx` and `dy`): `kernel` on up to [`CHUNKS`] chunks of samples, in parallel on
/// [`num_threads`] threads, the first chunk writing `dw`/`db` and the others partial sums that
/// are then added in chunk order.
#[allow(clippy::too_many_arguments)] // the batch, its tensors and the chunk buffers
fn chunked(
    (n, in_len, out_len): (usize, usize, usize),
    x: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    parts: &mut Partials,
    kernel: &ChunkKernel<'_>,
) {
    let (per, chunks) = chunk_plan(n);
    parts.scratch.resize_with(CHUNKS, Vec::new);
    if chunks <= 1 || in_len == 0 || out_len == 0 {
        kernel(n, x, dy, dx, dw, db, &mut parts.scratch[0]);
        return;
    }
    parts.dw.resize_with(CHUNKS, Vec::new);
    parts.db.resize_with(CHUNKS, Vec::new);
    let (wl, bl) = (dw.len(), db.as_ref().map_or(0, |b| b.len()));
    for c in 1..chunks {
        sized(&mut parts.dw[c], wl);
        sized(&mut parts.db[c], bl);
    }
    let mut db = db;
    {
        let dws =
            std::iter::once(&mut *dw).chain(parts.dw[1..chunks].iter_mut().map(|v| &mut v[..]));
        let mut db_first = db.as_deref_mut();
        let has_bias = db_first.is_some();
        let mut db_rest = parts.db[1..chunks].iter_mut();
        let dbs = (0..chunks).map(move |c| {
            if !has_bias {
                None
            } else if c == 0 {
                db_first.take()
            } else {
                db_rest.next().map(|v| &mut v[..])
            }
        });
        let mut dx_chunks = dx.map(|d| d[..n * in_len].chunks_mut(per * in_len));
        let dxs = (0..chunks).map(move |_| dx_chunks.as_mut().and_then(|it| it.next()));
        let items = x[..n * in_len]
            .chunks(per * in_len)
            .zip(dy[..n * out_len].chunks(per * out_len))
            .zip(dxs)
            .zip(dws.zip(dbs))
            .zip(parts.scratch.iter_mut());
        let threads = num_threads().min(chunks);
        let run = || {
            for_each(threads, items, |_, ((((xc, dyc), dxc), (dwc, dbc)), sc)| {
                kernel(xc.len() / in_len, xc, dyc, dxc, dwc, dbc, sc);
            })
        };
        if threads > 1 {
            install(threads, run);
        } else {
            run();
        }
    }
    // LOOP over the other chunks, in order
    for c in 1..chunks {
        for (d, &v) in dw.iter_mut().zip(&parts.dw[c]) {
            *d += v;
        }
        if let Some(db) = db.as_deref_mut() {
            for (d, &v) in db.iter_mut().zip(&parts.db[c]) {
                *d += v;
            }
        }
    }
}

/// What a train-mode forward pass ([`Train::forward_train`](crate::Train::forward_train))
/// keeps for its backward pass: every intermediate tensor, the batch statistics of each
/// `bn` and the mask of each `dropout`. Hand it to [`Train::backward`](crate::Train::backward)
/// of the same network.
#[derive(Debug, Clone, Default)]
pub struct TrainCache {
    /// The network that filled it (`Model::NAME`), checked by its backward.
    model: &'static str,
    /// The batch size.
    n: usize,
    /// The tensors by slot, `n × (elements per sample)` each, NCHW row-major.
    acts: Vec<Vec<f32>>,
    /// Per `bn` (in the order the forward runs them): the batch mean and `1/√(var + eps)`.
    stats: Vec<(Vec<f32>, Vec<f32>)>,
    /// Per `dropout`: which elements survived; empty when dropout ran as the identity.
    masks: Vec<Vec<bool>>,
    /// The slot of the network's output.
    out: usize,
    /// The forward kernels' scratch.
    scratch: Vec<f32>,
}

impl TrainCache {
    /// The batch size of the forward pass that filled it.
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// The network's output, `n × (elements per sample)` row-major.
    pub fn output(&self) -> &[f32] {
        self.acts.get(self.out).map_or(&[], Vec::as_slice)
    }

    /// Reserves exactly what a forward pass of `layout`'s network over `n` samples needs.
    pub(crate) fn reserve(&mut self, layout: &TrainLayout, n: usize) {
        self.acts.resize_with(layout.slots.len().max(1), Vec::new);
        for (a, &len) in self.acts.iter_mut().zip(layout.slots) {
            at_least(a, n * len);
        }
        self.stats
            .resize_with(layout.batch_norms.len(), Default::default);
        for ((m, v), &c) in self.stats.iter_mut().zip(layout.batch_norms) {
            at_least(m, c);
            at_least(v, c);
        }
        self.masks.resize_with(layout.dropouts.len(), Vec::new);
        for (m, &len) in self.masks.iter_mut().zip(layout.dropouts) {
            at_least(m, n * len);
        }
        // Scratch is taken from a cache line's start (`Scratch::at_least`).
        at_least(&mut self.scratch, layout.forward_scratch + LINE - 1);
    }

    /// Bytes of the buffers' contents (what [`TrainLayout::bytes`] counts).
    pub(crate) fn capacity_bytes(&self) -> usize {
        let acts: usize = self.acts.iter().map(held).sum();
        let stats: usize = self.stats.iter().map(|(m, v)| held(m) + held(v)).sum();
        let masks: usize = self.masks.iter().map(held).sum();
        acts + stats + masks + held(&self.scratch)
    }

    /// The name of the network that filled it.
    pub(crate) fn model(&self) -> &'static str {
        self.model
    }

    /// The slot of the output.
    pub(crate) fn out_slot(&self) -> usize {
        self.out
    }

    /// Starts a forward pass of `model` over a batch of `n` whose graph has `slots` tensors,
    /// `bns` batch norms and `dropouts` dropouts, its output in slot `out`; returns slot 0,
    /// for the caller to fill with the input (`n × per_sample` elements).
    pub(crate) fn begin(
        &mut self,
        model: &'static str,
        n: usize,
        per_sample: usize,
        [slots, bns, dropouts, out]: [usize; 4],
    ) -> &mut [f32] {
        self.model = model;
        self.n = n;
        self.out = out;
        self.acts.resize_with(slots.max(1), Vec::new);
        self.stats.resize_with(bns, Default::default);
        self.masks.resize_with(dropouts, Vec::new);
        sized(&mut self.acts[0], n * per_sample)
    }

    /// `o = conv2d(i)` with the layer's bias (no fused epilogue: the `bn` after it needs the
    /// convolution's own output).
    #[doc(hidden)]
    pub fn conv2d(&mut self, layer: &Conv2d, i: usize, o: usize) {
        let (p, n) = (&layer.params, self.n);
        let (x, y) = read_write(&mut self.acts, i, o, n * p.out_len());
        let scratch = &mut self.scratch;
        on_threads(|t| conv::forward(p, n, x, &layer.filters, Epilogue::default(), t, y, scratch));
    }

    /// `o = conv_transpose2d(i)` with the layer's bias.
    #[doc(hidden)]
    pub fn conv_transpose2d(&mut self, layer: &ConvTranspose2d, i: usize, o: usize) {
        let (p, n) = (&layer.params, self.n);
        let (x, y) = read_write(&mut self.acts, i, o, n * p.out_len());
        let scratch = &mut self.scratch;
        let (w, b) = (&layer.weight[..], layer.bias.as_deref());
        on_threads(|t| conv_transpose::forward(p, n, x, w, b, Epilogue::default(), t, y, scratch));
    }

    /// `o = linear(i)`.
    #[doc(hidden)]
    pub fn linear(&mut self, layer: &Linear, i: usize, o: usize) {
        let (p, n) = (&layer.params, self.n);
        let (x, y) = read_write(&mut self.acts, i, o, n * p.out_features);
        linear::linear(p, n, x, &layer.weight, layer.bias.as_deref(), y);
    }

    /// `o = bn(i)` in training mode (batch statistics; the running statistics and
    /// `num_batches_tracked` updated when the layer tracks them), its statistics kept as the
    /// `s`-th.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`] with one value per channel (`n·H·W < 2`), as PyTorch's
    /// "Expected more than 1 value per channel when training".
    #[doc(hidden)]
    pub fn batchnorm(
        &mut self,
        layer: &mut BatchNorm2d,
        i: usize,
        o: usize,
        s: usize,
    ) -> Result<(), Error> {
        let (p, n) = (layer.params, self.n);
        let (x, y) = read_write(&mut self.acts, i, o, n * p.channels * p.hw);
        let (mean, inv_std) = &mut self.stats[s];
        layer.train_forward(n, x, y, sized(mean, p.channels), sized(inv_std, p.channels))
    }

    /// `o = act(i)`.
    #[doc(hidden)]
    pub fn activation(&mut self, act: Activation, i: usize, o: usize) {
        let len = self.acts[i].len();
        let (x, y) = read_write(&mut self.acts, i, o, len);
        y.copy_from_slice(x);
        activation(act, y);
    }

    /// `o = softmax(i)` over `channels` at each of `spatial` positions.
    #[doc(hidden)]
    pub fn softmax(&mut self, channels: usize, spatial: usize, i: usize, o: usize) {
        let len = self.acts[i].len();
        let (x, y) = read_write(&mut self.acts, i, o, len);
        y.copy_from_slice(x);
        softmax(self.n, channels, spatial, y);
    }

    /// `o = pool(i)`.
    #[doc(hidden)]
    pub fn pool2d(&mut self, p: &Pool2dParams, i: usize, o: usize) {
        let n = self.n;
        let (x, y) = read_write(&mut self.acts, i, o, n * p.out_len());
        pool2d(p, n, x, y);
    }

    /// `o = upsample(i)`.
    #[doc(hidden)]
    pub fn upsample2d(&mut self, p: &Upsample2dParams, i: usize, o: usize) {
        let n = self.n;
        let (x, y) = read_write(&mut self.acts, i, o, n * p.out_len());
        upsample2d(p, n, x, y);
    }

    /// `o = dropout(i)` with drop probability `p`: a mask from `rng` kept as the `m`-th, or,
    /// when `enabled` is false, the identity (an empty mask).
    #[doc(hidden)]
    pub fn dropout(&mut self, p: f32, enabled: bool, rng: &mut Rng, i: usize, o: usize, m: usize) {
        let len = self.acts[i].len();
        let (x, y) = read_write(&mut self.acts, i, o, len);
        let mask = &mut self.masks[m];
        if enabled {
            mask.resize(len, false);
            dropout_train_forward(p, rng, x, y, mask);
        } else {
            mask.clear();
            y.copy_from_slice(x);
        }
    }

    /// `o = a + b` (the end of a residual block).
    #[doc(hidden)]
    pub fn add(&mut self, a: usize, b: usize, o: usize) {
        let len = self.acts[a].len();
        let (head, tail) = self.acts.split_at_mut(o);
        let y = sized(&mut tail[0], len);
        for ((y, &u), &v) in y.iter_mut().zip(&head[a]).zip(&head[b]) {
            *y = u + v;
        }
    }

    /// `o = cat(parts, dim=1)`: each `(slot, channels)` of `plane` pixels per channel, in
    /// order.
    #[doc(hidden)]
    pub fn concat(&mut self, parts: &[(usize, usize)], plane: usize, o: usize) {
        let n = self.n;
        let total: usize = parts.iter().map(|&(_, c)| c).sum::<usize>() * plane;
        let (head, tail) = self.acts.split_at_mut(o);
        let y = sized(&mut tail[0], n * total);
        let mut offset = 0;
        for &(slot, c) in parts {
            let len = c * plane;
            if len > 0 {
                for (dst, src) in y.chunks_exact_mut(total).zip(head[slot].chunks_exact(len)) {
                    dst[offset..offset + len].copy_from_slice(src);
                }
            }
            offset += len;
        }
    }
}

/// A weighted layer's backward method on [`BackWork`]: its backward kernel over [`chunked`]
/// samples through [`BackWork::weighted`]. `$parts` gives the layer's weight, whether it has a
/// bias, and the elements per sample of its input and output.
macro_rules! weighted_backward {
    ($(#[$doc:meta])* $name:ident($layer:ty, $kernel:path): |$l:ident| $parts:expr) => {
        $(#[$doc])*
        #[doc(hidden)]
        #[allow(clippy::too_many_arguments)] // the layer, its slots, its gradients and switches
        pub fn $name(
            &mut self,
            $l: &$layer,
            c: &TrainCache,
            (i, o): (usize, usize),
            grads: &mut Grads,
            w: usize,
            trainable: bool,
            need_dx: bool,
        ) {
            let (weight, bias, in_len, out_len) = $parts;
            let p = &$l.params;
            let kernel = |n: usize,
                          x: &[f32],
                          dy: &[f32],
                          dx: Option<&mut [f32]>,
                          dw: &mut [f32],
                          db: Option<&mut [f32]>,
                          s: &mut Vec<f32>| {
                $kernel(p, n, x, weight, dy, dx, dw, db, s)
            };
            let switches = (w, bias, trainable, need_dx);
            self.weighted(c, (i, o), grads, switches, (c.n, in_len, out_len), &kernel);
        }
    };
}

/// The buffers of a backward pass: the gradient of each slot, whether a consumer has written
/// it yet, and the kernels' scratch. Kept between steps by
/// [`Train::train_step`](crate::Train::train_step), so that a steady-state step allocates
/// nothing.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct BackWork {
    /// `∂loss/∂slot` per slot.
    d: Vec<Vec<f32>>,
    /// Whether `d[slot]` holds a gradient yet in this pass (a second consumer adds to it).
    have: Vec<bool>,
    /// A second consumer's contribution, before it is added.
    tmp: Vec<f32>,
    /// A frozen layer's weight and bias gradients, computed and dropped.
    sink: (Vec<f32>, Vec<f32>),
    /// The weighted layers' per-chunk buffers.
    parts: Partials,
}

/// Where a backward kernel writes `∂loss/∂input`: the slot's buffer when no consumer has
/// written it yet, else the temporary that [`BackWork::finish`] adds in.
enum Target {
    Slot,
    Tmp,
}

impl BackWork {
    /// Reserves exactly what a backward pass of `layout`'s network over `n` samples needs.
    pub(crate) fn reserve(&mut self, layout: &TrainLayout, n: usize) {
        let slots = layout.slots.len().max(1);
        self.d.resize_with(slots, Vec::new);
        for (d, &len) in self.d.iter_mut().zip(layout.slots) {
            at_least(d, n * len);
        }
        at_least(&mut self.have, slots);
        let largest = layout.slots.iter().copied().max().unwrap_or(0);
        at_least(&mut self.tmp, n * largest);
        at_least(&mut self.sink.0, layout.largest_weight);
        at_least(&mut self.sink.1, layout.largest_bias);
        let (per, chunks) = chunk_plan(n);
        let p = &mut self.parts;
        p.scratch.resize_with(CHUNKS, Vec::new);
        let scratch = layout
            .backward_scratch
            .max(layout.backward_scratch_per_sample * per);
        for s in &mut p.scratch[..chunks.max(1)] {
            at_least(s, scratch + LINE - 1);
        }
        if chunks > 1 {
            p.dw.resize_with(CHUNKS, Vec::new);
            p.db.resize_with(CHUNKS, Vec::new);
            for c in 1..chunks {
                at_least(&mut p.dw[c], layout.largest_weight);
                at_least(&mut p.db[c], layout.largest_bias);
            }
        }
    }

    /// Bytes of the buffers' contents (what [`TrainLayout::bytes`] counts).
    pub(crate) fn capacity_bytes(&self) -> usize {
        let p = &self.parts;
        let vecs = |v: &Vec<Vec<f32>>| -> usize { v.iter().map(held).sum() };
        vecs(&self.d)
            + held(&self.have)
            + held(&self.tmp)
            + held(&self.sink.0)
            + held(&self.sink.1)
            + vecs(&p.dw)
            + vecs(&p.db)
            + vecs(&p.scratch)
    }

    /// Starts a backward pass over `cache`: every slot's gradient absent, the output's set to
    /// `d_out` (copied in the iterator's order, row-major).
    pub(crate) fn begin<'a>(&mut self, cache: &TrainCache, d_out: impl Iterator<Item = &'a f32>) {
        let slots = cache.acts.len();
        self.d.resize_with(slots, Vec::new);
        self.have.clear();
        self.have.resize(slots, false);
        let out = cache.out_slot();
        let d = sized(&mut self.d[out], cache.acts[out].len());
        for (d, &v) in d.iter_mut().zip(d_out) {
            *d = v;
        }
        self.have[out] = true;
    }

    /// `∂loss/∂slot o` (read) and the buffer for `∂loss/∂slot i` (`len` elements), with where
    /// that buffer is.
    fn dy_dx(&mut self, i: usize, o: usize, len: usize) -> (&[f32], &mut [f32], Target) {
        assert!(i < o, "slot {o} must come after its input {i}");
        let (head, tail) = self.d.split_at_mut(o);
        if self.have[i] {
            (&tail[0], sized(&mut self.tmp, len), Target::Tmp)
        } else {
            (&tail[0], sized(&mut head[i], len), Target::Slot)
        }
    }

    /// Records the gradient just written for slot `i` (adding the temporary in when another
    /// consumer had written it first).
    fn finish(&mut self, i: usize, target: Target) {
        match target {
            Target::Slot => self.have[i] = true,
            Target::Tmp => {
                for (d, &t) in self.d[i].iter_mut().zip(&self.tmp) {
                    *d += t;
                }
            }
        }
    }

    /// Adds `from` (slot `o`'s gradient, or the part of it at `[offset, offset + len)` of
    /// every `total`-element sample) into slot `i`'s.
    fn pass(&mut self, i: usize, o: usize, n: usize, (offset, len, total): (usize, usize, usize)) {
        if n == 0 || len == 0 {
            if !self.have[i] {
                self.d[i].clear();
                self.have[i] = true;
            }
            return;
        }
        let (head, tail) = self.d.split_at_mut(o);
        let dy = &tail[0];
        let dx = &mut head[i];
        if self.have[i] {
            for (dst, src) in dx.chunks_exact_mut(len).zip(dy.chunks_exact(total)) {
                for (d, &s) in dst.iter_mut().zip(&src[offset..offset + len]) {
                    *d += s;
                }
            }
        } else {
            let dx = sized(dx, n * len);
            for (dst, src) in dx.chunks_exact_mut(len).zip(dy.chunks_exact(total)) {
                dst.copy_from_slice(&src[offset..offset + len]);
            }
            self.have[i] = true;
        }
    }

    /// The weight and bias gradient buffers of parameter `w`: in `grads` for a trainable
    /// layer, else in the sink.
    fn weight_bias<'g>(
        sink: &'g mut (Vec<f32>, Vec<f32>),
        grads: &'g mut Grads,
        w: usize,
        bias: bool,
        trainable: bool,
    ) -> (&'g mut [f32], Option<&'g mut [f32]>) {
        if trainable {
            return grads.weight_bias(w, bias);
        }
        let spec = grads.specs();
        let wl = spec[w].shape.iter().product();
        let bl = if bias { spec[w + 1].shape[0] } else { 0 };
        let (sw, sb) = sink;
        (sized(sw, wl), bias.then(|| sized(sb, bl)))
    }

    /// A weighted layer's backward (`kernel` over [`chunked`] samples): weight and bias
    /// gradients into parameters `w` and `w + 1` (or the sink when frozen), `∂/∂i` when
    /// `need_dx`.
    fn weighted(
        &mut self,
        c: &TrainCache,
        (i, o): (usize, usize),
        grads: &mut Grads,
        (w, bias, trainable, need_dx): (usize, bool, bool, bool),
        lens: (usize, usize, usize),
        kernel: &ChunkKernel<'_>,
    ) {
        let mut sink = std::mem::take(&mut self.sink);
        let mut parts = std::mem::take(&mut self.parts);
        let (dw, db) = Self::weight_bias(&mut sink, grads, w, bias, trainable);
        let x = &c.acts[i];
        if need_dx {
            let (dy, dx, t) = self.dy_dx(i, o, lens.0 * lens.1);
            chunked(lens, x, dy, Some(dx), dw, db, &mut parts, kernel);
            self.finish(i, t);
        } else {
            chunked(lens, x, &self.d[o], None, dw, db, &mut parts, kernel);
        }
        self.sink = sink;
        self.parts = parts;
    }

    weighted_backward! {
        /// Backward of [`TrainCache::conv2d`]: the weight (and bias) gradient into parameter
        /// `w` (and `w + 1`) unless the layer is frozen, `∂/∂i` when `need_dx`.
        conv2d(Conv2d, conv2d_backward):
            |l| (l.filters.weight(), l.filters.bias().is_some(), l.params.in_len(), l.params.out_len())
    }

    weighted_backward! {
        /// Backward of [`TrainCache::conv_transpose2d`] (as [`BackWork::conv2d`]).
        conv_transpose2d(ConvTranspose2d, conv_transpose2d_backward):
            |l| (&l.weight[..], l.bias.is_some(), l.params.in_len(), l.params.out_len())
    }

    weighted_backward! {
        /// Backward of [`TrainCache::linear`] (as [`BackWork::conv2d`]).
        linear(Linear, linear_backward):
            |l| (&l.weight[..], l.bias.is_some(), l.params.in_features, l.params.out_features)
    }

    /// Backward of [`TrainCache::batchnorm`] with statistics `s`: `∂/∂i` (always computed, the
    /// kernel needs its buffer; dropped unless `need_dx`) and, for an affine layer, the weight
    /// and bias gradients into `w` and `w + 1` unless frozen.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm(
        &mut self,
        layer: &BatchNorm2d,
        c: &TrainCache,
        (i, o, s): (usize, usize, usize),
        grads: &mut Grads,
        w: usize,
        trainable: bool,
        need_dx: bool,
    ) {
        let (p, n) = (&layer.params, c.n);
        let (mean, inv_std) = &c.stats[s];
        let mut sink = std::mem::take(&mut self.sink);
        let dparams = if p.affine {
            let (dw, db) = Self::weight_bias(&mut sink, grads, w, true, trainable);
            db.map(|db| (dw, db))
        } else {
            None
        };
        let len = n * p.channels * p.hw;
        let (dy, dx, t) = if need_dx {
            self.dy_dx(i, o, len)
        } else {
            (&self.d[o][..], sized(&mut self.tmp, len), Target::Tmp)
        };
        let weight = layer.weight.as_deref();
        batchnorm_backward(p, n, &c.acts[i], dy, weight, mean, inv_std, dx, dparams);
        if need_dx {
            self.finish(i, t);
        }
        self.sink = sink;
    }

    /// Backward of [`TrainCache::activation`].
    #[doc(hidden)]
    pub fn activation(&mut self, act: Activation, c: &TrainCache, (i, o): (usize, usize)) {
        let saved = match saved_for_backward(act) {
            Saved::Input => &c.acts[i],
            Saved::Output => &c.acts[o],
        };
        let (dy, dx, t) = self.dy_dx(i, o, saved.len());
        activation_backward(act, saved, dy, dx);
        self.finish(i, t);
    }

    /// Backward of [`TrainCache::softmax`].
    #[doc(hidden)]
    pub fn softmax(
        &mut self,
        channels: usize,
        spatial: usize,
        c: &TrainCache,
        (i, o): (usize, usize),
    ) {
        let y = &c.acts[o];
        let (dy, dx, t) = self.dy_dx(i, o, y.len());
        softmax_backward(c.n, channels, spatial, y, dy, dx);
        self.finish(i, t);
    }

    /// Backward of [`TrainCache::pool2d`].
    #[doc(hidden)]
    pub fn pool2d(&mut self, p: &Pool2dParams, c: &TrainCache, (i, o): (usize, usize)) {
        let (dy, dx, t) = self.dy_dx(i, o, c.n * p.in_len());
        pool2d_backward(p, c.n, &c.acts[i], dy, dx);
        self.finish(i, t);
    }

    /// Backward of [`TrainCache::upsample2d`].
    #[doc(hidden)]
    pub fn upsample2d(&mut self, p: &Upsample2dParams, c: &TrainCache, (i, o): (usize, usize)) {
        let (dy, dx, t) = self.dy_dx(i, o, c.n * p.in_len());
        upsample2d_backward(p, c.n, dy, dx);
        self.finish(i, t);
    }

    /// Backward of [`TrainCache::dropout`] with mask `m`.
    #[doc(hidden)]
    pub fn dropout(&mut self, p: f32, c: &TrainCache, (i, o, m): (usize, usize, usize)) {
        let mask = &c.masks[m];
        let len = c.acts[o].len();
        if mask.is_empty() {
            let per = len / c.n.max(1);
            self.pass(i, o, c.n, (0, per, per));
            return;
        }
        let (dy, dx, t) = self.dy_dx(i, o, len);
        dropout_backward(p, mask, dy, dx);
        self.finish(i, t);
    }

    /// Backward of [`TrainCache::add`]: slot `o`'s gradient flows into both `a` and `b`.
    #[doc(hidden)]
    pub fn add(&mut self, c: &TrainCache, (a, b, o): (usize, usize, usize)) {
        let per = c.acts[o].len() / c.n.max(1);
        for i in [a, b] {
            self.pass(i, o, c.n, (0, per, per));
        }
    }

    /// Backward of [`TrainCache::concat`]: each part gets its channels of slot `o`'s gradient.
    #[doc(hidden)]
    pub fn concat(&mut self, c: &TrainCache, parts: &[(usize, usize)], plane: usize, o: usize) {
        let total: usize = parts.iter().map(|&(_, ch)| ch).sum::<usize>() * plane;
        let mut offset = 0;
        for &(slot, ch) in parts {
            let len = ch * plane;
            self.pass(slot, o, c.n, (offset, len, total));
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The train-mode forward and backward calls wired by hand into a small graph with every
    //! kind of junction (a residual sum, a concat with an identity branch, a tensor read three
    //! times), checked against central differences of the forward pass.

    use super::*;
    use crate::grads::ParamSpec;
    use crate::ops::batchnorm::BatchNormParams;
    use crate::ops::conv::Conv2dParams;
    use crate::ops::linear::LinearParams;
    use crate::ops::pool::PoolKind;
    use crate::test_util::rand_vec;
    use crate::train::TrainLayout;

    const N_IN: usize = 2 * 5 * 5;

    fn conv_params() -> Conv2dParams {
        Conv2dParams {
            c_in: 2,
            c_out: 2,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [5, 5],
            out_hw: [5, 5],
        }
    }

    const POOL: Pool2dParams = Pool2dParams {
        kind: PoolKind::Avg {
            count_include_pad: true,
        },
        channels: 4,
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
        ceil_mode: false,
        in_hw: [5, 5],
        out_hw: [2, 2],
    };

    const SPECS: &[ParamSpec] = &[
        ParamSpec {
            key: "0.weight",
            shape: &[2, 2, 3, 3],
            top: 0,
        },
        ParamSpec {
            key: "0.bias",
            shape: &[2],
            top: 0,
        },
        ParamSpec {
            key: "1.weight",
            shape: &[2],
            top: 1,
        },
        ParamSpec {
            key: "1.bias",
            shape: &[2],
            top: 1,
        },
        ParamSpec {
            key: "3.weight",
            shape: &[2, 2, 3, 3],
            top: 3,
        },
        ParamSpec {
            key: "3.bias",
            shape: &[2],
            top: 3,
        },
        ParamSpec {
            key: "7.weight",
            shape: &[3, 16],
            top: 7,
        },
        ParamSpec {
            key: "7.bias",
            shape: &[3],
            top: 7,
        },
    ];

    /// The graph's layers: conv, bn, conv, fc.
    #[derive(Clone)]
    struct Net {
        c0: Conv2d,
        bn: BatchNorm2d,
        c1: Conv2d,
        fc: Linear,
    }

    impl Net {
        fn new() -> Self {
            let mut rng = Rng::new(5);
            let bnp = BatchNormParams {
                channels: 2,
                hw: 25,
                eps: 1e-5,
                momentum: 0.1,
                affine: true,
                track_running_stats: true,
            };
            let mut bn = BatchNorm2d::seeded("1", bnp, &mut rng);
            bn.weight = Some(vec![1.3, 0.7].into());
            bn.bias = Some(vec![0.2, -0.4].into());
            let lp = LinearParams {
                in_features: 16,
                out_features: 3,
            };
            Net {
                c0: Conv2d::seeded("0", conv_params(), true, &mut rng),
                bn,
                c1: Conv2d::seeded("3", conv_params(), true, &mut rng),
                fc: Linear::seeded("7", lp, true, &mut rng),
            }
        }

        /// The `i`-th parameter tensor, mutably (for a finite difference).
        fn param(&mut self, i: usize, f: impl FnOnce(&mut [f32])) {
            match i {
                0 | 1 => self
                    .c0
                    .filters
                    .update(|w, b| f(if i == 0 { w } else { b.unwrap() })),
                2 => f(self.bn.weight.as_mut().unwrap()),
                3 => f(self.bn.bias.as_mut().unwrap()),
                4 | 5 => self
                    .c1
                    .filters
                    .update(|w, b| f(if i == 4 { w } else { b.unwrap() })),
                6 => f(&mut self.fc.weight),
                _ => f(self.fc.bias.as_mut().unwrap()),
            }
        }

        /// The forward pass on `x` (a batch of `n`) into `c`: slots 0 (input) to 8 (output).
        fn forward(&mut self, n: usize, x: &[f32], c: &mut TrainCache) {
            c.begin("T", n, N_IN, [9, 1, 0, 8]).copy_from_slice(x);
            c.conv2d(&self.c0, 0, 1);
            c.batchnorm(&mut self.bn, 1, 2, 0).unwrap();
            c.activation(Activation::Tanh, 2, 3);
            c.conv2d(&self.c1, 3, 4);
            c.add(4, 0, 5);
            c.concat(&[(5, 2), (0, 2)], 25, 6);
            c.pool2d(&POOL, 6, 7);
            c.linear(&self.fc, 7, 8);
        }

        /// `Σ r·output` in f64, from a fresh copy (the forward updates running statistics).
        fn loss(&self, n: usize, x: &[f32], r: &[f32]) -> f64 {
            let mut c = TrainCache::default();
            self.clone().forward(n, x, &mut c);
            c.output()
                .iter()
                .zip(r)
                .map(|(&y, &r)| y as f64 * r as f64)
                .sum()
        }
    }

    /// The gradients of `Σ r·output` by the backward calls: the parameters', and the input's.
    fn backward(net: &Net, c: &TrainCache, r: &[f32]) -> (Grads, Vec<f32>) {
        let mut b = BackWork::default();
        let mut g = Grads::new(SPECS);
        b.begin(c, r.iter());
        b.linear(&net.fc, c, (7, 8), &mut g, 6, true, true);
        b.pool2d(&POOL, c, (6, 7));
        b.concat(c, &[(5, 2), (0, 2)], 25, 6);
        b.add(c, (4, 0, 5));
        b.conv2d(&net.c1, c, (3, 4), &mut g, 4, true, true);
        b.activation(Activation::Tanh, c, (2, 3));
        b.batchnorm(&net.bn, c, (1, 2, 0), &mut g, 2, true, true);
        b.conv2d(&net.c0, c, (0, 1), &mut g, 0, true, true);
        (g, b.d[0].clone())
    }

    #[test]
    fn the_backward_calls_give_the_gradients_of_the_forward_calls() {
        // 11 samples: chunks of 2, the last one short.
        for n in [1, 3, 11] {
            let mut net = Net::new();
            let x = rand_vec(n * N_IN, 7);
            let r = rand_vec(n * 3, 9);
            let mut c = TrainCache::default();
            net.clone().forward(n, &x, &mut c);
            assert_eq!(c.batch_size(), n);
            assert_eq!(c.output().len(), n * 3);
            let (g, dx) = backward(&net, &c, &r);
            assert_eq!(g.len(), SPECS.len());
            let h = 1e-2f32;
            let check = |got: f32, up: f64, down: f64, what: String| {
                let fd = (up - down) / (2.0 * h as f64);
                assert!(
                    (got as f64 - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
                    "n = {n}: {what}: backward {got}, finite difference {fd}"
                );
            };
            for (i, spec) in SPECS.iter().enumerate() {
                let grad = g.get(spec.key).unwrap().to_vec();
                for at in [0, grad.len() - 1, grad.len() / 2] {
                    let shifted = |d: f32| {
                        let mut m = net.clone();
                        m.param(i, |p| p[at] += d);
                        m.loss(n, &x, &r)
                    };
                    let (up, down) = (shifted(h), shifted(-h));
                    check(grad[at], up, down, format!("{}[{at}]", spec.key));
                }
            }
            // The input's gradient: through the first conv, the residual sum and the concat.
            assert_eq!(dx.len(), n * N_IN);
            for at in [0, 13, n * N_IN - 1] {
                let shifted = |d: f32| {
                    let mut y = x.clone();
                    y[at] += d;
                    net.loss(n, &y, &r)
                };
                check(dx[at], shifted(h), shifted(-h), format!("input[{at}]"));
            }
            // The forward updated the running statistics once.
            net.forward(n, &x, &mut c);
            assert_eq!(net.bn.num_batches_tracked, Some(1));
        }
    }

    #[test]
    fn frozen_layers_and_skipped_inputs_write_nothing() {
        let net = Net::new();
        let (n, x, r) = (4, rand_vec(4 * N_IN, 1), rand_vec(12, 2));
        let mut c = TrainCache::default();
        net.clone().forward(n, &x, &mut c);
        let mut b = BackWork::default();
        let mut g = Grads::new(SPECS);
        b.begin(&c, r.iter());
        b.linear(&net.fc, &c, (7, 8), &mut g, 6, false, false);
        assert!(g.is_empty(), "a frozen layer has no gradient");
        assert!(!b.have[7], "no input gradient without need_dx");
        b.linear(&net.fc, &c, (7, 8), &mut g, 6, true, false);
        assert_eq!(g.len(), 2);
        let (full, _) = backward(&net, &c, &r);
        assert_eq!(g.get("7.weight"), full.get("7.weight"));
    }

    #[test]
    fn dropout_as_the_identity_passes_the_gradient_through() {
        let mut c = TrainCache::default();
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        c.begin("T", 3, 4, [3, 0, 2, 2]).copy_from_slice(&x);
        let mut rng = Rng::new(1);
        c.dropout(0.5, false, &mut rng, 0, 1, 0);
        assert_eq!(c.acts[1], x);
        c.dropout(0.5, true, &mut rng, 1, 2, 1);
        let kept = c.masks[1].iter().filter(|&&m| m).count();
        assert!(kept > 0 && kept < 12, "{kept} of 12 kept");
        let d: Vec<f32> = (0..12).map(|i| 1.0 + i as f32).collect();
        let mut b = BackWork::default();
        b.begin(&c, d.iter());
        b.dropout(0.5, &c, (1, 2, 1));
        b.dropout(0.5, &c, (0, 1, 0));
        for (i, &m) in c.masks[1].iter().enumerate() {
            assert_eq!(b.d[0][i], if m { 2.0 * d[i] } else { 0.0 });
        }
    }

    #[test]
    fn transposed_convolution_upsampling_and_softmax_backward() {
        use crate::ops::conv_transpose::ConvTranspose2dParams;
        use crate::ops::upsample::UpsampleMode;
        // [2, 3, 3] → convtranspose(2 -> 3, k2, s2, p0, output_padding 1) → [3, 7, 7]
        // → bilinear ×2 → [3, 14, 14] → softmax over the 3 channels.
        let tp = ConvTranspose2dParams {
            c_in: 2,
            c_out: 3,
            groups: 1,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [1, 1],
            dilation: [1, 1],
            in_hw: [3, 3],
            out_hw: [7, 7],
        };
        let up = Upsample2dParams {
            channels: 3,
            scale: [2, 2],
            mode: UpsampleMode::Bilinear {
                align_corners: false,
            },
            in_hw: [7, 7],
            out_hw: [14, 14],
        };
        let layer = ConvTranspose2d::seeded("0", tp, true, &mut Rng::new(3));
        let n = 3;
        let x = rand_vec(n * 18, 4);
        let r = rand_vec(n * 3 * 196, 5);
        let forward = |layer: &ConvTranspose2d, x: &[f32]| {
            let mut c = TrainCache::default();
            c.begin("T", n, 18, [4, 0, 0, 3]).copy_from_slice(x);
            c.conv_transpose2d(layer, 0, 1);
            c.upsample2d(&up, 1, 2);
            c.softmax(3, 196, 2, 3);
            c
        };
        let loss = |layer: &ConvTranspose2d, x: &[f32]| -> f64 {
            let c = forward(layer, x);
            c.output()
                .iter()
                .zip(&r)
                .map(|(&y, &r)| y as f64 * r as f64)
                .sum()
        };
        let c = forward(&layer, &x);
        assert_eq!(c.output().len(), n * 3 * 196);
        let specs: &'static [ParamSpec] = &[
            ParamSpec {
                key: "0.weight",
                shape: &[2, 3, 2, 2],
                top: 0,
            },
            ParamSpec {
                key: "0.bias",
                shape: &[3],
                top: 0,
            },
        ];
        let mut g = Grads::new(specs);
        let mut b = BackWork::default();
        b.begin(&c, r.iter());
        b.softmax(3, 196, &c, (2, 3));
        b.upsample2d(&up, &c, (1, 2));
        b.conv_transpose2d(&layer, &c, (0, 1), &mut g, 0, true, true);
        let h = 1e-2f32;
        let check = |got: f32, up: f64, down: f64, what: &str| {
            let fd = (up - down) / (2.0 * h as f64);
            assert!(
                (got as f64 - fd).abs() <= 1e-3 + 2e-2 * fd.abs(),
                "{what}: backward {got}, finite difference {fd}"
            );
        };
        for (i, key) in ["0.weight", "0.bias"].iter().enumerate() {
            let grad = g.get(key).unwrap();
            for at in [0, grad.len() - 1] {
                let shifted = |d: f32| {
                    let mut l = layer.clone();
                    if i == 0 {
                        l.weight[at] += d;
                    } else {
                        l.bias.as_mut().unwrap()[at] += d;
                    }
                    loss(&l, &x)
                };
                check(grad[at], shifted(h), shifted(-h), key);
            }
        }
        for at in [0, 20, n * 18 - 1] {
            let shifted = |d: f32| {
                let mut y = x.clone();
                y[at] += d;
                loss(&layer, &y)
            };
            check(b.d[0][at], shifted(h), shifted(-h), "input");
        }
        // Frozen: no gradients kept, the same input gradient. The weight and bias gradients
        // go to the sink, sized by their own shapes (the bias has c_out = 3 values, the
        // weight's first dimension is c_in = 2).
        let mut frozen = Grads::new(specs);
        let mut bf = BackWork::default();
        bf.begin(&c, r.iter());
        bf.softmax(3, 196, &c, (2, 3));
        bf.upsample2d(&up, &c, (1, 2));
        bf.conv_transpose2d(&layer, &c, (0, 1), &mut frozen, 0, false, true);
        assert!(frozen.is_empty());
        assert_eq!(bf.d[0], b.d[0]);
    }

    #[test]
    fn reserving_makes_exactly_the_layouts_room() {
        let layout = TrainLayout {
            slots: &[50, 50, 50, 50, 50, 50, 100, 16, 3],
            batch_norms: &[3],
            dropouts: &[7, 5],
            params: 131,
            param_tensors: 8,
            largest_weight: 48,
            largest_bias: 3,
            forward_scratch: 450,
            backward_scratch: 486,
            backward_scratch_per_sample: 3,
            output: 3,
        };
        // By hand, n = 11: chunks of 2 samples, 6 chunks (5 partial sums); each scratch with
        // room to start on a cache line (15 more).
        let floats = 2 * 419 * 11 + 100 * 11 + 6 + 131 + 51 + 5 * 51 + 465 + 6 * 501 + 3 * 11;
        assert_eq!(layout.bytes(11), 4 * floats + 12 * 11 + 9 + 8);
        // n = 1: one chunk, no partial sums.
        let floats = 2 * 419 + 100 + 6 + 131 + 51 + 465 + 501 + 3;
        assert_eq!(layout.bytes(1), 4 * floats + 12 + 9 + 8);
        // A per-sample scratch larger than the convolutions': 90 samples, chunks of 12.
        let wide = TrainLayout {
            backward_scratch_per_sample: 50,
            ..layout
        };
        assert_eq!(wide.bytes(90) - layout.bytes(90), 4 * 8 * (50 * 12 - 486));
        for (layout, n) in [1, 2, 11, 90]
            .map(|n| (layout, n))
            .into_iter()
            .chain([(wide, 90)])
        {
            let mut c = TrainCache::default();
            let mut b = BackWork::default();
            c.reserve(&layout, n);
            b.reserve(&layout, n);
            let grads = 4 * 131 + 8;
            let d_out = 4 * 3 * n;
            assert_eq!(
                c.capacity_bytes() + b.capacity_bytes() + grads + d_out,
                layout.bytes(n),
                "n = {n}"
            );
            // Reserving again (or for fewer samples) changes nothing.
            c.reserve(&layout, 1);
            b.reserve(&layout, n);
            assert_eq!(
                c.capacity_bytes() + b.capacity_bytes() + grads + d_out,
                layout.bytes(n)
            );
        }
        assert_eq!(chunk_plan(0), (1, 0));
        assert_eq!(chunk_plan(8), (1, 8));
        assert_eq!(chunk_plan(9), (2, 5));
        assert_eq!(chunk_plan(64), (8, 8));
        assert_eq!(chunk_plan(65), (9, 8));
    }
}
