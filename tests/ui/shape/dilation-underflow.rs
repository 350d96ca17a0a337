use cnn::cnn;

cnn! {
    struct Net {
        input(3, 8, 8)
        conv(3 -> 4, k3, d4)
    }
}

fn main() {}
