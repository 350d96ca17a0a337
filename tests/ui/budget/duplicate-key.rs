use cnn::cnn;

cnn! {
    #[budget(ram = "64K", macs = 1_000_000, ram = "32K")]
    struct Net {
        input(1, 8, 8)
        conv(1 -> 4, k3) relu fc(10)
    }
}

fn main() {}
