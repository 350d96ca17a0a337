use cnn::cnn;

cnn! {
    #[budget(ram = "64K")]
    #[budget(flash = "256K")]
    struct Net {
        input(1, 8, 8)
        conv(1 -> 4, k3) relu fc(10)
    }
}

fn main() {}
