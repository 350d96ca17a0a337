use cnn::cnn;

cnn! {
    struct Net {
        input(1, 28, 28)
        conv(1 -> 6, k5) maxpool(2) conv(6 -> 16, k5) maxpool(2) conv(16 -> 32, k5)
    }
}

fn main() {}
