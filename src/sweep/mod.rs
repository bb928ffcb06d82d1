//! Sweeps: a base config, axes of values over any config field, and seeds, expanded into one run
//! per point. The plan is pure data (no tensors); running it is the CLI's (`cli::sweep`), one
//! point after another, each point a run directory inside the sweep's directory, found again by
//! its name on a rerun (finished points are skipped, interrupted ones resumed).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::presets::{PresetStore, DEFAULT_PRESET};
use crate::config::{Override, RunConfig};
use crate::files;
use crate::telemetry::store::{self, CONFIG_FILE};
use crate::telemetry::RunStatus;

/// The plan file every sweep directory holds (the expanded points, for the record).
pub const PLAN_FILE: &str = "plan.toml";
/// One JSON line per point started or ended.
pub const PROGRESS_FILE: &str = "sweep.jsonl";

/// A sweep file (TOML).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The sweep's name: its directory under the runs directory.
    #[serde(default)]
    pub name: Option<String>,
    /// A preset to start from (default quickstart) ...
    #[serde(default)]
    pub preset: Option<String>,
    /// ... or a config file (relative to the sweep file).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Overrides every point takes (`"train.max_steps" = 200`).
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    /// The axes: a dotted config key and its values; the points are their product.
    #[serde(default)]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
    /// `3` (seeds 0, 1, 2 added to the base seed) or a list of seeds.
    #[serde(default)]
    pub seeds: Option<Seeds>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

impl SweepFile {
    pub fn read(path: &Path) -> Result<SweepFile> {
        let bytes = files::read_regular(path)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
        let mut f: SweepFile = toml::from_str(&text)
            .with_context(|| format!("{}: not a sweep file", path.display()))?;
        if let Some(c) = &f.config {
            if c.is_relative() {
                f.config = Some(path.parent().unwrap_or(Path::new(".")).join(c));
            }
        }
        Ok(f)
    }
}

/// One point of a sweep: its overrides (axes and seed) and the config they give.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub index: usize,
    /// `key=value` of each axis, `seed=N` last.
    pub label: String,
    pub config: RunConfig,
}

/// A sweep expanded.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub points: Vec<Point>,
}

/// Expands `file` over `base` (the resolved base config: preset or file plus any flags).
pub fn expand(file: &SweepFile, base: &RunConfig) -> Result<Plan> {
    let fixed: Vec<Override> = file
        .set
        .iter()
        .map(|(k, v)| Override::new(k, v.clone()))
        .collect();
    let base = base
        .with_overrides(&fixed)
        .context("the sweep's [set] table")?;
    for (k, vs) in &file.axes {
        if vs.is_empty() {
            bail!("axes.{k}: an axis needs at least one value");
        }
    }
    let seeds: Vec<u64> = match &file.seeds {
        None => vec![base.seed],
        Some(Seeds::Count(0)) => bail!("seeds = 0: a sweep needs at least one seed"),
        Some(Seeds::Count(n)) => (0..*n).map(|i| base.seed + i).collect(),
        Some(Seeds::List(l)) if l.is_empty() => bail!("seeds = []: give at least one seed"),
        Some(Seeds::List(l)) => l.clone(),
    };
    let name = file
        .name
        .clone()
        .unwrap_or_else(|| format!("sweep-{}", base.name));
    let axes: Vec<(&String, &Vec<toml::Value>)> = file.axes.iter().collect();
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (k, vs) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vs.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(((*k).clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let mut points = Vec::new();
    for combo in &combos {
        for &seed in &seeds {
            let index = points.len();
            let mut o: Vec<Override> = combo
                .iter()
                .map(|(k, v)| Override::new(k, v.clone()))
                .collect();
            o.push(Override::new("seed", toml::Value::Integer(seed as i64)));
            o.push(Override::new("name", format!("{name}-p{index:03}").into()));
            let config = base
                .with_overrides(&o)
                .with_context(|| format!("point {index} ({})", describe(combo, seed)))?;
            config
                .validate()
                .with_context(|| format!("point {index} ({})", describe(combo, seed)))?;
            points.push(Point {
                index,
                label: describe(combo, seed),
                config,
            });
        }
    }
    Ok(Plan { name, points })
}

fn describe(combo: &[(String, toml::Value)], seed: u64) -> String {
    let mut parts: Vec<String> = combo
        .iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    parts.push(format!("seed={seed}"));
    parts.join(", ")
}

/// The base config of a sweep file: its preset or config.
pub fn base_config(file: &SweepFile, presets: &PresetStore) -> Result<RunConfig> {
    Ok(match (&file.config, &file.preset) {
        (Some(_), Some(_)) => bail!("a sweep file names either preset or config, not both"),
        (Some(c), None) => RunConfig::from_file(c)?,
        (None, Some(p)) => presets.load(p)?,
        (None, None) => presets.load(DEFAULT_PRESET)?,
    })
}

/// What a point's directory says on a rerun.
#[derive(Debug, Clone, PartialEq)]
pub enum PointState {
    /// No run directory yet.
    New,
    /// Ended with this status (finished points are skipped; failed/diverged ones are recorded
    /// and not retried).
    Ended(RunStatus, PathBuf),
    /// Started, no ending recorded (stopped counts here too): resumed from its checkpoint.
    Interrupted(PathBuf),
}

/// Finds each point's run directory in the sweep directory by the point's name.
pub fn point_state(sweep_dir: &Path, point: &Point) -> PointState {
    let Ok(rd) = std::fs::read_dir(sweep_dir) else {
        return PointState::New;
    };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(CONFIG_FILE).is_file())
        .filter(|p| store::read_config(p).is_ok_and(|c| c.name == point.config.name))
        .collect();
    found.sort();
    // The newest attempt counts.
    let Some(dir) = found.pop() else {
        return PointState::New;
    };
    match store::read_summary_if_present(&dir) {
        Ok(Some(s)) if s.status == RunStatus::Stopped => PointState::Interrupted(dir),
        Ok(Some(s)) => PointState::Ended(s.status, dir),
        Ok(None) => PointState::Interrupted(dir),
        Err(_) => PointState::Ended(RunStatus::Failed, dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quickstart() -> RunConfig {
        PresetStore::new(Path::new("/nonexistent"))
            .load(DEFAULT_PRESET)
            .unwrap()
    }

    #[test]
    fn axes_times_seeds_in_order_with_names_and_labels() {
        let f: SweepFile = toml::from_str(
            r#"
name = "cpt"
seeds = 2
[set]
"train.max_steps" = 20
[axes]
"optimizer.lr" = [0.1, 0.2]
"precision.schedule.kind" = ["CR", "static"]
"#,
        )
        .unwrap();
        let base = quickstart();
        let plan = expand(&f, &base).unwrap();
        assert_eq!(plan.points.len(), 2 * 2 * 2);
        let labels: Vec<&str> = plan.points.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels[0],
            format!(
                "optimizer.lr=0.1, precision.schedule.kind=CR, seed={}",
                base.seed
            )
        );
        assert_eq!(
            labels[1],
            format!(
                "optimizer.lr=0.1, precision.schedule.kind=CR, seed={}",
                base.seed + 1
            )
        );
        assert!(labels[7].starts_with("optimizer.lr=0.2, precision.schedule.kind=static"));
        for (i, p) in plan.points.iter().enumerate() {
            assert_eq!(p.index, i);
            assert_eq!(p.config.name, format!("cpt-p{i:03}"));
            assert_eq!(p.config.train.max_steps, Some(20));
        }
        assert_eq!(plan.points[7].config.optimizer.lr(), 0.2);
        // Expansion is deterministic: the same file gives the same points (what a rerun finds).
        let again = expand(&f, &base).unwrap();
        assert_eq!(again.points, plan.points);
    }

    #[test]
    fn bad_sweeps_name_the_point_or_the_field() {
        let base = quickstart();
        let f: SweepFile = toml::from_str("[axes]\n\"optimizer.lr\" = [0.1, -1.0]\n").unwrap();
        let e = format!("{:#}", expand(&f, &base).unwrap_err());
        assert!(
            e.contains("point 1") && e.contains("optimizer.lr=-1"),
            "{e}"
        );
        let f: SweepFile = toml::from_str("seeds = 0\n").unwrap();
        assert!(expand(&f, &base).is_err());
        let f: SweepFile = toml::from_str("[axes]\n\"optimizer.lr\" = []\n").unwrap();
        assert!(format!("{:#}", expand(&f, &base).unwrap_err()).contains("axes.optimizer.lr"));
        assert!(toml::from_str::<SweepFile>("axis = 1\n").is_err());
        // No axes: one point per seed.
        let f: SweepFile = toml::from_str("seeds = [5, 9]\n").unwrap();
        let plan = expand(&f, &base).unwrap();
        assert_eq!(
            plan.points
                .iter()
                .map(|p| p.config.seed)
                .collect::<Vec<_>>(),
            [5, 9]
        );
    }
}
