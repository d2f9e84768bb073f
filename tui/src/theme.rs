//! The look shared by every screen: colours and styles, and small layout and drawing
//! helpers (centred boxes, progress bars, the prompt box). Screens and `App` both use
//! this module; it uses neither.

use ratatui::{
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
    Frame,
};

use crate::prompt::Prompt;

pub const ACCENT: Color = Color::Cyan;
pub const ERROR: Color = Color::LightRed;
pub const OK: Color = Color::LightGreen;
/// Something the user should look at, not an error (a latent of another model).
pub const WARN: Color = Color::Yellow;
pub const DIM: Style = Style::new().fg(Color::DarkGray);
pub const SELECTED: Style = Style::new().bg(Color::Blue).fg(Color::White);

/// The prompt box, centred in `body`.
pub fn render_prompt(frame: &mut Frame, body: Rect, p: &Prompt) {
    let extra = if p.candidates.is_empty() { 0 } else { 1 };
    let r = centered(body, 70, 3 + extra);
    frame.render_widget(Clear, r);
    let mut lines = vec![Line::from(vec![
        Span::raw(p.input.clone()),
        Span::styled("▏", Style::new().fg(ACCENT)),
    ])];
    if extra > 0 {
        lines.push(Line::styled(p.candidates.join("  "), DIM));
    }
    let hint = if p.paths {
        " Enter ok · Tab complete · Esc cancel "
    } else {
        " Enter ok · Esc cancel "
    };
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(format!(" {} ", p.title))
                .title_bottom(Line::styled(hint, DIM))
                .border_style(Style::new().fg(ACCENT)),
        ),
        r,
    );
}

/// A `w`×`h` rectangle centred in `area` (clamped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// A text progress bar `█████░░░░░` of `width` cells.
pub fn bar(done: u32, total: u32, width: usize) -> String {
    let frac = if total == 0 {
        0.0
    } else {
        f64::from(done.min(total)) / f64::from(total)
    };
    let full = (frac * width as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10, 4), "░░░░");
        assert_eq!(bar(5, 10, 4), "██░░");
        assert_eq!(bar(12, 10, 4), "████");
        assert_eq!(bar(1, 0, 2), "░░");
    }
}
