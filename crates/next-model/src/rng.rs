//! Seeded random tensors drawn on the host, so initialisation is identical on every device.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// A seeded source of f32 tensors.
#[derive(Debug)]
pub struct Normal {
    rng: ChaCha8Rng,
}

impl Normal {
    pub fn new(seed: u64) -> Self {
        Normal {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Normal(0, std) by Box-Muller.
    pub fn tensor(&mut self, shape: &[i64], std: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        let mut v = Vec::with_capacity(n as usize);
        while (v.len() as i64) < n {
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let th = std::f64::consts::TAU * u2;
            v.push((r * th.cos()) as f32);
            v.push((r * th.sin()) as f32);
        }
        v.truncate(n as usize);
        Tensor::from_slice(&v).view(shape).to_device(Device::Cpu)
    }

    /// Uniform(-bound, bound).
    pub fn uniform(&mut self, shape: &[i64], bound: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((self.rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Tensor::from_slice(&v).view(shape).to_kind(Kind::Float)
    }

    /// Uniform [0, 1) draws for sampling.
    pub fn unit(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.random::<f32>()).collect()
    }
}
