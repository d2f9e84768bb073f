//! The daemon's .npy reader (`engine::npy::from_bytes`) and the import check built on it.
#![no_main]
#[path = "../../daemon/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static FIXTURE: OnceLock<fuzz_inputs::Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(fuzz_inputs::fixture);
    fuzz_inputs::check_npy(data, &f.meta);
});
