use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) relu conv(8 -> 32, k3)
    }
}

fn main() {}
