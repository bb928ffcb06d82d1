//! The workbench's remembered Setup: the form as the user left it (every field as typed, the
//! config it resolves to, the preset it came from), written atomically to a state file in the
//! data directory whenever it changes and at quit, and restored at the next start. A state file
//! that cannot be read is reported and ignored, never fatal.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::paths::Paths;
use crate::config::RunConfig;

/// The state file's name, beside the runs directory (in the data directory).
pub const STATE_FILE: &str = "tui-state.toml";
/// Bumped when the layout changes; another version is ignored like a corrupt file.
pub const VERSION: u32 = 1;

/// Where the state file lives: the data directory, the parent of the runs directory (a runs
/// directory without a parent keeps it inside).
pub fn state_path(paths: &Paths) -> PathBuf {
    let dir = match paths.runs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => paths.runs.clone(),
    };
    dir.join(STATE_FILE)
}

/// What is remembered of Setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSetup {
    pub version: u32,
    /// The preset the form was loaded from (the "modified" marker compares with it).
    pub preset: String,
    /// Every field as the user typed it, valid or not, by `Field::key`.
    pub fields: BTreeMap<String, String>,
    /// The config the form resolves to (the preset's, where a field does not parse): what the
    /// form does not show comes from here.
    pub config: RunConfig,
}

impl SavedSetup {
    pub fn to_text(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!("# The workbench's last Setup, restored at start (safe to delete).\n{body}")
    }

    pub fn from_text(text: &str) -> Result<SavedSetup, String> {
        let s: SavedSetup = toml::from_str(text).map_err(|e| e.to_string())?;
        if s.version != VERSION {
            return Err(format!(
                "version {} (this build writes {VERSION})",
                s.version
            ));
        }
        Ok(s)
    }
}

/// Reads the state file: `Ok(None)` when there is none, an error in words (naming the file)
/// when it exists but cannot be used.
pub fn load(path: &Path) -> Result<Option<SavedSetup>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::files::FileError::new("read", path, e).to_string());
        }
    };
    SavedSetup::from_text(&text)
        .map(Some)
        .map_err(|e| format!("{}: {}", path.display(), e.trim()))
}

/// Writes the state file atomically (the data directory is created if needed).
pub fn save(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::files::FileError::new("create", dir, e).to_string())?;
    }
    crate::files::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_sits_beside_the_runs_directory() {
        let p = Paths {
            runs: "/data/cptlab/runs".into(),
            presets: "/cfg/presets".into(),
            cache: "/cache".into(),
        };
        assert_eq!(state_path(&p), Path::new("/data/cptlab/tui-state.toml"));
    }

    #[test]
    fn a_missing_file_is_none_and_garbage_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(STATE_FILE);
        assert_eq!(load(&path), Ok(None));
        std::fs::write(&path, "preset = [").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains(STATE_FILE), "{e}");
    }
}
