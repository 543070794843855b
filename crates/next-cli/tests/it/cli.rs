//! The `next` binary as users call it: generation against transformers, seeds, the demo, and
//! bad input (clear message, non-zero exit, never a panic).

use std::path::Path;

use next_model::testing::{hf_model, reference, rust_model};
use serde_json::Value;

use crate::next;

fn generate_json(model: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--json"];
    args.extend(extra);
    let out = next(&args);
    assert!(
        out.status.success(),
        "next generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Greedy decoding of `prompts` by `next generate` and by transformers' `generate` agree token
/// for token; returns how many tokens were compared.
fn check_greedy(model: &Path, adapter: Option<&Path>, prompts: &[&str]) -> usize {
    let mut compared = 0;
    for p in prompts {
        let mut extra = vec![
            "--prompt",
            p,
            "--max-new-tokens",
            "32",
            "--temperature",
            "0",
        ];
        let mut ref_args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            p,
            "--max-new-tokens",
            "32",
        ];
        if let Some(a) = adapter {
            extra.extend(["--adapter", a.to_str().unwrap()]);
            ref_args.extend(["--adapter", a.to_str().unwrap()]);
        }
        let ours = generate_json(model, &extra);
        let theirs: Value = serde_json::from_str(&reference(&ref_args)).unwrap();
        assert_eq!(ours["token_ids"], theirs["token_ids"], "prompt {p:?}");
        compared += ours["token_ids"].as_array().unwrap().len();
    }
    compared
}

const PROMPTS: [&str; 3] = ["12+34=", "a b c", "9*9="];

fn check_greedy_arch(arch: &str, tied: bool, gqa: bool) {
    let dir = hf_model(arch, tied, gqa, 21);
    let compared = check_greedy(dir.path(), None, &PROMPTS);
    // Stopping at EOS may shorten a continuation, but most must run the full 32 tokens.
    assert!(compared >= 48, "{arch}: only {compared} tokens compared");
}

#[test]
fn greedy_generation_matches_transformers_llama() {
    check_greedy_arch("llama", false, true);
}

#[test]
fn greedy_generation_matches_transformers_qwen2() {
    check_greedy_arch("qwen2", true, true);
}

#[test]
fn greedy_generation_matches_transformers_qwen3() {
    check_greedy_arch("qwen3", false, false);
}

#[test]
fn greedy_generation_with_peft_adapter_matches() {
    let dir = hf_model("llama", false, true, 23);
    let adapter = tempfile::tempdir().unwrap();
    reference(&[
        "make-adapter",
        "--model",
        dir.path().to_str().unwrap(),
        "--out",
        adapter.path().to_str().unwrap(),
        "--r",
        "4",
        "--alpha",
        "16",
    ]);
    let compared = check_greedy(dir.path(), Some(adapter.path()), &PROMPTS);
    assert!(compared >= 32, "only {compared} tokens compared");
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let dir = rust_model(8);
    let run = |seed: &str| {
        generate_json(
            dir.path(),
            &[
                "--prompt",
                "1+2=",
                "--max-new-tokens",
                "24",
                "--temperature",
                "1.0",
                "--top-p",
                "0.95",
                "--top-k",
                "10",
                "--seed",
                seed,
            ],
        )
    };
    assert_eq!(run("1"), run("1"));
    let outputs: std::collections::BTreeSet<String> = (0..6)
        .map(|s| run(&s.to_string())["token_ids"].to_string())
        .collect();
    assert!(outputs.len() > 1, "six seeds gave one output");
}

#[test]
fn demo_runs_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let run = next(&[
        "demo",
        "--out",
        out.path().to_str().unwrap(),
        "--steps",
        "20",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["loss_last"].as_f64().unwrap() < summary["loss_first"].as_f64().unwrap());
    for sub in [
        "base/model.safetensors",
        "base/tokenizer.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "merged/config.json",
    ] {
        assert!(out.path().join(sub).exists(), "{sub} missing");
    }
}

/// Runs `next` with `args` and asserts a clean failure whose message mentions `expected`.
fn check_fails(args: &[&str], expected: &[&str]) {
    let out = next(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for e in expected {
        assert!(
            err.contains(e),
            "{args:?}: stderr {err:?} does not mention {e:?}"
        );
    }
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = rust_model(9);
    let d = dir.path().to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut v = vec![
            "generate".to_string(),
            "--model".into(),
            d.into(),
            "--prompt".into(),
            "1+1=".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    fn as_strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    check_fails(
        &["generate", "--model", "/nonexistent/model", "--prompt", "x"],
        &["/nonexistent/model", "tokenizer.json"],
    );
    check_fails(&as_strs(&gen(&["--device", "tpu"])), &["tpu"]);
    check_fails(&as_strs(&gen(&["--dtype", "f8"])), &["f8"]);
    check_fails(&as_strs(&gen(&["--top-p", "0"])), &["top_p"]);
    check_fails(
        &as_strs(&gen(&["--adapter", "/nonexistent/adapter"])),
        &["adapter_config.json"],
    );
    check_fails(&as_strs(&gen(&["--chat"])), &["chat template"]);

    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["MambaForCausalLM"]}"#,
    )
    .unwrap();
    check_fails(&as_strs(&gen(&[])), &["config.json"]);
    let dir2 = rust_model(9);
    let c = dir2.path().join("config.json");
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("LlamaForCausalLM", "MambaForCausalLM");
    std::fs::write(&c, text).unwrap();
    check_fails(
        &[
            "generate",
            "--model",
            dir2.path().to_str().unwrap(),
            "--prompt",
            "1",
        ],
        &["config.json", "MambaForCausalLM"],
    );
    std::fs::remove_file(dir2.path().join("tokenizer.json")).unwrap();
    check_fails(
        &[
            "generate",
            "--model",
            dir2.path().to_str().unwrap(),
            "--prompt",
            "1",
        ],
        &["tokenizer.json"],
    );
}

#[test]
fn help_teaches() {
    let out = next(&["generate", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--adapter",
        "--temperature",
        "--seed",
        "--json",
        "--device",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

/// `configs/embedded.toml` claims to list every training setting with its default: it parses
/// to exactly the built-in defaults, and names every key they have (optional keys, which have
/// no default value, appear as comments).
#[test]
fn the_embedded_config_lists_every_default() {
    let root = next_model::testing::workspace_root();
    let path = root.join("configs/embedded.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: toml::Table = text.parse().unwrap();
    let parsed: next_trainer::TrainConfig = toml::Value::Table(file.clone()).try_into().unwrap();
    assert_eq!(parsed, next_trainer::TrainConfig::default());
    let defaults = toml::Table::try_from(next_trainer::TrainConfig::default()).unwrap();
    for (section, table) in &defaults {
        for key in table.as_table().unwrap().keys() {
            assert!(
                file.get(section).and_then(|s| s.get(key)).is_some(),
                "{}: [{section}] lacks `{key}`",
                path.display()
            );
        }
    }
    for optional in ["clip_ratio_high", "loss_agg_mode", "dynamic_sampling"] {
        assert!(
            text.contains(&format!("# {optional} = ")),
            "{}: document the optional key `{optional}`",
            path.display()
        );
    }
}
