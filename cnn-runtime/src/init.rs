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

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's default bound `1/√fan_in`: every sample within it, the extremes close to it,
    /// both signs; no fan-in gives zeros.
    #[test]
    fn fan_in_uniform_fills_plus_minus_one_over_root_fan_in() {
        let mut rng = Rng::new(11);
        for fan_in in [1usize, 9, 147, 1000] {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let v = rng.fan_in_uniform(2000, fan_in);
            assert_eq!(v.len(), 2000);
            assert!(v.iter().all(|x| x.abs() <= bound), "fan_in {fan_in}");
            let (lo, hi) = v
                .iter()
                .fold((0f32, 0f32), |(l, h), &x| (l.min(x), h.max(x)));
            assert!(
                hi > 0.95 * bound && lo < -0.95 * bound,
                "fan_in {fan_in}: {lo}..{hi}"
            );
        }
        assert!(rng.fan_in_uniform(5, 0).iter().all(|&x| x == 0.0));
    }
}
