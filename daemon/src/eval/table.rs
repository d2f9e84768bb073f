//! An evaluation's S × η table, as `ddimd eval` prints it: plain text for the
//! terminal ([`text`]) and Markdown for reports ([`markdown`], `--markdown`: the
//! tables of docs/reproduction.md, made by the command rather than copied by hand).
//! Rows are the η values in the order given, then σ̂; columns are the step counts.

use super::{vs_eta0, CellResult, Interval, Paired};

/// A row of the table: one η, or σ̂.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Eta(f64),
    SigmaHat,
}

impl Row {
    fn of(r: &CellResult) -> Self {
        if r.spec.sigma_hat {
            Row::SigmaHat
        } else {
            Row::Eta(r.spec.eta)
        }
    }

    fn label(self) -> String {
        match self {
            Row::Eta(e) => format!("η = {e}"),
            Row::SigmaHat => "σ̂".into(),
        }
    }
}

/// The rows present in `results`, in first-seen order.
fn rows(results: &[CellResult]) -> Vec<Row> {
    let mut rows = vec![];
    for r in results {
        if !rows.contains(&Row::of(r)) {
            rows.push(Row::of(r));
        }
    }
    rows
}

/// The index of the cell at (row, S), if the evaluation has it.
fn find(results: &[CellResult], row: Row, steps: usize) -> Option<usize> {
    results
        .iter()
        .position(|r| Row::of(r) == row && r.spec.steps == steps)
}

/// The real-vs-real floor of an evaluation: `n` test images against the statistics
/// of the other `against`.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub fd: Interval,
    pub n: usize,
    pub against: usize,
}

/// The table as the terminal shows it: "FD [low, high]" (the percentile interval)
/// per cell, "—" where a cell was not asked for; then one line per paired comparison.
pub fn text(results: &[CellResult], steps: &[usize]) -> String {
    let mut s = format!("{:>8}", "");
    for st in steps {
        s += &format!("  {:>24}", format!("S = {st}"));
    }
    s += "\n";
    for row in rows(results) {
        s += &format!("{:>8}", row.label());
        for &st in steps {
            let cell = match find(results, row, st) {
                Some(i) => {
                    let f = &results[i].fd;
                    format!("{:.2} [{:.2}, {:.2}]", f.fd, f.fd_low, f.fd_high)
                }
                None => "—".into(),
            };
            s += &format!("  {cell:>24}");
        }
        s += "\n";
    }
    for (r, p) in results.iter().zip(vs_eta0(results)) {
        if let Some(p) = p {
            s += &format!(
                "{} − η=0, paired: {:+.2} ({:+.2}, {:+.2})\n",
                r.spec.label(),
                p.diff,
                p.low,
                p.high
            );
        }
    }
    s
}

/// One decimal, with a true minus sign (as the report writes numbers).
fn num(x: f64) -> String {
    format!("{x:.1}").replace('-', "−")
}

/// One decimal with its sign always shown.
fn signed(x: f64) -> String {
    format!("{x:+.1}").replace('-', "−")
}

/// "FD [percentile] (basic)".
fn interval(f: &Interval) -> String {
    let (bl, bh) = f.basic();
    format!(
        "{} [{}, {}] ({}, {})",
        num(f.fd),
        num(f.fd_low),
        num(f.fd_high),
        num(bl),
        num(bh)
    )
}

/// "diff (low, high)", in bold when the interval excludes 0 (the difference is resolved).
fn paired(p: &Paired) -> String {
    let s = format!("{} ({}, {})", signed(p.diff), signed(p.low), signed(p.high));
    if p.low > 0.0 || p.high < 0.0 {
        format!("**{s}**")
    } else {
        s
    }
}

/// The table in Markdown: each cell "FD [percentile] (basic)"; a row of paired
/// differences against η = 0 under each η ≠ 0 and σ̂ row that has them (bold where
/// the interval excludes 0); the floor; the judge's class histogram and mean
/// confidence per cell; and `caption` (the run's settings) as the last line.
pub fn markdown(results: &[CellResult], steps: &[usize], floor: &Floor, caption: &str) -> String {
    let pairs = vs_eta0(results);
    let rows = rows(results);
    let mut s = String::from("|");
    for st in steps {
        s += &format!(" | S = {st}");
    }
    s += " |\n|---";
    s += &"|---".repeat(steps.len());
    s += "|\n";
    for &row in &rows {
        s += &format!("| {}", row.label());
        for &st in steps {
            let cell = find(results, row, st).map(|i| interval(&results[i].fd));
            s += &format!(" | {}", cell.as_deref().unwrap_or("—"));
        }
        s += " |\n";
    }
    for &row in &rows {
        let cells: Vec<Option<Paired>> = steps
            .iter()
            .map(|&st| find(results, row, st).and_then(|i| pairs[i]))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        s += &format!("| {} − η = 0, paired", row.label());
        for c in &cells {
            s += &format!(" | {}", c.as_ref().map(paired).as_deref().unwrap_or("—"));
        }
        s += " |\n";
    }
    s += &format!(
        "\nFloor (real vs real, {} test images against the other {}): FD {}.\n",
        floor.n,
        floor.against,
        interval(&floor.fd)
    );
    s += "\n| cell | class histogram | confidence |\n|---|---|---|\n";
    for &st in steps {
        for &row in &rows {
            if let Some(i) = find(results, row, st) {
                let r = &results[i];
                s += &format!(
                    "| S = {st}, {} | {:?} | {:.3} |\n",
                    row.label(),
                    r.class_histogram,
                    r.confidence
                );
            }
        }
    }
    s += &format!("\n{caption}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Solver, Spacing};
    use crate::eval::CellSpec;

    fn cell(steps: usize, eta: f64, sigma_hat: bool, fd: f64, resampled: Vec<f64>) -> CellResult {
        CellResult {
            spec: CellSpec {
                steps,
                eta,
                sigma_hat,
                spacing: Spacing::Uniform,
                solver: Solver::Ddim,
            },
            n: 4,
            fd: Interval {
                fd,
                fd_low: fd - 1.0,
                fd_high: fd + 3.0,
            },
            confidence: 0.8124,
            class_histogram: vec![1, 0, 3],
            seconds: 1.0,
            resampled,
        }
    }

    /// Two S columns, η = 0 and 1 and σ̂; σ̂ is missing at S = 20, and η = 1's
    /// resamples sit well below η = 0's at S = 10 (resolved) but straddle them at S = 20.
    fn table() -> Vec<CellResult> {
        let base = vec![10.0, 11.0, 12.0, 13.0];
        vec![
            cell(10, 0.0, false, 10.0, base.clone()),
            cell(10, 1.0, false, 5.0, vec![4.0, 5.0, 6.0, 7.0]),
            cell(10, 0.0, true, 40.0, vec![]),
            cell(20, 0.0, false, 8.0, base.clone()),
            cell(20, 1.0, false, 8.5, vec![14.0, 6.0, 18.0, 9.0]),
        ]
    }

    fn floor() -> Floor {
        Floor {
            fd: Interval {
                fd: 0.5,
                fd_low: 0.2,
                fd_high: 2.0,
            },
            n: 4,
            against: 5,
        }
    }

    #[test]
    fn markdown_has_a_row_per_eta_then_sigma_hat_and_a_column_per_step() {
        let md = markdown(&table(), &[10, 20], &floor(), "N = 4");
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| | S = 10 | S = 20 |");
        assert_eq!(lines[1], "|---|---|---|");
        assert_eq!(
            lines[2],
            "| η = 0 | 10.0 [9.0, 13.0] (7.0, 11.0) | 8.0 [7.0, 11.0] (5.0, 9.0) |"
        );
        assert!(lines[3].starts_with("| η = 1 | 5.0 [4.0, 8.0] (2.0, 6.0) |"));
        // σ̂ was not asked for at S = 20.
        assert!(lines[4].starts_with("| σ̂ | 40.0 "), "{}", lines[4]);
        assert!(lines[4].ends_with(" | — |"), "{}", lines[4]);
        // Only η = 1 has paired differences (σ̂ kept no resamples): resolved at S = 10
        // (bold), not at S = 20; the signs are true minus signs.
        assert!(
            lines[5].starts_with("| η = 1 − η = 0, paired | **−5.0 ("),
            "{}",
            lines[5]
        );
        assert!(!lines[5].contains("| **+0.5"), "{}", lines[5]);
        assert!(lines[5].contains("| +0.5 (−"), "{}", lines[5]);
        assert!(!md.contains("σ̂ − η = 0"), "{md}");
        let hyphen_minus = md
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'-' && w[1].is_ascii_digit());
        assert!(!hyphen_minus, "{md}");
        assert!(md.contains(
            "Floor (real vs real, 4 test images against the other 5): FD 0.5 [0.2, 2.0] (−1.0, 0.8)."
        ));
        assert!(md.contains("| S = 10, σ̂ | [1, 0, 3] | 0.812 |"), "{md}");
        // The histogram rows go by S, then by row; the caption ends the text.
        let h = |l: &str| lines.iter().position(|x| x.starts_with(l)).unwrap();
        assert!(h("| S = 10, η = 1 |") < h("| S = 10, σ̂ |"));
        assert!(h("| S = 10, σ̂ |") < h("| S = 20, η = 0 |"));
        assert_eq!(lines.last(), Some(&"N = 4"));
    }

    #[test]
    fn text_marks_missing_cells_and_lists_the_pairs() {
        let t = text(&table(), &[10, 20]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("S = 10") && lines[0].contains("S = 20"));
        assert!(lines[1].trim_start().starts_with("η = 0"));
        assert!(lines[3].trim_start().starts_with("σ̂") && lines[3].ends_with('—'));
        assert_eq!(
            lines.iter().filter(|l| l.contains("− η=0, paired")).count(),
            2
        );
        assert!(t.contains("S=10 η=1 − η=0, paired: -5.00"), "{t}");
    }
}
