//! PyTorch parity of the branching networks (`residual`, `residual(shortcut { … })`, `concat`):
//! each fixture of `tests/data/` written by `tools/make_fixtures.py` with blocks, declared with
//! `cnn!` using exactly the json's `dsl`, loaded from the PyTorch `state_dict` (or, for
//! `resnet18` and `mobilenetv2`, from the weight recipe of the json, see `tests/data/README.md`)
//! and run on the stored batch; the output must match PyTorch's `model.eval()` within the
//! fixture's tolerance. The twins are `Residual` and `Concat` of `tools/make_fixtures.py`.

#[allow(dead_code)] // the optimizer trajectories are replayed in test_parity only
mod fixtures;

use cnn::cnn;
use fixtures::Fixture;

cnn! {
    /// `resnet20_cifar`: CIFAR ResNet-20: 3 stages × 3 basic blocks (16/32/64 channels),
    /// identity shortcuts and `conv1x1 s2 nobias + bn` projections; stored weights. L = 22,
    /// atol 0.00199, rtol 0.00055.
    pub struct Resnet20Cifar {
        input(3, 32, 32) conv(3 -> 16, k3, p1, nobias) bn relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual(shortcut { conv(16 -> 32, k1, s2, nobias) bn }) { conv(16 -> 32, k3, s2, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual { conv(32 -> 32, k3, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual { conv(32 -> 32, k3, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual(shortcut { conv(32 -> 64, k1, s2, nobias) bn }) { conv(32 -> 64, k3, s2, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu gap fc(10)
    }
    /// `resnet18`: torchvision ResNet-18 at 3×224×224: 7×7 stem, maxpool, 4 stages × 2
    /// basic blocks with projection shortcuts, gap, fc(1000); recipe weights. L = 21, atol
    /// 0.000298, rtol 0.000525.
    pub struct Resnet18 {
        input(3, 224, 224) conv(3 -> 64, k7, s2, p3, nobias) bn relu maxpool(k3, s2, p1) residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual(shortcut { conv(64 -> 128, k1, s2, nobias) bn }) { conv(64 -> 128, k3, s2, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn } relu residual { conv(128 -> 128, k3, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn } relu residual(shortcut { conv(128 -> 256, k1, s2, nobias) bn }) { conv(128 -> 256, k3, s2, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn } relu residual { conv(256 -> 256, k3, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn } relu residual(shortcut { conv(256 -> 512, k1, s2, nobias) bn }) { conv(256 -> 512, k3, s2, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn } relu residual { conv(512 -> 512, k3, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn } relu gap fc(1000)
    }
    /// `mobilenetv2`: torchvision MobileNetV2 (width 1.0) at 3×224×224: inverted residuals
    /// (expansion 6, relu6, depthwise 3×3), residual only at stride 1 with in == out;
    /// recipe weights. L = 53, atol 0.00218, rtol 0.00133.
    pub struct Mobilenetv2 {
        input(3, 224, 224) conv(3 -> 32, k3, s2, p1, nobias) bn relu6 conv(32 -> 32, k3, p1, g32, nobias) bn relu6 conv(32 -> 16, k1, nobias) bn conv(16 -> 96, k1, nobias) bn relu6 conv(96 -> 96, k3, s2, p1, g96, nobias) bn relu6 conv(96 -> 24, k1, nobias) bn residual { conv(24 -> 144, k1, nobias) bn relu6 conv(144 -> 144, k3, p1, g144, nobias) bn relu6 conv(144 -> 24, k1, nobias) bn } conv(24 -> 144, k1, nobias) bn relu6 conv(144 -> 144, k3, s2, p1, g144, nobias) bn relu6 conv(144 -> 32, k1, nobias) bn residual { conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, p1, g192, nobias) bn relu6 conv(192 -> 32, k1, nobias) bn } residual { conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, p1, g192, nobias) bn relu6 conv(192 -> 32, k1, nobias) bn } conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, s2, p1, g192, nobias) bn relu6 conv(192 -> 64, k1, nobias) bn residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn } residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn } residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn } conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, p1, g384, nobias) bn relu6 conv(384 -> 96, k1, nobias) bn residual { conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, p1, g576, nobias) bn relu6 conv(576 -> 96, k1, nobias) bn } residual { conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, p1, g576, nobias) bn relu6 conv(576 -> 96, k1, nobias) bn } conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, s2, p1, g576, nobias) bn relu6 conv(576 -> 160, k1, nobias) bn residual { conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, p1, g960, nobias) bn relu6 conv(960 -> 160, k1, nobias) bn } residual { conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, p1, g960, nobias) bn relu6 conv(960 -> 160, k1, nobias) bn } conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, p1, g960, nobias) bn relu6 conv(960 -> 320, k1, nobias) bn conv(320 -> 1280, k1, nobias) bn relu6 gap dropout(0.2) fc(1000)
    }
    /// `mobilenetv3_small_like`: MobileNetV3-small-style inverted residuals without
    /// squeeze-excite: relu, hardswish, hardsigmoid, depthwise 3×3 and 5×5, three
    /// residuals; stored weights. L = 21, atol 0.00322, rtol 0.000525.
    pub struct Mobilenetv3SmallLike {
        input(3, 64, 64) conv(3 -> 8, k3, s2, p1, nobias) bn hardswish conv(8 -> 8, k3, s2, p1, g8, nobias) bn relu conv(8 -> 8, k1, nobias) bn conv(8 -> 24, k1, nobias) bn relu conv(24 -> 24, k3, s2, p1, g24, nobias) bn relu conv(24 -> 12, k1, nobias) bn residual { conv(12 -> 36, k1, nobias) bn relu conv(36 -> 36, k3, p1, g36, nobias) bn relu conv(36 -> 12, k1, nobias) bn } conv(12 -> 36, k1, nobias) bn hardswish conv(36 -> 36, k5, s2, p2, g36, nobias) bn hardswish conv(36 -> 16, k1, nobias) bn residual { conv(16 -> 48, k1, nobias) bn hardswish conv(48 -> 48, k5, p2, g48, nobias) bn hardsigmoid conv(48 -> 16, k1, nobias) bn } residual { conv(16 -> 32, k1, nobias) bn hardswish conv(32 -> 32, k3, p1, g32, nobias) bn hardswish conv(32 -> 16, k1, nobias) bn } conv(16 -> 48, k1, nobias) bn hardswish gap fc(32) hardswish dropout(0.2) fc(10)
    }
    /// `unet3`: 3-level U-Net: nested `concat { branch {} branch { maxpool … upsample } }`,
    /// upsampling bilinear, convtranspose(k2, s2) and nearest; a 2×32×32 feature map out;
    /// stored weights. L = 9, atol 0.000737, rtol 0.000225.
    pub struct Unet3 {
        input(3, 32, 32) conv(3 -> 4, k3, p1, nobias) bn relu concat { branch {} branch { maxpool(2) conv(4 -> 8, k3, p1, nobias) bn relu concat { branch {} branch { maxpool(2) conv(8 -> 16, k3, p1, nobias) bn relu concat { branch {} branch { maxpool(2) conv(16 -> 16, k3, p1, nobias) bn relu upsample(scale_factor=2, mode=bilinear) } } conv(32 -> 16, k3, p1, nobias) bn relu convtranspose(16 -> 8, k2, s2) } } conv(16 -> 8, k3, p1, nobias) bn relu upsample(2) } } conv(12 -> 8, k3, p1, nobias) bn relu conv(8 -> 2, k1)
    }
    /// `inception_like`: two Inception-style concat blocks (1×1; 1×1→3×3; 1×1→5×5;
    /// maxpool→1×1; identity branch), gap, fc(10); stored weights. L = 14, atol 0.00093,
    /// rtol 0.00035.
    pub struct InceptionLike {
        input(3, 32, 32) conv(3 -> 16, k3, p1, nobias) bn relu maxpool(2) concat { branch { conv(16 -> 8, k1) bn relu } branch { conv(16 -> 8, k1) bn relu conv(8 -> 12, k3, p1) bn relu } branch { conv(16 -> 4, k1) bn relu conv(4 -> 6, k5, p2) bn relu } branch { maxpool(k3, s1, p1) conv(16 -> 6, k1) bn relu } branch {} } maxpool(2) concat { branch { conv(48 -> 8, k1) bn relu } branch { conv(48 -> 8, k1) bn relu conv(8 -> 12, k3, p1) bn relu } branch { conv(48 -> 4, k1) bn relu conv(4 -> 6, k5, p2) bn relu } branch { maxpool(k3, s1, p1) conv(48 -> 6, k1) bn relu } branch {} } gap fc(10)
    }
}

#[test]
fn resnet20_cifar() {
    Fixture::check_everywhere::<Resnet20Cifar>("resnet20_cifar");
}

#[test]
fn resnet18() {
    Fixture::check_everywhere::<Resnet18>("resnet18");
}

#[test]
fn mobilenetv2() {
    Fixture::check_everywhere::<Mobilenetv2>("mobilenetv2");
}

#[test]
fn mobilenetv3_small_like() {
    Fixture::check_everywhere::<Mobilenetv3SmallLike>("mobilenetv3_small_like");
}

#[test]
fn unet3() {
    Fixture::check_everywhere::<Unet3>("unet3");
}

#[test]
fn inception_like() {
    Fixture::check_everywhere::<InceptionLike>("inception_like");
}

/// Writes these networks' `TORCH` twins to `torch-twins-blocks.json` in cargo's temporary
/// directory for integration tests, next to `test_parity`'s `torch-twins.json`, for
/// `tools/check_torch_twins.py` (which needs PyTorch, so CI does not run it).
#[test]
fn torch_twins_are_written_for_the_python_check() {
    use cnn::Model;
    let twins = serde_json::json!({
        "resnet20_cifar": Resnet20Cifar::TORCH,
        "resnet18": Resnet18::TORCH,
        "mobilenetv2": Mobilenetv2::TORCH,
        "mobilenetv3_small_like": Mobilenetv3SmallLike::TORCH,
        "unet3": Unet3::TORCH,
        "inception_like": InceptionLike::TORCH,
    });
    for (_, torch) in twins.as_object().unwrap() {
        let torch = torch.as_str().unwrap();
        assert!(torch.starts_with("class Residual(nn.Module):"), "{torch}");
        assert!(torch.contains("\nmodel = nn.Sequential(\n"), "{torch}");
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("torch-twins-blocks.json");
    std::fs::write(path, twins.to_string()).unwrap();
}

/// Training against PyTorch through blocks: the train-mode forward pass, running statistics,
/// loss and every gradient (residual sums and concat slices included) within the fixtures'
/// tolerances. The recipe networks (`resnet18`, `mobilenetv2`) carry no training quantities.
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
        resnet20_cifar: Resnet20Cifar,
        mobilenetv3_small_like: Mobilenetv3SmallLike,
        unet3: Unet3,
        inception_like: InceptionLike,
    }
}
