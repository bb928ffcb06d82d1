//! One line of text being edited, as a shell line edits: a cursor, Home/End and Ctrl-A/E,
//! Ctrl-U/Ctrl-K/Ctrl-W, Delete, `~` expanded and Tab completing paths. Every text input of
//! the workbench (Setup's fields, the preset-name prompt, the Runs filter) is one of these.
use std::path::PathBuf;

use ratatui::style::{Modifier, Style};
use ratatui::text::Span;

use super::action::Action;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineEdit {
    text: String,
    /// In chars, 0..=len.
    cursor: usize,
}

/// What a Tab found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Nothing starts with what is typed (or the folder cannot be read).
    None,
    /// Completed as far as the candidates agree; more than one remains (shown to the user).
    Several(Vec<String>),
    /// Completed to the only candidate.
    One,
}

impl LineEdit {
    /// `text` with the cursor at its end.
    pub fn new(text: impl Into<String>) -> LineEdit {
        let text = text.into();
        let cursor = text.chars().count();
        LineEdit { text, cursor }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The text before the cursor, the char under it (None at the end) and the rest.
    pub fn split(&self) -> (&str, Option<char>, &str) {
        let at = self.byte(self.cursor);
        let mut rest = self.text[at..].chars();
        let c = rest.next();
        (&self.text[..at], c, rest.as_str())
    }

    fn byte(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    /// An editing key; false when `action` is not one (Enter, Esc and Tab are the caller's).
    pub fn handle(&mut self, action: &Action) -> bool {
        match action {
            Action::Input(c) => {
                let at = self.byte(self.cursor);
                self.text.insert(at, *c);
                self.cursor += 1;
            }
            Action::Backspace if self.cursor > 0 => {
                let at = self.byte(self.cursor - 1);
                self.text.remove(at);
                self.cursor -= 1;
            }
            Action::Backspace => {}
            Action::DeleteForward if self.cursor < self.len() => {
                let at = self.byte(self.cursor);
                self.text.remove(at);
            }
            Action::DeleteForward => {}
            Action::Left => self.cursor = self.cursor.saturating_sub(1),
            Action::Right => self.cursor = (self.cursor + 1).min(self.len()),
            Action::First => self.cursor = 0,
            Action::Last => self.cursor = self.len(),
            Action::KillToStart => {
                let at = self.byte(self.cursor);
                self.text.replace_range(..at, "");
                self.cursor = 0;
            }
            Action::KillToEnd => {
                let at = self.byte(self.cursor);
                self.text.truncate(at);
            }
            Action::KillWord => {
                // As readline's unix-word-rubout: blanks before the cursor, then the word.
                let chars: Vec<char> = self.text.chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                while start > 0 && !chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                let (a, b) = (self.byte(start), self.byte(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor = start;
            }
            _ => return false,
        }
        true
    }

    /// Tab: completes the path before the cursor (a leading `~` is the home folder) from the
    /// entries of its folder; folders get a trailing `/`.
    pub fn complete_path(&mut self) -> Completion {
        let at = self.byte(self.cursor);
        let typed = &self.text[..at];
        let (dir_part, prefix) = match typed.rfind('/') {
            Some(i) => (&typed[..=i], &typed[i + 1..]),
            None => ("", typed),
        };
        let dir = if dir_part.is_empty() {
            PathBuf::from(".")
        } else {
            expand_home(dir_part)
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Completion::None;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // Hidden entries only when asked for, as shells do.
                if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.'))
                {
                    return None;
                }
                let is_dir = e.path().is_dir();
                Some(if is_dir { format!("{name}/") } else { name })
            })
            .collect();
        names.sort();
        let Some(first) = names.first() else {
            return Completion::None;
        };
        let common = names.iter().fold(first.clone(), |acc, n| {
            acc.chars()
                .zip(n.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect()
        });
        let insert = &common[prefix.len()..];
        self.text.insert_str(at, insert);
        self.cursor += insert.chars().count();
        if names.len() == 1 {
            Completion::One
        } else {
            Completion::Several(names)
        }
    }
}

/// The line as drawn: a bar at the end, or the char under the cursor reversed.
pub fn spans(e: &LineEdit, style: Style) -> Vec<Span<'static>> {
    let (before, at, after) = e.split();
    match at {
        None => vec![Span::styled(format!("{before}▏"), style)],
        Some(c) => vec![
            Span::styled(before.to_string(), style),
            Span::styled(c.to_string(), style.add_modifier(Modifier::REVERSED)),
            Span::styled(after.to_string(), style),
        ],
    }
}

/// `~` and `~/…` as the home folder; anything else unchanged.
pub fn expand_home(text: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match text.strip_prefix('~') {
        Some("") => home().unwrap_or_else(|| PathBuf::from(text)),
        Some(rest) if rest.starts_with('/') => match home() {
            Some(h) => h.join(rest.trim_start_matches('/')),
            None => PathBuf::from(text),
        },
        _ => PathBuf::from(text),
    }
}

/// A typed path value with `~` expanded (for values that are paths; other text unchanged).
pub fn expanded(text: &str) -> String {
    if text.starts_with('~') {
        expand_home(text).display().to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> LineEdit {
        let mut e = LineEdit::default();
        for c in s.chars() {
            e.handle(&Action::Input(c));
        }
        e
    }

    #[test]
    fn edits_like_a_shell_line() {
        let mut e = typed("cifar data");
        assert_eq!(e.cursor(), 10);
        e.handle(&Action::First);
        e.handle(&Action::Right);
        e.handle(&Action::Input('X'));
        assert_eq!(e.text(), "cXifar data");
        e.handle(&Action::Last);
        e.handle(&Action::KillWord);
        assert_eq!(e.text(), "cXifar ");
        e.handle(&Action::KillWord);
        assert_eq!(e.text(), "", "blanks, then the word before them");
        let mut e = typed("abc def");
        for _ in 0..4 {
            e.handle(&Action::Left);
        }
        e.handle(&Action::KillToStart);
        assert_eq!((e.text(), e.cursor()), (" def", 0));
        e.handle(&Action::DeleteForward);
        e.handle(&Action::Right);
        e.handle(&Action::KillToEnd);
        assert_eq!(e.text(), "d");
        // Multi-byte text keeps char positions.
        let mut e = typed("Δx→y");
        e.handle(&Action::Left);
        e.handle(&Action::Backspace);
        assert_eq!(e.text(), "Δxy");
        assert_eq!(e.split(), ("Δx", Some('y'), ""));
        assert!(!e.handle(&Action::Select), "Enter is the caller's");
    }

    #[test]
    fn tab_completes_paths_and_home_expands() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cifar-10-batches-bin")).unwrap();
        std::fs::write(dir.path().join("cifar.tgz"), b"").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"").unwrap();
        let base = format!("{}/", dir.path().display());
        let mut e = LineEdit::new(format!("{base}ci"));
        match e.complete_path() {
            Completion::Several(names) => {
                assert_eq!(names, ["cifar-10-batches-bin/", "cifar.tgz"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.text(), format!("{base}cifar"));
        e.handle(&Action::Input('-'));
        assert_eq!(e.complete_path(), Completion::One);
        assert_eq!(e.text(), format!("{base}cifar-10-batches-bin/"));
        let mut e = LineEdit::new(format!("{base}zz"));
        assert_eq!(e.complete_path(), Completion::None);
        assert_eq!(e.text(), format!("{base}zz"));
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expanded("~/data"), format!("{home}/data"));
        assert_eq!(expanded("synthetic"), "synthetic");
        assert_eq!(expand_home("~"), PathBuf::from(&home));
    }
}
