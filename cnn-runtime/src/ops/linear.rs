//! Fully connected layer through one `sgemm_bt` (dot-product blocks).

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
    let out = &mut out[..n * m];
    start_with_bias(out, m, bias);
    // input: (N, I)  weightᵀ: (I, O)  out: (N, O). `sgemm_bt` computes each row of C the same
    // way whatever N, so a sample's result does not depend on the batch it came in.
    crate::gemm::sgemm_bt(n, k, m, input, weight, out, bias.is_some());
}

/// `u32` elements of [`bf16_weight_into`]'s layout.
pub const fn bf16_weight_len(p: &LinearParams) -> usize {
    crate::gemm::bf16_pack::packed_len(p.in_features, p.out_features)
}

/// `weight: [out_features, in_features]` in the bf16 GEMM's layout, into `out`
/// ([`bf16_weight_len`] values): `weightᵀ` packed as B. What a layer in bf16 makes on first
/// use, and what the `cnn!` macro lays out at compile time for an embedded network declared
/// `#[precision(bf16)]`.
///
/// # Panics
/// If a slice is shorter than its layout.
pub fn bf16_weight_into(p: &LinearParams, weight: &[f32], out: &mut [u32]) {
    let (k, m) = (p.in_features, p.out_features);
    crate::gemm::bf16_pack::pack_b(k, m, weight, (1, k), out);
}

/// [`linear`] in bf16: `w16` is `weightᵀ` packed by [`bf16_weight_into`] (`[in_features,
/// out_features]`); the input is rounded to bf16 and the sums are f32.
///
/// # Panics
/// If a slice is shorter than its layout.
#[cfg(feature = "std")]
pub(crate) fn linear_bf16(
    p: &LinearParams,
    n: usize,
    input: &[f32],
    w16: &[u32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    use crate::gemm::bf16;
    let (k, m) = (p.in_features, p.out_features);
    assert!(input.len() >= n * k, "linear input too short");
    assert!(
        w16.len() >= bf16::packed_len(k, m),
        "linear weight too short"
    );
    assert!(out.len() >= n * m, "linear output too short");
    let out = &mut out[..n * m];
    start_with_bias(out, m, bias);
    bf16::with_pairs(input, n, k, |a| {
        bf16::gemm(n, k, m, a, bf16::B::Packed(w16), out, bias.is_some())
    });
}

/// Every row of `out` (`m` columns) set to the bias, when there is one.
fn start_with_bias(out: &mut [f32], m: usize, bias: Option<&[f32]>) {
    if let Some(b) = bias {
        assert!(b.len() >= m, "linear bias too short");
        if m > 0 {
            for row in out.chunks_exact_mut(m) {
                row.copy_from_slice(&b[..m]);
            }
        }
    }
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
                let want = naive(&p, n, &x, &w, bias);
                crate::simd::testing::each_level(|_| {
                    let mut out = vec![f32::NAN; n * out_features];
                    linear(&p, n, &x, &w, bias, &mut out);
                    assert_close(&out, &want, 1e-5);
                });
            }
        }
    }

    #[test]
    fn in_bf16_matches_the_f64_sum_of_the_rounded_operands_at_every_level() {
        use crate::gemm::bf16::{pack_b, packed_len, round_bf16};
        for (seed, &(n, k, m)) in [(1, 1, 1), (3, 7, 5), (4, 64, 33), (6, 513, 70), (9, 2, 129)]
            .iter()
            .enumerate()
        {
            let p = LinearParams {
                in_features: k,
                out_features: m,
            };
            let s = seed as u64 * 3 + 100;
            let (x, w, b) = (
                rand_vec(n * k, s),
                rand_vec(m * k, s + 1),
                rand_vec(m, s + 2),
            );
            let mut w16 = vec![0; packed_len(k, m)];
            pack_b(k, m, &w, (1, k), &mut w16);
            for bias in [Some(&b[..]), None] {
                crate::simd::testing::each_bf16_path(|level| {
                    let mut out = vec![f32::NAN; n * m];
                    linear_bf16(&p, n, &x, &w16, bias, &mut out);
                    for i in 0..n {
                        for o in 0..m {
                            let (mut want, mut mag) = (bias.map_or(0.0, |b| b[o] as f64), 0.0);
                            for j in 0..k {
                                let t = round_bf16(x[i * k + j]) as f64
                                    * round_bf16(w[o * k + j]) as f64;
                                want += t;
                                mag += t.abs();
                            }
                            let got = out[i * m + o] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + mag + want.abs()),
                                "{n}x{k}x{m} at {}: [{i}, {o}] = {got}, want {want}",
                                level.name()
                            );
                        }
                    }
                });
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
