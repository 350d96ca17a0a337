//! The batch executor that generated `forward` code drives layer by layer.

use ndarray::{Array2, Array4, ArrayView4};

use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::ops::activation::{self, Activation};
use crate::ops::pool::{self, Pool2dParams};
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
}

impl Exec {
    /// Copies a batch `[N, C, H, W]` in, whatever its strides.
    ///
    /// # Errors
    /// [`Error::InputShape`] when C, H, W differ from `chw`.
    pub fn from_view(x: ArrayView4<'_, f32>, chw: [usize; 3]) -> Result<Self, Error> {
        let &[n, c, h, w] = x.shape() else {
            unreachable!("ArrayView4 has four axes")
        };
        if [c, h, w] != chw {
            return Err(Error::InputShape {
                expected: vec![n, chw[0], chw[1], chw[2]],
                found: vec![n, c, h, w],
            });
        }
        let cur = match x.as_slice() {
            Some(s) => s.to_vec(),
            None => x.iter().copied().collect(),
        };
        Ok(Self::with_data(n, cur))
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
        }
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.n
    }

    /// The current activations, `[n, …]` row-major.
    pub fn output(&self) -> &[f32] {
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
        let n = self.n;
        self.step(layer.params.out_len(), |x, y, s| layer.forward(n, x, y, s));
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
        let n = self.n;
        self.step(params.out_len(), |x, y, _| pool::pool2d(params, n, x, y));
    }

    /// `nn.Linear`.
    pub fn linear(&mut self, layer: &Linear) {
        let n = self.n;
        self.step(layer.params.out_features, |x, y, _| layer.forward(n, x, y));
    }

    /// The result as `[n, features]`.
    ///
    /// # Panics
    /// If the current tensor does not hold `n · features` values (a bug in generated code).
    pub fn into_array2(mut self, features: usize) -> Array2<f32> {
        self.cur.truncate(self.len);
        Array2::from_shape_vec((self.n, features), self.cur)
            .expect("the macro computed the output shape")
    }

    /// The result as `[n, C, H, W]`.
    ///
    /// # Panics
    /// If the current tensor does not hold `n·C·H·W` values (a bug in generated code).
    pub fn into_array4(mut self, [c, h, w]: [usize; 3]) -> Array4<f32> {
        self.cur.truncate(self.len);
        Array4::from_shape_vec((self.n, c, h, w), self.cur)
            .expect("the macro computed the output shape")
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
