//! The verl engine without verl: the Hydra overrides of each kind of launch (insta snapshots),
//! settings it cannot reproduce refused by key, the completeness of checkpoint trees as verl
//! leaves them (partial saves, missing files, two ranks), and the adapter exporter on FSDP
//! shards written by torch.distributed with two ranks (DTensor shards) and one (plain tensors).

use std::path::{Path, PathBuf};
use std::process::Command;

use next_scheduler::verl::{self, complete, Incomplete, Launch, Start};
use next_scheduler::{EngineKind, EngineSection, InProcess, SchedulerSection, Verl};
use next_trainer::config::{AdvEstimator, KlType, LrSchedule, TrainConfig};
use serde_json::json;

/// A launch of segment 1 with the default LoRA rank (8), or one more after a jump (the rank the
/// jumped adapter has).
fn launch(start: Start) -> Launch {
    let rank = match start {
        Start::Jump { .. } => 9,
        _ => 8,
    };
    Launch {
        run: "/runs/r/segment-1".into(),
        base: "/models/Qwen2.5-0.5B-Instruct".into(),
        stop_at: 40,
        start,
        rank,
        rows: 7473,
        metrics: "/runs/r/segment-1/verl/metrics-0.jsonl".into(),
    }
}

fn section() -> EngineSection {
    EngineSection {
        kind: EngineKind::Verl,
        ..EngineSection::default()
    }
}

fn overrides(cfg: &TrainConfig, section: &EngineSection, start: Start) -> String {
    verl::overrides(cfg, section, &launch(start))
        .unwrap()
        .join("\n")
}

#[test]
fn a_fresh_launch_trains_lora_to_the_stop_step_from_the_initial_adapter() {
    let start = Start::Fresh {
        adapter: "/runs/r/segment-1/initial_adapter".into(),
    };
    insta::assert_snapshot!(overrides(&TrainConfig::default(), &section(), start));
}

#[test]
fn a_jumped_segment_loads_only_the_extra_state_of_the_checkpoint_it_jumped_from() {
    let start = Start::Jump {
        from: "/runs/r/segment-0/verl/global_step_40".into(),
        adapter: "/runs/r/segment-1/verl/start_adapter".into(),
    };
    let text = overrides(&TrainConfig::default(), &section(), start);
    insta::assert_snapshot!(text);
}

#[test]
fn a_resumed_launch_with_user_overrides_dr_grpo_and_kl() {
    let mut cfg = TrainConfig::default();
    cfg.algorithm.adv_estimator = AdvEstimator::DrGrpo;
    cfg.algorithm.kl_coef = 0.001;
    cfg.lora.target_modules = vec!["q_proj".into(), "v_proj".into()];
    let mut s = section();
    s.verl = serde_json::from_value(json!({
        "actor_rollout_ref.rollout.name": "vllm",
        "trainer.n_gpus_per_node": 8,
        "data.max_prompt_length": 1024,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 4,
        "actor_rollout_ref.model.use_shm": true,
        "+ray_kwargs.ray_init.runtime_env.env_vars.NCCL_DEBUG": "WARN",
        "trainer.experiment_name": "gsm8k lora",
    }))
    .unwrap();
    s.ray_address = "10.0.0.1:6379".into();
    let start = Start::Resume {
        adapter: "/runs/r/segment-1/initial_adapter".into(),
    };
    insta::assert_snapshot!(overrides(&cfg, &s, start));
}

#[test]
fn keys_the_engine_owns_are_refused_in_engine_verl() {
    for key in [
        "trainer.total_training_steps",
        "+actor_rollout_ref.actor.checkpoint.save_lora_only",
        "actor_rollout_ref.model.lora_rank",
    ] {
        let mut s = section();
        s.verl.insert(key.into(), json!(1));
        let start = Start::Fresh {
            adapter: "/a".into(),
        };
        let err = verl::overrides(&TrainConfig::default(), &s, &launch(start)).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn settings_verl_cannot_reproduce_are_refused_by_key() {
    type Edit = Box<dyn Fn(&mut TrainConfig, &mut SchedulerSection)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|_, s| s.keep_moments = true),
            "scheduler.keep_moments",
        ),
        (
            Box::new(|c, _| c.algorithm.adv_estimator = AdvEstimator::Dapo),
            "algorithm.adv_estimator = dapo",
        ),
        (
            Box::new(|c, _| c.optim.schedule = LrSchedule::Cosine),
            "optim.schedule = cosine",
        ),
        (
            Box::new(|c, _| c.rollout.stop = vec!["\n".into()]),
            "rollout.stop",
        ),
        (
            Box::new(|c, _| (c.trainer.save_every, c.trainer.val_every) = (4, 10)),
            "trainer.val_every (10) must be a multiple of trainer.save_every (4)",
        ),
    ];
    let build = |cfg: TrainConfig, sched: &SchedulerSection| {
        let inner = InProcess::new(cfg, "/models/none".into(), Box::new(|_, _| {}));
        Verl::new(inner, section(), sched, "next".into()).map(drop)
    };
    let fine = SchedulerSection {
        keep_moments: false,
        ..SchedulerSection::default()
    };
    for (edit, key) in cases {
        let (mut cfg, mut sched) = (TrainConfig::default(), fine.clone());
        edit(&mut cfg, &mut sched);
        let err = build(cfg, &sched).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let mut k1 = TrainConfig::default();
    k1.algorithm.kl_type = KlType::K1;
    assert!(build(TrainConfig::default(), &fine).is_ok());
    assert!(build(k1, &fine).is_ok());
}

// ----------------------------------------------------------------------- checkpoint trees

/// A verl checkpoint directory: `global_step_{step}` for each step with `world` ranks' files,
/// minus the files named in `without` (paths under the step directory).
fn tree(dir: &Path, steps: &[usize], world: usize, without: &[&str], latest: Option<usize>) {
    for &step in steps {
        let s = dir.join(format!("global_step_{step}"));
        let actor = s.join("actor");
        std::fs::create_dir_all(&actor).unwrap();
        let mut files = vec![(
            "actor/fsdp_config.json".to_string(),
            format!("{{\"FSDP_version\": 2, \"world_size\": {world}}}"),
        )];
        for rank in 0..world {
            for kind in ["model", "optim", "extra_state"] {
                files.push((
                    format!("actor/{kind}_world_size_{world}_rank_{rank}.pt"),
                    "x".into(),
                ));
            }
        }
        files.push(("data.pt".into(), "x".into()));
        files.push(("actor/lora_train_meta.json".into(), "{}".into()));
        for (name, text) in files {
            if !without.contains(&name.as_str()) {
                std::fs::write(s.join(name), text).unwrap();
            }
        }
    }
    if let Some(l) = latest {
        std::fs::write(dir.join(verl::layout::LATEST), format!("{l}")).unwrap();
    }
}

/// `complete` of step 20 of a tree, as `Ok(())` or the error's text with the temp dir elided.
fn check(world: usize, without: &[&str]) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path(), &[20], world, without, Some(20));
    complete(tmp.path(), 20)
        .map(|actor| assert!(actor.ends_with("global_step_20/actor")))
        .map_err(|e| {
            e.to_string()
                .replace(&tmp.path().display().to_string(), "DIR")
        })
}

#[test]
fn checkpoint_completeness_is_judged_from_every_ranks_files() {
    let cases: &[(usize, &[&str], Result<(), &str>)] = &[
        (1, &[], Ok(())),
        (2, &[], Ok(())),
        (2, &["actor/lora_train_meta.json"], Ok(())),
        (
            2,
            &["actor/optim_world_size_2_rank_1.pt"],
            Err("DIR/global_step_20 lacks actor/optim_world_size_2_rank_1.pt (a save interrupted, or files removed)"),
        ),
        (
            2,
            &["data.pt"],
            Err("DIR/global_step_20 lacks data.pt (a save interrupted, or files removed)"),
        ),
        (
            2,
            &[
                "actor/model_world_size_2_rank_0.pt",
                "actor/model_world_size_2_rank_1.pt",
                "actor/extra_state_world_size_2_rank_1.pt",
                "data.pt",
            ],
            Err("DIR/global_step_20 lacks actor/model_world_size_2_rank_0.pt, actor/model_world_size_2_rank_1.pt, actor/extra_state_world_size_2_rank_1.pt and 1 more (a save interrupted, or files removed)"),
        ),
        (
            2,
            &["actor/fsdp_config.json"],
            Err("DIR/global_step_20/actor/fsdp_config.json does not exist"),
        ),
    ];
    for (world, without, want) in cases {
        assert_eq!(
            check(*world, without),
            want.map_err(String::from),
            "world {world} without {without:?}"
        );
    }
}

#[test]
fn the_commit_mark_decides_which_checkpoints_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No mark yet: nothing committed, whatever directories exist.
    tree(dir, &[10], 2, &[], None);
    assert_eq!(verl::layout::latest(dir).unwrap(), None);
    assert_eq!(verl::layout::steps(dir).unwrap(), Vec::<usize>::new());
    // Step 30 was being saved when the run was killed: the mark still says 20.
    tree(dir, &[20], 2, &[], Some(20));
    tree(dir, &[30], 2, &["data.pt"], None);
    assert_eq!(verl::layout::latest(dir).unwrap(), Some(20));
    assert_eq!(verl::layout::steps(dir).unwrap(), vec![10, 20]);
    // A mark that names an incomplete checkpoint is an error naming both.
    std::fs::write(dir.join(verl::layout::LATEST), "30").unwrap();
    let err = verl::layout::latest(dir).unwrap_err().to_string();
    assert!(
        err.contains("names step 30") && err.contains("data.pt"),
        "{err}"
    );
    std::fs::write(dir.join(verl::layout::LATEST), "thirty").unwrap();
    let err = verl::layout::latest(dir).unwrap_err().to_string();
    assert!(err.contains("not a step number"), "{err}");
    let missing = complete(dir, 40).unwrap_err();
    assert!(matches!(missing, Incomplete::Missing(p) if p.ends_with("global_step_40")));
}

#[test]
fn metrics_of_every_launch_are_read_with_the_last_launch_winning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let row = |step: usize, score: f64| {
        json!({"step": step, "data": {"critic/score/mean": score, "timing_s/step": 1.5}})
            .to_string()
    };
    // The first launch died after step 3; the second redid step 3 and went on to 5.
    std::fs::write(
        dir.join("metrics-0.jsonl"),
        [row(1, 0.1), row(2, 0.2), row(3, 0.3)].join("\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("metrics-1.jsonl"),
        [row(3, 0.35), row(4, 0.4), row(5, 0.5)].join("\n"),
    )
    .unwrap();
    assert_eq!(
        verl::layout::next_metrics_file(dir).unwrap(),
        dir.join("metrics-2.jsonl")
    );
    let rows = verl::layout::metrics_rows(dir, 4).unwrap();
    let got: Vec<(usize, f64)> = rows
        .iter()
        .map(|r| (r.step, r.get("critic/score/mean").unwrap()))
        .collect();
    assert_eq!(got, vec![(1, 0.1), (2, 0.2), (3, 0.35), (4, 0.4)]);
}

// ------------------------------------------------------------------------------- exporter

/// Writes FSDP model shards like verl's (`save_lora_only`: only the LoRA factors) for a model
/// with two adapted projections, with `world` ranks (2: DTensor shards from a real gloo
/// process group; 1: plain tensors), and the full tensors as `expected.safetensors`.
const SHARDS: &str = r#"
import json, os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file

def full():
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in range(2):
        for proj, (o, i) in (("q_proj", (8, 6)), ("v_proj", (4, 6))):
            stem = "base_model.model.model.layers.%d.self_attn.%s" % (layer, proj)
            out[stem + ".lora_A.default.weight"] = torch.randn(2, i, generator=g)
            out[stem + ".lora_B.default.weight"] = torch.randn(o, 2, generator=g)
    return out

def rank_main(rank, world, actor, port):
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.device_mesh import init_device_mesh
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
    sd = {k: distribute_tensor(t, mesh, [Shard(0)]) for k, t in full().items()}
    torch.save(sd, os.path.join(actor, "model_world_size_%d_rank_%d.pt" % (world, rank)))
    dist.destroy_process_group()

if __name__ == "__main__":
    actor, world, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(actor, exist_ok=True)
    json.dump({"FSDP_version": 2, "world_size": world}, open(os.path.join(actor, "fsdp_config.json"), "w"))
    if world == 1:
        torch.save(full(), os.path.join(actor, "model_world_size_1_rank_0.pt"))
    else:
        mp.spawn(rank_main, args=(world, actor, port), nprocs=world)
    expected = {k.replace(".default.", "."): v for k, v in full().items()}
    save_file(expected, os.path.join(actor, "expected.safetensors"))
"#;

fn python() -> PathBuf {
    next_files::python::interpreter(None)
}

fn write_shards(actor: &Path, world: usize, port: u16) {
    // A file, not `-c`: the spawned ranks import their function from it.
    let script = actor.parent().unwrap().join("shards.py");
    std::fs::create_dir_all(actor.parent().unwrap()).unwrap();
    std::fs::write(&script, SHARDS).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .arg(actor)
        .arg(world.to_string())
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensors(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut t = tch::Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn adapter_config(dir: &Path, r: i64, alpha: f64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("adapter_config.json");
    let config = json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, "bias": "none"});
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn exported_adapters_equal_the_unsharded_factors_with_the_true_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    // An alpha verl's own merger would truncate to 12 (or to 0 below 1).
    let config = adapter_config(&tmp.path().join("start"), 2, 12.5);
    let port = 20000 + (std::process::id() % 20000) as u16;
    for (world, port) in [(2, port), (1, 0)] {
        let actor = tmp.path().join(format!("w{world}/global_step_10/actor"));
        write_shards(&actor, world, port);
        let out = tmp.path().join(format!("w{world}/adapter"));
        let log = tmp.path().join("export.log");
        verl::export_adapter(&python(), &actor, &config, &out, &log).unwrap();
        let got = tensors(&out.join("adapter_model.safetensors"));
        let want = tensors(&actor.join("expected.safetensors"));
        assert_eq!(got.len(), 8, "world {world}");
        for ((gk, gt), (wk, wt)) in got.iter().zip(&want) {
            assert_eq!(gk, wk);
            assert!(gt.equal(wt), "world {world}: {gk} differs");
        }
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(written["lora_alpha"], json!(12.5));
        assert_eq!(written["r"], json!(2));
    }
}

#[test]
fn the_exporter_refuses_missing_shards_and_a_rank_that_disagrees_with_the_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let actor = tmp.path().join("global_step_10/actor");
    write_shards(&actor, 1, 0);
    let log = tmp.path().join("export.log");
    let out = tmp.path().join("adapter");
    // The segment started from a rank-3 adapter: these shards are from another run.
    let wrong = adapter_config(&tmp.path().join("start3"), 3, 16.0);
    let err = verl::export_adapter(&python(), &actor, &wrong, &out, &log)
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("rank 2"), "{err}");
    std::fs::write(actor.join("fsdp_config.json"), r#"{"world_size": 2}"#).unwrap();
    let right = adapter_config(&tmp.path().join("start2"), 2, 16.0);
    let err = verl::export_adapter(&python(), &actor, &right, &out, &log)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_world_size_2_rank_0.pt"), "{err}");
}

/// With a verl environment (`cargo xtask setup --with verl`, or `$NEXT_VERL_PYTHON`), verl's own
/// Hydra config accepts every kind of launch's overrides (`main_ppo --cfg job` composes the
/// config and prints it without training). Without one there is nothing to check against.
#[test]
fn verls_own_config_accepts_the_overrides_where_verl_is_installed() {
    let python = next_files::python::verl_interpreter(None);
    let has_verl = Command::new(&python)
        .args(["-c", "import verl.trainer.main_ppo"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_verl {
        eprintln!("no verl environment ({}): skipped", python.display());
        return;
    }
    let mut user = section();
    user.verl = serde_json::from_value(json!({"trainer.experiment_name": "a b"})).unwrap();
    let starts = [
        Start::Fresh {
            adapter: "/a".into(),
        },
        Start::Resume {
            adapter: "/a".into(),
        },
        Start::Jump {
            from: "/r/global_step_4".into(),
            adapter: "/a".into(),
        },
    ];
    for start in starts {
        let args = verl::overrides(&TrainConfig::default(), &user, &launch(start.clone())).unwrap();
        let out = Command::new(&python)
            .args(["-m", "verl.trainer.main_ppo", "--cfg", "job"])
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("experiment_name: a b"),
            "{start:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
