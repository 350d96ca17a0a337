use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, kernel_size=2.5)
    }
}

fn main() {}
