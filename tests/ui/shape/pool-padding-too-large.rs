use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        maxpool(k3, s2, p2)
    }
}

fn main() {}
