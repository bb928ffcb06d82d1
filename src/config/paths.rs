//! Where cptlab keeps things: runs under the data dir, presets under the config dir, decoded
//! datasets under the cache dir. Each can be overridden (flag or environment variable).
use std::path::PathBuf;

use directories::ProjectDirs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub runs: PathBuf,
    pub presets: PathBuf,
    pub cache: PathBuf,
}

/// Overrides from the command line; `None` falls back to `CPTLAB_RUNS_DIR`,
/// `CPTLAB_PRESETS_DIR`, `CPTLAB_CACHE_DIR`, then the platform's directories.
#[derive(Debug, Clone, Default)]
pub struct PathOverrides {
    pub runs: Option<PathBuf>,
    pub presets: Option<PathBuf>,
    pub cache: Option<PathBuf>,
}

impl Paths {
    pub fn resolve(o: &PathOverrides) -> Paths {
        let dirs = ProjectDirs::from("org", "cptlab", "cptlab");
        let pick = |flag: &Option<PathBuf>, env: &str, platform: fn(&ProjectDirs) -> PathBuf| {
            flag.clone()
                .or_else(|| {
                    std::env::var_os(env)
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                })
                .or_else(|| dirs.as_ref().map(platform))
                .unwrap_or_else(|| PathBuf::from(".cptlab"))
        };
        Paths {
            runs: pick(&o.runs, "CPTLAB_RUNS_DIR", |d| d.data_dir().join("runs")),
            presets: pick(&o.presets, "CPTLAB_PRESETS_DIR", |d| {
                d.config_dir().join("presets")
            }),
            cache: pick(&o.cache, "CPTLAB_CACHE_DIR", |d| {
                d.cache_dir().to_path_buf()
            }),
        }
    }
}
