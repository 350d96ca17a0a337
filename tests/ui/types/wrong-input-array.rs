use cnn::{cnn, Model};

cnn! {
    struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) relu maxpool(2) fc(10)
    }
}

fn main() {
    let net = Net::seeded(0);
    let digit = [[[0.0f32; 28]; 28]; 1];
    let _logits: [f32; 10] = net.forward(&digit);
}
