//! Every layer, alias and argument form the DSL documents, in one invocation.

use cnn::{cnn, Model};

cnn! {
    /// Shorthand arguments, whitespace-separated.
    #[allow(dead_code)]
    pub struct Shorthand {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2)
        conv(16 -> 16, k(3, 5), s(2, 1), p(1, 2), d(1, 1), g4, nobias) bn(16) leakyrelu(0.2)
        conv(16 -> 8, k1) sigmoid conv(8 -> 8, k3, d2, p2) tanh swish silu gelu
        relu6 hardswish hard_swish hardsigmoid hard_sigmoid identity
        avgpool(k3, s2, p1, ceil) maxpool(k2, s1, p1) gap flatten dropout(0.5) fc(8 -> 4, nobias) linear(3) softmax
    }

    /// PyTorch keyword arguments, comma-separated, with written-out defaults.
    pub(crate) struct Keywords {
        input(2, 16, 12),
        conv2d(2 -> 8, kernel_size=3, stride=1, padding=1, dilation=1, groups=1, bias=false),
        batchnorm(num_features=8, eps=1e-3, momentum=0.01, affine=false, track_running_stats=true),
        leaky_relu(negative_slope=0.1),
        maxpool(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=false),
        avgpool(kernel_size=2, stride=1, padding=1, ceil_mode=true, count_include_pad=false),
        globalmaxpool,
        dense(out_features=6, bias=true),
        dropout(p=0.2),
        relu6(),
        identity(),
    }

    /// Positional arguments in PyTorch's order, and a feature-map output.
    struct Positional {
        input(4, 9, 9)
        conv(4 -> 4, 3, 1, 1, 1, 2, true) bn(4, 1e-5, 0.1, true, false) maxpool(3, 1, 1) avgpool(2, 2, 0) gmp
    }
}

fn main() {
    let _ = Shorthand::seeded(0).forward(&[[[0.0; 32]; 32]; 3]);
    let _: [f32; 6] = Keywords::seeded(0).forward(&[[[0.0; 12]; 16]; 2]);
    let map: Box<[[[f32; 1]; 1]; 4]> = Positional::seeded(0).forward(&[[[0.0; 9]; 9]; 4]);
    assert_eq!(map.len(), 4);
}
