//! The policy loss: clipped importance ratio with asymmetric bounds, optional KL to the
//! reference policy (k1 or k3), and verl's loss aggregations — every one a weighted sum over
//! response tokens, so the loss of a batch can be taken a chunk of tokens at a time (and rows
//! that contribute nothing left out) without changing its value.

use tch::{Kind, Tensor};

use crate::config::{KlType, LossAgg};

/// Per-token weights `w_t` such that the aggregated loss is `Σ_t w_t · l_t` over every response
/// token of the batch. `lens` are all the batch's response lengths (rows skipped from the
/// computation still count here); `max_len` is `max_new_tokens` (Dr.GRPO's normaliser).
pub fn token_weights(mode: LossAgg, lens: &[usize], max_len: usize) -> Vec<Vec<f64>> {
    let tokens: usize = lens.iter().sum();
    let seqs = lens.len().max(1) as f64;
    lens.iter()
        .map(|&l| {
            let w = match mode {
                LossAgg::TokenMean => 1.0 / tokens.max(1) as f64,
                LossAgg::SeqMeanTokenSum => 1.0 / seqs,
                LossAgg::SeqMeanTokenMean => 1.0 / (l.max(1) as f64 * seqs),
                LossAgg::SeqMeanTokenSumNorm => 1.0 / (seqs * max_len.max(1) as f64),
            };
            vec![w; l]
        })
        .collect()
}

/// The pieces of one loss evaluation over some response tokens: the loss (with gradient) and
/// the metrics' contributions (weighted like the loss for `pg_loss`, token-mean for the rest).
#[derive(Debug)]
pub struct PolicyLoss {
    pub loss: Tensor,
    pub pg_loss: f64,
    pub pg_clipfrac: f64,
    pub ppo_kl: f64,
    pub kl: f64,
}

/// Inputs of the policy loss, all `[N]` over the same response tokens.
#[derive(Debug)]
pub struct LossInputs<'a> {
    pub logp: &'a Tensor,
    pub old_logp: &'a Tensor,
    pub ref_logp: Option<&'a Tensor>,
    /// Each token's advantage (its sequence's).
    pub advantages: &'a Tensor,
    /// The aggregation's weight of each token ([`token_weights`]).
    pub weights: &'a Tensor,
    /// 1 / (all response tokens of the batch): the weight of token-mean metrics.
    pub token_mean: f64,
}

/// Settings of the policy loss.
#[derive(Debug, Clone, Copy)]
pub struct LossSettings {
    pub clip_low: f64,
    pub clip_high: f64,
    pub kl_coef: f64,
    pub kl_type: KlType,
}

pub fn policy_loss(x: &LossInputs, s: &LossSettings) -> PolicyLoss {
    // verl clamps the log-ratio to +-20 before exponentiating.
    let log_ratio = (x.logp - x.old_logp).clamp(-20.0, 20.0);
    let ratio = log_ratio.exp();
    let pg1 = -x.advantages * &ratio;
    let pg2 = -x.advantages * ratio.clamp(1.0 - s.clip_low, 1.0 + s.clip_high);
    let pg = pg1.maximum(&pg2);
    let mut loss = (&pg * x.weights).sum(Kind::Float);
    let mean = |t: &Tensor| tch::no_grad(|| t.sum(Kind::Float).double_value(&[])) * x.token_mean;
    let pg_loss = tch::no_grad(|| loss.double_value(&[]));
    let clipped = pg2.gt_tensor(&pg1).to_kind(Kind::Float);
    let mut kl_value = 0.0;
    if let (Some(r), true) = (x.ref_logp, s.kl_coef != 0.0) {
        let d = r - x.logp;
        let kl = match s.kl_type {
            KlType::K1 => -&d,
            KlType::K3 => d.exp() - &d - 1.0,
        };
        kl_value = mean(&kl);
        loss = &loss + (&kl * x.weights).sum(Kind::Float) * s.kl_coef;
    }
    PolicyLoss {
        pg_loss,
        pg_clipfrac: mean(&clipped),
        ppo_kl: mean(&-log_ratio),
        kl: kl_value,
        loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn settings() -> LossSettings {
        LossSettings {
            clip_low: 0.2,
            clip_high: 0.28,
            kl_coef: 0.0,
            kl_type: KlType::K3,
        }
    }

    /// verl's aggregations of per-token values `v` (rows of lengths 2 and 3, max_len 4) as
    /// weighted sums.
    #[test]
    fn aggregation_modes() {
        let rows = [vec![1.0, 2.0], vec![4.0, 5.0, 6.0]];
        let lens = [2, 3];
        let cases = [
            (LossAgg::TokenMean, 18.0 / 5.0),
            (LossAgg::SeqMeanTokenSum, (3.0 + 15.0) / 2.0),
            (LossAgg::SeqMeanTokenMean, (1.5 + 5.0) / 2.0),
            (LossAgg::SeqMeanTokenSumNorm, (3.0 + 15.0) / 2.0 / 4.0),
        ];
        for (mode, expected) in cases {
            let w = token_weights(mode, &lens, 4);
            let got: f64 = rows
                .iter()
                .zip(&w)
                .flat_map(|(r, w)| r.iter().zip(w).map(|(x, w)| x * w))
                .sum();
            assert!(
                (got - expected).abs() < 1e-12,
                "{mode:?}: {got} != {expected}"
            );
        }
    }

    fn run(logp: &[f32], old: &[f32], adv: f32, s: &LossSettings) -> PolicyLoss {
        let n = logp.len();
        policy_loss(
            &LossInputs {
                logp: &t(logp),
                old_logp: &t(old),
                ref_logp: None,
                advantages: &t(&vec![adv; n]),
                weights: &t(&vec![1.0 / n as f32; n]),
                token_mean: 1.0 / n as f64,
            },
            s,
        )
    }

    #[test]
    fn clipping_is_asymmetric_and_pessimistic() {
        // ratio e^0.5 = 1.65 on both tokens: with A > 0 the objective is clipped at 1 + 0.28.
        let out = run(&[0.5, 0.5], &[0.0, 0.0], 1.0, &settings());
        assert!(
            (out.pg_loss + 1.28).abs() < 1e-6 && (out.pg_clipfrac - 1.0).abs() < 1e-9,
            "{out:?}"
        );
        // With A < 0 the unclipped (worse) value is kept: -A * ratio.
        let out = run(&[0.5, 0.5], &[0.0, 0.0], -1.0, &settings());
        assert!(
            (out.pg_loss - 0.5f64.exp()).abs() < 1e-5 && out.pg_clipfrac == 0.0,
            "{out:?}"
        );
        // On-policy (ratio 1): the loss is -A and nothing is clipped.
        let out = run(&[0.0, 0.0], &[0.0, 0.0], 2.0, &settings());
        assert!((out.pg_loss + 2.0).abs() < 1e-6 && out.pg_clipfrac == 0.0);
    }

    #[test]
    fn kl_estimators() {
        for (kind, expected) in [(KlType::K1, 0.5), (KlType::K3, (-0.5f64).exp() + 0.5 - 1.0)] {
            let s = LossSettings {
                kl_coef: 0.1,
                kl_type: kind,
                ..settings()
            };
            let out = policy_loss(
                &LossInputs {
                    logp: &t(&[-1.0]),
                    old_logp: &t(&[-1.0]),
                    ref_logp: Some(&t(&[-1.5])),
                    advantages: &t(&[0.0]),
                    weights: &t(&[1.0]),
                    token_mean: 1.0,
                },
                &s,
            );
            assert!((out.kl - expected).abs() < 1e-6, "{kind:?}: {}", out.kl);
            assert!((out.loss.double_value(&[]) - 0.1 * expected).abs() < 1e-6);
        }
    }
}
