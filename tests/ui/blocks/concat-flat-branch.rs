use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        concat { branch { conv(8 -> 4, k1) } branch { fc(10) } }
    }
}

fn main() {}
