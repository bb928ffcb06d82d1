//! `e` on Setup: the whole resolved config as TOML in the user's editor (`$EDITOR`, then
//! `$VISUAL`, then `vi`), with the terminal handed over as Ctrl-Z does. On return the text is
//! parsed and validated (`RunConfig::validate`); Setup takes a config that passes. One that
//! does not is never lost: the text stays in `setup-edit.toml` in the data directory, and the
//! next `e` reopens it with the error as a leading `#` comment.
use std::path::{Path, PathBuf};

use crate::config::paths::Paths;
use crate::config::RunConfig;

/// The edited text's file, beside the remembered Setup (`tui-state.toml`).
pub const EDIT_FILE: &str = "setup-edit.toml";
/// Every comment line this module writes starts with it, so a reopened file sheds the old ones.
const MARK: &str = "# cptlab:";

pub fn edit_path(paths: &Paths) -> PathBuf {
    super::state::state_path(paths).with_file_name(EDIT_FILE)
}

/// The editor to run: `$EDITOR`, then `$VISUAL` (the first that is set and not blank), then `vi`.
pub fn editor_command(editor: Option<&str>, visual: Option<&str>) -> String {
    [editor, visual]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|e| !e.is_empty())
        .unwrap_or("vi")
        .to_string()
}

/// The editor from the environment.
pub fn editor_from_env() -> String {
    let get = |k: &str| std::env::var(k).ok();
    editor_command(get("EDITOR").as_deref(), get("VISUAL").as_deref())
}

/// The text without this module's comment lines at its top.
fn user_text(text: &str) -> String {
    let mut lines = text.lines().peekable();
    while lines.next_if(|l| l.starts_with(MARK)).is_some() {}
    let mut out: Vec<&str> = lines.collect();
    if text.ends_with('\n') {
        out.push("");
    }
    out.join("\n")
}

/// Writes the file the editor opens: the text a failed edit left (it exists only then: a
/// taken edit removes it), with the error on top, or else `config` as TOML under a header.
pub fn prepare(path: &Path, config: &RunConfig, error: Option<&str>) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(kept) => {
            let mut head = String::new();
            let why = error.unwrap_or("an earlier edit was not taken");
            for l in why.lines() {
                head.push_str(&format!("{MARK} error: {l}\n"));
            }
            head.push_str(&format!(
                "{MARK} fix it, save and quit to take it (these lines are ignored)\n"
            ));
            head + &user_text(&kept)
        }
        Err(_) => format!(
            "{MARK} the Setup's whole config. Save and quit to take it; an error keeps your text.\n{}",
            config.to_toml()
        ),
    };
    super::state::save(path, &text)
}

/// Runs `editor` on `path` and waits for it (through `sh`, so `EDITOR="code -w"` works).
pub fn run_editor(editor: &str, path: &Path) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .map_err(|e| format!("cannot run the editor `{editor}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the editor `{editor}` exited with {status}; Setup is unchanged"
        ))
    }
}

/// Reads the edited file back: the config if it parses and validates, else the error (the
/// parser's names the line; validation's names the field, the value and what was expected).
pub fn read_back(path: &Path) -> Result<RunConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::files::FileError::new("read", path, e).to_string())?;
    // Parsed whole (comments are TOML too), so the parser's line numbers are the editor's.
    let cfg = RunConfig::from_toml_str(&text, EDIT_FILE).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_then_visual_then_vi() {
        assert_eq!(editor_command(Some("nano"), Some("code -w")), "nano");
        assert_eq!(editor_command(Some(" "), Some("code -w")), "code -w");
        assert_eq!(editor_command(None, None), "vi");
    }

    #[test]
    fn old_error_lines_are_shed() {
        let t = format!("{MARK} error: x\n{MARK} fix it\nname = \"a\"\n");
        assert_eq!(user_text(&t), "name = \"a\"\n");
        assert_eq!(user_text("# mine\nx = 1"), "# mine\nx = 1");
    }
}
