//! PyTorch parity: every network of `tests/data/` declared with `cnn!`, loaded from the
//! PyTorch `state_dict`, and run on the stored batch; the result must match PyTorch's
//! `model.eval()` output within the fixture's tolerance. `tests/data/README.md` says how the
//! fixtures were produced (`tools/make_fixtures.py`, PyTorch 2.15, CPU, float32); each network's
//! `nn.Sequential` is in its `.json`. With `CNN_FIXTURES=dir`, the fixtures of the same names in
//! `dir` are checked too.

mod fixtures;

use cnn::cnn;
use fixtures::Fixture;

cnn! {
    /// `activations`: conv, conv.kN, conv.pN, gelu, leakyrelu, leakyrelu(default slope), …
    struct Activations {
        input(3, 9, 9) conv(3 -> 8, k3, p1) leakyrelu(0.2) conv(8 -> 8, k3, p1) sigmoid conv(8 -> 8, k3, p1) tanh conv(8 -> 8, k3, p1) swish conv(8 -> 8, k3, p1) silu conv(8 -> 8, k3, p1) leakyrelu conv(8 -> 8, k3, p1) gelu
    }
    /// `bn_variants`: bn, bn.affine=false, bn.eps=, bn.momentum=, bn.track_running_stats=false, conv, …
    struct BnVariants {
        input(4, 10, 10) conv(4 -> 8, k3, p1) bn(affine=false) relu conv(8 -> 8, k3, p1) bn(track_running_stats=false) tanh conv(8 -> 8, k3, p1) bn(eps=1e-3, momentum=0.01) relu conv(8 -> 8, k3, p1) bn(eps=1e-3, momentum=0.01, affine=false, track_running_stats=false) conv(8 -> 6, k1) bn(momentum=0.3)
    }
    /// `conv_geometry`: conv, conv.d(h,w), conv.dN, conv.k(h,w), conv.kN, conv.p(h,w), …
    struct ConvGeometry {
        input(3, 20, 24) conv(3 -> 8, k3, s2, p1) relu conv(8 -> 8, k(3,5), s(2,1), p(1,2)) tanh conv(8 -> 6, k3, d2, p2) sigmoid conv(6 -> 4, k(2,3), s(1,2), p(1,0), d(2,1))
    }
    /// `conv_keywords`: avgpool, avgpool.ceil_mode=false, avgpool.count_include_pad=true, avgpool.kernel_size=, avgpool.padding=, avgpool.stride=, …
    struct ConvKeywords {
        input(2, 16, 12) conv(2 -> 8, kernel_size=3, stride=1, padding=1, bias=false) bn(8) leaky_relu(negative_slope=0.2) conv(8 -> 12, kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=2) relu conv(12 -> 12, kernel_size=(1, 3), dilation=(1, 2), padding=(0, 2), groups=3, bias=true) maxpool(kernel_size=3, stride=2, padding=1, ceil_mode=true) avgpool(kernel_size=2, stride=1, padding=1, ceil_mode=false, count_include_pad=true) globalavgpool fc(12 -> 6, nobias)
    }
    /// `convtranspose_geometry`: convtranspose, convt, conv_transpose2d, output_padding, dilation, groups, rectangular kernels, nobias, a bn fused after one, …
    struct ConvtransposeGeometry {
        input(4, 5, 6) convtranspose(4 -> 8, k3, s2, p1, output_padding=1) bn relu convt(8 -> 6, k(3,2), s(2,3), p(1,0), output_padding=(0,2), g2, nobias) tanh conv_transpose2d(6 -> 4, kernel_size=(2, 3), dilation=(2, 1), padding=(1, 1), output_padding=(1, 0), stride=1) conv(4 -> 4, k3) convtranspose(4 -> 3, k1)
    }
    /// `global_pools`: conv, conv.k(h,w), conv.kN, conv.pN, conv.rect_kernel, gap, …
    struct GlobalPools {
        input(5, 7, 9) conv(5 -> 8, k(3,2)) relu conv(8 -> 8, k3, p1) gap
    }
    /// `groups_depthwise`: bn, conv, conv.depthwise, conv.depthwise(multiplier), conv.gN, conv.grouped, …
    struct GroupsDepthwise {
        input(8, 12, 12) conv(8 -> 16, k3, p1, g4) relu conv(16 -> 16, k3, s2, p1, g16, nobias) bn relu conv(16 -> 32, k1) swish conv(32 -> 64, k3, g32) globalmaxpool fc(10, nobias)
    }
    /// `lenet5`: avgpool, avgpool(N), avgpool.default_stride, conv, conv.kN, conv.pN, …
    struct Lenet5 {
        input(1, 28, 28), conv(1 -> 6, k5, p2), tanh, avgpool(2), conv(6 -> 16, k5), tanh, avgpool(2), flatten, fc(400 -> 120), tanh, fc(120 -> 84), tanh, linear(10)
    }
    /// `mlp_softmax`: dropout, fc, fc(IN -> OUT), fc(OUT), fc.nobias, flatten, …
    struct MlpSoftmax {
        input(1, 6, 6) flatten dropout(0.2) fc(36 -> 32, nobias) sigmoid fc(32 -> 16) tanh linear(16, nobias) relu dropout(0.5) fc(10) softmax
    }
    /// `mobile_acts`: conv, conv.depthwise, relu6, hardswish, hardsigmoid, identity, identity on a flat tensor, relu6 on a flat tensor, …
    struct MobileActs {
        input(3, 12, 12) conv(3 -> 8, k3, p1) relu6 conv(8 -> 8, k3, p1, g8) bn hardswish identity conv(8 -> 16, k1) hardsigmoid gap fc(16) identity relu6 fc(10)
    }
    /// `pooling`: avgpool, avgpool.ceil, avgpool.ceil_window_past_padded_edge, avgpool.count_include_pad=false, avgpool.kN, avgpool.pN, …
    struct Pooling {
        input(3, 37, 35) maxpool(k3, s2, p1, ceil) conv(3 -> 6, k1) avgpool(k3, s2, p1, ceil) conv(6 -> 6, k1) avgpool(k3, s2, p1, ceil, count_include_pad=false) maxpool(k2, p1) avgpool(k2, s1, p1, count_include_pad=false) maxpool(k2, s2, ceil)
    }
    /// `softmax_channels`: conv, conv.k(h,w), conv.nobias, conv.rect_kernel, softmax, softmax.over_channels(4d), …
    struct SoftmaxChannels {
        input(3, 7, 9) conv(3 -> 5, k(3,2), nobias) softmax
    }
    /// `tiny_net`: bn, conv, conv.kN, conv.pN, fc, fc(OUT), …
    struct TinyNet {
        input(3, 32, 32) conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
    /// `upsample_modes`: upsample nearest ×2 and ×(2, 3), bilinear ×(2, 3) with align_corners false, bilinear ×3 with align_corners true, convs between
    struct UpsampleModes {
        input(3, 5, 4) upsample(2) conv(3 -> 4, k3) upsample(scale_factor=(2, 3), mode=nearest) conv(4 -> 4, k3, s2) upsample(scale_factor=(2, 3), mode=bilinear) relu conv(4 -> 4, k3, s2) upsample(3, mode=bilinear, align_corners=true) conv(4 -> 2, k1)
    }
    /// `vgg_cifar`: bn, conv, conv.kN, conv.pN, dropout, fc, …
    struct VggCifar {
        input(3, 32, 32) conv(3 -> 16, k3, p1) bn relu conv(16 -> 16, k3, p1) bn relu maxpool(2) conv(16 -> 32, k3, p1) bn relu conv(32 -> 32, k3, p1) bn relu maxpool(2) conv(32 -> 64, k3, p1) bn relu maxpool(2) dropout(0.25) fc(64) relu dropout(0.5) fc(10)
    }
}

#[test]
fn activations() {
    Fixture::check_everywhere::<Activations>("activations");
}

#[test]
fn bn_variants() {
    Fixture::check_everywhere::<BnVariants>("bn_variants");
}

#[test]
fn conv_geometry() {
    Fixture::check_everywhere::<ConvGeometry>("conv_geometry");
}

#[test]
fn conv_keywords() {
    Fixture::check_everywhere::<ConvKeywords>("conv_keywords");
}

#[test]
fn convtranspose_geometry() {
    Fixture::check_everywhere::<ConvtransposeGeometry>("convtranspose_geometry");
}

#[test]
fn global_pools() {
    Fixture::check_everywhere::<GlobalPools>("global_pools");
}

#[test]
fn groups_depthwise() {
    Fixture::check_everywhere::<GroupsDepthwise>("groups_depthwise");
}

#[test]
fn lenet5() {
    Fixture::check_everywhere::<Lenet5>("lenet5");
}

#[test]
fn mlp_softmax() {
    Fixture::check_everywhere::<MlpSoftmax>("mlp_softmax");
}

#[test]
fn mobile_acts() {
    Fixture::check_everywhere::<MobileActs>("mobile_acts");
}

#[test]
fn pooling() {
    Fixture::check_everywhere::<Pooling>("pooling");
}

#[test]
fn softmax_channels() {
    Fixture::check_everywhere::<SoftmaxChannels>("softmax_channels");
}

#[test]
fn tiny_net() {
    Fixture::check_everywhere::<TinyNet>("tiny_net");
}

#[test]
fn upsample_modes() {
    Fixture::check_everywhere::<UpsampleModes>("upsample_modes");
}

#[test]
fn vgg_cifar() {
    Fixture::check_everywhere::<VggCifar>("vgg_cifar");
}

/// Writes every fixture network's `TORCH` twin to `torch-twins.json` in cargo's temporary
/// directory for integration tests (`<target dir>/tmp`), for `tools/check_torch_twins.py`
/// (which needs PyTorch, so CI does not run it).
#[test]
fn torch_twins_are_written_for_the_python_check() {
    use cnn::Model;
    let twins = serde_json::json!({
        "activations": Activations::TORCH,
        "bn_variants": BnVariants::TORCH,
        "conv_geometry": ConvGeometry::TORCH,
        "conv_keywords": ConvKeywords::TORCH,
        "convtranspose_geometry": ConvtransposeGeometry::TORCH,
        "global_pools": GlobalPools::TORCH,
        "groups_depthwise": GroupsDepthwise::TORCH,
        "lenet5": Lenet5::TORCH,
        "mlp_softmax": MlpSoftmax::TORCH,
        "mobile_acts": MobileActs::TORCH,
        "pooling": Pooling::TORCH,
        "softmax_channels": SoftmaxChannels::TORCH,
        "tiny_net": TinyNet::TORCH,
        "upsample_modes": UpsampleModes::TORCH,
        "vgg_cifar": VggCifar::TORCH,
    });
    for (_, torch) in twins.as_object().unwrap() {
        assert!(torch.as_str().unwrap().starts_with("nn.Sequential(\n"));
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("torch-twins.json");
    std::fs::write(path, twins.to_string()).unwrap();
}

/// Training against PyTorch: each network's train-mode forward pass (dropout as the identity),
/// running statistics, loss and every parameter's gradient from the generated backward pass,
/// within the fixture's tolerances (`tests/data/README.md`).
mod training {
    use super::*;

    macro_rules! training {
        ($($name:ident: $net:ty),* $(,)?) => {$(
            #[test]
            fn $name() {
                Fixture::check_training_everywhere::<$net>(stringify!($name));
            }
        )*};
    }

    training! {
        activations: Activations,
        bn_variants: BnVariants,
        conv_geometry: ConvGeometry,
        conv_keywords: ConvKeywords,
        convtranspose_geometry: ConvtransposeGeometry,
        global_pools: GlobalPools,
        groups_depthwise: GroupsDepthwise,
        lenet5: Lenet5,
        mlp_softmax: MlpSoftmax,
        mobile_acts: MobileActs,
        pooling: Pooling,
        softmax_channels: SoftmaxChannels,
        tiny_net: TinyNet,
        upsample_modes: UpsampleModes,
        vgg_cifar: VggCifar,
    }
}

/// Five optimizer steps against PyTorch's own (`traj_*` fixtures): SGD with Nesterov momentum
/// and weight decay, and AdamW, from the base fixtures' weights; every parameter and running
/// statistic after every stored step.
mod trajectories {
    use super::*;

    #[test]
    fn tiny_net_sgd() {
        Fixture::check_trajectory::<TinyNet>("traj_tiny_net_sgd");
    }

    #[test]
    fn tiny_net_adamw() {
        Fixture::check_trajectory::<TinyNet>("traj_tiny_net_adamw");
    }

    #[test]
    fn lenet5_sgd() {
        Fixture::check_trajectory::<Lenet5>("traj_lenet5_sgd");
    }

    #[test]
    fn lenet5_adamw() {
        Fixture::check_trajectory::<Lenet5>("traj_lenet5_adamw");
    }

    #[test]
    fn vgg_cifar_sgd() {
        Fixture::check_trajectory::<VggCifar>("traj_vgg_cifar_sgd");
    }

    #[test]
    fn vgg_cifar_adamw() {
        Fixture::check_trajectory::<VggCifar>("traj_vgg_cifar_adamw");
    }
}
