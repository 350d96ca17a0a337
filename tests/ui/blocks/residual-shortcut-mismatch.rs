use cnn::cnn;

cnn! {
    pub struct Net {
        input(16, 8, 8)
        residual(shortcut { conv(16 -> 32, k1) bn }) { conv(16 -> 32, k3, s2, p1) bn } relu
    }
}

fn main() {}
