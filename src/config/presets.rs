//! Presets: named `RunConfig`s. Built-in ones are compiled into the binary from `presets/`;
//! the user's live as `<name>.toml` in the presets directory and win on a name clash.
use std::path::{Path, PathBuf};

use super::{ConfigError, RunConfig};

/// The presets shipped in `presets/`, embedded so the binary works from anywhere.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("quickstart", include_str!("../../presets/quickstart.toml")),
    ("lenet-sgd", include_str!("../../presets/lenet-sgd.toml")),
    (
        "lenet-adam-warmup",
        include_str!("../../presets/lenet-adam-warmup.toml"),
    ),
    (
        "resnet18-sgd",
        include_str!("../../presets/resnet18-sgd.toml"),
    ),
    ("vit-adam", include_str!("../../presets/vit-adam.toml")),
    (
        "resnet20-cpt-cr",
        include_str!("../../presets/resnet20-cpt-cr.toml"),
    ),
    (
        "resnet20-static8",
        include_str!("../../presets/resnet20-static8.toml"),
    ),
    (
        "lenet-deepspeed-fp16",
        include_str!("../../presets/lenet-deepspeed-fp16.toml"),
    ),
];

pub const DEFAULT_PRESET: &str = "quickstart";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    User(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PresetEntry {
    pub name: String,
    pub origin: Origin,
    /// The parsed config, or why it does not parse (a broken user file is listed, not hidden).
    pub config: Result<RunConfig, String>,
    /// A built-in preset of the same name that this user preset shadows.
    pub shadows_built_in: bool,
}

pub struct PresetStore {
    dir: PathBuf,
}

impl PresetStore {
    pub fn new(dir: impl Into<PathBuf>) -> PresetStore {
        PresetStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn user_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// All presets, user ones first where they shadow a built-in, sorted by name.
    pub fn list(&self) -> Vec<PresetEntry> {
        let mut out: Vec<PresetEntry> = Vec::new();
        let mut user_names = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for entry in rd.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                // Hidden files are not presets (valid names never start with '.'), and neither
                // is the temporary file of a save in progress or one a kill interrupted.
                if name.starts_with('.') {
                    continue;
                }
                user_names.push(name.to_string());
                out.push(PresetEntry {
                    name: name.to_string(),
                    config: RunConfig::from_file(&path).map_err(|e| e.to_string()),
                    shadows_built_in: BUILT_IN.iter().any(|(n, _)| *n == name),
                    origin: Origin::User(path),
                });
            }
        }
        for (name, text) in BUILT_IN {
            if !user_names.iter().any(|n| n == name) {
                out.push(PresetEntry {
                    name: name.to_string(),
                    origin: Origin::BuiltIn,
                    config: RunConfig::from_toml_str(text, &format!("built-in preset {name}"))
                        .map_err(|e| e.to_string()),
                    shadows_built_in: false,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The preset called `name`: the user's file if there is one, else the built-in.
    pub fn load(&self, name: &str) -> Result<RunConfig, ConfigError> {
        let path = self.user_path(name);
        if path.is_file() {
            return RunConfig::from_file(&path);
        }
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
            return RunConfig::from_toml_str(text, &format!("built-in preset {name}"));
        }
        let names: Vec<String> = self.list().into_iter().map(|p| p.name).collect();
        Err(ConfigError::Other(format!(
            "no preset named {name:?}; known presets: {}",
            names.join(", ")
        )))
    }

    /// The TOML text of a preset as stored.
    pub fn text(&self, name: &str) -> Result<String, ConfigError> {
        let path = self.user_path(name);
        if path.is_file() {
            return std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Other(format!("cannot read {}: {e}", path.display())));
        }
        BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| ConfigError::Other(format!("no preset named {name:?}")))
    }

    /// Saves `config` as the user preset `name`, atomically. Refuses to replace an existing user
    /// preset unless `overwrite` is set, so nothing is lost silently.
    pub fn save(
        &self,
        name: &str,
        config: &RunConfig,
        overwrite: bool,
    ) -> Result<PathBuf, ConfigError> {
        validate_name(name)?;
        let path = self.user_path(name);
        if path.exists() && !overwrite {
            return Err(ConfigError::Other(format!(
                "preset {name:?} already exists at {}; choose another name or overwrite it explicitly",
                path.display()
            )));
        }
        let other = |e: crate::files::FileError| ConfigError::Other(e.to_string());
        crate::files::create_dir_all(&self.dir).map_err(other)?;
        // What saves interrupted by a kill left behind.
        crate::files::clean_stale_temps(&self.dir).map_err(other)?;
        let mut named = config.clone();
        named.name = name.to_string();
        crate::files::write_atomic(&path, named.to_toml().as_bytes()).map_err(other)?;
        Ok(path)
    }

    /// Deletes a user preset (built-ins cannot be deleted).
    pub fn delete(&self, name: &str) -> Result<(), ConfigError> {
        let path = self.user_path(name);
        if !path.is_file() {
            return Err(ConfigError::Other(format!(
                "no user preset named {name:?} in {} (built-in presets cannot be deleted)",
                self.dir.display()
            )));
        }
        std::fs::remove_file(&path)
            .map_err(|e| ConfigError::Other(format!("cannot delete {}: {e}", path.display())))
    }
}

/// Whether `name` can name a user preset (its file is `<name>.toml`).
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field: "preset name".into(),
            value: format!("{name:?}"),
            expected: "1-64 characters of letters, digits, '-', '_' or '.', not starting with '.'"
                .into(),
        })
    }
}

/// A valid preset name close to `name`: runs of other characters become one '-', leading dots
/// and dashes go, and it is cut to 64 characters (None when nothing usable is left).
pub fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out
        .trim_start_matches(['.', '-'])
        .trim_end_matches('-')
        .chars()
        .take(64)
        .collect();
    validate_name(&out).is_ok().then_some(out)
}

/// Whether a built-in preset is called `name` (a user preset of that name shadows it).
pub fn is_built_in(name: &str) -> bool {
    BUILT_IN.iter().any(|(n, _)| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_suggested_from_what_was_typed() {
        assert_eq!(suggest_name("my run").as_deref(), Some("my-run"));
        assert_eq!(
            suggest_name(" CR 3/8 bits ").as_deref(),
            Some("CR-3-8-bits")
        );
        assert_eq!(suggest_name(".hidden").as_deref(), Some("hidden"));
        assert_eq!(suggest_name("ok-name").as_deref(), Some("ok-name"));
        assert_eq!(suggest_name("  /// ").as_deref(), None);
        assert!(suggest_name(&"x".repeat(100)).is_some_and(|n| n.len() == 64));
        assert!(is_built_in("quickstart") && !is_built_in("mine"));
    }

    #[test]
    fn every_built_in_preset_parses_and_validates() {
        for (name, text) in BUILT_IN {
            let c = RunConfig::from_toml_str(text, name).unwrap();
            assert_eq!(&c.name, name, "preset file name and `name` agree");
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn user_preset_wins_and_save_never_overwrites_silently() {
        let dir = tempfile::tempdir().unwrap();
        let store = PresetStore::new(dir.path());
        let mut c = store.load("quickstart").unwrap();
        c.seed = 7;
        store.save("quickstart", &c, false).unwrap();
        assert_eq!(store.load("quickstart").unwrap().seed, 7);
        let e = store.save("quickstart", &c, false).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        store.save("quickstart", &c, true).unwrap();
        let listed = store.list();
        let q = listed.iter().find(|p| p.name == "quickstart").unwrap();
        assert!(q.shadows_built_in && matches!(q.origin, Origin::User(_)));
        store.delete("quickstart").unwrap();
        assert_eq!(store.load("quickstart").unwrap().seed, 42);
        assert!(store.delete("quickstart").is_err());
        assert!(store.save("../evil", &c, false).is_err());
    }

    #[test]
    fn save_cleans_interrupted_saves_and_says_why_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = PresetStore::new(dir.path());
        let c = store.load("quickstart").unwrap();
        // A save killed mid-write left this; it is neither a preset nor kept.
        let stale = dir.path().join(format!(
            "{}{}-9-0-mine.toml",
            crate::files::TEMP_PREFIX,
            u32::MAX
        ));
        std::fs::write(&stale, "name = ").unwrap();
        assert!(store.list().iter().all(|p| !p.name.starts_with('.')));
        store.save("mine", &c, false).unwrap();
        assert!(!stale.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let file = dir.path().join("mine.toml");
        let e = PresetStore::new(&file)
            .save("x", &c, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{} is not a directory", file.display())),
            "{e}"
        );
    }

    #[test]
    fn unknown_preset_lists_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = PresetStore::new(dir.path())
            .load("nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lenet-sgd"), "{e}");
    }
}
