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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    fn settings(agg: LossAgg) -> LossSettings {
        LossSettings {
            clip_low: 0.2,
            clip_high: 0.28,
            agg,
            max_len: 4,
            kl_coef: 0.0,
            kl_type: KlType::K3,
        }
    }

    #[test]
    fn aggregation_modes() {
        let v = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        let m = t(&[1.0, 1.0, 0.0, 1.0, 1.0, 1.0], &[2, 3]);
        let cases = [
            (LossAgg::TokenMean, 18.0 / 5.0),
            (LossAgg::SeqMeanTokenSum, (3.0 + 15.0) / 2.0),
            (LossAgg::SeqMeanTokenMean, (1.5 + 5.0) / 2.0),
            (LossAgg::SeqMeanTokenSumNorm, (3.0 + 15.0) / 2.0 / 4.0),
        ];
        for (mode, expected) in cases {
            let got = aggregate(&v, &m, mode, 4).double_value(&[]);
            assert!(
                (got - expected).abs() < 1e-6,
                "{mode:?}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn clipping_is_asymmetric_and_pessimistic() {
        let mask = t(&[1.0, 1.0], &[1, 2]);
        let old = t(&[0.0, 0.0], &[1, 2]);
        // ratio e^0.5 = 1.65 on both tokens: with A > 0 the objective is clipped at 1 + 0.28.
        let logp = t(&[0.5, 0.5], &[1, 2]);
        let out = policy_loss(
            &LossInputs {
                logp: &logp,
                old_logp: &old,
                ref_logp: None,
                advantages: &t(&[1.0], &[1]),
                mask: &mask,
            },
            &settings(LossAgg::TokenMean),
        );
        assert!(
            (out.pg_loss + 1.28).abs() < 1e-6 && (out.pg_clipfrac - 1.0).abs() < 1e-9,
            "{out:?}"
        );
        // With A < 0 the unclipped (worse) value is kept: -A * ratio.
        let out = policy_loss(
            &LossInputs {
                logp: &logp,
                old_logp: &old,
                ref_logp: None,
                advantages: &t(&[-1.0], &[1]),
                mask: &mask,
            },
            &settings(LossAgg::TokenMean),
        );
        assert!(
            (out.pg_loss - 0.5f64.exp()).abs() < 1e-5 && out.pg_clipfrac == 0.0,
            "{out:?}"
        );
        // On-policy (ratio 1): the loss is -A and nothing is clipped.
        let out = policy_loss(
            &LossInputs {
                logp: &old,
                old_logp: &old,
                ref_logp: None,
                advantages: &t(&[2.0], &[1]),
                mask: &mask,
            },
            &settings(LossAgg::TokenMean),
        );
        assert!((out.pg_loss + 2.0).abs() < 1e-6 && out.pg_clipfrac == 0.0);
    }

    #[test]
    fn kl_estimators() {
        let mask = t(&[1.0], &[1, 1]);
        let logp = t(&[-1.0], &[1, 1]);
        let reference = t(&[-1.5], &[1, 1]);
        for (kind, expected) in [(KlType::K1, 0.5), (KlType::K3, (-0.5f64).exp() + 0.5 - 1.0)] {
            let s = LossSettings {
                kl_coef: 0.1,
                kl_type: kind,
                ..settings(LossAgg::TokenMean)
            };
            let out = policy_loss(
                &LossInputs {
                    logp: &logp,
                    old_logp: &logp,
                    ref_logp: Some(&reference),
                    advantages: &t(&[0.0], &[1]),
                    mask: &mask,
                },
                &s,
            );
            assert!((out.kl - expected).abs() < 1e-6, "{kind:?}: {}", out.kl);
            assert!((out.loss.double_value(&[]) - 0.1 * expected).abs() < 1e-6);
        }
    }
}
