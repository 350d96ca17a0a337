use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        upsample(2, align_corners=false)
    }
}

fn main() {}
