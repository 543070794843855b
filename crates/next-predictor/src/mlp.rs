//! `next-reference`: NExt's predictor as published. Every rank-1 factor of the same length, across
//! all layers and module kinds (u's, v's, and the scalar σ's as length-1 vectors), forms one
//! group with one "MatrixPredict" network: a branch for the global-delta vector and one for the
//! local-delta vector, each Linear(d,256) → Linear(256,d) → ReLU → Linear(d,256) →
//! Linear(256,d), concatenated and mapped 2d → d by a combiner of the same shape; trained full
//! batch for 1000 epochs with AdamW (lr 2e-5, cosine decay to 2e-6) on the summed L1 loss to the
//! target-delta vector; signs as the SVD gave them; predicted u and v renormalised.
//! (Adjacent Linear layers with no activation between them collapse into one low-rank map; the
//! reference has them, so this does too.)

use std::collections::BTreeMap;

use nalgebra::DVector;
use rayon::prelude::*;
use serde_json::json;
use tch::nn::{self, Module, OptimizerConfig};

/// Held while seeding libtorch's global generator and drawing a network's initial weights.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Held by a fit while it runs libtorch single-threaded.
static FIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// libtorch's intra-op threads set to 1 while it lives, then back to what they were.
struct OneThread(i32);

impl OneThread {
    fn new() -> Self {
        let was = tch::get_num_threads();
        tch::set_num_threads(1);
        OneThread(was)
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}
use tch::{Device, Kind, Tensor};

use crate::{Error, Prediction, Result, Series, Trajectory, TrajectoryPredictor};

/// Hidden width of every branch.
const HIDDEN: i64 = 256;

/// Linear(d_in,256) → Linear(256,d) → ReLU → Linear(d,256) → Linear(256,d).
#[derive(Debug)]
struct Branch {
    l1: nn::Linear,
    l2: nn::Linear,
    l3: nn::Linear,
    l4: nn::Linear,
}

impl Branch {
    fn new(p: nn::Path, d_in: i64, d: i64) -> Self {
        let c = Default::default();
        Self {
            l1: nn::linear(&p / "0", d_in, HIDDEN, c),
            l2: nn::linear(&p / "1", HIDDEN, d, c),
            l3: nn::linear(&p / "3", d, HIDDEN, c),
            l4: nn::linear(&p / "4", HIDDEN, d, c),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l4.forward(
            &self
                .l3
                .forward(&self.l2.forward(&self.l1.forward(x)).relu()),
        )
    }
}

/// The two-branch network for vectors of length d.
#[derive(Debug)]
struct MatrixPredict {
    global: Branch,
    local: Branch,
    combine: Branch,
}

impl MatrixPredict {
    fn new(p: &nn::Path, d: i64) -> Self {
        Self {
            global: Branch::new(p / "global", d, d),
            local: Branch::new(p / "local", d, d),
            combine: Branch::new(p / "combine", 2 * d, d),
        }
    }

    fn forward(&self, g: &Tensor, l: &Tensor) -> Tensor {
        let h = Tensor::cat(&[self.global.forward(g), self.local.forward(l)], -1);
        self.combine.forward(&h)
    }
}

/// Parameters of one group's network for vectors of length d: two branches of
/// (d·256 + 256) + (256·d + d) + (d·256 + 256) + (256·d + d) and a combiner whose first layer
/// takes 2d; in all 13·256·d + 6·256 + 6·d.
pub fn parameter_count(d: usize) -> usize {
    let h = HIDDEN as usize;
    let branch = |d_in: usize| (d_in * h + h) + (h * d + d) + (d * h + h) + (h * d + d);
    2 * branch(d) + branch(2 * d)
}

/// One length group's network and its training log.
struct Group {
    vs: nn::VarStore,
    net: MatrixPredict,
    first_loss: f64,
    last_loss: f64,
    samples: usize,
}

/// NExt's MLP predictor (faithful reference mode).
pub struct NextReference {
    pub epochs: usize,
    pub lr: f64,
    pub lr_min: f64,
    pub seed: u64,
    groups: BTreeMap<usize, Group>,
}

impl std::fmt::Debug for NextReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextReference")
            .field("epochs", &self.epochs)
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for NextReference {
    fn default() -> Self {
        Self {
            epochs: 1000,
            lr: 2e-5,
            lr_min: 2e-6,
            seed: 0,
            groups: BTreeMap::new(),
        }
    }
}

/// The (global, local, target) vectors of one sample, one of u, v or σ.
type Sample = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The step → index map of a series.
fn at(s: &Series) -> BTreeMap<u64, usize> {
    s.steps.iter().enumerate().map(|(i, t)| (*t, i)).collect()
}

/// The u, v and σ vectors of record `i` of a series.
fn vectors(s: &Series, i: usize) -> [Vec<f32>; 3] {
    let f = |v: &DVector<f64>| v.iter().map(|x| *x as f32).collect();
    [f(&s.u[i]), f(&s.v[i]), vec![s.sigma[i] as f32]]
}

fn rows(x: &[Vec<f32>]) -> Tensor {
    let d = x[0].len() as i64;
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([x.len() as i64, d])
}

/// The training settings of one group's network (copied into each training thread).
#[derive(Debug, Clone, Copy)]
struct Training {
    epochs: usize,
    lr: f64,
    lr_min: f64,
    seed: u64,
}

impl Training {
    /// Trains the network of the length-`d` group on its samples.
    fn group(self, d: usize, samples: &[Sample]) -> Result<Group> {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = {
            // libtorch's generator is process-wide: two fits initialising at once (tests
            // run in threads) would interleave their draws and break "same seed, same fit".
            let _only = INIT.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(self.seed as i64 ^ d as i64);
            MatrixPredict::new(&vs.root(), d as i64)
        };
        let g = rows(&samples.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
        let l = rows(&samples.iter().map(|s| s.1.clone()).collect::<Vec<_>>());
        let y = rows(&samples.iter().map(|s| s.2.clone()).collect::<Vec<_>>());
        let mut opt = nn::AdamW::default().build(&vs, self.lr)?;
        let (mut first, mut last) = (f64::NAN, f64::NAN);
        for epoch in 0..self.epochs {
            let progress = epoch as f64 / self.epochs.max(1) as f64;
            let lr = self.lr_min
                + 0.5 * (self.lr - self.lr_min) * (1.0 + (std::f64::consts::PI * progress).cos());
            opt.set_lr(lr);
            let loss = (net.forward(&g, &l) - &y).abs().sum(Kind::Float);
            opt.backward_step(&loss);
            // Read back only the first and the last loss: no host round trip per epoch.
            if epoch == 0 {
                first = loss.double_value(&[]);
            }
            if epoch + 1 == self.epochs {
                last = loss.double_value(&[]);
            }
        }
        if !(first.is_finite() && last.is_finite()) {
            return Err(Error::Invalid(format!(
                "next-reference: the loss of the length-{d} group went from {first} to {last}"
            )));
        }
        Ok(Group {
            vs,
            net,
            first_loss: first,
            last_loss: last,
            samples: samples.len(),
        })
    }
}

impl TrajectoryPredictor for NextReference {
    fn name(&self) -> &'static str {
        "next-reference"
    }

    fn fit(&mut self, trajectory: &Trajectory) -> Result<()> {
        let [global, local, target] = &trajectory.raw;
        // Samples: every step with all three deltas, every matrix, each of u, v, σ; grouped by
        // vector length.
        let mut groups: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
        for ((g, l), t) in global.iter().zip(local).zip(target) {
            let (gi, li, ti) = (at(g), at(l), at(t));
            for (step, &i) in &gi {
                let (Some(&j), Some(&k)) = (li.get(step), ti.get(step)) else {
                    continue;
                };
                let [gu, gv, gs] = vectors(g, i);
                let [lu, lv, ls] = vectors(l, j);
                let [tu, tv, ts] = vectors(t, k);
                for s in [(gu, lu, tu), (gv, lv, tv), (gs, ls, ts)] {
                    groups.entry(s.0.len()).or_default().push(s);
                }
            }
        }
        if groups.is_empty() {
            return Err(Error::Unsupported(
                "next-reference trains on steps that have global, local and target records; the store has none (extract with a target gap shorter than the run)".into(),
            ));
        }
        self.groups.clear();
        // The groups are independent networks: trained side by side, one thread each.
        let training = Training {
            epochs: self.epochs,
            lr: self.lr,
            lr_min: self.lr_min,
            seed: self.seed,
        };
        // Each network's steps are small and memory-bound (AdamW over ~1M parameters a step):
        // one libtorch thread per network, the networks on the cores side by side, beats every
        // network using every core in turn. The thread count is process-wide, so fits in
        // parallel (tests) take turns, and it is restored even on a panic.
        let fitted: Vec<(usize, Group)> = {
            let _turn = FIT.lock().unwrap_or_else(|e| e.into_inner());
            let _one = OneThread::new();
            groups
                .into_par_iter()
                .map(|(d, samples)| Ok((d, training.group(d, &samples)?)))
                .collect::<Result<_>>()?
        };
        self.groups.extend(fitted);
        Ok(())
    }

    fn predict(
        &self,
        trajectory: &Trajectory,
        horizon: u64,
        rank: usize,
    ) -> Result<Vec<Prediction>> {
        if self.groups.is_empty() {
            return Err(Error::Invalid(
                "next-reference: fit the trajectory first".into(),
            ));
        }
        if horizon != trajectory.target_gap {
            return Err(Error::Unsupported(format!(
                "next-reference predicts exactly the target gap it was trained on ({} steps), not {horizon}",
                trajectory.target_gap
            )));
        }
        let [global, local, _] = &trajectory.raw;
        let mut out = vec![];
        for (g, l) in global.iter().zip(local) {
            let (Some(i), Some(j)) = (g.steps.len().checked_sub(1), l.steps.len().checked_sub(1))
            else {
                return Err(Error::Unsupported(format!(
                    "module `{}` has no records",
                    g.module
                )));
            };
            if g.steps[i] != l.steps[j] {
                return Err(Error::Unsupported(format!(
                    "module `{}`: the last global record is at step {}, the last local one at {}",
                    g.module, g.steps[i], l.steps[j]
                )));
            }
            let [gu, gv, gs] = vectors(g, i);
            let [lu, lv, ls] = vectors(l, j);
            let run = |x: Vec<f32>, y: Vec<f32>| -> Result<Vec<f64>> {
                let grp = self.groups.get(&x.len()).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "module `{}`: no network was trained for vectors of length {}",
                        g.module,
                        x.len()
                    ))
                })?;
                let p = tch::no_grad(|| grp.net.forward(&rows(&[x]), &rows(&[y])));
                Ok(Vec::<f32>::try_from(p.view([-1]))?
                    .into_iter()
                    .map(f64::from)
                    .collect())
            };
            let u = DVector::from_vec(run(gu, lu)?);
            let v = DVector::from_vec(run(gv, lv)?);
            let s = run(gs, ls)?[0];
            // Renormalised to unit length, as the reference does; a negative σ flips u.
            let (nu, nv) = (u.norm(), v.norm());
            if nu == 0.0 || nv == 0.0 || !s.is_finite() {
                return Err(Error::Invalid(format!(
                    "module `{}`: the network predicted a zero or non-finite factor",
                    g.module
                )));
            }
            let sign = if s < 0.0 { -1.0 } else { 1.0 };
            let mut terms = vec![(s.abs(), u * (sign / nu), v / nv)];
            terms.truncate(rank.max(1));
            out.push(Prediction {
                module: g.module.clone(),
                terms,
            });
        }
        Ok(out)
    }

    fn state(&self) -> serde_json::Value {
        let groups: Vec<serde_json::Value> = self
            .groups
            .iter()
            .map(|(d, g)| {
                json!({"length": d, "samples": g.samples, "parameters": parameter_count(*d),
                       "first_loss": g.first_loss, "last_loss": g.last_loss})
            })
            .collect();
        json!({"predictor": self.name(), "epochs": self.epochs, "lr": self.lr, "lr_min": self.lr_min, "groups": groups})
    }

    /// Each group's weights go to `group-<length>.safetensors`.
    fn save(&self, dir: &std::path::Path) -> Result<serde_json::Value> {
        let mut groups = vec![];
        for (d, g) in &self.groups {
            g.vs.save(dir.join(format!("group-{d}.safetensors")))?;
            groups.push(json!({"length": d, "samples": g.samples, "first_loss": g.first_loss, "last_loss": g.last_loss}));
        }
        Ok(
            json!({"epochs": self.epochs, "lr": self.lr, "lr_min": self.lr_min, "seed": self.seed, "groups": groups}),
        )
    }

    fn load(&mut self, params: &serde_json::Value, dir: &std::path::Path) -> Result<()> {
        let groups = params["groups"]
            .as_array()
            .ok_or_else(|| Error::Invalid("next-reference: no `groups`".into()))?;
        self.groups.clear();
        for g in groups {
            let d = g["length"]
                .as_u64()
                .ok_or_else(|| Error::Invalid("next-reference: a group has no `length`".into()))?
                as usize;
            let mut vs = nn::VarStore::new(Device::Cpu);
            let net = {
                let _only = INIT.lock().unwrap_or_else(|e| e.into_inner());
                MatrixPredict::new(&vs.root(), d as i64)
            };
            vs.load(dir.join(format!("group-{d}.safetensors")))?;
            self.groups.insert(
                d,
                Group {
                    vs,
                    net,
                    first_loss: g["first_loss"].as_f64().unwrap_or(f64::NAN),
                    last_loss: g["last_loss"].as_f64().unwrap_or(f64::NAN),
                    samples: g["samples"].as_u64().unwrap_or(0) as usize,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built network has exactly the parameters the layer sizes give.
    #[test]
    fn parameter_count_matches_the_layer_sizes() {
        for d in [1usize, 7, 64, 300] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = {
                let _only = INIT.lock().unwrap_or_else(|e| e.into_inner());
                MatrixPredict::new(&vs.root(), d as i64)
            };
            let n: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(n as usize, parameter_count(d), "d = {d}");
            // 13·256·d + 6·256 + 6d, from the layer sizes.
            assert_eq!(parameter_count(d), 13 * 256 * d + 6 * 256 + 6 * d);
        }
    }
}
