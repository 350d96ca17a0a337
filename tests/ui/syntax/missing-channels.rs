use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(k3)
    }
}

fn main() {}
