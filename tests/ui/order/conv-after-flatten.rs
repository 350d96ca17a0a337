use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) fc(64) conv(64 -> 8, k3)
    }
}

fn main() {}
