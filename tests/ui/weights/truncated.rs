use cnn::cnn;

cnn! {
    #[weights = "../../weights/truncated.safetensors"]
    struct Net {
        input(1, 4, 4)
        conv(1 -> 2, k3) relu fc(3)
    }
}

fn main() {}
