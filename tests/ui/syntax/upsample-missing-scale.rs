use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        upsample(mode=bilinear)
    }
}

fn main() {}
