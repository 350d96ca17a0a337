use cnn::cnn;

cnn! {
    struct Net {
        input(6, 4, 4)
        convtranspose(6 -> 4, k2, s2, g3)
    }
}

fn main() {}
