use cnn::cnn;

cnn! {
    struct Net {
        input(32, 32)
        relu
    }
}

fn main() {}
