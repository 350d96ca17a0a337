use cnn::cnn;

cnn! {
    /// Every overrun is reported, each at its limit.
    #[weights = "../../weights/good.safetensors"]
    #[budget(ram = 256, flash = "8K", macs = 90)]
    struct Net {
        input(1, 4, 4)
        conv(1 -> 2, k3) relu fc(3)
    }
}

fn main() {}
