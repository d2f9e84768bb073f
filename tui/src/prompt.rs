//! A one-line text input for the UI's prompts, with Tab completion of file paths.

use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key did to the prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum PromptOutcome {
    Editing,
    Submit(String),
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub title: String,
    pub input: String,
    /// Cursor as a char index.
    pub cursor: usize,
    /// Tab completes file paths.
    pub paths: bool,
    /// Candidates from the last ambiguous completion.
    pub candidates: Vec<String>,
}

impl Prompt {
    pub fn new(title: impl Into<String>, initial: impl Into<String>) -> Self {
        let input: String = initial.into();
        Self {
            title: title.into(),
            cursor: input.chars().count(),
            input,
            paths: false,
            candidates: Vec::new(),
        }
    }

    pub fn with_paths(mut self) -> Self {
        self.paths = true;
        self
    }

    fn byte_at(&self, char_idx: usize) -> usize {
        self.input
            .char_indices()
            .nth(char_idx)
            .map_or(self.input.len(), |(i, _)| i)
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> PromptOutcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => return PromptOutcome::Submit(self.input.clone()),
            KeyCode::Esc => return PromptOutcome::Cancel,
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
            }
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.input.chars().count(),
            KeyCode::Char(c) => {
                let at = self.byte_at(self.cursor);
                self.input.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Delete if self.cursor < self.input.chars().count() => {
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.input.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.input.chars().count(),
            KeyCode::Tab if self.paths => {
                let (completed, candidates) = complete_path(&self.input);
                self.input = completed;
                self.cursor = self.input.chars().count();
                self.candidates = candidates;
                return PromptOutcome::Editing;
            }
            _ => {}
        }
        self.candidates.clear();
        PromptOutcome::Editing
    }
}

/// Completes the last path in `input` (after the last space): the unique match, or the
/// longest common prefix of several, with their names as candidates. Directories get a
/// trailing `/`. `~/` expands to the home directory for listing but is kept as typed.
pub fn complete_path(input: &str) -> (String, Vec<String>) {
    let start = input.rfind(' ').map_or(0, |i| i + 1);
    let (head, word) = input.split_at(start);
    let (dir_part, prefix) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word),
    };
    let listed = if dir_part.is_empty() {
        ".".to_string()
    } else if let Some(rest) = dir_part.strip_prefix("~/") {
        dirs::home_dir()
            .map(|h| h.join(rest).to_string_lossy().into_owned())
            .unwrap_or_else(|| dir_part.to_string())
    } else {
        dir_part.to_string()
    };
    let Ok(rd) = std::fs::read_dir(Path::new(&listed)) else {
        return (input.to_string(), vec![]);
    };
    let mut matches: Vec<(String, bool)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hidden_ok = prefix.starts_with('.') || !name.starts_with('.');
            (name.starts_with(prefix) && hidden_ok).then(|| (name, e.path().is_dir()))
        })
        .collect();
    matches.sort();
    match matches.len() {
        0 => (input.to_string(), vec![]),
        1 => {
            let (name, is_dir) = &matches[0];
            let slash = if *is_dir { "/" } else { "" };
            (format!("{head}{dir_part}{name}{slash}"), vec![])
        }
        _ => {
            let first = &matches[0].0;
            let common = matches.iter().fold(first.len(), |n, (m, _)| {
                first
                    .char_indices()
                    .zip(m.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8())
                    .min(n)
            });
            let names = matches
                .iter()
                .map(|(n, d)| if *d { format!("{n}/") } else { n.clone() })
                .collect();
            (format!("{head}{dir_part}{}", &first[..common]), names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn editing_keys() {
        let mut p = Prompt::new("name", "ab");
        p.handle_key(key(KeyCode::Left));
        p.handle_key(key(KeyCode::Char('é')));
        assert_eq!(p.input, "aéb");
        p.handle_key(key(KeyCode::Backspace));
        assert_eq!(p.input, "ab");
        assert_eq!(
            p.handle_key(key(KeyCode::Enter)),
            PromptOutcome::Submit("ab".into())
        );
        assert_eq!(p.handle_key(key(KeyCode::Esc)), PromptOutcome::Cancel);
    }

    #[test]
    fn tab_completes_unique_and_common_prefixes() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().to_string_lossy().into_owned();
        std::fs::create_dir(d.path().join("images")).unwrap();
        std::fs::write(d.path().join("shirt_01.png"), b"").unwrap();
        std::fs::write(d.path().join("shirt_02.png"), b"").unwrap();
        let (c, cands) = complete_path(&format!("{base}/im"));
        assert_eq!(c, format!("{base}/images/"));
        assert!(cands.is_empty());
        let (c, cands) = complete_path(&format!("x.png {base}/sh"));
        assert_eq!(c, format!("x.png {base}/shirt_0"));
        assert_eq!(cands, ["shirt_01.png", "shirt_02.png"]);
        let (c, _) = complete_path(&format!("{base}/zzz"));
        assert_eq!(c, format!("{base}/zzz"));

        let mut p = Prompt::new("file", format!("{base}/sh")).with_paths();
        p.handle_key(key(KeyCode::Tab));
        assert_eq!(p.input, format!("{base}/shirt_0"));
        assert_eq!(p.candidates.len(), 2);
    }
}
