//! `state_dict` keys: the module index is the layer's position in `nn.Sequential` (the implicit
//! flatten before the first `fc` on a `[C, H, W]` tensor takes an index of its own), and each
//! module contributes exactly the parameters and buffers PyTorch gives it, with PyTorch's shapes,
//! dtypes and memory layouts.

use cnn::ndarray::Array4;
use cnn::{cnn, Model};
use safetensors::{serialize, tensor::TensorView, Dtype, SafeTensors};

cnn! {
    /// The README's network.
    struct TinyNet {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
    /// `nn.Dropout` takes index 2; the implicit flatten takes 3.
    struct WithDropout {
        input(3, 8, 8)
        conv(3 -> 4, k3) relu dropout(0.5) fc(5)
    }
    /// `nn.Identity` is a module too: index 1 before the flatten, 4 after it, so the first
    /// `fc` is module 3 and the second module 5.
    struct WithIdentity {
        input(3, 8, 8)
        conv(3 -> 4, k3) identity fc(5) identity fc(2)
    }
    /// An explicit `flatten` is module 1, and no flatten is inserted before the `fc`.
    struct ExplicitFlatten {
        input(3, 8, 8)
        conv(3 -> 4, k3) flatten fc(5)
    }
    /// `gap` leaves `[C, 1, 1]`, which still needs the implicit flatten.
    struct GapThenFc {
        input(2, 5, 5)
        conv(2 -> 6, k3) gap fc(3)
    }
    /// Only the first `fc` gets a flatten in front of it.
    struct Mlp {
        input(1, 4, 4)
        fc(8) relu fc(2)
    }
    /// `affine=False`: no `weight`/`bias`; the running statistics stay.
    struct BnNoAffine {
        input(3, 6, 6)
        conv(3 -> 4, k3) bn(affine=false) relu
    }
    /// `track_running_stats=False`: no `running_*`, no `num_batches_tracked`.
    struct BnNoRunningStats {
        input(3, 6, 6)
        conv(3 -> 4, k3) bn(track_running_stats=false) relu
    }
    /// Neither: a batch norm without any tensor.
    struct BnBare {
        input(3, 6, 6)
        conv(3 -> 4, k3) bn(affine=false, track_running_stats=false) relu
    }
    /// `bias=False` on conv and linear layers.
    struct NoBias {
        input(3, 6, 6)
        conv(3 -> 4, k3, nobias) flatten linear(16, nobias) fc(2)
    }
    /// Grouped and rectangular kernels: weight `[c_out, c_in / groups, KH, KW]`.
    struct GroupedRect {
        input(4, 9, 9)
        conv(4 -> 8, k(3, 5), g2) bn conv(8 -> 8, k3, g8, nobias)
    }
}

type Entry = (String, Dtype, Vec<usize>);

/// What `to_safetensors` writes, sorted by key: the file's order carries no meaning.
fn written<M: Model>(net: &M) -> Vec<Entry> {
    let bytes = net.to_safetensors();
    let file = SafeTensors::deserialize(&bytes).expect("to_safetensors writes a valid file");
    let mut got: Vec<Entry> = file
        .tensors()
        .into_iter()
        .map(|(key, view)| (key, view.dtype(), view.shape().to_vec()))
        .collect();
    got.sort();
    got
}

fn expect(list: &[(&str, Dtype, &[usize])]) -> Vec<Entry> {
    let mut want: Vec<Entry> = list
        .iter()
        .map(|&(key, dtype, shape)| (key.to_string(), dtype, shape.to_vec()))
        .collect();
    want.sort();
    want
}

fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn test_tiny_net_state_dict() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[16, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[16]),
        ("1.weight", Dtype::F32, &[16]),
        ("1.bias", Dtype::F32, &[16]),
        ("1.running_mean", Dtype::F32, &[16]),
        ("1.running_var", Dtype::F32, &[16]),
        ("1.num_batches_tracked", Dtype::I64, &[]),
        ("5.weight", Dtype::F32, &[10, 4096]),
        ("5.bias", Dtype::F32, &[10]),
    ]);
    assert_eq!(written(&TinyNet::seeded(0)), want);
}

#[test]
fn test_num_batches_tracked_is_an_i64_scalar() {
    let bytes = TinyNet::seeded(0).to_safetensors();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let t = file.tensor("1.num_batches_tracked").unwrap();
    assert_eq!(t.dtype(), Dtype::I64);
    assert!(t.shape().is_empty());
    // A fresh PyTorch module has counted no batches.
    assert_eq!(t.data(), 0i64.to_le_bytes());
}

#[test]
fn test_layer_indices_follow_sequential_positions() {
    let indices = |layers: &[cnn::LayerInfo]| layers.iter().map(|l| l.index).collect::<Vec<_>>();
    assert_eq!(indices(TinyNet::LAYERS), [0, 1, 2, 3, 4, 5]);
    assert_eq!(indices(WithDropout::LAYERS), [0, 1, 2, 3, 4]);
    assert_eq!(indices(WithIdentity::LAYERS), [0, 1, 2, 3, 4, 5]);
    assert_eq!(indices(ExplicitFlatten::LAYERS), [0, 1, 2]);
    assert_eq!(indices(GapThenFc::LAYERS), [0, 1, 2, 3]);
    assert_eq!(indices(Mlp::LAYERS), [0, 1, 2, 3]);
    assert_eq!(TinyNet::LAYERS[4].dsl, "(implicit flatten)");
    assert_eq!(TinyNet::LAYERS[4].torch, "nn.Flatten()");
    assert_eq!(Mlp::LAYERS[0].torch, "nn.Flatten()");
    assert_eq!(Mlp::LAYERS[2].torch, "nn.ReLU()");
}

#[test]
fn test_dropout_takes_an_index() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
        ("4.weight", Dtype::F32, &[5, 4 * 6 * 6]),
        ("4.bias", Dtype::F32, &[5]),
    ]);
    assert_eq!(written(&WithDropout::seeded(0)), want);
}

#[test]
fn test_identity_takes_an_index() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
        ("3.weight", Dtype::F32, &[5, 4 * 6 * 6]),
        ("3.bias", Dtype::F32, &[5]),
        ("5.weight", Dtype::F32, &[2, 5]),
        ("5.bias", Dtype::F32, &[2]),
    ]);
    assert_eq!(written(&WithIdentity::seeded(0)), want);
    let torch: Vec<&str> = WithIdentity::LAYERS.iter().map(|l| l.torch).collect();
    assert_eq!(
        torch,
        [
            "nn.Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))",
            "nn.Identity()",
            "nn.Flatten()",
            "nn.Linear(144, 5)",
            "nn.Identity()",
            "nn.Linear(5, 2)",
        ]
    );
}

#[test]
fn test_explicit_flatten_is_not_doubled() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
        ("2.weight", Dtype::F32, &[5, 4 * 6 * 6]),
        ("2.bias", Dtype::F32, &[5]),
    ]);
    assert_eq!(written(&ExplicitFlatten::seeded(0)), want);
}

#[test]
fn test_implicit_flatten_after_global_pool() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[6, 2, 3, 3]),
        ("0.bias", Dtype::F32, &[6]),
        ("3.weight", Dtype::F32, &[3, 6]),
        ("3.bias", Dtype::F32, &[3]),
    ]);
    assert_eq!(written(&GapThenFc::seeded(0)), want);
}

#[test]
fn test_only_the_first_fc_is_flattened() {
    let want = expect(&[
        ("1.weight", Dtype::F32, &[8, 16]),
        ("1.bias", Dtype::F32, &[8]),
        ("3.weight", Dtype::F32, &[2, 8]),
        ("3.bias", Dtype::F32, &[2]),
    ]);
    assert_eq!(written(&Mlp::seeded(0)), want);
}

#[test]
fn test_bn_affine_false() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
        ("1.running_mean", Dtype::F32, &[4]),
        ("1.running_var", Dtype::F32, &[4]),
        ("1.num_batches_tracked", Dtype::I64, &[]),
    ]);
    assert_eq!(written(&BnNoAffine::seeded(0)), want);
}

#[test]
fn test_bn_track_running_stats_false() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
        ("1.weight", Dtype::F32, &[4]),
        ("1.bias", Dtype::F32, &[4]),
    ]);
    assert_eq!(written(&BnNoRunningStats::seeded(0)), want);
}

#[test]
fn test_bn_without_any_tensor() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("0.bias", Dtype::F32, &[4]),
    ]);
    assert_eq!(written(&BnBare::seeded(0)), want);
}

#[test]
fn test_nobias() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("2.weight", Dtype::F32, &[16, 4 * 4 * 4]),
        ("3.weight", Dtype::F32, &[2, 16]),
        ("3.bias", Dtype::F32, &[2]),
    ]);
    assert_eq!(written(&NoBias::seeded(0)), want);
}

#[test]
fn test_grouped_and_rectangular_weight_shapes() {
    let want = expect(&[
        ("0.weight", Dtype::F32, &[8, 2, 3, 5]),
        ("0.bias", Dtype::F32, &[8]),
        ("1.weight", Dtype::F32, &[8]),
        ("1.bias", Dtype::F32, &[8]),
        ("1.running_mean", Dtype::F32, &[8]),
        ("1.running_var", Dtype::F32, &[8]),
        ("1.num_batches_tracked", Dtype::I64, &[]),
        ("2.weight", Dtype::F32, &[8, 1, 3, 3]),
    ]);
    assert_eq!(written(&GroupedRect::seeded(0)), want);
}

#[test]
fn test_written_file_loads_back_under_the_same_keys() {
    fn check<M: Model + PartialEq>() {
        let net = M::seeded(3);
        assert_eq!(
            M::from_safetensors(&net.to_safetensors()),
            Ok(net),
            "{}",
            M::NAME
        );
    }
    check::<TinyNet>();
    check::<WithDropout>();
    check::<WithIdentity>();
    check::<ExplicitFlatten>();
    check::<GapThenFc>();
    check::<Mlp>();
    check::<BnNoAffine>();
    check::<BnNoRunningStats>();
    check::<BnBare>();
    check::<NoBias>();
    check::<GroupedRect>();
}

cnn! {
    /// One of each weighted layer on a single value, so each key's role shows in the output.
    struct Roles {
        input(1, 1, 1)
        conv(1 -> 1, k1) bn fc(1)
    }
    /// PyTorch's conv weight layout `[c_out, c_in, KH, KW]`, row-major.
    struct ConvLayout {
        input(2, 1, 2)
        conv(2 -> 1, k(1, 2), nobias)
    }
    /// PyTorch's linear weight layout `[out, in]`, and `nn.Flatten`'s C, H, W order.
    struct LinearLayout {
        input(2, 1, 2)
        fc(2, nobias)
    }
}

fn file(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views = tensors.iter().map(|(key, dtype, shape, bytes)| {
        (
            *key,
            TensorView::new(*dtype, shape.to_vec(), bytes).unwrap(),
        )
    });
    serialize(views, None).unwrap()
}

#[test]
fn test_each_key_plays_its_pytorch_role() {
    // conv: y = 2·x + 3; bn: (y − 5) / √(4 + 1e-5) · 3 + 10; fc: 5·z + 7.
    let bytes = file(&[
        ("0.weight", Dtype::F32, &[1, 1, 1, 1], f32_le(&[2.0])),
        ("0.bias", Dtype::F32, &[1], f32_le(&[3.0])),
        ("1.weight", Dtype::F32, &[1], f32_le(&[3.0])),
        ("1.bias", Dtype::F32, &[1], f32_le(&[10.0])),
        ("1.running_mean", Dtype::F32, &[1], f32_le(&[5.0])),
        ("1.running_var", Dtype::F32, &[1], f32_le(&[4.0])),
        (
            "1.num_batches_tracked",
            Dtype::I64,
            &[],
            0i64.to_le_bytes().to_vec(),
        ),
        ("3.weight", Dtype::F32, &[1, 1], f32_le(&[5.0])),
        ("3.bias", Dtype::F32, &[1], f32_le(&[7.0])),
    ]);
    let net = Roles::from_safetensors(&bytes).unwrap();
    // x = 4 normalises to 3, so swapping weight and bias, or mean and variance, shows.
    let x = 4.0f64;
    let y = 2.0 * x + 3.0;
    let z = (y - 5.0) / (4.0 + 1e-5f64).sqrt() * 3.0 + 10.0;
    let want = 5.0 * z + 7.0;
    let got = net.forward(&[[[x as f32]]])[0] as f64;
    assert!((got - want).abs() < 1e-4, "got {got}, expected {want}");
}

#[test]
fn test_conv_weight_layout() {
    let bytes = file(&[(
        "0.weight",
        Dtype::F32,
        &[1, 2, 1, 2],
        f32_le(&[1.0, 10.0, 100.0, 1000.0]),
    )]);
    let net = ConvLayout::from_safetensors(&bytes).unwrap();
    // Σ weight[0, c, 0, j] · x[c, 0, j] with x = [[1, 2]], [[3, 4]].
    let out = net.forward(&[[[1.0, 2.0]], [[3.0, 4.0]]]);
    assert_eq!(out[0][0][0], 1.0 + 20.0 + 300.0 + 4000.0);
}

#[test]
fn test_linear_weight_layout_and_flatten_order() {
    let bytes = file(&[(
        "1.weight",
        Dtype::F32,
        &[2, 4],
        f32_le(&[1.0, 10.0, 100.0, 1000.0, 0.0, 0.0, 0.0, 1.0]),
    )]);
    let net = LinearLayout::from_safetensors(&bytes).unwrap();
    // Flattened x = [1, 2, 3, 4] (C, H, W order); out = weight · x.
    assert_eq!(
        net.forward(&[[[1.0, 2.0]], [[3.0, 4.0]]]),
        [1.0 + 20.0 + 300.0 + 4000.0, 4.0]
    );
    let batch = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let out = net.forward_batch(batch.view()).unwrap();
    assert_eq!(out.as_slice().unwrap(), [4321.0, 4.0]);
}
