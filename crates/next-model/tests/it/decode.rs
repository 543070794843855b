//! Batched decoding: rows that finish early leave the batch (and the KV cache) without
//! changing what any row decodes, greedy or sampled.

use next_model::testing::rust_model;
use next_model::{generate, LoadOptions, Model, SamplingParams};

fn params(eos: Vec<i64>) -> SamplingParams {
    SamplingParams {
        max_new_tokens: 12,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        eos_token_ids: eos,
        pad_token_id: 0,
    }
}

#[test]
fn rows_finishing_early_decode_as_they_would_alone() {
    let dir = rust_model(5);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let prompts: Vec<Vec<i64>> = (0..8)
        .map(|i| (0..3 + i % 4).map(|j| 2 + (i * 7 + j * 3) % 20).collect())
        .collect();
    // Without EOS every row runs the whole 12 tokens; stopping on tokens that rows 0-2 produce
    // early then ends those rows (and maybe others) while the rest go on.
    let full = generate(&model, &prompts, &params(vec![])).unwrap();
    let eos = vec![full.tokens[0][1], full.tokens[1][3], full.tokens[2][0]];
    let batch = generate(&model, &prompts, &params(eos.clone())).unwrap();
    let lens: Vec<usize> = batch.tokens.iter().map(Vec::len).collect();
    let longest = *lens.iter().max().unwrap();
    assert!(
        4 * lens.iter().filter(|&&l| l < longest).count() >= lens.len(),
        "too few rows end early to drop any: {lens:?}"
    );
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&model, std::slice::from_ref(p), &params(eos.clone())).unwrap();
        assert_eq!(batch.tokens[i], alone.tokens[0], "row {i}");
        assert_eq!(batch.finished[i], alone.finished[0], "row {i}");
        // A row decodes the EOS-free continuation up to its first EOS.
        let stop = full.tokens[i]
            .iter()
            .position(|t| eos.contains(t))
            .map_or(12, |k| k + 1);
        assert_eq!(batch.tokens[i], full.tokens[i][..stop], "row {i}");
        for (a, b) in batch.logprobs[i].iter().zip(&alone.logprobs[0]) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
    }
}

#[test]
fn sampled_rows_keep_their_draws_when_others_leave_the_batch() {
    let dir = rust_model(6);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let prompts: Vec<Vec<i64>> = (0..8).map(|i| vec![2 + i, 3, 4 + i % 3]).collect();
    let sampled = |eos: Vec<i64>| {
        let p = SamplingParams {
            temperature: 1.0,
            seed: 11,
            ..params(eos)
        };
        generate(&model, &prompts, &p).unwrap()
    };
    let full = sampled(vec![]);
    let eos = vec![full.tokens[0][1], full.tokens[1][2]];
    let cut = sampled(eos.clone());
    let lens: Vec<usize> = cut.tokens.iter().map(Vec::len).collect();
    let longest = *lens.iter().max().unwrap();
    assert!(
        4 * lens.iter().filter(|&&l| l < longest).count() >= lens.len(),
        "too few rows end early to drop any: {lens:?}"
    );
    // Each row draws with its own uniform at every step whoever else is still decoding, so a
    // row samples what it sampled without EOS, up to its first EOS.
    for i in 0..prompts.len() {
        let stop = full.tokens[i]
            .iter()
            .position(|t| eos.contains(t))
            .map_or(12, |k| k + 1);
        assert_eq!(cut.tokens[i], full.tokens[i][..stop], "row {i}");
    }
}
