use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        relu(0.5)
    }
}

fn main() {}
