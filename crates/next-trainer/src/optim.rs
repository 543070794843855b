//! AdamW over the LoRA factors, with moments that are saved and restored (tch's optimizers
//! cannot), gradient-norm clipping, and the learning-rate schedules.

use tch::{Kind, Tensor};

use crate::config::{LrSchedule, OptimSection};

/// Decoupled-weight-decay Adam, updating exactly as `torch.optim.AdamW` does.
#[derive(Debug)]
pub struct AdamW {
    pub step: i64,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: &[Tensor], cfg: &OptimSection) -> Self {
        let zeros = |p: &Tensor| Tensor::zeros_like(p).set_requires_grad(false);
        AdamW {
            step: 0,
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            betas: (cfg.beta1, cfg.beta2),
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        }
    }

    /// One update of every parameter from its `.grad()`, then zeroes the gradients.
    pub fn step(&mut self, params: &[Tensor], lr: f64) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        tch::no_grad(|| {
            for ((p, m), v) in params
                .iter()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
            {
                let mut p = p.shallow_clone();
                // No gradient (a step whose every sequence was skipped) is a zero gradient: the
                // moments still move the weights, as torch's AdamW does after zero_grad.
                let g = match p.grad() {
                    g if g.defined() => g,
                    _ => Tensor::zeros_like(&p),
                };
                if self.weight_decay != 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = m
                    .f_mul_scalar_(b1)
                    .and_then(|mut m| m.f_add_(&(&g * (1.0 - b1))));
                let _ = v
                    .f_mul_scalar_(b2)
                    .and_then(|mut v| v.f_add_(&(g.square() * (1.0 - b2))));
                let denom = v.sqrt() / bc2.sqrt() + self.eps;
                let _ = p.f_sub_(&(&*m / denom * (lr / bc1)));
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
        });
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm` (if positive);
/// returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = tch::no_grad(|| {
        let sq: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
            .collect();
        Tensor::stack(&sq, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[])
    });
    if max_norm > 0.0 && total > max_norm {
        let scale = max_norm / (total + 1e-6);
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().f_mul_scalar_(scale);
            }
        });
    }
    total
}

/// The learning rate at `step` (0-based) of `total` steps.
pub fn learning_rate(cfg: &OptimSection, step: usize, total: usize) -> f64 {
    let warm = cfg.warmup_steps;
    if warm > 0 && step < warm {
        return cfg.lr * (step + 1) as f64 / warm as f64;
    }
    match cfg.schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(warm).max(1) as f64;
            let progress = ((step - warm) as f64 / span).min(1.0);
            let min = cfg.lr * cfg.min_lr_ratio;
            min + (cfg.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}
