//! `forward_into`: caller-provided output and workspace, same numbers as `forward_batch`.

use cnn::ndarray::{Array2, Array4, Ix2, ShapeBuilder};
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
    /// Winograd, depthwise, im2col with groups and a transposed convolution: every kernel's
    /// own scratch.
    struct Kernels {
        input(16, 9, 9)
        conv(16 -> 24, k3, p1) bn relu conv(24 -> 24, k3, p1, g24) relu6
        conv(24 -> 12, k3, s2, g3) convt(12 -> 6, k3, s2, p1, output_padding=1) gap fc(3)
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

/// A workspace built from `WORKSPACE` is enough: `forward_into` never grows it, for batches
/// below, at and past a chunk, so an undersized layout (scratch, activations, batch-norm
/// coefficients) fails here. The sizes are not retyped from the kernels' formulas.
#[test]
fn the_workspace_holds_what_the_plan_needs() {
    fn never_grows<M: Model<Dim = Ix2>>(net: &M, chw: [usize; 3], features: usize) {
        let mut ws = Workspace::new(M::WORKSPACE);
        let before = ws.capacity_bytes();
        assert!(before >= M::WORKSPACE_BYTES);
        for n in [1, 3, 8, 9, 20] {
            let x = Array4::from_shape_fn((n, chw[0], chw[1], chw[2]), |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) % 11) as f32 / 5.0 - 1.0
            });
            let mut out = Array2::<f32>::zeros((n, features));
            net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
            assert_eq!(ws.capacity_bytes(), before, "grew at n = {n}");
            assert_eq!(out, net.forward_batch(x.view()).unwrap(), "n = {n}");
        }
    }
    never_grows(&Net::seeded(4), [3, 12, 12], 5);
    let map = Map::seeded(5);
    let mut ws = Workspace::new(Map::WORKSPACE);
    let before = ws.capacity_bytes();
    for n in [1, 9] {
        let x = Array4::from_shape_fn((n, 2, 6, 6), |(a, b, c, d)| (a + b + c * d) as f32);
        let mut out = Array4::<f32>::zeros((n, 4, 6, 6));
        map.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
        assert_eq!(ws.capacity_bytes(), before, "Map grew at n = {n}");
        assert_eq!(out, map.forward_batch(x.view()).unwrap());
    }
    never_grows(&Kernels::seeded(6), [16, 9, 9], 3);
    // The largest activation of one sample is the plan's: conv(3 -> 8) on 12×12.
    assert_eq!(Net::WORKSPACE.activations, 8 * 12 * 12);
}
