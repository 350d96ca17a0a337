use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        upsample(2, mode=bicubic)
    }
}

fn main() {}
