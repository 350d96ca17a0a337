use cnn::cnn;

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, kernel_size=18446744073709551615, dilation=18446744073709551615)
    }
}

fn main() {}
