//! The sixel the preview writes decodes back to the image's pixels.

use image::{DynamicImage, GenericImageView};
use ratatui::layout::Rect;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;

use super::fixtures::image32;
use crate::graphics::Graphics;

fn sixel_graphics() -> Graphics {
    let mut p = Picker::halfblocks(); // 10×20 cells, no terminal query
    p.set_protocol_type(ProtocolType::Sixel);
    Graphics::with_picker(p)
}

#[test]
fn sixel_stream_decodes_to_the_upscaled_source() {
    let src = DynamicImage::ImageRgb8(image32());
    let g = sixel_graphics();
    // 16×8 cells of 10×20 px = 160×160 px: the 32×32 image scales ×5 exactly.
    let (proto, rect) = g.encode("t", &src, Rect::new(0, 0, 16, 8)).unwrap();
    assert_eq!((rect.width, rect.height), (16, 8));
    let Protocol::Sixel(s) = proto else {
        panic!("not sixel")
    };
    let start = s.data.find("\x1bP").expect("a DCS sixel sequence");
    let decoded = icy_sixel::SixelImage::decode(&s.data.as_bytes()[start..]).unwrap();
    // Sixel paints bands of 6 rows: the decoder may report up to 5 rows more.
    assert_eq!(decoded.width, 160);
    assert!(
        (160..166).contains(&decoded.height),
        "height {}",
        decoded.height
    );

    // icy_sixel quantises to ≤256 colours (Wu) with Floyd–Steinberg dithering, and sixel
    // colours are percentages (steps of 2.55): allow that, and no more.
    let (mut sum, mut worst) = (0u64, 0u8);
    for y in 0..160u32 {
        for x in 0..160u32 {
            let want = src.get_pixel(x / 5, y / 5).0[0];
            let i = ((y * 160 + x) * 4) as usize;
            let got = &decoded.pixels[i..i + 3];
            for c in got {
                let d = c.abs_diff(want);
                sum += u64::from(d);
                worst = worst.max(d);
            }
            assert_eq!(decoded.pixels[i + 3], 255, "opaque at {x},{y}");
        }
    }
    let mean = sum as f64 / (160.0 * 160.0 * 3.0);
    // Measured here: mean 2.8, worst 11 (of 255).
    assert!(mean <= 4.0, "mean abs error {mean}");
    assert!(worst <= 16, "worst error {worst}");
    // Dithering noise averages out over each 5×5 block (one model pixel).
    for by in 0..32u32 {
        for bx in 0..32u32 {
            let mut acc = 0u32;
            for y in by * 5..by * 5 + 5 {
                for x in bx * 5..bx * 5 + 5 {
                    acc += u32::from(decoded.pixels[((y * 160 + x) * 4) as usize]);
                }
            }
            let got = f64::from(acc) / 25.0;
            let want = f64::from(src.get_pixel(bx, by).0[0]);
            assert!(
                (got - want).abs() <= 4.0,
                "block {bx},{by}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn sixel_is_never_drawn_on_the_last_line() {
    use ratatui::{backend::TestBackend, Terminal};
    let src = DynamicImage::ImageRgb8(image32());
    let g = sixel_graphics();
    let mut t = Terminal::new(TestBackend::new(20, 10)).unwrap();
    t.draw(|f| g.render(f, Rect::new(0, 0, 20, 10), "k", &src))
        .unwrap();
    let buf = t.backend().buffer();
    let last_row_has_sixel = (0..20).any(|x| buf[(x, 9)].symbol().contains("\x1bP"));
    assert!(!last_row_has_sixel);
    let any_sixel = (0..10).any(|y| (0..20).any(|x| buf[(x, y)].symbol().contains("\x1bP")));
    assert!(any_sixel, "the image was drawn");
}
