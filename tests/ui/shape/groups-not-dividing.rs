use cnn::cnn;

cnn! {
    struct Net {
        input(6, 16, 16)
        conv(6 -> 16, k3, g4)
    }
}

fn main() {}
