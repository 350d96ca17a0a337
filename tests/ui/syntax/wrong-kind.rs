use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, kernel_size=3, bias=1)
    }
}

fn main() {}
