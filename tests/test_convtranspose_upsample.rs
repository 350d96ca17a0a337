//! `convtranspose` and `upsample` end to end: shapes, summary rows, seeded initialisation,
//! the safetensors round trip, fusion, and `forward_into` with the planned workspace.

use cnn::ndarray::{Array4, Axis};
use cnn::{cnn, Model, Workspace};

cnn! {
    /// A small decoder: a fused convtranspose + bn + relu, bilinear and nearest upsampling, and
    /// a convtranspose without bias.
    struct Decoder {
        input(4, 5, 6)
        convtranspose(4 -> 8, k3, s2, p1, output_padding=1) bn relu
        upsample((2, 1), mode=bilinear) convt(8 -> 2, k2, s2, nobias) upsample(2)
    }
    /// The same layers with an identity between convtranspose and bn: nothing fused.
    struct Unfused {
        input(4, 5, 6)
        convtranspose(4 -> 8, k3, s2, p1, output_padding=1) identity bn relu
        upsample((2, 1), mode=bilinear) convt(8 -> 2, k2, s2, nobias) upsample(2)
    }
}

fn batch(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 4, 5, 6), |(a, b, c, d)| {
        ((a * 7 + b * 5 + c * 3 + d) % 11) as f32 / 5.0 - 1.0
    })
}

#[test]
fn shapes_params_and_macs_follow_pytorch() {
    let outputs: Vec<&[usize]> = Decoder::LAYERS.iter().map(|l| l.output).collect();
    assert_eq!(
        outputs,
        [
            &[8, 10, 12][..],
            &[8, 10, 12],
            &[8, 10, 12],
            &[8, 20, 12],
            &[2, 40, 24],
            &[2, 80, 48]
        ]
    );
    assert_eq!(Decoder::OUTPUT_SHAPE, [2, 80, 48]);
    // weight [IN, OUT/g, KH, KW] + bias; every input value feeds OUT/g·KH·KW outputs
    assert_eq!(Decoder::LAYERS[0].params, 4 * 8 * 9 + 8);
    assert_eq!(Decoder::LAYERS[0].macs, 4 * 5 * 6 * 8 * 9);
    assert_eq!(Decoder::LAYERS[4].params, 8 * 2 * 4);
    assert_eq!(Decoder::LAYERS[4].macs, 8 * 20 * 12 * 2 * 4);
    assert_eq!((Decoder::LAYERS[3].params, Decoder::LAYERS[3].macs), (0, 0));
    assert_eq!(Decoder::PARAMS, 296 + 16 + 64);
    assert_eq!(
        Decoder::LAYERS[0].torch,
        "nn.ConvTranspose2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))"
    );
    assert_eq!(
        Decoder::LAYERS[3].torch,
        "nn.Upsample(scale_factor=(2.0, 1.0), mode='bilinear', align_corners=False)"
    );
    assert_eq!(
        Decoder::LAYERS[5].torch,
        "nn.Upsample(scale_factor=2.0, mode='nearest')"
    );
}

#[test]
fn seeded_weights_use_pytorchs_fan_in_and_round_trip() {
    let net = Decoder::seeded(3);
    let bytes = net.to_safetensors();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("0.weight").unwrap();
    assert_eq!(w.shape(), [4, 8, 3, 3]);
    // fan_in = weight.size(1)·KH·KW = 8·9
    let bound = 1.0 / 72f32.sqrt();
    let values: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(values.iter().all(|v| v.abs() <= bound));
    assert!(values.iter().any(|v| v.abs() > bound / 2.0));
    assert_eq!(st.tensor("0.bias").unwrap().shape(), [8]);
    assert_eq!(st.tensor("4.weight").unwrap().shape(), [8, 2, 2, 2]);
    assert!(st.tensor("4.bias").is_err());
    assert_eq!(Decoder::from_safetensors(&bytes).unwrap(), net);
}

#[test]
fn fused_and_unfused_give_the_same_numbers() {
    let fused = Decoder::seeded(5);
    let unfused = Unfused::from_safetensors(&{
        // the same tensors, with the bn and later layers one index higher
        let net = Decoder::seeded(5).to_safetensors();
        let st = safetensors::SafeTensors::deserialize(&net).unwrap();
        let mut out = Vec::new();
        for (name, t) in st.tensors() {
            let (i, rest) = name.split_once('.').unwrap();
            let i: usize = i.parse().unwrap();
            let i = if i == 0 { 0 } else { i + 1 };
            out.push((format!("{i}.{rest}"), t));
        }
        safetensors::serialize(out, None).unwrap()
    })
    .unwrap();
    let x = batch(3);
    let a = fused.forward_batch(x.view()).unwrap();
    let b = unfused.forward_batch(x.view()).unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn forward_into_matches_forward_batch_and_forward() {
    let net = Decoder::seeded(1);
    let mut ws = Workspace::new(Decoder::WORKSPACE);
    for n in [0, 1, 4, 9] {
        let x = batch(n);
        let mut out = Array4::<f32>::zeros((n, 2, 80, 48));
        net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
        let whole = net.forward_batch(x.view()).unwrap();
        assert_eq!(out, whole, "n = {n}");
        for (i, sample) in x.axis_iter(Axis(0)).enumerate() {
            let mut arr = [[[0.0f32; 6]; 5]; 4];
            for ((c, h, w), v) in sample.indexed_iter() {
                arr[c][h][w] = *v;
            }
            let one = net.forward(&arr);
            let row = whole.index_axis(Axis(0), i);
            let flat: Vec<f32> = one.iter().flatten().flatten().copied().collect();
            assert_eq!(flat, row.iter().copied().collect::<Vec<_>>());
        }
    }
}

#[test]
fn the_workspace_holds_what_the_plan_needs() {
    // activations: [2, 40, 24] = [8, 20, 12] = 1920; scratch: the first convtranspose's
    // transposed weight 4·72 and cols 72·30 (the second: 64 + 8·240 = 1984); channels: 8
    assert_eq!(Decoder::WORKSPACE.activations, 2 * 80 * 48);
    assert_eq!(Decoder::WORKSPACE.scratch, 4 * 72 + 72 * 30);
    assert_eq!(Decoder::WORKSPACE.channels, 8);
}
