use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        dropout(1.5)
    }
}

fn main() {}
