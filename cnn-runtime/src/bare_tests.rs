//! The single-sample executor ([`crate::bare::Bare`]) against the batch executor
//! ([`crate::exec::Exec`]) on one sample: the same calls must give the same bits (a module of
//! its own, so that neither executor's file imports the other's).

use crate::bare::{Bare, Run, WorkspaceLayout};
use crate::error::SliceError;
use crate::exec::Exec;
use crate::init::Rng;
use crate::layers::batch_norm as bn;
use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear};
use crate::ops::activation::Activation;
use crate::ops::conv::{Algorithm, Conv2dParams};
use crate::ops::conv_transpose::ConvTranspose2dParams;
use crate::ops::linear::LinearParams;
use crate::ops::pool::Pool2dParams;
use crate::ops::pool::PoolKind;
use crate::ops::upsample::Upsample2dParams;
use crate::ops::upsample::UpsampleMode;
use crate::test_util::rand_vec;

fn conv(c_in: usize, c_out: usize, k: usize, hw: usize, seed: u64) -> Conv2d {
    let p = Conv2dParams {
        c_in,
        c_out,
        groups: 1,
        kernel: [k, k],
        stride: [1, 1],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
        in_hw: [hw, hw],
        out_hw: [hw, hw],
    };
    Conv2d::seeded("c", p, true, &mut Rng::new(seed))
}

/// Every layer and block call of [`Run`] on one 3×8×8 sample: direct, im2col and Winograd
/// convolutions; folded, unfolded and batch-statistics batch norms; a residual with a
/// shortcut ending in a fused convolution and one without ending in an add, and one ending in a
/// transposed convolution; a concatenation with a convolution, a pooled-and-upsampled and an
/// identity branch, and one whose branches end in a pool, an activation (copied in), a
/// convolution with batch statistics and a transposed convolution; transposed convolutions
/// plain and fused; pooling, upsampling, softmax, linear and a standalone batch norm.
struct Net {
    a: Conv2d,
    bn_a: BatchNorm2d,
    shortcut: Conv2d,
    b: Conv2d,
    bn_b: BatchNorm2d,
    c: Conv2d,
    bn_c: BatchNorm2d,
    d: Conv2d,
    t: ConvTranspose2d,
    bn_t: BatchNorm2d,
    e: Conv2d,
    g: Conv2d,
    bn_g: BatchNorm2d,
    u: ConvTranspose2d,
    bn_u: BatchNorm2d,
    v: ConvTranspose2d,
    bn_v: BatchNorm2d,
    fc: Linear,
    bn_fc: BatchNorm2d,
}

const DOWN: Pool2dParams = Pool2dParams {
    kind: PoolKind::Max,
    channels: 16,
    kernel: [2, 2],
    stride: [2, 2],
    padding: [0, 0],
    ceil_mode: false,
    in_hw: [8, 8],
    out_hw: [4, 4],
};
const UP: Upsample2dParams = Upsample2dParams {
    channels: 16,
    scale: [2, 2],
    mode: UpsampleMode::Bilinear {
        align_corners: false,
    },
    in_hw: [4, 4],
    out_hw: [8, 8],
};
const SAME: Pool2dParams = Pool2dParams {
    kind: PoolKind::Max,
    channels: 36,
    kernel: [3, 3],
    stride: [1, 1],
    padding: [1, 1],
    ceil_mode: false,
    in_hw: [8, 8],
    out_hw: [8, 8],
};
const NEAR: Upsample2dParams = Upsample2dParams {
    channels: 8,
    scale: [2, 2],
    mode: UpsampleMode::Nearest,
    in_hw: [8, 8],
    out_hw: [16, 16],
};
const AVG: Pool2dParams = Pool2dParams {
    kind: PoolKind::Avg {
        count_include_pad: true,
    },
    channels: 8,
    kernel: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
    ceil_mode: false,
    in_hw: [16, 16],
    out_hw: [8, 8],
};

impl Net {
    fn new() -> Net {
        let tp = ConvTranspose2dParams {
            c_in: 80,
            c_out: 8,
            groups: 1,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            in_hw: [8, 8],
            out_hw: [16, 16],
        };
        // 3×3, padding 1, stride 1: the same 8×8 size, to end a concat branch.
        let up = ConvTranspose2dParams {
            c_in: 36,
            c_out: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            in_hw: [8, 8],
            out_hw: [8, 8],
            ..tp
        };
        let same16 = ConvTranspose2dParams {
            c_in: 8,
            c_out: 8,
            in_hw: [16, 16],
            out_hw: [16, 16],
            ..up
        };
        let fc = LinearParams {
            in_features: 8 * 64,
            out_features: 10,
        };
        let net = Net {
            a: conv(3, 12, 3, 8, 1),
            bn_a: bn(12, 64, true, 2),
            shortcut: conv(12, 16, 1, 8, 3),
            b: conv(12, 16, 3, 8, 4),
            bn_b: bn(16, 64, false, 5),
            c: conv(16, 16, 3, 8, 6),
            bn_c: bn(16, 64, true, 7),
            d: conv(16, 4, 1, 8, 8),
            t: ConvTranspose2d::seeded("t", tp, true, &mut Rng::new(9)),
            bn_t: bn(8, 256, true, 10),
            e: conv(8, 8, 3, 16, 11),
            g: conv(36, 4, 1, 8, 14),
            bn_g: bn(4, 64, false, 15),
            u: ConvTranspose2d::seeded("u", up, true, &mut Rng::new(16)),
            bn_u: bn(4, 64, true, 17),
            v: ConvTranspose2d::seeded("v", same16, true, &mut Rng::new(18)),
            bn_v: bn(8, 256, true, 19),
            fc: Linear::seeded("f", fc, true, &mut Rng::new(12)),
            bn_fc: bn(10, 1, true, 13),
        };
        let algorithms = [&net.a, &net.b, &net.c].map(|c| c.params.algorithm());
        assert_eq!(
            algorithms,
            [Algorithm::Direct, Algorithm::Im2col, Algorithm::Winograd]
        );
        net
    }

    /// The calls, in the order generated code would make them.
    fn run<E: Run>(&self, e: &mut E) -> Result<(), E::Error> {
        e.conv2d_fused(&self.a, Some(&self.bn_a), Some(Activation::Relu))?;
        e.block_enter();
        e.conv2d(&self.shortcut);
        e.swap_top();
        e.conv2d_fused(&self.b, Some(&self.bn_b), Some(Activation::Relu))?;
        e.conv2d_residual(&self.c, Some(&self.bn_c), Some(Activation::Relu))?;
        e.concat_enter(36 * 64);
        e.conv2d_concat(&self.d, None, Some(Activation::Silu), 0, 36)?;
        e.concat_restore();
        e.pool2d(&DOWN);
        e.upsample2d_concat(&UP, 4, 36);
        e.concat_write_input(20, 16, 64, 36);
        e.concat_exit();
        // A concatenation whose branch ends in a layer that cannot write into its slice.
        e.concat_enter(80 * 64);
        e.pool2d(&SAME);
        e.concat_write(0, 36, 64, 80);
        e.concat_restore();
        e.activation(Activation::Hardswish);
        e.concat_write(36, 36, 64, 80);
        e.concat_restore();
        // Batch statistics: the convolution runs, then the batch norm, then the copy.
        e.conv2d_concat(&self.g, Some(&self.bn_g), Some(Activation::Relu), 72, 80)?;
        e.concat_restore();
        e.conv_transpose2d_concat(&self.u, Some(&self.bn_u), Some(Activation::Relu6), 76, 80)?;
        e.concat_exit();
        e.conv_transpose2d_fused(&self.t, Some(&self.bn_t), None)?;
        e.block_enter();
        e.conv2d_fused(&self.e, None, Some(Activation::Tanh))?;
        e.residual_add(Some(Activation::Gelu));
        e.block_enter();
        e.conv_transpose2d(&self.v);
        e.conv_transpose2d_residual(&self.v, Some(&self.bn_v), Some(Activation::Relu))?;
        e.pool2d(&AVG);
        e.upsample2d(&NEAR);
        e.pool2d(&AVG);
        e.softmax(8, 64);
        e.linear(&self.fc);
        e.batchnorm(&self.bn_fc)?;
        e.activation(Activation::Sigmoid);
        Ok(())
    }
}

/// The script's workspace, from the layers' own size functions.
const LAYOUT: WorkspaceLayout = WorkspaceLayout {
    activations: 80 * 64, // the second concatenation's output
    scratch: 0,           // set in `layout()`
    channels: 16,
    stack: &[36 * 64, 80 * 64], // the second concat's input and accumulator
};

fn layout(net: &Net) -> WorkspaceLayout {
    let convs = [
        &net.a,
        &net.shortcut,
        &net.b,
        &net.c,
        &net.d,
        &net.e,
        &net.g,
    ];
    let scratch = convs
        .iter()
        .map(|c| c.params.forward_scratch_len())
        .chain([
            net.t.params.scratch_len(),
            net.u.params.scratch_len(),
            net.v.params.scratch_len(),
            DOWN.scratch_len(),
            AVG.scratch_len(),
        ])
        .max()
        .unwrap();
    WorkspaceLayout { scratch, ..LAYOUT }
}

/// `Bare` computes the same bits as the batch executor on one sample, through every call,
/// in a workspace of exactly `sample_len()` values (and writes nothing past them in a
/// longer one); one value fewer is refused before anything runs.
#[test]
fn bare_matches_the_batch_executor_bit_for_bit() {
    let net = Net::new();
    let layout = layout(&net);
    crate::simd::testing::each_level(|level| {
        for seed in 0..3 {
            let x = rand_vec(3 * 64, 100 + seed);
            let mut exec = Exec::from_sample(&x);
            net.run(&mut exec).unwrap();
            let want: Vec<u32> = exec.output().iter().map(|v| v.to_bits()).collect();
            assert_eq!(want.len(), 10);

            let mut ws = vec![f32::NAN; layout.sample_len() + 32];
            ws[layout.sample_len()..].fill(-3.25);
            let mut out = [f32::NAN; 10];
            let bare = Bare::forward_in(&layout, &x, &mut out, &mut ws, [192, 10], |b| net.run(b));
            bare.unwrap();
            let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{} seed {seed}", level.name());
            assert!(
                ws[layout.sample_len()..].iter().all(|&v| v == -3.25),
                "wrote past the workspace"
            );
        }
    });
    let x = vec![0.5; 192];
    let mut out = [0.0; 10];
    let mut short = vec![0.0; layout.sample_len() - 1];
    let ran = core::cell::Cell::new(false);
    let e = Bare::forward_in(&layout, &x, &mut out, &mut short, [192, 10], |b| {
        ran.set(true);
        net.run(b)
    });
    assert_eq!(
        e,
        Err(SliceError::Workspace {
            expected: layout.sample_len(),
            found: layout.sample_len() - 1
        })
    );
    assert!(!ran.get());
}

/// `conv2d_pool` in `Bare` gives the batch executor's bits: a direct convolution with a batch
/// norm that folds and ReLU pooled in its pass, then an im2col convolution and a direct one
/// with batch statistics whose pools run as their own steps.
#[test]
fn bare_pools_in_the_convolution_s_pass_as_the_batch_executor() {
    use crate::ops::conv::direct::tests::POOLED;
    let pool = |channels: usize, hw: usize| Pool2dParams {
        channels,
        in_hw: [hw, hw],
        out_hw: [hw / 2, hw / 2],
        ..DOWN
    };
    let (a, bn_a) = (conv(3, 12, 3, 8, 1), bn(12, 64, true, 2));
    let (b, bn_b) = (conv(12, 8, 3, 4, 3), bn(8, 16, false, 4));
    let (d, bn_d) = (conv(8, 8, 3, 2, 5), bn(8, 4, false, 6));
    assert_eq!(a.params.algorithm(), Algorithm::Direct);
    assert_eq!(b.params.algorithm(), Algorithm::Im2col);
    assert_eq!(d.params.algorithm(), Algorithm::Direct);
    let relu = Some(Activation::Relu);
    let layout = WorkspaceLayout {
        activations: 12 * 64,
        scratch: [
            a.params.forward_scratch_len(),
            b.params.forward_scratch_len(),
            d.params.forward_scratch_len(),
            pool(8, 4).scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap(),
        channels: 12,
        stack: &[],
    };
    crate::simd::testing::each_level(|level| {
        let x = rand_vec(3 * 64, 7);
        let mut exec = Exec::from_sample(&x);
        POOLED.set(0);
        exec.conv2d_pool(&a, Some(&bn_a), relu, &pool(12, 8))
            .unwrap();
        exec.conv2d_pool(&b, Some(&bn_b), relu, &pool(8, 4))
            .unwrap();
        exec.conv2d_pool(&d, Some(&bn_d), relu, &pool(8, 2))
            .unwrap();
        assert_eq!(POOLED.get(), 1, "{}", level.name());
        let want: Vec<u32> = exec.output().iter().map(|v| v.to_bits()).collect();
        let mut ws = vec![f32::NAN; layout.sample_len()];
        let mut out = [f32::NAN; 8];
        Bare::forward_in(&layout, &x, &mut out, &mut ws, [192, 8], |e| {
            e.conv2d_pool(&a, Some(&bn_a), relu, &pool(12, 8))?;
            e.conv2d_pool(&b, Some(&bn_b), relu, &pool(8, 4))?;
            e.conv2d_pool(&d, Some(&bn_d), relu, &pool(8, 2))
        })
        .unwrap();
        assert_eq!(POOLED.get(), 2, "{}", level.name());
        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{}", level.name());
    });
}
