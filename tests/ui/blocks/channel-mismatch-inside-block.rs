use cnn::cnn;

cnn! {
    pub struct Net {
        input(16, 8, 8)
        conv(16 -> 16, k3, p1) relu
        residual { conv(16 -> 16, k3, p1) bn relu conv(32 -> 16, k3, p1) bn } relu
    }
}

fn main() {}
