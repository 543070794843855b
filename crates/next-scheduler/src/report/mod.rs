//! The experiment's report: one row per method (paired savings against the control with
//! bootstrap intervals, wall clock with every overhead, accuracies), `report.md`, and PNG
//! plots (drawn as SVG, rasterised with resvg so labels use the system's fonts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use next_trajectory::analyze::{self, line_chart};
use serde::Serialize;

use crate::experiment::{accuracy_at, reached, Arm, Baseline, Plan, Point, Results, CONTROL};
use crate::stats::{mean_sd, paired_saving, Interval, Verdict};
use crate::{io, Error, Result};

/// One method's line of the results table, at one jump step.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub jump_at: usize,
    pub arm: String,
    /// Seeds in which the arm reached the target by the last step.
    pub reached: usize,
    pub seeds: usize,
    /// Mean RL steps to the target (an arm that never reached it counts `steps + val_every`).
    pub steps_to_target: f64,
    /// Paired against the control, in percent of the control's steps (positive: fewer).
    pub steps_saved: Interval,
    pub steps_saved_lower: Interval,
    pub wall_saved: Interval,
    /// Validation accuracy at the last step: mean and spread over seeds (NaN if stopped early).
    pub final_accuracy: (f64, f64),
    /// Right after the jump, and its difference from the control's accuracy there.
    pub jump_accuracy: f64,
    pub jump_gain: f64,
    pub lambda: f64,
    pub overhead_seconds: f64,
}

impl Row {
    pub fn verdict(&self) -> Verdict {
        self.steps_saved.verdict()
    }
}

/// Steps and seconds to `target` on `curve`; a curve that never gets there counts one
/// validation interval past its end (and the seconds at its end plus that many steps).
fn cost(curve: &[Point], target: f64, plan: &Plan) -> (f64, f64) {
    if let Some(p) = reached(curve, target) {
        return (p.step as f64, p.seconds);
    }
    let last = curve.last().copied().unwrap_or(Point {
        step: 0,
        accuracy: f64::NAN,
        seconds: 0.0,
    });
    let per_step = if last.step > 0 {
        last.seconds / last.step as f64
    } else {
        0.0
    };
    let extra = (plan.steps + plan.val_every).saturating_sub(last.step) as f64;
    (
        (plan.steps + plan.val_every) as f64,
        last.seconds + extra * per_step,
    )
}

/// The table: for each jump step, the control first, then the methods in config order.
pub fn rows(plan: &Plan, results: &Results) -> Vec<Row> {
    let e = &plan.experiment;
    let baseline: BTreeMap<u64, &Baseline> =
        results.baselines.iter().map(|b| (b.seed, b)).collect();
    let mut out = vec![];
    for &k in &e.jump_at {
        let arm_of = |seed: u64, name: &str| -> Option<&Arm> {
            results
                .arms
                .iter()
                .find(|a| a.seed == seed && a.jump_at == k && a.name == name)
        };
        for name in plan.arms() {
            // Seeds where both this arm and the control finished (pairs).
            let pairs: Vec<(&Baseline, &Arm, &Arm)> = baseline
                .values()
                .filter_map(|b| Some((*b, arm_of(b.seed, CONTROL)?, arm_of(b.seed, &name)?)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&Baseline, &Arm) -> f64, which: bool| -> Vec<f64> {
                pairs
                    .iter()
                    .map(|(b, c, a)| f(b, if which { a } else { c }))
                    .collect()
            };
            let steps = |b: &Baseline, a: &Arm| cost(&a.curve, b.target, plan).0;
            let secs = |b: &Baseline, a: &Arm| cost(&a.curve, b.target, plan).1;
            let lower = |b: &Baseline, a: &Arm| cost(&a.curve, b.lower_target, plan).0;
            let seed = 0x5eed ^ k as u64;
            let interval = |f: &dyn Fn(&Baseline, &Arm) -> f64| {
                paired_saving(
                    &col(f, false),
                    &col(f, true),
                    e.resamples,
                    e.confidence,
                    seed,
                )
            };
            let mean = |x: Vec<f64>| mean_sd(&x).0;
            out.push(Row {
                jump_at: k,
                arm: name.clone(),
                reached: pairs
                    .iter()
                    .filter(|(b, _, a)| reached(&a.curve, b.target).is_some())
                    .count(),
                seeds: pairs.len(),
                steps_to_target: mean(col(&steps, true)),
                steps_saved: interval(&steps),
                steps_saved_lower: interval(&lower),
                wall_saved: interval(&secs),
                final_accuracy: mean_sd(&col(&|_, a| accuracy_at(&a.curve, plan.steps), true)),
                jump_accuracy: mean(col(&|_, a| a.jump_accuracy(), true)),
                jump_gain: mean(
                    pairs
                        .iter()
                        .map(|(_, c, a)| a.jump_accuracy() - c.jump_accuracy())
                        .collect(),
                ),
                lambda: mean(col(&|_, a| a.lambda.unwrap_or(0.0), true)),
                overhead_seconds: mean(col(&|_, a| a.overhead.total(), true)),
            });
        }
    }
    out
}

fn pct(i: &Interval) -> String {
    if i.estimate.is_nan() {
        return "–".into();
    }
    if i.lo.is_nan() {
        return format!("{:+.1}% (n={})", i.estimate, i.n);
    }
    format!("{:+.1}% [{:+.1}, {:+.1}]", i.estimate, i.lo, i.hi)
}

fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// The results table as Markdown.
pub fn table(plan: &Plan, rows: &[Row]) -> String {
    let level = (plan.experiment.confidence * 100.0).round();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| K | arm | reached | steps to target | steps saved ({level}% CI) | to lower target | wall clock saved | verdict | final acc (± sd) | acc after jump (vs control) | λ | overhead s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        // The control is what the others are measured against: no saving, gain or λ of its own.
        let vs_control = |x: String| if r.arm == CONTROL { "–".into() } else { x };
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} ± {} | {} ({}) | {} | {} |",
            r.jump_at,
            r.arm,
            r.reached,
            r.seeds,
            num(r.steps_to_target, 1),
            vs_control(pct(&r.steps_saved)),
            vs_control(pct(&r.steps_saved_lower)),
            vs_control(pct(&r.wall_saved)),
            vs_control(r.verdict().to_string()),
            num(r.final_accuracy.0, 3),
            num(r.final_accuracy.1, 3),
            num(r.jump_accuracy, 3),
            vs_control(format!("{:+.3}", r.jump_gain)),
            vs_control(num(r.lambda, 2)),
            num(r.overhead_seconds, 1),
        );
    }
    s
}

/// Mean over seeds of each arm's curve at jump step `k`, by step: (step, accuracy, seconds).
fn mean_curves(results: &Results, k: usize, names: &[String]) -> Vec<(String, Vec<Point>)> {
    let mut out = vec![];
    let mut push = |label: String, curves: Vec<&[Point]>| {
        let mut by: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
        for c in &curves {
            for p in c.iter() {
                let e = by.entry(p.step).or_default();
                e.0 += p.accuracy;
                e.1 += p.seconds;
                e.2 += 1;
            }
        }
        // Only steps every seed has, so an early-stopped seed does not bend the mean.
        let n = curves.len();
        let pts = by
            .into_iter()
            .filter(|(_, v)| v.2 == n)
            .map(|(step, (a, s, m))| Point {
                step,
                accuracy: a / m as f64,
                seconds: s / m as f64,
            })
            .collect();
        out.push((label, pts));
    };
    push(
        "baseline".into(),
        results.baselines.iter().map(|b| &b.curve[..]).collect(),
    );
    for name in names {
        let curves: Vec<&[Point]> = results
            .arms
            .iter()
            .filter(|a| a.jump_at == k && &a.name == name)
            .map(|a| &a.curve[..])
            .collect();
        if !curves.is_empty() {
            push(name.clone(), curves);
        }
    }
    out
}

/// The accuracy at equal step budgets (mean over seeds, `curves` from [`mean_curves`]) at a
/// few steps after the jump at `k`.
fn budget_table(plan: &Plan, curves: &[(String, Vec<Point>)], k: usize) -> String {
    let ve = plan.val_every;
    let span = plan.steps - k;
    let mut steps: Vec<usize> = [0, span / 4, span / 2, 3 * span / 4, span]
        .iter()
        .map(|d| k + (d / ve) * ve)
        .collect();
    steps.dedup();
    let mut s = String::new();
    let _ = write!(s, "| arm |");
    for t in &steps {
        let _ = write!(s, " step {t} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in &steps {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for (name, c) in curves {
        let _ = write!(s, "| {name} |");
        for &t in &steps {
            let _ = write!(s, " {} |", num(accuracy_at(c, t), 3));
        }
        s.push('\n');
    }
    s
}

/// Loads the system's fonts once; the generic `sans-serif` maps to the first common family
/// found (fontdb's own default, Arial, is rarely installed on Linux).
fn svg_options() -> resvg::usvg::Options<'static> {
    let mut opt = resvg::usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    let families: Vec<String> = db
        .faces()
        .flat_map(|f| f.families.iter().map(|(n, _)| n.clone()))
        .collect();
    let preferred = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "FreeSans",
        "Arial",
    ];
    let pick = preferred
        .iter()
        .find(|p| families.iter().any(|f| f == *p))
        .map(|s| s.to_string())
        .or_else(|| families.first().cloned());
    if let Some(f) = pick {
        db.set_sans_serif_family(f.clone());
        opt.font_family = f;
    } else {
        tracing::warn!("no system fonts found: report plots will have no text");
    }
    opt
}

/// Rasterises the SVG at `svg` to `png` (written atomically).
fn rasterise(svg: &Path, png: &Path, opt: &resvg::usvg::Options) -> Result<()> {
    let bad = |m: String| Error::Config(format!("{}: {m}", svg.display()));
    let data = std::fs::read(svg).map_err(io(svg))?;
    let tree = resvg::usvg::Tree::from_data(&data, opt).map_err(|e| bad(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| bad("empty image".into()))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let bytes = pixmap.encode_png().map_err(|e| bad(e.to_string()))?;
    next_model::io::write_atomic(png, &bytes).map_err(|e| bad(e.to_string()))
}

/// A plot to draw: file stem, title, x and y labels, and (label, points) lines.
type Chart = (
    String,
    String,
    &'static str,
    &'static str,
    Vec<(String, Vec<(f64, f64)>)>,
);

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
    pub rows: Vec<Row>,
    pub table: String,
}

/// Writes `report.md` and the plots into `dir`. `config` is the resolved config as text and
/// `commit` what produced it; `trajectory`, if given, is the analysed baseline's store.
pub fn write(
    dir: &Path,
    plan: &Plan,
    results: &Results,
    config: &str,
    commit: &str,
    trajectory: Option<&next_trajectory::store::Store>,
) -> Result<Report> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let rows = rows(plan, results);
    let table = table(plan, &rows);
    let names = plan.arms();
    let mut charts: Vec<Chart> = vec![];
    let mut budgets = vec![];
    for &k in &plan.experiment.jump_at {
        let curves = mean_curves(results, k, &names);
        budgets.push(budget_table(plan, &curves, k));
        let xy = |f: &dyn Fn(&Point) -> (f64, f64)| -> Vec<(String, Vec<(f64, f64)>)> {
            curves
                .iter()
                .map(|(n, c)| (n.clone(), c.iter().map(f).collect()))
                .collect()
        };
        charts.push((
            format!("accuracy_vs_step_k{k}"),
            format!("validation accuracy, jump at step {k} (mean over seeds)"),
            "RL step",
            "accuracy",
            xy(&|p| (p.step as f64, p.accuracy)),
        ));
        charts.push((
            format!("accuracy_vs_time_k{k}"),
            format!("validation accuracy vs wall clock incl. overhead, jump at {k}"),
            "seconds",
            "accuracy",
            xy(&|p| (p.seconds, p.accuracy)),
        ));
        let mut search = vec![];
        for name in &plan.experiment.methods {
            let mut by: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
            for a in results
                .arms
                .iter()
                .filter(|a| a.jump_at == k && &a.name == name)
            {
                for &(l, s) in &a.candidates {
                    let e = by.entry(l.to_bits()).or_default();
                    e.0 += s;
                    e.1 += 1;
                }
            }
            let mut pts: Vec<(f64, f64)> = by
                .into_iter()
                .map(|(l, (s, n))| (f64::from_bits(l), s / n as f64))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            search.push((name.clone(), pts));
        }
        charts.push((
            format!("lambda_search_k{k}"),
            format!("validation accuracy of the jump vs λ at step {k} (mean over seeds)"),
            "λ",
            "accuracy",
            search,
        ));
    }
    let mut analysis = String::new();
    if let Some(store) = trajectory {
        let summaries = analyze::summarize(store);
        analysis = analyze::table(&summaries);
        charts.push((
            "rank1_energy".into(),
            "rank-1 energy of W_t - W_0 in the baseline (mean over layers)".into(),
            "RL step",
            "energy",
            analyze::mean_by_kind(&summaries, &|s| {
                s.steps
                    .iter()
                    .copied()
                    .zip(s.energy.iter().copied())
                    .collect()
            }),
        ));
    }
    let opt = svg_options();
    let mut plots = vec![];
    for (name, title, x, y, lines) in &charts {
        let svg = dir.join(format!("{name}.svg"));
        if line_chart(&svg, title, x, y, lines)? {
            let png = dir.join(format!("{name}.png"));
            rasterise(&svg, &png, &opt)?;
            plots.push(png);
        }
    }
    let mut md = String::new();
    let e = &plan.experiment;
    let _ = writeln!(md, "# Predict-extend experiment\n");
    let _ = writeln!(
        md,
        "Commit `{commit}`. {} seed(s) ({}..), {} RL steps per run, validation every {} steps; arms branch from each seed's baseline at step(s) {:?} and restart there with {}, the control with no jump.\n",
        e.seeds,
        e.first_seed,
        plan.steps,
        plan.val_every,
        e.jump_at,
        if plan.scheduler.keep_moments {
            "the baseline's optimizer moments (`keep_moments`; zeros for the factors a jump adds)"
        } else {
            "a fresh optimizer state"
        }
    );
    let _ = writeln!(
        md,
        "Target: the baseline's final validation accuracy (mean of its last {} validation(s)) per seed; the lower target is {:.0}% of the way from the base accuracy to it. Steps and wall clock are paired against the control on the same seed; the saving is 100·Σ(control − arm)/Σ control with a {:.0}% percentile bootstrap interval over seeds ({} resamples). A method **saves** only when the whole interval is above zero. Wall clock is the RL steps' time (the baseline prefix plus the arm's own) plus the jump's extraction, fitting and λ search; validation is not counted (every arm validates alike). An arm that never reaches the target counts as {} steps.{}\n",
        e.final_window,
        e.lower_target * 100.0,
        e.confidence * 100.0,
        e.resamples,
        plan.steps + plan.val_every,
        if e.stop_at_target {
            " Arms stop once they reach the target (`stop_at_target`), so final accuracy is not measured."
        } else {
            ""
        }
    );
    if e.rounds > 1 {
        let _ = writeln!(
            md,
            "Each method arm jumps {} times: at K, then every {} steps, each jump fitted on the arm's own trajectory since its previous one (λ below is the first jump's).\n",
            e.rounds, e.every
        );
    }
    let _ = writeln!(md, "## Results\n\n{table}");
    for (&k, budget) in e.jump_at.iter().zip(&budgets) {
        let _ = writeln!(
            md,
            "### Accuracy at equal step budgets, jump at {k} (mean over seeds)\n\n{budget}"
        );
        let _ = writeln!(md, "![accuracy vs step](accuracy_vs_step_k{k}.png)\n");
        let _ = writeln!(md, "![accuracy vs wall clock](accuracy_vs_time_k{k}.png)\n");
        let _ = writeln!(md, "![λ search](lambda_search_k{k}.png)\n");
    }
    let _ = writeln!(md, "## Baselines\n");
    let _ = writeln!(md, "| seed | base acc | final acc (target) | lower target | steps to target | wall s to target |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for b in &results.baselines {
        let (st, se) = cost(&b.curve, b.target, plan);
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {st:.0} | {se:.1} |",
            b.seed, b.curve[0].accuracy, b.target, b.lower_target
        );
    }
    if !analysis.is_empty() {
        let _ = writeln!(
            md,
            "\n## Trajectory of the first baseline\n\n![rank-1 energy](rank1_energy.png)\n\n```text\n{analysis}```\n"
        );
    }
    let _ = writeln!(md, "## Configuration\n\n```toml\n{config}```");
    let markdown = dir.join("report.md");
    next_model::io::write_atomic(&markdown, md.as_bytes())
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Report {
        markdown,
        plots,
        rows,
        table,
    })
}
