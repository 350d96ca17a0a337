//! Compile-time facts about a network: input and output shapes, every layer's output shape,
//! parameter counts (`sum(p.numel() for p in model.parameters())`), multiply-accumulates, the
//! PyTorch twin and the printed summary. Expected values are worked out by hand from PyTorch's
//! rules: `out = floor((in + 2p − d·(k − 1) − 1) / s) + 1` (`ceil` with `ceil_mode`, dropping a
//! last window that would start in the right padding), conv weight `[c_out, c_in / g, KH, KW]`,
//! conv MACs `c_out·OH·OW · c_in / g·KH·KW`, linear MACs `in·out`.

use cnn::ndarray::Array4;
use cnn::{cnn, LayerInfo, Model};

cnn! {
    /// The README's network.
    struct TinyNet {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
    struct CeilPool {
        input(1, 5, 5)
        maxpool(k2, s2, ceil)
    }
    struct FloorPool {
        input(1, 5, 5)
        maxpool(k2, s2)
    }
    /// ceil_mode would give 2, but the second window would start in the right padding.
    struct CeilDropsLastWindow {
        input(1, 1, 1)
        maxpool(k2, s2, p1, ceil)
    }
    struct CeilAvg {
        input(1, 1, 5)
        avgpool(k(1, 2), s(1, 2), ceil)
    }
    /// The first two layers of the PyTorch `pooling` fixture.
    struct CeilStack {
        input(3, 37, 35)
        maxpool(k3, s2, p1, ceil) avgpool(k3, s2, p1, ceil)
    }
    struct Dilated {
        input(2, 10, 9)
        conv(2 -> 4, k3, d2) conv(4 -> 4, k3, d(2, 1), p1)
    }
    struct Rect {
        input(3, 7, 11)
        conv(3 -> 5, k(3, 5), s(2, 1), p(1, 2)) maxpool(k(2, 3), s(2, 3))
    }
    struct Grouped {
        input(8, 6, 6)
        conv(8 -> 16, k3, p1, g4) conv(16 -> 16, k3, g16, nobias) gap fc(10)
    }
    struct BatchNorms {
        input(4, 5, 5)
        bn(affine=false) bn(track_running_stats=false) bn
    }
    struct Mlp {
        input(1, 6, 6)
        flatten dropout(0.2) fc(36 -> 32, nobias) sigmoid fc(32 -> 16) softmax
    }
    /// The hard activations and `identity` keep the shape, on a feature map and after `fc`.
    struct HardActs {
        input(4, 6, 6)
        conv(4 -> 8, k1) relu6 identity hardswish gap identity hard_sigmoid
        fc(3) identity relu6 hard_swish hardsigmoid
    }
}

/// `(index, output shape, params, macs)` of each layer.
fn table(layers: &[LayerInfo]) -> Vec<(usize, Vec<usize>, usize, usize)> {
    layers
        .iter()
        .map(|l| (l.index, l.output.to_vec(), l.params, l.macs))
        .collect()
}

fn rows(list: &[(usize, &[usize], usize, usize)]) -> Vec<(usize, Vec<usize>, usize, usize)> {
    list.iter()
        .map(|&(i, shape, params, macs)| (i, shape.to_vec(), params, macs))
        .collect()
}

#[test]
fn test_tiny_net() {
    assert_eq!(TinyNet::NAME, "TinyNet");
    assert_eq!(TinyNet::INPUT_SHAPE, [3, 32, 32]);
    assert_eq!(TinyNet::OUTPUT_SHAPE, [10]);
    // conv 16·3·3·3 + 16, bn 2·16, fc 4096·10 + 10.
    assert_eq!(TinyNet::PARAMS, 448 + 32 + 40970);
    // conv 16·32·32 · 27, fc 4096·10.
    assert_eq!(TinyNet::MACS, 442_368 + 40_960);
    assert_eq!(
        table(TinyNet::LAYERS),
        rows(&[
            (0, &[16, 32, 32], 448, 442_368),
            (1, &[16, 32, 32], 32, 0),
            (2, &[16, 32, 32], 0, 0),
            (3, &[16, 16, 16], 0, 0),
            (4, &[4096], 0, 0),
            (5, &[10], 40970, 40_960),
        ])
    );
    let dsl: Vec<&str> = TinyNet::LAYERS.iter().map(|l| l.dsl).collect();
    assert_eq!(
        dsl,
        [
            "conv(3 -> 16, k3, p1)",
            "bn",
            "relu",
            "maxpool(2)",
            "(implicit flatten)",
            "fc(10)"
        ]
    );
}

#[test]
fn test_consts_are_usable_in_const_context() {
    const PARAMS: usize = TinyNet::PARAMS;
    const K: usize = TinyNet::OUTPUT_SHAPE[0];
    let logits = [0.0f32; K];
    assert_eq!(logits.len(), 10);
    assert_eq!(PARAMS, 41450);
}

#[test]
fn test_ceil_mode_pooling() {
    // floor((5 − 2) / 2) + 1 = 2; ceil gives 3.
    assert_eq!(FloorPool::OUTPUT_SHAPE, [1, 2, 2]);
    assert_eq!(CeilPool::OUTPUT_SHAPE, [1, 3, 3]);
    // ceil((1 + 2 − 2) / 2) + 1 = 2, but window 1 starts at 2 ≥ 1 + 1: dropped.
    assert_eq!(CeilDropsLastWindow::OUTPUT_SHAPE, [1, 1, 1]);
    assert_eq!(CeilAvg::OUTPUT_SHAPE, [1, 1, 3]);
    // PyTorch: [3, 19, 18], then [3, 10, 10].
    assert_eq!(
        table(CeilStack::LAYERS),
        rows(&[(0, &[3, 19, 18], 0, 0), (1, &[3, 10, 10], 0, 0)])
    );
}

#[test]
fn test_ceil_mode_pooling_values() {
    let x = Array4::from_shape_vec((1, 1, 5, 5), (0..25).map(|v| v as f32).collect()).unwrap();
    let out = CeilPool::seeded(0).forward_batch(x.view()).unwrap();
    // The windows of the last row and column hold only the input's edge.
    let want = [6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0];
    assert_eq!(out.as_slice().unwrap(), want);

    // The padding never wins a max.
    let out = CeilDropsLastWindow::seeded(0).forward(&[[[-3.0]]]);
    assert_eq!(*out, [[[-3.0]]]);

    // A clipped ceil_mode window divides by the positions inside the input: 4 / 1.
    let out = CeilAvg::seeded(0).forward(&[[[0.0, 1.0, 2.0, 3.0, 4.0]]]);
    assert_eq!(*out, [[[0.5, 2.5, 4.0]]]);
}

#[test]
fn test_dilation() {
    // d2: effective kernel 5; 10 − 5 + 1 = 6, 9 − 5 + 1 = 5.
    // d(2, 1), p1: 6 + 2 − 4 − 1 + 1 = 4, 5 + 2 − 2 − 1 + 1 = 5.
    assert_eq!(Dilated::INPUT_SHAPE, [2, 10, 9]);
    assert_eq!(Dilated::OUTPUT_SHAPE, [4, 4, 5]);
    assert_eq!(
        table(Dilated::LAYERS),
        rows(&[
            (0, &[4, 6, 5], 4 * 2 * 9 + 4, 4 * 6 * 5 * 18),
            (1, &[4, 4, 5], 4 * 4 * 9 + 4, 4 * 4 * 5 * 36),
        ])
    );
    assert_eq!(Dilated::PARAMS, 76 + 148);
    assert_eq!(Dilated::MACS, 2160 + 2880);
}

#[test]
fn test_rectangular_kernels() {
    // (7 + 2 − 3) / 2 + 1 = 4, 11 + 4 − 5 + 1 = 11; then (4 − 2) / 2 + 1 = 2, (11 − 3) / 3 + 1 = 3.
    assert_eq!(
        table(Rect::LAYERS),
        rows(&[
            (0, &[5, 4, 11], 5 * 3 * 15 + 5, 5 * 4 * 11 * 45),
            (1, &[5, 2, 3], 0, 0),
        ])
    );
    assert_eq!(Rect::OUTPUT_SHAPE, [5, 2, 3]);
    assert_eq!(Rect::PARAMS, 230);
    assert_eq!(Rect::MACS, 9900);
}

#[test]
fn test_groups() {
    assert_eq!(
        table(Grouped::LAYERS),
        rows(&[
            (0, &[16, 6, 6], 16 * 2 * 9 + 16, 16 * 36 * 18),
            (1, &[16, 4, 4], 16 * 9, 16 * 16 * 9),
            (2, &[16, 1, 1], 0, 0),
            (3, &[16], 0, 0),
            (4, &[10], 16 * 10 + 10, 160),
        ])
    );
    assert_eq!(Grouped::OUTPUT_SHAPE, [10]);
    assert_eq!(Grouped::PARAMS, 304 + 144 + 170);
    assert_eq!(Grouped::MACS, 10368 + 2304 + 160);
}

#[test]
fn test_batch_norm_parameters() {
    // Only affine batch norms have parameters; running statistics are buffers.
    assert_eq!(
        table(BatchNorms::LAYERS),
        rows(&[
            (0, &[4, 5, 5], 0, 0),
            (1, &[4, 5, 5], 8, 0),
            (2, &[4, 5, 5], 8, 0),
        ])
    );
    assert_eq!(BatchNorms::OUTPUT_SHAPE, [4, 5, 5]);
    assert_eq!(BatchNorms::PARAMS, 16);
    assert_eq!(BatchNorms::MACS, 0);
}

#[test]
fn test_flat_network() {
    assert_eq!(
        table(Mlp::LAYERS),
        rows(&[
            (0, &[36], 0, 0),
            (1, &[36], 0, 0),
            (2, &[32], 36 * 32, 36 * 32),
            (3, &[32], 0, 0),
            (4, &[16], 32 * 16 + 16, 32 * 16),
            (5, &[16], 0, 0),
        ])
    );
    assert_eq!(Mlp::PARAMS, 1152 + 528);
    assert_eq!(Mlp::MACS, 1152 + 512);
}

#[test]
fn test_hard_activations_and_identity_keep_the_shape() {
    assert_eq!(
        table(HardActs::LAYERS),
        rows(&[
            (0, &[8, 6, 6], 40, 8 * 36 * 4),
            (1, &[8, 6, 6], 0, 0),
            (2, &[8, 6, 6], 0, 0),
            (3, &[8, 6, 6], 0, 0),
            (4, &[8, 1, 1], 0, 0),
            (5, &[8, 1, 1], 0, 0),
            (6, &[8, 1, 1], 0, 0),
            (7, &[8], 0, 0),
            (8, &[3], 27, 24),
            (9, &[3], 0, 0),
            (10, &[3], 0, 0),
            (11, &[3], 0, 0),
            (12, &[3], 0, 0),
        ])
    );
    assert_eq!(HardActs::OUTPUT_SHAPE, [3]);
    in_order(
        HardActs::TORCH,
        &[
            "nn.Conv2d(4, 8, kernel_size=(1, 1), stride=(1, 1))",
            "nn.ReLU6()",
            "nn.Identity()",
            "nn.Hardswish()",
            "nn.AdaptiveAvgPool2d(1)",
            "nn.Identity()",
            "nn.Hardsigmoid()",
            "nn.Flatten()",
            "nn.Linear(8, 3)",
            "nn.Identity()",
            "nn.ReLU6()",
            "nn.Hardswish()",
            "nn.Hardsigmoid()",
        ],
    );
    let summary = HardActs::seeded(0).summary().to_string();
    for (key, layer, torch) in [
        ("1", "relu6", "nn.ReLU6()"),
        ("2", "identity", "nn.Identity()"),
        ("6", "hard_sigmoid", "nn.Hardsigmoid()"),
        ("9", "identity", "nn.Identity()"),
        ("11", "hard_swish", "nn.Hardswish()"),
    ] {
        let row: Vec<&str> = summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no row {key} in\n{summary}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[1..3], [layer, torch], "{summary}");
    }
}

#[test]
fn test_layer_params_sum_to_params() {
    fn check<M: Model>() {
        let params: usize = M::LAYERS.iter().map(|l| l.params).sum();
        let macs: usize = M::LAYERS.iter().map(|l| l.macs).sum();
        assert_eq!((params, macs), (M::PARAMS, M::MACS), "{}", M::NAME);
        assert_eq!(
            M::LAYERS.last().unwrap().output,
            M::OUTPUT_SHAPE,
            "{}",
            M::NAME
        );
    }
    check::<TinyNet>();
    check::<CeilStack>();
    check::<Dilated>();
    check::<Rect>();
    check::<Grouped>();
    check::<BatchNorms>();
    check::<Mlp>();
    check::<HardActs>();
}

/// Asserts that `parts` occur in `text` in this order.
fn in_order(text: &str, parts: &[&str]) {
    let mut rest = text;
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => panic!("{part:?} missing or out of order in\n{text}"),
        }
    }
}

#[test]
fn test_torch_twin() {
    let torch = TinyNet::TORCH;
    assert!(torch.starts_with("nn.Sequential("), "{torch}");
    assert!(torch.trim_end().ends_with(')'), "{torch}");
    in_order(
        torch,
        &[
            "nn.Conv2d(3, 16, kernel_size=(3, 3)",
            "padding=(1, 1)",
            "nn.BatchNorm2d(16",
            "nn.ReLU()",
            "nn.MaxPool2d(kernel_size=(2, 2), stride=(2, 2)",
            "nn.Flatten()",
            "nn.Linear(4096, 10)",
        ],
    );
    assert_eq!(torch.matches("nn.").count(), 1 + TinyNet::LAYERS.len());
    for l in TinyNet::LAYERS {
        assert!(torch.contains(l.torch), "{} not in\n{torch}", l.torch);
    }
}

#[test]
fn test_torch_twin_geometry() {
    in_order(
        Grouped::TORCH,
        &[
            "nn.Conv2d(8, 16, kernel_size=(3, 3)",
            "groups=4",
            "nn.Conv2d(16, 16, kernel_size=(3, 3)",
            "groups=16, bias=False",
            "nn.AdaptiveAvgPool2d(1)",
            "nn.Flatten()",
            "nn.Linear(16, 10)",
        ],
    );
    in_order(
        Rect::TORCH,
        &[
            "nn.Conv2d(3, 5, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2))",
            "nn.MaxPool2d(kernel_size=(2, 3), stride=(2, 3)",
        ],
    );
    in_order(Dilated::TORCH, &["dilation=(2, 2)", "dilation=(2, 1)"]);
    assert!(
        CeilPool::TORCH.contains("ceil_mode=True"),
        "{}",
        CeilPool::TORCH
    );
    assert!(
        FloorPool::TORCH.contains("ceil_mode=False"),
        "{}",
        FloorPool::TORCH
    );
    in_order(
        BatchNorms::TORCH,
        &[
            "affine=False, track_running_stats=True",
            "affine=True, track_running_stats=False",
            "affine=True, track_running_stats=True",
        ],
    );
    in_order(
        Mlp::TORCH,
        &[
            "nn.Flatten()",
            "nn.Dropout(p=0.2)",
            "nn.Linear(36, 32, bias=False)",
            "nn.Sigmoid()",
            "nn.Linear(32, 16)",
            "nn.Softmax(dim=1)",
        ],
    );
}

#[test]
fn test_summary() {
    let text = TinyNet::seeded(0).summary().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("TinyNet"), "{text}");
    assert!(lines[0].contains("[3, 32, 32]"), "{text}");
    // (key, layer, output, params, macs)
    let want: [(&str, &str, &str, &str, &str); 6] = [
        (
            "0",
            "conv(3 -> 16, k3, p1)",
            "[16, 32, 32]",
            "448",
            "442368",
        ),
        ("1", "bn", "[16, 32, 32]", "32", "0"),
        ("2", "relu", "[16, 32, 32]", "0", "0"),
        ("3", "maxpool(2)", "[16, 16, 16]", "0", "0"),
        ("4", "(implicit flatten)", "[4096]", "0", "0"),
        ("5", "fc(10)", "[10]", "40970", "40960"),
    ];
    let mut previous = 0;
    for (key, layer, output, params, macs) in want {
        let (at, line) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.split_whitespace().next() == Some(key) && l.contains(layer))
            .unwrap_or_else(|| panic!("no row for {key} {layer} in\n{text}"));
        assert!(at > previous, "row {key} out of order in\n{text}");
        previous = at;
        assert!(line.contains(output), "{line}");
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[cells.len() - 2..], [params, macs], "{line}");
    }
    assert!(
        lines[0..].iter().any(|l| l.contains("nn.Linear(4096, 10)")),
        "{text}"
    );
    let total = lines[lines.len() - 2];
    assert!(
        total.contains("41450") && total.contains("parameters"),
        "{text}"
    );
    assert!(total.contains("483328"), "{text}");
    // The footer's last line: the RAM and flash figures (tests/test_budget.rs checks them).
    let last = lines.last().unwrap();
    let ram = format!("RAM: {} bytes", TinyNet::RAM_BYTES);
    assert!(last.starts_with(&ram), "{text}");
    let flash = format!("flash: about {} bytes", TinyNet::FLASH_BYTES);
    assert!(last.contains(&flash), "{text}");
}
