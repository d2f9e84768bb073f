//! Inputs for fuzzing the byte parsers that face clients, shared by the stable
//! property test (`daemon/tests/parser_fuzz.rs`) and the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, which include this file by path):
//! valid seeds (.npy, PNG, JPEG, one `JobSpec` of every kind), a store with a
//! few latents for `validate_spec` to find, and the one-input checks each
//! target runs. A check returns normally on any input; a panic is the finding.
#![allow(dead_code)]

use ddim_proto::v1 as pb;
use ddimd::server::conversions::{self, ModelMeta};
use ddimd::server::jobs;
use ddimd::server::store::{
    JobKind, JobRecord, JobState, LatentRecord, NewLatent, OriginRecord, Priority, Store,
    RECORD_VERSION,
};
use prost::Message;

/// [C, H, W] of the pretend model: small, so that image conversion is cheap.
pub const SHAPE: [i64; 3] = [1, 8, 8];

/// A float32 .npy (format 1.0) as numpy writes it.
pub fn npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = if shape.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A grey w×h image as PNG or JPEG bytes.
pub fn image(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 7 + y * 13) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

/// Valid .npy seeds: the model's [C, H, W], [N, C, H, W], and other shapes.
pub fn npy_seeds() -> Vec<Vec<u8>> {
    let per = (SHAPE[0] * SHAPE[1] * SHAPE[2]) as usize;
    let v: Vec<f32> = (0..2 * per).map(|i| (i as f32 / 64.0).sin()).collect();
    vec![
        npy(&[1, 8, 8], &v[..per]),
        npy(&[2, 1, 8, 8], &v),
        npy(&[3], &v[..3]),
        npy(&[], &v[..1]),
    ]
}

/// Valid image seeds: PNG and JPEG, smaller and larger than the model.
pub fn image_seeds() -> Vec<Vec<u8>> {
    use image::ImageFormat::{Jpeg, Png};
    vec![
        image(8, 8, Png),
        image(5, 3, Png),
        image(20, 12, Png),
        image(8, 8, Jpeg),
        image(16, 9, Jpeg),
    ]
}

/// A store with latents for specs to name, and the model it pretends to serve.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub meta: ModelMeta,
    /// lat-N of: an encoded latent with a source image, a sampled one, one of
    /// another shape, one of another model.
    pub latents: Vec<String>,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    let meta = ModelMeta {
        shape: SHAPE,
        t: 1000,
        fingerprint: "fuzz-model".into(),
        info: pb::ModelInfo::default(),
    };
    let job_id = store.next_id().expect("id");
    let shape = SHAPE.map(|d| d as u32);
    type Made<'a> = (u64, [u32; 3], &'a str, OriginRecord, Vec<&'a str>);
    let made: Vec<Made> = vec![
        (
            store.next_id().unwrap(),
            shape,
            "fuzz-model",
            OriginRecord::Encoded {
                filename: "a.png".into(),
                has_source: true,
            },
            vec!["sneaker"],
        ),
        (
            store.next_id().unwrap(),
            shape,
            "fuzz-model",
            OriginRecord::Sampled { seed: 1, index: 0 },
            vec!["ankle-boot"],
        ),
        (
            store.next_id().unwrap(),
            [3, 8, 8],
            "fuzz-model",
            OriginRecord::Sampled { seed: 1, index: 1 },
            vec![],
        ),
        (
            store.next_id().unwrap(),
            shape,
            "other-model",
            OriginRecord::Sampled { seed: 1, index: 2 },
            vec!["sneaker"],
        ),
    ];
    let png = image(8, 8, image::ImageFormat::Png);
    let news: Vec<NewLatent> = made
        .iter()
        .map(|(id, shape, fp, origin, tags)| NewLatent {
            record: LatentRecord {
                v: RECORD_VERSION,
                id: *id,
                name: format!("latent {id}"),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                created_ms: 0,
                shape: *shape,
                fingerprint: fp.to_string(),
                encode_steps: 10,
                encode_spacing: "uniform".into(),
                encode_solver: "ddim".into(),
                origin: origin.clone(),
                preview_steps: 10,
                job_id,
            },
            xt: vec![0.25; shape.iter().product::<u32>() as usize],
            source_png: matches!(origin, OriginRecord::Encoded { .. }).then(|| png.clone()),
            preview_png: png.clone(),
        })
        .collect();
    let mut job = JobRecord {
        v: RECORD_VERSION,
        id: job_id,
        kind: JobKind::Sample,
        state: JobState::Queued,
        priority: Priority::Interactive,
        created_ms: 0,
        started_ms: 0,
        finished_ms: 0,
        attempts: 0,
        error: String::new(),
        total_steps: 1,
        reads: vec![],
        produced: vec![],
        idempotency_key: String::new(),
        batch: None,
        rows: 1,
        images: 1,
        stopped_at: 0,
        ran_by: String::new(),
    };
    store.insert_job(&job, b"spec").expect("insert job");
    let mut running = job.clone();
    running.state = JobState::Running;
    store
        .move_job(&running, JobState::Queued)
        .expect("move job");
    job.state = JobState::Done;
    job.produced = news.iter().map(|n| n.record.id).collect();
    store.finish_job(&job, b"", &news).expect("commit latents");
    let latents = made.iter().map(|m| conversions::latent_id(m.0)).collect();
    Fixture {
        dir,
        store,
        meta,
        latents,
    }
}

fn sampler(steps: u32) -> Option<pb::SamplerOptions> {
    Some(pb::SamplerOptions {
        steps,
        ..Default::default()
    })
}

/// One valid spec of every kind (naming the fixture's latents), as bytes.
pub fn spec_seeds(f: &Fixture) -> Vec<Vec<u8>> {
    use pb::job_spec::Kind as K;
    let [enc, smp, shape, other] = [0, 1, 2, 3].map(|i| f.latents[i].clone());
    let png = image(8, 8, image::ImageFormat::Png);
    let jpeg = image(12, 12, image::ImageFormat::Jpeg);
    let out = Some(pb::EditOutput {
        preview_steps: 5,
        name: "x".into(),
        tags: vec!["t".into()],
        ..Default::default()
    });
    let kinds = vec![
        K::Encode(pb::EncodeJob {
            images: vec![pb::EncodeInput {
                data: png.clone(),
                name: "a".into(),
                tags: vec!["t".into()],
            }],
            steps: 10,
            ..Default::default()
        }),
        K::Sample(pb::SampleJob {
            count: 2,
            seed: 3,
            sampler: sampler(10),
            ..Default::default()
        }),
        K::Decode(pb::DecodeJob {
            latent_id: smp.clone(),
            steps: vec![5, 10],
            etas: vec![0.0, 0.5],
            ..Default::default()
        }),
        K::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::LatentId(enc.clone())),
            steps: vec![5],
            ..Default::default()
        }),
        K::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::Image(jpeg.clone())),
            ..Default::default()
        }),
        K::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::Latents(pb::LatentIdList {
                ids: vec![enc.clone()],
            })),
            ..Default::default()
        }),
        K::Interpolate(pb::InterpolateJob {
            a: enc.clone(),
            b: smp.clone(),
            frames: 5,
            sampler: sampler(10),
            save_frames: vec![1, 3],
            ..Default::default()
        }),
        K::Import(pb::ImportJob {
            latents: npy_seeds()
                .into_iter()
                .take(2)
                .map(|npy| pb::ImportInput {
                    npy,
                    name: "i".into(),
                    tags: vec![],
                })
                .collect(),
            preview_steps: 5,
            ..Default::default()
        }),
        K::Variation(pb::VariationJob {
            latent_id: smp.clone(),
            strength: 0.3,
            seed: 1,
            count: 2,
            out: out.clone(),
        }),
        K::Mix(pb::MixJob {
            terms: vec![
                pb::MixTerm {
                    latent_id: enc.clone(),
                    weight: 1.0,
                },
                pb::MixTerm {
                    latent_id: shape.clone(),
                    weight: -0.5,
                },
                pb::MixTerm {
                    latent_id: other.clone(),
                    weight: 0.5,
                },
            ],
            expression: "a - b".into(),
            out: out.clone(),
            radius: 0,
        }),
        K::Direction(pb::DirectionJob {
            latent_id: enc.clone(),
            from_tag: "sneaker".into(),
            to_tag: "ankle-boot".into(),
            weights: vec![0.5, 1.0],
            out: out.clone(),
            radius: pb::Radius::SqrtD as i32,
        }),
        K::Renoise(pb::RenoiseJob {
            input: Some(pb::renoise_job::Input::LatentId(enc.clone())),
            strength: 0.5,
            sampler: sampler(10),
            count: 1,
            out: out.clone(),
            ..Default::default()
        }),
        K::Renoise(pb::RenoiseJob {
            input: Some(pb::renoise_job::Input::Image(png.clone())),
            image_name: "p.png".into(),
            strength: 0.5,
            sampler: sampler(10),
            perturb: 0.2,
            ..Default::default()
        }),
        K::Inpaint(pb::InpaintJob {
            input: Some(pb::inpaint_job::Input::LatentId(smp.clone())),
            rects: vec![pb::Rect {
                x: 1,
                y: 1,
                width: 4,
                height: 3,
            }],
            sampler: sampler(10),
            count: 1,
            out: out.clone(),
            ..Default::default()
        }),
        K::Inpaint(pb::InpaintJob {
            input: Some(pb::inpaint_job::Input::Image(jpeg)),
            rects: vec![pb::Rect {
                x: 0,
                y: 0,
                width: 8,
                height: 8,
            }],
            sampler: sampler(10),
            ..Default::default()
        }),
        K::Grid(pb::GridJob {
            corners: vec![enc, smp, shape, other],
            size: 3,
            save: vec![4],
            preview_steps: 5,
            out,
        }),
    ];
    kinds
        .into_iter()
        .map(|k| pb::JobSpec { kind: Some(k) }.encode_to_vec())
        .collect()
}

// ------------------------------------------------------------- checks --

/// The daemon's .npy reader, alone and as an import sees it.
pub fn check_npy(bytes: &[u8], meta: &ModelMeta) {
    if let Ok((shape, values)) = ddimd::engine::npy::from_bytes(bytes) {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            values.len(),
            "shape {shape:?} with {} values",
            values.len()
        );
    }
    let _ = conversions::import_rows(bytes, meta, "import.latents[0].npy");
}

/// PNG/JPEG as the daemon takes them: the submit-time check, then the conversion.
pub fn check_image(bytes: &[u8]) {
    let ok = conversions::check_image(bytes, "encode.images[0].data").is_ok();
    match ddimd::engine::imageio::decode_to_tensor(bytes, SHAPE, "image") {
        Ok(t) => {
            assert!(ok, "check_image refused what decode_to_tensor took");
            assert_eq!(t.size(), [1, SHAPE[0], SHAPE[1], SHAPE[2]]);
        }
        Err(_) => assert!(!ok, "check_image passed what decode_to_tensor refused"),
    }
}

/// Protobuf bytes → JobSpec → the daemon's validation (and the listing strip).
pub fn check_spec(bytes: &[u8], f: &Fixture) {
    let Ok(spec) = pb::JobSpec::decode(bytes) else {
        return;
    };
    let _ = jobs::validate_spec(Some(&spec), &f.meta, &f.store);
    let _ = jobs::strip_images(spec);
}

// ---------------------------------------------------------- mutations --

/// SplitMix64, for the stable test's mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Interesting numbers for header fields and varints.
const EDGES: [u64; 10] = [
    0,
    1,
    255,
    65_535,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
    4096,
];

/// One to four random edits of `seed`: bit flips, byte sets, truncation,
/// insertions, deletions, duplicated slices, splices from `other`, and
/// little-endian edge numbers written over the bytes.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(8) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(at),
            3 => {
                let n = rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, ins);
            }
            4 => {
                let end = (at + rng.below(32)).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let end = (at + rng.below(32)).min(b.len());
                let dup = b[at..end].to_vec();
                b.splice(at..at, dup);
            }
            6 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                let end_here = (at + rng.below(64)).min(b.len());
                b.splice(at..end_here, other[from..end].iter().copied());
            }
            _ => {
                let v = EDGES[rng.below(EDGES.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)];
                let end = (at + n).min(b.len());
                b.splice(at..end, v[..n].iter().copied());
            }
        }
    }
    b
}

/// .npy headers a careful parser must refuse: huge, negative, empty and
/// malformed dimensions, other dtypes, lying lengths, other versions.
pub fn npy_headers() -> Vec<Vec<u8>> {
    let body = |h: &str, version: u8, data: usize| {
        let mut out = b"\x93NUMPY".to_vec();
        out.push(version);
        out.push(0);
        if version == 1 {
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    };
    let shapes = [
        "(18446744073709551615, 2)",
        "(4294967296, 4294967296, 4294967296)",
        "(9223372036854775807,)",
        "(0, 1, 8, 8)",
        "(-1, 8, 8)",
        "()",
        "(,)",
        "(1,,8)",
        "(1 8 8)",
        "1, 8, 8",
        "(1, 8, 8",
        ")1, 8, 8(",
        "(1, 8, 8)) (",
        "(1.5, 8, 8)",
        "(１, 8, 8)",
        "(0x10,)",
        "(1e3,)",
    ];
    let mut out = vec![];
    for s in shapes {
        for descr in ["'<f4'", "'>f4'", "'<f8'", "'|u1'", "'<f4"] {
            let h = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {s}, }}\n");
            for v in [1, 2, 3, 4] {
                for data in [0, 4, 256] {
                    out.push(body(&h, v, data));
                }
            }
        }
    }
    // A header length past the end, and keys missing or repeated.
    let mut lying = body("{'descr': '<f4', 'shape': (1,), }\n", 1, 4);
    lying[8] = 0xff;
    lying[9] = 0xff;
    out.push(lying);
    let mut lying3 = body("{'descr': '<f4', 'shape': (1,), }\n", 3, 4);
    lying3[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    out.push(lying3);
    for h in [
        "{}",
        "{'shape': (1,)}",
        "{'descr': '<f4'}",
        "{'descr': '<f4', 'shape': (1,), 'shape': (2,)}",
        "{'descr':'<f4','fortran_order':True,'shape':(1,)}",
        "'descr'",
        "'shape'",
        "'shape':",
        "\u{e9}'descr': '<f4', 'shape': (1,)",
    ] {
        out.push(body(h, 1, 4));
    }
    out
}
