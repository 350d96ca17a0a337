//! `#[weights]` with F32, F16 and F64 files: embedded() equals from_safetensors of the same bytes.

use cnn::{cnn, Model};

cnn! {
    #[weights = "../weights/good.safetensors"]
    struct F32Net { input(1, 4, 4) conv(1 -> 2, k3) relu fc(3) }

    #[weights = "../weights/good-f16.safetensors"]
    struct F16Net { input(1, 4, 4) conv(1 -> 2, k3) relu fc(3) }

    #[weights = "../weights/good-f64.safetensors"]
    struct F64Net { input(1, 4, 4) conv(1 -> 2, k3) relu fc(3) }
}

fn main() {
    let x = [[[0.25f32; 4]; 4]; 1];
    let a = F32Net::embedded().forward(&x);
    assert_eq!(a, F16Net::embedded().forward(&x));
    assert_eq!(a, F64Net::embedded().forward(&x));
    let bytes = include_bytes!("../weights/good.safetensors");
    assert_eq!(F32Net::from_safetensors(bytes).unwrap().forward(&x), a);
    assert!(std::ptr::eq(F32Net::embedded(), F32Net::embedded()));
}
