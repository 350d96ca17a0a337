use cnn::cnn;

cnn! {
    #[budget(ram = "64K")]
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

fn main() {}
