//! The report's plots: line charts drawn as SVG (plotters) and rasterised to PNG with resvg and
//! the system's fonts (PNG text in plotters would need a font stack that breaks the SVGs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use next_trajectory::analyze::line_chart;

use crate::experiment::{Plan, Point, Results, CONTROL};
use crate::{io, Error, Result};

/// Loads the system's fonts once; the generic `sans-serif` maps to the first common family
/// found (fontdb's own default, Arial, is rarely installed on Linux).
pub(super) fn svg_options() -> resvg::usvg::Options<'static> {
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
pub(super) fn rasterise(svg: &Path, png: &Path, opt: &resvg::usvg::Options) -> Result<()> {
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
    Ok(next_files::atomic::write(png, &bytes)?)
}

/// A plot to draw: file stem, title, x and y labels, and (label, points) lines.
pub(super) struct Chart {
    pub name: String,
    pub title: String,
    pub x: &'static str,
    pub y: &'static str,
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// The plots of jump step `k`: accuracy against steps and against wall clock (mean curves), and
/// the mean validation accuracy of each method's jump against λ.
pub(super) fn jump_charts(
    plan: &Plan,
    results: &Results,
    k: usize,
    curves: &[(String, Vec<Point>)],
) -> Vec<Chart> {
    let xy = |f: &dyn Fn(&Point) -> (f64, f64)| -> Vec<(String, Vec<(f64, f64)>)> {
        curves
            .iter()
            .map(|(n, c)| (n.clone(), c.iter().map(f).collect()))
            .collect()
    };
    let mut search = vec![];
    for name in plan.arms().iter().filter(|n| *n != CONTROL) {
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
    vec![
        Chart {
            name: format!("accuracy_vs_step_k{k}"),
            title: format!("validation accuracy, jump at step {k} (mean over seeds)"),
            x: "RL step",
            y: "accuracy",
            lines: xy(&|p| (p.step as f64, p.accuracy)),
        },
        Chart {
            name: format!("accuracy_vs_time_k{k}"),
            title: format!("validation accuracy vs wall clock incl. overhead, jump at {k}"),
            x: "seconds",
            y: "accuracy",
            lines: xy(&|p| (p.seconds, p.accuracy)),
        },
        Chart {
            name: format!("lambda_search_k{k}"),
            title: format!("validation accuracy of the jump vs λ at step {k} (mean over seeds)"),
            x: "λ",
            y: "accuracy",
            lines: search,
        },
    ]
}

/// Draws `charts` as SVG into `dir` and rasterises each to PNG; returns the PNGs (charts with
/// no points are skipped).
pub(super) fn draw(dir: &Path, charts: &[Chart]) -> Result<Vec<PathBuf>> {
    let opt = svg_options();
    let mut plots = vec![];
    for c in charts {
        let svg = dir.join(format!("{}.svg", c.name));
        if line_chart(&svg, &c.title, c.x, c.y, &c.lines)? {
            let png = dir.join(format!("{}.png", c.name));
            rasterise(&svg, &png, &opt)?;
            plots.push(png);
        }
    }
    Ok(plots)
}
