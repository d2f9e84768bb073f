//! The origin filter of ListLatents: an origin's name or any unique prefix of it
//! (`enc` → encoded), the same rule as the TUI's `origin:` words and `ddim ls --origin`.
use super::error::ServerError;

/// Every origin a latent can have, as `OriginRecord::name` spells it.
pub const ORIGINS: [&str; 5] = ["encoded", "sampled", "interpolated", "imported", "edited"];

/// The origin `filter` names ("" for none): an exact name, or a prefix (case-insensitive)
/// of exactly one name. An unknown or ambiguous one is INVALID_ARGUMENT on `origin`,
/// listing the valid names.
pub fn origin_filter(filter: &str) -> Result<&'static str, ServerError> {
    if filter.is_empty() {
        return Ok("");
    }
    let f = filter.to_lowercase();
    if let Some(exact) = ORIGINS.iter().find(|o| **o == f) {
        return Ok(exact);
    }
    let matches: Vec<&'static str> = ORIGINS
        .iter()
        .copied()
        .filter(|o| o.starts_with(&f))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ServerError::invalid(
            "origin",
            format!(
                "{filter:?} is not an origin nor a prefix of one (expected one of {}, or \"\" for all)",
                ORIGINS.join(", ")
            ),
        )),
        many => Err(ServerError::invalid(
            "origin",
            format!(
                "{filter:?} is ambiguous: it starts {} (expected one of {})",
                many.join(" and "),
                ORIGINS.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::OriginRecord;

    fn field_and_message(e: ServerError) -> (String, String) {
        match e {
            ServerError::InvalidArgument { field, message } => (field, message),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn names_and_unique_prefixes_resolve() {
        assert_eq!(origin_filter("").unwrap(), "");
        for o in ORIGINS {
            assert_eq!(origin_filter(o).unwrap(), o);
            assert_eq!(origin_filter(&o.to_uppercase()).unwrap(), o);
        }
        assert_eq!(origin_filter("enc").unwrap(), "encoded");
        assert_eq!(origin_filter("ENC").unwrap(), "encoded");
        assert_eq!(origin_filter("s").unwrap(), "sampled");
        assert_eq!(origin_filter("im").unwrap(), "imported");
        assert_eq!(origin_filter("int").unwrap(), "interpolated");
    }

    #[test]
    fn unknown_and_ambiguous_name_the_field_and_the_origins() {
        let (field, msg) = field_and_message(origin_filter("i").unwrap_err());
        assert_eq!(field, "origin");
        assert!(
            msg.contains("ambiguous") && msg.contains("interpolated and imported"),
            "{msg}"
        );
        let (_, msg) = field_and_message(origin_filter("e").unwrap_err());
        assert!(msg.contains("encoded and edited"), "{msg}");
        assert_eq!(origin_filter("ed").unwrap(), "edited");
        for bad in ["x", "encodedx", " enc"] {
            let (field, msg) = field_and_message(origin_filter(bad).unwrap_err());
            assert_eq!(field, "origin");
            for o in ORIGINS {
                assert!(msg.contains(o), "{bad}: {msg}");
            }
        }
    }

    /// Every `OriginRecord` kind is in `ORIGINS`. The match has no wildcard: a new
    /// kind fails to compile here until it is added to the list (and so to the filter).
    #[test]
    fn every_record_kind_is_filterable() {
        let listed = |o: &OriginRecord| match o {
            OriginRecord::Encoded { .. }
            | OriginRecord::Sampled { .. }
            | OriginRecord::Interpolated { .. }
            | OriginRecord::Imported { .. }
            | OriginRecord::Edited { .. } => ORIGINS.contains(&o.name()),
        };
        let all = [
            OriginRecord::Encoded {
                filename: String::new(),
                has_source: false,
            },
            OriginRecord::Sampled { seed: 0, index: 0 },
            OriginRecord::Interpolated {
                a: 0,
                b: 0,
                alpha: 0.0,
                method: String::new(),
            },
            OriginRecord::Imported {
                filename: String::new(),
            },
            OriginRecord::Edited {
                op: String::new(),
                params: String::new(),
                parents: vec![],
                summary: String::new(),
            },
        ];
        assert_eq!(all.len(), ORIGINS.len());
        for o in &all {
            assert!(listed(o), "{}", o.name());
        }
    }
}
