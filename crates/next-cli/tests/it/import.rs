//! `next import gguf` against transformers' own GGUF loader: a small Llama written as llama.cpp
//! writes one (Q8_0 embeddings, Q4_1 projections, permuted Q/K rows, byte-level BPE with a ChatML
//! template) must import into a directory that computes the same logits, tokenizes ChatML text
//! the same and decodes greedily to the same tokens; bad files fail with a message.

use std::path::Path;
use std::process::Output;

use next_model::testing::reference;
use next_model::Tokenizer;
use serde_json::Value;

use crate::next;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes the fixture GGUF (`tied` embeddings or a separate `output.weight`) into `dir`.
fn fixture(dir: &Path, tied: bool) -> std::path::PathBuf {
    let file = dir.join(format!("fixture-tied{}.gguf", tied as u8));
    let tied = (tied as u8).to_string();
    reference(&[
        "make-gguf",
        "--out",
        file.to_str().unwrap(),
        "--tied",
        &tied,
    ]);
    file
}

fn run_import(gguf: &Path, out: &Path) -> Output {
    next(&[
        "import",
        "gguf",
        "--input",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn import(gguf: &Path, out: &Path) {
    let done = run_import(gguf, out);
    assert!(done.status.success(), "import failed: {}", stderr(&done));
}

/// ChatML text the tokenizer must encode like transformers and decode back exactly; the first
/// case is where a converter that adds a prefix space shows one after `<|im_start|>`.
const TEXTS: [&str; 4] = [
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    " leading space,  two spaces\n\nand digits 12345 \\boxed{42}",
    "<|im_end|><|im_start|>user<|endoftext|>",
];

const CHATS: [&str; 3] = [
    "What is 12 + 30?",
    "Jane has 3 apples and buys 4 more.",
    "Solve the problem.",
];

fn check(tied: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = fixture(tmp.path(), tied);
    let dir = tmp.path().join("imported");
    import(&gguf, &dir);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], Value::Bool(tied));

    let texts = serde_json::to_string(&TEXTS).unwrap();
    let chats = serde_json::to_string(&CHATS).unwrap();
    let theirs: Value = serde_json::from_str(&reference(&[
        "gguf-reference",
        "--gguf",
        gguf.to_str().unwrap(),
        "--imported",
        dir.to_str().unwrap(),
        "--texts",
        &texts,
        "--chats",
        &chats,
        "--max-new-tokens",
        "16",
    ]))
    .unwrap();
    // The directory, loaded by transformers, computes what transformers computes from the GGUF:
    // the dequantised weights are exact in float32 and the Q/K rows are back in HF order.
    let diff = theirs["max_logit_diff"].as_f64().unwrap();
    assert!(diff <= 1e-5, "logits differ by {diff}");

    let tok = Tokenizer::load(&dir).unwrap();
    for (text, expected) in TEXTS.iter().zip(theirs["encodings"].as_array().unwrap()) {
        let ids = tok.encode(text, false).unwrap();
        let expected: Vec<i64> = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(ids, expected, "encoding of {text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), *text, "round trip");
    }

    for (chat, expected) in CHATS.iter().zip(theirs["greedy"].as_array().unwrap()) {
        let out = next(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--chat",
            "--prompt",
            chat,
            "--max-new-tokens",
            "16",
            "--json",
        ]);
        assert!(out.status.success(), "generate failed: {}", stderr(&out));
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            &ours["token_ids"], expected,
            "greedy continuation of {chat:?}"
        );
    }
}

#[test]
fn tied_gguf_imports_like_transformers() {
    check(true);
}

#[test]
fn untied_gguf_imports_like_transformers() {
    check(false);
}

#[test]
fn bad_gguf_input_fails_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let good = fixture(tmp.path(), true);
    let bytes = std::fs::read(&good).unwrap();
    let not_gguf = tmp.path().join("config.gguf");
    std::fs::write(&not_gguf, b"{\"not\": \"gguf\"}").unwrap();
    let truncated = tmp.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = tmp.path().join("missing.gguf");
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let fresh = |name: &str| tmp.path().join(name);
    for (input, target, needle) in [
        (&not_gguf, fresh("a"), "config.gguf: GGUF"),
        (&truncated, fresh("b"), "truncated.gguf: GGUF: tensor"),
        (&missing, fresh("c"), "missing.gguf"),
        (&good, existing.clone(), "already exists"),
    ] {
        let out = run_import(input, &target);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{input:?}: {err}");
        assert!(err.contains(needle), "{input:?}: {err:?} lacks {needle:?}");
        assert!(!err.contains("panicked"), "{err}");
        if target != existing {
            assert!(!target.exists(), "a failed import left {target:?} behind");
        }
    }
    // Nothing half-written is left next to the targets either.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("importing"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
