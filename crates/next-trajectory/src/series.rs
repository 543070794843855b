//! The checkpoints of a series opened once (adapters and full-weight files memory-mapped), with
//! the checks that they agree on modules and shapes, and their fingerprints.

use std::collections::BTreeSet;
use std::path::Path;

use crate::adapter::Adapter;
use crate::full::Weights;
use crate::layout::{Checkpoint, Format};
use crate::store::Module;
use crate::{Error, Result};

/// The checkpoints' weights, opened (memory-mapped) once.
pub(crate) enum Series {
    Lora(Vec<Adapter>),
    Full {
        base: Option<Weights>,
        cps: Vec<Weights>,
    },
}

impl Series {
    /// Size and modification time of checkpoint `i`'s files, to notice it being rewritten.
    pub(crate) fn fingerprint(&self, i: usize) -> (u64, u128) {
        match self {
            Series::Lora(a) => next_files::fingerprint::of([a[i].file()]),
            Series::Full { cps, .. } => {
                let files = cps[i].files();
                next_files::fingerprint::of(files.iter().map(|p| p.as_path()))
            }
        }
    }
}

/// Opens every checkpoint and checks they agree on modules and shapes.
pub(crate) fn open_series(
    format: Format,
    cps: &[Checkpoint],
    base: Option<&Path>,
    has_zero: bool,
) -> Result<(Series, Vec<Module>, Option<f64>)> {
    if format == Format::Full {
        let weights: Vec<Weights> = cps
            .iter()
            .map(|c| Weights::open(&c.dir))
            .collect::<Result<_>>()?;
        let base = match (base, has_zero) {
            (Some(b), _) => Some(Weights::open(b)?),
            (None, true) => None,
            (None, false) => {
                return Err(Error::Layout(
                    "full-parameter mode needs W_0: pass the base model directory, or keep a step-0 checkpoint".into(),
                ))
            }
        };
        let reference = base.as_ref().unwrap_or(&weights[0]);
        let modules: Vec<Module> = reference
            .block_matrices()
            .into_iter()
            .map(|(name, out, inp)| Module { name, out, inp })
            .collect();
        if modules.is_empty() {
            return Err(Error::format(
                &reference.dir,
                "holds no 2-D `layers.N.*.weight` matrices",
            ));
        }
        let want: Vec<(String, usize, usize)> = modules
            .iter()
            .map(|m| (m.name.clone(), m.out, m.inp))
            .collect();
        for (w, c) in weights.iter().zip(cps) {
            if w.block_matrices() != want {
                return Err(Error::Layout(format!(
                    "checkpoint at step {} ({}) has other matrices or shapes than {}",
                    c.step,
                    c.dir.display(),
                    reference.dir.display()
                )));
            }
        }
        return Ok((Series::Full { base, cps: weights }, modules, None));
    }
    let adapters: Vec<Adapter> = cps
        .iter()
        .map(|c| Adapter::open(&c.dir))
        .collect::<Result<_>>()?;
    let first = &adapters[0];
    for (a, c) in adapters.iter().zip(cps).skip(1) {
        if a.r != first.r {
            return Err(Error::Layout(format!(
                "the LoRA rank changes mid-run: r = {} at step {} but {} at step {} ({})",
                first.r,
                cps[0].step,
                a.r,
                c.step,
                a.dir.display()
            )));
        }
        if a.scaling != first.scaling {
            return Err(Error::Layout(format!(
                "the LoRA scaling changes mid-run: {} at step {} but {} at step {} ({})",
                first.scaling,
                cps[0].step,
                a.scaling,
                c.step,
                a.dir.display()
            )));
        }
        let (mine, theirs): (BTreeSet<_>, BTreeSet<_>) =
            (first.modules.keys().collect(), a.modules.keys().collect());
        if let Some(m) = mine.symmetric_difference(&theirs).next() {
            return Err(Error::Layout(format!(
                "module `{m}` is in only one of the adapters at steps {} and {} ({})",
                cps[0].step,
                c.step,
                a.file().display()
            )));
        }
        for (name, s) in &a.modules {
            let f = &first.modules[name];
            if (s.out, s.inp) != (f.out, f.inp) {
                return Err(Error::Layout(format!(
                    "module `{name}` changes shape mid-run: {}x{} at step {} but {}x{} at step {} ({})",
                    f.out,
                    f.inp,
                    cps[0].step,
                    s.out,
                    s.inp,
                    c.step,
                    a.file().display()
                )));
            }
        }
    }
    let modules = first
        .modules
        .iter()
        .map(|(name, s)| Module {
            name: name.clone(),
            out: s.out,
            inp: s.inp,
        })
        .collect();
    let scaling = Some(first.scaling);
    Ok((Series::Lora(adapters), modules, scaling))
}
