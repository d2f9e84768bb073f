//! AOTInductor packages from Rust: a safe API over libtorch's C++
//! `torch::inductor::AOTIModelPackageLoader`, through a small `extern "C"` shim
//! (`src/shim.cpp`, compiled by `build.rs` against the same libtorch torch-sys links).
//!
//! This crate is the workspace's one unsafe boundary (the workspace forbids
//! `unsafe_code` everywhere else). The unsafe code is limited to:
//! - passing borrowed `at::Tensor*` (tch's `C_tensor`) inputs to C++ for the duration
//!   of one call, and taking ownership of the `new at::Tensor` outputs C++ returns
//!   (`Tensor::from_ptr`, freed by tch's `Drop` with `delete`, as libtch does);
//! - owning the loader handle (freed once in `Drop`);
//! - reading and freeing the C error string.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use tch::{Device, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn ddim_aoti_load(
        path: *const c_char,
        device_index: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn ddim_aoti_run(
        handle: *mut c_void,
        inputs: *const *mut C_tensor,
        n_in: usize,
        outputs: *mut *mut C_tensor,
        max_out: usize,
        n_out: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    fn ddim_aoti_free(handle: *mut c_void);
    fn ddim_aoti_free_error(err: *mut c_char);
}

/// An error from libtorch (its first line: the rest is a C++ backtrace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AotiError(pub String);

impl std::fmt::Display for AotiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AotiError {}

/// Takes the C error string (if any) and frees it.
fn take_error(err: *mut c_char) -> AotiError {
    if err.is_null() {
        return AotiError("AOTInductor: unknown error".into());
    }
    // SAFETY: a non-null `err` is a NUL-terminated string malloc'd by the shim, read
    // once here and freed right after.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by the shim's malloc; freed exactly once.
    unsafe { ddim_aoti_free_error(err) };
    AotiError(msg.lines().next().unwrap_or("").to_string())
}

/// A loaded AOTInductor package (`.pt2`): compiled kernels and the weights.
pub struct Package {
    handle: NonNull<c_void>,
}

// SAFETY: the loader owns its runner, weights and temp dir; nothing in it is tied to
// the thread that created it. `Package` is not `Sync`: `run` takes `&self` but callers
// in this workspace use it from one thread at a time (tch's Tensor is not Sync either).
unsafe impl Send for Package {}

impl Package {
    /// Loads `path` for `device` (the package must have been compiled for that kind
    /// of device).
    pub fn load(path: &Path, device: Device) -> Result<Self, AotiError> {
        let index = match device {
            Device::Cpu => -1,
            Device::Cuda(n) => n as c_int,
            other => {
                return Err(AotiError(format!(
                    "AOTInductor: unsupported device {other:?}"
                )))
            }
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| AotiError(format!("{}: path contains a NUL byte", path.display())))?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `c_path` is a valid C string for the call; `err` is a valid out-pointer.
        let h = unsafe { ddim_aoti_load(c_path.as_ptr(), index, &mut err) };
        match NonNull::new(h) {
            Some(handle) => Ok(Self { handle }),
            None => Err(AotiError(format!(
                "{}: {}",
                path.display(),
                take_error(err)
            ))),
        }
    }

    /// Runs the compiled graph on `inputs` (shapes, dtypes and device as exported).
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, AotiError> {
        const MAX_OUT: usize = 16;
        // The shim only reads through these pointers (it copies each at::Tensor, a
        // refcounted handle) during the call, while `inputs` borrows the tensors.
        let ptrs: Vec<*mut C_tensor> = inputs.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let mut outs: [*mut C_tensor; MAX_OUT] = [std::ptr::null_mut(); MAX_OUT];
        let mut n_out = 0usize;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `handle` is a live loader; `ptrs` holds `inputs.len()` valid
        // `at::Tensor*` kept alive by the borrow of `inputs`; `outs` has room for
        // MAX_OUT pointers; the out-pointers are valid for writes.
        let rc = unsafe {
            ddim_aoti_run(
                self.handle.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                outs.as_mut_ptr(),
                MAX_OUT,
                &mut n_out,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(take_error(err));
        }
        Ok(outs[..n_out]
            .iter()
            // SAFETY: each of the first n_out pointers is a fresh `new at::Tensor`
            // owned by nobody else; tch's Tensor takes ownership and `delete`s it.
            .map(|&p| unsafe { Tensor::from_ptr(p) })
            .collect())
    }
}

impl Drop for Package {
    fn drop(&mut self) {
        // SAFETY: the handle came from ddim_aoti_load and is freed exactly once.
        unsafe { ddim_aoti_free(self.handle.as_ptr()) }
    }
}

/// The lib folder of the libtorch this crate was built against
/// (for a PyPI torch: `<venv>/lib/pythonX.Y/site-packages/torch/lib`).
pub fn libtorch_lib_dir() -> &'static str {
    env!("DDIM_AOTI_LIBTORCH_LIB")
}
