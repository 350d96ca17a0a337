//! Seeded initialisation with PyTorch's default distributions.

/// A small, fast, seedable generator (SplitMix64); not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A sample of `U(low, high)`.
    pub(crate) fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// `len` samples of `U(-bound, bound)`: PyTorch's default for `Conv2d` and `Linear` weights
    /// and biases, with `bound = 1/√fan_in` (`kaiming_uniform_(a=√5)` reduces to it).
    pub(crate) fn fan_in_uniform(&mut self, len: usize, fan_in: usize) -> Vec<f32> {
        let bound = if fan_in == 0 {
            0.0
        } else {
            1.0 / (fan_in as f32).sqrt()
        };
        (0..len).map(|_| self.uniform(-bound, bound)).collect()
    }
}
