//! `next trajectory analyze`: how low-rank, how stable and how linear a stored trajectory is —
//! per matrix the rank-1 energy over steps, the cosine between consecutive rank-1 directions
//! (signs aligned) and the R² of a straight-line fit of σ1(t) — as rows, JSON lines and plots.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::store::{Kind, Store};
use crate::{Error, Result};

/// One stored record, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub module: String,
    pub step: u64,
    pub kind: Kind,
    pub sigma1: f64,
    pub energy: f64,
}

/// Every record of the store, ordered by module, kind, step.
pub fn points(store: &Store) -> Vec<Point> {
    let mut out: Vec<Point> = store
        .records
        .iter()
        .map(|r| Point {
            module: store.index.modules[r.module].name.clone(),
            step: r.step,
            kind: r.kind,
            sigma1: r.sigma.first().copied().unwrap_or(0.0),
            energy: r.energy(),
        })
        .collect();
    out.sort_by(|a, b| (&a.module, a.kind, a.step).cmp(&(&b.module, b.kind, b.step)));
    out
}

/// The summary of one matrix's global-delta trajectory.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub module: String,
    /// `self_attn.q_proj`, `mlp.down_proj`, ...
    pub kind: String,
    pub layer: Option<usize>,
    pub steps: Vec<u64>,
    /// σ1² / ‖Δ‖²_F per step.
    pub energy: Vec<f64>,
    /// cos(u_t, u_(t−1)) and cos(v_t, v_(t−1)) after sign alignment, per step from the second.
    pub cos_u: Vec<f64>,
    pub cos_v: Vec<f64>,
    pub sigma1: Vec<f64>,
    /// R² of the least-squares line σ1 ≈ a + b t (1 for a perfect line; NaN with < 3 points).
    pub r2_sigma1: f64,
}

/// `base_model.model.model.layers.3.self_attn.q_proj` -> (Some(3), "self_attn.q_proj").
pub fn module_kind(name: &str) -> (Option<usize>, String) {
    let Some(i) = name.find("layers.") else {
        return (None, name.to_string());
    };
    let rest = &name[i + 7..];
    let (num, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let tail = tail.strip_suffix(".weight").unwrap_or(tail);
    (num.parse().ok(), tail.to_string())
}

/// Per matrix, the global trajectory's energy, direction stability and σ1 linearity.
pub fn summarize(store: &Store) -> Vec<Summary> {
    let mut out = vec![];
    for (m, module) in store.index.modules.iter().enumerate() {
        let series = store.series(m, Kind::Global, true);
        if series.is_empty() {
            continue;
        }
        let cos = |a: &[f32], b: &[f32]| -> f64 {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if na > 0.0 && nb > 0.0 {
                dot / (na * nb)
            } else {
                0.0
            }
        };
        let (mut cos_u, mut cos_v) = (vec![], vec![]);
        for w in series.windows(2) {
            cos_u.push(cos(w[1].u1(module.out), w[0].u1(module.out)));
            cos_v.push(cos(w[1].v1(module.inp), w[0].v1(module.inp)));
        }
        let steps: Vec<u64> = series.iter().map(|r| r.step).collect();
        let sigma1: Vec<f64> = series
            .iter()
            .map(|r| r.sigma.first().copied().unwrap_or(0.0))
            .collect();
        let (layer, kind) = module_kind(&module.name);
        out.push(Summary {
            module: module.name.clone(),
            kind,
            layer,
            r2_sigma1: r_squared(&steps, &sigma1),
            energy: series.iter().map(|r| r.energy()).collect(),
            steps,
            cos_u,
            cos_v,
            sigma1,
        });
    }
    out
}

/// R² of the ordinary least-squares line through (t, y).
pub fn r_squared(t: &[u64], y: &[f64]) -> f64 {
    let n = t.len() as f64;
    if t.len() < 3 {
        return f64::NAN;
    }
    let mt = t.iter().map(|x| *x as f64).sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut stt, mut sty, mut syy) = (0.0, 0.0, 0.0);
    for (ti, yi) in t.iter().zip(y) {
        let (dt, dy) = (*ti as f64 - mt, yi - my);
        stt += dt * dt;
        sty += dt * dy;
        syy += dy * dy;
    }
    if syy == 0.0 {
        return 1.0;
    }
    if stt == 0.0 {
        return 0.0;
    }
    sty * sty / (stt * syy)
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The human-readable table: one row per matrix (by module kind, then layer) and a mean row
/// per module kind.
pub fn table(summaries: &[Summary]) -> String {
    let mut rows: Vec<&Summary> = summaries.iter().collect();
    rows.sort_by(|a, b| (&a.kind, a.layer).cmp(&(&b.kind, b.layer)));
    let mut s = format!(
        "{:<22} {:>5} {:>6} {:>8} {:>8} {:>9} {:>9} {:>8}\n",
        "module", "layer", "steps", "E1 first", "E1 last", "cos u", "cos v", "R2 s1"
    );
    let line = |s: &mut String,
                kind: &str,
                layer: String,
                n: usize,
                e: &[f64],
                cu: f64,
                cv: f64,
                r2: f64| {
        s.push_str(&format!(
            "{:<22} {:>5} {:>6} {:>8.4} {:>8.4} {:>9.5} {:>9.5} {:>8.4}\n",
            kind,
            layer,
            n,
            e.first().copied().unwrap_or(f64::NAN),
            e.last().copied().unwrap_or(f64::NAN),
            cu,
            cv,
            r2
        ));
    };
    let mut kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    kinds.dedup();
    for kind in kinds {
        let group: Vec<&&Summary> = rows.iter().filter(|r| r.kind == kind).collect();
        for r in &group {
            line(
                &mut s,
                kind,
                r.layer.map_or("-".into(), |l| l.to_string()),
                r.steps.len(),
                &r.energy,
                mean(&r.cos_u),
                mean(&r.cos_v),
                r.r2_sigma1,
            );
        }
        let (e_first, e_last): (Vec<f64>, Vec<f64>) = group
            .iter()
            .map(|r| (r.energy[0], *r.energy.last().expect("non-empty")))
            .unzip();
        let cu: Vec<f64> = group
            .iter()
            .map(|r| mean(&r.cos_u))
            .filter(|x| x.is_finite())
            .collect();
        let cv: Vec<f64> = group
            .iter()
            .map(|r| mean(&r.cos_v))
            .filter(|x| x.is_finite())
            .collect();
        let r2: Vec<f64> = group
            .iter()
            .map(|r| r.r2_sigma1)
            .filter(|x| x.is_finite())
            .collect();
        line(
            &mut s,
            kind,
            "mean".into(),
            group[0].steps.len(),
            &[mean(&e_first), mean(&e_last)],
            mean(&cu),
            mean(&cv),
            mean(&r2),
        );
    }
    // The energy over steps, per module kind (mean over layers).
    let mut steps: Vec<u64> = rows.iter().flat_map(|r| r.steps.iter().copied()).collect();
    steps.sort_unstable();
    steps.dedup();
    s.push_str("\nrank-1 energy of W_t - W_0 by step (mean over layers)\n");
    s.push_str(&format!("{:<22}", "step"));
    for t in &steps {
        s.push_str(&format!(" {t:>6}"));
    }
    s.push('\n');
    let mut kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    kinds.dedup();
    for kind in kinds {
        s.push_str(&format!("{kind:<22}"));
        for t in &steps {
            let e: Vec<f64> = rows
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.steps.iter().position(|x| x == t).map(|i| r.energy[i]))
                .collect();
            s.push_str(&format!(" {:>6.3}", mean(&e)));
        }
        s.push('\n');
    }
    s
}

/// Writes `energy.svg`, `direction_cos.svg` and `sigma1.svg` (means per module kind over
/// steps) into `dir`; returns their paths.
pub fn plot(summaries: &[Summary], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    type Pick = Box<dyn Fn(&Summary) -> Vec<(u64, f64)>>;
    let charts: Vec<(&str, &str, Pick)> = vec![
        (
            "energy.svg",
            "rank-1 energy of W_t - W_0 (mean over layers)",
            Box::new(|s: &Summary| {
                s.steps
                    .iter()
                    .copied()
                    .zip(s.energy.iter().copied())
                    .collect()
            }),
        ),
        (
            "direction_cos.svg",
            "cos(u_t, u_t-1) of the rank-1 direction (mean over layers)",
            Box::new(|s: &Summary| {
                s.steps
                    .iter()
                    .skip(1)
                    .copied()
                    .zip(s.cos_u.iter().copied())
                    .collect()
            }),
        ),
        (
            "sigma1.svg",
            "sigma1 of W_t - W_0 (mean over layers)",
            Box::new(|s: &Summary| {
                s.steps
                    .iter()
                    .copied()
                    .zip(s.sigma1.iter().copied())
                    .collect()
            }),
        ),
    ];
    let mut written = vec![];
    for (file, title, pick) in charts {
        let lines = mean_by_kind(summaries, &pick);
        let path = dir.join(file);
        if line_chart(&path, title, "step", "", &lines)? {
            written.push(path);
        }
    }
    Ok(written)
}

/// Per module kind (sorted), the mean over layers at each step of what `pick` takes from a
/// summary: the lines of the plots.
pub fn mean_by_kind(
    summaries: &[Summary],
    pick: &dyn Fn(&Summary) -> Vec<(u64, f64)>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut kinds: std::collections::BTreeMap<&str, std::collections::BTreeMap<u64, (f64, usize)>> =
        Default::default();
    for s in summaries {
        let acc = kinds.entry(s.kind.as_str()).or_default();
        for (t, y) in pick(s) {
            let e = acc.entry(t).or_default();
            e.0 += y;
            e.1 += 1;
        }
    }
    kinds
        .into_iter()
        .map(|(kind, acc)| {
            let line = acc
                .into_iter()
                .map(|(t, (y, n))| (t as f64, y / n as f64))
                .collect();
            (kind.to_string(), line)
        })
        .collect()
}

/// Draws `lines` (label, points) as an SVG line chart at `path` (written atomically);
/// returns false, writing nothing, when there are no points.
pub fn line_chart<S: AsRef<str>>(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[(S, Vec<(f64, f64)>)],
) -> Result<bool> {
    let pts = lines.iter().flat_map(|(_, l)| l.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        return Ok(false);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut svg = String::new();
    let mut draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        for (i, (label, l)) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let l = l
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            chart
                .draw_series(LineSeries::new(l, color.stroke_width(2)))?
                .label(label.as_ref())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::format(path, format!("cannot draw the plot: {e}")))?;
    next_files::atomic::write(path, svg.as_bytes())?;
    Ok(true)
}
