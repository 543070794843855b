//! Conformance against transformers and PEFT: logits, tokenization, adapters both ways, merge,
//! and the HF directory round trip. Fixtures are built by the Python reference at test time.

use std::path::Path;

use next_model::io::read_safetensors;
use next_model::testing::{hf_model, hf_model_with, reference, rust_model};
use next_model::{Batch, Kind, LoadOptions, LoraConfig, Model, TargetModules, Tensor, Tokenizer};

const PROMPTS: [&str; 4] = ["12+34=", "7*8=", "abc", "9-3=ab 1 2 3"];
const TOL: f64 = 1e-4;

fn prompts_json() -> String {
    serde_json::to_string(&PROMPTS).unwrap()
}

/// Runs the reference forward on `PROMPTS` and returns (input_ids, attention_mask, logits).
fn reference_logits(model: &Path, adapter: Option<&Path>) -> (Tensor, Tensor, Tensor) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec!["logits", "--model", model.to_str().unwrap(), "--prompts"];
    let json = prompts_json();
    args.push(&json);
    args.extend(["--out", out.path().to_str().unwrap()]);
    if let Some(a) = adapter {
        args.extend(["--adapter", a.to_str().unwrap()]);
    }
    reference(&args);
    let mut t = read_safetensors(out.path()).unwrap();
    let mut take = |k: &str| t.remove(k).unwrap().tensor;
    (take("input_ids"), take("attention_mask"), take("logits"))
}

/// Largest absolute difference between two logit tensors over the real (unpadded) positions.
fn max_diff_on_mask(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.ne(0).unsqueeze(-1).expand_as(a);
    (a - b).abs().masked_select(&m).max().double_value(&[])
}

fn ours(model: &Model, ids: &Tensor, mask: &Tensor) -> Tensor {
    let batch = Batch {
        input_ids: ids.shallow_clone(),
        attention_mask: mask.shallow_clone(),
        jump_scale: None,
    };
    tch::no_grad(|| model.forward(&batch, None)).unwrap()
}

fn check_logits(arch: &str, tied: bool, gqa: bool) {
    check_logits_in(hf_model(arch, tied, gqa, 7), arch, tied, gqa);
}

fn check_logits_in(dir: tempfile::TempDir, arch: &str, tied: bool, gqa: bool) {
    let (ids, mask, expected) = reference_logits(dir.path(), None);
    // The tokenizer we wrote encodes like transformers' fast tokenizer reading it.
    let tok = Tokenizer::load(dir.path()).unwrap();
    for (i, p) in PROMPTS.iter().enumerate() {
        let row = ids.get(i as i64).masked_select(&mask.get(i as i64).ne(0));
        assert_eq!(
            tok.encode(p, true).unwrap(),
            Vec::<i64>::try_from(&row).unwrap(),
            "prompt {p:?}"
        );
    }
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let got = ours(&model, &ids, &mask);
    let diff = max_diff_on_mask(&got, &expected, &mask);
    assert!(
        diff < TOL,
        "{arch} tied={tied} gqa={gqa}: max |logit diff| {diff}"
    );
}

#[test]
fn llama_gqa_untied_logits() {
    check_logits("llama", false, true);
}

#[test]
fn llama_tied_mha_logits() {
    check_logits("llama", true, false);
}

#[test]
fn llama_with_biases_logits() {
    check_logits("llama-bias", false, false);
}

#[test]
fn qwen2_gqa_tied_logits() {
    check_logits("qwen2", true, true);
}

#[test]
fn qwen2_untied_logits() {
    check_logits("qwen2", false, false);
}

#[test]
fn qwen3_qk_norm_logits() {
    check_logits("qwen3", false, true);
}

#[test]
fn sharded_checkpoint_logits() {
    let dir = hf_model_with("llama", false, true, 7, true);
    assert!(
        dir.path().join("model.safetensors.index.json").exists(),
        "fixture is not sharded"
    );
    check_logits_in(dir, "llama sharded", false, true);
}

#[test]
fn token_logprobs_follow_the_logits() {
    let dir = rust_model(12);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let batch = Batch::left_padded(&[vec![3, 4, 5, 6], vec![7, 8]], 0, model.device()).unwrap();
    for temperature in [1.0, 0.7] {
        let lp = tch::no_grad(|| model.token_logprobs(&batch, temperature)).unwrap();
        let logits = tch::no_grad(|| model.forward(&batch, None)).unwrap();
        let expected = (logits / temperature)
            .log_softmax(-1, Kind::Float)
            .narrow(1, 0, 3)
            .gather(-1, &batch.input_ids.narrow(1, 1, 3).unsqueeze(-1), false)
            .squeeze_dim(-1);
        assert!((lp - expected).abs().max().double_value(&[]) < 1e-5);
    }
}

#[test]
fn chat_template_renders_like_transformers() {
    let dir = next_model::testing::tokenizer_dir();
    let mut tok = Tokenizer::load(dir.path()).unwrap();
    let template = "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}\
{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}\
<|im_start|>{{ message['role'] }}\n{{ message['content'].strip() }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ eos_token if false }}";
    tok.set_chat_template(Some(template.to_string()));
    tok.save(dir.path()).unwrap();
    let messages = vec![
        next_model::ChatMessage {
            role: "user".into(),
            content: "  What is 2+2?  ".into(),
        },
        next_model::ChatMessage {
            role: "assistant".into(),
            content: "4".into(),
        },
        next_model::ChatMessage {
            role: "user".into(),
            content: "And 3+3?".into(),
        },
    ];
    let ours = Tokenizer::load(dir.path())
        .unwrap()
        .apply_chat_template(&messages, true)
        .unwrap();
    let theirs = reference(&[
        "chat",
        "--model",
        dir.path().to_str().unwrap(),
        "--messages",
        &serde_json::to_string(&messages).unwrap(),
    ]);
    assert_eq!(ours, theirs);
    let bad = vec![next_model::ChatMessage {
        role: "robot".into(),
        content: "x".into(),
    }];
    assert!(tok
        .apply_chat_template(&bad, true)
        .unwrap_err()
        .to_string()
        .contains("bad role"));
}

#[test]
fn kv_cache_matches_full_forward() {
    let dir = hf_model("qwen2", false, true, 3);
    let model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let tok = Tokenizer::load(dir.path()).unwrap();
    let seqs: Vec<Vec<i64>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    let pad = tok.pad_token_id.unwrap();
    let full = Batch::left_padded(&seqs, pad, model.device()).unwrap();
    let expected = tch::no_grad(|| model.forward(&full, None)).unwrap();
    // Feed the same batch in two chunks through the cache.
    let t = full.input_ids.size()[1];
    let split = t / 2;
    let mut cache = model.new_cache(seqs.len() as i64, t);
    let part = |s: i64, n: i64| Batch {
        input_ids: full.input_ids.narrow(1, s, n),
        attention_mask: full.attention_mask.narrow(1, s, n),
        jump_scale: None,
    };
    let a = tch::no_grad(|| model.forward(&part(0, split), Some(&mut cache))).unwrap();
    let b = tch::no_grad(|| model.forward(&part(split, t - split), Some(&mut cache))).unwrap();
    let got = Tensor::cat(&[a, b], 1);
    let diff = max_diff_on_mask(&got, &expected, &full.attention_mask);
    assert!(diff < TOL, "cached vs full forward: {diff}");
}

fn check_peft_adapter(targets: &str, rslora: bool) {
    let dir = hf_model("llama", false, true, 11);
    let adapter = tempfile::tempdir().unwrap();
    let mut args = vec![
        "make-adapter",
        "--model",
        dir.path().to_str().unwrap(),
        "--out",
        adapter.path().to_str().unwrap(),
        "--r",
        "4",
        "--alpha",
        "12",
        "--targets",
        targets,
    ];
    if rslora {
        args.push("--rslora");
    }
    reference(&args);
    let (ids, mask, expected) = reference_logits(dir.path(), Some(adapter.path()));
    let mut model = Model::load(dir.path(), LoadOptions::default()).unwrap();
    let base = ours(&model, &ids, &mask);
    model.load_adapter(adapter.path()).unwrap();
    let got = ours(&model, &ids, &mask);
    let diff = max_diff_on_mask(&got, &expected, &mask);
    assert!(
        diff < TOL,
        "PEFT adapter ({targets}, rslora={rslora}): {diff}"
    );
    // The adapter matters, and disabling it gives the base model back.
    assert!(
        max_diff_on_mask(&base, &expected, &mask) > 1e-2,
        "adapter had no effect"
    );
    model.set_adapter_enabled(false);
    assert!(max_diff_on_mask(&ours(&model, &ids, &mask), &base, &mask) < 1e-6);
}

#[test]
fn peft_adapter_all_linear_loads_in_ours() {
    check_peft_adapter("all-linear", false);
}

#[test]
fn peft_adapter_subset_rslora_loads_in_ours() {
    check_peft_adapter("q_proj,v_proj,down_proj", true);
}

/// A model with a fresh adapter whose B factors are random (PEFT's init has B = 0).
pub(crate) fn with_random_adapter(dir: &Path, targets: TargetModules) -> Model {
    let mut model = Model::load(dir, LoadOptions::default()).unwrap();
    let cfg = LoraConfig {
        r: 3,
        alpha: 6.0,
        dropout: 0.05,
        targets,
        use_rslora: false,
    };
    model.add_lora(&cfg, 5).unwrap();
    tch::manual_seed(5);
    tch::no_grad(|| {
        for (name, mut t) in model.lora_parameters() {
            if name.contains("lora_B") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, t.device())) * 0.3));
            }
        }
    });
    model
}

#[test]
fn our_adapter_loads_in_peft() {
    let dir = hf_model("qwen2", false, true, 13);
    let model = with_random_adapter(dir.path(), TargetModules::AllLinear);
    let adapter = tempfile::tempdir().unwrap();
    model.save_adapter(adapter.path(), Some("fixture")).unwrap();
    let (ids, mask, expected) = reference_logits(dir.path(), Some(adapter.path()));
    let got = ours(&model, &ids, &mask);
    let diff = max_diff_on_mask(&got, &expected, &mask);
    assert!(diff < TOL, "our adapter in PEFT: {diff}");
    let base = Model::load(dir.path(), LoadOptions::default()).unwrap();
    assert!(
        max_diff_on_mask(&ours(&base, &ids, &mask), &expected, &mask) > 1e-2,
        "adapter had no effect"
    );
}

/// A linear layer's name, weight and LoRA factors (A, B).
type LinearSnapshot = (String, Tensor, Option<(Tensor, Tensor)>);

#[test]
fn merge_equals_w_plus_sba_and_forward() {
    let dir = rust_model(1);
    let mut model = with_random_adapter(
        dir.path(),
        TargetModules::List(vec!["q_proj".into(), "up_proj".into()]),
    );
    let s = model.lora_config().unwrap().scaling();
    let before: Vec<LinearSnapshot> = model
        .linears()
        .into_iter()
        .map(|(n, l)| {
            (
                n,
                l.weight.copy(),
                l.lora
                    .as_ref()
                    .map(|l| (l.a.detach().copy(), l.b.detach().copy())),
            )
        })
        .collect();
    assert_eq!(before.iter().filter(|(_, _, l)| l.is_some()).count(), 4);
    let tok = Tokenizer::load(dir.path()).unwrap();
    let seqs: Vec<Vec<i64>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    let batch = Batch::left_padded(&seqs, 0, model.device()).unwrap();
    let with_adapter = ours(&model, &batch.input_ids, &batch.attention_mask);
    model.merge_adapter().unwrap();
    assert!(model.lora_config().is_none());
    for ((name, w0, lora), (_, lin)) in before.iter().zip(model.linears()) {
        let expected = match lora {
            Some((a, b)) => w0 + b.matmul(a) * s,
            None => w0.shallow_clone(),
        };
        let d = (&lin.weight - expected).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{name}: merged weight differs by {d}");
    }
    let merged = ours(&model, &batch.input_ids, &batch.attention_mask);
    assert!(max_diff_on_mask(&merged, &with_adapter, &batch.attention_mask) < TOL);
}

#[test]
fn hf_directory_round_trip_is_bit_identical() {
    for (dir, kind) in [
        (hf_model("qwen2", true, true, 17), Kind::Float),
        (rust_model(2), Kind::BFloat16),
    ] {
        let opts = LoadOptions {
            dtype: Some(kind),
            ..Default::default()
        };
        let model = Model::load(dir.path(), opts).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let again = Model::load(out.path(), LoadOptions::default()).unwrap();
        assert_eq!(again.kind(), kind);
        let (a, b) = (model.named_weights(), again.named_weights());
        assert_eq!(a.len(), b.len());
        for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            assert_eq!(ta.kind(), tb.kind(), "{ka}");
            assert!(ta.equal(tb), "{ka} changed in the round trip");
        }
        // transformers loads what we saved and computes the same logits.
        if kind == Kind::Float {
            Tokenizer::load(dir.path())
                .unwrap()
                .save(out.path())
                .unwrap();
            let (ids, mask, expected) = reference_logits(out.path(), None);
            let diff = max_diff_on_mask(&ours(&again, &ids, &mask), &expected, &mask);
            assert!(diff < TOL, "transformers on our saved directory: {diff}");
        }
        // Saving the reloaded model reproduces the same bytes.
        let out2 = tempfile::tempdir().unwrap();
        again.save(out2.path()).unwrap();
        let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(bytes(out.path()) == bytes(out2.path()));
    }
}
