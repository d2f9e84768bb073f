//! PNG/JPEG as the daemon takes them: `conversions::check_image` at submit, then
//! `imageio::decode_to_tensor`.
#![no_main]
#[path = "../../daemon/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_inputs::check_image(data);
});
