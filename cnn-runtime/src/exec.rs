//! The batch executor that generated `forward` code drives layer by layer.

use ndarray::{s, Array2, Array4, ArrayView4, ArrayViewMut, Axis, Dimension, Slice};

use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear};
use crate::ops::activation::{self, Activation};
use crate::ops::batchnorm;
use crate::ops::conv::{self, Epilogue};
use crate::ops::conv_transpose;
use crate::ops::pool::{self, Pool2dParams};
use crate::ops::upsample::{self, Upsample2dParams};
use crate::tuning::{CHUNK, POOL_MIN_MACS, POOL_MIN_SPLIT};
use crate::Error;

/// A batch in flight: the current activations `[n, …]` and the buffers the next layer writes.
///
/// Generated code creates one per call, then calls one method per layer in order; each method
/// trusts that the current tensor has the shape the macro computed for that point.
#[derive(Debug)]
pub struct Exec {
    n: usize,
    len: usize,
    cur: Vec<f32>,
    next: Vec<f32>,
    scratch: Vec<f32>,
    /// Folded batch-norm `scale ++ shift` of a fused convolution.
    affine: Vec<f32>,
    /// Threads a single layer may use (when there are fewer chunks than threads).
    threads: usize,
}

impl Exec {
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

    /// Replaces the current batch with a copy of `x` (any strides), keeping the buffers.
    fn load(&mut self, x: ArrayView4<'_, f32>) {
        self.n = x.shape()[0];
        self.len = x.len();
        // Never shorten the buffer: a later layer would pay to zero it again on growth.
        if self.cur.len() < self.len {
            self.cur.resize(self.len, 0.0);
        }
        let cur = &mut self.cur[..self.len];
        match x.as_slice() {
            Some(s) => cur.copy_from_slice(s),
            None => cur.iter_mut().zip(x.iter()).for_each(|(d, &v)| *d = v),
        }
    }

    /// A batch of one sample, `[C·H·W]` row-major.
    pub fn from_sample(x: &[f32]) -> Self {
        Self::with_data(1, x.to_vec())
    }

    fn with_data(n: usize, cur: Vec<f32>) -> Self {
        Exec {
            n,
            len: cur.len(),
            cur,
            next: Vec::new(),
            scratch: Vec::new(),
            affine: Vec::new(),
            threads: 1,
        }
    }

    /// The current activations, `[n, …]` row-major.
    fn output(&self) -> &[f32] {
        &self.cur[..self.len]
    }

    /// Runs `f(input, output)` with a fresh output of `out_len` elements per sample.
    fn step(&mut self, out_len: usize, f: impl FnOnce(&[f32], &mut [f32], &mut Vec<f32>)) {
        let len = self.n * out_len;
        if self.next.len() < len {
            self.next.resize(len, 0.0);
        }
        f(
            &self.cur[..self.len],
            &mut self.next[..len],
            &mut self.scratch,
        );
        std::mem::swap(&mut self.cur, &mut self.next);
        self.len = len;
    }

    /// `nn.Conv2d`.
    pub fn conv2d(&mut self, layer: &Conv2d) {
        self.conv(layer, Epilogue::default());
    }

    /// `nn.Conv2d`, then (optionally) `nn.BatchNorm2d` with running statistics and an
    /// activation, applied while each output is in cache; the same numbers as running them one
    /// after the other.
    pub fn conv2d_fused(
        &mut self,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.fused(conv.params.c_out, bn, act, |exec, epilogue| {
            exec.conv(conv, epilogue);
        })
    }

    /// `nn.ConvTranspose2d`.
    pub fn conv_transpose2d(&mut self, layer: &ConvTranspose2d) {
        self.conv_transpose(layer, Epilogue::default());
    }

    /// `nn.ConvTranspose2d`, then (optionally) `nn.BatchNorm2d` with running statistics and
    /// an activation, fused as in [`conv2d_fused`](Self::conv2d_fused).
    pub fn conv_transpose2d_fused(
        &mut self,
        conv: &ConvTranspose2d,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
    ) -> Result<(), Error> {
        self.fused(conv.params.c_out, bn, act, |exec, epilogue| {
            exec.conv_transpose(conv, epilogue);
        })
    }

    /// Runs `layer(self, epilogue)` for a layer of `c` output channels with `bn` folded into
    /// its epilogue and `act` after it; a `bn` without running statistics (which needs the
    /// whole batch) and the activation then run as separate steps.
    fn fused(
        &mut self,
        c: usize,
        bn: Option<&BatchNorm2d>,
        act: Option<Activation>,
        layer: impl FnOnce(&mut Self, Epilogue<'_>),
    ) -> Result<(), Error> {
        let mut affine = std::mem::take(&mut self.affine);
        let folded = match bn {
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
            if let Some(act) = act {
                self.activation(act);
            }
            return Ok(());
        }
        let epilogue = Epilogue {
            affine: bn.map(|_| {
                let (scale, shift) = affine.split_at(c);
                (scale, shift)
            }),
            act,
            residual: None,
        };
        layer(self, epilogue);
        self.affine = affine;
        Ok(())
    }

    /// One transposed convolution with `epilogue`.
    fn conv_transpose(&mut self, conv: &ConvTranspose2d, epilogue: Epilogue<'_>) {
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

    /// `nn.Upsample` (nearest or bilinear, integer factors).
    pub fn upsample2d(&mut self, params: &Upsample2dParams) {
        let n = self.n;
        self.step(params.out_len(), |x, y, _| {
            upsample::upsample2d(params, n, x, y)
        });
    }

    /// One convolution with `epilogue`.
    fn conv(&mut self, conv: &Conv2d, epilogue: Epilogue<'_>) {
        let (n, threads, p) = (self.n, self.threads, &conv.params);
        self.step(p.out_len(), |x, y, s| {
            conv::forward(p, n, x, &conv.filters, epilogue, threads, y, s);
        });
    }

    /// `nn.BatchNorm2d`, in place.
    ///
    /// # Errors
    /// [`Error::BatchStatistics`], see [`BatchNorm2d::forward`].
    pub fn batchnorm(&mut self, layer: &BatchNorm2d) -> Result<(), Error> {
        layer.forward(self.n, &mut self.cur[..self.len])
    }

    /// An element-wise activation, in place.
    pub fn activation(&mut self, act: Activation) {
        activation::activation(act, &mut self.cur[..self.len]);
    }

    /// `nn.Softmax(dim=1)` over `channels`, each with `spatial` positions (1 when flat).
    pub fn softmax(&mut self, channels: usize, spatial: usize) {
        activation::softmax(self.n, channels, spatial, &mut self.cur[..self.len]);
    }

    /// Max, average or global pooling.
    pub fn pool2d(&mut self, params: &Pool2dParams) {
        let (n, threads) = (self.n, self.threads);
        let in_plane = params.in_hw[0] * params.in_hw[1];
        let out_plane = params.out_hw[0] * params.out_hw[1];
        let planes = n * params.channels;
        self.step(params.out_len(), |x, y, _| {
            if threads < 2 || planes < 2 || planes * in_plane < POOL_MIN_SPLIT {
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
    pub fn linear(&mut self, layer: &Linear) {
        let n = self.n;
        self.step(layer.params.out_features, |x, y, _| layer.forward(n, x, y));
    }

    /// One sample's flat result by value.
    ///
    /// # Panics
    /// If the current tensor does not hold `K` values (a bug in generated code).
    pub fn to_array<const K: usize>(&self) -> [f32; K] {
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
        &self,
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

impl Default for Exec {
    /// An executor with no data yet; [`Exec::load`] fills it.
    fn default() -> Self {
        Self::with_data(0, Vec::new())
    }
}

/// Element counts of the buffers [`run_into`] uses for one chunk: a model's
/// `Model::WORKSPACE`, computed by the macro from the planned shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceLayout {
    /// The largest activation of one sample (the input or any layer's output).
    pub activations: usize,
    /// The largest im2col scratch of one sample.
    pub scratch: usize,
    /// The most output channels of a convolution (its fused batch-norm scale and shift).
    pub channels: usize,
}

impl WorkspaceLayout {
    /// Bytes of a [`Workspace`] with this layout: two activation buffers of `CHUNK` (8) samples
    /// (ping-pong), one scratch buffer and the fused batch-norm coefficients.
    pub const fn bytes(&self) -> usize {
        4 * (2 * CHUNK * self.activations + self.scratch + 2 * self.channels)
    }
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

/// Preallocated buffers for `Model::forward_into`: after the first call with a given model,
/// inference allocates nothing.
#[derive(Debug, Default)]
pub struct Workspace {
    exec: Exec,
}

impl Workspace {
    /// Buffers sized for `layout` (a model's `WORKSPACE`).
    pub fn new(layout: WorkspaceLayout) -> Self {
        let act = CHUNK * layout.activations;
        Workspace {
            exec: Exec {
                n: 0,
                len: 0,
                cur: Vec::with_capacity(act),
                next: Vec::with_capacity(act),
                scratch: Vec::with_capacity(layout.scratch),
                affine: Vec::with_capacity(2 * layout.channels),
                threads: 1,
            },
        }
    }

    /// Bytes currently reserved.
    pub fn capacity_bytes(&self) -> usize {
        let e = &self.exec;
        4 * (e.cur.capacity() + e.next.capacity() + e.scratch.capacity() + e.affine.capacity())
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
    run: &(dyn Fn(&mut Exec) -> Result<(), Error> + Sync),
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
    let chunk = if whole_batch { n.max(1) } else { CHUNK };
    let exec = &mut workspace.exec;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        exec.load(x.slice(s![start..end, .., .., ..]));
        run(exec)?;
        let mut rows = out.slice_axis_mut(Axis(0), Slice::from(start..end));
        rows.iter_mut()
            .zip(exec.output())
            .for_each(|(o, &v)| *o = v);
        start = end;
    }
    Ok(())
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
    static CACHED: std::cell::Cell<Option<Exec>> = const { std::cell::Cell::new(None) };
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

/// Runs `run` over a batch in chunks of `CHUNK` (8) samples, split over [`crate::num_threads`]
/// threads of a persistent worker pool, writing each chunk's result into one output buffer.
/// Peak memory beyond the input and output is one executor per thread, independent of N.
///
/// With fewer chunks than threads, the spare threads split single layers instead; a batch
/// whose work is below `POOL_MIN_MACS` (`macs` per sample) runs on the calling thread, where
/// waking a worker would cost more than it saves. With `whole_batch` (a network with batch
/// statistics, whose result depends on every sample) the batch runs as one piece.
///
/// # Errors
/// [`Error::InputShape`] when C, H, W differ from `chw`, or the first error `run` returns.
pub fn run_batch(
    x: ArrayView4<'_, f32>,
    chw: [usize; 3],
    sample_len: usize,
    whole_batch: bool,
    macs: usize,
    run: &(dyn Fn(&mut Exec) -> Result<(), Error> + Sync),
) -> Result<BatchOutput, Error> {
    let n = batch_size(x, chw)?;
    let mut data = vec![0.0f32; n * sample_len];
    if n == 0 {
        return Ok(BatchOutput { n, data });
    }
    let chunk = if whole_batch { n } else { CHUNK };
    let chunks = n.div_ceil(chunk);
    let available = crate::threads::num_threads().max(1);
    let threads = available.min(chunks);
    // Fewer chunks than threads (a small batch): the spare threads split single layers.
    let inner = available / threads;
    // The samples from `first` on, whole chunks, into `out`.
    let work = |first: usize, out: &mut [f32], inner: usize| -> Result<(), Error> {
        let mut exec = CACHED.with(|c| c.take()).unwrap_or_default();
        exec.threads = inner;
        let mut result = Ok(());
        for (i, out) in out.chunks_mut(chunk * sample_len).enumerate() {
            let start = first + i * chunk;
            let end = (start + chunk).min(n);
            exec.load(x.slice(s![start..end, .., .., ..]));
            result = run(&mut exec);
            if result.is_err() {
                break;
            }
            out.copy_from_slice(exec.output());
        }
        CACHED.with(|c| c.set(Some(exec)));
        result
    };
    let small = n.saturating_mul(macs) < POOL_MIN_MACS;
    if available == 1 || (threads == 1 && small) {
        // On the calling thread: handing a small network to a worker (waking it, then waking
        // the caller) costs more than splitting its layers saves.
        work(0, &mut data, 1)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Rng;
    use crate::ops::linear::LinearParams;
    use crate::test_util::rand_vec;

    #[test]
    fn chunks_and_threads_do_not_change_the_result() {
        let layer = Linear::seeded(
            0,
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
        for n in [0, 1, 7, 8, 9, 17, 33, 64] {
            let x = Array4::from_shape_vec((n, 3, 2, 2), rand_vec(n * 12, n as u64)).unwrap();
            let whole = run_batch(x.view(), [3, 2, 2], 5, true, usize::MAX, &run)
                .unwrap()
                .data;
            for threads in [1, 2, 3, 5] {
                crate::set_num_threads(threads);
                let split = run_batch(x.view(), [3, 2, 2], 5, false, usize::MAX, &run)
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
            0,
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
                1,
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
                r[..6].to_vec(),
                r[6..12].iter().map(|v| v.abs() + 0.5).collect(),
            ));
            if affine {
                bn.weight = Some(r[12..18].to_vec());
                bn.bias = Some(r[18..].to_vec());
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
                        |e: &Exec| e.output().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fused), bits(&separate), "affine {affine}, {act:?}");
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
    fn errors_from_any_chunk_are_returned() {
        let x = Array4::<f32>::zeros((20, 1, 1, 1));
        crate::set_num_threads(2);
        let run = |e: &mut Exec| {
            if e.output().len() < CHUNK {
                Err(Error::InputShape {
                    expected: vec![],
                    found: vec![],
                })
            } else {
                Ok(())
            }
        };
        assert!(run_batch(x.view(), [1, 1, 1], 1, false, usize::MAX, &run).is_err());
        assert!(matches!(
            run_batch(x.view(), [2, 1, 1], 1, false, usize::MAX, &run),
            Err(Error::InputShape { .. })
        ));
        crate::set_num_threads(0);
    }
}
