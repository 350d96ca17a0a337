use cnn::cnn;

cnn! {
    struct Net {
        conv(3 -> 16, k3) relu
    }
}

fn main() {}
