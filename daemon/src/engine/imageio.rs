//! Images ⇄ tensors in model space.
//!
//! Conversion of an input image to the model's [C, H, W] (documented in
//! docs/user-guide.md):
//! 1. channels: 1-channel models take the luma (ITU-R 601) of the image,
//!    3-channel models its RGB; alpha is composited over black;
//! 2. size: an image no larger than H×W in both dimensions is centred and
//!    padded with its top-left pixel's value (its background: Fashion-MNIST's
//!    28×28 become 32×32 as in training); a larger one is resized (Lanczos3)
//!    so its shorter side fits, then centre-cropped;
//! 3. values: u8 v ↦ v/127.5 − 1 ∈ [−1, 1].
//!
//! Output: clamp to [−1, 1], (x+1)·127.5 rounded to u8.
use image::{imageops, DynamicImage, GrayImage, ImageBuffer, Rgb, RgbImage};
use std::io::Cursor;
use tch::{Kind, Tensor};

use super::EngineError;

/// Decodes PNG/JPEG bytes and converts them to [1, C, H, W].
pub fn decode_to_tensor(bytes: &[u8], shape: [i64; 3], what: &str) -> Result<Tensor, EngineError> {
    let img = image::load_from_memory(bytes).map_err(|e| {
        EngineError::InvalidInput(format!("{what}: not a decodable PNG or JPEG image ({e})"))
    })?;
    Ok(image_to_tensor(&img, shape))
}

pub fn load_file(path: &std::path::Path, shape: [i64; 3]) -> Result<Tensor, EngineError> {
    let bytes = std::fs::read(path)
        .map_err(|e| EngineError::InvalidInput(format!("{}: {e}", path.display())))?;
    decode_to_tensor(&bytes, shape, &path.display().to_string())
}

fn fit<P: image::Pixel + 'static>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    h: u32,
    w: u32,
) -> ImageBuffer<P, Vec<P::Subpixel>> {
    let (iw, ih) = img.dimensions();
    if iw == w && ih == h {
        return img.clone();
    }
    if iw <= w && ih <= h {
        let bg = *img.get_pixel(0, 0);
        let mut out = ImageBuffer::from_pixel(w, h, bg);
        imageops::replace(&mut out, img, ((w - iw) / 2) as i64, ((h - ih) / 2) as i64);
        return out;
    }
    let scale = (w as f64 / iw as f64).max(h as f64 / ih as f64);
    let (nw, nh) = (
        ((iw as f64 * scale).round() as u32).max(w),
        ((ih as f64 * scale).round() as u32).max(h),
    );
    let resized = imageops::resize(img, nw, nh, imageops::FilterType::Lanczos3);
    imageops::crop_imm(&resized, (nw - w) / 2, (nh - h) / 2, w, h).to_image()
}

/// Converts an image to [1, C, H, W] in [−1, 1] (see the module doc).
pub fn image_to_tensor(img: &DynamicImage, shape: [i64; 3]) -> Tensor {
    let [c, h, w] = shape;
    let (hu, wu) = (h as u32, w as u32);
    let flat = flatten_alpha(img);
    let chw = if c == 3 {
        let rgb = fit(&flat.to_rgb8(), hu, wu).into_raw();
        Tensor::from_slice(&rgb)
            .reshape([h, w, 3])
            .permute([2, 0, 1]) // HWC → CHW
    } else {
        // One channel: luma; other channel counts repeat it.
        let g = fit(&flat.to_luma8(), hu, wu).into_raw();
        Tensor::from_slice(&g).reshape([1, h, w]).repeat([c, 1, 1])
    };
    chw.to_kind(Kind::Float).reshape([1, c, h, w]) / 127.5 - 1.0
}

fn flatten_alpha(img: &DynamicImage) -> DynamicImage {
    if !img.color().has_alpha() {
        return img.clone();
    }
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        out.put_pixel(
            x,
            y,
            Rgb([0, 1, 2].map(|k| (p[k] as f32 * a).round() as u8)),
        );
    }
    DynamicImage::ImageRgb8(out)
}

/// One [C, H, W] (or [1, C, H, W]) tensor to an image (grey or RGB).
pub fn tensor_to_image(t: &Tensor) -> DynamicImage {
    let t = if t.dim() == 4 {
        t.get(0)
    } else {
        t.shallow_clone()
    };
    let t = t.to_device(tch::Device::Cpu);
    let (c, h, w) = t.size3().expect("[C, H, W]");
    let u = ((t.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .contiguous();
    let v = Vec::<u8>::try_from(u.reshape([-1])).expect("u8 data");
    let n = (h * w) as usize;
    if c == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w as u32, h as u32, v).expect("size"))
    } else {
        let mut rgb = RgbImage::new(w as u32, h as u32);
        for (i, p) in rgb.pixels_mut().enumerate() {
            *p = Rgb([v[i], v[n + i], v[(2 % c as usize) * n + i]]);
        }
        DynamicImage::ImageRgb8(rgb)
    }
}

pub fn png_bytes(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding to memory");
    out.into_inner()
}

/// PNG of one sample, upscaled `scale`× with nearest neighbour.
pub fn tensor_png(t: &Tensor, scale: u32) -> Vec<u8> {
    let img = tensor_to_image(t);
    let img = if scale > 1 {
        img.resize(
            img.width() * scale,
            img.height() * scale,
            imageops::FilterType::Nearest,
        )
    } else {
        img
    };
    png_bytes(&img)
}

/// A grid of a batch [N, C, H, W]: `cols` columns (0: ⌈√N⌉), 2 px gaps.
pub fn grid(batch: &Tensor, cols: usize, scale: u32) -> DynamicImage {
    let n = batch.size()[0] as usize;
    let cols = if cols == 0 {
        (n as f64).sqrt().ceil().max(1.0) as usize
    } else {
        cols
    };
    let rows = n.div_ceil(cols);
    let first = tensor_to_image(&batch.get(0)).to_rgb8();
    let (w, h) = (first.width() * scale, first.height() * scale);
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (w + gap) + gap,
        rows as u32 * (h + gap) + gap,
        Rgb([40, 40, 40]),
    );
    for i in 0..n {
        let img = tensor_to_image(&batch.get(i as i64)).to_rgb8();
        let img = imageops::resize(&img, w, h, imageops::FilterType::Nearest);
        let (x, y) = (
            (i % cols) as u32 * (w + gap) + gap,
            (i / cols) as u32 * (h + gap) + gap,
        );
        imageops::replace(&mut out, &img, x as i64, y as i64);
    }
    DynamicImage::ImageRgb8(out)
}

pub fn save_png(img: &DynamicImage, path: &std::path::Path) -> Result<(), EngineError> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| EngineError::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn round_trip_exact_for_u8_images() {
        let mut g = GrayImage::new(32, 32);
        for (x, y, p) in g.enumerate_pixels_mut() {
            *p = Luma([((x * 8 + y) % 256) as u8]);
        }
        let t = image_to_tensor(&DynamicImage::ImageLuma8(g.clone()), [1, 32, 32]);
        let back = tensor_to_image(&t).to_luma8();
        assert_eq!(back, g);
    }

    #[test]
    fn small_images_are_padded_with_background() {
        let mut g = GrayImage::from_pixel(28, 28, Luma([0]));
        g.put_pixel(14, 14, Luma([255]));
        let t = image_to_tensor(&DynamicImage::ImageLuma8(g), [1, 32, 32]);
        assert_eq!(t.size(), vec![1, 1, 32, 32]);
        assert_eq!(t.double_value(&[0, 0, 0, 0]), -1.0);
        assert_eq!(t.double_value(&[0, 0, 16, 16]), 1.0);
    }

    #[test]
    fn rgb_to_three_channels_and_undecodable_is_an_error() {
        let img = RgbImage::from_pixel(64, 48, Rgb([255, 0, 0]));
        let t = image_to_tensor(&DynamicImage::ImageRgb8(img), [3, 32, 32]);
        assert_eq!(t.size(), vec![1, 3, 32, 32]);
        assert!((t.double_value(&[0, 0, 5, 5]) - 1.0).abs() < 1e-6);
        assert!((t.double_value(&[0, 1, 5, 5]) + 1.0).abs() < 1e-6);
        let e = decode_to_tensor(b"garbage", [1, 32, 32], "image")
            .unwrap_err()
            .to_string();
        assert!(e.contains("image") && e.contains("decodable"), "{e}");
    }
}
