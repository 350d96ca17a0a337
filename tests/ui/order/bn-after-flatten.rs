use cnn::cnn;

cnn! {
    struct Net {
        input(3, 8, 8)
        flatten bn relu
    }
}

fn main() {}
