use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        residual(skip { conv(8 -> 8, k1) }) { conv(8 -> 8, k1) }
    }
}

fn main() {}
