//! The pretrained bases shipped in `bases/`: the default config finds its base there (so every
//! machine starts from the same weights), the files are checked against `SHA256SUMS`, and a
//! damaged file is refused by name.

use next_trainer::pretrain::{shipped, shipped_dir, CHECKSUMS};
use next_trainer::TrainConfig;

#[test]
fn the_default_config_uses_the_shipped_base() {
    let cfg = TrainConfig::default();
    let found = shipped(&cfg.pretrain, &shipped_dir())
        .unwrap()
        .expect("bases/add3");
    assert!(found.dir.ends_with("add3"), "{}", found.dir.display());
    assert!(found.reused);
    // Another pretraining setting has no shipped base.
    let mut other = cfg.pretrain.clone();
    other.seed = 12345;
    assert!(shipped(&other, &shipped_dir()).unwrap().is_none());
}

#[test]
fn a_damaged_shipped_base_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bases = dir.path();
    let src = shipped_dir();
    std::fs::create_dir(bases.join("add3")).unwrap();
    for f in std::fs::read_dir(src.join("add3")).unwrap().flatten() {
        std::fs::copy(f.path(), bases.join("add3").join(f.file_name())).unwrap();
    }
    std::fs::copy(src.join(CHECKSUMS), bases.join(CHECKSUMS)).unwrap();
    let cfg = TrainConfig::default().pretrain;
    assert!(shipped(&cfg, bases).unwrap().is_some());
    let model = bases.join("add3/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let err = shipped(&cfg, bases).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("checksum"),
        "{err}"
    );
}
