//! Compiles `src/shim.cpp` (an `extern "C"` wrapper around
//! `torch::inductor::AOTIModelPackageLoader`) against the headers of the libtorch
//! torch-sys found, with the same C++ ABI flag, and links it to that libtorch.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    let abi = cxx11_abi(&lib);
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .define(
            "DDIM_AOTI_LIBTORCH_DIR",
            format!("{:?}", lib.display().to_string()).as_str(),
        )
        .file("src/shim.cpp")
        .compile("ddim_aoti_shim");
    println!("cargo:rustc-env=DDIM_AOTI_LIBTORCH_LIB={}", lib.display());
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=dl");
}

/// The C++ ABI libtorch was built with (`torch._C._GLIBCXX_USE_CXX11_ABI`), read from
/// the library itself: new-ABI builds mangle `std::__cxx11::basic_string` into their
/// exported names (`St7__cxx11`). `DDIM_AOTI_CXX11_ABI=0|1` overrides.
fn cxx11_abi(lib: &std::path::Path) -> u8 {
    println!("cargo:rerun-if-env-changed=DDIM_AOTI_CXX11_ABI");
    if let Ok(v) = std::env::var("DDIM_AOTI_CXX11_ABI") {
        return if v.trim() == "0" { 0 } else { 1 };
    }
    match std::fs::read(lib.join("libc10.so")) {
        Ok(bytes) => u8::from(bytes.windows(10).any(|w| w == b"St7__cxx11")),
        Err(_) => 1,
    }
}
