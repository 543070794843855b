//! λ search: grid and golden-section against known reward curves, λ = 0 always scored, the
//! cost recorded, and bad searches refused.

use next_predictor::search::{best, run, Search};

/// Runs `search` on `reward(λ)`; returns (chosen λ, evaluations).
fn check(search: &Search, reward: &dyn Fn(f64) -> f64) -> (f64, usize) {
    let cands = run::<next_predictor::Error>(search, &mut |ls| {
        Ok(ls.iter().map(|&l| (reward(l), 10)).collect())
    })
    .unwrap();
    assert_eq!(cands[0].lambda, 0.0, "the no-jump baseline comes first");
    assert!(cands.iter().all(|c| c.tokens == 10 && c.seconds >= 0.0));
    (best(&cands).unwrap().lambda, cands.len())
}

#[test]
fn grid_and_golden_find_the_best_lambda() {
    let peak = |l: f64| 0.9 - (l - 1.3) * (l - 1.3);
    let cases: Vec<(Search, f64, f64, usize)> = vec![
        // (search, expected λ, tolerance, evaluations including λ = 0)
        (Search::default_grid(), 1.5, 0.0, 9),
        (Search::Grid(vec![1.0, 1.25, 2.0]), 1.25, 0.0, 4),
        (
            Search::Golden {
                lo: 0.0,
                hi: 4.0,
                evals: 12,
            },
            1.3,
            0.02,
            13,
        ),
    ];
    for (search, want, tol, n) in cases {
        let (got, evals) = check(&search, &peak);
        assert!(
            (got - want).abs() <= tol,
            "{search:?}: λ {got}, expected {want}"
        );
        assert_eq!(evals, n, "{search:?}");
    }
}

#[test]
fn no_jump_wins_when_every_jump_hurts() {
    let falling = |l: f64| 0.86 - 0.1 * l;
    for search in [
        Search::default_grid(),
        Search::Golden {
            lo: 0.0,
            hi: 4.0,
            evals: 6,
        },
    ] {
        assert_eq!(check(&search, &falling).0, 0.0, "{search:?}");
    }
}

#[test]
fn a_grid_is_scored_in_one_batch_and_golden_section_in_few() {
    let mut batches = vec![];
    let peak = |l: f64| 0.9 - (l - 1.3) * (l - 1.3);
    for search in [
        Search::default_grid(),
        Search::Golden {
            lo: 0.0,
            hi: 4.0,
            evals: 6,
        },
    ] {
        let mut sizes = vec![];
        run::<next_predictor::Error>(&search, &mut |ls| {
            sizes.push(ls.len());
            Ok(ls.iter().map(|&l| (peak(l), 1)).collect())
        })
        .unwrap();
        batches.push(sizes);
    }
    assert_eq!(batches, vec![vec![9], vec![3, 1, 1, 1, 1]]);
}

#[test]
fn bad_searches_are_refused() {
    let cases = [
        (Search::Grid(vec![]), "empty"),
        (Search::Grid(vec![1.0, f64::NAN]), "NaN"),
        (
            Search::Golden {
                lo: 2.0,
                hi: 1.0,
                evals: 5,
            },
            "lo < hi",
        ),
        (
            Search::Golden {
                lo: 0.0,
                hi: 1.0,
                evals: 1,
            },
            "at least 2",
        ),
    ];
    for (search, want) in cases {
        let err = run::<next_predictor::Error>(&search, &mut |ls| Ok(vec![(0.0, 0); ls.len()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{search:?}: {err}");
    }
}
