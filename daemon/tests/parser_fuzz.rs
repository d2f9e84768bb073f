//! The stable, seeded equivalent of the cargo-fuzz targets in `fuzz/`: the byte
//! parsers that face clients (.npy, PNG/JPEG, `JobSpec` protobuf + validation)
//! on random mutations of valid inputs (bit flips, truncations, insertions,
//! splices, edge numbers) and on hand-made hostile .npy headers. Nothing may
//! panic; malformed input is an error. A few seconds in all;
//! `DDIM_FUZZ_ITERS=N` runs N mutations per seed instead of the default;
//! `DDIM_FUZZ_SEEDS_OUT=fuzz/corpus` writes the seeds for cargo-fuzz.
//! docs/reliability.md has the long runs.
#[path = "support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn iters(default: usize) -> usize {
    std::env::var("DDIM_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `DDIM_FUZZ_SEEDS_OUT=DIR`, writes the seeds as DIR/<target>/<n> (the
/// cargo-fuzz targets' starting corpus: `fuzz/corpus/`).
fn write_seeds(target: &str, seeds: &[Vec<u8>]) {
    let Some(dir) = std::env::var_os("DDIM_FUZZ_SEEDS_OUT") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).expect("write seed");
    }
}

/// Runs `check` on `input`; on a panic, fails naming the input (hex).
fn no_panic(what: &str, input: &[u8], check: impl FnOnce(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("{what} panicked on {} bytes: {hex}", input.len());
    }
}

/// Every seed, every prefix of it, and `n` mutations of it.
fn run(what: &str, seeds: &[Vec<u8>], n: usize, rng: &mut Rng, check: &dyn Fn(&[u8])) -> usize {
    let mut count = 0;
    for (i, seed) in seeds.iter().enumerate() {
        no_panic(what, seed, check);
        for k in (0..seed.len()).step_by(1 + seed.len() / 64) {
            no_panic(what, &seed[..k], check);
            count += 1;
        }
        let other = &seeds[(i + 1) % seeds.len()];
        for _ in 0..n {
            let m = mutate(rng, seed, other);
            no_panic(what, &m, check);
            count += 1;
        }
    }
    count
}

#[test]
fn npy_reader_never_panics() {
    let f = fixture();
    let mut rng = Rng(0x006e_7079);
    let seeds = npy_seeds();
    write_seeds("npy", &seeds);
    let check = |b: &[u8]| check_npy(b, &f.meta);
    let mut n = run("npy", &seeds, iters(1500), &mut rng, &check);
    for h in npy_headers() {
        no_panic("npy header", &h, check);
        n += 1;
    }
    // The seeds themselves are read; hostile headers are refused.
    for s in &seeds {
        assert!(ddimd::engine::npy::from_bytes(s).is_ok());
    }
    for h in npy_headers() {
        if let Ok((shape, v)) = ddimd::engine::npy::from_bytes(&h) {
            assert_eq!(shape.iter().product::<usize>(), v.len(), "{shape:?}");
        }
    }
    println!("npy: {n} inputs");
}

#[test]
fn image_decode_never_panics() {
    let mut rng = Rng(0x0069_6d67);
    let seeds = image_seeds();
    write_seeds("image", &seeds);
    let n = run("image", &seeds, iters(300), &mut rng, &|b| check_image(b));
    println!("image: {n} inputs");
}

#[test]
fn job_spec_validation_never_panics() {
    let f = fixture();
    let seeds = spec_seeds(&f);
    write_seeds("job_spec", &seeds);
    // The seeds are valid, except where they name latents made unusable on
    // purpose (another shape or model).
    for s in &seeds {
        use prost::Message;
        let spec = ddim_proto::v1::JobSpec::decode(&s[..]).unwrap();
        let r = ddimd::server::jobs::validate_spec(Some(&spec), &f.meta, &f.store);
        if let Err(e) = r {
            let m = e.to_string();
            assert!(
                m.contains("shape") || m.contains("model") || m.contains("terms"),
                "{m}"
            );
        }
    }
    let mut rng = Rng(0x7370_6563);
    let n = run("job spec", &seeds, iters(400), &mut rng, &|b| {
        check_spec(b, &f)
    });
    // Random bytes too (protobuf is permissive: many decode to something).
    let mut m = 0;
    for _ in 0..iters(400) * 4 {
        let len = rng.below(96);
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        no_panic("job spec", &b, |b| check_spec(b, &f));
        m += 1;
    }
    println!("job spec: {n} mutations, {m} random inputs");
}
