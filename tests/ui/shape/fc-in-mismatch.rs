use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) maxpool(2) fc(1024 -> 10)
    }
}

fn main() {}
