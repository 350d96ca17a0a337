use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k99999999999999999999999)
    }
}

fn main() {}
