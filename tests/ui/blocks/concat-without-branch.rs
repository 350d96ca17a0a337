use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        concat { conv(8 -> 4, k1) branch {} }
    }
}

fn main() {}
