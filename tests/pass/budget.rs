//! `#[budget]` within its limits, and the figures as constants usable at compile time.

use cnn::cnn;

cnn! {
    /// RAM 78,376 bytes, flash about 271,543 bytes (weights 167,464), 337,536 MACs.
    #[weights = "../../models/digits.safetensors"]
    #[budget(ram = "80K", flash = "272K", macs = 337_536)]
    pub struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }

    /// Sizes as integers, suffixed integers or strings, in any order.
    #[budget(macs = "1000000", flash = 1M, ram = 65_536)]
    struct Small {
        input(1, 8, 8)
        conv(1 -> 4, k3) relu fc(10)
    }
}

const _: () = assert!(Digits::RAM_BYTES == 4 * (Digits::WORKSPACE_LEN + 64 + 10));
const _: () = assert!(Small::FLASH_BYTES <= 1 << 20);

fn main() {
    static NET: &Digits = Digits::EMBEDDED;
    let mut ws = [0f32; Digits::WORKSPACE_LEN];
    let mut out = [0f32; 10];
    NET.forward_in(&[0.5; 64], &mut out, &mut ws).unwrap();
}
