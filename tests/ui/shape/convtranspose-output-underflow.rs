use cnn::cnn;

cnn! {
    struct Net {
        input(8, 2, 2)
        convtranspose(8 -> 4, k3, s1, p3)
    }
}

fn main() {}
