//! Every way `cnn!` runs a block, against the same computation spelled out: a network with a
//! block, and plain networks holding the layers of each path (with the same tensors, renamed),
//! whose outputs the test adds or concatenates itself. The fixtures of `test_block_parity.rs`
//! cover the common forms (a residual body ending in conv + bn, concat branches ending in
//! conv + bn + relu); these cover the rest of the generated calls: a body ending in a transposed
//! convolution, in a batch norm with batch statistics, or in a pool (the separate add), the
//! activation after the block other than ReLU, and concat branches that are empty, end in
//! upsampling, hold a residual, or end in a batch norm that cannot fold.

use cnn::ndarray::{concatenate, Array4, ArrayD, Axis};
use cnn::{cnn, Model};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

cnn! {
    /// Residual body ending in convtranspose + folded bn, ReLU fused after the block.
    struct ConvtTail {
        input(4, 6, 5)
        conv(4 -> 4, k3, p1) relu
        residual { conv(4 -> 6, k3, p1) bn relu convt(6 -> 4, k3, p1) bn } relu
    }
    struct ConvtTailHead { input(4, 6, 5) conv(4 -> 4, k3, p1) relu }
    struct ConvtTailBody { input(4, 6, 5) conv(4 -> 6, k3, p1) bn relu convt(6 -> 4, k3, p1) bn }

    /// A projection shortcut, a body ending in a batch norm with batch statistics (it cannot
    /// fold), ReLU6 after the block.
    struct BatchStatTail {
        input(4, 6, 5)
        residual(shortcut { conv(4 -> 8, k1, s2) }) { conv(4 -> 8, k3, s2, p1) bn(track_running_stats=false) } relu6
    }
    struct BatchStatTailShortcut { input(4, 6, 5) conv(4 -> 8, k1, s2) }
    struct BatchStatTailBody { input(4, 6, 5) conv(4 -> 8, k3, s2, p1) bn(track_running_stats=false) }

    /// A body ending in a pool: the add and the hardswish after the block as one pass.
    struct PoolTail {
        input(4, 6, 6)
        residual { conv(4 -> 4, k3, p1) relu maxpool(k3, s1, p1) } hardswish
    }
    struct PoolTailBody { input(4, 6, 6) conv(4 -> 4, k3, p1) relu maxpool(k3, s1, p1) }

    /// Every kind of concat branch.
    struct Branches {
        input(4, 6, 6)
        concat {
            branch {}
            branch { conv(4 -> 3, k1) bn(track_running_stats=false) relu }
            branch { maxpool(2) conv(4 -> 2, k3, p1) upsample(2) }
            branch { residual { conv(4 -> 4, k3, p1) } }
            branch { conv(4 -> 2, k1) bn relu }
        }
    }
    struct BranchOne { input(4, 6, 6) conv(4 -> 3, k1) bn(track_running_stats=false) relu }
    struct BranchTwo { input(4, 6, 6) maxpool(2) conv(4 -> 2, k3, p1) upsample(2) }
    struct BranchThreeBody { input(4, 6, 6) conv(4 -> 4, k3, p1) }
    struct BranchFour { input(4, 6, 6) conv(4 -> 2, k1) bn relu }
}

/// `M::seeded(seed)` with every one-dimensional tensor (biases, batch-norm affine parameters
/// and running statistics) replaced by random values, running variances positive, so that
/// biases and folded batch norms are exercised.
fn randomized<M: Model>(seed: u64) -> M {
    let bytes = M::seeded(seed).to_safetensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut state = seed;
    let mut next = move || {
        // SplitMix64, to a uniform value in [-1, 1).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let mut tensors: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut data = t.data().to_vec();
        if t.dtype() == Dtype::F32 && t.shape().len() == 1 {
            for chunk in data.chunks_exact_mut(4) {
                let v = next();
                let v = if name.ends_with("running_var") {
                    v.abs() + 0.5
                } else {
                    v
                };
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
        tensors.push((name, data, t.dtype(), t.shape().to_vec()));
    }
    M::from_safetensors(&serialize(&tensors)).unwrap()
}

fn serialize(tensors: &[(String, Vec<u8>, Dtype, Vec<usize>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, dt, s)| (n.clone(), TensorView::new(*dt, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The tensors of `net` under key prefix `from`, renamed to prefix `to` (`""` for a path's own
/// network), loaded into `P`.
fn path<P: Model, M: Model>(net: &M, from: &str, to: &str) -> P {
    let bytes = net.to_safetensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, t)| {
            let rest = name.strip_prefix(from)?;
            Some((
                format!("{to}{rest}"),
                t.data().to_vec(),
                t.dtype(),
                t.shape().to_vec(),
            ))
        })
        .collect();
    P::from_safetensors(&serialize(&tensors)).unwrap()
}

fn batch(c: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((3, c, h, w), |(n, c, y, x)| {
        (((n * 31 + c * 17 + y * 7 + x * 3) % 23) as f32 / 11.0 - 1.0) * 1.5
    })
}

fn run<M: Model>(net: &M, x: &Array4<f32>) -> ArrayD<f32> {
    net.forward_batch(x.view()).unwrap().into_dyn()
}

/// `|a − b| ≤ 1e-6 · (1 + |b|)` everywhere (the fused and separate forms round alike; the
/// bound only absorbs this test's own activation formulas).
fn assert_close(got: &ArrayD<f32>, want: &ArrayD<f32>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
            "{what}: element {i}: {a} against {b}"
        );
    }
}

fn relu(v: f32) -> f32 {
    v.max(0.0)
}

fn relu6(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

fn hardswish(v: f32) -> f32 {
    v * relu6(v + 3.0) / 6.0
}

#[test]
fn a_body_ending_in_a_transposed_convolution_adds_in_its_epilogue() {
    let net: ConvtTail = randomized(1);
    let x = batch(4, 6, 5);
    let head: ConvtTailHead = path(&net, "0.", "0.");
    let body: ConvtTailBody = path(&net, "2.body.", "");
    let x1 = run(&head, &x);
    let x1v = x1.clone().into_dimensionality().unwrap();
    let want = (run(&body, &x1v) + &x1).mapv(relu);
    assert_close(&run(&net, &x), &want, "convtranspose tail");
}

#[test]
fn a_body_ending_in_batch_statistics_adds_after_the_batch_norm() {
    let net: BatchStatTail = randomized(2);
    let x = batch(4, 6, 5);
    let shortcut: BatchStatTailShortcut = path(&net, "0.shortcut.", "");
    let body: BatchStatTailBody = path(&net, "0.body.", "");
    let want = (run(&body, &x) + run(&shortcut, &x)).mapv(relu6);
    assert_close(&run(&net, &x), &want, "batch-statistics tail");
}

#[test]
fn a_body_ending_in_a_pool_adds_in_one_pass_with_the_activation() {
    let net: PoolTail = randomized(3);
    let x = batch(4, 6, 6);
    let body: PoolTailBody = path(&net, "0.body.", "");
    let want = (run(&body, &x) + &x.clone().into_dyn()).mapv(hardswish);
    assert_close(&run(&net, &x), &want, "pool tail");
}

#[test]
fn every_kind_of_branch_lands_in_its_channels() {
    let net: Branches = randomized(4);
    let x = batch(4, 6, 6);
    let one: BranchOne = path(&net, "0.branches.1.", "");
    let two: BranchTwo = path(&net, "0.branches.2.", "");
    let three: BranchThreeBody = path(&net, "0.branches.3.0.body.", "");
    let four: BranchFour = path(&net, "0.branches.4.", "");
    let xd = x.clone().into_dyn();
    let parts = [
        xd.clone(),
        run(&one, &x),
        run(&two, &x),
        run(&three, &x) + &xd,
        run(&four, &x),
    ];
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let want = concatenate(Axis(1), &views).unwrap();
    assert_eq!(want.shape(), &[3, 15, 6, 6]);
    assert_close(&run(&net, &x), &want, "concat");
    // One sample through `forward` (its own executor and stack) gives the batch's first row.
    let sample: [[[f32; 6]; 6]; 4] =
        std::array::from_fn(|c| std::array::from_fn(|y| std::array::from_fn(|w| x[[0, c, y, w]])));
    let single = net.forward(&sample);
    let first = want.index_axis(Axis(0), 0);
    for (c, plane) in single.iter().enumerate() {
        for (y, row) in plane.iter().enumerate() {
            for (w, v) in row.iter().enumerate() {
                // `bn(track_running_stats=false)` normalises over the batch: skip its branch.
                if (4..7).contains(&c) {
                    continue;
                }
                let b = first[[c, y, w]];
                assert!(
                    (v - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "forward: [{c}, {y}, {w}]"
                );
            }
        }
    }
}
