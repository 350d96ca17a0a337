use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        upsample(scale_factor=(2, 0))
    }
}

fn main() {}
