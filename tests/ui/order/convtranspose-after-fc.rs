use cnn::cnn;

cnn! {
    struct Net {
        input(3, 4, 4)
        fc(10) convtranspose(10 -> 4, k2)
    }
}

fn main() {}
