//! Protobuf bytes → `JobSpec` → `jobs::validate_spec` against a store with latents.
#![no_main]
#[path = "../../daemon/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static FIXTURE: OnceLock<fuzz_inputs::Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(fuzz_inputs::fixture);
    fuzz_inputs::check_spec(data, f);
});
