//! `forward_into`: caller-provided output and workspace, same numbers as `forward_batch`.

use cnn::ndarray::{Array2, Array4, ShapeBuilder};
use cnn::{cnn, Error, Model, Workspace};

cnn! {
    struct Net {
        input(3, 12, 12)
        conv(3 -> 8, k3, p1) bn relu maxpool(2) conv(8 -> 16, k3, s2) relu fc(5)
    }
    struct Map {
        input(2, 6, 6)
        conv(2 -> 4, k1) relu
    }
}

fn batch(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, 12, 12), |(a, b, c, d)| {
        ((a * 7 + b * 5 + c * 3 + d) % 11) as f32 / 5.0 - 1.0
    })
}

#[test]
fn forward_into_matches_forward_batch_for_every_batch_size() {
    let net = Net::seeded(1);
    let mut ws = Workspace::new(Net::WORKSPACE);
    for n in [0, 1, 5, 8, 9, 20] {
        let x = batch(n);
        let mut out = Array2::<f32>::zeros((n, 5));
        net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
        assert_eq!(out, net.forward_batch(x.view()).unwrap(), "n = {n}");
    }
}

#[test]
fn forward_into_writes_strided_outputs() {
    let net = Net::seeded(2);
    let x = batch(10);
    let mut out = Array2::<f32>::zeros((10, 5).f());
    net.forward_into(x.view(), out.view_mut(), &mut Workspace::default())
        .unwrap();
    assert_eq!(out, net.forward_batch(x.view()).unwrap());
}

#[test]
fn forward_into_rejects_a_wrong_output_shape() {
    let net = Net::seeded(3);
    let mut out = Array2::<f32>::zeros((4, 6));
    assert_eq!(
        net.forward_into(batch(4).view(), out.view_mut(), &mut Workspace::default()),
        Err(Error::OutputShape {
            expected: vec![4, 5],
            found: vec![4, 6]
        })
    );
    let mut out = Array2::<f32>::zeros((3, 5));
    assert!(matches!(
        net.forward_into(batch(4).view(), out.view_mut(), &mut Workspace::default()),
        Err(Error::OutputShape { .. })
    ));
}

#[test]
fn the_workspace_holds_what_the_plan_needs() {
    // Largest activation: conv(3 -> 8) on 12x12 = 1152; scratch: im2col of the same conv,
    // 3·3·3 × 12·12 = 3888 (the second conv: 8·9 × 5·5 = 1800; the 1x1 conv of Map needs none).
    assert_eq!(Net::WORKSPACE.activations, 8 * 12 * 12);
    assert_eq!(Net::WORKSPACE.scratch, 27 * 144);
    assert_eq!(Net::WORKSPACE.channels, 16);
    assert_eq!(Net::WORKSPACE_BYTES, 4 * (2 * 8 * 1152 + 3888 + 2 * 16));
    assert_eq!(Map::WORKSPACE.scratch, 0);
    let ws = Workspace::new(Net::WORKSPACE);
    assert!(ws.capacity_bytes() >= Net::WORKSPACE_BYTES);
}
