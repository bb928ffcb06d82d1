//! `cptlab schedule precision|lr`: a schedule's curve before any run, as CSV or as a braille
//! plot in the terminal, with its summary numbers.
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde::Deserialize as _;

use crate::config::{apply_override, Override};
use crate::schedule::lr::{LrContext, LrSchedule, LrScheduleKind};
use crate::schedule::precision::{PrecisionSchedule, PrecisionScheduleKind};
use crate::schedule::ScheduleError;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// A precision schedule: forward bits per step, mean bits and cost vs static q_max
    Precision(PrecisionArgs),
    /// A learning-rate schedule: lr per step
    Lr(LrArgs),
}

/// Plot size and output format, shared by both subcommands.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// CSV on stdout (one row per step, header first); the summary goes to stderr
    #[arg(long)]
    pub csv: bool,
    /// Plot width in terminal columns (each holds 2 braille dots)
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u16).range(8..=1000))]
    pub width: u16,
    /// Plot height in terminal rows (each holds 4 braille dots)
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u16).range(3..=200))]
    pub height: u16,
}

/// The precision schedule kinds, from their list (also `run --cpt`).
pub(crate) fn precision_names() -> clap::builder::PossibleValuesParser {
    crate::config::possible_values(PrecisionScheduleKind::ALL.map(|k| (k.name(), k.describe())))
}

#[derive(Debug, Args)]
pub struct PrecisionArgs {
    /// Schedule (any case)
    #[arg(value_parser = precision_names(), ignore_case = true)]
    pub name: String,
    /// Lowest forward bits
    #[arg(long, default_value_t = 3)]
    pub q_min: u32,
    /// Highest forward bits
    #[arg(long, default_value_t = 8)]
    pub q_max: u32,
    /// Number of cycles
    #[arg(long, default_value_t = 8)]
    pub cycles: u32,
    /// Optimizer steps in the run
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Backward bits (default: q_max)
    #[arg(long)]
    pub q_bwd: Option<u32>,
    /// Steps at q_max before cycling starts
    #[arg(long, default_value_t = 0)]
    pub delay: u64,
    /// window: the first step at q_min
    #[arg(long, default_value_t = 0)]
    pub window_start: u64,
    /// window: the first step after the window (exclusive)
    #[arg(long)]
    pub window_end: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct LrArgs {
    /// Schedule kind
    #[arg(value_parser = lr_name_parser(), ignore_case = true)]
    pub name: String,
    /// Schedule parameter, e.g. --set warmup_num_steps=500 (repeatable; TOML values)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Optimizer steps in the run
    #[arg(long)]
    pub steps: u64,
    /// The optimizer's lr
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub base_lr: f64,
    /// Steps per epoch (epoch-based schedules: multi_step, goyal); default 390 = CIFAR-10 at 128
    #[arg(long, default_value_t = 390)]
    pub steps_per_epoch: u64,
    /// Samples per optimizer step over all devices (goyal's scaling)
    #[arg(long, default_value_t = 128)]
    pub batch: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What a subcommand prints: `stdout` (the CSV or the plot and summary) and, with `--csv`, the
/// summary on `stderr`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    pub stdout: String,
    pub stderr: String,
}

/// Runs the subcommand, printing to stdout/stderr.
pub fn run(cmd: ScheduleCommand) -> Result<()> {
    let out = match cmd {
        ScheduleCommand::Precision(a) => render_precision(&a)?,
        ScheduleCommand::Lr(a) => render_lr(&a)?,
    };
    super::output::stdout().write_str(&out.stdout)?;
    super::output::stdout().flush()?;
    super::output::stderr().write_str(&out.stderr)?;
    Ok(())
}

/// The LR schedule kinds (`kind = "..."` in `[lr_schedule]`), in [`LrScheduleKind::ALL`]'s order.
pub fn lr_schedule_names() -> Vec<&'static str> {
    LrScheduleKind::ALL.iter().map(|k| k.name()).collect()
}

/// `NAME`'s possible values (shown by `--help`; matched case-insensitively).
fn lr_name_parser() -> clap::builder::PossibleValuesParser {
    crate::config::possible_values(LrScheduleKind::ALL.map(|k| (k.name(), k.describe())))
}

/// Validation messages name config keys; on this command line they are flags.
fn flag_error(e: ScheduleError, flags: &[(&str, &str)]) -> anyhow::Error {
    match &e {
        ScheduleError::Invalid {
            field,
            expected,
            got,
        } => match flags.iter().find(|(key, _)| key == field) {
            Some((_, flag)) => anyhow!("{flag}: must be {expected}, got {got}"),
            None => anyhow!("{e}"),
        },
        ScheduleError::UnknownKind { .. } | ScheduleError::UnknownLrKind { .. } => {
            anyhow!("NAME: {e}")
        }
    }
}

pub fn render_precision(a: &PrecisionArgs) -> Result<Rendered> {
    let kind: PrecisionScheduleKind = a.name.parse().map_err(|e| flag_error(e, &[]))?;
    let s = PrecisionSchedule {
        kind,
        q_min: a.q_min,
        q_max: a.q_max,
        cycles: a.cycles,
        q_bwd: a.q_bwd,
        delay_steps: a.delay,
        window_start: a.window_start,
        window_end: a.window_end,
    };
    s.validate(a.steps).map_err(|e| {
        flag_error(
            e,
            &[
                ("precision_schedule.q_min", "--q-min"),
                ("precision_schedule.q_max", "--q-max"),
                ("precision_schedule.cycles", "--cycles"),
                ("precision_schedule.q_bwd", "--q-bwd"),
                ("precision_schedule.delay_steps", "--delay"),
                ("precision_schedule.window_end", "--window-end"),
                ("total_steps", "--steps"),
            ],
        )
    })?;
    let curve = s.curve(a.steps);
    let q_bwd = s.q_bwd();
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{} ({}): {} steps, q {}..{}, {} cycles{}",
        kind.name(),
        kind.describe(),
        a.steps,
        s.q_min,
        s.q_max,
        s.cycles,
        if a.delay > 0 {
            format!(", first {} steps at q_max", a.delay)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        summary,
        "mean q_fwd {:.3} bits, q_bwd {q_bwd} bits, cost vs static {}-bit {:.4} \
         (effective BitOps, all layers quantized)",
        s.mean_bits(a.steps),
        s.q_max,
        s.cost_ratio_vs_static(a.steps)
    );
    let mut out = Rendered::default();
    if a.output.csv {
        out.stdout.push_str("step,q_fwd,q_bwd\n");
        for (t, q) in curve.iter().enumerate() {
            let _ = writeln!(out.stdout, "{t},{q},{q_bwd}");
        }
        out.stderr = summary;
    } else {
        let values: Vec<f64> = curve.iter().map(|&q| f64::from(q)).collect();
        let plot = braille_plot(
            &values,
            usize::from(a.output.width),
            usize::from(a.output.height),
            &|v| format!("{v:.0}"),
        );
        out.stdout = format!("q_fwd (bits) per step\n{plot}{summary}");
    }
    Ok(out)
}

/// Builds the schedule from its name and `--set` pairs, as the `[lr_schedule]` table would be.
pub fn lr_schedule_from_args(name: &str, set: &[String]) -> Result<LrSchedule> {
    let kind: LrScheduleKind = name.parse().map_err(|e| flag_error(e, &[]))?;
    let name = kind.name().to_string();
    let mut table = toml::Table::new();
    table.insert("kind".into(), toml::Value::String(name.clone()));
    for text in set {
        let o: Override = text.parse().map_err(|e| anyhow!("--set {text}: {e}"))?;
        if o.key.len() != 1 || o.key[0] == "kind" {
            bail!(
                "--set {text}: expected KEY=VALUE with a parameter of {name} (no dots; the kind \
                 is NAME)"
            );
        }
        apply_override(&mut table, &o).map_err(|e| anyhow!("--set {text}: {e}"))?;
    }
    LrSchedule::deserialize(toml::Value::Table(table)).map_err(|e| {
        anyhow!(
            "LR schedule {name}: {} (set parameters with --set KEY=VALUE)",
            e.message()
        )
    })
}

pub fn render_lr(a: &LrArgs) -> Result<Rendered> {
    let schedule = lr_schedule_from_args(&a.name, &a.set)?;
    let ctx = LrContext {
        base_lr: a.base_lr,
        total_steps: a.steps,
        steps_per_epoch: a.steps_per_epoch,
        global_batch: a.batch,
        // Only the lr is plotted: no optimizer to cycle the momentum of.
        momentum: Default::default(),
    };
    schedule.validate(&ctx).map_err(|e| {
        flag_error(
            e,
            &[
                ("optimizer.lr", "--base-lr"),
                ("lr_context.total_steps", "--steps"),
                ("lr_context.steps_per_epoch", "--steps-per-epoch"),
                ("lr_context.global_batch", "--batch"),
            ],
        )
    })?;
    let curve = schedule.curve(&ctx);
    let (lo, hi) = min_max(&curve);
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{}: {} steps ({} per epoch), base lr {}: lr {:.4e} .. {:.4e}, first {:.4e}, last {:.4e}",
        schedule.name(),
        a.steps,
        a.steps_per_epoch,
        a.base_lr,
        lo,
        hi,
        curve[0],
        curve[curve.len() - 1]
    );
    let mut out = Rendered::default();
    if a.output.csv {
        out.stdout.push_str("step,lr\n");
        for (t, lr) in curve.iter().enumerate() {
            let _ = writeln!(out.stdout, "{t},{lr}");
        }
        out.stderr = summary;
    } else {
        let plot = braille_plot(
            &curve,
            usize::from(a.output.width),
            usize::from(a.output.height),
            &|v| format!("{v:.3e}"),
        );
        out.stdout = format!("lr per step\n{plot}{summary}");
    }
    Ok(out)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Braille dot bits for (column 0..2, row 0..4) within one cell.
const DOT: [[u32; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];

/// Draws `values` (index = step) as a line in `width` × `height` braille cells, with a y axis
/// labelled with the max (top) and min (bottom) and an x axis labelled with the first and last
/// index. Returns `height + 2` lines, each ending in a newline; the plot lines are all
/// `label width + 2 + width` characters wide. Several steps per dot column draw their whole
/// span; consecutive columns are joined vertically so steps show as edges.
pub fn braille_plot(
    values: &[f64],
    width: usize,
    height: usize,
    label: &dyn Fn(f64) -> String,
) -> String {
    assert!(width > 0 && height > 0);
    let (cols, rows) = (width * 2, height * 4);
    let mut cells = vec![vec![0u32; width]; height];
    let (lo, hi) = min_max(values);
    let flat = hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater);
    // Dot row (0 = top) of a value.
    let row_of = |v: f64| -> usize {
        if flat {
            rows / 2
        } else {
            let r = ((hi - v) / (hi - lo) * (rows - 1) as f64).round();
            (r.max(0.0) as usize).min(rows - 1)
        }
    };
    let n = values.len();
    let mut prev: Option<usize> = None;
    for x in 0..if n == 0 { 0 } else { cols } {
        // Steps this dot column covers: [a, b). With fewer steps than columns each step
        // spans several columns.
        let a = x * n / cols;
        let b = ((x + 1) * n / cols).max(a + 1);
        let (mut top, mut bottom) = (usize::MAX, 0);
        for &v in &values[a..b] {
            let r = row_of(v);
            top = top.min(r);
            bottom = bottom.max(r);
        }
        // Join with the previous column's last value, so jumps show as vertical edges.
        if let Some(p) = prev {
            top = top.min(p);
            bottom = bottom.max(p);
        }
        for r in top..=bottom {
            cells[r / 4][x / 2] |= DOT[x % 2][r % 4];
        }
        prev = Some(row_of(values[b - 1]));
    }
    let (top_label, bottom_label) = (label(hi), label(lo));
    let lw = top_label.chars().count().max(bottom_label.chars().count());
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let (text, tick) = match i {
            0 => (top_label.as_str(), '┤'),
            _ if i == height - 1 => (bottom_label.as_str(), '┤'),
            _ => ("", '│'),
        };
        let _ = write!(out, "{text:>lw$} {tick}");
        for &bits in row {
            out.push(char::from_u32(0x2800 + bits).expect("braille block"));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{:>lw$} └{}", "", "─".repeat(width));
    let first = "0".to_string();
    let last = n.saturating_sub(1).to_string();
    let gap = width.saturating_sub(first.len() + last.len());
    let _ = writeln!(out, "{:>lw$}  {first}{}{last}", "", " ".repeat(gap));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ScheduleCommand,
    }

    fn render(args: &[&str]) -> Result<Rendered> {
        let cli = Cli::try_parse_from(std::iter::once("schedule").chain(args.iter().copied()))
            .map_err(|e| anyhow!("{e}"))?;
        match cli.cmd {
            ScheduleCommand::Precision(a) => render_precision(&a),
            ScheduleCommand::Lr(a) => render_lr(&a),
        }
    }

    #[test]
    fn precision_csv_has_one_row_per_step() {
        let out = render(&[
            "precision",
            "CR",
            "--q-min",
            "3",
            "--q-max",
            "8",
            "--cycles",
            "8",
            "--steps",
            "1000",
            "--csv",
        ])
        .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "step,q_fwd,q_bwd");
        assert_eq!(lines.len(), 1001);
        let s = PrecisionSchedule::new(PrecisionScheduleKind::Cr);
        for (t, line) in lines[1..].iter().enumerate() {
            assert_eq!(*line, format!("{t},{},8", s.q_fwd_at(t as u64, 1000)));
        }
        // Cosine growth starts at q_min; the summary goes to stderr.
        assert_eq!(lines[1], "0,3,8");
        assert!(out.stderr.contains("mean q_fwd"), "{}", out.stderr);
        assert!(out
            .stderr
            .contains(&format!("{:.4}", s.cost_ratio_vs_static(1000))));
    }

    #[test]
    fn precision_q_bwd_and_delay() {
        let out = render(&[
            "precision",
            "rr",
            "--steps",
            "20",
            "--cycles",
            "2",
            "--q-bwd",
            "6",
            "--delay",
            "5",
            "--csv",
        ])
        .unwrap();
        let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
        assert_eq!(rows.len(), 20);
        assert!(rows[..5]
            .iter()
            .enumerate()
            .all(|(t, r)| *r == format!("{t},8,6")));
        assert!(rows.iter().all(|r| r.ends_with(",6")));
    }

    #[test]
    fn precision_plot_dimensions_and_labels() {
        let out = render(&["precision", "CT", "--steps", "500"]).unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "q_fwd (bits) per step");
        // 15 plot rows + x axis + x labels, then two summary lines.
        let plot = &lines[1..18];
        for row in &plot[..15] {
            // "8 ┤" + 70 cells: label width 1 + space + tick + 70.
            assert_eq!(row.chars().count(), 1 + 2 + 70, "{row}");
        }
        assert!(plot[0].starts_with("8 ┤"));
        assert!(plot[14].starts_with("3 ┤"));
        assert!(plot[15].starts_with("  └─"));
        assert!(plot[16].trim_start().starts_with('0') && plot[16].ends_with("499"));
        assert!(lines[18].starts_with("CT ("));
        assert!(lines[19].starts_with("mean q_fwd"));
        // Every plot column has at least one dot (the curve is continuous).
        for x in 0..70 {
            let any = plot[..15]
                .iter()
                .any(|r| r.chars().nth(3 + x).is_some_and(|c| c != '\u{2800}'));
            assert!(any, "column {x} empty");
        }
    }

    #[test]
    fn plot_size_flags_and_flat_curves() {
        let out = render(&[
            "precision",
            "static",
            "--steps",
            "3",
            "--width",
            "10",
            "--height",
            "4",
        ])
        .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        for row in &lines[1..5] {
            assert_eq!(row.chars().count(), 1 + 2 + 10, "{row}");
        }
        // A flat curve is one horizontal line, in the middle (row 8 of 16 → cell row 2).
        assert!(
            lines[3].contains('⠉') || lines[3].contains('⠁'),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn braille_plot_shape() {
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        let p = braille_plot(&v, 20, 5, &|v| format!("{v}"));
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.len(), 5 + 2);
        assert!(lines[0].starts_with("99 ┤") && lines[4].starts_with(" 0 ┤"));
        // A rising line: top-right and bottom-left cells are inked, the opposite corners not.
        let cell = |r: usize, c: usize| lines[r].chars().nth(4 + c).unwrap();
        assert_ne!(cell(0, 19), '\u{2800}');
        assert_ne!(cell(4, 0), '\u{2800}');
        assert_eq!(cell(0, 0), '\u{2800}');
        assert_eq!(cell(4, 19), '\u{2800}');
        // Fewer values than dot columns still spans the whole width.
        let p = braille_plot(&[1.0, 2.0, 3.0], 20, 3, &|v| format!("{v}"));
        assert_ne!(
            p.lines().next().unwrap().chars().last().unwrap(),
            '\u{2800}'
        );
    }

    #[test]
    fn lr_csv_and_params() {
        let out = render(&[
            "lr",
            "warmup_lr",
            "--set",
            "warmup_num_steps=10",
            "--set",
            "warmup_type=linear",
            "--steps",
            "20",
            "--base-lr",
            "0.5",
            "--csv",
        ])
        .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "step,lr");
        assert_eq!(lines.len(), 21);
        let s = lr_schedule_from_args(
            "warmup_lr",
            &["warmup_num_steps=10".into(), "warmup_type=linear".into()],
        )
        .unwrap();
        let ctx = LrContext {
            base_lr: 0.5,
            total_steps: 20,
            steps_per_epoch: 390,
            global_batch: 128,
            momentum: Default::default(),
        };
        for (t, line) in lines[1..].iter().enumerate() {
            assert_eq!(*line, format!("{t},{}", s.lr_at(t as u64, &ctx)));
        }
        assert_eq!(lines[20], "19,0.5");
        assert!(out.stderr.starts_with("warmup_lr: 20 steps"));
    }

    #[test]
    fn lr_plot() {
        let out = render(&[
            "lr",
            "cosine_annealing",
            "--steps",
            "300",
            "--width",
            "40",
            "--height",
            "8",
        ])
        .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "lr per step");
        assert!(lines[1].starts_with("1.000e-1 ┤"), "{}", lines[1]);
        assert_eq!(lines[1].chars().count(), 8 + 2 + 40);
        assert!(lines[10].ends_with("299"));
    }

    #[test]
    fn errors_name_the_flag_and_the_expected_values() {
        let e = render(&["precision", "cosine"]).unwrap_err().to_string();
        assert!(
            e.contains("cosine") && e.contains("RTH") && e.contains("static"),
            "{e}"
        );
        let e = render(&["precision", "CR", "--q-min", "9"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--q-min: must be in 1..=q_max (8)"), "{e}");
        let e = render(&["precision", "CR", "--steps", "4"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--cycles: must be ≤"), "{e}");
        let e = render(&["precision", "CR", "--q-bwd", "40"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--q-bwd"), "{e}");
        let e = render(&["precision", "CR", "--delay", "1000"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--delay"), "{e}");
        let e = render(&["lr", "cosine", "--steps", "10"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cosine_annealing") && e.contains("goyal"), "{e}");
        let e = render(&["lr", "cyclic_lr", "--steps", "10"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_lr") && e.contains("--set"), "{e}");
        let e = render(&["lr", "constant", "--steps", "10", "--set", "gamma=2"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("gamma"), "{e}");
        let e = render(&["lr", "constant", "--steps", "10", "--base-lr=-1"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--base-lr"), "{e}");
        let e = render(&["lr", "constant", "--steps", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--steps"), "{e}");
        let e = render(&["lr", "constant", "--steps", "5", "--set", "a.b=1"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--set a.b=1"), "{e}");
    }

    #[test]
    fn lr_names_match_the_schedule_enum() {
        // Every listed name is a variant (an error, if any, is about fields, not the kind), and
        // serde's own list of variants is exactly this one.
        for name in lr_schedule_names() {
            let mut t = toml::Table::new();
            t.insert("kind".into(), toml::Value::String(name.into()));
            if let Err(e) = LrSchedule::deserialize(toml::Value::Table(t)) {
                assert!(!e.message().contains("unknown variant"), "{name}: {e}");
            }
        }
        let mut t = toml::Table::new();
        t.insert("kind".into(), toml::Value::String("nope".into()));
        let e = LrSchedule::deserialize(toml::Value::Table(t)).unwrap_err();
        let listed = e.message().matches('`').count() / 2 - 1;
        assert_eq!(listed, LrScheduleKind::ALL.len(), "{e}");
    }
}
