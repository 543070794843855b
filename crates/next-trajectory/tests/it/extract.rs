//! Extraction from checkpoint series on disk: records equal dense SVDs of the merged deltas for
//! all three kinds; the store survives torn appends and reports corruption by record; bad
//! checkpoints are refused naming the file and tensor; full-parameter mode agrees with dense SVD.

use std::path::Path;

use nalgebra::DMatrix;
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::full::top_k_dense;
use next_trajectory::layout::{Checkpoint, Format};
use next_trajectory::store::{Kind, Store, RECORDS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const MODULES: [(&str, usize, usize); 3] = [
    ("base_model.model.model.layers.0.self_attn.q_proj", 24, 24),
    ("base_model.model.model.layers.0.mlp.down_proj", 24, 40),
    ("base_model.model.model.layers.1.mlp.up_proj", 40, 24),
];

/// Per module: (PEFT key stem, B, A).
type Adapter = Vec<(String, DMatrix<f64>, DMatrix<f64>)>;

fn random(rng: &mut ChaCha8Rng, r: usize, c: usize, scale: f64) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| rng.random_range(-scale..scale))
}

fn row_major(m: &DMatrix<f64>) -> Vec<u8> {
    let mut out = vec![];
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.extend_from_slice(&(m[(i, j)] as f32).to_le_bytes());
        }
    }
    out
}

/// Writes safetensors of f32 matrices.
fn write_tensors(path: &Path, tensors: &[(String, DMatrix<f64>)]) {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, m)| (n.clone(), row_major(m), vec![m.nrows(), m.ncols()]))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A PEFT adapter directory with the given factors (B, A) per module.
fn write_adapter(
    dir: &Path,
    r: usize,
    alpha: f64,
    factors: &[(String, DMatrix<f64>, DMatrix<f64>)],
) {
    let refs: Vec<(String, &DMatrix<f64>, &DMatrix<f64>)> =
        factors.iter().map(|(n, b, a)| (n.clone(), b, a)).collect();
    let config =
        serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": false});
    next_trajectory::adapter::write(dir, &config, &refs).unwrap();
}

/// A verl-layout run of `steps` checkpoints of a random-walk LoRA; returns the f64 factors
/// (rounded through f32, as stored) per checkpoint.
fn make_run(run: &Path, steps: &[u64], r: usize, seed: u64) -> Vec<Adapter> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let round = |m: DMatrix<f64>| m.map(|x| x as f32 as f64);
    let mut cur: Adapter = MODULES
        .iter()
        .map(|(n, out, inp)| {
            (
                n.to_string(),
                DMatrix::zeros(*out, r),
                random(&mut rng, r, *inp, 0.5),
            )
        })
        .collect();
    let mut all = vec![];
    for step in steps {
        for (_, b, a) in cur.iter_mut() {
            *b = round(&*b + random(&mut rng, b.nrows(), r, 0.1));
            *a = round(&*a + random(&mut rng, r, a.ncols(), 0.01));
        }
        write_adapter(
            &run.join(format!("global_step_{step}/actor/lora_adapter")),
            r,
            2.0 * r as f64,
            &cur,
        );
        all.push(cur.clone());
    }
    all
}

/// σ1 (from the eigenvalues of the smaller Gram matrix: nalgebra's dense SVD misjudges
/// low-rank matrices) and ‖M‖²_F.
fn sigma1(m: &DMatrix<f64>) -> (f64, f64) {
    let g = if m.nrows() <= m.ncols() {
        m * m.transpose()
    } else {
        m.transpose() * m
    };
    (
        g.symmetric_eigenvalues().max().max(0.0).sqrt(),
        m.norm_squared(),
    )
}

#[test]
fn records_equal_dense_svd_of_merged_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let steps = [10, 20, 30, 40, 50];
    let factors = make_run(&run, &steps, 4, 1);
    let out = dir.path().join("store");
    let opts = Options {
        delta_gap: Some(20),
        target_gap: Some(30),
        ..Options::default()
    };
    let input = Input::Run {
        dir: run.clone(),
        format: None,
    };
    let s = extract(&input, &out, &opts, &|_, _| {}).unwrap();
    assert_eq!(s.format, Format::Verl);
    let store = Store::open(&out).unwrap();
    let merged = |i: Option<usize>, m: usize| match i {
        Some(i) => &factors[i][m].1 * &factors[i][m].2 * 2.0,
        None => DMatrix::zeros(MODULES[m].1, MODULES[m].2),
    };
    let idx = |step: u64| steps.iter().position(|s| *s == step);
    let mut seen = 0;
    for r in &store.records {
        let mi = MODULES
            .iter()
            .position(|x| x.0 == store.index.modules[r.module].name)
            .unwrap();
        let (new, old) = match r.kind {
            Kind::Global => (idx(r.step), None),
            Kind::Local => (idx(r.step), idx(r.step - 20)),
            Kind::Target => (idx(r.step + 30), idx(r.step)),
        };
        let dense = merged(new, mi) - merged(old, mi);
        let (s, f) = sigma1(&dense);
        assert!(
            (r.sigma[0] - s).abs() <= 1e-6 * s,
            "{:?} step {}: {} vs {s}",
            r.kind,
            r.step,
            r.sigma[0]
        );
        assert!((r.frobenius_sq - f).abs() <= 1e-9 * f);
        // u1ᵀ Δ v1 = σ1 (u, v stored in f32).
        let (out_dim, in_dim) = (dense.nrows(), dense.ncols());
        let u = nalgebra::DVector::from_iterator(out_dim, r.u1(out_dim).iter().map(|x| *x as f64));
        let v = nalgebra::DVector::from_iterator(in_dim, r.v1(in_dim).iter().map(|x| *x as f64));
        assert!(((u.transpose() * &dense * v)[0] - s).abs() <= 1e-5 * s);
        seen += 1;
    }
    // Per module: 5 global, local at 20..50 (t − 20 ≥ 0; 20 - 20 = 0 is the base) = 4,
    // target at 10, 20 = 2.
    assert_eq!(seen, 11 * MODULES.len());
}

fn run_extract(
    run: &Path,
    out: &Path,
) -> next_trajectory::Result<next_trajectory::extract::Summary> {
    extract(
        &Input::Run {
            dir: run.to_owned(),
            format: None,
        },
        out,
        &Options {
            target_gap: Some(20),
            ..Options::default()
        },
        &|_, _| {},
    )
}

#[test]
fn the_store_survives_torn_appends_and_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    make_run(&run, &[10, 20, 30], 2, 2);
    let out = dir.path().join("store");
    let first = run_extract(&run, &out).unwrap();
    assert_eq!(first.new_records, (3 + 3 + 1) * MODULES.len());
    let good = Store::open(&out).unwrap();

    // An append that died after writing some bytes but before the index: invisible, then
    // overwritten by the next append.
    let rec = out.join(RECORDS);
    let mut bytes = std::fs::read(&rec).unwrap();
    bytes.extend_from_slice(b"NXR1 half a record");
    std::fs::write(&rec, &bytes).unwrap();
    assert_eq!(Store::open(&out).unwrap().records, good.records);
    assert_eq!(run_extract(&run, &out).unwrap().new_records, 0);

    // One flipped byte inside a payload is reported with the record.
    let mut bad = std::fs::read(&rec).unwrap();
    let at = good.index.records_len as usize / 2;
    bad[at] ^= 0x40;
    std::fs::write(&rec, &bad).unwrap();
    let err = Store::open(&out).unwrap_err().to_string();
    assert!(
        err.contains("records.bin") && err.contains("record "),
        "{err}"
    );
    // A truncated file.
    std::fs::write(&rec, &bytes[..bytes.len() / 3]).unwrap();
    let err = Store::open(&out).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

/// Expects extraction of `run` to fail with every fragment of `want` in the message.
fn check_refused(run: &Path, want: &[&str]) {
    let out = run.parent().unwrap().join(format!(
        "store-{}",
        run.file_name().unwrap().to_str().unwrap()
    ));
    let err = run_extract(run, &out).unwrap_err().to_string();
    for w in want {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

#[test]
fn bad_checkpoints_are_refused_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str, steps: &[u64], r: usize| {
        let run = dir.path().join(name);
        make_run(&run, steps, r, 3);
        run
    };
    let adapter =
        |run: &Path, step: u64| run.join(format!("global_step_{step}/actor/lora_adapter"));

    let run = fresh("missing", &[10, 20, 40], 2);
    check_refused(&run, &["step 30 is missing"]);

    let run = fresh("rank", &[10, 20], 2);
    make_run(&dir.path().join("rank4"), &[30], 4, 3);
    std::fs::rename(
        dir.path().join("rank4/global_step_30"),
        run.join("global_step_30"),
    )
    .unwrap();
    check_refused(&run, &["rank changes", "step 30"]);

    let run = fresh("alpha", &[10, 20], 2);
    std::fs::write(
        adapter(&run, 20).join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 0}"#,
    )
    .unwrap();
    check_refused(
        &run,
        &["global_step_20", "adapter_config.json", "lora_alpha"],
    );

    let run = fresh("nan", &[10, 20], 2);
    let p = adapter(&run, 20);
    let mut f = make_run(&dir.path().join("scratch"), &[1], 2, 4).remove(0);
    f[1].2[(0, 3)] = f64::NAN;
    write_adapter(&p, 2, 4.0, &f);
    check_refused(
        &run,
        &[
            "global_step_20",
            "layers.0.mlp.down_proj.lora_A.weight",
            "non-finite",
        ],
    );

    let run = fresh("trunc", &[10, 20], 2);
    let st = adapter(&run, 10).join("adapter_model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    check_refused(
        &run,
        &[
            "global_step_10",
            "adapter_model.safetensors",
            "not a complete safetensors",
        ],
    );

    let run = fresh("shape", &[10, 20], 2);
    let mut f = make_run(&dir.path().join("scratch2"), &[1], 2, 4).remove(0);
    f[0].1 = DMatrix::zeros(32, 2);
    write_adapter(&adapter(&run, 20), 2, 4.0, &f);
    check_refused(&run, &["q_proj", "changes shape", "step 20"]);

    let run = fresh("gap", &[10, 20], 2);
    let err = extract(
        &Input::Run {
            dir: run,
            format: None,
        },
        &dir.path().join("gap-store"),
        &Options {
            delta_gap: Some(15),
            ..Options::default()
        },
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("multiple of the checkpoint interval (10)"),
        "{err}"
    );

    // A changed checkpoint after extraction is noticed.
    let run = fresh("changed", &[10, 20], 2);
    let store = dir.path().join("changed-store");
    run_extract(&run, &store).unwrap();
    let f = make_run(&dir.path().join("scratch3"), &[1], 2, 9).remove(0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_adapter(&adapter(&run, 10), 2, 4.0, &f);
    let err = run_extract(&run, &store).unwrap_err().to_string();
    assert!(err.contains("step 10") && err.contains("changed"), "{err}");
}

#[test]
fn explicit_lists_and_rank_k() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    make_run(&run, &[5, 10, 15], 3, 5);
    let list: Vec<Checkpoint> = [15, 5, 10]
        .iter()
        .map(|s| Checkpoint {
            step: *s,
            dir: run.join(format!("global_step_{s}/actor/lora_adapter")),
        })
        .collect();
    let out = dir.path().join("store");
    let s = extract(
        &Input::List(list),
        &out,
        &Options {
            rank: 3,
            ..Options::default()
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(s.format, Format::List);
    let store = Store::open(&out).unwrap();
    assert_eq!(store.index.interval, 5);
    assert!(store
        .records
        .iter()
        .all(|r| r.sigma.len() == 3 && r.sigma.windows(2).all(|w| w[0] >= w[1])));
}

#[test]
fn full_parameter_mode_matches_dense_svd() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let names = [
        ("model.layers.0.self_attn.q_proj.weight", 48, 48),
        ("model.layers.0.mlp.down_proj.weight", 48, 96),
    ];
    let base: Vec<DMatrix<f64>> = names
        .iter()
        .map(|(_, o, i)| random(&mut rng, *o, *i, 0.1))
        .collect();
    let write = |dir: &Path, ms: &[DMatrix<f64>]| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let mut t: Vec<(String, DMatrix<f64>)> = names
            .iter()
            .zip(ms)
            .map(|((n, _, _), m)| (n.to_string(), m.clone()))
            .collect();
        t.push(("model.embed_tokens.weight".into(), DMatrix::zeros(10, 48)));
        write_tensors(&dir.join("model.safetensors"), &t);
    };
    write(&dir.path().join("base"), &base);
    let run = dir.path().join("run");
    let mut cur = base.clone();
    let mut saved = vec![];
    for step in [100, 200] {
        for m in cur.iter_mut() {
            // A dominant rank-1 drift plus noise, as in fine-tuning.
            let u = random(&mut rng, m.nrows(), 1, 1.0);
            let v = random(&mut rng, 1, m.ncols(), 1.0);
            *m = (&*m + &u * &v * 0.01 + random(&mut rng, m.nrows(), m.ncols(), 0.001))
                .map(|x| x as f32 as f64);
        }
        write(&run.join(format!("checkpoint-{step}")), &cur);
        saved.push(cur.clone());
    }
    let base_rounded: Vec<DMatrix<f64>> = base.iter().map(|m| m.map(|x| x as f32 as f64)).collect();
    let out = dir.path().join("store");
    let s = extract(
        &Input::Run {
            dir: run.clone(),
            format: None,
        },
        &out,
        &Options {
            base: Some(dir.path().join("base")),
            target_gap: Some(100),
            ..Options::default()
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(s.format, Format::Full);
    let store = Store::open(&out).unwrap();
    assert_eq!(store.index.modules.len(), 2, "embeddings are left out");
    for r in &store.records {
        let m = names
            .iter()
            .position(|n| n.0 == store.index.modules[r.module].name)
            .unwrap();
        let i = (r.step / 100 - 1) as usize;
        let dense = match r.kind {
            Kind::Global => &saved[i][m] - &base_rounded[m],
            Kind::Local if i == 0 => &saved[0][m] - &base_rounded[m],
            Kind::Local => &saved[i][m] - &saved[i - 1][m],
            Kind::Target => &saved[i + 1][m] - &saved[i][m],
        };
        let (s1, f) = sigma1(&dense);
        assert!(
            (r.sigma[0] - s1).abs() <= 1e-9 * s1,
            "{:?} {}: {} vs {s1}",
            r.kind,
            r.step,
            r.sigma[0]
        );
        assert!((r.frobenius_sq - f).abs() <= 1e-9 * f);
    }
    // Without a base or a step-0 checkpoint there is no W_0.
    let err = extract(
        &Input::Run {
            dir: run,
            format: None,
        },
        &dir.path().join("s2"),
        &Options::default(),
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs W_0"), "{err}");
}

#[test]
fn lanczos_agrees_with_dense_svd_on_hard_spectra() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Pure noise (clustered top singular values) and a low-rank signal in noise.
    let noise = random(&mut rng, 200, 500, 1.0);
    let signal = random(&mut rng, 200, 3, 1.0) * random(&mut rng, 3, 500, 1.0)
        + random(&mut rng, 200, 500, 0.05);
    // Exactly low rank: the Krylov space runs out after a few steps.
    let rank2 = random(&mut rng, 200, 2, 1.0) * random(&mut rng, 2, 500, 1.0);
    for m in [noise, signal.clone(), signal.transpose(), rank2] {
        let got = top_k_dense(&m, 2, 7);
        // Reference from the eigenvalues of M Mᵀ (nalgebra's dense SVD misjudges low rank).
        let mut s: Vec<f64> = (&m * m.transpose())
            .symmetric_eigenvalues()
            .iter()
            .map(|x| x.max(0.0).sqrt())
            .collect();
        s.sort_by(|a, b| b.total_cmp(a));
        for j in 0..2 {
            assert!(
                (got.sigma[j] - s[j]).abs() <= 1e-8 * s[0],
                "σ{j}: {} vs {}",
                got.sigma[j],
                s[j]
            );
        }
        let u = got.u.column(0);
        let v = got.v.column(0);
        assert!(
            (&m * v - u * got.sigma[0]).norm() <= 1e-8 * s[0],
            "M v1 = σ1 u1"
        );
        assert!(((u.transpose() * &m * v)[0] - s[0]).abs() <= 1e-8 * s[0]);
    }
}

/// Full-parameter mode (Lanczos on dense deltas) against torch.linalg.svd of the same
/// 2048 x 8192 matrices.
#[test]
fn full_parameter_mode_matches_torch_svd_at_2048_by_8192() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let expected: serde_json::Value = serde_json::from_str(&next_testing::reference(&[
        "full-run",
        "--out",
        d.to_str().unwrap(),
    ]))
    .unwrap();
    let store_dir = d.join("store");
    let input = Input::Run {
        dir: d.join("run"),
        format: Some(Format::Full),
    };
    let opts = Options {
        base: Some(d.join("base")),
        ..Options::default()
    };
    extract(&input, &store_dir, &opts, &|_, _| {}).unwrap();
    let store = Store::open(&store_dir).unwrap();
    let mut checked = 0;
    for r in store.records.iter().filter(|r| r.kind == Kind::Global) {
        let want = expected[r.step.to_string()][&store.index.modules[r.module].name]
            .as_f64()
            .unwrap();
        assert!(
            (r.sigma[0] - want).abs() <= 1e-4 * want,
            "{} step {}: σ1 {} vs torch {want}",
            store.index.modules[r.module].name,
            r.step,
            r.sigma[0]
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
