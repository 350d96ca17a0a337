use cnn::cnn;

cnn! {
    struct Net {
        conv(3 -> 16, k3)
        input(3, 32, 32)
    }
}

fn main() {}
