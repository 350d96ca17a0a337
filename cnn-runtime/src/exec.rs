//! The batch executor that generated `forward` code drives layer by layer.

use ndarray::{s, Array2, Array4, ArrayView4, ArrayViewMut, Axis, Dimension, Slice};

use crate::bare::Run;
pub use crate::bare::WorkspaceLayout;
use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear};
use crate::ops::activation::{self, Activation};
use crate::ops::batchnorm;
use crate::ops::conv::{self, Epilogue, Layout};
use crate::ops::conv_transpose;
use crate::ops::pool::{self, Pool2dParams};
use crate::ops::upsample::{self, Upsample2dParams};
use crate::store::{Lined, LINE};
use crate::tuning::{CHUNK, POOL_MIN_SPLIT, WARM_MIN_MACS};
use crate::Error;

/// A batch in flight: the current activations `[n, …]`, the buffers the next layer writes,
/// and a stack of tensors saved by branching blocks.
///
/// Generated code creates one per call, then calls one method per layer in order; each method
/// trusts that the current tensor has the shape the macro computed for that point.
///
/// A residual block `x → act(body(x) + shortcut(x))` runs as [`block_enter`](Self::block_enter)
/// (save x), then with a shortcut its layers and [`swap_top`](Self::swap_top), then the body,
/// ending in [`conv2d_residual`](Self::conv2d_residual) (or
/// [`conv_transpose2d_residual`](Self::conv_transpose2d_residual), or
/// [`residual_add`](Self::residual_add) when the body does not end in a convolution). A
/// concatenation runs as [`concat_enter`](Self::concat_enter), then per branch
/// [`concat_restore`](Self::concat_restore), its layers and
/// [`concat_write`](Self::concat_write) (or [`concat_write_input`](Self::concat_write_input)
/// for an empty branch), then [`concat_exit`](Self::concat_exit). Blocks nest: the saved
/// tensors form a stack, and its buffers are kept and reused from one run to the next.
///
/// The batch's input is read where the caller holds it (`'x`), not copied in, when it is
/// contiguous: the first layer that writes a new tensor (`step`) reads it there, and any other
/// step copies it in first (`own`).
#[derive(Debug)]
pub struct Exec<'x> {
    /// The current tensor when it is still the caller's input (`len` values, channels first);
    /// `cur` then holds nothing of it.
    input: Option<&'x [f32]>,
    n: usize,
    len: usize,
    /// The current tensor and the next one's buffer, from cache lines.
    cur: Lined,
    next: Lined,
    scratch: Vec<f32>,
    /// Folded batch-norm `scale ++ shift` of a fused convolution.
    affine: Vec<f32>,
    /// One buffer per stack depth, kept (never shrunk) when the entry is popped; from cache
    /// lines, as `cur` and `next`.
    stack: Vec<Lined>,
    /// The length of each live stack entry (`n ·` its per-sample length); its length is the
    /// stack's depth.
    lens: Vec<usize>,
    /// Threads a single layer may use (when there are fewer chunks than threads).
    threads: usize,
    /// `Some([C, H·W])` when the current tensor is channel-last, `[n, H·W, C]`: what a
    /// Winograd convolution writes, kept while the layers that follow take it (Winograd
    /// convolutions, max and global pools, activations) and changed back by any other.
    channels_last: Option<[usize; 2]>,
}

impl<'x> Exec<'x> {
    /// Copies a whole batch `[N, C, H, W]` in, whatever its strides.
    ///
    /// # Errors
    /// [`Error::InputShape`] when C, H, W differ from `chw`.
    #[cfg(test)]
    fn from_view(x: ArrayView4<'_, f32>, chw: [usize; 3]) -> Result<Self, Error> {
        let n = batch_size(x, chw)?;
        let cur = match x.as_slice() {
            Some(s) => s.to_vec(),
            None => x.iter().copied().collect(),
        };
        Ok(Self::with_data(n, cur))
    }

    /// Replaces the current batch with `x`, keeping the buffers: read in place when it is
    /// contiguous and row-major, else copied in (any strides).
    fn load(&mut self, x: ArrayView4<'x, f32>) {
        self.n = x.shape()[0];
        self.len = x.len();
        self.channels_last = None;
        // A run that failed inside a block left its entries behind.
        self.lens.clear();
        if let Some(s) = x.to_slice() {
            self.input = Some(s);
            return;
        }
        self.input = None;
        self.grow_pair(self.len);
        let cur = &mut self.cur[..self.len];
        cur.iter_mut().zip(x.iter()).for_each(|(d, &v)| *d = v);
    }

    /// A batch of one sample, `[C·H·W]` row-major, read in place.
    pub fn from_sample(x: &'x [f32]) -> Self {
        Exec {
            input: Some(x),
            len: x.len(),
            ..Self::with_data(1, Vec::new())
        }
    }

    /// The executor's buffers without the input it borrows, to be kept for a later batch.
    fn detach(self) -> Exec<'static> {
        Exec {
            input: None,
            n: self.n,
            len: 0,
            cur: self.cur,
            next: self.next,
            scratch: self.scratch,
            affine: self.affine,
            stack: self.stack,
            lens: self.lens,
            threads: self.threads,
            channels_last: None,
        }
    }

    /// Copies the caller's input into `cur` if it is still the current tensor, for a step
    /// that works on `cur` in place or copies it elsewhere.
    fn own(&mut self) {
        if let Some(x) = self.input.take() {
            #[cfg(test)]
            tests::OWNED.set(tests::OWNED.get() + 1);
            self.grow_pair(self.len);
            self.cur[..self.len].copy_from_slice(x);
        }
    }

    fn with_data(n: usize, cur: Vec<f32>) -> Self {
        Exec {
            input: None,
            n,
            len: cur.len(),
            cur: Lined::from_vec(&cur),
            next: Lined::default(),
            scratch: Vec::new(),
            affine: Vec::new(),
            stack: Vec::new(),
            lens: Vec::new(),
            threads: 1,
            channels_last: None,
        }
    }

    /// The current activations, `[n, …]` row-major (channels first).
    pub(crate) fn output(&mut self) -> &[f32] {
        self.channels_first();
        self.own();
        &self.cur[..self.len]
    }

    /// The current tensor's layout.
    fn layout(&self) -> Layout {
        match self.channels_last {
            Some(_) => Layout::ChannelsLast,
            None => Layout::ChannelsFirst,
        }
    }

    /// Lays the current tensor out channels-first (PyTorch's `[n, C, H, W]`) if it is not.
    fn channels_first(&mut self) {
        let Some([c, hw]) = self.channels_last.take() else {
            return;
        };
        let per = c * hw;
        self.step(per, |x, y, _| {
            // LOOP over samples
            for (x, y) in x.chunks_exact(per).zip(y.chunks_exact_mut(per)) {
                crate::transpose::transpose(hw, c, x, c, y, hw);
            }
        });
    }

    /// Grows both ping-pong buffers to hold `len` values. Both grow together, so that which
    /// of them is current at a given layer (it alternates with the number of layers that swap
    /// them) does not matter: a second run with the same sizes never grows either.
    fn grow_pair(&mut self, len: usize) {
        // Never shorten a buffer: a later layer would pay to zero it again on growth.
        for buf in [&mut self.cur, &mut self.next] {
            buf.grow(len);
        }
    }

    /// Runs `f(input, output)` with a fresh output of `out_len` elements per sample; the
    /// input is the caller's batch if no step has run yet.
    fn step(&mut self, out_len: usize, f: impl FnOnce(&[f32], &mut [f32], &mut Vec<f32>)) {
        let len = self.n * out_len;
        self.grow_pair(len);
        let x = match self.input.take() {
            Some(x) => x,
            None => &self.cur[..self.len],
        };
        f(x, &mut self.next[..len], &mut self.scratch);
        std::mem::swap(&mut self.cur, &mut self.next);
        self.len = len;
    }

    /// Runs `layer(self, epilogue)` for a layer of `c` output channels with `bn` folded into
    /// its epilogue, then (with `residual`) the top of the stack added, and `act` last; a `bn`
    /// without running statistics (which needs the whole batch), the sum and the activation
    /// then run as separate steps. Leaves the stack as it is.
    fn fused(
        &mut self,
        c: usize,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        residual: bool,
        layer: impl FnOnce(&mut Self, Epilogue<'_>),
    ) -> Result<(), Error> {
        let mut affine = std::mem::take(&mut self.affine);
        let folded = match bn {
            Some(BatchNorm2d {
                folded: Some(_), ..
            }) => true,
            Some(bn) => match &bn.running {
                Some((mean, var)) => {
                    affine.resize(2 * c, 0.0);
                    let (scale, shift) = affine.split_at_mut(c);
                    batchnorm::scale_shift(
                        &bn.params,
                        bn.weight.as_deref(),
                        bn.bias.as_deref(),
                        (mean, var),
                        scale,
                        shift,
                    );
                    true
                }
                None => false,
            },
            None => true,
        };
        if !folded {
            self.affine = affine;
            layer(self, Epilogue::default());
            if let Some(bn) = bn {
                self.batchnorm(bn)?;
            }
            if residual {
                self.add_top(act);
            } else if let Some(act) = act {
                self.activation(act);
            }
            return Ok(());
        }
        // The residual is read from its stack buffer, lent out for the layer's duration.
        let top = residual.then(|| self.lens.len() - 1);
        let saved = top.map(|d| std::mem::take(&mut self.stack[d]));
        let epilogue = Epilogue {
            affine: bn.map(|bn| match bn.folded {
                Some(folded) => folded,
                None => affine.split_at(c),
            }),
            act,
            residual: top.zip(saved.as_deref()).map(|(d, r)| &r[..self.lens[d]]),
        };
        layer(self, epilogue);
        if let (Some(d), Some(saved)) = (top, saved) {
            self.stack[d] = saved;
        }
        self.affine = affine;
        Ok(())
    }

    /// Checks that the top of the stack holds `out_len` values per sample, as the output of
    /// the convolution it will be added to.
    ///
    /// # Panics
    /// Otherwise (a bug in generated code).
    fn check_residual(&self, out_len: usize) {
        let top = self.lens.last().copied();
        assert_eq!(
            top,
            Some(self.n * out_len),
            "residual: the saved tensor does not match the convolution's output"
        );
    }

    /// Pushes an entry of `len` values with unspecified contents, reusing the buffer kept at
    /// that depth; returns its depth.
    fn push_len(&mut self, len: usize) -> usize {
        let d = self.lens.len();
        if self.stack.len() <= d {
            self.stack.push(Lined::default());
        }
        self.stack[d].grow(len);
        self.lens.push(len);
        d
    }

    /// Drops the top entry of the stack, keeping its buffer for the next push.
    ///
    /// # Panics
    /// If the stack is empty (a bug in generated code).
    fn pop(&mut self) {
        assert!(self.lens.pop().is_some(), "pop from an empty block stack");
    }

    /// The live entry at depth `d` from the top (0 = the top).
    ///
    /// # Panics
    /// If the stack holds fewer than `d + 1` entries (a bug in generated code).
    fn entry(&self, d: usize) -> &[f32] {
        let depth = self.lens.len();
        assert!(d < depth, "block stack too shallow");
        let i = depth - 1 - d;
        &self.stack[i][..self.lens[i]]
    }

    /// `cur = act(cur + top)`, in place, rounded as `Epilogue::after`; leaves the top on the
    /// stack.
    ///
    /// # Panics
    /// If the stack is empty or its top is not shaped like the current tensor.
    fn add_top(&mut self, act: Option<Activation>) {
        self.channels_first();
        self.own();
        let d = self
            .lens
            .len()
            .checked_sub(1)
            .expect("residual: empty stack");
        assert_eq!(self.lens[d], self.len, "residual: shapes differ");
        let r = &self.stack[d][..self.len];
        let cur = &mut self.cur[..self.len];
        conv::add_relu(cur, r, act == Some(Activation::Relu));
        if let Some(act) = act.filter(|&a| a != Activation::Relu) {
            activation::activation(act, cur);
        }
    }

    /// Runs `f(self, x, y)` for each sample: `x` its `in_len` values of the current tensor, `y`
    /// its channels `offset..offset + channels` of the accumulator on top of the stack, with
    /// `[offset, channels, hw, total]`. The accumulator is lent out of the stack meanwhile.
    ///
    /// # Panics
    /// If the stack is empty or its top is not `[n, total, hw]` (a bug in generated code).
    fn fill_slot(
        &mut self,
        in_len: usize,
        [offset, channels, hw, total]: [usize; 4],
        mut f: impl FnMut(&mut Self, &[f32], &mut [f32]),
    ) {
        self.channels_first();
        self.own();
        let d = self.lens.len().checked_sub(1).expect("concat: empty stack");
        let (part, whole) = (channels * hw, total * hw);
        assert!(
            offset + channels <= total
                && self.lens[d] == self.n * whole
                && self.len == self.n * in_len,
            "concat: the branch does not fit the concatenation"
        );
        let mut acc = std::mem::take(&mut self.stack[d]);
        let cur = std::mem::take(&mut self.cur);
        // LOOP over samples: each writes its own channel slice of the accumulator.
        for (x, y) in cur[..self.len]
            .chunks_exact(in_len.max(1))
            .zip(acc[..self.n * whole].chunks_exact_mut(whole.max(1)))
        {
            f(self, x, &mut y[offset * hw..offset * hw + part]);
        }
        self.cur = cur;
        self.stack[d] = acc;
    }

    /// One transposed convolution with `epilogue`.
    fn conv_transpose(&mut self, conv: &ConvTranspose2d, epilogue: Epilogue<'_>) {
        self.channels_first();
        let (n, threads, p) = (self.n, self.threads, &conv.params);
        self.step(p.out_len(), |x, y, s| {
            conv_transpose::forward(
                p,
                n,
                x,
                &conv.weight,
                conv.bias.as_deref(),
                epilogue,
                threads,
                y,
                s,
            );
        });
    }

    /// One convolution with `epilogue`. Winograd reads a channel-last input as it is and,
    /// without a residual, leaves its output channel-last; other algorithms read channels
    /// first.
    fn conv(&mut self, conv: &Conv2d, epilogue: Epilogue<'_>) {
        let (n, threads, p) = (self.n, self.threads, &conv.params);
        if p.algorithm() != conv::Algorithm::Winograd {
            self.channels_first();
        }
        let layout = self.layout();
        let mut out = Layout::ChannelsFirst;
        self.step(p.out_len(), |x, y, s| {
            let filters = &conv.filters;
            out = conv::forward_in(p, n, (x, layout), filters, epilogue, threads, y, s);
        });
        let hw = p.out_hw[0] * p.out_hw[1];
        self.channels_last = (out == Layout::ChannelsLast).then_some([p.c_out, hw]);
        #[cfg(test)]
        if tests::CHANNELS_FIRST_ONLY.get() {
            self.channels_first();
        }
    }

    /// [`conv`](Self::conv) followed by `pool` in one pass ([`conv::forward_pooled`]).
    fn conv_pooled(&mut self, conv: &Conv2d, pool: &Pool2dParams, epilogue: Epilogue<'_>) {
        let (n, threads, p) = (self.n, self.threads, &conv.params);
        self.channels_first();
        self.step(pool.out_len(), |x, y, s| {
            conv::forward_pooled(p, pool, n, x, &conv.filters, epilogue, threads, y, s);
        });
        self.channels_last = None;
    }

    /// One sample's flat result by value.
    ///
    /// # Panics
    /// If the current tensor does not hold `K` values (a bug in generated code).
    pub fn to_array<const K: usize>(&mut self) -> [f32; K] {
        let mut out = [0.0; K];
        out.copy_from_slice(self.output());
        out
    }

    /// One sample's feature map, on the heap. Only one `[[f32; W]; H]` plane passes through
    /// the stack while the box is built.
    ///
    /// # Panics
    /// If the current tensor does not hold `C·H·W` values (a bug in generated code).
    pub fn to_boxed_chw<const C: usize, const H: usize, const W: usize>(
        &mut self,
    ) -> Box<[[[f32; W]; H]; C]> {
        let mut planes = vec![[[0.0f32; W]; H]; C].into_boxed_slice();
        planes
            .as_flattened_mut()
            .as_flattened_mut()
            .copy_from_slice(self.output());
        match planes.try_into() {
            Ok(boxed) => boxed,
            Err(_) => unreachable!("the vector has exactly C planes"),
        }
    }
}

/// The generated forward code drives the batch executor through [`Run`], as it drives the
/// single-sample [`Bare`](crate::bare::Bare): one method per layer or block step.
impl Run for Exec<'_> {
    type Error = Error;

    /// `nn.Conv2d`.
    fn conv2d(&mut self, layer: &Conv2d) {
        self.conv(layer, Epilogue::default());
    }

    /// `nn.Conv2d`, then (optionally) `nn.BatchNorm2d` with running statistics and an
    /// activation, applied while each output is in cache; the same numbers as running them one
    /// after the other.
    fn conv2d_fused(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.fused(conv.params.c_out, bn, act, false, |exec, epilogue| {
            exec.conv(conv, epilogue);
        })
    }

    /// [`conv2d_fused`](Self::conv2d_fused), then `nn.MaxPool2d` or `nn.AvgPool2d` (`pool`).
    /// A 2×2, stride-2 pool after a direct convolution that multiplies in f32, with a batch
    /// norm that folds and ReLU or no activation (`Conv2d::fuses_pool`), runs in the
    /// convolution's pass (each window's rows folded in registers as they come out of the sums:
    /// the full-size output is never written); any other runs as the two steps. The same bits
    /// either way.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    fn conv2d_pool(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        pool: &Pool2dParams,
    ) -> Result<(), Error> {
        if !conv.fuses_pool(bn, act, pool) {
            self.conv2d_fused(conv, bn, act)?;
            self.pool2d(pool);
            return Ok(());
        }
        self.fused(conv.params.c_out, bn, act, false, |exec, epilogue| {
            exec.conv_pooled(conv, pool, epilogue);
        })
    }

    /// The end of a residual block: `nn.Conv2d`, then (optionally) `nn.BatchNorm2d`, then the
    /// saved tensor on top of the stack added, then `act`, i.e. PyTorch's
    /// `act(bn(conv(x)) + r)`; pops `r`. With running statistics the batch norm is folded and
    /// the sum and activation are applied to each output plane while it is in cache; a `bn`
    /// without running statistics runs the steps one after the other.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    ///
    /// # Panics
    /// If the stack is empty or its top is not shaped like the convolution's output (a bug in
    /// generated code).
    fn conv2d_residual(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.check_residual(conv.params.out_len());
        let result = self.fused(conv.params.c_out, bn, act, true, |exec, epilogue| {
            exec.conv(conv, epilogue);
        });
        self.pop();
        result
    }

    /// `nn.ConvTranspose2d`.
    fn conv_transpose2d(&mut self, layer: &ConvTranspose2d) {
        self.conv_transpose(layer, Epilogue::default());
    }

    /// `nn.ConvTranspose2d`, then (optionally) `nn.BatchNorm2d` with running statistics and
    /// an activation, fused as in [`conv2d_fused`](Self::conv2d_fused).
    fn conv_transpose2d_fused(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.fused(conv.params.c_out, bn, act, false, |exec, epilogue| {
            exec.conv_transpose(conv, epilogue);
        })
    }

    /// The end of a residual block with a transposed convolution: `act(bn(convT(x)) + r)`,
    /// as [`conv2d_residual`](Self::conv2d_residual); pops `r`.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    ///
    /// # Panics
    /// If the stack is empty or its top is not shaped like the convolution's output (a bug in
    /// generated code).
    fn conv_transpose2d_residual(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.check_residual(conv.params.out_len());
        let result = self.fused(conv.params.c_out, bn, act, true, |exec, epilogue| {
            exec.conv_transpose(conv, epilogue);
        });
        self.pop();
        result
    }

    /// Starts a residual block: pushes a copy of the current tensor (the block's input x)
    /// onto the stack of saved tensors. The current tensor stays as it is, the input of the
    /// block's first layer (the shortcut's or the body's).
    fn block_enter(&mut self) {
        self.channels_first();
        self.own();
        let d = self.push_len(self.len);
        self.stack[d][..self.len].copy_from_slice(&self.cur[..self.len]);
    }

    /// Exchanges the current tensor with the top of the stack. After a residual block's
    /// shortcut has run on x, the current tensor is `shortcut(x)` and the top is x; afterwards
    /// the current tensor is x again (the body's input) and the top is `shortcut(x)` (what
    /// the body's result gets added to). Copies both ways, so every buffer keeps its capacity.
    ///
    /// # Panics
    /// If the stack is empty (a bug in generated code).
    fn swap_top(&mut self) {
        self.channels_first();
        self.own();
        let d = self
            .lens
            .len()
            .checked_sub(1)
            .expect("swap_top: empty stack");
        let (top_len, cur_len) = (self.lens[d], self.len);
        // top → next, cur → top, then next becomes cur.
        self.grow_pair(top_len);
        self.next[..top_len].copy_from_slice(&self.stack[d][..top_len]);
        let buf = &mut self.stack[d];
        buf.grow(cur_len);
        buf[..cur_len].copy_from_slice(&self.cur[..cur_len]);
        std::mem::swap(&mut self.cur, &mut self.next);
        self.len = top_len;
        self.lens[d] = cur_len;
    }

    /// The end of a residual block whose body does not end in a convolution: `cur = act(cur +
    /// top)`, then pops the top (x, or `shortcut(x)` after [`swap_top`](Self::swap_top)).
    ///
    /// # Panics
    /// If the stack is empty or its top is not shaped like the current tensor (a bug in
    /// generated code).
    fn residual_add(&mut self, act: Option<Activation>) {
        self.channels_first();
        self.add_top(act);
        self.pop();
    }

    /// Starts a concatenation (`torch.cat(dim=1)` of branches that all read x): pushes a copy
    /// of the current tensor (the block input x), then an accumulator of `out_len` values per
    /// sample (the concatenation's output, `total_channels · H · W`) which the branches fill.
    fn concat_enter(&mut self, out_len: usize) {
        self.channels_first();
        self.block_enter();
        // Unspecified contents: the branches write every channel.
        self.push_len(self.n * out_len);
    }

    /// Copies the current tensor, `[n, channels, hw]` (a branch's output), into channels
    /// `channel_offset..channel_offset + channels` of the accumulator `[n, total_channels,
    /// hw]` on top of the stack.
    ///
    /// # Panics
    /// If the current tensor or the accumulator does not have these shapes (a bug in
    /// generated code).
    fn concat_write(
        &mut self,
        channel_offset: usize,
        channels: usize,
        hw: usize,
        total_channels: usize,
    ) {
        self.channels_first();
        self.own();
        let d = self
            .lens
            .len()
            .checked_sub(1)
            .expect("concat_write: empty stack");
        let acc = &mut self.stack[d][..self.lens[d]];
        let src = &self.cur[..self.len];
        write_channels(
            src,
            acc,
            self.n,
            [channel_offset, channels, hw, total_channels],
        );
    }

    /// The end of a concat branch that ends in a convolution: `nn.Conv2d`, then (optionally)
    /// `nn.BatchNorm2d` with running statistics and `act`, written straight into channels
    /// `channel_offset..channel_offset + c_out` of the accumulator (`[n, total_channels, OH·OW]`,
    /// the top of the stack), one sample at a time, with no copy of the branch's result. The
    /// current tensor (the branch's input) is left as it is. A `bn` without running statistics
    /// (which needs the whole batch) runs as [`conv2d_fused`](Self::conv2d_fused) and
    /// [`concat_write`](Self::concat_write).
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    ///
    /// # Panics
    /// If the stack is empty or its top is not `[n, total_channels, OH·OW]` (a bug in
    /// generated code).
    fn conv2d_concat(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        channel_offset: usize,
        total_channels: usize,
    ) -> Result<(), Error> {
        self.channels_first();
        let p = &conv.params;
        let hw = p.out_hw[0] * p.out_hw[1];
        if bn.is_some_and(|bn| bn.running.is_none()) {
            self.conv2d_fused(conv, bn, act)?;
            self.concat_write(channel_offset, p.c_out, hw, total_channels);
            return Ok(());
        }
        let slot = [channel_offset, p.c_out, hw, total_channels];
        let mut result = Ok(());
        self.fill_slot(p.in_len(), slot, |exec, x, y| {
            result = exec.fused(p.c_out, bn, act, false, |exec, epilogue| {
                let (threads, scratch) = (exec.threads, &mut exec.scratch);
                conv::forward(p, 1, x, &conv.filters, epilogue, threads, y, scratch);
            });
        });
        result
    }

    /// [`conv2d_concat`](Self::conv2d_concat) for a branch that ends in a transposed
    /// convolution (then optionally a `bn` with running statistics and `act`).
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    ///
    /// # Panics
    /// As [`conv2d_concat`](Self::conv2d_concat).
    fn conv_transpose2d_concat(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        channel_offset: usize,
        total_channels: usize,
    ) -> Result<(), Error> {
        self.channels_first();
        let p = &conv.params;
        let hw = p.out_hw[0] * p.out_hw[1];
        if bn.is_some_and(|bn| bn.running.is_none()) {
            self.conv_transpose2d_fused(conv, bn, act)?;
            self.concat_write(channel_offset, p.c_out, hw, total_channels);
            return Ok(());
        }
        let slot = [channel_offset, p.c_out, hw, total_channels];
        let in_len = p.c_in * p.in_hw[0] * p.in_hw[1];
        let mut result = Ok(());
        self.fill_slot(in_len, slot, |exec, x, y| {
            result = exec.fused(p.c_out, bn, act, false, |exec, epilogue| {
                let (threads, scratch) = (exec.threads, &mut exec.scratch);
                let bias = conv.bias.as_deref();
                conv_transpose::forward(p, 1, x, &conv.weight, bias, epilogue, threads, y, scratch);
            });
        });
        result
    }

    /// The end of a concat branch that ends in `nn.Upsample`: written straight into its
    /// channels of the accumulator, as [`conv2d_concat`](Self::conv2d_concat).
    ///
    /// # Panics
    /// As [`conv2d_concat`](Self::conv2d_concat).
    fn upsample2d_concat(
        &mut self,
        params: &Upsample2dParams,
        channel_offset: usize,
        total_channels: usize,
    ) {
        self.channels_first();
        let hw = params.out_hw[0] * params.out_hw[1];
        let slot = [channel_offset, params.channels, hw, total_channels];
        self.fill_slot(params.in_len(), slot, |_, x, y| {
            upsample::upsample2d(params, 1, x, y);
        });
    }

    /// Starts the next branch of a concatenation: the current tensor becomes a copy of the
    /// block input x (the entry under the accumulator).
    ///
    /// # Panics
    /// If the stack holds fewer than two entries (a bug in generated code).
    fn concat_restore(&mut self) {
        self.channels_first();
        self.own();
        let len = self.entry(1).len();
        self.grow_pair(len);
        let d = self.lens.len() - 2;
        self.cur[..len].copy_from_slice(&self.stack[d][..len]);
        self.len = len;
    }

    /// The identity branch of a concatenation (`branch {}`): copies the block input x
    /// (`[n, channels, hw]`, the entry under the accumulator) into channels
    /// `channel_offset..channel_offset + channels` of the accumulator.
    ///
    /// # Panics
    /// If the stack holds fewer than two entries or they do not have these shapes (a bug in
    /// generated code).
    fn concat_write_input(
        &mut self,
        channel_offset: usize,
        channels: usize,
        hw: usize,
        total_channels: usize,
    ) {
        self.channels_first();
        let depth = self.lens.len();
        assert!(depth >= 2, "concat_write_input: no concatenation open");
        let (below, top) = self.stack.split_at_mut(depth - 1);
        let x = &below[depth - 2][..self.lens[depth - 2]];
        let acc = &mut top[0][..self.lens[depth - 1]];
        write_channels(
            x,
            acc,
            self.n,
            [channel_offset, channels, hw, total_channels],
        );
    }

    /// Ends a concatenation: the current tensor becomes the accumulator, and both entries
    /// (the accumulator and the block input under it) are popped.
    ///
    /// # Panics
    /// If the stack holds fewer than two entries (a bug in generated code).
    fn concat_exit(&mut self) {
        self.channels_first();
        self.own();
        let len = self.entry(0).len();
        assert!(self.lens.len() >= 2, "concat_exit: no concatenation open");
        self.grow_pair(len);
        let d = self.lens.len() - 1;
        self.cur[..len].copy_from_slice(&self.stack[d][..len]);
        self.len = len;
        self.pop();
        self.pop();
    }

    /// `nn.Upsample` (nearest or bilinear, integer factors). With spare threads and a large
    /// enough output, runs of whole planes go to different threads (the result does not change).
    fn upsample2d(&mut self, params: &Upsample2dParams) {
        self.channels_first();
        let (n, threads) = (self.n, self.threads);
        let in_plane = params.in_hw[0] * params.in_hw[1];
        let out_plane = params.out_hw[0] * params.out_hw[1];
        let planes = n * params.channels;
        self.step(params.out_len(), |x, y, _| {
            if !split_planes(threads, planes, out_plane) {
                upsample::upsample2d(params, n, x, y);
                return;
            }
            // LOOP over runs of whole planes, one per thread
            let per = planes.div_ceil(threads);
            let parts = x.chunks(per * in_plane).zip(y.chunks_mut(per * out_plane));
            crate::threads::for_each(threads, parts, |_, (x, y)| {
                let sub = Upsample2dParams {
                    channels: y.len() / out_plane,
                    ..*params
                };
                upsample::upsample2d(&sub, 1, x, y);
            });
        });
    }

    /// `nn.BatchNorm2d`, in place.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see `BatchNorm2d::forward`.
    fn batchnorm(&mut self, layer: &BatchNorm2d) -> Result<(), Error> {
        self.channels_first();
        self.own();
        layer.forward(self.n, &mut self.cur[..self.len])
    }

    /// An element-wise activation, in place.
    fn activation(&mut self, act: Activation) {
        self.own();
        activation::activation(act, &mut self.cur[..self.len]);
    }

    /// `nn.Softmax(dim=1)` over `channels`, each with `spatial` positions (1 when flat).
    fn softmax(&mut self, channels: usize, spatial: usize) {
        self.channels_first();
        self.own();
        activation::softmax(self.n, channels, spatial, &mut self.cur[..self.len]);
    }

    /// Max, average or global pooling; a max or global pool of a channel-last tensor stays
    /// channel-last (a global pool's `[C]` per sample is both).
    fn pool2d(&mut self, params: &Pool2dParams) {
        let (n, threads) = (self.n, self.threads);
        if self.channels_last.is_some() && pool::takes_channels_last(params) {
            self.step(params.out_len(), |x, y, _| {
                if threads < 2 || n < 2 {
                    pool::pool2d_channels_last(params, n, x, y);
                    return;
                }
                // LOOP over runs of whole samples, one per thread
                let per = n.div_ceil(threads);
                let parts = x
                    .chunks(per * params.in_len())
                    .zip(y.chunks_mut(per * params.out_len()));
                crate::threads::for_each(threads, parts, |_, (x, y)| {
                    let n = y.len() / params.out_len();
                    pool::pool2d_channels_last(params, n, x, y);
                });
            });
            let hw = params.out_hw[0] * params.out_hw[1];
            self.channels_last = (hw > 1).then_some([params.channels, hw]);
            return;
        }
        self.channels_first();
        let in_plane = params.in_hw[0] * params.in_hw[1];
        let out_plane = params.out_hw[0] * params.out_hw[1];
        let planes = n * params.channels;
        self.step(params.out_len(), |x, y, _| {
            if !split_planes(threads, planes, in_plane) {
                pool::pool2d(params, n, x, y);
                return;
            }
            // LOOP over runs of whole planes, one per thread
            let per = planes.div_ceil(threads);
            let parts = x.chunks(per * in_plane).zip(y.chunks_mut(per * out_plane));
            crate::threads::for_each(threads, parts, |_, (x, y)| {
                let sub = Pool2dParams {
                    channels: y.len() / out_plane,
                    ..*params
                };
                pool::pool2d(&sub, 1, x, y);
            });
        });
    }

    /// `nn.Linear`.
    fn linear(&mut self, layer: &Linear) {
        self.channels_first();
        let n = self.n;
        self.step(layer.params.out_features, |x, y, _| layer.forward(n, x, y));
    }
}

impl Default for Exec<'_> {
    /// An executor with no data yet; `Exec::load` fills it.
    fn default() -> Self {
        Self::with_data(0, Vec::new())
    }
}

impl WorkspaceLayout {
    /// Bytes of a [`Workspace`] with this layout: two activation buffers of `CHUNK` (8) samples
    /// (ping-pong), one scratch buffer, the fused batch-norm coefficients and one buffer of
    /// `CHUNK` samples per depth of the block stack; all but the coefficients with 15 floats
    /// of room to start on a cache line.
    pub const fn bytes(&self) -> usize {
        let mut stack = 0;
        let mut d = 0;
        while d < self.stack.len() {
            stack += CHUNK * self.stack[d] + LINE - 1;
            d += 1;
        }
        4 * (2 * (CHUNK * self.activations + LINE - 1) + self.scratch + LINE - 1
            + 2 * self.channels
            + stack)
    }
}

/// Preallocated buffers for `Model::forward_into`: after the first call with a given model,
/// inference allocates nothing.
#[derive(Debug, Default)]
pub struct Workspace {
    exec: Exec<'static>,
    /// Samples per chunk (`tuning::chunk_samples`); 0 for [`CHUNK`].
    chunk: usize,
}

impl Workspace {
    /// Buffers sized for `layout` (a model's `WORKSPACE`).
    pub fn new(layout: WorkspaceLayout) -> Self {
        let act = CHUNK * layout.activations;
        Workspace {
            exec: Exec {
                input: None,
                n: 0,
                len: 0,
                cur: Lined::with_capacity(act),
                next: Lined::with_capacity(act),
                scratch: Vec::with_capacity(layout.scratch + LINE - 1),
                affine: Vec::with_capacity(2 * layout.channels),
                stack: layout
                    .stack
                    .iter()
                    .map(|&len| Lined::with_capacity(CHUNK * len))
                    .collect(),
                lens: Vec::with_capacity(layout.stack.len()),
                threads: 1,
                channels_last: None,
            },
            chunk: chunk_for(layout.activations),
        }
    }

    /// Bytes currently reserved for tensors (the activations, scratch, batch-norm
    /// coefficients and block stack).
    pub fn capacity_bytes(&self) -> usize {
        let e = &self.exec;
        let stack: usize = e.stack.iter().map(Lined::capacity).sum();
        4 * (e.cur.capacity()
            + e.next.capacity()
            + e.scratch.capacity()
            + e.affine.capacity()
            + stack)
    }
}

/// Copies `src: [n, channels, hw]` into channels `offset..offset + channels` of
/// `acc: [n, total, hw]`, with `[offset, channels, hw, total]`.
///
/// # Panics
/// If a slice does not have its shape (a bug in generated code).
fn write_channels(
    src: &[f32],
    acc: &mut [f32],
    n: usize,
    [offset, channels, hw, total]: [usize; 4],
) {
    let (part, whole) = (channels * hw, total * hw);
    assert!(
        offset + channels <= total && src.len() == n * part && acc.len() == n * whole,
        "concat: the branch does not fit the concatenation"
    );
    if part == 0 {
        return;
    }
    // LOOP over samples
    for (s, d) in src.chunks_exact(part).zip(acc.chunks_exact_mut(whole)) {
        d[offset * hw..offset * hw + part].copy_from_slice(s);
    }
}

/// Like [`run_batch`], on the calling thread, with the caller's buffers: writes the result into
/// `out` (any strides) and allocates nothing once `workspace` has grown to the model's
/// [`WorkspaceLayout`] (networks with batch statistics need room for the whole batch).
///
/// # Errors
/// [`Error::InputShape`], [`Error::OutputShape`] when `out` is not `[N, sample_shape…]`, or the
/// first error `run` returns.
#[allow(clippy::too_many_arguments)] // the generated caller passes constants
pub fn run_into<D: Dimension>(
    x: ArrayView4<'_, f32>,
    chw: [usize; 3],
    mut out: ArrayViewMut<'_, f32, D>,
    sample_shape: &[usize],
    whole_batch: bool,
    workspace: &mut Workspace,
    run: &(dyn Fn(&mut Exec<'_>) -> Result<(), Error> + Sync),
) -> Result<(), Error> {
    let n = batch_size(x, chw)?;
    if out.shape().first() != Some(&n) || &out.shape()[1..] != sample_shape {
        let mut expected = vec![n];
        expected.extend_from_slice(sample_shape);
        return Err(Error::OutputShape {
            expected,
            found: out.shape().to_vec(),
        });
    }
    let chunk = match (whole_batch, workspace.chunk) {
        (true, _) => n.max(1),
        (false, 0) => CHUNK,
        (false, chunk) => chunk,
    };
    // The workspace's buffers, lent to an executor that reads `x` in place.
    let mut exec: Exec<'_> = std::mem::take(&mut workspace.exec);
    let mut result = Ok(());
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        exec.load(x.slice_move(s![start..end, .., .., ..]));
        result = run(&mut exec);
        if result.is_err() {
            break;
        }
        let mut rows = out.slice_axis_mut(Axis(0), Slice::from(start..end));
        rows.iter_mut()
            .zip(exec.output())
            .for_each(|(o, &v)| *o = v);
        start = end;
    }
    workspace.exec = exec.detach();
    result
}

/// Samples per chunk for a network whose largest activation holds `activations` floats per
/// sample, on this CPU.
fn chunk_for(activations: usize) -> usize {
    crate::tuning::chunk_samples(activations, crate::cache::caches().l2)
}

/// N of a batch `[N, C, H, W]` whose C, H, W are `chw`.
///
/// # Errors
/// [`Error::InputShape`] naming both shapes otherwise.
fn batch_size(x: ArrayView4<'_, f32>, chw: [usize; 3]) -> Result<usize, Error> {
    let &[n, c, h, w] = x.shape() else {
        unreachable!("ArrayView4 has four axes")
    };
    if [c, h, w] != chw {
        return Err(Error::InputShape {
            expected: vec![n, chw[0], chw[1], chw[2]],
            found: vec![n, c, h, w],
        });
    }
    Ok(n)
}

thread_local! {
    /// The executor of this thread's last [`run_batch`] call, kept so that repeated calls reuse
    /// its buffers (at most one chunk's activations) instead of faulting in fresh pages.
    static CACHED: std::cell::Cell<Option<Exec<'static>>> = const { std::cell::Cell::new(None) };
}

/// The result of [`run_batch`]: `n` samples of `sample_len` values each, row-major.
#[derive(Debug)]
pub struct BatchOutput {
    n: usize,
    data: Vec<f32>,
}

impl BatchOutput {
    /// As `[n, features]`.
    ///
    /// # Panics
    /// If the data does not hold `n · features` values (a bug in generated code).
    pub fn into_array2(self, features: usize) -> Array2<f32> {
        Array2::from_shape_vec((self.n, features), self.data)
            .expect("the macro computed the output shape")
    }

    /// As `[n, C, H, W]`.
    ///
    /// # Panics
    /// If the data does not hold `n·C·H·W` values (a bug in generated code).
    pub fn into_array4(self, [c, h, w]: [usize; 3]) -> Array4<f32> {
        Array4::from_shape_vec((self.n, c, h, w), self.data)
            .expect("the macro computed the output shape")
    }
}

/// Runs `run` over a batch in chunks of up to `CHUNK` (8) samples (fewer for a network whose
/// largest activation, `activations` floats per sample, would not fit L2 eight times:
/// `tuning::chunk_samples`), split over [`crate::num_threads`] threads of a persistent
/// worker pool, writing each chunk's result into one output buffer.
/// Peak memory beyond the input and output is one executor per thread, independent of N.
///
/// With fewer chunks than threads, the spare threads split single layers instead; a batch of
/// one chunk runs on the calling thread (handing it to a worker and waking the caller again
/// costs tens of microseconds on a virtual machine), and from `WARM_MIN_MACS` (`macs` per
/// sample) its layers split among helper threads kept spinning (`threads::keep_warm`). With `whole_batch` (a network with batch
/// statistics, whose result depends on every sample) the batch runs as one piece.
///
/// # Errors
/// [`Error::InputShape`] when C, H, W differ from `chw`, or the first error `run` returns.
pub fn run_batch(
    x: ArrayView4<'_, f32>,
    chw: [usize; 3],
    sample_len: usize,
    whole_batch: bool,
    (macs, activations): (usize, usize),
    run: &(dyn Fn(&mut Exec<'_>) -> Result<(), Error> + Sync),
) -> Result<BatchOutput, Error> {
    let n = batch_size(x, chw)?;
    let mut data = vec![0.0f32; n * sample_len];
    if n == 0 {
        return Ok(BatchOutput { n, data });
    }
    let chunk = if whole_batch {
        n
    } else {
        chunk_for(activations)
    };
    let chunks = n.div_ceil(chunk);
    let available = crate::threads::num_threads().max(1);
    let threads = available.min(chunks);
    // Fewer chunks than threads (a small batch): the spare threads split single layers.
    let inner = available / threads;
    // The samples from `first` on, whole chunks, into `out`.
    let work = |first: usize, out: &mut [f32], inner: usize| -> Result<(), Error> {
        let mut exec: Exec<'_> = CACHED.with(|c| c.take()).unwrap_or_default();
        exec.threads = inner;
        let mut result = Ok(());
        for (i, out) in out.chunks_mut(chunk * sample_len).enumerate() {
            let start = first + i * chunk;
            let end = (start + chunk).min(n);
            exec.load(x.slice_move(s![start..end, .., .., ..]));
            result = run(&mut exec);
            if result.is_err() {
                break;
            }
            out.copy_from_slice(exec.output());
        }
        CACHED.with(|c| c.set(Some(exec.detach())));
        result
    };
    if on_caller(available, threads) {
        // On the calling thread: handing a small network to a worker (waking it, then waking
        // the caller) costs more than splitting its layers saves. With spare threads and
        // enough work to split, its layers share out to helpers kept spinning.
        let warm = n.saturating_mul(macs) >= WARM_MIN_MACS && crate::threads::keep_warm(available);
        work(0, &mut data, if warm { available } else { 1 })?;
        return Ok(BatchOutput { n, data });
    }
    let failed = std::sync::Mutex::new(None);
    let part = |i: usize, mine: &mut [f32]| {
        if let Err(e) = work(i * chunk, mine, inner) {
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        }
    };
    // On the pool's workers, one task per chunk: a worker that wakes late takes fewer (rayon's
    // work stealing), and a single large chunk shares out its layers among the workers.
    crate::threads::install(available, || {
        crate::threads::for_each(available, data.chunks_mut(chunk * sample_len), part)
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(BatchOutput { n, data }),
    }
}

/// Whether `run_batch` runs on the calling thread rather than the pool: with one thread in
/// all (`available`), or with one chunk's worth of threads (`threads`: a batch of one chunk,
/// whose layers then split among the spinning helpers). The values do not depend on it.
///
/// Measured on a Sapphire Rapids VM at batch 1 on two threads, the caller against a worker of
/// the pool: vgg 1.13 → 0.83 ms (bf16 0.60 → 0.36), resnet18 20.8 → 18.6 ms (bf16 8.4 → 6.9),
/// mobilenetv2 7.4 → 6.7 ms; before the helpers kept spinning through a long pass
/// (`threads::for_each`), networks from 20 M multiply-accumulates went to the pool.
fn on_caller(available: usize, threads: usize) -> bool {
    available == 1 || threads == 1
}

/// Whether a pooling or upsampling layer of `planes` planes, `plane` elements each (input
/// for pooling, output for upsampling), runs on `threads` threads: with two of each, and
/// [`POOL_MIN_SPLIT`] elements in all. The values do not depend on it.
fn split_planes(threads: usize, planes: usize, plane: usize) -> bool {
    threads >= 2 && planes >= 2 && planes * plane >= POOL_MIN_SPLIT
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Set: every convolution's output goes channels-first at once, as before channel-last
        /// activations (the reference of `channel_last_activations_change_no_bit`).
        pub(super) static CHANNELS_FIRST_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Inputs copied into an executor's own buffer ([`Exec::own`]) on this thread.
        pub(super) static OWNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn small_batches_stay_on_the_calling_thread() {
        for (available, threads, want) in [
            (1, 1, true),
            (1, 4, true),
            (2, 1, true),
            (2, 2, false),
            (4, 1, true),
            (4, 3, false),
        ] {
            assert_eq!(
                on_caller(available, threads),
                want,
                "{available}, {threads}"
            );
        }
    }

    #[test]
    fn pooling_splits_over_threads_from_two_threads_two_planes_and_enough_elements() {
        let half = POOL_MIN_SPLIT / 2;
        for (threads, planes, plane, want) in [
            (2, 2, half, true),
            (2, 2, half - 1, false),
            (4, 64, POOL_MIN_SPLIT / 64, true),
            (1, 100, POOL_MIN_SPLIT, false),
            (2, 1, POOL_MIN_SPLIT, false),
            (2, 0, POOL_MIN_SPLIT, false),
            (3, 3, POOL_MIN_SPLIT, true),
        ] {
            assert_eq!(
                split_planes(threads, planes, plane),
                want,
                "{threads} threads, {planes} planes of {plane}"
            );
        }
    }
    use crate::init::Rng;
    use crate::ops::linear::LinearParams;
    use crate::test_util::rand_vec;

    #[test]
    fn chunks_and_threads_do_not_change_the_result() {
        let layer = Linear::seeded(
            "0",
            LinearParams {
                in_features: 12,
                out_features: 5,
            },
            true,
            &mut Rng::new(3),
        );
        let run = |e: &mut Exec| -> Result<(), Error> {
            e.activation(Activation::Tanh);
            e.linear(&layer);
            Ok(())
        };
        let _count = crate::threads::count_lock();
        for n in [0, 1, 7, 8, 9, 17, 33, 64] {
            let x = Array4::from_shape_vec((n, 3, 2, 2), rand_vec(n * 12, n as u64)).unwrap();
            let whole = run_batch(x.view(), [3, 2, 2], 5, true, (usize::MAX, 5), &run)
                .unwrap()
                .data;
            for threads in [1, 2, 3, 5] {
                crate::set_num_threads(threads);
                let split = run_batch(x.view(), [3, 2, 2], 5, false, (usize::MAX, 5), &run)
                    .unwrap()
                    .data;
                assert_eq!(split.len(), n * 5);
                assert_eq!(split, whole, "n = {n}, threads = {threads}");
            }
        }
        crate::set_num_threads(0);
    }

    #[test]
    fn fused_convolution_equals_the_separate_layers_bit_for_bit() {
        use crate::ops::batchnorm::BatchNormParams;
        use crate::ops::conv::Conv2dParams;
        let conv = Conv2d::seeded(
            "0",
            Conv2dParams {
                c_in: 4,
                c_out: 6,
                groups: 2,
                kernel: [3, 3],
                stride: [1, 2],
                padding: [1, 1],
                dilation: [1, 1],
                in_hw: [7, 6],
                out_hw: [7, 3],
            },
            true,
            &mut Rng::new(1),
        );
        for affine in [true, false] {
            let mut bn = BatchNorm2d::seeded(
                "1",
                BatchNormParams {
                    channels: 6,
                    hw: 21,
                    eps: 1e-3,
                    momentum: 0.1,
                    affine,
                    track_running_stats: true,
                },
                &mut Rng::new(2),
            );
            let r = rand_vec(24, 9);
            bn.running = Some((
                r[..6].to_vec().into(),
                r[6..12].iter().map(|v| v.abs() + 0.5).collect(),
            ));
            if affine {
                bn.weight = Some(r[12..18].to_vec().into());
                bn.bias = Some(r[18..].to_vec().into());
            }
            for act in [
                None,
                Some(Activation::Relu),
                Some(Activation::Gelu),
                Some(Activation::Relu6),
                Some(Activation::Hardswish),
                Some(Activation::Hardsigmoid),
            ] {
                for bn in [None, Some(&bn)] {
                    let x = Array4::from_shape_vec((3, 4, 7, 6), rand_vec(3 * 168, 5)).unwrap();
                    let mut separate = Exec::from_view(x.view(), [4, 7, 6]).unwrap();
                    separate.conv2d(&conv);
                    if let Some(bn) = bn {
                        separate.batchnorm(bn).unwrap();
                    }
                    if let Some(act) = act {
                        separate.activation(act);
                    }
                    let mut fused = Exec::from_view(x.view(), [4, 7, 6]).unwrap();
                    fused.conv2d_fused(&conv, bn, act).unwrap();
                    let bits =
                        |e: &mut Exec| e.output().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&mut fused),
                        bits(&mut separate),
                        "affine {affine}, {act:?}"
                    );
                }
            }
        }
    }

    /// `conv2d_pool` gives the bits of `conv2d_fused` then `pool2d`, in the convolution's pass
    /// where it fuses (a direct f32 convolution, a batch norm that folds, a 2×2 pool), as the
    /// two steps otherwise.
    #[test]
    fn a_pool_after_a_convolution_equals_the_two_steps_bit_for_bit() {
        use crate::ops::batchnorm::BatchNormParams;
        use crate::ops::conv::{direct, Conv2dParams};
        use crate::ops::pool::PoolKind;
        use crate::Precision;
        let conv = |c_in: usize, c_out: usize, bf16: bool| {
            let mut conv = Conv2d::seeded(
                "0",
                Conv2dParams::same3x3(c_in, c_out, [9, 13]),
                true,
                &mut Rng::new(c_out as u64),
            );
            if bf16 {
                conv.set_precision(Precision::Bf16);
            }
            conv
        };
        let pool = |c: usize, k: usize, kind| Pool2dParams {
            kind,
            channels: c,
            kernel: [k, k],
            stride: [2, 2],
            padding: [0, 0],
            ceil_mode: false,
            in_hw: [9, 13],
            out_hw: [(9 - k) / 2 + 1, (13 - k) / 2 + 1],
        };
        let bn = |c: usize, running: bool| {
            let mut bn = BatchNorm2d::seeded(
                "1",
                BatchNormParams {
                    channels: c,
                    hw: 9 * 13,
                    eps: 1e-3,
                    momentum: 0.1,
                    affine: true,
                    track_running_stats: running,
                },
                &mut Rng::new(2),
            );
            let r = rand_vec(4 * c, 9);
            bn.weight = Some(r[..c].to_vec().into());
            bn.bias = Some(r[c..2 * c].to_vec().into());
            if running {
                bn.running = Some((
                    r[2 * c..3 * c].to_vec().into(),
                    r[3 * c..].iter().map(|v| v.abs() + 0.5).collect(),
                ));
            }
            bn
        };
        let (max, avg) = (
            PoolKind::Max,
            PoolKind::Avg {
                count_include_pad: true,
            },
        );
        let relu = Some(Activation::Relu);
        // (c_in, c_out, bf16, batch norm with running statistics, activation, pool, fuses)
        let cases = [
            (3, 10, false, Some(true), relu, pool(10, 2, max), true),
            (3, 10, false, None, relu, pool(10, 2, avg), true),
            (3, 10, false, None, None, pool(10, 2, max), true),
            (
                3,
                10,
                false,
                Some(true),
                Some(Activation::Gelu),
                pool(10, 2, max),
                false,
            ),
            (3, 10, true, Some(true), relu, pool(10, 2, max), true),
            (3, 32, true, Some(true), relu, pool(32, 2, max), false),
            (3, 10, false, Some(false), relu, pool(10, 2, max), false),
            (12, 10, false, Some(true), relu, pool(10, 2, max), false),
            (3, 10, false, Some(true), relu, pool(10, 3, max), false),
        ];
        for (c_in, c_out, bf16, running, act, pool, fuses) in cases {
            let conv = conv(c_in, c_out, bf16);
            let bn = running.map(|running| bn(c_out, running));
            let x = Array4::from_shape_vec((2, c_in, 9, 13), rand_vec(2 * c_in * 117, 5)).unwrap();
            let mut separate = Exec::from_view(x.view(), [c_in, 9, 13]).unwrap();
            separate.conv2d_fused(&conv, bn.as_ref(), act).unwrap();
            separate.pool2d(&pool);
            let mut fused = Exec::from_view(x.view(), [c_in, 9, 13]).unwrap();
            direct::tests::POOLED.set(0);
            direct::tests::BANDED.set(0);
            fused.conv2d_pool(&conv, bn.as_ref(), act, &pool).unwrap();
            assert_eq!(
                direct::tests::POOLED.get(),
                usize::from(fuses),
                "{c_in} {c_out}"
            );
            // Outputs this small stay whole in bf16 too.
            assert_eq!(direct::tests::BANDED.get(), 0, "{c_in} {c_out}");
            let bits = |e: &mut Exec| e.output().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&mut fused),
                bits(&mut separate),
                "{c_in} {c_out} {pool:?}"
            );
        }
    }

    /// A bf16 direct convolution whose output is larger than half of L2 per sample, then a
    /// pool, runs band by band (`direct::conv2d_bf16_pooled`, counted) with the two steps'
    /// bits: with a folded batch norm and ReLU, with another activation, with ResNet's 3×3
    /// stride-2 max pool and with a 2×2 average, on one thread and on two; in f32 it does not.
    #[test]
    fn a_pool_after_a_large_bf16_convolution_runs_in_bands() {
        use crate::ops::batchnorm::BatchNormParams;
        use crate::ops::conv::{direct, Conv2dParams};
        use crate::ops::pool::PoolKind;
        use crate::Precision;
        // 32 channels of `side²` values: more than half of L2.
        let side = ((crate::cache::caches().l2 / 256) as f64).sqrt() as usize + 3;
        let hw = [side, side + 1];
        let p = Conv2dParams {
            c_in: 3,
            c_out: 32,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: hw,
            out_hw: hw,
        };
        assert!(4 * p.out_len() > crate::cache::caches().l2 / 2);
        let mut bn = BatchNorm2d::seeded(
            "1",
            BatchNormParams {
                channels: 32,
                hw: hw[0] * hw[1],
                eps: 1e-3,
                momentum: 0.1,
                affine: true,
                track_running_stats: true,
            },
            &mut Rng::new(2),
        );
        let r = rand_vec(64, 9);
        bn.running = Some((
            r[..32].to_vec().into(),
            r[32..].iter().map(|v| v.abs() + 0.5).collect(),
        ));
        let pool = |kind, k: usize, pad: usize| {
            let side = |i: usize| crate::shape::out_len(hw[i], k, 2, pad, 1, false).unwrap();
            Pool2dParams {
                kind,
                channels: 32,
                kernel: [k, k],
                stride: [2, 2],
                padding: [pad, pad],
                ceil_mode: false,
                in_hw: hw,
                out_hw: [side(0), side(1)],
            }
        };
        let avg = PoolKind::Avg {
            count_include_pad: true,
        };
        let x =
            Array4::from_shape_vec((2, 3, hw[0], hw[1]), rand_vec(6 * hw[0] * hw[1], 5)).unwrap();
        for precision in [Precision::Bf16, Precision::F32] {
            let mut conv = Conv2d::seeded("0", p, true, &mut Rng::new(3));
            conv.set_precision(precision);
            for (act, pool) in [
                (Some(Activation::Relu), pool(PoolKind::Max, 3, 1)),
                (Some(Activation::Gelu), pool(avg, 2, 0)),
            ] {
                for threads in [1, 2] {
                    let run = |banded: bool| {
                        let mut e = Exec::from_view(x.view(), [3, hw[0], hw[1]]).unwrap();
                        e.threads = threads;
                        crate::threads::install(threads, || {
                            direct::tests::BANDED.set(0);
                            if banded {
                                e.conv2d_pool(&conv, Some(&bn), act, &pool).unwrap();
                            } else {
                                e.conv2d_fused(&conv, Some(&bn), act).unwrap();
                                e.pool2d(&pool);
                            }
                            let bits: Vec<u32> = e.output().iter().map(|v| v.to_bits()).collect();
                            (bits, direct::tests::BANDED.get())
                        })
                    };
                    let (got, bands) = run(true);
                    let (want, none) = run(false);
                    let what = format!("{precision:?} {act:?} {pool:?}, {threads} threads");
                    assert_eq!(bands, usize::from(precision == Precision::Bf16), "{what}");
                    assert_eq!(none, 0, "{what}");
                    assert!(got == want, "{what}: not the two steps' bits");
                }
            }
        }
    }

    #[test]
    fn pooling_split_over_threads_changes_nothing() {
        use crate::ops::pool::PoolKind;
        for (kind, kernel, stride, padding) in [
            (PoolKind::Max, [3, 3], [2, 2], [1, 1]),
            (PoolKind::Max, [2, 2], [2, 2], [0, 0]),
            (
                PoolKind::Avg {
                    count_include_pad: false,
                },
                [3, 3],
                [1, 1],
                [1, 1],
            ),
        ] {
            let in_hw = [37, 41];
            let out_hw = [
                crate::shape::out_len(37, kernel[0], stride[0], padding[0], 1, false).unwrap(),
                crate::shape::out_len(41, kernel[1], stride[1], padding[1], 1, false).unwrap(),
            ];
            let p = Pool2dParams {
                kind,
                channels: 97,
                kernel,
                stride,
                padding,
                ceil_mode: false,
                in_hw,
                out_hw,
            };
            assert!(2 * p.in_len() >= POOL_MIN_SPLIT, "the case must be split");
            let x = Array4::from_shape_vec((2, 97, 37, 41), rand_vec(2 * p.in_len(), 4)).unwrap();
            let run = |threads: usize| {
                let mut e = Exec::from_view(x.view(), [97, 37, 41]).unwrap();
                e.threads = threads;
                crate::threads::install(threads, || e.pool2d(&p));
                e.output().to_vec()
            };
            let one = run(1);
            for threads in [2, 3] {
                assert_eq!(run(threads), one, "{kind:?}, {threads} threads");
            }
        }
    }

    #[test]
    fn upsampling_split_over_threads_changes_nothing() {
        use crate::ops::upsample::UpsampleMode;
        for mode in [
            UpsampleMode::Nearest,
            UpsampleMode::Bilinear {
                align_corners: false,
            },
            UpsampleMode::Bilinear {
                align_corners: true,
            },
        ] {
            // 2 samples × 37 channels: 74 planes, split unevenly over 3 threads.
            let p = Upsample2dParams {
                channels: 37,
                scale: [2, 3],
                mode,
                in_hw: [23, 19],
                out_hw: [46, 57],
            };
            let x = Array4::from_shape_vec((2, 37, 23, 19), rand_vec(2 * p.in_len(), 9)).unwrap();
            let run = |threads: usize| {
                let mut e = Exec::from_view(x.view(), [37, 23, 19]).unwrap();
                e.threads = threads;
                crate::threads::install(threads, || e.upsample2d(&p));
                e.output().to_vec()
            };
            let one = run(1);
            const { assert!(2 * 37 * 46 * 57 >= POOL_MIN_SPLIT, "large enough to split") };
            for threads in [2, 3] {
                assert_eq!(run(threads), one, "{mode:?}, {threads} threads");
            }
        }
    }

    /// Block tests: layers built in one place (the holders' constructors), plain-Vec
    /// references, and the executor's buffers for the allocation checks.
    mod blocks {
        use super::*;
        use crate::bare::max_of;
        use crate::layers::batch_norm;
        use crate::ops::conv::Conv2dParams;
        use crate::ops::conv_transpose::ConvTranspose2dParams;

        /// A convolution `c_in → c_out`, kernel `k`, stride `s`, padding `k / 2`, on `[h, w]`.
        pub(super) fn conv(
            c_in: usize,
            c_out: usize,
            k: usize,
            s: usize,
            hw: [usize; 2],
        ) -> Conv2d {
            let side = |i: usize| {
                crate::shape::out_len(hw[i], k, s, k / 2, 1, false).expect("a valid case")
            };
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel: [k, k],
                stride: [s, s],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                in_hw: hw,
                out_hw: [side(0), side(1)],
            };
            Conv2d::seeded(
                "0",
                p,
                true,
                &mut Rng::new((c_in * 100 + c_out * 10 + k) as u64),
            )
        }

        /// A transposed convolution `c → c_out`, kernel 3, stride 1, padding 1 (same size).
        fn conv_t(c: usize, c_out: usize, hw: [usize; 2]) -> ConvTranspose2d {
            let p = ConvTranspose2dParams {
                c_in: c,
                c_out,
                groups: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
                output_padding: [0, 0],
                dilation: [1, 1],
                in_hw: hw,
                out_hw: hw,
            };
            ConvTranspose2d::seeded("0", p, true, &mut Rng::new(c as u64 + 77))
        }

        /// `f` on a fresh executor holding `x` (`n` samples): one layer's reference output.
        /// Every layer the executor runs, from and to channel-last activations (a Winograd
        /// convolution's output): the layers that take them (Winograd convolutions, max and
        /// global pools, activations, a residual convolution's input) keep them, every other
        /// layer and the output lay them out channels-first, with the bits of an executor that
        /// changes each Winograd output back at once (the layout before channel-last
        /// activations), in f32 and bf16, on one thread and on two.
        #[test]
        fn channel_last_activations_change_no_bit() {
            use crate::ops::pool::PoolKind;
            use crate::ops::upsample::UpsampleMode;
            let hw = [10, 10];
            let pool = |kind, k: usize, s: usize, pad: usize, c: usize, side: usize| {
                let out = crate::shape::out_len(side, k, s, pad, 1, false).unwrap();
                Pool2dParams {
                    kind,
                    channels: c,
                    kernel: [k, k],
                    stride: [s, s],
                    padding: [pad, pad],
                    ceil_mode: false,
                    in_hw: [side, side],
                    out_hw: [out, out],
                }
            };
            let max3 = pool(PoolKind::Max, 3, 2, 1, 24, 10);
            let avg2 = pool(
                PoolKind::Avg {
                    count_include_pad: true,
                },
                2,
                2,
                0,
                24,
                10,
            );
            let gap = pool(
                PoolKind::Avg {
                    count_include_pad: true,
                },
                10,
                10,
                0,
                24,
                10,
            );
            let gmax = pool(PoolKind::Max, 5, 5, 0, 32, 5);
            let up = Upsample2dParams {
                channels: 24,
                scale: [2, 2],
                mode: UpsampleMode::Nearest,
                in_hw: [5, 5],
                out_hw: [10, 10],
            };
            let fc = |i: usize, o: usize| {
                let p = crate::ops::linear::LinearParams {
                    in_features: i,
                    out_features: o,
                };
                Linear::seeded("0", p, true, &mut Rng::new(7))
            };
            let bn = batch_norm(24, 100, true, 3);
            let stats = batch_norm(24, 100, false, 4);
            let relu = Some(Activation::Relu);
            for precision in [crate::Precision::F32, crate::Precision::Bf16] {
                let mut w1 = conv(16, 24, 3, 1, hw);
                let mut w2 = conv(24, 24, 3, 1, hw);
                let mut w3 = conv(24, 32, 3, 1, [5, 5]);
                let mut strided = conv(24, 24, 3, 2, hw);
                let mut fc1 = fc(24 * 25, 10);
                for layer in [&mut w1, &mut w2, &mut w3, &mut strided] {
                    assert!(
                        layer.params.algorithm() == conv::Algorithm::Winograd
                            || layer.params.stride == [2, 2]
                    );
                    layer.set_precision(precision);
                }
                fc1.set_precision(precision);
                let (w1, w2, w3, strided, fc1) = (&w1, &w2, &w3, &strided, &fc1);
                // Each a network from `[16, 10, 10]`.
                type Net<'a> = &'a (dyn Fn(&mut Exec) + Sync);
                let nets: [(&str, Net<'_>); 6] = [
                    (
                        "winograd, max pool, winograd, global pool",
                        &|e: &mut Exec| {
                            e.conv2d_fused(w1, Some(&bn), relu).unwrap();
                            e.conv2d_fused(w2, None, Some(Activation::Gelu)).unwrap();
                            e.pool2d(&max3);
                            e.activation(Activation::Relu6);
                            e.conv2d_fused(w3, None, relu).unwrap();
                            e.pool2d(&gmax);
                        },
                    ),
                    ("average pool, upsampling, linear", &|e: &mut Exec| {
                        e.conv2d(w1);
                        e.pool2d(&avg2);
                        e.upsample2d(&up);
                        e.conv2d_fused(w2, None, relu).unwrap();
                        e.pool2d(&avg2);
                        e.linear(fc1);
                    }),
                    ("residual block", &|e: &mut Exec| {
                        e.conv2d_fused(w1, None, relu).unwrap();
                        e.block_enter();
                        e.conv2d_fused(w2, Some(&bn), relu).unwrap();
                        e.conv2d_residual(w2, Some(&bn), relu).unwrap();
                        e.conv2d(w2);
                        e.pool2d(&gap);
                    }),
                    ("strided im2col, softmax", &|e: &mut Exec| {
                        e.conv2d(w1);
                        e.conv2d(strided);
                        e.softmax(24, 25);
                    }),
                    ("batch statistics", &|e: &mut Exec| {
                        e.conv2d_fused(w1, Some(&stats), relu).unwrap();
                        e.conv2d(w2);
                        e.batchnorm(&bn).unwrap();
                    }),
                    ("concatenation", &|e: &mut Exec| {
                        e.conv2d(w1);
                        e.concat_enter(2 * 24 * 100);
                        e.concat_restore();
                        e.conv2d(w2);
                        e.concat_write(0, 24, 100, 48);
                        e.concat_restore();
                        e.concat_write_input(24, 24, 100, 48);
                        e.concat_exit();
                    }),
                ];
                let n = 2;
                let x = rand_vec(n * 16 * 100, 17);
                for (what, net) in nets {
                    for threads in [1, 2] {
                        let run = |first_only: bool| {
                            let mut e = Exec::with_data(n, x.clone());
                            e.threads = threads;
                            crate::threads::install(threads, || {
                                tests::CHANNELS_FIRST_ONLY.set(first_only);
                                net(&mut e);
                                tests::CHANNELS_FIRST_ONLY.set(false);
                            });
                            bits(e.output())
                        };
                        let got = run(false);
                        assert_eq!(got, run(true), "{what}, {precision:?}, {threads} threads");
                        if what.contains("softmax") {
                            // The last layer ran: each position's 24 channels sum to 1.
                            let v: Vec<f32> = got.iter().map(|&b| f32::from_bits(b)).collect();
                            for sample in v.chunks_exact(24 * 25) {
                                for i in 0..25 {
                                    let sum: f32 = (0..24).map(|c| sample[c * 25 + i]).sum();
                                    assert!((sum - 1.0).abs() < 1e-5, "{what}: {sum}");
                                }
                            }
                        }
                    }
                }
            }
        }

        /// A contiguous batch is read where the caller holds it: the first layer that writes a
        /// new tensor reads it there (the executor's own buffer is never written), and every
        /// other first step (in place, or saving the input for a block) copies it in first.
        /// Each gives the bits of a batch copied in from a view with other strides, on one
        /// thread and on two, and so does a network with no layer at all.
        #[test]
        fn the_input_is_read_in_place_or_copied_in_first() {
            use crate::ops::pool::PoolKind;
            use crate::ops::upsample::UpsampleMode;
            let (n, c, hw) = (2, 16, [10, 10]);
            let max3 = Pool2dParams {
                kind: PoolKind::Max,
                channels: c,
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                ceil_mode: false,
                in_hw: hw,
                out_hw: [5, 5],
            };
            let up = Upsample2dParams {
                channels: c,
                scale: [2, 2],
                mode: UpsampleMode::Nearest,
                in_hw: hw,
                out_hw: [20, 20],
            };
            let fc = Linear::seeded(
                "0",
                crate::ops::linear::LinearParams {
                    in_features: c * 100,
                    out_features: 10,
                },
                true,
                &mut Rng::new(7),
            );
            let (w1, stem) = (conv(c, 24, 3, 1, hw), conv(c, 8, 3, 2, hw));
            let (w16, t) = (conv(c, c, 3, 1, hw), conv_t(c, 8, hw));
            let bn = batch_norm(c, 100, true, 3);
            let relu = Some(Activation::Relu);
            // (what, whether it reads the input in place, the network)
            type Net<'a> = &'a (dyn Fn(&mut Exec) + Sync);
            let nets: [(&str, bool, Net<'_>); 13] = [
                ("nothing", false, &|_: &mut Exec| {}),
                ("convolution", true, &|e: &mut Exec| e.conv2d(&w1)),
                ("fused convolution", true, &|e: &mut Exec| {
                    e.conv2d_fused(&stem, Some(&bn8()), relu).unwrap();
                }),
                ("convolution and pool", true, &|e: &mut Exec| {
                    e.conv2d_pool(&w16, None, relu, &max3).unwrap();
                }),
                ("pool", true, &|e: &mut Exec| e.pool2d(&max3)),
                ("upsampling", true, &|e: &mut Exec| e.upsample2d(&up)),
                ("linear", true, &|e: &mut Exec| e.linear(&fc)),
                ("transposed convolution", true, &|e: &mut Exec| {
                    e.conv_transpose2d(&t)
                }),
                ("activation", false, &|e: &mut Exec| {
                    e.activation(Activation::Gelu);
                    e.conv2d(&w1);
                }),
                ("batch norm", false, &|e: &mut Exec| {
                    e.batchnorm(&bn).unwrap();
                    e.conv2d(&w1);
                }),
                ("softmax", false, &|e: &mut Exec| e.softmax(c, 100)),
                ("residual block", false, &|e: &mut Exec| {
                    e.block_enter();
                    e.conv2d_fused(&w16, None, relu).unwrap();
                    e.conv2d_residual(&w16, Some(&bn), relu).unwrap();
                }),
                ("concatenation", false, &|e: &mut Exec| {
                    e.concat_enter(2 * c * 100);
                    e.concat_restore();
                    e.conv2d(&w16);
                    e.concat_write(0, c, 100, 2 * c);
                    e.concat_restore();
                    e.concat_write_input(c, c, 100, 2 * c);
                    e.concat_exit();
                }),
            ];
            let x =
                Array4::from_shape_vec((n, c, hw[0], hw[1]), rand_vec(n * c * 100, 23)).unwrap();
            // The same values with other strides: copied in.
            let mut strided = Array4::zeros(ndarray::ShapeBuilder::f((n, c, hw[0], hw[1])));
            strided.assign(&x);
            assert!(strided.view().to_slice().is_none());
            for (what, in_place, net) in nets {
                for threads in [1, 2] {
                    let run = |view: ArrayView4<'_, f32>| {
                        // The executor's buffers hold NaN: a value of its own it read shows.
                        let mut e = Exec::with_data(n, vec![f32::NAN; n * c * 100]);
                        e.threads = threads;
                        e.load(view);
                        assert_eq!(e.input.is_some(), view.to_slice().is_some(), "{what}");
                        // Counted on the thread that runs the network (a worker of the pool).
                        crate::threads::install(threads, || {
                            tests::OWNED.set(0);
                            net(&mut e);
                            (bits(e.output()), tests::OWNED.replace(0))
                        })
                    };
                    let (got, copies) = run(x.view());
                    assert_eq!(copies, usize::from(!in_place), "{what}, {threads} threads");
                    let (want, copies) = run(strided.view());
                    let differ = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert!(
                        got.len() == want.len() && differ.is_none(),
                        "{what}, {threads} threads: {} values against {}, first difference at {differ:?}",
                        got.len(),
                        want.len()
                    );
                    assert_eq!(copies, 0, "{what}: a strided batch is copied in by `load`");
                }
            }
        }

        /// A batch norm of 8 channels on 5×5 with running statistics.
        fn bn8() -> BatchNorm2d {
            batch_norm(8, 25, true, 5)
        }

        fn apply(n: usize, x: &[f32], f: impl FnOnce(&mut Exec)) -> Vec<f32> {
            let mut e = Exec::with_data(n, x.to_vec());
            f(&mut e);
            e.output().to_vec()
        }

        /// `act(a + b)` element-wise.
        fn add_act(a: &[f32], b: &[f32], act: Option<Activation>) -> Vec<f32> {
            assert_eq!(a.len(), b.len());
            let mut y: Vec<f32> = a.iter().zip(b).map(|(a, b)| a + b).collect();
            if let Some(act) = act {
                activation::activation(act, &mut y);
            }
            y
        }

        /// `torch.cat(parts, dim=1)` of `[n, channels_i, hw]` tensors.
        fn cat(n: usize, hw: usize, parts: &[(&[f32], usize)]) -> Vec<f32> {
            let mut out = Vec::new();
            for s in 0..n {
                for &(t, c) in parts {
                    assert_eq!(t.len(), n * c * hw);
                    out.extend_from_slice(&t[s * c * hw..(s + 1) * c * hw]);
                }
            }
            out
        }

        fn bits(v: &[f32]) -> Vec<u32> {
            v.iter().map(|v| v.to_bits()).collect()
        }

        #[test]
        fn a_branch_convolution_writes_its_channels_bit_for_bit() {
            // Three samples, an identity branch first, so the slice starts at an offset inside
            // each sample and the samples' slices are interleaved with other channels.
            let (n, hw) = (3, [5, 7]);
            let x = rand_vec(n * 3 * 35, 21);
            let conv = conv(3, 4, 3, 1, hw);
            for norm in [None, Some(true), Some(false)] {
                let bn = norm.map(|running| batch_norm(4, 35, running, 8));
                for act in [None, Some(Activation::Relu), Some(Activation::Silu)] {
                    let mut e = Exec::with_data(n, x.clone());
                    e.concat_enter(7 * 35);
                    e.concat_write_input(0, 3, 35, 7);
                    e.conv2d_concat(&conv, bn.as_ref(), act, 3, 7).unwrap();
                    e.concat_exit();
                    let y = apply(n, &x, |e| {
                        e.conv2d(&conv);
                        if let Some(bn) = &bn {
                            e.batchnorm(bn).unwrap();
                        }
                        if let Some(act) = act {
                            e.activation(act);
                        }
                    });
                    let want = cat(n, 35, &[(&x, 3), (&y, 4)]);
                    assert_eq!(bits(e.output()), bits(&want), "bn {norm:?}, {act:?}");
                    assert!(e.lens.is_empty());
                }
            }
        }

        #[test]
        fn transposed_and_upsampling_branches_write_their_channels_bit_for_bit() {
            use crate::ops::upsample::UpsampleMode;
            let (n, hw) = (3, [5, 7]);
            let x = rand_vec(n * 3 * 35, 22);
            let conv_t = conv_t(3, 4, hw);
            let up = Upsample2dParams {
                channels: 3,
                scale: [1, 1],
                mode: UpsampleMode::Bilinear {
                    align_corners: false,
                },
                in_hw: hw,
                out_hw: hw,
            };
            for norm in [None, Some(true), Some(false)] {
                let bn = norm.map(|running| batch_norm(4, 35, running, 9));
                let mut e = Exec::with_data(n, x.clone());
                e.concat_enter(10 * 35);
                e.conv_transpose2d_concat(&conv_t, bn.as_ref(), Some(Activation::Relu), 0, 10)
                    .unwrap();
                e.concat_restore();
                e.upsample2d_concat(&up, 4, 10);
                e.concat_write_input(7, 3, 35, 10);
                e.concat_exit();
                let t = apply(n, &x, |e| {
                    e.conv_transpose2d(&conv_t);
                    if let Some(bn) = &bn {
                        e.batchnorm(bn).unwrap();
                    }
                    e.activation(Activation::Relu);
                });
                let u = apply(n, &x, |e| e.upsample2d(&up));
                let want = cat(n, 35, &[(&t, 4), (&u, 3), (&x, 3)]);
                assert_eq!(bits(e.output()), bits(&want), "bn {norm:?}");
                assert!(e.lens.is_empty());
            }
        }

        #[test]
        fn a_residual_convolution_equals_the_separate_steps_bit_for_bit() {
            let (n, hw) = (3, [7, 6]);
            let x = rand_vec(n * 4 * 42, 11);
            let body = conv(4, 6, 3, 1, hw);
            let last = conv(6, 4, 3, 1, hw);
            let last_t = conv_t(6, 4, hw);
            let acts = [
                None,
                Some(Activation::Relu),
                Some(Activation::Relu6),
                Some(Activation::Gelu),
            ];
            for transposed in [false, true] {
                for norm in [None, Some(true), Some(false)] {
                    let bn = norm.map(|running| batch_norm(4, 42, running, 5));
                    for act in acts {
                        let mut e = Exec::with_data(n, x.clone());
                        e.block_enter();
                        e.conv2d(&body);
                        e.activation(Activation::Relu);
                        if transposed {
                            e.conv_transpose2d_residual(&last_t, bn.as_ref(), act)
                        } else {
                            e.conv2d_residual(&last, bn.as_ref(), act)
                        }
                        .unwrap();
                        assert!(e.lens.is_empty(), "the block popped its entry");
                        let want = apply(n, &x, |e| {
                            e.conv2d(&body);
                            e.activation(Activation::Relu);
                            if transposed {
                                e.conv_transpose2d(&last_t);
                            } else {
                                e.conv2d(&last);
                            }
                            if let Some(bn) = &bn {
                                e.batchnorm(bn).unwrap();
                            }
                        });
                        let want = add_act(&want, &x, act);
                        let what = format!("transposed {transposed}, bn {norm:?}, {act:?}");
                        assert_eq!(bits(e.output()), bits(&want), "{what}");
                    }
                }
            }
        }

        #[test]
        fn a_shortcut_is_swapped_under_the_body() {
            let (n, hw) = (2, [6, 5]);
            let x = rand_vec(n * 3 * 30, 12);
            // shortcut: 1×1 stride 2, 3 → 8; body: 3×3 stride 2, 3 → 8, then 8 → 8.
            let shortcut = conv(3, 8, 1, 2, hw);
            let (b1, b2) = (conv(3, 8, 3, 2, hw), conv(8, 8, 3, 1, [3, 3]));
            let norm = batch_norm(8, 9, true, 3);
            let s = apply(n, &x, |e| e.conv2d(&shortcut));
            let body = apply(n, &x, |e| {
                e.conv2d(&b1);
                e.activation(Activation::Relu);
                e.conv2d(&b2);
                e.batchnorm(&norm).unwrap();
            });
            // Ending in a convolution with the batch norm folded …
            let mut e = Exec::with_data(n, x.clone());
            e.block_enter();
            e.conv2d(&shortcut);
            e.swap_top();
            assert_eq!(e.output(), &x[..], "the body starts from x");
            e.conv2d(&b1);
            e.activation(Activation::Relu);
            e.conv2d_residual(&b2, Some(&norm), Some(Activation::Relu))
                .unwrap();
            let want = add_act(&body, &s, Some(Activation::Relu));
            assert_eq!(bits(e.output()), bits(&want));
            // … or in anything else, with the generic sum.
            let mut e = Exec::with_data(n, x.clone());
            e.block_enter();
            e.conv2d(&shortcut);
            e.swap_top();
            e.conv2d(&b1);
            e.activation(Activation::Relu);
            e.conv2d(&b2);
            e.batchnorm(&norm).unwrap();
            e.residual_add(Some(Activation::Relu6));
            assert!(e.lens.is_empty());
            assert_eq!(
                bits(e.output()),
                bits(&add_act(&body, &s, Some(Activation::Relu6)))
            );
            // The identity shortcut without an activation.
            let mut e = Exec::with_data(n, x.clone());
            e.block_enter();
            e.activation(Activation::Tanh);
            e.residual_add(None);
            let t = apply(n, &x, |e| e.activation(Activation::Tanh));
            assert_eq!(bits(e.output()), bits(&add_act(&t, &x, None)));
        }

        /// `concat(x, conv(x), concat(residual(x), tanh(x)))` over `n` samples of `[2, 5, 4]`,
        /// with a residual block inside a branch and a concatenation inside that: the stack
        /// reaches depth 5.
        fn nested(e: &mut Exec, layers: &(Conv2d, Conv2d, Conv2d)) {
            let hw = 20;
            let (c1, c2, c3) = layers;
            e.concat_enter(10 * hw);
            // branch {}: x itself
            e.concat_write_input(0, 2, hw, 10);
            // branch { conv(2 -> 3) }
            e.concat_restore();
            e.conv2d(c1);
            e.concat_write(2, 3, hw, 10);
            // branch { residual { conv(2 -> 2) relu conv(2 -> 2) } relu, concat { branch {}
            // branch { tanh } } conv(4 -> 5) }
            e.concat_restore();
            e.block_enter();
            e.conv2d(c2);
            e.activation(Activation::Relu);
            e.block_enter();
            e.conv2d(c2);
            e.conv2d_residual(c2, None, Some(Activation::Relu)).unwrap();
            e.residual_add(Some(Activation::Relu));
            e.concat_enter(4 * hw);
            e.concat_write_input(0, 2, hw, 4);
            e.concat_restore();
            e.activation(Activation::Tanh);
            e.concat_write(2, 2, hw, 4);
            e.concat_exit();
            e.conv2d(c3);
            e.concat_write(5, 5, hw, 10);
            e.concat_exit();
        }

        fn nested_layers() -> (Conv2d, Conv2d, Conv2d) {
            let hw = [5, 4];
            (
                conv(2, 3, 3, 1, hw),
                conv(2, 2, 3, 1, hw),
                conv(4, 5, 1, 1, hw),
            )
        }

        /// [`nested`] with plain Vec arithmetic.
        fn nested_reference(n: usize, x: &[f32], layers: &(Conv2d, Conv2d, Conv2d)) -> Vec<f32> {
            let (c1, c2, c3) = layers;
            let relu = Some(Activation::Relu);
            let b1 = apply(n, x, |e| e.conv2d(c1));
            let a = apply(n, x, |e| {
                e.conv2d(c2);
                e.activation(Activation::Relu);
            });
            let inner = apply(n, &apply(n, &a, |e| e.conv2d(c2)), |e| e.conv2d(c2));
            let inner = add_act(&inner, &a, relu);
            let r = add_act(&inner, x, relu);
            let t = apply(n, &r, |e| e.activation(Activation::Tanh));
            let c = cat(n, 20, &[(&r, 2), (&t, 2)]);
            let b2 = apply(n, &c, |e| e.conv2d(c3));
            cat(n, 20, &[(x, 2), (&b1, 3), (&b2, 5)])
        }

        #[test]
        fn concatenations_and_residuals_nest() {
            let layers = nested_layers();
            for n in [1, 3] {
                let x = rand_vec(n * 40, n as u64);
                let mut e = Exec::with_data(n, x.clone());
                nested(&mut e, &layers);
                assert!(e.lens.is_empty(), "every entry popped");
                assert_eq!(e.stack.len(), NESTED.stack.len(), "the deepest point");
                assert_eq!(e.output().len(), n * 200);
                assert_eq!(bits(e.output()), bits(&nested_reference(n, &x, &layers)));
            }
        }

        /// The layout of [`nested`]: activations up to `[10, 5, 4]`, the direct kernel's
        /// scratch of the 3×3 convolutions, 5 channels, and the stack's depths: x, the outer
        /// accumulator, the branch's residual input (later the inner concatenation's input),
        /// and the inner residual's input (later the inner concatenation's accumulator).
        const NESTED: WorkspaceLayout = WorkspaceLayout {
            activations: 200,
            scratch: 490,
            channels: 5,
            stack: &[40, 200, 40, 80],
        };

        /// Pointer and capacity of every buffer of `e`, the ping-pong pair in either order.
        fn buffers(e: &Exec) -> Vec<(usize, usize)> {
            let id = |v: &Vec<f32>| (v.as_ptr() as usize, v.capacity());
            let lined = |v: &Lined| (v.allocation() as usize, v.capacity());
            let mut pair = [lined(&e.cur), lined(&e.next)];
            pair.sort();
            let mut all = pair.to_vec();
            all.extend([id(&e.scratch), id(&e.affine)]);
            all.extend(e.stack.iter().map(lined));
            all.push((e.stack.as_ptr() as usize, e.stack.capacity()));
            all.push((e.lens.as_ptr() as usize, e.lens.capacity()));
            all
        }

        #[test]
        fn an_exact_workspace_never_grows_even_on_the_first_run() {
            let layers = nested_layers();
            let run = |e: &mut Exec| -> Result<(), Error> {
                nested(e, &layers);
                Ok(())
            };
            let scratch = [&layers.0, &layers.1, &layers.2].map(|c| c.params.scratch_len());
            assert_eq!(max_of(&scratch), NESTED.scratch);
            let mut ws = Workspace::new(NESTED);
            assert_eq!(ws.capacity_bytes(), NESTED.bytes());
            assert_eq!(
                NESTED.bytes(),
                4 * (2 * (CHUNK * 200 + LINE - 1) + 490 + LINE - 1
                    + 10
                    + CHUNK * (40 + 200 + 40 + 80)
                    + 4 * (LINE - 1))
            );
            let before = buffers(&ws.exec);
            for n in [CHUNK, 3, 2 * CHUNK + 1] {
                let x = Array4::from_shape_vec((n, 2, 5, 4), rand_vec(n * 40, 9)).unwrap();
                let mut out = Array4::<f32>::zeros((n, 10, 5, 4));
                run_into(
                    x.view(),
                    [2, 5, 4],
                    out.view_mut(),
                    &[10, 5, 4],
                    false,
                    &mut ws,
                    &run,
                )
                .unwrap();
                assert_eq!(buffers(&ws.exec), before, "n = {n}: a buffer grew");
                let want = nested_reference(n, x.as_slice().unwrap(), &layers);
                assert_eq!(bits(out.as_slice().unwrap()), bits(&want), "n = {n}");
            }
        }

        #[test]
        fn a_second_run_with_the_same_sizes_allocates_nothing() {
            let layers = nested_layers();
            let x = rand_vec(3 * 40, 4);
            let mut e = Exec::default();
            let view = ArrayView4::from_shape((3, 2, 5, 4), &x[..]).unwrap();
            e.load(view);
            nested(&mut e, &layers);
            let first = buffers(&e);
            let out = e.output().to_vec();
            e.load(view);
            nested(&mut e, &layers);
            assert_eq!(buffers(&e), first, "the second run allocated");
            assert_eq!(bits(e.output()), bits(&out));
        }

        #[test]
        fn a_failed_run_leaves_no_entries_behind() {
            let layers = nested_layers();
            let x = rand_vec(40, 6);
            let view = ArrayView4::from_shape((1, 2, 5, 4), &x[..]).unwrap();
            let mut e = Exec::default();
            e.load(view);
            e.block_enter();
            e.concat_enter(200);
            assert_eq!(e.lens.len(), 3);
            e.load(view);
            assert!(e.lens.is_empty());
            nested(&mut e, &layers);
            assert_eq!(bits(e.output()), bits(&nested_reference(1, &x, &layers)));
        }
    }

    /// `forward`'s results by value: the sample's values in order, `[C][H][W]` row-major.
    #[test]
    fn one_sample_comes_out_in_order() {
        let x: Vec<f32> = (0..24).map(|v| v as f32 - 7.5).collect();
        let mut e = Exec::from_sample(&x);
        let boxed = e.to_boxed_chw::<2, 3, 4>();
        for (c, plane) in boxed.iter().enumerate() {
            for (y, row) in plane.iter().enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    assert_eq!(v, x[(c * 3 + y) * 4 + i], "[{c}][{y}][{i}]");
                }
            }
        }
        assert_eq!(e.to_array::<24>().as_slice(), &x[..]);
        let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.to_array::<23>()));
        assert!(wrong.is_err(), "a wrong length is a bug, refused");
    }

    /// An error in any one chunk of a batch split over threads is the call's error, whichever
    /// chunk it is (the first, a middle one, the last, shorter one); the other chunks run.
    /// A network whose activations (a layer's input and output) would not fit L2 eight times
    /// over runs in smaller chunks: one sample at a time for activations of half an L2 each,
    /// each result in its place.
    #[test]
    fn large_activations_run_in_smaller_chunks() {
        let l2 = crate::cache::caches().l2;
        let x = Array4::from_shape_fn((5, 1, 1, 1), |(s, ..)| s as f32);
        for (activations, chunk) in [(1, 5), (l2 / 8, 1), (l2 / 16, 2)] {
            let sizes = std::sync::Mutex::new(Vec::new());
            let run = |e: &mut Exec| {
                sizes.lock().unwrap().push(e.n);
                e.own();
                e.cur[..e.len].iter_mut().for_each(|v| *v *= 2.0);
                Ok(())
            };
            let got = run_batch(x.view(), [1, 1, 1], 1, false, (1, activations), &run).unwrap();
            let mut sizes = sizes.into_inner().unwrap();
            sizes.sort_unstable();
            let want: Vec<usize> = {
                let mut w: Vec<usize> = (0..5).step_by(chunk).map(|s| chunk.min(5 - s)).collect();
                w.sort_unstable();
                w
            };
            assert_eq!(sizes, want, "activations {activations}");
            assert_eq!(
                got.into_array2(1).into_raw_vec_and_offset().0,
                vec![0.0, 2.0, 4.0, 6.0, 8.0]
            );
        }
    }

    /// A batch of one chunk runs on the calling thread, however much work it has; with spare
    /// threads and at least `WARM_MIN_MACS`, its layers may use them all (helpers spin), below
    /// that one.
    #[test]
    fn small_batches_share_their_layers_with_spinning_helpers() {
        let _count = crate::threads::count_lock();
        let _helpers = crate::threads::warm_alone(2);
        let x = Array4::from_shape_fn((1, 1, 1, 1), |_| 1.0);
        let seen = std::sync::Mutex::new(Vec::new());
        let run = |e: &mut Exec| {
            seen.lock()
                .unwrap()
                .push((e.threads, rayon::current_thread_index()));
            Ok(())
        };
        for (threads, macs, want) in [
            (2, usize::MAX / 2, 2),
            (2, WARM_MIN_MACS, 2),
            (2, WARM_MIN_MACS - 1, 1),
            (1, WARM_MIN_MACS, 1),
        ] {
            crate::set_num_threads(threads);
            crate::threads::warm(2);
            run_batch(x.view(), [1, 1, 1], 1, false, (macs, 1), &run).unwrap();
            let got = seen.lock().unwrap().pop();
            assert_eq!(got, Some((want, None)), "{threads} threads, {macs} MACs");
        }
        crate::set_num_threads(0);
    }

    #[test]
    fn errors_from_any_chunk_are_returned() {
        let _count = crate::threads::count_lock();
        crate::set_num_threads(2);
        // 20 samples valued by their index: chunks [0, 8), [8, 16), [16, 20).
        let x = Array4::from_shape_fn((20, 1, 1, 1), |(s, ..)| s as f32);
        for bad in 0..3 {
            let ran = std::sync::atomic::AtomicUsize::new(0);
            let run = |e: &mut Exec| {
                ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let chunk = e.output()[0] as usize / CHUNK;
                if chunk == bad {
                    Err(Error::InputShape {
                        expected: vec![bad],
                        found: vec![],
                    })
                } else {
                    Ok(())
                }
            };
            // Three chunks: they go to the pool's two workers.
            let got = run_batch(x.view(), [1, 1, 1], 1, false, (usize::MAX, 1), &run);
            assert_eq!(
                got.err(),
                Some(Error::InputShape {
                    expected: vec![bad],
                    found: vec![],
                }),
                "chunk {bad} failed"
            );
            assert_eq!(ran.into_inner(), 3, "every chunk ran (chunk {bad} failed)");
        }
        // A wrong sample shape fails before any chunk runs.
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let run = |_: &mut Exec| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        };
        assert!(matches!(
            run_batch(x.view(), [2, 1, 1], 1, false, (usize::MAX, 2), &run),
            Err(Error::InputShape { .. })
        ));
        assert_eq!(ran.into_inner(), 0);
        crate::set_num_threads(0);
    }
}
