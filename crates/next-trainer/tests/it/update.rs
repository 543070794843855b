//! The update's cost-saving paths equal the slow ones: sequences with zero advantage left out
//! of forward and backward, and the vocabulary projection taken in chunks.

use std::path::Path;

use next_model::testing::rust_model;
use next_model::{Batch, LoadOptions, Model, Tensor};

use next_trainer::testing::{base, config};

/// Every LoRA factor of checkpoint `step` of `run`, flattened in file order.
fn factors(run: &Path, step: usize) -> Vec<(String, Vec<f32>)> {
    let dir = next_trainer::checkpoint::adapter_dir(run, step);
    next_model::io::read_safetensors(&dir.join(next_files::peft::WEIGHTS))
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, Vec::<f32>::try_from(t.tensor.view([-1])).unwrap()))
        .collect()
}

fn metric(run: &Path, key: &str) -> Vec<f64> {
    next_trainer::metrics::read(run)
        .unwrap()
        .iter()
        .filter_map(|r| r.get(key))
        .collect()
}

#[test]
fn skipping_zero_advantage_sequences_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, skip: bool, kl: f64| {
        let mut cfg = config();
        cfg.trainer.skip_zero_advantage = skip;
        cfg.algorithm.kl_coef = kl;
        let out = dir.path().join(name);
        next_trainer::train::train(&cfg, &out, base(), &mut |_| {}).unwrap();
        out
    };
    let (fast, slow) = (run("skip", true, 0.0), run("full", false, 0.0));
    // The runs had flat groups to skip, and skipped them.
    let skipped = metric(&fast, "batch/skipped_seq_frac");
    assert!(skipped.iter().any(|&f| f > 0.0), "{skipped:?}");
    assert!(metric(&slow, "batch/skipped_seq_frac")
        .iter()
        .all(|&f| f == 0.0));
    let mut worst = 0f32;
    for ((k, a), (k2, b)) in factors(&fast, 20).iter().zip(factors(&slow, 20).iter()) {
        assert_eq!(k, k2);
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= 1e-6, "adapters differ by {worst} after 20 steps");
    // With a KL term every sequence has a gradient: nothing is skipped.
    let kl = run("kl", true, 0.01);
    assert!(metric(&kl, "batch/skipped_seq_frac")
        .iter()
        .all(|&f| f == 0.0));
}

#[test]
fn chunked_head_equals_the_full_log_softmax() {
    let dir = rust_model(7);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let seqs: Vec<Vec<i64>> = vec![vec![3, 4, 5, 6, 7, 8], vec![9, 10, 11], vec![1, 2, 3, 4]];
    let lens = [3usize, 2, 1];
    let batch = Batch::left_padded(&seqs, 0, model.device()).unwrap();
    let temperature = 0.7;
    let (full, full_ent) = model
        .token_logprobs_with_entropy(&batch, temperature, true)
        .unwrap();
    let full_ent = full_ent.unwrap();
    // The full [B, T-1] values at the response positions, in row order.
    let w = full.size()[1];
    let (mut want, mut want_ent) = (vec![], vec![]);
    for (b, &l) in lens.iter().enumerate() {
        for p in (w - l as i64)..w {
            want.push(full.double_value(&[b as i64, p]));
            want_ent.push(full_ent.double_value(&[b as i64, p]));
        }
    }
    let (h, targets) = model.response_hidden(&batch, &lens).unwrap();
    for chunk in [1, 2, 4, 100] {
        let (lp, ent) = model
            .token_head(&h, &targets, temperature, chunk, true)
            .unwrap();
        let got: Vec<f64> = (0..lp.size()[0]).map(|i| lp.double_value(&[i])).collect();
        let ent = ent.unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5,
                "chunk {chunk}, token {i}: {g} vs {e}"
            );
            let ge = ent.double_value(&[i as i64]);
            assert!(
                (ge - want_ent[i]).abs() <= 1e-5,
                "entropy {ge} vs {}",
                want_ent[i]
            );
        }
    }
}

#[test]
fn chunked_backward_equals_the_full_gradient() {
    let dir = rust_model(8);
    let mut model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let lora = next_model::LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: next_model::TargetModules::AllLinear,
        use_rslora: false,
    };
    model.add_lora(&lora, 1).unwrap();
    // B starts at zero; give it (seeded) values so that A has a gradient too.
    tch::manual_seed(3);
    let params: Vec<Tensor> = model
        .lora_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    tch::no_grad(|| {
        for p in &params {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.1));
        }
    });
    let seqs: Vec<Vec<i64>> = vec![vec![3, 4, 5, 6, 7, 8], vec![9, 10, 11], vec![1, 2, 3, 4]];
    let lens = [3usize, 2, 1];
    let weights = [0.5f64, -1.0, 2.0, 0.25, 1.5, -0.75];
    let batch = Batch::left_padded(&seqs, 0, model.device()).unwrap();
    let grads =
        |params: &[Tensor]| -> Vec<Tensor> { params.iter().map(|p| p.grad().copy()).collect() };
    let zero = |params: &[Tensor]| {
        for p in params {
            let _ = p.grad().zero_();
        }
    };
    // Full: the [B, T-1] log-probs, the response positions picked out, one backward.
    let full = model.token_logprobs(&batch, 1.0).unwrap();
    let w = full.size()[1];
    let mut terms = vec![];
    for (b, &l) in lens.iter().enumerate() {
        for p in (w - l as i64)..w {
            terms.push(full.get(b as i64).get(p) * weights[terms.len()]);
        }
    }
    Tensor::stack(&terms, 0)
        .sum(next_model::Kind::Float)
        .backward();
    let want = grads(&params);
    zero(&params);
    // Chunked: each chunk's backward stops at the hidden states; their gradient goes through
    // the network once.
    let (h, targets) = model.response_hidden(&batch, &lens).unwrap();
    let hd = h.detach().set_requires_grad(true);
    let wt = Tensor::from_slice(&weights.map(|x| x as f32));
    for start in (0..6).step_by(4) {
        let c = 4.min(6 - start);
        let (lp, _) = model
            .token_head(
                &hd.narrow(0, start, c),
                &targets.narrow(0, start, c),
                1.0,
                c,
                false,
            )
            .unwrap();
        (lp * wt.narrow(0, start, c))
            .sum(next_model::Kind::Float)
            .backward();
    }
    (&h * hd.grad()).sum(next_model::Kind::Float).backward();
    for (g, e) in grads(&params).iter().zip(&want) {
        let diff = (g - e).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "gradients differ by {diff}");
        assert!(
            e.abs().max().double_value(&[]) > 0.0,
            "a factor without gradient"
        );
    }
}
