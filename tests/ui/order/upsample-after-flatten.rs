use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        flatten upsample(2)
    }
}

fn main() {}
