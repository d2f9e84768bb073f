//! The expression language of `ddim edit mix`: a linear combination of latents written
//! as arithmetic over latent ids, e.g. `lat-1 + 0.8*(lat-2 - lat-3)`.
//!
//! [`parse_mix`] turns an expression into `(id, weight)` pairs (the daemon then computes
//! Σ wᵢ·xᵢ and rescales it to the sphere, see `ddimd::engine::edit::combine`); it lives
//! here so that the client (which cannot link libtorch) validates and shows the same
//! thing the daemon runs. [`format_mix`] writes pairs back as an expression.
//!
//! # Grammar
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/') unary)*
//! unary   := ('-' | '+') unary | primary
//! primary := NUMBER | ID | '(' expr ')'
//! ```
//! - `NUMBER`: `2`, `0.8`, `.5`, `1e-3` (decimal, optional exponent).
//! - `ID`: starts with a letter or `_`, continues with letters, digits and `_`; a `-`
//!   **directly followed by a digit** is part of the id (`lat-12`, `lat-1-2`). Any other
//!   `-` is subtraction, so `lat-2 - lat-3` and `lat-2-lat-3` both subtract, while
//!   `lat-2-3` is one id. Write binary minus before a number with spaces
//!   (`lat-2 - 0.5*lat-3`).
//! - `−` (U+2212) is accepted for `-`, `·` and `×` for `*`. Spaces are free elsewhere.
//! - The result must be **linear** in the ids: `id*id`, `id/id`, `2/lat-1` and
//!   a bare number added to a latent (`lat-1 + 2`) are errors; a number times or
//!   divided by any sub-expression is fine (`(0.5 + 0.3)*lat-1`, `(lat-1 + lat-2)/2`).
//! - Terms of the same id are merged (`lat-1 + lat-1` → `[("lat-1", 2)]`) in order of
//!   first appearance; ids whose weights cancel to exactly 0 are dropped, and an
//!   expression with no id left is an error.
//!
//! Errors are one line naming the 1-based column, e.g.
//! `column 9: expected a latent id, a number or '(' but found '*'`.

/// Parses a mix expression into `(id, weight)` pairs; see the module docs for the rules.
pub fn parse_mix(expr: &str) -> Result<Vec<(String, f64)>, String> {
    let tokens = lex(expr)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        end_col: expr.chars().count() + 1,
    };
    let lin = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(format!(
            "column {}: expected an operator or the end, found {}",
            t.col,
            t.kind.describe()
        ));
    }
    if lin.terms.is_empty() {
        return Err("the expression names no latent (expected ids like lat-1)".into());
    }
    let out: Vec<(String, f64)> = lin.terms.into_iter().filter(|(_, w)| *w != 0.0).collect();
    if out.is_empty() {
        return Err("the terms cancel out: every latent's weight is 0".into());
    }
    if let Some((id, w)) = out.iter().find(|(_, w)| !w.is_finite()) {
        return Err(format!("the weight of {id} is {w}, not a finite number"));
    }
    Ok(out)
}

/// Writes `(id, weight)` pairs as an expression that [`parse_mix`] reads back to the
/// same pairs, e.g. `lat-1 + 0.8*lat-2 - 0.8*lat-3` (weight 1 is left out).
pub fn format_mix(terms: &[(String, f64)]) -> String {
    let mut s = String::new();
    for (i, (id, w)) in terms.iter().enumerate() {
        let (neg, a) = (*w < 0.0, w.abs());
        match (i, neg) {
            (0, true) => s.push('-'),
            (0, false) => {}
            (_, true) => s.push_str(" - "),
            (_, false) => s.push_str(" + "),
        }
        if a != 1.0 {
            s.push_str(&format!("{a}*"));
        }
        s.push_str(id);
    }
    s
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Num(f64),
    Id(String),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Num(v) => format!("the number {v}"),
            Kind::Id(s) => format!("the id {s}"),
            Kind::Plus => "'+'".into(),
            Kind::Minus => "'-'".into(),
            Kind::Star => "'*'".into(),
            Kind::Slash => "'/'".into(),
            Kind::LParen => "'('".into(),
            Kind::RParen => "')'".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// 1-based column (in characters) where the token starts.
    col: usize,
}

fn lex(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let single = match c {
            '+' => Some(Kind::Plus),
            '-' | '\u{2212}' => Some(Kind::Minus),
            '*' | '·' | '×' => Some(Kind::Star),
            '/' => Some(Kind::Slash),
            '(' => Some(Kind::LParen),
            ')' => Some(Kind::RParen),
            _ => None,
        };
        if let Some(kind) = single {
            out.push(Token { kind, col });
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // An exponent only when digits follow `e`, `e+` or `e-`.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let v: f64 = text
                .parse()
                .map_err(|_| format!("column {col}: {text:?} is not a number"))?;
            if i < chars.len() && (chars[i].is_ascii_alphabetic() || chars[i] == '_') {
                return Err(format!(
                    "column {}: a number must not run into a name; write {text}*… for a product",
                    i + 1
                ));
            }
            out.push(Token {
                kind: Kind::Num(v),
                col,
            });
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() {
                let d = chars[i];
                let dash_digit = d == '-' && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if !(d.is_ascii_alphanumeric() || d == '_' || dash_digit) {
                    break;
                }
                i += 1;
            }
            out.push(Token {
                kind: Kind::Id(chars[start..i].iter().collect()),
                col,
            });
        } else {
            return Err(format!("column {col}: unexpected character {c:?}"));
        }
    }
    Ok(out)
}

/// A linear form: `constant + Σ weight·id`. A pure number has no terms.
#[derive(Debug, Clone)]
struct Lin {
    constant: f64,
    terms: Vec<(String, f64)>,
}

impl Lin {
    fn number(v: f64) -> Self {
        Self {
            constant: v,
            terms: vec![],
        }
    }

    fn is_number(&self) -> bool {
        self.terms.is_empty()
    }

    fn scale(mut self, k: f64) -> Self {
        self.constant *= k;
        for t in &mut self.terms {
            t.1 *= k;
        }
        self
    }

    fn add(mut self, other: Lin, sign: f64) -> Self {
        self.constant += sign * other.constant;
        for (id, w) in other.terms {
            match self.terms.iter_mut().find(|(k, _)| *k == id) {
                Some(t) => t.1 += sign * w,
                None => self.terms.push((id, sign * w)),
            }
        }
        self
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    /// The column just past the end, for "unexpected end" errors.
    end_col: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, k: &Kind) -> Option<usize> {
        match self.peek() {
            Some(t) if t.kind == *k => {
                self.pos += 1;
                Some(t.col)
            }
            _ => None,
        }
    }

    fn expr(&mut self) -> Result<Lin, String> {
        let mut acc = self.term()?;
        loop {
            let (sign, col) = if let Some(c) = self.eat(&Kind::Plus) {
                (1.0, c)
            } else if let Some(c) = self.eat(&Kind::Minus) {
                (-1.0, c)
            } else {
                return Ok(acc);
            };
            let rhs = self.term()?;
            if acc.is_number() != rhs.is_number() {
                return Err(format!(
                    "column {col}: cannot add a bare number to a latent (scale it instead, e.g. 2*lat-1)"
                ));
            }
            acc = acc.add(rhs, sign);
        }
    }

    fn term(&mut self) -> Result<Lin, String> {
        let mut acc = self.unary()?;
        loop {
            if let Some(col) = self.eat(&Kind::Star) {
                let rhs = self.unary()?;
                acc = if acc.is_number() {
                    rhs.scale(acc.constant)
                } else if rhs.is_number() {
                    acc.scale(rhs.constant)
                } else {
                    return Err(format!(
                        "column {col}: a latent times a latent is not linear (only numbers may multiply)"
                    ));
                };
            } else if let Some(col) = self.eat(&Kind::Slash) {
                let rhs = self.unary()?;
                if !rhs.is_number() {
                    return Err(format!(
                        "column {col}: can only divide by a number, not by a latent"
                    ));
                }
                if rhs.constant == 0.0 {
                    return Err(format!("column {col}: division by zero"));
                }
                acc = acc.scale(1.0 / rhs.constant);
            } else {
                return Ok(acc);
            }
        }
    }

    fn unary(&mut self) -> Result<Lin, String> {
        if self.eat(&Kind::Minus).is_some() {
            return Ok(self.unary()?.scale(-1.0));
        }
        if self.eat(&Kind::Plus).is_some() {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Lin, String> {
        let Some(t) = self.peek().cloned() else {
            return Err(format!(
                "column {}: unexpected end; expected a latent id, a number or '('",
                self.end_col
            ));
        };
        self.pos += 1;
        match t.kind {
            Kind::Num(v) => Ok(Lin::number(v)),
            Kind::Id(id) => Ok(Lin {
                constant: 0.0,
                terms: vec![(id, 1.0)],
            }),
            Kind::LParen => {
                let inner = self.expr()?;
                if self.eat(&Kind::RParen).is_none() {
                    return Err(match self.peek() {
                        Some(u) => format!(
                            "column {}: expected ')' to close the '(' at column {}, found {}",
                            u.col,
                            t.col,
                            u.kind.describe()
                        ),
                        None => format!(
                            "column {}: expected ')' to close the '(' at column {}",
                            self.end_col, t.col
                        ),
                    });
                }
                Ok(inner)
            }
            other => Err(format!(
                "column {}: expected a latent id, a number or '(' but found {}",
                t.col,
                other.describe()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(e: &str) -> Vec<(String, f64)> {
        parse_mix(e).unwrap_or_else(|m| panic!("{e}: {m}"))
    }

    fn pairs(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(s, w)| (s.to_string(), *w)).collect()
    }

    fn close(a: &[(String, f64)], b: &[(&str, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((i, w), (j, v))| i == j && (w - v).abs() < 1e-12)
    }

    #[test]
    fn the_issue_example() {
        let r = ok("lat-1 + 0.8*(lat-2 - lat-3)");
        assert!(
            close(&r, &[("lat-1", 1.0), ("lat-2", 0.8), ("lat-3", -0.8)]),
            "{r:?}"
        );
    }

    #[test]
    fn single_id_and_ids_with_dashes_and_digits() {
        assert_eq!(ok("lat-12"), pairs(&[("lat-12", 1.0)]));
        assert_eq!(ok("  lat-1-2 "), pairs(&[("lat-1-2", 1.0)]));
        assert_eq!(ok("_a_b9"), pairs(&[("_a_b9", 1.0)]));
    }

    #[test]
    fn minus_rule() {
        // Spaces: subtraction. A '-' before a letter: subtraction. Before a digit: the id.
        let want = pairs(&[("lat-2", 1.0), ("lat-3", -1.0)]);
        assert_eq!(ok("lat-2 - lat-3"), want);
        assert_eq!(ok("lat-2-lat-3"), want);
        assert_eq!(ok("lat-2 -lat-3"), want);
        assert_eq!(ok("lat-2- lat-3"), want);
        assert_eq!(ok("lat-2-3"), pairs(&[("lat-2-3", 1.0)]));
        assert!(close(
            &ok("lat-2 - 0.5*lat-3"),
            &[("lat-2", 1.0), ("lat-3", -0.5)]
        ));
        assert_eq!(
            ok("lat-1-(lat-2)"),
            pairs(&[("lat-1", 1.0), ("lat-2", -1.0)])
        );
        // Unicode minus and multiplication signs.
        assert!(close(
            &ok("lat-1 − 0.5·lat-2 + 2×lat-3"),
            &[("lat-1", 1.0), ("lat-2", -0.5), ("lat-3", 2.0)]
        ));
    }

    #[test]
    fn unary_minus_precedence_and_division() {
        assert_eq!(ok("-lat-1"), pairs(&[("lat-1", -1.0)]));
        assert_eq!(ok("--lat-1"), pairs(&[("lat-1", 1.0)]));
        assert_eq!(ok("+lat-1"), pairs(&[("lat-1", 1.0)]));
        assert_eq!(ok("-2*-lat-1"), pairs(&[("lat-1", 2.0)]));
        // * binds tighter than + and -.
        assert!(close(
            &ok("lat-1 - 2*lat-2 + lat-3*3"),
            &[("lat-1", 1.0), ("lat-2", -2.0), ("lat-3", 3.0)]
        ));
        assert!(close(
            &ok("(lat-1 + lat-2)/2"),
            &[("lat-1", 0.5), ("lat-2", 0.5)]
        ));
        assert!(close(&ok("lat-1/4/2"), &[("lat-1", 0.125)]));
        assert!(close(&ok("(0.5 + 0.3)*lat-1"), &[("lat-1", 0.8)]));
        assert!(close(&ok("2*(3*(lat-1))"), &[("lat-1", 6.0)]));
        assert!(close(
            &ok(".5*lat-1 + 1e-1*lat-2 + 2E+1*lat-3"),
            &[("lat-1", 0.5), ("lat-2", 0.1), ("lat-3", 20.0)]
        ));
    }

    #[test]
    fn same_id_merged_in_first_appearance_order_zero_dropped() {
        assert!(close(
            &ok("lat-2 + lat-1 + lat-2*0.5"),
            &[("lat-2", 1.5), ("lat-1", 1.0)]
        ));
        assert_eq!(ok("lat-1 + lat-2 - lat-1"), pairs(&[("lat-2", 1.0)]));
        let e = parse_mix("lat-1 - lat-1").unwrap_err();
        assert!(e.contains("cancel"), "{e}");
    }

    #[test]
    fn errors_name_the_column() {
        let cases: &[(&str, &str)] = &[
            ("lat-1 * lat-2", "column 7: a latent times a latent"),
            ("lat-1 / lat-2", "column 7: can only divide by a number"),
            ("2 / lat-2", "column 3: can only divide by a number"),
            ("lat-1 / 0", "column 7: division by zero"),
            ("lat-1 + 2", "column 7: cannot add a bare number"),
            ("3 - lat-1", "column 3: cannot add a bare number"),
            ("lat-1 + ", "column 9: unexpected end"),
            (
                "lat-1 + * lat-2",
                "column 9: expected a latent id, a number or '('",
            ),
            (
                "(lat-1 + lat-2",
                "column 15: expected ')' to close the '(' at column 1",
            ),
            (
                "lat-1)",
                "column 6: expected an operator or the end, found ')'",
            ),
            ("lat-1 lat-2", "column 7: expected an operator or the end"),
            (
                "lat-1 + 2lat-2",
                "column 10: a number must not run into a name",
            ),
            ("lat-1 $ lat-2", "column 7: unexpected character '$'"),
            ("1.2.3*lat-1", "column 4: expected an operator or the end"),
            ("()", "column 2: expected a latent id"),
        ];
        for (e, want) in cases {
            let got = parse_mix(e).unwrap_err();
            assert!(got.starts_with(want), "{e:?}: got {got:?}, want {want:?}…");
            assert!(!got.contains('\n'));
        }
        assert!(parse_mix("").unwrap_err().contains("unexpected end"));
        assert!(parse_mix("2*3").unwrap_err().contains("names no latent"));
        assert!(parse_mix("1e400*lat-1")
            .unwrap_err()
            .contains("not a finite"));
    }

    #[test]
    fn format_round_trips() {
        for e in [
            "lat-1 + 0.8*(lat-2 - lat-3)",
            "-lat-4",
            "-0.25*lat-1 + lat-9 - 3*lat-10",
        ] {
            let p = ok(e);
            let f = format_mix(&p);
            assert_eq!(ok(&f), p, "{e} → {f}");
        }
        assert_eq!(
            format_mix(&pairs(&[("lat-1", 1.0), ("lat-2", -0.5)])),
            "lat-1 - 0.5*lat-2"
        );
    }
}
