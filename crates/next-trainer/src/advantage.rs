//! Advantage estimators over groups of `n` samples of the same prompt (outcome rewards: one
//! advantage per sequence, shared by its tokens).

use crate::config::AdvEstimator;

/// Advantages for `rewards`, laid out as consecutive groups of `n`.
pub fn advantages(est: AdvEstimator, rewards: &[f64], n: usize) -> Vec<f64> {
    assert!(
        n > 0 && rewards.len().is_multiple_of(n),
        "rewards come in whole groups"
    );
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(n) {
        let mean = g.iter().sum::<f64>() / n as f64;
        match est {
            AdvEstimator::Grpo | AdvEstimator::Dapo => {
                // verl: unbiased standard deviation, epsilon 1e-6.
                let var = if n > 1 {
                    g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64
                } else {
                    0.0
                };
                out.extend(g.iter().map(|r| (r - mean) / (var.sqrt() + 1e-6)));
            }
            AdvEstimator::DrGrpo | AdvEstimator::ReinforcePlusPlusBaseline => {
                out.extend(g.iter().map(|r| r - mean))
            }
            AdvEstimator::Rloo => {
                let scale = if n > 1 {
                    n as f64 / (n - 1) as f64
                } else {
                    0.0
                };
                out.extend(g.iter().map(|r| (r - mean) * scale));
            }
        }
    }
    if est == AdvEstimator::ReinforcePlusPlusBaseline && out.len() > 1 {
        // REINFORCE++-baseline whitens the group-centred rewards over the whole batch.
        let m = out.iter().sum::<f64>() / out.len() as f64;
        let sd = (out.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (out.len() - 1) as f64).sqrt();
        for a in &mut out {
            *a = (*a - m) / (sd + 1e-8);
        }
    }
    out
}

/// Whether every reward of each group is the same (such groups carry no gradient).
pub fn zero_variance_groups(rewards: &[f64], n: usize) -> Vec<bool> {
    rewards
        .chunks(n)
        .map(|g| g.iter().all(|r| (r - g[0]).abs() < 1e-12))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(est: AdvEstimator, rewards: &[f64], n: usize, expected: &[f64]) {
        let got = advantages(est, rewards, n);
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() < 1e-6,
                "{est:?} {rewards:?}: {got:?} != {expected:?}"
            );
        }
    }

    #[test]
    fn estimators() {
        let r = [1.0, 0.0, 0.0, 1.0];
        // mean 0.5, unbiased std sqrt(1/3).
        let z = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-6);
        check(AdvEstimator::Grpo, &r, 4, &[z, -z, -z, z]);
        check(AdvEstimator::DrGrpo, &r, 4, &[0.5, -0.5, -0.5, 0.5]);
        check(
            AdvEstimator::Rloo,
            &r,
            4,
            &[2.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0, 2.0 / 3.0],
        );
        check(
            AdvEstimator::Grpo,
            &[1.0, 1.0, 0.0, 0.0],
            2,
            &[0.0, 0.0, 0.0, 0.0],
        );
        let rpp = advantages(
            AdvEstimator::ReinforcePlusPlusBaseline,
            &[1.0, 0.0, 0.3, 0.1],
            2,
        );
        assert!(rpp.iter().sum::<f64>().abs() < 1e-9);
        assert_eq!(
            zero_variance_groups(&[1.0, 1.0, 0.0, 1.0], 2),
            vec![true, false]
        );
    }
}
