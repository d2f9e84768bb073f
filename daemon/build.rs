//! Link-time set-up for libtorch (see README "Building"):
//! - an rpath to the libtorch that torch-sys found, so `ddimd` runs without
//!   LD_LIBRARY_PATH;
//! - `libtorch_cuda` linked with `--no-as-needed`: nothing in our code refers to
//!   it, so the default `--as-needed` linker would drop it and CUDA would never
//!   be available, even on a GPU machine.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=DDIMD_LIBTORCH_VERSION=unknown");
        return;
    };
    let lib = PathBuf::from(lib);
    // torch/lib/../version.py holds the libtorch version the binary links.
    let version = std::fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|v| {
            v.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|s| s.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DDIMD_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
