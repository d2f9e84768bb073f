//! Human-readable text for proto values, shared by the TUI and the scripting commands.

use ddim_proto::v1::{self as pb, origin::Kind as OriginKind};

/// The origin kinds a latent can have (proto `Origin.kind`), as `ListLatents.origin`
/// names them.
pub const ORIGINS: [&str; 5] = ["encoded", "sampled", "interpolated", "imported", "edited"];

/// An origin filter as typed (`enc`, `origin:sam…`) into the daemon's name: the one kind
/// it is a prefix of. Empty, unknown and ambiguous (`i`) text is passed on as typed, and
/// the daemon says what is wrong with it (the TUI's `/origin:` and `ddim ls --origin`
/// both go through here).
pub fn resolve_origin(text: &str) -> String {
    let t = text.trim().to_ascii_lowercase();
    let mut hits = ORIGINS
        .iter()
        .filter(|k| !t.is_empty() && k.starts_with(&t));
    match (hits.next(), hits.next()) {
        (Some(k), None) => k.to_string(),
        _ => text.trim().to_string(),
    }
}

/// "encoded", "sampled", "interpolated", "imported" or "?".
pub fn origin_kind(l: &pb::Latent) -> &'static str {
    match l.origin.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(OriginKind::Encoded(_)) => "encoded",
        Some(OriginKind::Sampled(_)) => "sampled",
        Some(OriginKind::Interpolated(_)) => "interpolated",
        Some(OriginKind::Imported(_)) => "imported",
        Some(OriginKind::Edited(_)) => "edited",
        None => "?",
    }
}

/// Origin with its details, e.g. `sampled seed 7 #2`.
pub fn origin_detail(l: &pb::Latent) -> String {
    match l.origin.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(OriginKind::Encoded(e)) if !e.filename.is_empty() => format!("encoded {}", e.filename),
        Some(OriginKind::Encoded(_)) => "encoded".into(),
        Some(OriginKind::Sampled(s)) => format!("sampled seed {} #{}", s.seed, s.index),
        Some(OriginKind::Interpolated(i)) => format!(
            "{} {}…/{}… α={:.2}",
            method_name(i.method),
            short_id(&i.a),
            short_id(&i.b),
            i.alpha
        ),
        Some(OriginKind::Imported(i)) if !i.filename.is_empty() => {
            format!("imported {}", i.filename)
        }
        Some(OriginKind::Imported(_)) => "imported".into(),
        Some(OriginKind::Edited(e)) if !e.summary.is_empty() => e.summary.clone(),
        Some(OriginKind::Edited(e)) => format!("{} of {}", e.op, e.parent_ids.join(", ")),
        None => "?".into(),
    }
}

pub fn method_name(m: i32) -> &'static str {
    match pb::InterpolationMethod::try_from(m) {
        Ok(pb::InterpolationMethod::Lerp) => "lerp",
        _ => "slerp",
    }
}

/// `uniform`, `quad`, … (unspecified is the daemon's default, uniform).
pub fn spacing_name(s: i32) -> String {
    match pb::Spacing::try_from(s) {
        Ok(pb::Spacing::Unspecified) | Err(_) => "uniform".into(),
        Ok(x) => x
            .as_str_name()
            .trim_start_matches("SPACING_")
            .to_lowercase(),
    }
}

/// How a latent was encoded: `S=50 uniform ddim`, without the solver when the daemon
/// did not record it (latents encoded before it did), `-` when not encoded.
pub fn encoding(l: &pb::Latent) -> String {
    if l.encode_steps == 0 {
        return "-".into();
    }
    let mut s = format!("S={} {}", l.encode_steps, spacing_name(l.encode_spacing));
    if let Some(solver) = solver_name(l.encode_solver) {
        s.push(' ');
        s.push_str(solver);
    }
    s
}

/// A recorded solver's name (`ddim`, `dpmpp-2m`); None when unspecified.
pub fn solver_name(s: i32) -> Option<&'static str> {
    match pb::Solver::try_from(s) {
        Ok(pb::Solver::Ddim) => Some("ddim"),
        Ok(pb::Solver::Dpmpp2m) => Some("dpmpp-2m"),
        Ok(pb::Solver::Unspecified) | Err(_) => None,
    }
}

/// A latent's shape as `1×32×32`.
pub fn shape(dims: &[u32]) -> String {
    dims.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

/// `text` in at most `width` terminal cells: as is when it fits, else cut and ended with
/// `…` (so a long tag list never runs into the next column).
pub fn fit(text: &str, width: usize) -> String {
    let w = |s: &str| ratatui::text::Span::raw(s).width();
    if w(text) <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    for c in text.chars() {
        out.push(c);
        if w(&out) + 1 > width {
            out.pop();
            break;
        }
    }
    out.push('…');
    out
}

/// `text` fitted to `width` cells and padded to exactly that width (a table column).
pub fn column(text: &str, width: usize) -> String {
    let s = fit(text, width);
    let pad = width.saturating_sub(ratatui::text::Span::raw(s.as_str()).width());
    format!("{s}{}", " ".repeat(pad))
}

/// First 8 characters of an id or fingerprint.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Done) => "done",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

pub fn is_terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// `2026-11-25 14:03` in UTC, from Unix milliseconds.
pub fn timestamp(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `1h02m`, `3m04s`, `12s`, `0.4s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// How long a job waited in the queue (until start, or until `now_ms` while queued).
pub fn wait_secs(job: &pb::Job, now_ms: i64) -> f64 {
    let end = if job.started_unix_ms > 0 {
        job.started_unix_ms
    } else if job.finished_unix_ms > 0 {
        job.finished_unix_ms
    } else {
        now_ms
    };
    ((end - job.created_unix_ms).max(0)) as f64 / 1000.0
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// η values as `0,0.5,1`.
pub fn eta_list(etas: &[f32]) -> String {
    etas.iter()
        .map(f32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `0, 0.5,1` (at most 8 distinct finite values ≥ 0; an empty or repeated item
/// is an error).
pub fn parse_etas(text: &str) -> Result<Vec<f32>, String> {
    parse_etas_up_to(text, 8)
}

/// [`parse_etas`] with another limit (an eval job takes 16 η values, a decode 8).
pub fn parse_etas_up_to(text: &str, max: usize) -> Result<Vec<f32>, String> {
    let out = list_items(text, "0,0.5,1", |part| {
        let e: f32 = part
            .parse()
            .map_err(|_| format!("η `{part}` is not a number"))?;
        if !e.is_finite() || e < 0.0 {
            return Err(format!("η must be a finite number ≥ 0, got {part}"));
        }
        Ok(e)
    })?;
    match out.len() {
        n if n > max => Err(format!("at most {max} η values, got {n}")),
        _ => Ok(out),
    }
}

/// The items of a comma-separated list, each parsed by `item`: an empty item (`10,,20`,
/// a trailing comma) or one given twice (`0,0`) is an error, not quietly dropped.
pub fn list_items<T: PartialEq + std::fmt::Display>(
    s: &str,
    example: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if s.trim().is_empty() {
        return Err(format!("expected a comma-separated list such as {example}"));
    }
    let mut out: Vec<T> = Vec::new();
    for (i, part) in s.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(format!(
                "item {} of `{s}` is empty (a list is written like {example})",
                i + 1
            ));
        }
        let v = item(part)?;
        if out.contains(&v) {
            return Err(format!("{v} is given twice in `{s}`"));
        }
        out.push(v);
    }
    Ok(out)
}

/// Steps list as `10,20,50`.
pub fn steps_list(steps: &[u32]) -> String {
    steps
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_prefixes_resolve_to_one_kind() {
        assert_eq!(resolve_origin("enc"), "encoded");
        assert_eq!(resolve_origin("Sampled"), "sampled");
        assert_eq!(resolve_origin("im"), "imported");
        assert_eq!(resolve_origin("in"), "interpolated");
        // Ambiguous, unknown and empty text goes to the daemon as typed.
        assert_eq!(resolve_origin("i"), "i");
        assert_eq!(resolve_origin("x"), "x");
        assert_eq!(resolve_origin(""), "");
        // Every kind a latent can have is listed.
        use ddim_proto::v1::origin::Kind as K;
        for k in [
            K::Encoded(Default::default()),
            K::Sampled(Default::default()),
            K::Interpolated(Default::default()),
            K::Imported(Default::default()),
            K::Edited(Default::default()),
        ] {
            let l = pb::Latent {
                origin: Some(pb::Origin { kind: Some(k) }),
                ..Default::default()
            };
            assert!(ORIGINS.contains(&origin_kind(&l)));
        }
    }

    #[test]
    fn long_cells_end_in_an_ellipsis_within_their_width() {
        assert_eq!(fit("fashion-mnist,seed", 16), "fashion-mnist,s…");
        assert_eq!(fit("shirts", 16), "shirts");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(column("fashion-mnist,seed", 16), "fashion-mnist,s…");
        assert_eq!(column("a", 4), "a   ");
        assert_eq!(fit("日本語の名前", 5), "日本…");
    }

    #[test]
    fn lists_refuse_empty_and_repeated_items() {
        assert_eq!(parse_etas("0, 0.5,1").unwrap(), vec![0.0, 0.5, 1.0]);
        assert!(parse_etas("0,0").unwrap_err().contains("twice"));
        assert!(parse_etas("0,,1").unwrap_err().contains("empty"));
        assert!(parse_etas("0,").unwrap_err().contains("empty"));
        assert!(parse_etas("-1").unwrap_err().contains("≥ 0"));
        assert!(parse_etas("").is_err());
        let nine = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8";
        assert!(parse_etas(nine).unwrap_err().contains("at most 8"));
        assert_eq!(parse_etas_up_to(nine, 16).unwrap().len(), 9);
    }

    #[test]
    fn timestamps_and_durations() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_764_079_380_000), "2025-11-25 14:03");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(duration(3.25), "3.2s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3725.0), "1h02m");
    }

    #[test]
    fn wait_time_uses_start_or_now() {
        let mut j = pb::Job {
            created_unix_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(wait_secs(&j, 4_000), 3.0);
        j.started_unix_ms = 2_500;
        assert_eq!(wait_secs(&j, 9_000), 1.5);
    }
}
