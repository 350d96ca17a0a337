use cnn::cnn;

cnn! {
    #[precision(fp16)]
    struct Net {
        input(16, 8, 8)
        conv(16 -> 16, k3, p1) relu fc(10)
    }
}

fn main() {}
