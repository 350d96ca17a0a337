//! The forward pass over the caller's slices: one sample, one thread, no allocation, no
//! `std`. Generated `forward_in` drives a [`Bare`] executor through the same [`Run`] calls as
//! the batch executor (`exec::Exec`), so the two cannot drift apart.

use crate::error::SliceError;
use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear};
use crate::ops::activation::{self, Activation};
use crate::ops::batchnorm;
use crate::ops::conv::{self, Epilogue};
use crate::ops::conv_transpose;
use crate::ops::pool::{self, Pool2dParams};
use crate::ops::upsample::{self, Upsample2dParams};

/// Element counts of the buffers a forward pass uses, per sample: a model's `WORKSPACE`,
/// computed by the macro from the planned shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceLayout {
    /// The largest activation of one sample (the input or any layer's output).
    pub activations: usize,
    /// The largest scratch of one layer for one sample (im2col, Winograd, pooling).
    pub scratch: usize,
    /// The most output channels of a convolution (its fused batch-norm scale and shift).
    pub channels: usize,
    /// For each depth `d` of the block stack, the largest per-sample length of a tensor ever
    /// held at that depth: a block input saved by `block_enter` or `concat_enter`, a
    /// concatenation's accumulator, or a shortcut's output that `swap_top` moves there. Empty
    /// for a network without blocks.
    pub stack: &'static [usize],
}

impl WorkspaceLayout {
    /// `f32` elements of the workspace `forward_in` needs (a model's `WORKSPACE_LEN`): two
    /// activation buffers (ping-pong), one scratch buffer, the batch-norm scale and shift, and
    /// one buffer per depth of the block stack, all for one sample.
    pub const fn sample_len(&self) -> usize {
        2 * self.activations + self.scratch + 2 * self.channels + self.stack_len()
    }

    /// The sum of [`stack`](Self::stack).
    pub const fn stack_len(&self) -> usize {
        let mut sum = 0;
        let mut d = 0;
        while d < self.stack.len() {
            sum += self.stack[d];
            d += 1;
        }
        sum
    }
}

/// Inference on one sample in the caller's slices, without `std` or an allocator: what every
/// `cnn!` network implements beside [`Model`](https://docs.rs/cnn/latest/cnn/trait.Model.html)
/// (which needs `std`). The generated struct also has these items as inherent ones, so
/// `Net::WORKSPACE_LEN` and `net.forward_in(…)` work without importing the trait; the trait is
/// for code generic over networks.
pub trait SliceModel {
    /// Values of one input sample: `C·H·W`.
    const INPUT_LEN: usize;
    /// Values of one result.
    const OUTPUT_LEN: usize;
    /// `f32` elements of the workspace [`forward_in`](Self::forward_in) needs, from the
    /// compile-time plan (see [`WorkspaceLayout::sample_len`]).
    const WORKSPACE_LEN: usize;

    /// Inference on one sample: `input` holds [`INPUT_LEN`](Self::INPUT_LEN) values
    /// (`[C, H, W]` row-major), `out` receives [`OUTPUT_LEN`](Self::OUTPUT_LEN) values,
    /// `workspace` holds at least [`WORKSPACE_LEN`](Self::WORKSPACE_LEN) values (whatever
    /// they are on entry). No allocation, no panic.
    ///
    /// # Errors
    /// [`SliceError`] for a slice of the wrong length, or a batch norm without running
    /// statistics on a 1×1 map.
    fn forward_in(
        &self,
        input: &[f32],
        out: &mut [f32],
        workspace: &mut [f32],
    ) -> Result<(), SliceError>;
}

/// The largest of `values` (0 for none), usable in constants.
pub const fn max_of(values: &[usize]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < values.len() {
        if values[i] > max {
            max = values[i];
        }
        i += 1;
    }
    max
}

/// The deepest block stack [`Bare`] keeps (a residual block takes one level, a concatenation
/// two); generated code refuses deeper nesting at compile time.
pub const MAX_STACK: usize = 64;

/// The calls generated forward code makes, one per layer or block step, in order; each trusts
/// that the current tensor has the shape the macro computed for that point. Implemented by
/// the batch executor (with `std`) and by [`Bare`].
///
/// A residual block `x → act(body(x) + shortcut(x))` runs as `block_enter` (save x), then with
/// a shortcut its layers and `swap_top`, then the body, ending in `conv2d_residual` (or
/// `conv_transpose2d_residual`, or `residual_add` when the body does not end in a
/// convolution). A concatenation runs as `concat_enter`, then per branch `concat_restore`, its
/// layers and `concat_write` (or `concat_write_input` for an empty branch, or a `*_concat`
/// call for a last layer that writes into its channels directly), then `concat_exit`.
#[allow(missing_docs)] // each method is documented on the batch executor, `exec::Exec`
pub trait Run {
    /// What a layer can refuse (a batch norm without running statistics on one value per
    /// channel).
    type Error;
    fn conv2d(&mut self, layer: &Conv2d);
    fn conv2d_fused(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Self::Error>;
    fn conv2d_pool(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        pool: &Pool2dParams,
    ) -> Result<(), Self::Error>;
    fn conv2d_residual(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Self::Error>;
    fn conv_transpose2d(&mut self, layer: &ConvTranspose2d);
    fn conv_transpose2d_fused(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Self::Error>;
    fn conv_transpose2d_residual(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Self::Error>;
    fn block_enter(&mut self);
    fn swap_top(&mut self);
    fn residual_add(&mut self, act: Option<Activation>);
    fn concat_enter(&mut self, out_len: usize);
    fn concat_write(&mut self, offset: usize, channels: usize, hw: usize, total: usize);
    fn conv2d_concat(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        offset: usize,
        total: usize,
    ) -> Result<(), Self::Error>;
    fn conv_transpose2d_concat(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        offset: usize,
        total: usize,
    ) -> Result<(), Self::Error>;
    fn upsample2d_concat(&mut self, params: &Upsample2dParams, offset: usize, total: usize);
    fn concat_restore(&mut self);
    fn concat_write_input(&mut self, offset: usize, channels: usize, hw: usize, total: usize);
    fn concat_exit(&mut self);
    fn upsample2d(&mut self, params: &Upsample2dParams);
    fn batchnorm(&mut self, layer: &BatchNorm2d) -> Result<(), Self::Error>;
    fn activation(&mut self, act: Activation);
    fn softmax(&mut self, channels: usize, spatial: usize);
    fn pool2d(&mut self, params: &Pool2dParams);
    fn linear(&mut self, layer: &Linear);
}

/// One sample in flight through the caller's workspace: the current activations, the buffer
/// the next layer writes, scratch, the batch-norm coefficients and the block stack, each a
/// fixed region of the workspace (see [`WorkspaceLayout::sample_len`]).
pub struct Bare<'w> {
    len: usize,
    cur: &'w mut [f32],
    next: &'w mut [f32],
    scratch: &'w mut [f32],
    affine: &'w mut [f32],
    /// Depth `d` of the block stack is `stack[start(d)..start(d) + sizes[d]]`.
    stack: &'w mut [f32],
    sizes: &'static [usize],
    /// The length of each live stack entry; `depth` of them are live.
    lens: [usize; MAX_STACK],
    depth: usize,
}

impl<'w> Bare<'w> {
    /// Runs `run` on one sample: checks every length, copies `input` into the workspace,
    /// runs, and copies the result into `out`.
    ///
    /// # Errors
    /// [`SliceError::Input`], [`SliceError::Output`] or [`SliceError::Workspace`] for a slice
    /// of the wrong length (`workspace` may be longer than `layout.sample_len()`), or the first
    /// error of `run`.
    pub fn forward_in(
        layout: &WorkspaceLayout,
        input: &[f32],
        out: &mut [f32],
        workspace: &mut [f32],
        [input_len, output_len]: [usize; 2],
        run: impl FnOnce(&mut Bare<'_>) -> Result<(), SliceError>,
    ) -> Result<(), SliceError> {
        let check = |expected: usize, found: usize| (expected == found).then_some(()).ok_or(());
        check(input_len, input.len()).map_err(|()| SliceError::Input {
            expected: input_len,
            found: input.len(),
        })?;
        check(output_len, out.len()).map_err(|()| SliceError::Output {
            expected: output_len,
            found: out.len(),
        })?;
        let need = layout.sample_len();
        if workspace.len() < need
            || layout.stack.len() > MAX_STACK
            || layout.activations < input_len.max(output_len)
        {
            return Err(SliceError::Workspace {
                expected: need,
                found: workspace.len(),
            });
        }
        let (cur, rest) = workspace.split_at_mut(layout.activations);
        let (next, rest) = rest.split_at_mut(layout.activations);
        let (scratch, rest) = rest.split_at_mut(layout.scratch);
        let (affine, rest) = rest.split_at_mut(2 * layout.channels);
        let stack = &mut rest[..layout.stack_len()];
        cur[..input_len].copy_from_slice(input);
        let mut bare = Bare {
            len: input_len,
            cur,
            next,
            scratch,
            affine,
            stack,
            sizes: layout.stack,
            lens: [0; MAX_STACK],
            depth: 0,
        };
        run(&mut bare)?;
        if bare.len != output_len {
            // The plan and the run disagree: a bug in generated code, reported, not hidden.
            return Err(SliceError::Output {
                expected: output_len,
                found: bare.len,
            });
        }
        out.copy_from_slice(&bare.cur[..output_len]);
        Ok(())
    }

    /// Runs `f(input, output, scratch)` with an output of `out_len` values, which then becomes
    /// the current tensor.
    fn step(&mut self, out_len: usize, f: impl FnOnce(&[f32], &mut [f32], &mut [f32])) {
        f(
            &self.cur[..self.len],
            &mut self.next[..out_len],
            self.scratch,
        );
        core::mem::swap(&mut self.cur, &mut self.next);
        self.len = out_len;
    }

    /// The live entry at depth `d` (from the bottom) and the current tensor.
    fn entry_and_cur(&mut self, d: usize) -> (&mut [f32], &mut [f32]) {
        let start: usize = self.sizes[..d].iter().sum();
        let len = self.lens[d];
        (
            &mut self.stack[start..start + len],
            &mut self.cur[..self.len],
        )
    }

    /// Pushes an entry of `len` values with unspecified contents; returns its depth.
    fn push_len(&mut self, len: usize) -> usize {
        let d = self.depth;
        assert!(
            d < self.sizes.len() && len <= self.sizes[d],
            "block stack overflow"
        );
        self.lens[d] = len;
        self.depth += 1;
        d
    }

    /// Drops the top entry.
    fn pop(&mut self) {
        assert!(self.depth > 0, "pop from an empty block stack");
        self.depth -= 1;
    }

    /// The depth of the top entry.
    fn top(&self) -> usize {
        self.depth.checked_sub(1).expect("empty block stack")
    }

    /// `cur = act(cur + top)` in place, rounded as `Epilogue::after`.
    fn add_top(&mut self, act: Option<Activation>) {
        let d = self.top();
        assert_eq!(self.lens[d], self.len, "residual: shapes differ");
        let (top, cur) = self.entry_and_cur(d);
        conv::add_relu(cur, top, act == Some(Activation::Relu));
        if let Some(act) = act.filter(|&a| a != Activation::Relu) {
            activation::activation(act, cur);
        }
    }

    /// Runs `layer(self, epilogue)` for a layer of `c` output channels with `bn` folded into
    /// its epilogue (the compile-time `folded` coefficients when the network is embedded),
    /// then (with `residual`) the top of the stack added, and `act` last; a `bn` without
    /// running statistics runs after the layer as its own step.
    fn fused(
        &mut self,
        c: usize,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        residual: bool,
        layer: impl FnOnce(&[f32], &mut [f32], &mut [f32], Epilogue<'_>),
    ) -> Result<usize, SliceError> {
        let top = residual.then(|| self.top());
        let unfolded = bn.filter(|bn| bn.folded.is_none() && bn.running.is_none());
        let affine = folded(bn, c, self.affine);
        let start: usize = top.map_or(0, |d| self.sizes[..d].iter().sum());
        let residual_slice = top.map(|d| &self.stack[start..start + self.lens[d]]);
        let epilogue = match unfolded {
            Some(_) => Epilogue::default(),
            None => Epilogue {
                affine,
                act,
                residual: residual_slice,
            },
        };
        layer(&self.cur[..self.len], self.next, self.scratch, epilogue);
        Ok(match unfolded {
            None => 0,
            Some(_) => 1,
        })
    }

    /// The unfused tail of [`fused`](Self::fused): the batch norm with batch statistics, then
    /// the residual and the activation.
    fn unfused_tail(
        &mut self,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        residual: bool,
    ) -> Result<(), SliceError> {
        if let Some(bn) = bn {
            self.batchnorm(bn)?;
        }
        if residual {
            self.add_top(act);
        } else if let Some(act) = act {
            self.activation(act);
        }
        Ok(())
    }

    /// A convolution (`out_len` values out) with `bn` and `act` fused, and the residual when
    /// `residual`; becomes the current tensor.
    fn conv_step(
        &mut self,
        out_len: usize,
        c: usize,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        residual: bool,
        layer: impl FnOnce(&[f32], &mut [f32], &mut [f32], Epilogue<'_>),
    ) -> Result<(), SliceError> {
        let unfolded = self.fused(c, bn, act, residual, |x, next, s, e| {
            layer(x, &mut next[..out_len], s, e)
        })?;
        core::mem::swap(&mut self.cur, &mut self.next);
        self.len = out_len;
        if unfolded == 1 {
            self.unfused_tail(bn, act, residual)?;
        }
        Ok(())
    }

    /// Runs `f(self, x, y)` with `x` the current tensor and `y` channels `offset..offset +
    /// channels` of the accumulator on top of the stack, `[offset, channels, hw, total]`.
    fn fill_slot(
        &mut self,
        in_len: usize,
        [offset, channels, hw, total]: [usize; 4],
    ) -> (usize, usize) {
        let d = self.top();
        assert!(
            offset + channels <= total && self.lens[d] == total * hw && self.len == in_len,
            "concat: the branch does not fit the concatenation"
        );
        let start: usize = self.sizes[..d].iter().sum();
        (start + offset * hw, start + (offset + channels) * hw)
    }

    /// [`Run::conv2d_concat`] and [`Run::conv_transpose2d_concat`]: the layer writes into its
    /// channels of the accumulator.
    #[allow(clippy::too_many_arguments)] // the layer's shape and its place in the accumulator
    fn concat_conv(
        &mut self,
        in_len: usize,
        c: usize,
        hw: usize,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        [offset, total]: [usize; 2],
        layer: impl FnOnce(&[f32], &mut [f32], &mut [f32], Epilogue<'_>),
    ) -> Result<(), SliceError> {
        if bn.is_some_and(|bn| bn.running.is_none()) {
            self.conv_step(c * hw, c, bn, act, false, layer)?;
            self.concat_write(offset, c, hw, total);
            return Ok(());
        }
        let (a, b) = self.fill_slot(in_len, [offset, c, hw, total]);
        let affine = folded(bn, c, self.affine);
        let epilogue = Epilogue {
            affine,
            act,
            residual: None,
        };
        layer(
            &self.cur[..self.len],
            &mut self.stack[a..b],
            self.scratch,
            epilogue,
        );
        Ok(())
    }
}

/// The eval-mode `(scale, shift)` of `bn` over `c` channels: the compile-time coefficients of
/// an embedded network, else computed from the running statistics into `room` (`2·c` values);
/// `None` without a batch norm or without running statistics (batch statistics, a step of
/// its own).
fn folded<'a>(
    bn: Option<&'a BatchNorm2d>,
    c: usize,
    room: &'a mut [f32],
) -> Option<(&'a [f32], &'a [f32])> {
    let bn = bn?;
    if let Some(folded) = bn.folded {
        return Some(folded);
    }
    let (mean, var) = bn.running.as_ref()?;
    let (scale, shift) = room[..2 * c].split_at_mut(c);
    batchnorm::scale_shift(
        &bn.params,
        bn.weight.as_deref(),
        bn.bias.as_deref(),
        (mean, var),
        scale,
        shift,
    );
    Some((scale, shift))
}

impl Run for Bare<'_> {
    type Error = SliceError;

    fn conv2d(&mut self, layer: &Conv2d) {
        let p = &layer.params;
        self.step(p.out_len(), |x, y, s| {
            conv::forward(p, 1, x, &layer.filters, Epilogue::default(), 1, y, s);
        });
    }

    fn conv2d_fused(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        self.conv_step(p.out_len(), p.c_out, bn, act, false, |x, y, s, e| {
            conv::forward(p, 1, x, &conv.filters, e, 1, y, s);
        })
    }

    fn conv2d_pool(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        pool: &Pool2dParams,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        if !conv.fuses_pool(bn, act, pool) {
            self.conv2d_fused(conv, bn, act)?;
            self.pool2d(pool);
            return Ok(());
        }
        self.conv_step(pool.out_len(), p.c_out, bn, act, false, |x, y, s, e| {
            conv::forward_pooled(p, pool, 1, x, &conv.filters, e, 1, y, s);
        })
    }

    fn conv2d_residual(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        assert_eq!(
            self.lens[self.top()],
            p.out_len(),
            "residual: shapes differ"
        );
        self.conv_step(p.out_len(), p.c_out, bn, act, true, |x, y, s, e| {
            conv::forward(p, 1, x, &conv.filters, e, 1, y, s);
        })?;
        self.pop();
        Ok(())
    }

    fn conv_transpose2d(&mut self, layer: &ConvTranspose2d) {
        let p = &layer.params;
        let bias = layer.bias.as_deref();
        self.step(p.out_len(), |x, y, s| {
            conv_transpose::forward(p, 1, x, &layer.weight, bias, Epilogue::default(), 1, y, s);
        });
    }

    fn conv_transpose2d_fused(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        let bias = conv.bias.as_deref();
        self.conv_step(p.out_len(), p.c_out, bn, act, false, |x, y, s, e| {
            conv_transpose::forward(p, 1, x, &conv.weight, bias, e, 1, y, s);
        })
    }

    fn conv_transpose2d_residual(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        let bias = conv.bias.as_deref();
        assert_eq!(
            self.lens[self.top()],
            p.out_len(),
            "residual: shapes differ"
        );
        self.conv_step(p.out_len(), p.c_out, bn, act, true, |x, y, s, e| {
            conv_transpose::forward(p, 1, x, &conv.weight, bias, e, 1, y, s);
        })?;
        self.pop();
        Ok(())
    }

    fn block_enter(&mut self) {
        let len = self.len;
        let d = self.push_len(len);
        let (entry, cur) = self.entry_and_cur(d);
        entry.copy_from_slice(cur);
    }

    fn swap_top(&mut self) {
        let d = self.top();
        let (top_len, cur_len) = (self.lens[d], self.len);
        assert!(cur_len <= self.sizes[d], "block stack overflow");
        // top → next, cur → top, then next becomes cur.
        let start: usize = self.sizes[..d].iter().sum();
        self.next[..top_len].copy_from_slice(&self.stack[start..start + top_len]);
        self.stack[start..start + cur_len].copy_from_slice(&self.cur[..cur_len]);
        core::mem::swap(&mut self.cur, &mut self.next);
        self.len = top_len;
        self.lens[d] = cur_len;
    }

    fn residual_add(&mut self, act: Option<Activation>) {
        self.add_top(act);
        self.pop();
    }

    fn concat_enter(&mut self, out_len: usize) {
        self.block_enter();
        self.push_len(out_len);
    }

    fn concat_write(&mut self, offset: usize, channels: usize, hw: usize, total: usize) {
        let (a, b) = self.fill_slot(self.len, [offset, channels, hw, total]);
        self.stack[a..b].copy_from_slice(&self.cur[..self.len]);
    }

    fn conv2d_concat(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        offset: usize,
        total: usize,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        let hw = p.out_hw[0] * p.out_hw[1];
        self.concat_conv(
            p.in_len(),
            p.c_out,
            hw,
            bn,
            act,
            [offset, total],
            |x, y, s, e| conv::forward(p, 1, x, &conv.filters, e, 1, y, s),
        )
    }

    fn conv_transpose2d_concat(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        offset: usize,
        total: usize,
    ) -> Result<(), SliceError> {
        let p = &conv.params;
        let hw = p.out_hw[0] * p.out_hw[1];
        let bias = conv.bias.as_deref();
        self.concat_conv(
            p.in_len(),
            p.c_out,
            hw,
            bn,
            act,
            [offset, total],
            |x, y, s, e| conv_transpose::forward(p, 1, x, &conv.weight, bias, e, 1, y, s),
        )
    }

    fn upsample2d_concat(&mut self, params: &Upsample2dParams, offset: usize, total: usize) {
        let hw = params.out_hw[0] * params.out_hw[1];
        let (a, b) = self.fill_slot(params.in_len(), [offset, params.channels, hw, total]);
        upsample::upsample2d(params, 1, &self.cur[..self.len], &mut self.stack[a..b]);
    }

    fn concat_restore(&mut self) {
        let d = self.top().checked_sub(1).expect("concat: no input saved");
        let len = self.lens[d];
        let start: usize = self.sizes[..d].iter().sum();
        self.cur[..len].copy_from_slice(&self.stack[start..start + len]);
        self.len = len;
    }

    fn concat_write_input(&mut self, offset: usize, channels: usize, hw: usize, total: usize) {
        let d = self.top();
        assert!(d >= 1, "concat_write_input: no concatenation open");
        let below: usize = self.sizes[..d - 1].iter().sum();
        let x_len = self.lens[d - 1];
        assert!(
            offset + channels <= total && self.lens[d] == total * hw && x_len == channels * hw,
            "concat: the branch does not fit the concatenation"
        );
        let start = below + self.sizes[d - 1];
        self.stack
            .copy_within(below..below + x_len, start + offset * hw);
    }

    fn concat_exit(&mut self) {
        let d = self.top();
        assert!(d >= 1, "concat_exit: no concatenation open");
        let len = self.lens[d];
        let start: usize = self.sizes[..d].iter().sum();
        self.cur[..len].copy_from_slice(&self.stack[start..start + len]);
        self.len = len;
        self.pop();
        self.pop();
    }

    fn upsample2d(&mut self, params: &Upsample2dParams) {
        self.step(params.out_len(), |x, y, _| {
            upsample::upsample2d(params, 1, x, y)
        });
    }

    fn batchnorm(&mut self, layer: &BatchNorm2d) -> Result<(), SliceError> {
        if layer.normalise(1, &mut self.cur[..self.len]) {
            Ok(())
        } else {
            Err(SliceError::BatchStatistics {
                layer: layer.key(),
                channels: layer.params.channels,
            })
        }
    }

    fn activation(&mut self, act: Activation) {
        activation::activation(act, &mut self.cur[..self.len]);
    }

    fn softmax(&mut self, channels: usize, spatial: usize) {
        activation::softmax(1, channels, spatial, &mut self.cur[..self.len]);
    }

    fn pool2d(&mut self, params: &Pool2dParams) {
        let len = params.scratch_len();
        self.step(params.out_len(), |x, y, s| {
            pool::pool2d_in(params, 1, x, y, &mut s[..len])
        });
    }

    fn linear(&mut self, layer: &Linear) {
        self.step(layer.params.out_features, |x, y, _| layer.forward(1, x, y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_of_is_the_largest_value() {
        assert_eq!(max_of(&[]), 0);
        assert_eq!(max_of(&[3]), 3);
        assert_eq!(max_of(&[2, 9, 4]), 9);
        assert_eq!(max_of(&[9, 2, 4]), 9);
        assert_eq!(max_of(&[2, 4, 9]), 9);
    }

    #[test]
    fn lengths_are_checked_before_anything_runs() {
        let layout = WorkspaceLayout {
            activations: 8,
            scratch: 3,
            channels: 2,
            stack: &[5, 7],
        };
        assert_eq!(layout.sample_len(), 2 * 8 + 3 + 2 * 2 + 12);
        let mut ws = vec![0.0; layout.sample_len()];
        let mut out = [0.0; 4];
        let none = |_: &mut Bare<'_>| -> Result<(), SliceError> { panic!("ran") };
        let run = |x: &[f32], out: &mut [f32], ws: &mut [f32]| {
            Bare::forward_in(&layout, x, out, ws, [6, 4], none)
        };
        assert_eq!(
            run(&[0.0; 5], &mut out, &mut ws),
            Err(SliceError::Input {
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            run(&[0.0; 6], &mut out[..3], &mut ws),
            Err(SliceError::Output {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(
            run(&[0.0; 6], &mut out, &mut ws[..34]),
            Err(SliceError::Workspace {
                expected: 35,
                found: 34
            })
        );
        // A run that leaves a tensor of the wrong length is reported, not copied out.
        let mut ws = vec![0.0; 35];
        let wrong = Bare::forward_in(&layout, &[1.0; 6], &mut out, &mut ws, [6, 4], |_| Ok(()));
        assert_eq!(
            wrong,
            Err(SliceError::Output {
                expected: 4,
                found: 6
            })
        );
        // The deepest block stack Bare keeps is allowed, one deeper is refused.
        static DEEP: [usize; MAX_STACK + 1] = [1; MAX_STACK + 1];
        let at = |depth: usize| WorkspaceLayout {
            activations: 8,
            scratch: 0,
            channels: 0,
            stack: &DEEP[..depth],
        };
        let mut big = vec![0.0; 16 + MAX_STACK + 1];
        let mut out6 = [0.0; 6];
        let ok = Bare::forward_in(
            &at(MAX_STACK),
            &[1.0; 6],
            &mut out6,
            &mut big,
            [6, 6],
            |_| Ok(()),
        );
        assert_eq!(ok, Ok(()));
        let refused = Bare::forward_in(
            &at(MAX_STACK + 1),
            &[1.0; 6],
            &mut out6,
            &mut big,
            [6, 6],
            |_| Ok(()),
        );
        assert!(
            matches!(refused, Err(SliceError::Workspace { .. })),
            "{refused:?}"
        );
        // Activation buffers that cannot hold the input (or the output) are refused; exactly
        // large enough is fine.
        let small = WorkspaceLayout {
            activations: 5,
            scratch: 0,
            channels: 0,
            stack: &[],
        };
        let mut ws12 = [0.0; 12];
        let r = Bare::forward_in(&small, &[1.0; 6], &mut out6, &mut ws12, [6, 6], |_| Ok(()));
        assert!(matches!(r, Err(SliceError::Workspace { .. })), "{r:?}");
        let exact = WorkspaceLayout {
            activations: 6,
            ..small
        };
        let r = Bare::forward_in(&exact, &[1.0; 6], &mut out6, &mut ws12, [6, 6], |_| Ok(()));
        assert_eq!(r, Ok(()));
        // The identity (input and output of one length) copies the input out.
        let mut out6 = [0.0; 6];
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        Bare::forward_in(&layout, &x, &mut out6, &mut ws, [6, 6], |_| Ok(())).unwrap();
        assert_eq!(out6, x);
    }
}
