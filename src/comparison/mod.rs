//! Comparing recorded runs: runs grouped by the config fields that vary between them (the seed
//! aside), each group's figures as a mean with a 95% Student t interval over its seeds, and each
//! group's seed-paired difference to a baseline group. Reads run directories; no tensors.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub mod plot;

use crate::config::diff::{differing_fields, fields};
use crate::config::RunConfig;
use crate::stats::{mean_ci, paired_difference, Estimate};
use crate::telemetry::store::{self, CONFIG_FILE};
use crate::telemetry::{RunStatus, Summary};

/// The confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// Fields that never define a group: what a run is called, and the seed groups average over.
const NOT_A_GROUP_KEY: [&str; 3] = ["name", "description", "seed"];

/// One run with what it recorded.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub summary: Summary,
}

/// The runs that `args` name: a run directory (or a run name under `runs_root`), or a folder of
/// run directories (a sweep). Runs without a summary (live, interrupted) are skipped and listed
/// in the returned warnings.
pub fn load(runs_root: &Path, args: &[String]) -> Result<(Vec<RunRecord>, Vec<String>)> {
    let mut dirs = Vec::new();
    for arg in args {
        match store::resolve_run_dir(runs_root, arg) {
            Ok(d) => dirs.push(d),
            Err(e) => {
                let folder = PathBuf::from(arg);
                let inner = run_dirs_in(&folder);
                if inner.is_empty() {
                    return Err(e);
                }
                dirs.extend(inner);
            }
        }
    }
    let mut runs = Vec::new();
    let mut warnings = Vec::new();
    for dir in dirs {
        if runs.iter().any(|r: &RunRecord| r.dir == dir) {
            continue;
        }
        let config = store::read_config(&dir).with_context(|| format!("{}", dir.display()))?;
        match store::read_summary_if_present(&dir)? {
            Some(summary) => runs.push(RunRecord {
                dir,
                config,
                summary,
            }),
            None => warnings.push(format!(
                "{}: no summary (live or interrupted); left out",
                dir.display()
            )),
        }
    }
    if runs.is_empty() {
        bail!("no finished runs to compare among {}", args.join(", "));
    }
    Ok((runs, warnings))
}

fn run_dirs_in(folder: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(CONFIG_FILE).is_file())
        .collect();
    v.sort();
    v
}

/// Runs with the same values of the grouping keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `key=value` of each grouping key, joined by `, ` (`all` when there are none).
    pub label: String,
    /// Indices into the runs.
    pub runs: Vec<usize>,
    pub stats: GroupStats,
}

/// A group's figures over its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    pub final_acc: Estimate,
    pub best_acc: Estimate,
    pub seconds_per_epoch: Estimate,
    pub gbitops: Estimate,
    pub gbitops_ratio: Estimate,
    /// Training seconds until the first evaluation at or above the target accuracy, over the
    /// runs that reached it (`reached` of them).
    pub time_to_target: Estimate,
    pub reached: usize,
    /// Runs that did not finish (stopped, diverged, failed).
    pub not_finished: usize,
}

/// A group's seed-paired difference to the baseline (`group − baseline`).
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub final_acc: Estimate,
    pub best_acc: Estimate,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub keys: Vec<String>,
    pub groups: Vec<Group>,
    pub baseline: usize,
    /// One per group; the baseline's own is a zero difference.
    pub paired: Vec<Paired>,
    pub target_acc: Option<f64>,
    /// Config fields that differ between the groups' first runs, with each group's value.
    pub config_diff: Vec<(String, Vec<String>)>,
}

/// Groups `runs` by `by` (dotted config keys), or when `by` is empty by every field whose value
/// varies between the runs apart from the seed. `baseline`: a group label (or a prefix of one);
/// default the first group.
pub fn compare(
    runs: &[RunRecord],
    by: &[String],
    baseline: Option<&str>,
    target_acc: Option<f64>,
) -> Result<Comparison> {
    let flat: Vec<BTreeMap<String, String>> = runs.iter().map(|r| fields(&r.config)).collect();
    let keys: Vec<String> = if by.is_empty() {
        let configs: Vec<&RunConfig> = runs.iter().map(|r| &r.config).collect();
        differing_fields(&configs)
            .into_iter()
            .map(|f| f.key)
            .filter(|k| !NOT_A_GROUP_KEY.contains(&k.as_str()))
            .collect()
    } else {
        for k in by {
            if !flat.iter().any(|f| f.contains_key(k)) {
                let known: Vec<&String> = flat[0].keys().collect();
                bail!(
                    "--by {k}: no run has this config field (fields are dotted keys such as {})",
                    known
                        .iter()
                        .take(4)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        by.to_vec()
    };
    // Groups in the order their first run appears.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, f) in flat.iter().enumerate() {
        let label = if keys.is_empty() {
            "all".to_string()
        } else {
            keys.iter()
                .map(|k| format!("{k}={}", f.get(k).map_or("-", |v| v.as_str())))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, members)) => members.push(i),
            None => groups.push((label, vec![i])),
        }
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|(label, members)| {
            let stats = group_stats(runs, &members, target_acc);
            Group {
                label,
                runs: members,
                stats,
            }
        })
        .collect();
    let baseline = match baseline {
        None => 0,
        Some(b) => {
            let hits: Vec<usize> = (0..groups.len())
                .filter(|&g| groups[g].label == b || groups[g].label.contains(b))
                .collect();
            match hits.as_slice() {
                [g] => *g,
                [] => bail!(
                    "--baseline {b}: no group matches; the groups are: {}",
                    labels(&groups)
                ),
                _ => bail!(
                    "--baseline {b}: several groups match ({}); give more of the label",
                    hits.iter()
                        .map(|&g| groups[g].label.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        }
    };
    let by_seed = |g: &Group, metric: fn(&Summary) -> Option<f64>| -> Vec<(u64, f64)> {
        g.runs
            .iter()
            .filter_map(|&i| metric(&runs[i].summary).map(|x| (runs[i].config.seed, x)))
            .collect()
    };
    let paired = groups
        .iter()
        .map(|g| Paired {
            final_acc: paired_difference(
                &by_seed(&groups[baseline], |s| s.final_test_acc),
                &by_seed(g, |s| s.final_test_acc),
                LEVEL,
            ),
            best_acc: paired_difference(
                &by_seed(&groups[baseline], |s| s.best_test_acc),
                &by_seed(g, |s| s.best_test_acc),
                LEVEL,
            ),
        })
        .collect();
    let firsts: Vec<&RunConfig> = groups.iter().map(|g| &runs[g.runs[0]].config).collect();
    let config_diff = differing_fields(&firsts)
        .into_iter()
        .filter(|f| f.key != "seed")
        .map(|f| {
            let vals = f
                .values
                .into_iter()
                .map(|v| v.unwrap_or_else(|| "-".into()))
                .collect();
            (f.key, vals)
        })
        .collect();
    Ok(Comparison {
        keys,
        groups,
        baseline,
        paired,
        target_acc,
        config_diff,
    })
}

fn labels(groups: &[Group]) -> String {
    groups
        .iter()
        .map(|g| g.label.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

fn group_stats(runs: &[RunRecord], members: &[usize], target: Option<f64>) -> GroupStats {
    let of = |f: &dyn Fn(&Summary) -> Option<f64>| -> Estimate {
        let xs: Vec<f64> = members
            .iter()
            .filter_map(|&i| f(&runs[i].summary))
            .collect();
        mean_ci(&xs, LEVEL)
    };
    let spe = |s: &Summary| {
        (!s.seconds_per_epoch.is_empty())
            .then(|| s.seconds_per_epoch.iter().sum::<f64>() / s.seconds_per_epoch.len() as f64)
    };
    let times: Vec<f64> = match target {
        None => Vec::new(),
        Some(t) => members
            .iter()
            .filter_map(|&i| time_to_accuracy(&runs[i].summary, t))
            .collect(),
    };
    GroupStats {
        final_acc: of(&|s| s.final_test_acc),
        best_acc: of(&|s| s.best_test_acc),
        seconds_per_epoch: of(&spe),
        gbitops: of(&|s| s.gbitops),
        gbitops_ratio: of(&|s| s.gbitops_ratio_vs_static),
        reached: times.len(),
        time_to_target: mean_ci(&times, LEVEL),
        not_finished: members
            .iter()
            .filter(|&&i| runs[i].summary.status != RunStatus::Finished)
            .count(),
    }
}

/// Training seconds until the end of the first epoch whose test accuracy reached `target`.
pub fn time_to_accuracy(s: &Summary, target: f64) -> Option<f64> {
    let epoch = s.test_acc_per_epoch.iter().position(|&a| a >= target)?;
    let secs = s.seconds_per_epoch.get(..=epoch)?;
    Some(secs.iter().sum())
}

/// A group's training curves: x in epochs (steps ÷ steps per epoch), each point the mean over the
/// group's runs that recorded it, with its 95% interval.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCurves {
    pub label: String,
    /// The training loss of the step events (each the mean over `train.log_every` steps).
    pub loss: Vec<(f64, Estimate)>,
    /// The test accuracy (a fraction) of the evaluations.
    pub test_acc: Vec<(f64, Estimate)>,
}

/// Every group's curves, in the comparison's group order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub groups: Vec<GroupCurves>,
}

/// One run's recorded curves, keyed by step: (steps per epoch, loss by step, accuracy by step).
type RunCurves = (u64, BTreeMap<u64, f64>, BTreeMap<u64, f64>);

fn run_curves(dir: &Path) -> Result<RunCurves> {
    use crate::telemetry::Event;
    let events = store::read_metrics(dir).with_context(|| format!("{}", dir.display()))?;
    let mut spe = 0;
    let (mut loss, mut acc) = (BTreeMap::new(), BTreeMap::new());
    for e in events {
        match e {
            Event::Started(s) => spe = s.steps_per_epoch,
            Event::Step(s) if s.loss.is_finite() => {
                loss.insert(s.step, s.loss);
            }
            // A later evaluation at the same step (an open epoch finished) replaces it.
            Event::Eval(e) if e.test_acc.is_finite() => {
                acc.insert(e.step, e.test_acc);
            }
            _ => {}
        }
    }
    if spe == 0 {
        bail!(
            "{}: metrics.jsonl has no started event (steps per epoch unknown)",
            dir.display()
        );
    }
    Ok((spe, loss, acc))
}

/// Reads the curves of every group of `c` from its runs' `metrics.jsonl`.
pub fn curves(c: &Comparison, runs: &[RunRecord]) -> Result<Curves> {
    let mut groups = Vec::new();
    for g in &c.groups {
        let recorded: Vec<RunCurves> = g
            .runs
            .iter()
            .map(|&i| run_curves(&runs[i].dir))
            .collect::<Result<_>>()?;
        let spe = recorded[0].0 as f64;
        let merge = |pick: fn(&RunCurves) -> &BTreeMap<u64, f64>| -> Vec<(f64, Estimate)> {
            let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for r in &recorded {
                for (&step, &v) in pick(r) {
                    at.entry(step).or_default().push(v);
                }
            }
            at.into_iter()
                .map(|(step, xs)| (step as f64 / spe, mean_ci(&xs, LEVEL)))
                .collect()
        };
        groups.push(GroupCurves {
            label: g.label.clone(),
            loss: merge(|r| &r.1),
            test_acc: merge(|r| &r.2),
        });
    }
    Ok(Curves { groups })
}

impl Comparison {
    /// The table as rows of cells, a header first: what the terminal, Markdown and CSV print.
    pub fn rows(&self) -> Vec<Vec<String>> {
        let pct = |e: &Estimate| scaled(e, 100.0, 2);
        let mut header: Vec<String> = [
            "group",
            "n",
            "final acc %",
            "best acc %",
            "Δ final vs baseline (paired)",
            "s/epoch",
            "GBitOps",
            "ratio vs static",
        ]
        .map(String::from)
        .to_vec();
        if let Some(t) = self.target_acc {
            header.push(format!("s to {:.1}%", t * 100.0));
        }
        let mut out = vec![header];
        for (g, group) in self.groups.iter().enumerate() {
            let s = &group.stats;
            let delta = if g == self.baseline {
                "baseline".to_string()
            } else {
                let d = &self.paired[g].final_acc;
                if d.n == 0 {
                    "no shared seeds".to_string()
                } else {
                    let mark = match d.sign() {
                        Some(true) => " (better)",
                        Some(false) => " (worse)",
                        None => "",
                    };
                    format!("{}{mark}", signed(d, 100.0, 2))
                }
            };
            let mut n = s.final_acc.n.max(group.runs.len()).to_string();
            if s.not_finished > 0 {
                n.push_str(&format!(" ({} unfinished)", s.not_finished));
            }
            let mut row = vec![
                group.label.clone(),
                n,
                pct(&s.final_acc),
                pct(&s.best_acc),
                delta,
                scaled(&s.seconds_per_epoch, 1.0, 2),
                scaled(&s.gbitops, 1.0, 1),
                scaled(&s.gbitops_ratio, 1.0, 3),
            ];
            if self.target_acc.is_some() {
                let t = scaled(&s.time_to_target, 1.0, 1);
                row.push(format!("{t} ({}/{})", s.reached, group.runs.len()));
            }
            out.push(row);
        }
        out
    }

    /// A Markdown table, then the config fields that differ between the groups.
    pub fn markdown(&self) -> String {
        let rows = self.rows();
        let mut s = String::new();
        for (i, r) in rows.iter().enumerate() {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
            if i == 0 {
                s.push_str(&format!("|{}\n", "---|".repeat(r.len())));
            }
        }
        s.push_str(&format!(
            "\nMeans ± {:.0}% Student t intervals over seeds; Δ: seed-paired difference to the baseline ({}).\n",
            LEVEL * 100.0,
            self.groups[self.baseline].label
        ));
        if !self.config_diff.is_empty() {
            s.push_str("\n| config field |");
            for g in &self.groups {
                s.push_str(&format!(" {} |", g.label));
            }
            s.push_str(&format!("\n|---|{}\n", "---|".repeat(self.groups.len())));
            for (k, vals) in &self.config_diff {
                s.push_str(&format!("| {k} | {} |\n", vals.join(" | ")));
            }
        }
        s
    }

    /// The comparison as JSON, numbers unformatted (fractions for accuracies): for scripts that
    /// draw conclusions from it (`scripts/reproduce.sh`). Each estimate is `{n, mean, half_width,
    /// lo, hi}`, `half_width`/`lo`/`hi` null below two samples.
    pub fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let est = |e: &Estimate| {
            let finite = |x: f64| x.is_finite().then_some(x);
            json!({
                "n": e.n,
                "mean": finite(e.mean),
                "half_width": e.half_width.and_then(finite),
                "lo": e.half_width.and_then(|h| finite(e.mean - h)),
                "hi": e.half_width.and_then(|h| finite(e.mean + h)),
            })
        };
        let groups: Vec<serde_json::Value> = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let s = &group.stats;
                json!({
                    "label": group.label,
                    "runs": group.runs.len(),
                    "not_finished": s.not_finished,
                    "final_acc": est(&s.final_acc),
                    "best_acc": est(&s.best_acc),
                    "seconds_per_epoch": est(&s.seconds_per_epoch),
                    "gbitops": est(&s.gbitops),
                    "gbitops_ratio": est(&s.gbitops_ratio),
                    "time_to_target": est(&s.time_to_target),
                    "reached": s.reached,
                    "delta_final_vs_baseline": est(&self.paired[g].final_acc),
                    "delta_best_vs_baseline": est(&self.paired[g].best_acc),
                })
            })
            .collect();
        json!({
            "level": LEVEL,
            "keys": self.keys,
            "baseline": self.groups[self.baseline].label,
            "target_acc": self.target_acc,
            "groups": groups,
        })
    }

    /// CSV of the table (fields with commas quoted).
    pub fn csv(&self) -> String {
        let quote = |c: &String| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        self.rows()
            .iter()
            .map(|r| r.iter().map(quote).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }

    /// Aligned columns for a terminal.
    pub fn text(&self) -> String {
        let rows = self.rows();
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut s = String::new();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            s.push_str(cells.join("  ").trim_end());
            s.push('\n');
        }
        if !self.config_diff.is_empty() {
            s.push_str("\nconfig fields that differ between the groups:\n");
            for (k, vals) in &self.config_diff {
                s.push_str(&format!("  {k}: {}\n", vals.join(" | ")));
            }
        }
        s
    }
}

fn scaled(e: &Estimate, k: f64, decimals: usize) -> String {
    Estimate {
        mean: e.mean * k,
        half_width: e.half_width.map(|h| h * k),
        ..*e
    }
    .format(decimals)
}

fn signed(e: &Estimate, k: f64, decimals: usize) -> String {
    let s = scaled(e, k, decimals);
    if e.mean >= 0.0 {
        format!("+{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Override;

    fn config(lr: f64, seed: u64) -> RunConfig {
        crate::config::presets::PresetStore::new(Path::new("/nonexistent"))
            .load(crate::config::presets::DEFAULT_PRESET)
            .unwrap()
            .with_overrides(&[
                Override::new("optimizer.lr", lr.into()),
                Override::new("seed", (seed as i64).into()),
            ])
            .unwrap()
    }

    fn run(lr: f64, seed: u64, accs: &[f64]) -> RunRecord {
        RunRecord {
            dir: PathBuf::from(format!("/runs/lr{lr}-s{seed}")),
            config: config(lr, seed),
            summary: Summary {
                status: RunStatus::Finished,
                final_test_acc: accs.last().copied(),
                best_test_acc: accs.iter().copied().reduce(f64::max),
                test_acc_per_epoch: accs.to_vec(),
                seconds_per_epoch: vec![2.0; accs.len()],
                ..Summary::default()
            },
        }
    }

    fn runs() -> Vec<RunRecord> {
        vec![
            run(0.1, 1, &[0.40, 0.50]),
            run(0.1, 2, &[0.45, 0.60]),
            run(0.1, 3, &[0.42, 0.55]),
            run(0.2, 1, &[0.50, 0.52]),
            run(0.2, 2, &[0.55, 0.63]),
            run(0.2, 3, &[0.52, 0.57]),
        ]
    }

    #[test]
    fn groups_by_what_varies_and_pairs_by_seed() {
        let runs = runs();
        let c = compare(&runs, &[], None, Some(0.5)).unwrap();
        assert_eq!(c.keys, ["optimizer.lr"]);
        let labels: Vec<&str> = c.groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["optimizer.lr=0.1", "optimizer.lr=0.2"]);
        let g = &c.groups[0].stats;
        assert_eq!(g.final_acc.n, 3);
        assert!((g.final_acc.mean - 0.55).abs() < 1e-12);
        // Final accuracies 0.50, 0.60, 0.55: sd 0.05, half = t(0.975, 2) · 0.05 / sqrt(3).
        let want = 4.302652730 * 0.05 / 3f64.sqrt();
        assert!((g.final_acc.half_width.unwrap() - want).abs() < 1e-9);
        // Paired: +0.02, +0.03, +0.02 seed by seed.
        let d = &c.paired[1].final_acc;
        assert!((d.mean - 0.07 / 3.0).abs() < 1e-12, "{d:?}");
        assert_eq!(d.sign(), Some(true));
        // Time to 50%: lr 0.1 reaches it in epoch 2 (4 s) for every seed; lr 0.2 in epoch 1.
        assert_eq!(g.reached, 3);
        assert!((g.time_to_target.mean - 4.0).abs() < 1e-12);
        assert!((c.groups[1].stats.time_to_target.mean - 2.0).abs() < 1e-12);
        assert_eq!(c.config_diff[0].0, "optimizer.lr");
    }

    #[test]
    fn baseline_and_by_are_checked() {
        let runs = runs();
        let c = compare(&runs, &[], Some("0.2"), None).unwrap();
        assert_eq!(c.baseline, 1);
        assert!((c.paired[0].final_acc.mean + 0.07 / 3.0).abs() < 1e-12);
        let e = compare(&runs, &[], Some("0.3"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("optimizer.lr=0.1"), "{e}");
        let e = compare(&runs, &["optimizer.lrr".into()], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--by optimizer.lrr"), "{e}");
        // Grouping by the seed instead: three groups of two.
        let c = compare(&runs, &["seed".into()], None, None).unwrap();
        assert_eq!(c.groups.len(), 3);
        assert!(c.groups.iter().all(|g| g.runs.len() == 2));
    }

    #[test]
    fn the_plot_is_an_svg_with_a_point_and_a_label_per_group() {
        let mut runs = runs();
        for (i, r) in runs.iter_mut().enumerate() {
            r.summary.gbitops = Some(100.0 + i as f64);
        }
        let c = compare(&runs, &[], None, None).unwrap();
        let svg = plot::accuracy_vs_gbitops_svg(&c).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("optimizer.lr=0.1") && svg.contains("optimizer.lr=0.2"));
        assert!(svg.contains("GBitOps"));
        // Without a cost figure there is nothing to plot, and it says so.
        let c = compare(&self::runs(), &[], None, None).unwrap();
        assert!(plot::accuracy_vs_gbitops_svg(&c).is_err());
    }

    #[test]
    fn plots_are_svg_or_png_by_extension_and_parse() {
        use plot::Format;
        assert_eq!(Format::of(Path::new("a/b.svg")).unwrap(), Format::Svg);
        assert_eq!(Format::of(Path::new("B.PNG")).unwrap(), Format::Png);
        let e = Format::of(Path::new("plot.jpg")).unwrap_err().to_string();
        assert!(e.contains("plot.jpg") && e.contains(".svg or .png"), "{e}");
        assert!(Format::of(Path::new("plot")).is_err());
        let mut runs = runs();
        for (i, r) in runs.iter_mut().enumerate() {
            r.summary.gbitops = Some(100.0 + i as f64);
        }
        let c = compare(&runs, &[], None, None).unwrap();
        let png = plot::accuracy_vs_gbitops(&c, Format::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (900, 560));
        // Not a blank canvas: the points, axes and text left non-white pixels, and some of
        // them in the first group's colour (the markers).
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|&v| v < 100))
            .count();
        assert!(dark > 500, "{dark} dark pixels: no text or axes drawn");
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
        let svg = plot::accuracy_vs_gbitops(&c, Format::Svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(doc
            .descendants()
            .any(|n| n.text().map(str::trim) == Some("optimizer.lr=0.2")));
    }

    fn metrics_line(e: &crate::telemetry::Event) -> String {
        serde_json::to_string(e).unwrap() + "\n"
    }

    /// Writes a run directory's metrics.jsonl: steps 10, 20, … with the given losses, and an
    /// evaluation after every `spe` steps with the given accuracies.
    fn write_metrics(dir: &Path, spe: u64, losses: &[f64], accs: &[f64]) {
        use crate::telemetry::event::StartedEvent;
        use crate::telemetry::{EvalEvent, Event, StepEvent};
        std::fs::create_dir_all(dir).unwrap();
        let started: StartedEvent = serde_json::from_value(serde_json::json!({
            "run_dir": "", "name": "", "model": "", "params": 0, "dataset": "",
            "classes": [], "train_size": 0, "test_size": 0, "steps_per_epoch": spe,
            "total_steps": 0, "epochs": 0, "devices": [], "threads": 1, "epoch_base": 1
        }))
        .unwrap();
        let mut text = metrics_line(&Event::Started(started));
        for (i, &loss) in losses.iter().enumerate() {
            let step: StepEvent = serde_json::from_value(serde_json::json!({
                "step": (i as u64 + 1) * 10, "epoch": 1, "loss": loss, "lr": 0.1,
                "images_per_sec": 1.0, "t_data": 0.0, "t_fwd": 0.0, "t_bwd": 0.0,
                "t_comm": 0.0, "t_opt": 0.0
            }))
            .unwrap();
            text.push_str(&metrics_line(&Event::Step(step)));
        }
        for (i, &acc) in accs.iter().enumerate() {
            text.push_str(&metrics_line(&Event::Eval(EvalEvent {
                epoch: i as u64 + 1,
                step: (i as u64 + 1) * spe,
                test_loss: 1.0,
                test_acc: acc,
                train_loss: 1.0,
                epoch_seconds: 1.0,
            })));
        }
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    }

    #[test]
    fn curves_average_the_seeds_step_by_step_and_plot_with_bands() {
        let tmp = tempfile::tempdir().unwrap();
        let mut runs = runs();
        for (i, r) in runs.iter_mut().enumerate() {
            r.dir = tmp.path().join(format!("run{i}"));
            let shift = (i % 3) as f64 * 0.1;
            write_metrics(
                &r.dir,
                20,
                &[2.0 + shift, 1.5 + shift, 1.2 + shift, 1.0 + shift],
                &r.summary.test_acc_per_epoch.clone(),
            );
        }
        let c = compare(&runs, &[], None, None).unwrap();
        let curves = curves(&c, &runs).unwrap();
        assert_eq!(curves.groups.len(), 2);
        let g = &curves.groups[0];
        assert_eq!(g.label, "optimizer.lr=0.1");
        // Steps 10..40 at 20 steps per epoch: x = 0.5, 1, 1.5, 2 epochs; each point over 3 seeds.
        let xs: Vec<f64> = g.loss.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.5, 1.0, 1.5, 2.0]);
        assert_eq!(g.loss[0].1.n, 3);
        assert!((g.loss[0].1.mean - 2.1).abs() < 1e-12);
        // Losses 2.0, 2.1, 2.2: sd 0.1, half = t(0.975, 2) · 0.1 / sqrt(3).
        let want = 4.302652730 * 0.1 / 3f64.sqrt();
        assert!((g.loss[0].1.half_width.unwrap() - want).abs() < 1e-9);
        // Accuracy after epochs 1 and 2: the means of the seeds' (0.40, 0.45, 0.42), ….
        assert_eq!(g.test_acc.len(), 2);
        assert!((g.test_acc[0].1.mean - (0.40 + 0.45 + 0.42) / 3.0).abs() < 1e-12);
        assert_eq!(g.test_acc[1].0, 2.0);
        for format in [plot::Format::Svg, plot::Format::Png] {
            let bytes = plot::curves(&curves, format).unwrap();
            assert!(bytes.len() > 1000, "{format:?}: {} bytes", bytes.len());
            match format {
                plot::Format::Png => {
                    let img = image::load_from_memory(&bytes).unwrap();
                    assert_eq!((img.width(), img.height()), (1200, 520));
                }
                plot::Format::Svg => {
                    let svg = String::from_utf8(bytes).unwrap();
                    let doc = roxmltree::Document::parse(&svg).unwrap();
                    // A band (polygon) and a line per group.
                    let polygons = doc
                        .descendants()
                        .filter(|n| n.tag_name().name() == "polygon")
                        .count();
                    assert!(polygons >= 2, "{polygons} polygons");
                    assert!(svg.contains("optimizer.lr=0.2"));
                }
            }
        }
        // A run without metrics is an error naming its directory.
        std::fs::remove_file(runs[4].dir.join("metrics.jsonl")).unwrap();
        let e = format!("{:#}", self::curves(&c, &runs).unwrap_err());
        assert!(e.contains("run4"), "{e}");
    }

    #[test]
    fn the_markdown_table_is_stable() {
        let mut runs = runs();
        for (i, r) in runs.iter_mut().enumerate() {
            r.summary.gbitops = Some(100.0 + (i / 3) as f64 * 50.0);
            r.summary.gbitops_ratio_vs_static = Some(1.0 - (i / 3) as f64 * 0.25);
        }
        let c = compare(&runs, &[], Some("0.1"), Some(0.5)).unwrap();
        insta::assert_snapshot!(c.markdown());
        let j = c.json();
        assert_eq!(j["baseline"], "optimizer.lr=0.1");
        let d = &j["groups"][1]["delta_final_vs_baseline"];
        assert!((d["mean"].as_f64().unwrap() - 0.07 / 3.0).abs() < 1e-12);
        assert!(d["lo"].as_f64().unwrap() > 0.0);
        assert_eq!(j["groups"][0]["final_acc"]["n"], 3);
    }

    #[test]
    fn markdown_and_csv_have_a_row_per_group() {
        let runs = runs();
        let c = compare(&runs, &[], None, Some(0.5)).unwrap();
        let md = c.markdown();
        let table: Vec<&str> = md.lines().take_while(|l| l.starts_with('|')).collect();
        assert_eq!(table.len(), 2 + 2, "{md}");
        assert!(
            table[2].starts_with("| optimizer.lr=0.1 | 3 | 55.00 ± "),
            "{md}"
        );
        assert!(table[3].contains("(better)"), "{md}");
        assert!(md.contains("| optimizer.lr | 0.1 | 0.2 |"), "{md}");
        let csv = c.csv();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("optimizer.lr=0.1,3,"));
    }
}
