use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        convt(8 -> 4, k2, s2)
    }
}

fn main() {}
