use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 8, 8)
        residual(shortcut { conv(8 -> 16, k1) bn(8) }) { conv(8 -> 16, k3, p1) bn }
    }
}

fn main() {}
