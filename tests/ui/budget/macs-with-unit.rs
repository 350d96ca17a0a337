use cnn::cnn;

cnn! {
    #[budget(macs = "5M")]
    struct Net {
        input(1, 8, 8)
        conv(1 -> 4, k3) relu fc(10)
    }
}

fn main() {}
