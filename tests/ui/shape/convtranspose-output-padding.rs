use cnn::cnn;

cnn! {
    struct Net {
        input(8, 4, 4)
        convtranspose(8 -> 4, k3, s2, p1, output_padding=2)
    }
}

fn main() {}
