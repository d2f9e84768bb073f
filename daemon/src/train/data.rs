//! Training data: Fashion-MNIST from Debian's `dataset-fashion-mnist`
//! (idx .gz files under /usr/share/datasets/fashion-mnist), or a folder of
//! PNG/JPEG images. Both come out as [N, C, H, W] in [−1, 1].
use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use image::{DynamicImage, GrayImage};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

use crate::engine::imageio;

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

fn dataset_dir() -> PathBuf {
    std::env::var_os("DDIM_FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
}

/// Reads an idx3-ubyte.gz file: (count, rows, cols, pixels).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let f = std::fs::File::open(path).with_context(|| {
        format!("{}: cannot open (install the Debian package dataset-fashion-mnist: apt-get install dataset-fashion-mnist)", path.display())
    })?;
    let mut buf = vec![];
    GzDecoder::new(f)
        .read_to_end(&mut buf)
        .with_context(|| format!("{}: not a gzip file", path.display()))?;
    if buf.len() < 16 || buf[..4] != [0, 0, 8, 3] {
        bail!("{}: not an idx3-ubyte image file", path.display());
    }
    let be = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().expect("4 bytes")) as usize;
    let (n, r, c) = (be(4), be(8), be(12));
    if buf.len() != 16 + n * r * c {
        bail!(
            "{}: truncated ({} bytes for {n}×{r}×{c})",
            path.display(),
            buf.len()
        );
    }
    Ok((n, r, c, buf[16..].to_vec()))
}

/// Reads an idx1-ubyte.gz label file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut buf = vec![];
    GzDecoder::new(f).read_to_end(&mut buf)?;
    if buf.len() < 8 || buf[..4] != [0, 0, 8, 1] {
        bail!("{}: not an idx1-ubyte label file", path.display());
    }
    Ok(buf[8..].to_vec())
}

/// Fashion-MNIST's class names by label 0..=9, as library tags (lower case, one word).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// The label file beside an idx3 image file: `…images-idx3-ubyte…` →
/// `…labels-idx1-ubyte…` (`t10k-images-idx3-ubyte.gz` → `t10k-labels-idx1-ubyte.gz`);
/// None when the name does not follow that pattern.
pub fn labels_path_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    name.contains("images-idx3-ubyte")
        .then(|| images.with_file_name(name.replace("images-idx3-ubyte", "labels-idx1-ubyte")))
}

/// The Fashion-MNIST class names of the first `n` images of an idx3 image file, read
/// from the idx1 label file beside it ([`labels_path_for`]).
pub fn fashion_mnist_classes_for(images: &Path, n: usize) -> Result<Vec<&'static str>> {
    let path = labels_path_for(images)
        .with_context(|| format!("{}: no label file name for it", images.display()))?;
    let labels = read_idx_labels(&path)?;
    if labels.len() < n {
        bail!("{}: {} labels for {n} images", path.display(), labels.len());
    }
    labels[..n]
        .iter()
        .map(|&l| {
            FASHION_MNIST_CLASSES
                .get(l as usize)
                .copied()
                .with_context(|| format!("{}: label {l} is not a class 0..=9", path.display()))
        })
        .collect()
}

/// The idx3 image file of a split (under `$DDIM_FASHION_MNIST_DIR` or the Debian folder).
pub fn fashion_mnist_path(split: Split) -> PathBuf {
    dataset_dir().join(match split {
        Split::Train => "train-images-idx3-ubyte.gz",
        Split::Test => "t10k-images-idx3-ubyte.gz",
    })
}

/// The 28×28 images of a split as grey images.
pub fn fashion_mnist_images(split: Split) -> Result<Vec<GrayImage>> {
    let name = match split {
        Split::Train => "train-images-idx3-ubyte.gz",
        Split::Test => "t10k-images-idx3-ubyte.gz",
    };
    let (n, r, c, px) = read_idx_images(&dataset_dir().join(name))?;
    Ok((0..n)
        .map(|i| {
            GrayImage::from_raw(c as u32, r as u32, px[i * r * c..(i + 1) * r * c].to_vec())
                .expect("size")
        })
        .collect())
}

/// Fashion-MNIST as [N, C, H, W] in [−1, 1]. For the usual 1×32×32 the
/// 28×28 images are padded with the background value (0 → −1), as in training.
pub fn fashion_mnist(split: Split, shape: [i64; 3]) -> Result<Tensor> {
    let name = match split {
        Split::Train => "train-images-idx3-ubyte.gz",
        Split::Test => "t10k-images-idx3-ubyte.gz",
    };
    let (n, r, c, px) = read_idx_images(&dataset_dir().join(name))?;
    let (r, c) = (r as i64, c as i64);
    let raw = Tensor::from_slice(&px)
        .reshape([n as i64, 1, r, c])
        .to_kind(Kind::Float)
        / 127.5
        - 1.0;
    let [ch, h, w] = shape;
    if h >= r && w >= c && (h - r) % 2 == 0 && (w - c) % 2 == 0 {
        let (ph, pw) = ((h - r) / 2, (w - c) / 2);
        let padded = raw.pad([pw, pw, ph, ph], "constant", Some(-1.0));
        return Ok(if ch == 1 {
            padded
        } else {
            padded.repeat([1, ch, 1, 1])
        });
    }
    let imgs = fashion_mnist_images(split)?;
    let ts: Vec<Tensor> = imgs
        .into_iter()
        .map(|g| imageio::image_to_tensor(&DynamicImage::ImageLuma8(g), shape))
        .collect();
    Ok(Tensor::cat(&ts, 0))
}

/// Every PNG/JPEG under `dir` (recursively), converted to `shape`.
/// Unreadable files are counted and skipped with a warning.
pub fn image_folder(dir: &Path, shape: [i64; 3]) -> Result<Tensor> {
    if !dir.is_dir() {
        bail!(
            "--data {}: not a folder (use --data fashion-mnist or a folder of PNG/JPEG images)",
            dir.display()
        );
    }
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut ts = vec![];
    let mut bad = 0usize;
    for p in &files {
        match imageio::load_file(p, shape) {
            Ok(t) => ts.push(t),
            Err(e) => {
                bad += 1;
                tracing::warn!("skipping {}: {e}", p.display());
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "warning: skipped {bad} unreadable image(s) of {} in {}",
            files.len(),
            dir.display()
        );
    }
    if ts.is_empty() {
        bail!("--data {}: no readable PNG/JPEG images", dir.display());
    }
    Ok(Tensor::cat(&ts, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_path_and_classes_of_the_test_split() {
        let images = Path::new(FASHION_MNIST_DIR).join("t10k-images-idx3-ubyte.gz");
        assert_eq!(
            labels_path_for(&images),
            Some(Path::new(FASHION_MNIST_DIR).join("t10k-labels-idx1-ubyte.gz"))
        );
        assert_eq!(labels_path_for(Path::new("/x/digits.gz")), None);
        if !images.exists() {
            eprintln!("{} is missing: skipping the label read", images.display());
            return;
        }
        // The first test labels are 9, 2, 1, 1, 6 (Fashion-MNIST's t10k file).
        assert_eq!(
            fashion_mnist_classes_for(&images, 5).unwrap(),
            ["ankle-boot", "pullover", "trouser", "trouser", "shirt"]
        );
        let e = fashion_mnist_classes_for(&images, 10_001).unwrap_err();
        assert!(
            e.to_string().contains("10000 labels for 10001 images"),
            "{e}"
        );
    }
}
