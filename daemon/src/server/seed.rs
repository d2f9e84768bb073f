//! `--seed-images N`: on the first start (empty store), encode N
//! Fashion-MNIST test images into the library so a newcomer sees something.
use ddim_proto::v1 as pb;
use image::{DynamicImage, GrayImage};
use std::path::Path;

use super::conversions::MAX_ITEMS;
use super::error::{Result, ServerError};
use super::service::DdimService;
use crate::engine::imageio;

/// The first `n` images of an idx3-ubyte.gz file as PNG bytes (28×28; the
/// encoder pads them to the model size with their background, as in training).
pub fn idx_pngs(path: &Path, n: usize) -> Result<Vec<Vec<u8>>> {
    let (count, rows, cols, px) = crate::train::data::read_idx_images(path)
        .map_err(|e| ServerError::Config(format!("--seed-images: {e:#}")))?;
    let per = rows * cols;
    (0..n.min(count))
        .map(|i| {
            let img = GrayImage::from_raw(
                cols as u32,
                rows as u32,
                px[i * per..(i + 1) * per].to_vec(),
            )
            .ok_or_else(|| ServerError::Config(format!("{}: bad image {i}", path.display())))?;
            Ok(imageio::png_bytes(&DynamicImage::ImageLuma8(img)))
        })
        .collect()
}

/// Submits batch-priority encode jobs of the seed images (at most
/// `MAX_ITEMS` images per job).
pub async fn submit(svc: &DdimService, path: &Path, n: usize, steps: u32) -> Result<Vec<pb::Job>> {
    let path = path.to_path_buf();
    let pngs = tokio::task::spawn_blocking(move || idx_pngs(&path, n)).await??;
    let t = svc.shared.meta.get().map(|m| m.t as u32).unwrap_or(steps);
    let mut jobs = vec![];
    for (k, chunk) in pngs.chunks(MAX_ITEMS).enumerate() {
        let images = chunk
            .iter()
            .enumerate()
            .map(|(i, data)| pb::EncodeInput {
                data: data.clone(),
                name: format!("fashion-mnist-test-{}", k * MAX_ITEMS + i),
                tags: vec!["fashion-mnist".into(), "seed".into()],
            })
            .collect();
        let spec = pb::JobSpec {
            kind: Some(pb::job_spec::Kind::Encode(pb::EncodeJob {
                images,
                steps: steps.clamp(1, t),
                spacing: pb::Spacing::Uniform as i32,
                preview_steps: 0,
            })),
        };
        jobs.push(
            svc.submit(pb::SubmitJobRequest {
                spec: Some(spec),
                priority: pb::Priority::Batch as i32,
                idempotency_key: format!("ddimd-seed-images-{k}"),
            })
            .await?,
        );
    }
    Ok(jobs)
}
