use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 16, 16)
        concat { branch { conv(8 -> 4, k1) } branch { maxpool(2) conv(8 -> 4, k1) } branch {} }
    }
}

fn main() {}
