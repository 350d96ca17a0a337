use cnn::cnn;

cnn! {
    struct Net {
        input(3, 8, 8)
        fc(32) maxpool(2)
    }
}

fn main() {}
