use cnn::cnn;

cnn! {
    pub struct Net {
        input(16, 8, 8)
        residual { conv(16 -> 32, k3, p1) bn } relu
    }
}

fn main() {}
