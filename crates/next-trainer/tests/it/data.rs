//! Datasets as verl and TRL users have them: a Parquet file written by pyarrow (nested chat
//! prompts, verl's `reward_model` struct, `extra_info`) reads as the same rows as its JSONL twin,
//! and a bad row is named by its number.

use std::path::Path;
use std::process::Command;

use next_trainer::data::{load_jsonl, load_rows};

/// Writes `rows` (a JSON array) as a Parquet file with pyarrow, as `datasets.to_parquet` does.
fn write_parquet(rows: &serde_json::Value, out: &Path) {
    let code = "import json, sys, pyarrow as pa, pyarrow.parquet as pq\n\
                rows = json.loads(sys.argv[1])\n\
                pq.write_table(pa.Table.from_pylist(rows), sys.argv[2])";
    let status = Command::new(next_files::python::interpreter(None))
        .args(["-c", code, &rows.to_string(), out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn parquet_rows_equal_their_jsonl_twin() {
    let rows = serde_json::json!([
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": "What is 2+3? Put it in \\boxed{}."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": "5"},
            "extra_info": {"split": "train", "index": 0}
        },
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "7*6?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": "42"},
            "extra_info": {"split": "train", "index": 1}
        }
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (pq, jsonl) = (dir.path().join("d.parquet"), dir.path().join("d.jsonl"));
    write_parquet(&rows, &pq);
    let text: String = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.to_string() + "\n")
        .collect();
    std::fs::write(&jsonl, text).unwrap();
    let (from_pq, skipped) = load_rows(&pq, false).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(from_pq, load_jsonl(&jsonl, false).unwrap().0);
    assert_eq!(from_pq[1].ground_truth, serde_json::json!("42"));

    // A row without a prompt is refused by its number (or skipped and counted).
    let bad = serde_json::json!([
        {"data_source": "x", "prompt": "1+1=", "ground_truth": "2"},
        {"data_source": "x", "prompt": null, "ground_truth": "3"}
    ]);
    let bad_pq = dir.path().join("bad.parquet");
    write_parquet(&bad, &bad_pq);
    let err = load_rows(&bad_pq, false).unwrap_err().to_string();
    assert!(
        err.contains("bad.parquet row 2") && err.contains("prompt"),
        "{err}"
    );
    assert_eq!(load_rows(&bad_pq, true).unwrap().1, 1);

    // Not Parquet at all.
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "{}\n").unwrap();
    let err = load_rows(&fake, false).unwrap_err().to_string();
    assert!(
        err.contains("fake.parquet: not a readable Parquet file"),
        "{err}"
    );
}
