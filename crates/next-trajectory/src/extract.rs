//! `next extract`: from a checkpoint series to the store. Plans which (step, module, kind)
//! records are missing, computes them in parallel across matrices (rayon), and appends them in
//! one atomic commit, so a second run only processes what is new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::factored::{top_k_difference, Factors, Triplets};
use crate::full::top_k_dense;
use crate::layout::{self, Checkpoint, Format};
use crate::series::{open_series, Series};
use crate::store::{Index, Kind, Module, Record, Source, Store, VERSION};
use crate::{Error, Result};

/// Where the checkpoints come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A run directory; format detected when None.
    Run {
        dir: PathBuf,
        format: Option<Format>,
    },
    /// Explicit (step, adapter directory) pairs.
    List(Vec<Checkpoint>),
}

/// Extraction settings; gaps are in steps and must be multiples of the checkpoint interval.
#[derive(Debug, Clone)]
pub struct Options {
    /// Δ of the local delta W_t − W_(t−Δ); default one checkpoint interval.
    pub delta_gap: Option<u64>,
    /// g of the target delta W_(t+g) − W_t; default five intervals (50 steps at NExt's 10).
    pub target_gap: Option<u64>,
    /// Singular triplets kept per record.
    pub rank: usize,
    /// Full-parameter mode: the weights W_0 (default: a step-0 checkpoint).
    pub base: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            delta_gap: None,
            target_gap: None,
            rank: 1,
            base: None,
        }
    }
}

/// What an extraction did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub store: PathBuf,
    pub format: Format,
    pub checkpoints: usize,
    pub new_records: usize,
    pub total_records: u64,
    pub store_bytes: u64,
}

/// A planned record: its step and kind, and the two sides of its delta (checkpoint indices;
/// None is the base weights).
#[derive(Debug, Clone, Copy)]
struct Job {
    step: u64,
    kind: Kind,
    new: Option<usize>,
    old: Option<usize>,
}

/// Extracts every missing record of `input` into the store at `out`.
pub fn extract(
    input: &Input,
    out: &Path,
    opts: &Options,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Summary> {
    let (format, cps) = match input {
        Input::Run { dir, format } => layout::discover(dir, *format)?,
        Input::List(list) => (Format::List, layout::from_list(list.clone())?),
    };
    if opts.rank == 0 {
        return Err(Error::Layout("rank must be at least 1".into()));
    }
    let interval = layout::interval(&cps);
    let delta_gap = opts.delta_gap.unwrap_or(interval);
    let target_gap = opts.target_gap.unwrap_or(5 * interval);
    for (name, gap) in [("delta gap", delta_gap), ("target gap", target_gap)] {
        if gap == 0 || gap % interval != 0 {
            return Err(Error::Layout(format!(
                "the {name} ({gap}) must be a positive multiple of the checkpoint interval ({interval})"
            )));
        }
    }
    let has_zero = cps.first().is_some_and(|c| c.step == 0);
    let (series, modules, scaling) = open_series(format, &cps, opts.base.as_deref(), has_zero)?;
    let sources: Vec<Source> = cps
        .iter()
        .enumerate()
        .map(|(i, c)| Source {
            step: c.step,
            dir: c.dir.clone(),
            fingerprint: series.fingerprint(i),
        })
        .collect();
    let origin = if has_zero { "step 0" } else { "base" }.to_string();
    let index = Index {
        version: VERSION,
        format,
        rank: opts.rank,
        interval,
        delta_gap,
        target_gap,
        origin,
        scaling,
        modules: modules.clone(),
        sources: sources.clone(),
        records_len: 0,
        records: 0,
    };
    let mut store = if Store::exists(out) {
        let s = Store::open(out)?;
        check_compatible(&s, &index)?;
        s
    } else {
        Store::create(out, index.clone())?
    };

    // Plan: every record the checkpoints allow, minus those stored.
    let pos: BTreeMap<u64, usize> = cps.iter().enumerate().map(|(i, c)| (c.step, i)).collect();
    // A side of a delta: a checkpoint index, or None for the base weights (W_0 = 0 update).
    let at = |step: u64| -> Option<Option<usize>> {
        match pos.get(&step) {
            Some(&i) => Some(Some(i)),
            None if step == 0 => Some(None),
            None => None,
        }
    };
    let have = store.keys();
    let mut plan: BTreeMap<usize, Vec<Job>> = BTreeMap::new();
    for c in cps.iter().filter(|c| c.step > 0) {
        let t = c.step;
        let me = Some(pos[&t]);
        let mut pairs = vec![(Kind::Global, me, at(0).expect("origin"))];
        if let Some(old) = t.checked_sub(delta_gap).and_then(at) {
            pairs.push((Kind::Local, me, old));
        }
        if let Some(new) = at(t + target_gap) {
            pairs.push((Kind::Target, new, me));
        }
        for (kind, new, old) in pairs {
            for m in 0..modules.len() {
                if !have.contains(&(t, m, kind)) {
                    plan.entry(m).or_default().push(Job {
                        step: t,
                        kind,
                        new,
                        old,
                    });
                }
            }
        }
    }
    let total = plan.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    progress(0, total);
    let per_module: Vec<Result<Vec<Record>>> = plan
        .into_par_iter()
        .map(|(m, jobs)| {
            let recs = module_records(&series, &modules[m], m, &jobs, opts.rank);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total);
            recs
        })
        .collect();
    let mut records = vec![];
    for r in per_module {
        records.extend(r?);
    }
    records.sort_by_key(|r| (r.step, r.module, r.kind));
    let new_records = records.len();
    store.append(records, index)?;
    Ok(Summary {
        store: out.to_owned(),
        format,
        checkpoints: cps.len(),
        new_records,
        total_records: store.index.records,
        store_bytes: store.index.records_len,
    })
}

/// One module's records, loading each checkpoint's factors (or weights) at most once.
fn module_records(
    series: &Series,
    module: &Module,
    m: usize,
    jobs: &[Job],
    rank: usize,
) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(jobs.len());
    match series {
        Series::Lora(adapters) => {
            let mut cache: BTreeMap<usize, Factors> = BTreeMap::new();
            for &Job { new, old, .. } in jobs {
                for i in [new, old].into_iter().flatten() {
                    if let std::collections::btree_map::Entry::Vacant(e) = cache.entry(i) {
                        e.insert(adapters[i].factors(&module.name)?);
                    }
                }
            }
            for &Job {
                step,
                kind,
                new,
                old,
            } in jobs
            {
                let t = top_k_difference(new.map(|i| &cache[&i]), old.map(|i| &cache[&i]), rank)
                    .map_err(|e| {
                        Error::Shape(format!("module `{}` step {step}: {e}", module.name))
                    })?;
                out.push(record(step, m, kind, t));
            }
        }
        Series::Full { base, cps } => {
            let load = |side: Option<usize>| -> Result<DMatrixF> {
                match (side, base) {
                    (Some(i), _) => cps[i].matrix(&module.name),
                    (None, Some(b)) => b.matrix(&module.name),
                    (None, None) => cps[0].matrix(&module.name),
                }
            };
            for &Job {
                step,
                kind,
                new,
                old,
            } in jobs
            {
                let delta = load(new)? - load(old)?;
                // A fixed seed per (matrix, step, kind): results do not depend on scheduling.
                let seed = (m as u64) << 32 ^ step << 2 ^ kind as u64;
                out.push(record(step, m, kind, top_k_dense(&delta, rank, seed)));
            }
        }
    }
    Ok(out)
}

type DMatrixF = nalgebra::DMatrix<f64>;

fn record(step: u64, module: usize, kind: Kind, t: Triplets) -> Record {
    Record {
        step,
        module,
        kind,
        u: t.u.iter().map(|x| *x as f32).collect(),
        v: t.v.iter().map(|x| *x as f32).collect(),
        sigma: t.sigma,
        frobenius_sq: t.frobenius_sq,
    }
}

/// A store made earlier must have been made the same way, from the same checkpoints.
fn check_compatible(store: &Store, want: &Index) -> Result<()> {
    let have = &store.index;
    let path = store.dir.join(crate::store::INDEX);
    let same = |what: &str, a: String, b: String| -> Result<()> {
        if a == b {
            Ok(())
        } else {
            Err(Error::store(
                &path,
                format!("the store was made with {what} {a}, this extraction has {b}; extract into another --out, or remove the store"),
            ))
        }
    };
    same(
        "format",
        format!("{:?}", have.format),
        format!("{:?}", want.format),
    )?;
    same("rank", have.rank.to_string(), want.rank.to_string())?;
    same(
        "interval",
        have.interval.to_string(),
        want.interval.to_string(),
    )?;
    same(
        "delta gap",
        have.delta_gap.to_string(),
        want.delta_gap.to_string(),
    )?;
    same(
        "target gap",
        have.target_gap.to_string(),
        want.target_gap.to_string(),
    )?;
    same("origin", have.origin.clone(), want.origin.clone())?;
    if have.modules != want.modules {
        return Err(Error::store(
            &path,
            "the checkpoints now hold other modules or shapes than the store",
        ));
    }
    for s in &have.sources {
        match want.sources.iter().find(|w| w.step == s.step) {
            Some(w) if w.fingerprint != s.fingerprint => {
                return Err(Error::store(
                    &path,
                    format!(
                        "the checkpoint at step {} ({}) changed since it was extracted; extract into another --out",
                        s.step,
                        w.dir.display()
                    ),
                ))
            }
            Some(_) => {}
            None => {
                return Err(Error::store(
                    &path,
                    format!("the checkpoint at step {} ({}) is gone", s.step, s.dir.display()),
                ))
            }
        }
    }
    Ok(())
}
