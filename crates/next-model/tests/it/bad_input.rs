//! Bad input: every broken model, adapter or tokenizer directory is refused with an error that
//! names the file and the key at fault, never a panic.

use std::fs;
use std::path::Path;

use next_model::io::{read_safetensors, write_safetensors};
use next_model::testing::rust_model;
use next_model::{Kind, LoadOptions, LoraConfig, Model, TargetModules, Tensor, Tokenizer};
use serde_json::{json, Value};

/// A named corruption of a fixture directory and the words its error must contain.
type Case = (&'static str, Box<dyn Fn(&Path)>, Vec<&'static str>);

/// Asserts that `result` failed with a message containing every one of `expected`.
fn check<T: std::fmt::Debug>(result: next_model::Result<T>, expected: &[&str]) {
    let msg = match result {
        Ok(v) => panic!("expected an error mentioning {expected:?}, got Ok({v:?})"),
        Err(e) => e.to_string(),
    };
    for part in expected {
        assert!(
            msg.contains(part),
            "error {msg:?} does not mention {part:?}"
        );
    }
}

fn load(dir: &Path) -> next_model::Result<Model> {
    Model::load(dir, LoadOptions::default())
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn edit_weights(file: &Path, f: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut tensors: Vec<(String, Tensor)> = read_safetensors(file)
        .unwrap()
        .into_iter()
        .map(|(k, l)| (k, l.tensor))
        .collect();
    f(&mut tensors);
    write_safetensors(file, &tensors).unwrap();
}

#[test]
fn model_directory_errors() {
    let cases: Vec<Case> = vec![
        (
            "missing config",
            Box::new(|d| fs::remove_file(d.join("config.json")).unwrap()),
            vec!["config.json", "missing"],
        ),
        (
            "malformed config",
            Box::new(|d| fs::write(d.join("config.json"), "{\"vocab_size\": 3,").unwrap()),
            vec!["config.json", "invalid JSON"],
        ),
        (
            "unknown architecture",
            Box::new(|d| {
                edit_config(d, |c| {
                    c.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
                })
            }),
            vec!["config.json", "GPT2LMHeadModel", "LlamaForCausalLM"],
        ),
        (
            "wrong type",
            Box::new(|d| {
                edit_config(d, |c| {
                    c.insert("hidden_size".into(), json!("big"));
                })
            }),
            vec!["config.json", "hidden_size"],
        ),
        (
            "bad head count",
            Box::new(|d| {
                edit_config(d, |c| {
                    c.insert("num_key_value_heads".into(), json!(3));
                })
            }),
            vec!["config.json", "num_key_value_heads"],
        ),
        (
            "unsupported rope",
            Box::new(|d| {
                edit_config(d, |c| {
                    c.insert(
                        "rope_scaling".into(),
                        json!({"rope_type": "yarn", "factor": 4.0}),
                    );
                })
            }),
            vec!["config.json", "rope_scaling", "yarn"],
        ),
        (
            "missing weights",
            Box::new(|d| fs::remove_file(d.join("model.safetensors")).unwrap()),
            vec!["model.safetensors", "missing"],
        ),
        (
            "missing tensor",
            Box::new(|d| {
                edit_weights(&d.join("model.safetensors"), |t| {
                    t.retain(|(k, _)| k != "model.norm.weight")
                })
            }),
            vec!["model.safetensors", "model.norm.weight", "missing"],
        ),
        (
            "wrong shape",
            Box::new(|d| {
                edit_weights(&d.join("model.safetensors"), |t| {
                    for (k, v) in t.iter_mut() {
                        if k == "model.layers.1.mlp.up_proj.weight" {
                            *v = Tensor::zeros([7, 5], (Kind::Float, tch::Device::Cpu));
                        }
                    }
                })
            }),
            vec![
                "model.safetensors",
                "model.layers.1.mlp.up_proj.weight",
                "[7, 5]",
            ],
        ),
        (
            "wrong dtype",
            Box::new(|d| {
                edit_weights(&d.join("model.safetensors"), |t| {
                    for (k, v) in t.iter_mut() {
                        if k == "model.embed_tokens.weight" {
                            *v = v.to_kind(Kind::Int64);
                        }
                    }
                })
            }),
            vec!["model.safetensors", "model.embed_tokens.weight", "dtype"],
        ),
        (
            "truncated weights",
            Box::new(|d| {
                let p = d.join("model.safetensors");
                let bytes = fs::read(&p).unwrap();
                fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            vec!["model.safetensors", "not a valid safetensors"],
        ),
        (
            "garbage weights",
            Box::new(|d| {
                fs::write(
                    d.join("model.safetensors"),
                    b"\xff\xff\xff\xff\xff\xff\xff\x7fxx",
                )
                .unwrap()
            }),
            vec!["model.safetensors", "not a valid safetensors"],
        ),
    ];
    for (name, corrupt, expected) in cases {
        let dir = rust_model(3);
        corrupt(dir.path());
        let r = load(dir.path());
        assert!(r.is_err(), "case {name}: loaded");
        check(r, &expected);
    }
}

/// A model directory plus a saved adapter (r = 3, alpha = 6, on q_proj and v_proj).
fn adapter_fixture() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = rust_model(4);
    let mut model = load(dir.path()).unwrap();
    let cfg = LoraConfig {
        r: 3,
        alpha: 6.0,
        dropout: 0.0,
        targets: TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
        use_rslora: false,
    };
    model.add_lora(&cfg, 1).unwrap();
    let adapter = tempfile::tempdir().unwrap();
    model.save_adapter(adapter.path(), None).unwrap();
    (dir, adapter)
}

fn edit_adapter_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("adapter_config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn adapter_errors() {
    let key_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let cases: Vec<Case> = vec![
        (
            "alpha zero",
            Box::new(|d| {
                edit_adapter_config(d, |c| {
                    c.insert("lora_alpha".into(), json!(0));
                })
            }),
            vec!["adapter_config.json", "lora_alpha", "0"],
        ),
        (
            "rank disagrees",
            Box::new(|d| {
                edit_adapter_config(d, |c| {
                    c.insert("r".into(), json!(8));
                })
            }),
            vec!["adapter_model.safetensors", key_a, "r = 8"],
        ),
        (
            "target missing from model",
            Box::new(|d| {
                edit_adapter_config(d, |c| {
                    c.insert("target_modules".into(), json!(["q_proj", "c_attn"]));
                })
            }),
            vec!["adapter_config.json", "target_modules", "c_attn"],
        ),
        (
            "tensor for a module the model lacks",
            Box::new(|d| {
                edit_weights(&d.join("adapter_model.safetensors"), |t| {
                    t.push((
                        "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight".into(),
                        Tensor::zeros([3, 32], (Kind::Float, tch::Device::Cpu)),
                    ));
                })
            }),
            vec![
                "adapter_model.safetensors",
                "layers.9.self_attn.q_proj",
                "does not exist",
            ],
        ),
        (
            "missing B",
            Box::new(|d| {
                edit_weights(&d.join("adapter_model.safetensors"), |t| {
                    t.retain(|(k, _)| !k.ends_with("layers.1.self_attn.v_proj.lora_B.weight"))
                })
            }),
            vec![
                "adapter_model.safetensors",
                "layers.1.self_attn.v_proj.lora_B.weight",
            ],
        ),
        (
            "NaN factor",
            Box::new(|d| {
                edit_weights(&d.join("adapter_model.safetensors"), |t| {
                    for (k, v) in t.iter_mut() {
                        if k.ends_with("layers.0.self_attn.v_proj.lora_A.weight") {
                            *v = v.fill(f64::NAN);
                        }
                    }
                })
            }),
            vec![
                "adapter_model.safetensors",
                "layers.0.self_attn.v_proj.lora_A.weight",
                "NaN",
            ],
        ),
        (
            "dora",
            Box::new(|d| {
                edit_adapter_config(d, |c| {
                    c.insert("use_dora".into(), json!(true));
                })
            }),
            vec!["adapter_config.json", "use_dora"],
        ),
        (
            "missing config",
            Box::new(|d| fs::remove_file(d.join("adapter_config.json")).unwrap()),
            vec!["adapter_config.json", "missing"],
        ),
        (
            "truncated weights",
            Box::new(|d| {
                let p = d.join("adapter_model.safetensors");
                let bytes = fs::read(&p).unwrap();
                fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
            }),
            vec!["adapter_model.safetensors", "not a valid safetensors"],
        ),
    ];
    for (name, corrupt, expected) in cases {
        let (dir, adapter) = adapter_fixture();
        corrupt(adapter.path());
        let mut model = load(dir.path()).unwrap();
        let r = model.load_adapter(adapter.path());
        assert!(r.is_err(), "case {name}: adapter loaded");
        check(r, &expected);
    }
}

#[test]
fn tokenizer_errors() {
    let empty = tempfile::tempdir().unwrap();
    check(
        Tokenizer::load(empty.path()),
        &["tokenizer.json", "missing"],
    );
    let dir = rust_model(5);
    fs::write(dir.path().join("tokenizer.json"), "{\"model\": 1}").unwrap();
    check(Tokenizer::load(dir.path()), &["tokenizer.json"]);
    let dir = rust_model(5);
    fs::write(
        dir.path().join("tokenizer_config.json"),
        "{\"eos_token\": \"<nope>\"}",
    )
    .unwrap();
    check(
        Tokenizer::load(dir.path()),
        &["tokenizer_config.json", "eos_token", "<nope>"],
    );
}

#[test]
fn token_ids_out_of_range_are_refused() {
    let dir = rust_model(6);
    let model = load(dir.path()).unwrap();
    let batch = next_model::Batch::left_padded(&[vec![1, 2, 10_000]], 0, tch::Device::Cpu).unwrap();
    check(model.forward(&batch, None), &["token id out of range"]);
}
