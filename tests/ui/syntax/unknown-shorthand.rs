use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, q3)
    }
}

fn main() {}
