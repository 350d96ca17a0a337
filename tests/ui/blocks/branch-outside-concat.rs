use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        branch { conv(8 -> 4, k1) }
    }
}

fn main() {}
