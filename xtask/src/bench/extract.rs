//! `cargo xtask bench extract`: `next extract` on a synthetic LoRA run with Qwen2.5-1.5B shapes
//! (28 layers, q/k/v/o/gate/up/down, r = 32, 16 checkpoints, all three delta kinds) against the
//! reference method (merge, then a full `torch.linalg.svd` per matrix), timed on one matrix of
//! each shape and scaled to the model; also the cost of merely reading the adapters once.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use next_files::peft::{self, Factor};
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;

use crate::util::{self, root};

const LAYERS: usize = 28;
const HIDDEN: usize = 1536;
const INTERMEDIATE: usize = 8960;
const KV: usize = 256; // 2 KV heads x 128
const R: usize = 32;
const CHECKPOINTS: u64 = 16;
const INTERVAL: u64 = 10;
/// Qwen2.5-1.5B's parameter count (embeddings tied), for the reference's merged models.
const PARAMS: f64 = 1.544e9;

/// (module, out, in) of one decoder layer.
fn modules() -> [(&'static str, usize, usize); 7] {
    [
        ("self_attn.q_proj", HIDDEN, HIDDEN),
        ("self_attn.k_proj", KV, HIDDEN),
        ("self_attn.v_proj", KV, HIDDEN),
        ("self_attn.o_proj", HIDDEN, HIDDEN),
        ("mlp.gate_proj", INTERMEDIATE, HIDDEN),
        ("mlp.up_proj", INTERMEDIATE, HIDDEN),
        ("mlp.down_proj", HIDDEN, INTERMEDIATE),
    ]
}

pub fn run() -> Result<()> {
    let root = root();
    let dir = root.join("target/bench/extract");
    let run = dir.join("run");
    let store = dir.join("store");
    util::cargo(&["build", "--release", "--quiet", "-p", "next-cli"])?;
    let next = root.join("target/release/next");

    let t = Instant::now();
    generate(&run)?;
    eprintln!(
        "xtask: generated {CHECKPOINTS} checkpoints in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let files: Vec<_> = (1..=CHECKPOINTS)
        .map(|i| {
            run.join(format!(
                "global_step_{}/actor/lora_adapter/{}",
                i * INTERVAL,
                peft::WEIGHTS
            ))
        })
        .collect();
    // Reading once, warm (as the extraction will find the files): the I/O floor.
    let read_once = || -> Result<(f64, u64)> {
        let t = Instant::now();
        let mut bytes = 0;
        for f in &files {
            bytes += fs::read(f)?.len() as u64;
        }
        Ok((t.elapsed().as_secs_f64(), bytes))
    };
    read_once()?;
    let (read_s, adapter_bytes) = read_once()?;

    let _ = fs::remove_dir_all(&store);
    let mut cmd = Command::new(&next);
    cmd.args(["extract", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&store)
        .args(["--target-gap", &(5 * INTERVAL).to_string()]);
    let (ours_s, ours_peak) = timed(&mut cmd)?;
    let (again_s, _) = timed(&mut cmd)?;
    let index: serde_json::Value = super::read_json(&store.join("index.json"))?;
    let records = index["records"].as_u64().context("index.json: records")?;
    let store_bytes = fs::metadata(store.join("records.bin"))?.len()
        + fs::metadata(store.join("index.json"))?.len();

    // The reference, one matrix per distinct shape, same threads.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut shapes: Vec<(usize, usize)> = modules().iter().map(|m| (m.1, m.2)).collect();
    shapes.sort();
    shapes.dedup();
    let spec: Vec<String> = shapes.iter().map(|(o, i)| format!("{o}x{i}")).collect();
    let reference: serde_json::Value = serde_json::from_str(&util::stdout(
        Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/bench_extract_reference.py"))
            .args(["--shapes", &spec.join(","), "--r", &R.to_string()])
            .args(["--threads", &threads.to_string()]),
    )?)?;
    let matrices = LAYERS * modules().len();
    let per_matrix = records as f64 / matrices as f64;
    let mut ref_s = 0.0;
    for (_, o, i) in modules() {
        let r = &reference[format!("{o}x{i}")];
        let (merge, svd) = (r["merge_s"].as_f64().unwrap(), r["svd_s"].as_f64().unwrap());
        // Every checkpoint merged once; one full SVD per record.
        ref_s += LAYERS as f64 * (CHECKPOINTS as f64 * merge + per_matrix * svd);
    }
    let ref_peak = reference["peak_rss_bytes"].as_f64().unwrap_or(0.0);
    // The reference keeps a merged bf16 model per checkpoint plus the top triplets (f32).
    let ref_bytes = CHECKPOINTS as f64 * PARAMS * 2.0 + store_bytes as f64;

    let mut report = String::new();
    let gb = |b: f64| b / 1e9;
    report.push_str(&format!(
        "bench extract: Qwen2.5-1.5B shapes, {LAYERS} layers x 7 matrices, r = {R}, {CHECKPOINTS} checkpoints, {records} records (global/local/target), {threads} threads\n"
    ));
    for (shape, r) in spec.iter().map(|s| (s, &reference[s])) {
        report.push_str(&format!(
            "  reference {shape:>9}: merge {:.3} s, svd {:.2} s\n",
            r["merge_s"].as_f64().unwrap(),
            r["svd_s"].as_f64().unwrap()
        ));
    }
    report.push_str(&format!(
        "  ours        {ours_s:>10.2} s   reference (estimated) {ref_s:>10.0} s   ratio {:.0}x\n",
        ref_s / ours_s
    ));
    report.push_str(&format!(
        "  read once   {read_s:>10.2} s   ({:.2} GB of adapters)   extraction / read = {:.2}x\n",
        gb(adapter_bytes as f64),
        ours_s / read_s
    ));
    report.push_str(&format!(
        "  re-run with nothing new: {again_s:.2} s\n  peak RSS    ours {:.2} GB   reference sample {:.2} GB (the full pipeline also holds merged models)\n",
        gb(ours_peak as f64),
        gb(ref_peak)
    ));
    report.push_str(&format!(
        "  stored      ours {:.3} GB   reference {:.1} GB (merged bf16 models + triplets)   {:.3}%\n",
        gb(store_bytes as f64),
        gb(ref_bytes),
        100.0 * store_bytes as f64 / ref_bytes
    ));
    print!("{report}");
    fs::write(dir.join("report.txt"), &report)?;
    Ok(())
}

/// Runs a command, returning its wall time and peak resident memory (VmHWM, polled).
fn timed(cmd: &mut Command) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .spawn()
        .context("start next extract")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Ok(text) = fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        bail!("next extract failed ({status})");
    }
    Ok((t.elapsed().as_secs_f64(), peak))
}

/// A random-walk LoRA in verl layout (step 10..160); skipped when already there.
fn generate(run: &Path) -> Result<()> {
    let stamp = run.join(".complete");
    if stamp.exists() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(run);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut noise = |n: usize, scale: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    };
    // (name, shape, values) for every factor, updated in place at each checkpoint.
    let mut factors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![];
    for l in 0..LAYERS {
        for (m, o, i) in modules() {
            let module = format!("model.layers.{l}.{m}");
            factors.push((
                peft::key(&module, Factor::A),
                vec![R, i],
                noise(R * i, 0.02),
            ));
            factors.push((peft::key(&module, Factor::B), vec![o, R], vec![0.0; o * R]));
        }
    }
    for c in 1..=CHECKPOINTS {
        for (_, _, v) in factors.iter_mut() {
            let step = noise(v.len(), 1e-3);
            v.iter_mut().zip(step).for_each(|(x, d)| *x += d);
        }
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = factors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.clone(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let dir = run.join(format!("global_step_{}/actor/lora_adapter", c * INTERVAL));
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join(peft::CONFIG),
            format!(
                r#"{{"peft_type": "LORA", "r": {R}, "lora_alpha": {}, "target_modules": "all-linear"}}"#,
                2 * R
            ),
        )?;
        safetensors::serialize_to_file(views, None, &dir.join(peft::WEIGHTS))?;
    }
    fs::File::create(&stamp)?.flush()?;
    Ok(())
}
