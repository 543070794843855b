//! The experiment's plan: its settings checked against each other before anything runs, and
//! the seeds and arms they give.

use next_predictor::factor::FactorKind;
use next_predictor::Method;

use super::{ExperimentSection, CONTROL};
use crate::{Error, Result, SchedulerSection};

/// The experiment's plan and settings, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: ExperimentSection,
    pub scheduler: SchedulerSection,
    pub steps: usize,
    pub save_every: usize,
    pub val_every: usize,
}

impl Plan {
    /// Checks that the settings fit together before anything runs.
    pub fn new(
        experiment: ExperimentSection,
        scheduler: SchedulerSection,
        steps: usize,
        save_every: usize,
        val_every: usize,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(m));
        let e = &experiment;
        if e.seeds == 0 {
            return bad("experiment.seeds must be at least 1".into());
        }
        if e.jump_at.is_empty() {
            return bad("experiment.jump_at is empty".into());
        }
        if save_every == 0 || val_every == 0 {
            return bad("trainer.save_every and trainer.val_every must be positive".into());
        }
        if !steps.is_multiple_of(val_every) {
            return bad(format!(
                "trainer.steps ({steps}) must be a multiple of trainer.val_every ({val_every}) so the baseline ends on a validation"
            ));
        }
        for &k in &e.jump_at {
            if k == 0 || k >= steps || !k.is_multiple_of(save_every) || !k.is_multiple_of(val_every)
            {
                return bad(format!(
                    "experiment.jump_at has {k}: each must be below trainer.steps ({steps}) and a positive multiple of trainer.save_every ({save_every}) and trainer.val_every ({val_every})"
                ));
            }
            if (scheduler.horizon as usize) > k {
                return bad(format!(
                    "scheduler.horizon ({}) is beyond experiment.jump_at {k}: no checkpoint pair that far apart exists before the jump",
                    scheduler.horizon
                ));
            }
        }
        scheduler.check(save_every)?;
        if e.targets.is_empty() || e.targets.iter().any(|t| !(*t > 0.0 && *t <= 1.0)) {
            return bad(format!(
                "experiment.targets is {:?}; expected fractions in (0, 1]",
                e.targets
            ));
        }
        if !e.targets.contains(&e.headline) {
            return bad(format!(
                "experiment.headline ({}) must be one of experiment.targets {:?}",
                e.headline, e.targets
            ));
        }
        if e.smooth == 0 {
            return bad("experiment.smooth must be at least 1 validation".into());
        }
        if e.lr_scales.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return bad(format!(
                "experiment.lr_scales is {:?}; expected positive multiples",
                e.lr_scales
            ));
        }
        if e.at_tuned_lr && e.lr_scales.is_empty() {
            return bad("experiment.at_tuned_lr needs experiment.lr_scales to tune over".into());
        }
        if !e.lr_scales.is_empty() && e.tuning_seeds == 0 {
            return bad("experiment.lr_scales needs experiment.tuning_seeds of at least 1".into());
        }
        let tuning = e.tuning_first_seed..e.tuning_first_seed + e.tuning_seeds as u64;
        let reporting = e.first_seed..e.first_seed + e.seeds as u64;
        if !e.lr_scales.is_empty() && tuning.start < reporting.end && reporting.start < tuning.end {
            return bad(format!(
                "the tuning seeds {tuning:?} overlap the reporting seeds {reporting:?}: B* must be chosen on seeds the report does not use (move experiment.tuning_first_seed)"
            ));
        }
        if let Some(h) = e
            .diag_horizons
            .iter()
            .find(|h| **h == 0 || !h.is_multiple_of(save_every as u64))
        {
            return bad(format!(
                "experiment.diag_horizons has {h}: each must be a positive multiple of trainer.save_every ({save_every})"
            ));
        }
        if !(e.confidence > 0.0 && e.confidence < 1.0) {
            return bad(format!(
                "experiment.confidence is {}; expected a level in (0, 1)",
                e.confidence
            ));
        }
        if e.final_window == 0 || e.final_window * val_every > steps {
            return bad(format!(
                "experiment.final_window ({}) must be between 1 and the number of validations",
                e.final_window
            ));
        }
        if e.rounds == 0 {
            return bad("experiment.rounds must be at least 1".into());
        }
        if e.rounds > 1 {
            let ev = e.every;
            if ev < 2 * save_every
                || (ev as u64) < scheduler.horizon
                || !ev.is_multiple_of(save_every)
                || !ev.is_multiple_of(val_every)
            {
                return bad(format!(
                    "experiment.every ({ev}) must be a multiple of trainer.save_every ({save_every}) and trainer.val_every ({val_every}), at least two checkpoints and at least scheduler.horizon ({}) apart",
                    scheduler.horizon
                ));
            }
            let first_update = Method::Factor(FactorKind::ScaleFirst);
            if e.methods.contains(&first_update) {
                return bad(format!(
                    "experiment.rounds ({}) > 1 with `{first_update}`: a later jump would start from a segment whose first checkpoint is the previous jump, not the run's first update",
                    e.rounds
                ));
            }
            if let Some(k) = e
                .jump_at
                .iter()
                .find(|&&k| k + (e.rounds - 1) * ev >= steps)
            {
                return bad(format!(
                    "experiment.rounds ({}) jumps every {ev} steps from {k} do not fit before trainer.steps ({steps})",
                    e.rounds
                ));
            }
        }
        Ok(Self {
            experiment,
            scheduler,
            steps,
            save_every,
            val_every,
        })
    }

    /// Arms per seed and jump step: the control, then the methods.
    pub fn arms(&self) -> Vec<String> {
        std::iter::once(CONTROL.to_string())
            .chain(self.experiment.methods.iter().map(|m| m.to_string()))
            .collect()
    }

    /// The learning-rate multiples of the tuning: 1 and every `lr_scales`, ascending.
    pub fn scales(&self) -> Vec<f64> {
        let mut s = self.experiment.lr_scales.clone();
        if !s.contains(&1.0) {
            s.push(1.0);
        }
        s.sort_by(f64::total_cmp);
        s.dedup();
        s
    }

    pub fn tuning_seeds(&self) -> Vec<u64> {
        (0..self.experiment.tuning_seeds as u64)
            .map(|i| self.experiment.tuning_first_seed + i)
            .collect()
    }

    pub fn seeds(&self) -> Vec<u64> {
        (0..self.experiment.seeds as u64)
            .map(|i| self.experiment.first_seed + i)
            .collect()
    }

    /// The RL steps the whole experiment trains, for a progress bar: the tuning, then per seed
    /// its baseline, B* (unless B* is the configured rate, which only the tuning tells; the
    /// count is then too high and a bar ends early) and the arms. With kept moments the control
    /// is the baseline itself and trains nothing.
    pub fn total_steps(&self) -> usize {
        let (steps, e) = (self.steps, &self.experiment);
        let arms = self.arms().len() - usize::from(self.scheduler.keep_moments);
        let arm_steps: usize = e.jump_at.iter().map(|k| arms * (steps - k)).sum();
        let (tuning, tuned) = if e.lr_scales.is_empty() {
            (0, 0)
        } else {
            (
                e.tuning_seeds * self.scales().len(),
                usize::from(!e.at_tuned_lr),
            )
        };
        tuning * steps + self.seeds().len() * ((1 + tuned) * steps + arm_steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use next_predictor::PredictorKind;

    fn plan(e: ExperimentSection, keep_moments: bool) -> Plan {
        let s = SchedulerSection {
            horizon: 10,
            keep_moments,
            ..SchedulerSection::default()
        };
        Plan::new(e, s, 100, 10, 10).unwrap()
    }

    #[test]
    fn total_steps_count_the_tuning_the_baselines_and_every_arm_that_trains() {
        let e = ExperimentSection {
            seeds: 2,
            jump_at: vec![20, 60],
            methods: vec![Method::Merged(PredictorKind::TwoPoint)],
            ..ExperimentSection::default()
        };
        // Per seed: the baseline (100), then at K = 20 and 60 the control and the method
        // (2 x 80 + 2 x 40); with kept moments the control trains nothing (80 + 40).
        assert_eq!(plan(e.clone(), false).total_steps(), 2 * (100 + 240));
        assert_eq!(plan(e.clone(), true).total_steps(), 2 * (100 + 120));
        // The tuning: 1 and 2 on two tuning seeds, then B* on every reporting seed as well.
        let tuned = ExperimentSection {
            lr_scales: vec![2.0],
            tuning_seeds: 2,
            ..e.clone()
        };
        assert_eq!(
            plan(tuned.clone(), true).total_steps(),
            2 * 2 * 100 + 2 * (2 * 100 + 120)
        );
        // At the tuned rate the baselines are B*: no second one per seed.
        let at = ExperimentSection {
            at_tuned_lr: true,
            ..tuned
        };
        assert_eq!(plan(at, true).total_steps(), 2 * 2 * 100 + 2 * (100 + 120));
    }
}
