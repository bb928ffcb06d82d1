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

pub mod progress;
pub use progress::{
    overview, read_plan, read_progress, read_record, Overview, PlanEntry, PointProgress,
    PointStatus, Progress, SweepReadError, SweepRecord, SweepStatus,
};

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
    /// Named bundles of settings that go together (`[[cases]]` with a `label` and dotted keys):
    /// one more axis, outermost. Each point of a case takes the label as its `description`, so
    /// `cptlab compare --by description` groups by case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<Case>,
}

/// One `[[cases]]` entry: a label and the overrides it stands for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub label: String,
    /// Dotted config keys and their values (`"optimizer.kind" = "adam"`).
    #[serde(flatten)]
    pub set: BTreeMap<String, toml::Value>,
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
    for (i, c) in file.cases.iter().enumerate() {
        if c.label.trim().is_empty() {
            bail!("cases[{i}].label: every case needs a label (its group's name)");
        }
        if file.cases[..i].iter().any(|o| o.label == c.label) {
            bail!(
                "cases[{i}].label {:?}: two cases have this label; labels name groups",
                c.label
            );
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
    // The cases are the outermost axis: a case's settings come first (an axis can still
    // override one of them), and its label is the point's description.
    let cases: Vec<Option<&Case>> = if file.cases.is_empty() {
        vec![None]
    } else {
        file.cases.iter().map(Some).collect()
    };
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
    for case in &cases {
        for combo in &combos {
            for &seed in &seeds {
                let index = points.len();
                let label = describe(*case, combo, seed);
                let mut o: Vec<Override> = Vec::new();
                if let Some(c) = case {
                    o.extend(c.set.iter().map(|(k, v)| Override::new(k, v.clone())));
                    o.push(Override::new("description", c.label.clone().into()));
                }
                o.extend(combo.iter().map(|(k, v)| Override::new(k, v.clone())));
                o.push(Override::new("seed", toml::Value::Integer(seed as i64)));
                o.push(Override::new("name", format!("{name}-p{index:03}").into()));
                let config = base
                    .with_overrides(&o)
                    .with_context(|| format!("point {index} ({label})"))?;
                config
                    .validate()
                    .with_context(|| format!("point {index} ({label})"))?;
                points.push(Point {
                    index,
                    label,
                    config,
                });
            }
        }
    }
    Ok(Plan { name, points })
}

fn describe(case: Option<&Case>, combo: &[(String, toml::Value)], seed: u64) -> String {
    let mut parts: Vec<String> = combo
        .iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    if let Some(c) = case {
        // A case shows as its label, not as the settings it stands for.
        parts.insert(0, format!("case={}", c.label));
    }
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
    /// A run directory with the point's name whose recorded config differs from the point's
    /// (the sweep file changed since: another seed count or axis renumbers the points). Never
    /// skipped or resumed: that would mix another configuration into the sweep.
    Mismatch { dir: PathBuf, fields: Vec<String> },
}

/// Config fields a point's run may have changed without being another point: where it trains.
fn may_differ(key: &str) -> bool {
    key.starts_with("devices.")
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
    if let Ok(recorded) = store::read_config(&dir) {
        // A run records its data source resolved (an absolute path; CPTLAB_DATA or the
        // default when the config names none): compare it resolved the same way.
        let mut want = point.config.clone();
        want.data.source = match &want.data.source {
            Some(s) => Some(match std::fs::canonicalize(s) {
                Ok(abs) if Path::new(s).exists() => abs.display().to_string(),
                _ => s.clone(),
            }),
            None => recorded.data.source.clone(),
        };
        let fields: Vec<String> = crate::config::diff::differing_fields(&[&recorded, &want])
            .into_iter()
            .map(|f| f.key)
            .filter(|k| !may_differ(k))
            .collect();
        if !fields.is_empty() {
            return PointState::Mismatch { dir, fields };
        }
    }
    match store::read_summary_if_present(&dir) {
        Ok(Some(s)) if s.status == RunStatus::Stopped => PointState::Interrupted(dir),
        Ok(Some(s)) => PointState::Ended(s.status, dir),
        Ok(None) => PointState::Interrupted(dir),
        Err(_) => PointState::Ended(RunStatus::Failed, dir),
    }
}

/// `--point-devices`: the devices points are spread over, one point per device at a time.
/// Entries are `cuda:K` (or a bare `K` after a `cuda:` entry, as in `cuda:0,1`) or `cpu`; each
/// comes back as the single-device spec a point's `devices.devices` takes.
pub fn parse_point_devices(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',').map(str::trim) {
        let spec = if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            match out.last() {
                Some(prev) if prev.starts_with("cuda:") => format!("cuda:{part}"),
                _ => bail!(
                    "--point-devices {list}: {part:?} is a bare GPU index without a cuda: entry before it; expected e.g. cuda:0,cuda:1"
                ),
            }
        } else {
            match crate::config::DeviceSpec::parse(part) {
                Ok(crate::config::DeviceSpec::Cuda(ids)) if ids.len() == 1 => {
                    format!("cuda:{}", ids[0])
                }
                Ok(crate::config::DeviceSpec::Cpu { workers: 1 }) => "cpu".to_string(),
                Ok(crate::config::DeviceSpec::Auto) => bail!(
                    "--point-devices {list}: auto is not one device; name each (cuda:K or cpu)"
                ),
                Ok(_) => bail!(
                    "--point-devices {list}: {part:?} names several devices; each entry is one device a point runs on (cuda:K or cpu)"
                ),
                Err(e) => bail!("--point-devices {list}: {e}"),
            }
        };
        if spec != "cpu" && out.contains(&spec) {
            bail!("--point-devices {list}: {spec} is listed twice");
        }
        out.push(spec);
    }
    Ok(out)
}

/// Intra-op threads for each of `parallel` CPU points trained at once on `cores` cores, a point
/// having `workers` CPU workers: the cores split evenly, at least one thread each.
pub fn split_threads(cores: usize, parallel: usize, workers: usize) -> usize {
    (cores / (parallel.max(1) * workers.max(1))).max(1)
}

/// Refuses a sweep whose points' run directories were recorded with other configs (see
/// [`PointState::Mismatch`]), naming the points, the directories and the fields.
pub fn check_points(sweep_dir: &Path, plan: &Plan) -> Result<()> {
    let bad: Vec<String> = plan
        .points
        .iter()
        .filter_map(|p| match point_state(sweep_dir, p) {
            PointState::Mismatch { dir, fields } => Some(format!(
                "point {} ({}): {} was recorded with other values of {}",
                p.index,
                p.label,
                dir.display(),
                fields.join(", ")
            )),
            _ => None,
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "the sweep file changed since {} was run (its points are numbered anew): {}; give the sweep another name, or move the old runs away",
            sweep_dir.display(),
            bad.join("; ")
        );
    }
    Ok(())
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
    fn cases_are_the_outer_axis_and_label_their_points() {
        let f: SweepFile = toml::from_str(
            r#"
name = "ds"
seeds = 2
[axes]
"train.batch_size" = [16, 32]
[[cases]]
label = "SGD (normal)"
"optimizer.kind" = "sgd"
"optimizer.lr" = 0.001
[[cases]]
label = "Adam + WarmupLR, bf16, 2 workers"
"optimizer.kind" = "adam"
"lr_schedule.kind" = "warmup_lr"
"lr_schedule.warmup_num_steps" = 10
"precision.mode" = "bf16"
"devices.devices" = "cpu:2"
"#,
        )
        .unwrap();
        let plan = expand(&f, &quickstart()).unwrap();
        assert_eq!(plan.points.len(), 2 * 2 * 2);
        let p0 = &plan.points[0];
        assert!(p0
            .label
            .starts_with("case=SGD (normal), train.batch_size=16, seed="));
        assert_eq!(p0.config.description, "SGD (normal)");
        assert_eq!(p0.config.optimizer.kind_name(), "sgd");
        let p7 = &plan.points[7];
        assert!(
            p7.label
                .starts_with("case=Adam + WarmupLR, bf16, 2 workers, train.batch_size=32"),
            "{}",
            p7.label
        );
        assert_eq!(p7.config.optimizer.kind_name(), "adam");
        assert_eq!(p7.config.precision.mode, crate::config::PrecisionMode::Bf16);
        assert_eq!(p7.config.train.batch_size, 32);
        // A case without a label, or two with one label, is refused naming the entry.
        let f: SweepFile = toml::from_str("[[cases]]\nlabel = \"\"\n").unwrap();
        let e = format!("{:#}", expand(&f, &quickstart()).unwrap_err());
        assert!(e.contains("cases[0].label"), "{e}");
        let f: SweepFile =
            toml::from_str("[[cases]]\nlabel = \"a\"\n[[cases]]\nlabel = \"a\"\n").unwrap();
        let e = format!("{:#}", expand(&f, &quickstart()).unwrap_err());
        assert!(e.contains("cases[1].label"), "{e}");
        // A case's bad value names the point and the case.
        let f: SweepFile =
            toml::from_str("[[cases]]\nlabel = \"neg\"\n\"optimizer.lr\" = -1.0\n").unwrap();
        let e = format!("{:#}", expand(&f, &quickstart()).unwrap_err());
        assert!(e.contains("point 0 (case=neg"), "{e}");
    }

    #[test]
    fn point_devices_and_thread_splits() {
        assert_eq!(
            parse_point_devices("cuda:0,cuda:1").unwrap(),
            ["cuda:0", "cuda:1"]
        );
        assert_eq!(
            parse_point_devices("cuda:2, 3").unwrap(),
            ["cuda:2", "cuda:3"]
        );
        assert_eq!(parse_point_devices("cpu,cpu").unwrap(), ["cpu", "cpu"]);
        for (bad, says) in [
            ("cuda:0,cuda:0", "listed twice"),
            ("1,2", "bare GPU index"),
            ("cpu:2", "several devices"),
            ("tpu", "not a device"),
        ] {
            let e = parse_point_devices(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(split_threads(16, 4, 1), 4);
        assert_eq!(split_threads(16, 4, 2), 2);
        assert_eq!(split_threads(2, 4, 1), 1);
        assert_eq!(split_threads(2, 0, 0), 2);
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
