//! Per-sample seeded Gaussian noise.
//!
//! Every value is drawn on the CPU from a ChaCha8 stream keyed by
//! (seed, sample index, stream), so sample i of a request with seed s gets the
//! same x_T (stream 0) and the same η-noise at sampling step k (stream k + 1)
//! whatever the batch size, its position in the batch, or the device.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Tensor};

/// Identifies one sample's noise: the request seed and the sample's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleSeed {
    pub seed: u64,
    pub index: u64,
}

impl SampleSeed {
    pub fn new(seed: u64, index: u64) -> Self {
        Self { seed, index }
    }

    /// `n` standard-normal values of this sample's `stream`.
    pub fn normal(&self, stream: u64, n: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, self.index));
        rng.set_stream(stream);
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
    }
}

fn mix(seed: u64, index: u64) -> u64 {
    // SplitMix64 finaliser over seed and index.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A [N, C, H, W] tensor whose row i is `seeds[i]`'s noise of `stream`.
pub fn batch_normal(seeds: &[SampleSeed], stream: u64, shape: [i64; 3], device: Device) -> Tensor {
    let per = (shape[0] * shape[1] * shape[2]) as usize;
    let mut data = Vec::with_capacity(per * seeds.len());
    for s in seeds {
        data.extend(s.normal(stream, per));
    }
    Tensor::from_slice(&data)
        .reshape([seeds.len() as i64, shape[0], shape[1], shape[2]])
        .to_device(device)
}

/// x_T for each seed.
pub fn initial_noise(seeds: &[SampleSeed], shape: [i64; 3], device: Device) -> Tensor {
    batch_normal(seeds, 0, shape, device)
}

/// Seeds (seed, 0..count).
pub fn seeds(seed: u64, count: usize) -> Vec<SampleSeed> {
    (0..count as u64)
        .map(|i| SampleSeed::new(seed, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_of_batch_composition() {
        let a = SampleSeed::new(7, 3);
        let alone = initial_noise(&[a], [1, 4, 4], Device::Cpu);
        let batch = initial_noise(
            &[SampleSeed::new(9, 0), a, SampleSeed::new(7, 1)],
            [1, 4, 4],
            Device::Cpu,
        );
        assert!(alone.get(0).equal(&batch.get(1)));
        assert!(!batch.get(1).equal(&batch.get(2)));
        assert!(!alone.equal(&batch_normal(&[a], 1, [1, 4, 4], Device::Cpu)));
    }

    #[test]
    fn roughly_standard_normal() {
        let v = SampleSeed::new(1, 0).normal(0, 100_000);
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
    }
}
