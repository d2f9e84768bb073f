//! Sub-sequences τ of S out of T training timesteps.
//!
//! Every spacing returns exactly S distinct, in-range timesteps in ascending
//! order for every 1 ≤ S ≤ T (a property test checks all of them). Sampling
//! walks them descending and takes its final step to ᾱ = 1 (t = −1).
//!
//! - `uniform`: ⌊i·T/S⌋, i = 0..S — ermongroup's `range(0, T, T//S)` when S
//!   divides T, exactly S steps otherwise.
//! - `quad`: the paper's τ_i = ⌊c·i²⌋ (App. D.2) with c = (T−1)/(S−1)², so the
//!   last step is T−1; collisions at small i are pushed up one step at a time
//!   (ermongroup's version repeats t = 0 for S ≥ 30 and stops at 0.8·T).
//! - `leading`: i·(T//S) (diffusers, steps_offset 0).
//! - `trailing`: round(T − i·T/S) − 1 computed per index (diffusers' `arange`
//!   with a float step yields S+1 steps for some S).
//! - `linspace`: round(linspace(0, T−1, S)) (ties to even, as numpy).
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Spacing {
    #[default]
    Uniform,
    Quad,
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub const ALL: [Spacing; 5] = [
        Spacing::Uniform,
        Spacing::Quad,
        Spacing::Leading,
        Spacing::Trailing,
        Spacing::Linspace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Spacing::Uniform => "uniform",
            Spacing::Quad => "quad",
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        }
    }

    /// The ascending timesteps τ_0 < … < τ_{S−1}. Panics only on S = 0 or
    /// S > T, which callers validate first (see [`validate_steps`]).
    pub fn timesteps(self, steps: usize, t: usize) -> Vec<i64> {
        assert!(steps >= 1 && steps <= t, "steps {steps} out of 1..={t}");
        let (s, tf) = (steps as f64, t as f64);
        let v: Vec<i64> = match self {
            Spacing::Uniform => (0..steps).map(|i| (i * t / steps) as i64).collect(),
            Spacing::Leading => (0..steps).map(|i| (i * (t / steps)) as i64).collect(),
            Spacing::Trailing => (0..steps)
                .rev()
                .map(|i| (tf - i as f64 * tf / s).round_ties_even() as i64 - 1)
                .collect(),
            Spacing::Linspace => {
                if steps == 1 {
                    vec![0]
                } else {
                    (0..steps)
                        .map(|i| (i as f64 * (tf - 1.0) / (s - 1.0)).round_ties_even() as i64)
                        .collect()
                }
            }
            Spacing::Quad => {
                if steps == 1 {
                    vec![0]
                } else {
                    let c = (tf - 1.0) / ((s - 1.0) * (s - 1.0));
                    let mut v: Vec<i64> = (0..steps)
                        .map(|i| (c * (i * i) as f64).floor() as i64)
                        .collect();
                    for i in 1..steps {
                        v[i] = v[i].max(v[i - 1] + 1);
                    }
                    let last = steps - 1;
                    v[last] = v[last].min(t as i64 - 1);
                    for i in (0..last).rev() {
                        v[i] = v[i].min(v[i + 1] - 1);
                    }
                    v
                }
            }
        };
        v
    }
}

impl fmt::Display for Spacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Spacing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Spacing::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown spacing {s:?} (expected uniform, quad, leading, trailing or linspace)"
                )
            })
    }
}

/// Checks 1 ≤ S ≤ T.
pub fn validate_steps(steps: usize, t: usize) -> Result<(), String> {
    if steps == 0 || steps > t {
        Err(format!("steps must be in 1..={t}, got {steps}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spacing_every_s_is_exact_distinct_in_range() {
        let t = 1000;
        for sp in Spacing::ALL {
            for s in 1..=t {
                let v = sp.timesteps(s, t);
                assert_eq!(v.len(), s, "{sp} S={s}");
                assert!(
                    v.windows(2).all(|w| w[0] < w[1]),
                    "{sp} S={s} not strictly ascending"
                );
                assert!(v[0] >= 0 && v[s - 1] < t as i64, "{sp} S={s} out of range");
            }
        }
    }

    #[test]
    fn small_t_too() {
        for t in [2usize, 3, 7, 10, 97] {
            for sp in Spacing::ALL {
                for s in 1..=t {
                    let v = sp.timesteps(s, t);
                    assert_eq!(v.len(), s);
                    assert!(v.windows(2).all(|w| w[0] < w[1]));
                    assert!(v[0] >= 0 && *v.last().unwrap() < t as i64);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(
            Spacing::Uniform.timesteps(5, 1000),
            vec![0, 200, 400, 600, 800]
        );
        assert_eq!(
            Spacing::Leading.timesteps(5, 1000),
            vec![0, 200, 400, 600, 800]
        );
        assert_eq!(
            Spacing::Trailing.timesteps(5, 1000),
            vec![199, 399, 599, 799, 999]
        );
        assert_eq!(
            Spacing::Linspace.timesteps(5, 1000),
            vec![0, 250, 500, 749, 999]
        );
        // diffusers trailing bug case: S = 61 must give 61 steps ending at 999.
        let tr = Spacing::Trailing.timesteps(61, 1000);
        assert_eq!((tr.len(), tr[0] >= 0, *tr.last().unwrap()), (61, true, 999));
        let q = Spacing::Quad.timesteps(100, 1000);
        assert_eq!((q.len(), q[99]), (100, 999));
        assert_eq!(
            Spacing::Uniform.timesteps(1000, 1000),
            (0..1000).collect::<Vec<_>>()
        );
    }

    #[test]
    fn parse_round_trip_and_errors() {
        for sp in Spacing::ALL {
            assert_eq!(sp.as_str().parse::<Spacing>().unwrap(), sp);
        }
        assert!("cubic".parse::<Spacing>().unwrap_err().contains("cubic"));
        assert!(validate_steps(0, 1000).is_err());
        assert!(validate_steps(1001, 1000).is_err());
        assert!(validate_steps(1000, 1000).is_ok());
    }
}
