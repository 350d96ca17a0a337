//! Fully connected layer as one dot product per output.

use crate::simd::multiversion;

/// Shape of a `Linear` layer, emitted by the `cnn!` macro as a `const`.
///
/// PyTorch: `nn.Linear(in_features, out_features, bias=True)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearParams {
    /// Inputs per sample.
    pub in_features: usize,
    /// Outputs per sample.
    pub out_features: usize,
}

multiversion! {
/// `out[n, o] = bias[o] + Σ_i input[n, i] · weight[o, i]`.
///
/// + `input`: `[n, in_features]` row-major
/// + `weight`: `[out_features, in_features]` row-major (PyTorch's layout)
/// + `bias`: `[out_features]`, or `None`
/// + `out`: `[n, out_features]`, overwritten
///
/// # Panics
/// If a slice is shorter than the layout above.
pub fn linear(
    p: &LinearParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, m) = (p.in_features, p.out_features);
    assert!(input.len() >= n * k, "linear input too short");
    assert!(weight.len() >= m * k, "linear weight too short");
    assert!(out.len() >= n * m, "linear output too short");
    if let Some(b) = bias {
        assert!(b.len() >= m, "linear bias too short");
    }
    if m == 0 {
        return;
    }
    // Per sample, so a sample's result never depends on the batch it came in. The weights of
    // the fully connected layers these networks end in are small enough to stay in cache
    // between samples.
    // LOOP over samples
    for (x, y) in input
        .chunks_exact(k.max(1))
        .zip(out[..n * m].chunks_exact_mut(m))
    {
        let x = &x[..k];
        // LOOP over outputs
        for (o, v) in y.iter_mut().enumerate() {
            *v = bias.map_or(0.0, |b| b[o]) + dot(x, &weight[o * k..(o + 1) * k]);
        }
    }
}
}

/// `Σ a[i]·b[i]` with 16 running sums in a fixed order (vectorisable, and the same result
/// whatever the caller's batch).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[l] += x * y;
    }
    // Pairwise: 16 -> 8 -> 4 -> 2 -> 1.
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, rand_vec};

    fn naive(p: &LinearParams, n: usize, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let (k, m) = (p.in_features, p.out_features);
        let mut out = vec![0.0; n * m];
        for s in 0..n {
            for o in 0..m {
                let dot: f64 = (0..k)
                    .map(|i| x[s * k + i] as f64 * w[o * k + i] as f64)
                    .sum();
                out[s * m + o] = (b.map_or(0.0, |b| b[o] as f64) + dot) as f32;
            }
        }
        out
    }

    #[test]
    fn matches_naive_over_awkward_shapes() {
        // (n, in_features, out_features)
        let cases = [
            (1, 1, 1),
            (1, 512, 10),
            (3, 7, 5),
            (4, 64, 33),
            (2, 3, 1),
            (5, 1, 8),
            (1, 4096, 3),
            (0, 4, 4),
        ];
        for (seed, &(n, in_features, out_features)) in cases.iter().enumerate() {
            let p = LinearParams {
                in_features,
                out_features,
            };
            let seed = seed as u64 * 10;
            let x = rand_vec(n * in_features, seed);
            let w = rand_vec(out_features * in_features, seed + 1);
            let b = rand_vec(out_features, seed + 2);
            for bias in [Some(&b[..]), None] {
                let mut out = vec![f32::NAN; n * out_features];
                linear(&p, n, &x, &w, bias, &mut out);
                assert_close(&out, &naive(&p, n, &x, &w, bias), 1e-5);
            }
        }
    }

    #[test]
    fn by_hand() {
        let p = LinearParams {
            in_features: 2,
            out_features: 3,
        };
        let mut out = [0.0; 3];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0];
        linear(&p, 1, &[2.0, 5.0], &w, Some(&[0.5, 0.0, 1.0]), &mut out);
        assert_eq!(out, [2.5, 5.0, -2.0]);
    }
}
