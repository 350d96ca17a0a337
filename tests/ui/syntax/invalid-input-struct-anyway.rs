use cnn::{cnn, Model};

cnn! {
    /// The struct and its methods still exist, so the only error is the layer typo.
    pub struct Net {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) relu maxpol(2) fc(10)
    }
}

fn main() -> Result<(), cnn::Error> {
    let net = Net::from_safetensors(&[])?;
    let _logits: [f32; 10] = net.forward(&[[[0.0f32; 32]; 32]; 3]);
    println!("{}", Net::PARAMS);
    Ok(())
}
