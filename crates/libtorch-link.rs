//! Build script shared by every crate that links libtorch: rpath to torch's lib folder, and CUDA.
//!
//! `LIBTORCH` comes from `.cargo/config.toml` (set up by `cargo xtask setup`). The rpath lets the
//! binaries and test executables run without `LD_LIBRARY_PATH`. `torch_cuda` has no symbol our
//! code references directly, so the default `--as-needed` linking would drop it and CUDA would
//! report itself unavailable; linking it with `--no-as-needed` keeps it when the wheel ships it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=../libtorch-link.rs");
    let Some(root) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(root).join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
