//! Sampling: n samples per prompt in contiguous groups, reproducible by seed, cut at stop
//! strings, every sample verified; greedy validation is the same whatever the seed.

use next_model::testing::rust_model;
use next_model::{LoadOptions, Model, Tokenizer};
use next_rollout::{Prompted, Sampler, SamplingConfig};
use next_verifiers::{Pool, Registry};
use serde_json::json;

#[test]
fn groups_seeds_stops_and_verdicts() {
    let dir = rust_model(41);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let tok = Tokenizer::load(dir.path()).unwrap();
    let (registry, pool) = (Registry::default(), Pool::new(2).unwrap());
    let sampler = Sampler {
        model: &model,
        tokenizer: &tok,
        registry: &registry,
        pool: &pool,
        stop: model.stop_tokens(&tok),
    };
    let prompts: Vec<Prompted> = ["12+3=", "7+8="]
        .iter()
        .map(|p| Prompted {
            ids: tok.encode(p, false).unwrap(),
            ground_truth: json!("15"),
            context: std::sync::Arc::new(next_verifiers::Context {
                prompt: p.to_string(),
                data_source: "arith".into(),
                extra_info: serde_json::Value::Null,
            }),
        })
        .collect();
    let cfg = SamplingConfig {
        n: 5,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 12,
        stop: vec![],
        max_batch: 3,
    };
    let a = sampler.sample(&prompts, &cfg, 9).unwrap().samples;
    assert_eq!(
        a.iter().map(|s| s.prompt).collect::<Vec<_>>(),
        vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    );
    let b = sampler.sample(&prompts, &cfg, 9).unwrap().samples;
    assert_eq!(
        a.iter().map(|s| &s.response_ids).collect::<Vec<_>>(),
        b.iter().map(|s| &s.response_ids).collect::<Vec<_>>()
    );
    let c = sampler.sample(&prompts, &cfg, 10).unwrap().samples;
    assert_ne!(
        a.iter().map(|s| &s.response_ids).collect::<Vec<_>>(),
        c.iter().map(|s| &s.response_ids).collect::<Vec<_>>()
    );
    for s in &a {
        assert_eq!(s.response_ids.len(), s.logprobs.len());
        assert!(s.logprobs.iter().all(|l| *l <= 0.0 && l.is_finite()));
        assert_ne!(
            s.verdict.kind,
            next_verifiers::VerdictKind::Error,
            "{}",
            s.verdict.detail
        );
        assert_eq!(s.verdict.correct, s.text.trim() == "15");
    }
    // Stop strings: every response ends at the first stop string.
    let stop = SamplingConfig {
        stop: vec!["a".into(), "1".into()],
        ..cfg.clone()
    };
    for s in sampler.sample(&prompts, &stop, 9).unwrap().samples {
        let first = s.text.find(['a', '1']);
        assert!(
            first.is_none() || first == Some(s.text.len() - 1),
            "{:?} continues after a stop string",
            s.text
        );
    }
    let greedy = SamplingConfig {
        n: 1,
        temperature: 0.0,
        ..cfg
    };
    let (v1, v2) = (
        sampler.validate(&prompts, &greedy, 1).unwrap(),
        sampler.validate(&prompts, &greedy, 2).unwrap(),
    );
    assert_eq!(v1.mean, v2.mean);
    assert!(v1.mean_by_source.contains_key("arith"));
}
