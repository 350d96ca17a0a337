//! The first backward kernels for training: activations, softmax, pooling, batch normalisation
//! in training mode, dropout, upsampling, and the losses with their gradient.
//!
//! Every kernel follows PyTorch 2.x's CPU semantics (which element a max pool routes its
//! gradient to, the divisor of a clipped average window, the unbiased variance of the running
//! statistics, the denominator of a weighted mean), on NCHW row-major f32 tensors of a batch
//! of `n` samples. Gradients are *written* (not accumulated into) the `d…` output slices.
//! Sums run in a fixed order (f64 accumulators where the module says so), so results are
//! deterministic and do not depend on the thread count.

mod activation;
mod batchnorm;
mod dropout;
#[cfg(test)]
mod fixtures;
mod loss;
mod pool;
mod upsample;

pub use activation::{activation_backward, saved_for_backward, softmax_backward, Saved};
pub use batchnorm::{batchnorm_backward, batchnorm_train_forward};
pub use dropout::{dropout_backward, dropout_train_forward};
pub use loss::{cross_entropy, mse, nll_of_probs};
pub use pool::pool2d_backward;
pub use upsample::upsample2d_backward;

#[cfg(test)]
pub(crate) mod check {
    //! Shared helpers of the backward tests: central finite differences in f64, tolerances,
    //! and the PyTorch fixtures.

    /// The gradient of `f` at `x` by central differences with step `h` (f64 throughout).
    pub(crate) fn fd_grad(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
        let mut xs = x.to_vec();
        (0..x.len())
            .map(|i| {
                let v = xs[i];
                xs[i] = v + h;
                let up = f(&xs);
                xs[i] = v - h;
                let down = f(&xs);
                xs[i] = v;
                (up - down) / (2.0 * h)
            })
            .collect()
    }

    /// `Σ dy·y` in f64: the scalar whose gradient w.r.t. the forward's input is the backward.
    pub(crate) fn dot(dy: &[f32], y: &[f64]) -> f64 {
        assert_eq!(dy.len(), y.len());
        dy.iter().zip(y).map(|(&a, &b)| a as f64 * b).sum()
    }

    /// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise, naming the first bad index.
    #[track_caller]
    pub(crate) fn assert_grad(got: &[f32], want: &[f64], rtol: f64, atol: f64) {
        assert_eq!(got.len(), want.len(), "length mismatch");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(
                err <= atol + rtol * w.abs(),
                "mismatch at index {i}: got {g}, expected {w} (err {err:e}, rtol {rtol:e}, atol {atol:e})"
            );
        }
    }

    /// The largest magnitude of `v` (at least `1e-30`, to scale an absolute tolerance).
    pub(crate) fn max_abs(v: &[f64]) -> f64 {
        v.iter().fold(1e-30, |m, &x| m.max(x.abs()))
    }

    /// `values` widened to f64.
    pub(crate) fn wide(values: &[f32]) -> Vec<f64> {
        values.iter().map(|&v| v as f64).collect()
    }

    /// The bytes of `tests/data/NAME`.
    pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// Tensor `key` of a safetensors file, as f32 (F32) or as its I64 values converted.
    pub(crate) fn tensor(bytes: &[u8], key: &str) -> Vec<f64> {
        let st = safetensors::SafeTensors::deserialize(bytes).expect("safetensors");
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        match t.dtype() {
            safetensors::Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
            safetensors::Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("{key}: unexpected dtype {d:?}"),
        }
    }

    /// `tensor` narrowed to f32 (exact for F32 tensors).
    pub(crate) fn tensor_f32(bytes: &[u8], key: &str) -> Vec<f32> {
        tensor(bytes, key).iter().map(|&v| v as f32).collect()
    }

    /// A naive f64 2-d convolution (groups 1, dilation 1): `[n, ci, h, w]` → `[n, co, oh, ow]`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv2d_f64(
        x: &[f64],
        [n, ci, h, w]: [usize; 4],
        weight: &[f64],
        bias: &[f64],
        co: usize,
        k: usize,
        pad: usize,
    ) -> (Vec<f64>, [usize; 2]) {
        let (oh, ow) = (h + 2 * pad + 1 - k, w + 2 * pad + 1 - k);
        let mut out = vec![0.0; n * co * oh * ow];
        for s in 0..n {
            for o in 0..co {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = bias[o];
                        for i in 0..ci {
                            for ky in 0..k {
                                let iy = (y + ky) as isize - pad as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..k {
                                    let ix = (xx + kx) as isize - pad as isize;
                                    if ix < 0 || ix >= w as isize {
                                        continue;
                                    }
                                    acc += weight[((o * ci + i) * k + ky) * k + kx]
                                        * x[((s * ci + i) * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                        out[((s * co + o) * oh + y) * ow + xx] = acc;
                    }
                }
            }
        }
        (out, [oh, ow])
    }
}
