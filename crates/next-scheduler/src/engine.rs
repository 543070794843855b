//! The in-process engine: this project's trainer, run segment by segment with the learning-rate
//! schedule of the whole run.

use std::path::{Path, PathBuf};

use next_predictor::factor::FactorJump;
use next_trainer::checkpoint;
use next_trainer::config::TrainConfig;
use next_trainer::metrics;
use next_trainer::train::{self, Event, FactorLine, Jump, ScoreSet, Scorer};
use next_verifiers::Registry;
use serde_json::{Map, Value};

use crate::config::{EngineKind, EngineSection, SchedulerSection};
use crate::jump::Predicted;
use crate::{Engine, Result, Trl, Verl};

/// A callback for training progress: the segment's run directory and the trainer's event.
pub type TrainProgress<'a> = Box<dyn FnMut(&Path, Event) + 'a>;

/// This project's trainer behind the [`Engine`] seam. Scoring keeps the base model and the
/// validation set loaded between calls, and scores every λ of a search in one pass.
pub struct InProcess<'a> {
    pub cfg: TrainConfig,
    pub base: PathBuf,
    /// Training progress (steps, validations, checkpoints) of every segment.
    pub on_train: TrainProgress<'a>,
    /// The configured learning rate, which `set_lr_scale` multiplies.
    lr: f64,
    /// The verifiers, built once (so Python reward workers live across segments).
    verifiers: Option<Registry>,
    validation: Option<Scorer>,
    selection: Option<Scorer>,
}

impl<'a> InProcess<'a> {
    pub fn new(cfg: TrainConfig, base: PathBuf, on_train: TrainProgress<'a>) -> Self {
        InProcess {
            lr: cfg.optim.lr,
            cfg,
            base,
            on_train,
            verifiers: None,
            validation: None,
            selection: None,
        }
    }

    /// Judges rows with `registry` (ours plus verifiers registered from another crate; the
    /// config's `[reward]` section is applied on top) instead of the config's own.
    pub fn with_verifiers(mut self, registry: Registry) -> Result<Self> {
        self.verifiers = Some(self.cfg.reward.apply(registry)?);
        Ok(self)
    }

    fn verifiers(&mut self) -> Result<Registry> {
        if self.verifiers.is_none() {
            self.verifiers = Some(train::verifiers(&self.cfg)?);
        }
        Ok(self.verifiers.clone().expect("just made"))
    }

    fn slot(&mut self, set: ScoreSet) -> &mut Option<Scorer> {
        match set {
            ScoreSet::Validation => &mut self.validation,
            ScoreSet::Selection => &mut self.selection,
        }
    }

    /// The greedy validation of the base with `adapter` as `metrics.jsonl` values
    /// (`val-core/<source>/reward/mean@1`), for engines that train out of process.
    pub fn validation_metrics(&mut self, adapter: &Path) -> Result<Map<String, Value>> {
        let v = self.scorer(ScoreSet::Validation)?.validate(Some(adapter))?;
        Ok(v.mean_by_source
            .iter()
            .map(|(src, mean)| (metrics::val_key(src, 1), Value::from(*mean)))
            .collect())
    }

    fn scorer(&mut self, set: ScoreSet) -> Result<&mut Scorer> {
        if self.slot(set).is_none() {
            let registry = self.verifiers()?;
            let scorer = Scorer::new(&self.cfg, &self.base, set, registry)?;
            *self.slot(set) = Some(scorer);
        }
        Ok(self.slot(set).as_mut().expect("just made"))
    }
}

impl std::fmt::Debug for InProcess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("base", &self.base)
            .finish()
    }
}

impl Engine for InProcess<'_> {
    fn train(&mut self, run: &Path, step: usize) -> Result<()> {
        let mut cfg = self.cfg.clone();
        cfg.trainer.stop_at = step;
        // Every run directory says what it was trained with (seed, learning rate, stop step).
        std::fs::create_dir_all(run).map_err(|e| next_files::Error::io(run, e))?;
        next_files::resolved::write(&run.join(next_files::resolved::FILE), &cfg)?;
        let registry = self.verifiers()?;
        let on = &mut self.on_train;
        train::train_with(&cfg, run, &self.base, &registry, &mut |e| on(run, e))?;
        Ok(())
    }

    fn score(&mut self, adapter: &Path, set: ScoreSet) -> Result<(f64, u64)> {
        Ok(self.scorer(set)?.score(Some(adapter))?)
    }

    fn score_jumps(
        &mut self,
        adapter: &Path,
        predicted: &Predicted,
        rank: usize,
        lambdas: &[f64],
    ) -> Result<Vec<(f64, u64)>> {
        let scorer = self.scorer(ScoreSet::Selection)?;
        Ok(match predicted {
            Predicted::Merged(predictions) => {
                let terms: Vec<_> = predictions
                    .iter()
                    .map(|p| {
                        let terms = p.terms[..p.terms.len().min(rank)]
                            .iter()
                            .map(|(s, u, v)| (*s, u.as_slice().to_vec(), v.as_slice().to_vec()))
                            .collect();
                        (module_path(&p.module), terms)
                    })
                    .collect();
                scorer.score_jumps(adapter, Jump::Added(&terms), lambdas)?
            }
            Predicted::Factor(f) => {
                scorer.score_jumps(adapter, Jump::Factor(&factor_terms(f)), lambdas)?
            }
        })
    }

    fn start_from(
        &mut self,
        run: &Path,
        from: &Path,
        step: usize,
        adapter: &Path,
        keep_moments: bool,
    ) -> Result<()> {
        let state = checkpoint::state(from, step)?;
        let opts = self
            .cfg
            .model
            .load_options()
            .map_err(next_trainer::Error::from)?;
        let moments = if keep_moments {
            checkpoint::Moments::Carry(checkpoint::optimizer_file(from, step))
        } else {
            checkpoint::Moments::Fresh
        };
        checkpoint::start_from(run, &self.base, opts, adapter, &state, &moments)?;
        Ok(())
    }

    fn set_seed(&mut self, seed: u64) {
        self.cfg.trainer.seed = seed;
    }

    fn set_lr_scale(&mut self, scale: f64) {
        self.cfg.optim.lr = self.lr * scale;
    }
}

/// The engine `[engine]` asks for, around the in-process one (whose scorers every engine uses).
/// `next` is the binary the external engines score rewards with (`next verify --serve`);
/// `scheduler` is checked against what the engine can do (verl cannot keep moments).
pub fn build<'a>(
    inproc: InProcess<'a>,
    section: &EngineSection,
    scheduler: &SchedulerSection,
    next: PathBuf,
) -> Result<Box<dyn Engine + 'a>> {
    Ok(match section.kind {
        EngineKind::Inproc => Box::new(inproc),
        EngineKind::Trl => Box::new(Trl::new(inproc, section.clone(), next)?),
        EngineKind::Verl => Box::new(Verl::new(inproc, section.clone(), scheduler, next)?),
    })
}

/// The model's path of a module from its PEFT key stem (`base_model.model.` dropped).
fn module_path(stem: &str) -> String {
    stem.strip_prefix(next_files::peft::PREFIX)
        .unwrap_or(stem)
        .to_string()
}

/// `jump`'s line of candidates per module, as the model's jump branch takes it (row-major).
fn factor_terms(jump: &FactorJump) -> Vec<(String, FactorLine)> {
    let row_major = |m: &nalgebra::DMatrix<f64>| m.transpose().as_slice().to_vec();
    jump.base
        .iter()
        .map(|(stem, p)| {
            let d = &jump.dir[stem];
            let line = FactorLine {
                r: p.a.nrows(),
                scaling: jump.scaling,
                b: row_major(&p.b),
                a: row_major(&p.a),
                db: row_major(&d.b),
                da: row_major(&d.a),
            };
            (module_path(stem), line)
        })
        .collect()
}
