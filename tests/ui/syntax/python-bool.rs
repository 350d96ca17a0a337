use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, bias=False)
    }
}

fn main() {}
