//! The policy loss: clipped importance ratio with asymmetric bounds, optional KL to the
//! reference policy (k1 or k3), and the loss aggregation modes of verl.

use tch::{Kind, Tensor};

use crate::config::{KlType, LossAgg};

/// Reduces per-token values `[B, T]` over the response `mask` `[B, T]`.
pub fn aggregate(values: &Tensor, mask: &Tensor, mode: LossAgg, max_len: usize) -> Tensor {
    let masked = values * mask;
    match mode {
        LossAgg::TokenMean => masked.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0),
        LossAgg::SeqMeanTokenSum => masked
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float),
        LossAgg::SeqMeanTokenMean => (masked.sum_dim_intlist(-1, false, Kind::Float)
            / mask.sum_dim_intlist(-1, false, Kind::Float).clamp_min(1.0))
        .mean(Kind::Float),
        LossAgg::SeqMeanTokenSumNorm => {
            masked
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
                / max_len.max(1) as f64
        }
    }
}

/// The pieces of one loss evaluation.
#[derive(Debug)]
pub struct PolicyLoss {
    pub loss: Tensor,
    pub pg_loss: f64,
    pub pg_clipfrac: f64,
    pub ppo_kl: f64,
    pub kl: f64,
}

/// Inputs of the policy loss, all `[B, T]` over response positions except `advantages` `[B]`.
#[derive(Debug)]
pub struct LossInputs<'a> {
    pub logp: &'a Tensor,
    pub old_logp: &'a Tensor,
    pub ref_logp: Option<&'a Tensor>,
    pub advantages: &'a Tensor,
    pub mask: &'a Tensor,
}

/// Settings of the policy loss.
#[derive(Debug, Clone, Copy)]
pub struct LossSettings {
    pub clip_low: f64,
    pub clip_high: f64,
    pub agg: LossAgg,
    pub max_len: usize,
    pub kl_coef: f64,
    pub kl_type: KlType,
}

pub fn policy_loss(x: &LossInputs, s: &LossSettings) -> PolicyLoss {
    let adv = x.advantages.unsqueeze(-1);
    // verl clamps the log-ratio to +-20 before exponentiating.
    let log_ratio = (x.logp - x.old_logp).clamp(-20.0, 20.0);
    let ratio = log_ratio.exp();
    let pg1 = -&adv * &ratio;
    let pg2 = -&adv * ratio.clamp(1.0 - s.clip_low, 1.0 + s.clip_high);
    let pg = pg1.maximum(&pg2);
    let mut loss = aggregate(&pg, x.mask, s.agg, s.max_len);
    let pg_loss = tch::no_grad(|| loss.double_value(&[]));
    let stats = |t: &Tensor| {
        tch::no_grad(|| aggregate(t, x.mask, LossAgg::TokenMean, s.max_len).double_value(&[]))
    };
    let clipped = pg2.gt_tensor(&pg1).to_kind(Kind::Float);
    let mut kl_value = 0.0;
    if let (Some(r), true) = (x.ref_logp, s.kl_coef != 0.0) {
        let d = r - x.logp;
        let kl = match s.kl_type {
            KlType::K1 => -&d,
            KlType::K3 => d.exp() - &d - 1.0,
        };
        kl_value = stats(&kl);
        loss = &loss + aggregate(&kl, x.mask, s.agg, s.max_len) * s.kl_coef;
    }
    PolicyLoss {
        pg_loss,
        pg_clipfrac: stats(&clipped),
        ppo_kl: stats(&-log_ratio),
        kl: kl_value,
        loss,
    }
}
