//! Inline images: picks a terminal graphics protocol (sixel, kitty, iTerm2 or half-blocks),
//! pre-scales the model's small images with nearest-neighbour to the pane's pixel size,
//! and caches encoded images per (image, area) so redraws are cheap.
//!
//! Detection sends XTVERSION and ratatui-image's own capability query (kitty graphics
//! query, DA1, cell size, DSR) before the event reader starts, and reads the answer with `poll` and a
//! deadline in this thread. (`Picker::from_query_stdio()` reads from a helper thread that
//! stays blocked on stdin when a terminal never answers — tmux without passthrough does
//! that — and then swallows the user's first keys.) The answer is parsed with
//! ratatui-image's parser (`capabilities_from_answer`) and the protocol picked by
//! `choose_protocol`; both are tested on canned answers.

use std::cell::RefCell;
use std::collections::HashMap;

use image::{imageops::FilterType, DynamicImage};
use ratatui::{
    layout::{Rect, Size},
    Frame,
};
use ratatui_image::{
    picker::{
        cap_parser::{Parser, QueryStdioOptions, Response},
        Capability, Picker, ProtocolType,
    },
    protocol::Protocol,
    FontSize, Image, Resize,
};

use crate::cli::GraphicsArg;

/// Encoded images kept at most; older ones are dropped wholesale.
const CACHE_LIMIT: usize = 96;

/// Environment hints for terminals that do not answer the capability query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvHints {
    /// `TERM_PROGRAM`/`LC_TERMINAL` name a terminal that speaks the iTerm2 protocol.
    pub iterm2: bool,
    /// WezTerm or Konsole, where ratatui-image avoids sixel and kitty.
    pub avoid_sixel_and_kitty: bool,
}

impl EnvHints {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let prog = var("TERM_PROGRAM");
        let iterm2 = [
            "iTerm",
            "WezTerm",
            "mintty",
            "vscode",
            "Tabby",
            "Hyper",
            "rio",
            "WarpTerminal",
        ]
        .iter()
        .any(|p| prog.contains(p))
            || var("LC_TERMINAL").contains("iTerm");
        Self {
            iterm2,
            avoid_sixel_and_kitty: !var("WEZTERM_EXECUTABLE").is_empty()
                || !var("KONSOLE_VERSION").is_empty(),
        }
    }
}

/// Parses a terminal's answer to ratatui-image's query (kitty graphics query, DA1,
/// cell size, DSR) into capabilities, with ratatui-image's own parser.
pub fn capabilities_from_answer(answer: &str) -> Vec<Capability> {
    let mut parser = Parser::new();
    let mut caps = Vec::new();
    for ch in answer.chars() {
        for r in parser.push(ch) {
            match r {
                Response::Kitty => caps.push(Capability::Kitty),
                Response::Sixel => caps.push(Capability::Sixel),
                Response::RectangularOps => caps.push(Capability::RectangularOps),
                Response::KittyCompression => caps.push(Capability::KittyCompression),
                Response::CellSize(c) => caps.push(Capability::CellSize(c)),
                Response::Background(r, g, b) => caps.push(Capability::Background(r, g, b)),
                Response::CursorPositionReport(..) | Response::Status => {}
            }
        }
    }
    caps
}

/// Cell size in pixels reported in the answer, if any.
pub fn font_size_from(caps: &[Capability]) -> Option<FontSize> {
    caps.iter().find_map(|c| match c {
        Capability::CellSize(Some((w, h))) if *w > 0 && *h > 0 => Some(FontSize::new(*w, *h)),
        _ => None,
    })
}

/// The terminal's XTVERSION answer (`ESC P >| name(version) ESC \\`), e.g. `kitty(0.26.5)`
/// or `XTerm(388)`, if it sent one.
pub fn terminal_version(answer: &str) -> Option<String> {
    let start = answer.find("\x1bP>|")? + 4;
    let len = answer[start..].find("\x1b\\")?;
    Some(answer[start..start + len].to_string())
}

/// Whether the terminal can show kitty images the way ratatui-image sends them: with
/// Unicode placeholders (`U=1`), which kitty has had since 0.28. An older kitty (Debian
/// 12 ships 0.26.5) rejects them and shows the placeholder glyphs instead of the image.
/// Other or unknown terminals that answer the kitty query are taken at their word.
pub fn kitty_placeholders_supported(version: Option<&str>) -> bool {
    let Some(v) = version.and_then(|v| v.strip_prefix("kitty(")) else {
        return true;
    };
    let mut parts = v.trim_end_matches(')').split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (0, 28),
        _ => true,
    }
}

/// The protocol to use: an explicit choice wins; then kitty (when it can show Unicode
/// placeholders), then sixel (as the terminal reported them), then iTerm2 from the
/// environment, else half-blocks. `version` is the XTVERSION answer.
pub fn choose_protocol(
    caps: &[Capability],
    version: Option<&str>,
    env: &EnvHints,
    forced: Option<GraphicsArg>,
) -> ProtocolType {
    if let Some(f) = forced {
        return match f {
            GraphicsArg::Sixel => ProtocolType::Sixel,
            GraphicsArg::Kitty => ProtocolType::Kitty,
            GraphicsArg::Iterm2 => ProtocolType::Iterm2,
            GraphicsArg::Halfblocks => ProtocolType::Halfblocks,
        };
    }
    let has = |c: &Capability| caps.contains(c);
    if !env.avoid_sixel_and_kitty
        && has(&Capability::Kitty)
        && kitty_placeholders_supported(version)
    {
        ProtocolType::Kitty
    } else if !env.avoid_sixel_and_kitty && has(&Capability::Sixel) {
        ProtocolType::Sixel
    } else if env.iterm2 {
        ProtocolType::Iterm2
    } else {
        ProtocolType::Halfblocks
    }
}

pub fn protocol_name(p: ProtocolType) -> &'static str {
    match p {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

/// Sends the capability query and collects the answer up to the DSR reply, waiting at
/// most `timeout`; `None` when the terminal did not finish answering.
#[cfg(unix)]
fn query_terminal(is_tmux: bool, timeout: std::time::Duration) -> Option<String> {
    use std::io::Write;
    use std::os::fd::AsFd;

    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    // XTVERSION first (answered by xterm, kitty, foot, WezTerm, tmux…; ignored by others).
    let query = format!(
        "\x1b[>0q{}",
        Parser::query(is_tmux, QueryStdioOptions::default())
    );
    let mut out = std::io::stdout();
    out.write_all(query.as_bytes()).ok()?;
    out.flush().ok()?;
    let stdin = std::io::stdin();
    let deadline = std::time::Instant::now() + timeout;
    let mut parser = Parser::new();
    let mut answer = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let ts = Timespec::try_from(left).ok()?;
        let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
        if poll(&mut fds, Some(&ts)).ok()? == 0 {
            return None;
        }
        let mut buf = [0u8; 256];
        let n = rustix::io::read(stdin.as_fd(), &mut buf).ok()?;
        if n == 0 {
            return None;
        }
        for &b in &buf[..n] {
            answer.push(char::from(b));
            if parser.push(char::from(b)).contains(&Response::Status) {
                return Some(answer);
            }
        }
    }
}

#[cfg(not(unix))]
fn query_terminal(_is_tmux: bool, _timeout: std::time::Duration) -> Option<String> {
    None
}

/// Cell size from the terminal's pixel size (TIOCGWINSZ), when it reports one.
#[cfg(unix)]
fn font_size_from_winsize() -> Option<FontSize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    if ws.ws_xpixel == 0 || ws.ws_ypixel == 0 || ws.ws_col == 0 || ws.ws_row == 0 {
        return None;
    }
    Some(FontSize::new(
        ws.ws_xpixel / ws.ws_col,
        ws.ws_ypixel / ws.ws_row,
    ))
}

#[cfg(not(unix))]
fn font_size_from_winsize() -> Option<FontSize> {
    None
}

/// Scales `img` to fit `px_w`×`px_h` with nearest-neighbour, by a whole factor when
/// enlarging so every model pixel becomes an equal square.
pub fn fit_nearest(img: &DynamicImage, px_w: u32, px_h: u32) -> DynamicImage {
    let (w, h) = (img.width().max(1), img.height().max(1));
    let scale = (f64::from(px_w) / f64::from(w)).min(f64::from(px_h) / f64::from(h));
    let scale = if scale >= 1.0 { scale.floor() } else { scale };
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    if (nw, nh) == (w, h) {
        img.clone()
    } else {
        img.resize_exact(nw, nh, FilterType::Nearest)
    }
}

/// A `size` rectangle centred in `area` (clipped to it).
fn centred(area: Rect, size: Size) -> Rect {
    Rect::new(
        area.x + area.width.saturating_sub(size.width) / 2,
        area.y + area.height.saturating_sub(size.height) / 2,
        size.width.min(area.width),
        size.height.min(area.height),
    )
}

/// A sixel drawn on the screen's last line scrolls the terminal (ratatui-image #57):
/// keep image areas above it.
pub fn avoid_last_line(area: Rect, screen: Rect) -> Rect {
    let mut a = area;
    if a.bottom() >= screen.bottom() {
        a.height = (screen.bottom().saturating_sub(1)).saturating_sub(a.y);
    }
    a
}

/// The chosen protocol and a cache of encoded images.
pub struct Graphics {
    picker: Picker,
    cache: RefCell<HashMap<(String, u16, u16), Protocol>>,
}

impl Graphics {
    /// Queries the terminal (in raw mode, before starting the event reader).
    pub fn detect(forced: Option<GraphicsArg>) -> Self {
        // Also enables tmux passthrough when inside tmux, before the query goes out.
        let probe = Picker::halfblocks();
        let answer = query_terminal(
            probe.tmux_detected(),
            std::time::Duration::from_millis(1500),
        );
        let caps = answer
            .as_deref()
            .map(capabilities_from_answer)
            .unwrap_or_default();
        let font = font_size_from(&caps).or_else(font_size_from_winsize);
        let version = answer.as_deref().and_then(terminal_version);
        let proto = choose_protocol(&caps, version.as_deref(), &EnvHints::from_env(), forced);
        let mut picker = match font {
            #[allow(deprecated)] // the supported constructors query the terminal again
            Some(f) => Picker::from_fontsize(f),
            None => probe,
        };
        // Pixel protocols need the cell size; without it, half-blocks.
        let proto = if font.is_none() && forced.is_none() {
            ProtocolType::Halfblocks
        } else {
            proto
        };
        picker.set_protocol_type(proto);
        tracing::info!(
            protocol = protocol_name(proto),
            ?caps,
            ?version,
            answered = answer.is_some(),
            "graphics"
        );
        Self::with_picker(picker)
    }

    pub fn with_picker(picker: Picker) -> Self {
        Self {
            picker,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// Half-blocks with a fixed 10×20 cell: deterministic, for tests.
    #[cfg(test)]
    pub fn halfblocks() -> Self {
        Self::with_picker(Picker::halfblocks())
    }

    /// A cell's size in pixels, as images are scaled to it.
    pub fn cell_px(&self) -> (u32, u32) {
        let f = self.picker.font_size();
        (u32::from(f.width.max(1)), u32::from(f.height.max(1)))
    }

    pub fn protocol(&self) -> ProtocolType {
        self.picker.protocol_type()
    }

    /// Encodes `img` for `area` (pre-scaled, nearest-neighbour), centred in the area.
    /// `key` must identify the image's content.
    pub fn encode(&self, key: &str, img: &DynamicImage, area: Rect) -> Option<(Protocol, Rect)> {
        if area.width == 0 || area.height == 0 {
            return None;
        }
        let font = self.picker.font_size();
        let (px_w, px_h) = (
            u32::from(area.width) * u32::from(font.width.max(1)),
            u32::from(area.height) * u32::from(font.height.max(1)),
        );
        let scaled = fit_nearest(img, px_w, px_h);
        let proto = self
            .picker
            .new_protocol(
                scaled,
                Size::new(area.width, area.height),
                Resize::Fit(Some(FilterType::Nearest)),
            )
            .map_err(|e| tracing::warn!(key, error = %e, "image encode failed"))
            .ok()?;
        let rect = centred(area, proto.size());
        Some((proto, rect))
    }

    /// Drops the encodings of `key` (at every size): for an image that will not be shown
    /// again, like a live preview replaced by a newer one.
    pub fn forget(&self, key: &str) {
        self.cache.borrow_mut().retain(|(k, _, _), _| k != key);
    }

    /// Draws `img` into `area` (memoised per key and size).
    pub fn render(&self, frame: &mut Frame, area: Rect, key: &str, img: &DynamicImage) {
        let area = if self.protocol() == ProtocolType::Sixel {
            avoid_last_line(area, frame.area())
        } else {
            area
        };
        let ck = (key.to_string(), area.width, area.height);
        let mut cache = self.cache.borrow_mut();
        if !cache.contains_key(&ck) {
            let Some((proto, _)) = self.encode(key, img, area) else {
                return;
            };
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(ck.clone(), proto);
        }
        if let Some(proto) = cache.get(&ck) {
            frame.render_widget(Image::new(proto), centred(area, proto.size()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xterm -ti vt340: DA1 with 4 (sixel), cell size 6×13, then the DSR answer.
    const XTERM_VT340: &str = "\x1b[?63;1;2;4;6;9;15;16;22;28c\x1b[6;13;6t\x1b[0n";
    /// kitty: answers the graphics query OK, DA1 without sixel.
    const KITTY: &str = "\x1b_Gi=31;OK\x1b\\\x1b[?62;c\x1b[6;20;10t\x1b[0n";
    /// A plain VT220-ish terminal: DA1 without 4, no cell size.
    const PLAIN: &str = "\x1b[?62;1;6;22c\x1b[0n";

    #[test]
    fn canned_answers_pick_the_right_protocol() {
        let env = EnvHints::default();
        let xterm = capabilities_from_answer(XTERM_VT340);
        assert!(xterm.contains(&Capability::Sixel), "{xterm:?}");
        assert_eq!(
            choose_protocol(&xterm, None, &env, None),
            ProtocolType::Sixel
        );
        let fs = font_size_from(&xterm).unwrap();
        assert_eq!((fs.width, fs.height), (6, 13));

        let kitty = capabilities_from_answer(KITTY);
        assert_eq!(
            choose_protocol(&kitty, None, &env, None),
            ProtocolType::Kitty
        );

        // tmux 3.3 (captured): VT100 with advanced video, no sixel, no cell size.
        let tmux = capabilities_from_answer("\x1b[?1;2c\x1b[0n");
        assert!(tmux.is_empty(), "{tmux:?}");
        assert_eq!(
            choose_protocol(&tmux, None, &env, None),
            ProtocolType::Halfblocks
        );

        let plain = capabilities_from_answer(PLAIN);
        assert_eq!(
            choose_protocol(&plain, None, &env, None),
            ProtocolType::Halfblocks
        );
        assert!(font_size_from(&plain).is_none());
        let iterm = EnvHints {
            iterm2: true,
            ..Default::default()
        };
        assert_eq!(
            choose_protocol(&plain, None, &iterm, None),
            ProtocolType::Iterm2
        );
    }

    /// kitty 0.26.5 (Debian 12), captured under Xvfb: XTVERSION, then the kitty query
    /// answer, DA1 without sixel, cell size, DSR.
    const KITTY_0_26: &str =
        "\x1bP>|kitty(0.26.5)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[?62;c\x1b[6;19;8t\x1b[0n";

    #[test]
    fn kitty_without_unicode_placeholders_falls_back() {
        let env = EnvHints::default();
        let caps = capabilities_from_answer(KITTY_0_26);
        assert!(caps.contains(&Capability::Kitty), "{caps:?}");
        assert!(font_size_from(&caps).is_some(), "{caps:?}");
        let v = terminal_version(KITTY_0_26);
        assert_eq!(v.as_deref(), Some("kitty(0.26.5)"));
        assert_eq!(
            choose_protocol(&caps, v.as_deref(), &env, None),
            ProtocolType::Halfblocks
        );
        // 0.28 and later, and terminals that do not say, get kitty images.
        for ok in [
            Some("kitty(0.28.0)"),
            Some("kitty(0.35.2)"),
            Some("XTerm(388)"),
            None,
        ] {
            assert_eq!(
                choose_protocol(&caps, ok, &env, None),
                ProtocolType::Kitty,
                "{ok:?}"
            );
        }
        // Asking for kitty explicitly still gets it.
        assert_eq!(
            choose_protocol(&caps, v.as_deref(), &env, Some(GraphicsArg::Kitty)),
            ProtocolType::Kitty
        );
        assert_eq!(terminal_version(XTERM_VT340), None);
    }

    #[test]
    fn override_and_blacklist_win() {
        let xterm = capabilities_from_answer(XTERM_VT340);
        assert_eq!(
            choose_protocol(
                &xterm,
                None,
                &EnvHints::default(),
                Some(GraphicsArg::Halfblocks)
            ),
            ProtocolType::Halfblocks
        );
        let wez = EnvHints {
            iterm2: true,
            avoid_sixel_and_kitty: true,
        };
        assert_eq!(
            choose_protocol(&xterm, None, &wez, None),
            ProtocolType::Iterm2
        );
    }

    #[test]
    fn nearest_upscale_keeps_pixels_square_and_exact() {
        let mut img = image::RgbImage::new(2, 2);
        img.put_pixel(1, 0, image::Rgb([255, 0, 0]));
        let out = fit_nearest(&DynamicImage::ImageRgb8(img), 100, 50).to_rgb8();
        assert_eq!(out.dimensions(), (50, 50));
        assert_eq!(out.get_pixel(25, 0).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(49, 24).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(24, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(25, 25).0, [0, 0, 0]);
    }

    #[test]
    fn images_stay_off_the_last_line() {
        let screen = Rect::new(0, 0, 80, 24);
        assert_eq!(
            avoid_last_line(Rect::new(0, 10, 20, 14), screen).bottom(),
            23
        );
        assert_eq!(avoid_last_line(Rect::new(0, 0, 20, 5), screen).height, 5);
    }
}
