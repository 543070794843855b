//! The experiment's view of a run's `metrics.jsonl`: its validation points, with the wall
//! clock of the RL steps that led to each.

use std::path::Path;

use next_trainer::metrics::Row;

use super::Point;
use crate::Result;

/// A run's rows (through `next_trainer::metrics`, which owns the format and the rule that reads
/// a validation accuracy).
pub(super) fn read(run: &Path) -> Result<Vec<Row>> {
    Ok(next_trainer::metrics::read(run)?)
}

/// Validation points of a run, with wall clock from `start` seconds at step `from` (rows
/// before `from` are ignored).
pub(super) fn curve(rows: &[Row], from: usize, start: f64) -> Vec<Point> {
    let mut t = start;
    let mut out = vec![];
    for r in rows.iter().filter(|r| r.step >= from) {
        if r.step > from {
            t += r.seconds().unwrap_or(0.0);
        }
        if let Some(a) = r.val() {
            out.push(Point {
                step: r.step,
                accuracy: a,
                seconds: t,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: &[(usize, Option<f64>, Option<f64>)]) -> Vec<Row> {
        v.iter()
            .map(|&(step, val, seconds)| {
                let mut data = serde_json::Map::new();
                if let Some(a) = val {
                    data.insert("val-core/add2/reward/mean@1".into(), json!(a));
                }
                if let Some(s) = seconds {
                    data.insert("timing_s/step".into(), json!(s));
                }
                Row { step, data }
            })
            .collect()
    }

    #[test]
    fn curves_count_only_the_steps_after_their_start() {
        let r = rows(&[
            (0, Some(0.2), None),
            (1, None, Some(1.0)),
            (2, Some(0.5), Some(2.0)),
            (3, None, Some(4.0)),
            (4, Some(0.7), Some(8.0)),
        ]);
        let c = curve(&r, 0, 0.0);
        let got: Vec<(usize, f64, f64)> =
            c.iter().map(|p| (p.step, p.accuracy, p.seconds)).collect();
        assert_eq!(got, vec![(0, 0.2, 0.0), (2, 0.5, 3.0), (4, 0.7, 15.0)]);
        let c = curve(&r, 2, 10.0);
        assert_eq!(c.last().unwrap().seconds, 22.0);
    }
}
