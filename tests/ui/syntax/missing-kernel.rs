use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, s2)
    }
}

fn main() {}
