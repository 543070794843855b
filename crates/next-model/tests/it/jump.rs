//! A factor-space jump's candidates run together, each batch row with its own λ, equal each
//! candidate loaded as the adapter and run alone; bad jumps are refused by name.

use next_model::model::JumpBranch;
use next_model::testing::rust_model;
use next_model::{Batch, FactorLine, Jump, Model, TargetModules, Tensor, Tokenizer};

use crate::conformance::with_random_adapter;

const PROMPTS: [&str; 3] = ["12+34=", "7*8=", "9-3=ab 1"];
const LAMBDAS: [f64; 4] = [0.0, 0.5, -1.5, 2.0];

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(&t.flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Deterministic values of about `scale` in size.
fn wave(n: usize, seed: f64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|i| (i as f64 * 0.731 + seed).sin() * scale)
        .collect()
}

fn set_factors(model: &mut Model, b: &[(String, Vec<f64>, Vec<f64>)]) {
    for ((_, lin), (_, bv, av)) in model
        .linears_mut()
        .into_iter()
        .filter(|(_, l)| l.lora.is_some())
        .zip(b)
    {
        let l = lin.lora.as_mut().unwrap();
        let to = |v: &[f64], like: &Tensor| {
            let f: Vec<f32> = v.iter().map(|x| *x as f32).collect();
            Tensor::from_slice(&f).view(like.size().as_slice())
        };
        l.b = to(bv, &l.b);
        l.a = to(av, &l.a);
    }
}

/// Logits `[rows, T, vocab]` of `seqs`, each row with its λ when `scale` is given.
fn logits(model: &Model, seqs: &[Vec<i64>], scale: Option<&[f32]>) -> Tensor {
    let mut batch = Batch::left_padded(seqs, 0, model.device()).unwrap();
    if let Some(s) = scale {
        batch = batch.with_jump_scale(s).unwrap();
    }
    tch::no_grad(|| model.forward(&batch, None)).unwrap()
}

/// The candidates of the line `base + λ dir` decoded together against each alone; `anchored`:
/// the line starts at the adapter's own factors (else somewhere else).
fn check(anchored: bool) {
    let dir = rust_model(3);
    let mut model = with_random_adapter(
        dir.path(),
        TargetModules::List(vec!["q_proj".into(), "down_proj".into()]),
    );
    let s = model.lora_config().unwrap().scaling();
    let tok = Tokenizer::load(dir.path()).unwrap();
    let seqs: Vec<Vec<i64>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();

    // The adapter's factors, and a line of candidates through them (or through others).
    let current: Vec<(String, Vec<f64>, Vec<f64>)> = model
        .linears()
        .into_iter()
        .filter_map(|(n, l)| l.lora.as_ref().map(|l| (n, values(&l.b), values(&l.a))))
        .collect();
    let lines: Vec<(String, FactorLine)> = current
        .iter()
        .enumerate()
        .map(|(i, (n, b, a))| {
            let seed = i as f64;
            let (b0, a0) = if anchored {
                (b.clone(), a.clone())
            } else {
                (
                    wave(b.len(), seed + 0.3, 0.2),
                    wave(a.len(), seed + 0.9, 0.2),
                )
            };
            let line = FactorLine {
                r: 3,
                scaling: s,
                db: wave(b.len(), seed + 0.5, 0.1),
                da: wave(a.len(), seed + 0.1, 0.1),
                b: b0,
                a: a0,
            };
            (n.clone(), line)
        })
        .collect();

    // Each candidate alone: its factors loaded as the adapter (λ = 0: the adapter itself).
    let alone: Vec<Tensor> = LAMBDAS
        .iter()
        .map(|&l| {
            if l != 0.0 {
                let candidate: Vec<(String, Vec<f64>, Vec<f64>)> = lines
                    .iter()
                    .map(|(n, f)| {
                        let at = |x: &[f64], d: &[f64]| -> Vec<f64> {
                            x.iter().zip(d).map(|(x, d)| x + l * d).collect()
                        };
                        (n.clone(), at(&f.b, &f.db), at(&f.a, &f.da))
                    })
                    .collect();
                set_factors(&mut model, &candidate);
            }
            let out = logits(&model, &seqs, None);
            set_factors(&mut model, &current);
            out
        })
        .collect();

    // All candidates in one batch.
    model.set_jump(Jump::Factor(&lines)).unwrap();
    // A line through the adapter's own factors is the adapter at λ = 0; rows with λ = 0 of any
    // other line keep the adapter.
    for (name, lin) in model.linears() {
        match (&lin.jump, lin.lora.is_some()) {
            (Some(JumpBranch::Factor(f)), true) => {
                assert_eq!(f.keeps_adapter_at_zero, !anchored, "{name}")
            }
            (None, false) => {}
            (j, _) => panic!("{name}: {j:?}"),
        }
    }
    let all: Vec<Vec<i64>> = LAMBDAS.iter().flat_map(|_| seqs.clone()).collect();
    let scale: Vec<f32> = LAMBDAS
        .iter()
        .flat_map(|&l| std::iter::repeat_n(l as f32, seqs.len()))
        .collect();
    let together = logits(&model, &all, Some(&scale));
    let n = seqs.len() as i64;
    for (i, (l, one)) in LAMBDAS.iter().zip(&alone).enumerate() {
        let rows = together.narrow(0, i as i64 * n, n);
        let diff = (&rows - one).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "anchored {anchored}, λ {l}: {diff}");
    }
    // The candidates differ, so the comparison is not vacuous.
    let spread = (&alone[1] - &alone[3]).abs().max().double_value(&[]);
    assert!(spread > 1e-2, "λ 0.5 and 2 give the same logits: {spread}");
    if !anchored {
        let start = (&alone[0] - &alone[1]).abs().max().double_value(&[]);
        assert!(start > 1e-2, "the line does not leave the adapter: {start}");
    }

    // Cleared, the model is the adapter alone again.
    model.clear_jump();
    let diff = (logits(&model, &seqs, None) - &alone[0])
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn factor_candidates_anchored_at_the_adapter_run_as_each_alone() {
    check(true);
}

#[test]
fn factor_candidates_that_replace_the_adapter_run_as_each_alone() {
    check(false);
}

#[test]
fn bad_factor_jumps_are_refused_by_name() {
    let dir = rust_model(3);
    let mut model = with_random_adapter(dir.path(), TargetModules::List(vec!["q_proj".into()]));
    let name = "model.layers.0.self_attn.q_proj".to_string();
    let (out, inp) = {
        let w = &model.linears()[0].1.weight;
        (w.size()[0] as usize, w.size()[1] as usize)
    };
    let line = |r: usize, rows: usize| FactorLine {
        r,
        scaling: 2.0,
        b: vec![0.1; rows * r],
        a: vec![0.1; r * inp],
        db: vec![0.1; rows * r],
        da: vec![0.1; r * inp],
    };
    let cases: Vec<((String, FactorLine), &str)> = vec![
        (
            (name.clone(), line(3, out + 1)),
            "does not have factors of rank 3",
        ),
        (
            (name.clone(), line(0, out)),
            "does not have factors of rank 0",
        ),
        (
            ("model.layers.9.mlp.up_proj".into(), line(3, out)),
            "`model.layers.9.mlp.up_proj`",
        ),
    ];
    for (jump, expected) in cases {
        let err = model
            .set_jump(Jump::Factor(std::slice::from_ref(&jump)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(
            model.linears().iter().all(|(_, l)| l.jump.is_none()),
            "a refused jump left a branch behind"
        );
    }
    model
        .set_jump(Jump::Factor(&[(name, line(3, out))]))
        .unwrap();
}
