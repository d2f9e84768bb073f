//! `--seed-images N`: on the first start (empty store), encode N
//! Fashion-MNIST test images into the library so a newcomer sees something.
use ddim_proto::v1 as pb;
use image::{DynamicImage, GrayImage};
use std::path::Path;

use super::conversions::MAX_ITEMS;
use super::error::{Result, ServerError};
use super::service::DdimService;
use crate::engine::imageio;

/// The class tag of each of the first `n` images of an idx3-ubyte.gz file (`sneaker`,
/// `ankle-boot`, …, from the idx1 label file beside it), or None for each with a
/// warning when there is no readable label file: the images are still worth seeding.
pub fn idx_classes(path: &Path, n: usize) -> Vec<Option<&'static str>> {
    match crate::train::data::fashion_mnist_classes_for(path, n) {
        Ok(v) => v.into_iter().map(Some).collect(),
        Err(e) => {
            tracing::warn!("--seed-images: no class tags: {e:#}");
            vec![None; n]
        }
    }
}

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
    let (pngs, classes) = tokio::task::spawn_blocking(move || {
        let pngs = idx_pngs(&path, n)?;
        let classes = idx_classes(&path, pngs.len());
        Ok::<_, ServerError>((pngs, classes))
    })
    .await??;
    let t = svc.shared.meta.get().map(|m| m.t as u32).unwrap_or(steps);
    let mut jobs = vec![];
    for (k, chunk) in pngs.chunks(MAX_ITEMS).enumerate() {
        let images = chunk
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let index = k * MAX_ITEMS + i;
                let mut tags = vec!["fashion-mnist".to_string(), "seed".to_string()];
                tags.extend(classes[index].map(String::from));
                pb::EncodeInput {
                    data: data.clone(),
                    name: format!("fashion-mnist-test-{index}"),
                    tags,
                }
            })
            .collect();
        let spec = pb::JobSpec {
            kind: Some(pb::job_spec::Kind::Encode(pb::EncodeJob {
                images,
                steps: steps.clamp(1, t),
                spacing: pb::Spacing::Uniform as i32,
                preview_steps: 0,
                solver: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_images_carry_their_class_or_none_without_labels() {
        let file = Path::new("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
        if !file.exists() {
            eprintln!("{} is missing: skipping", file.display());
            return;
        }
        assert_eq!(
            idx_classes(file, 3),
            [Some("ankle-boot"), Some("pullover"), Some("trouser")]
        );
        // A copy of the images without a label file beside it: seeded, untagged.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("t10k-images-idx3-ubyte.gz");
        std::fs::copy(file, &copy).unwrap();
        assert_eq!(idx_classes(&copy, 2), [None, None]);
        assert_eq!(idx_pngs(&copy, 2).unwrap().len(), 2);
    }
}
