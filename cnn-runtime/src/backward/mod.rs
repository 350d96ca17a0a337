//! Backward kernels for training: the gradients of a layer's loss with respect to its input,
//! weight and bias, given the gradient `dy` with respect to its output (PyTorch's autograd and
//! `torch.nn.grad`).
//!
//! ```text
//! conv2d_backward            conv.rs            dW = Σ dY·im2col(x)ᵀ, dX = col2im(Wᵀ·dY)
//! conv_transpose2d_backward  conv_transpose.rs  dX = conv2d(dY, W), dW as conv2d_backward's
//! linear_backward            linear.rs          dX = dY·W, dW = dYᵀ·X
//! ```
//!
//! Conventions shared by every kernel:
//!
//! + Tensors are NCHW (or `[n, features]`) row-major f32, weights in PyTorch's layouts.
//! + Every gradient is **overwritten**, not accumulated into: the sums over the batch (and the
//!   output pixels) happen inside. A caller that accumulates over micro-batches adds the result
//!   itself.
//! + A gradient passed as `None` is not computed (`dx` of a network's first layer, `db` of a
//!   layer without bias).
//! + All sums are in f32, in an order fixed by the shapes and the SIMD level only (`CNN_SIMD`),
//!   so a run is deterministic; the kernels run on the calling thread.
//! + The only allocation is growing `scratch` (never shrunk) to the kernel's `*_scratch_len`.

mod conv;
mod conv_transpose;
mod linear;

pub use conv::{conv2d_backward, conv2d_backward_scratch_len};
pub use conv_transpose::{conv_transpose2d_backward, conv_transpose2d_backward_scratch_len};
pub use linear::{linear_backward, linear_backward_scratch_len};

use crate::simd::multiversion;

multiversion! {
/// `db[c] = Σ_s Σ_i dy[s, c, i]` for `dy: [n, channels, plane]`: the gradient of a bias added
/// to every pixel of a channel. Each plane is summed in eight interleaved lanes (combined in a
/// fixed order), then the planes are added sample by sample.
fn channel_sums(n: usize, channels: usize, plane: usize, dy: &[f32], db: &mut [f32]) {
    let db = &mut db[..channels];
    db.fill(0.0);
    if plane == 0 {
        return;
    }
    // LOOP over samples
    for dy_s in dy.chunks_exact(channels * plane).take(n) {
        // LOOP over channels
        for (b, row) in db.iter_mut().zip(dy_s.chunks_exact(plane)) {
            let mut lanes = [0.0f32; 8];
            let mut chunks = row.chunks_exact(8);
            for c in &mut chunks {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l += v;
                }
            }
            for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
                *l += v;
            }
            let [a0, a1, a2, a3, a4, a5, a6, a7] = lanes;
            *b += ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7));
        }
    }
}
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A finite-difference probe: the loss as a function of one tensor, that tensor, the
    /// kernel's gradient for it and its name.
    pub(crate) type Probe<'a> = (&'a dyn Fn(&[f64]) -> f64, &'a [f64], &'a [f32], &'a str);

    /// `v` in f64.
    pub(crate) fn to_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&v| v as f64).collect()
    }

    /// Indices of a tensor of `len` elements to probe by finite differences: the first, the
    /// last and `count` more from a deterministic generator (empty when `len` is 0).
    pub(crate) fn probes(len: usize, count: usize, seed: u64) -> Vec<usize> {
        if len == 0 {
            return Vec::new();
        }
        let mut rng = crate::init::Rng::new(seed);
        let mut at = vec![0, len - 1];
        at.extend((0..count).map(|_| (rng.uniform(0.0, 1.0) * len as f32) as usize % len));
        at
    }

    /// `(L(v + h·e_i) − L(v − h·e_i)) / 2h` in f64, with `h = 1/16`. The losses of the tests
    /// are affine in each tensor, so this is exact up to rounding.
    pub(crate) fn central_difference(loss: &dyn Fn(&[f64]) -> f64, v: &[f64], i: usize) -> f64 {
        let h = 0.0625;
        let mut w = v.to_vec();
        w[i] = v[i] + h;
        let up = loss(&w);
        w[i] = v[i] - h;
        let down = loss(&w);
        (up - down) / (2.0 * h)
    }

    /// Checks the kernel's gradient `got` and the naive f64 one `want` (with its magnitudes
    /// `mag`) against central differences of `loss` at the probed indices of `v`: the naive
    /// gradient to `1e-9·(1 + mag)`, the kernel's to `tol·(1 + mag)`.
    #[allow(clippy::too_many_arguments)] // the tensor, both gradients and the tolerance
    #[track_caller]
    pub(crate) fn check_finite_differences(
        loss: &dyn Fn(&[f64]) -> f64,
        v: &[f64],
        got: &[f32],
        want: &[f64],
        mag: &[f64],
        seed: u64,
        tol: f64,
        what: &str,
    ) {
        for i in probes(v.len(), 4, seed) {
            let fd = central_difference(loss, v, i);
            assert!(
                (fd - want[i]).abs() <= 1e-9 * (1.0 + mag[i]),
                "naive gradient {} vs finite difference {fd} at {i}: {what}",
                want[i]
            );
            assert!(
                (fd - got[i] as f64).abs() <= tol * (1.0 + mag[i]),
                "gradient {} vs finite difference {fd} at {i} (magnitude {}): {what}",
                got[i],
                mag[i]
            );
        }
    }

    #[test]
    fn channel_sums_add_every_pixel_of_every_sample() {
        // n = 2, 3 channels, planes of 11 (one full chunk of 8 and a remainder of 3).
        let dy: Vec<f32> = (0..66).map(|i| i as f32).collect();
        let mut db = [f32::NAN; 4];
        channel_sums(2, 3, 11, &dy, &mut db);
        let want = |c: usize| -> f32 {
            (0..2)
                .flat_map(|s| (0..11).map(move |i| ((s * 3 + c) * 11 + i) as f32))
                .sum()
        };
        assert_eq!(db[..3], [want(0), want(1), want(2)]);
        assert!(db[3].is_nan(), "past `channels` is left alone");
        channel_sums(0, 3, 11, &dy, &mut db);
        assert_eq!(db[..3], [0.0; 3]);
    }
}
