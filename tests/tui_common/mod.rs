//! Scripted runs for the workbench tests: event streams shaped like `cptlab run --json`
//! output, run directories written as the engine writes them, and a text rendering of a frame.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use cptlab::config::paths::Paths;
use cptlab::config::RunConfig;
use cptlab::schedule::{PrecisionSchedule, PrecisionScheduleKind};
use cptlab::telemetry::event::Event;
use cptlab::tui::app::App;
use cptlab::tui::run_data::{parse_line, Incoming};
use cptlab::tui::TuiOptions;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;

pub const SPE: u64 = 32;
pub const EPOCHS: u64 = 3;

pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        let h = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(h.runs()).unwrap();
        h
    }

    pub fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    pub fn paths(&self) -> Paths {
        Paths {
            runs: self.runs(),
            presets: self.dir.path().join("presets"),
            cache: self.dir.path().join("cache"),
        }
    }

    /// `cptlab` with this home's directories (and no `CPTLAB_DATA` from the caller).
    pub fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("cptlab"));
        let p = self.paths();
        c.env("CPTLAB_RUNS_DIR", p.runs)
            .env("CPTLAB_PRESETS_DIR", p.presets)
            .env("CPTLAB_CACHE_DIR", p.cache)
            .env_remove("CPTLAB_DATA");
        c
    }

    /// An app as `cptlab --data synthetic:2048:512` opens it, with a fixed core count.
    pub fn app(&self) -> App {
        let mut app = App::new(
            self.paths(),
            &TuiOptions {
                preset: None,
                data: Some("synthetic:2048:512".into()),
                ..Default::default()
            },
        );
        app.cores = 2;
        app.setup.load(base(), "demo", Some("synthetic:2048:512"));
        app
    }
}

/// The run the tests set up: fixed here rather than taken from a built-in preset, so editing
/// `presets/` does not move the snapshots.
pub const BASE: &str = r#"
name = "demo"
description = "LeNet on synthetic data for the workbench tests"
seed = 42
[model]
kind = "lenet"
[data]
source = "synthetic:2048:512"
random_crop_padding = 0
horizontal_flip = false
normalize = "half"
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
[lr_schedule]
kind = "cosine_annealing"
[train]
batch_size = 64
epochs = 3
"#;

pub fn base() -> RunConfig {
    RunConfig::from_toml_str(BASE, "tests/tui_common").unwrap()
}

pub fn config(name: &str, cpt: Option<PrecisionSchedule>) -> RunConfig {
    let mut c = base();
    c.name = name.into();
    c.precision.schedule = cpt;
    c
}

pub fn cr() -> PrecisionSchedule {
    let mut s = PrecisionSchedule::new(PrecisionScheduleKind::Cr);
    s.cycles = 4;
    s
}

pub fn static8() -> PrecisionSchedule {
    PrecisionSchedule::new(PrecisionScheduleKind::Static)
}

/// One event from its JSON, as the workbench reads `cptlab run --json` lines (built from JSON
/// so that fields the engine adds later do not break the scripts).
pub fn ev(v: serde_json::Value) -> Incoming {
    parse_line(&v.to_string()).unwrap_or_else(|| panic!("not an event: {v}"))
}

/// The events of a run up to `upto` steps (all of them, and `finished`, when `finish`).
/// `better` shifts accuracy up, so A/B tables have a difference to show.
pub fn events(dir: &Path, cfg: &RunConfig, upto: u64, finish: bool, better: f64) -> Vec<Incoming> {
    let total = SPE * EPOCHS;
    let classes: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    let run_dir = dir.display().to_string();
    let mut out = vec![
        ev(json!({"event": "log", "level": "info",
            "message": "data synthetic: 2048 train / 512 test images, 10 classes, ready in 0.01s"})),
        ev(
            json!({"event": "started", "run_dir": run_dir, "name": cfg.name, "model": "lenet",
            "params": 62006, "dataset": "synthetic", "classes": classes, "train_size": 2048,
            "test_size": 512, "steps_per_epoch": SPE, "total_steps": total, "epochs": EPOCHS,
            "devices": ["cpu"], "threads": 2, "epoch_base": 1}),
        ),
    ];
    let sched = cfg.precision.schedule.clone();
    let mut gbitops = 0.0;
    for t in 1..=upto.min(total) {
        let x = t as f64;
        let loss = 2.3 * (-x / 30.0).exp() + 0.25 + 0.06 * (x * 0.7).sin() - better * 0.2;
        let lr = 0.025 * (1.0 + (std::f64::consts::PI * (t - 1) as f64 / total as f64).cos());
        let mut step = json!({"event": "step", "step": t, "epoch": (t - 1) / SPE + 1, "loss": loss,
            "lr": lr, "images_per_sec": 4000.0 + 300.0 * (x * 0.3).sin(), "t_data": 0.0003,
            "t_fwd": 0.0072, "t_bwd": 0.0083, "t_comm": 0.0, "t_opt": 0.0002});
        if let Some(s) = &sched {
            let q = s.q_fwd_at(t - 1, total);
            let g = 0.5 * f64::from(q * q + 2 * q * s.q_bwd()) / 192.0;
            step["q_fwd"] = json!(q);
            step["q_bwd"] = json!(s.q_bwd());
            step["gbitops"] = json!(g);
            gbitops += g;
        }
        out.push(ev(step));
        if t % SPE == 0 {
            let epoch = t / SPE;
            out.push(ev(json!({"event": "eval", "epoch": epoch, "step": t,
                "test_loss": loss * 1.1, "test_acc": 0.31 + 0.14 * (epoch - 1) as f64 + better,
                "train_loss": loss * 1.05, "epoch_seconds": 0.62 - better})));
            out.push(ev(json!({"event": "checkpoint", "epoch": epoch, "step": t,
                "path": dir.join("checkpoints/last.ckpt")})));
        }
    }
    if finish {
        let accs: Vec<f64> = (0..EPOCHS)
            .map(|e| 0.31 + 0.14 * e as f64 + better)
            .collect();
        let per_class: Vec<serde_json::Value> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"class": c, "acc": 0.25 + 0.06 * i as f64 + better}))
            .collect();
        let mut summary = json!({"status": "finished", "final_test_acc": accs.last(),
            "best_test_acc": accs.last(), "best_epoch": EPOCHS, "epochs": EPOCHS,
            "steps": total, "train_seconds": 1.8,
            "seconds_per_epoch": vec![0.62 - better; EPOCHS as usize],
            "test_acc_per_epoch": accs, "per_class_acc": per_class, "run_dir": run_dir,
            "name": cfg.name, "model": "lenet", "params": 62006, "dataset": "synthetic",
            "skipped_steps": 0, "optimizer_state_bytes_per_rank": 248024});
        if let Some(s) = &sched {
            summary["gbitops"] = json!(gbitops);
            summary["gbitops_ratio_vs_static"] = json!(s.cost_ratio_vs_static(total));
        }
        out.push(ev(json!({"event": "finished", "summary": summary})));
    }
    out
}

/// The same stream as an older build wrote it: no `epoch_base`, step and eval epochs and
/// `best_epoch` from 0 (checkpoint events already counted from 1 at epoch ends).
pub fn as_older_build(events: &[Incoming]) -> Vec<Incoming> {
    events
        .iter()
        .map(|e| {
            let mut raw = e.raw.clone();
            match raw["event"].as_str() {
                Some("started") => {
                    raw.as_object_mut().unwrap().remove("epoch_base");
                }
                Some("step") | Some("eval") => {
                    raw["epoch"] = json!(raw["epoch"].as_u64().unwrap() - 1);
                }
                Some("finished") => {
                    let b = raw["summary"]["best_epoch"].as_u64().unwrap();
                    raw["summary"]["best_epoch"] = json!(b - 1);
                }
                _ => {}
            }
            ev(raw)
        })
        .collect()
}

/// Writes a run directory as the engine does: config, metrics, and the summary (finished) or
/// process marker (`pid`, for a live or interrupted run).
pub fn write_run(
    root: &Path,
    name: &str,
    cfg: &RunConfig,
    events: &[Incoming],
    pid: Option<u32>,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(dir.join("config.toml"), cfg.to_toml()).unwrap();
    let mut metrics = String::new();
    for e in events {
        metrics.push_str(&e.raw.to_string());
        metrics.push('\n');
    }
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    if let Some(Incoming {
        event: Event::Finished { .. },
        raw,
    }) = events.last()
    {
        std::fs::write(dir.join("summary.json"), raw["summary"].to_string()).unwrap();
    }
    if let Some(pid) = pid {
        std::fs::write(dir.join("process.json"), json!({ "pid": pid }).to_string()).unwrap();
    }
    dir
}

/// The frame as drawn (symbols and styles).
pub fn render_buffer(app: &App, w: u16, h: u16) -> ratatui::buffer::Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| cptlab::tui::ui::draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

/// Where `text` first appears in the frame: (column, row).
pub fn find(frame: &str, text: &str) -> Option<(u16, u16)> {
    frame.lines().enumerate().find_map(|(y, l)| {
        let i = l.find(text)?;
        Some((l[..i].chars().count() as u16, y as u16))
    })
}

/// The frame as text, one line per row, trailing blanks cut.
pub fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| cptlab::tui::ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A pid that cannot belong to a live process.
pub const DEAD_PID: u32 = 4_000_000_000;

// ---- The mouse, through the same Action path (synthetic events on an 80×24 layout). ----

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};

pub fn mouse_at(
    app: &App,
    kind: MouseEventKind,
    (x, y): (u16, u16),
) -> Option<cptlab::tui::action::Action> {
    let ev = MouseEvent {
        kind,
        column: x,
        row: y,
        modifiers: crossterm::event::KeyModifiers::NONE,
    };
    cptlab::tui::mouse::action(app, ratatui::layout::Rect::new(0, 0, 80, 24), &ev)
}

pub fn click(app: &App, at: (u16, u16)) -> Option<cptlab::tui::action::Action> {
    mouse_at(app, MouseEventKind::Down(MouseButton::Left), at)
}

pub fn wheel(app: &App, at: (u16, u16), down: bool) -> Option<cptlab::tui::action::Action> {
    let kind = if down {
        MouseEventKind::ScrollDown
    } else {
        MouseEventKind::ScrollUp
    };
    mouse_at(app, kind, at)
}

/// Where `text` is drawn at 80×24.
pub fn spot(app: &App, text: &str) -> (u16, u16) {
    let frame = render(app, 80, 24);
    find(&frame, text).unwrap_or_else(|| panic!("no {text:?} in\n{frame}"))
}

/// Clicks `text` and applies what it sends.
pub fn click_on(app: &mut App, text: &str) -> Option<cptlab::tui::action::Action> {
    let a = click(app, spot(app, text));
    if let Some(a) = a.clone() {
        app.update(a);
    }
    a
}

// ---- A scripted sweep, for the snapshots and the limits. ----

/// Writes a sweep directory as `cptlab sweep` leaves it: `plan.toml`, the run directories of
/// the first `ran` points (finished), and `sweep.jsonl`. `live`: a sweep process (this test's)
/// still runs it, with the next point started.
pub fn scripted_sweep(runs: &Path, name: &str, kinds: &[&str], seeds: u64, ran: usize, live: bool) {
    let dir = runs.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut plan = String::new();
    let mut points = Vec::new();
    for k in kinds {
        for seed in 0..seeds {
            let i = points.len();
            let label = format!("precision.schedule.kind={k}, seed={seed}");
            plan.push_str(&format!(
                "[[point]]\nindex = {i}\nname = \"{name}-p{i:03}\"\nlabel = \"{label}\"\n\n"
            ));
            points.push((i, *k, seed, label));
        }
    }
    std::fs::write(dir.join("plan.toml"), plan).unwrap();
    let me = std::process::id();
    let mut progress = vec![cptlab::sweep::Progress::SweepStarted {
        points: points.len(),
        pid: if live { me } else { DEAD_PID },
        start_time: live
            .then(|| cptlab::files::process::ProcessId::current().start_time)
            .flatten(),
        boot_id: None,
        parallel: None,
    }];
    for (i, k, seed, label) in &points {
        if *i > ran {
            break;
        }
        progress.push(cptlab::sweep::Progress::PointStarted {
            point: *i,
            label: label.clone(),
        });
        if *i == ran {
            break;
        }
        let sched = match *k {
            "CR" => Some(cr()),
            "RTV" => {
                let mut s = cr();
                s.kind = cptlab::schedule::PrecisionScheduleKind::Rtv;
                Some(s)
            }
            _ => Some(static8()),
        };
        let mut cfg = config(&format!("{name}-p{i:03}"), sched);
        cfg.seed = *seed;
        let run = dir.join(format!("20250101-1200{i:02}-{name}-p{i:03}"));
        let better = 0.01 * (*i as f64) + if *k == "CR" { 0.02 } else { 0.0 };
        write_run(
            &dir,
            run.file_name().unwrap().to_str().unwrap(),
            &cfg,
            &events(&run, &cfg, SPE * EPOCHS, true, better),
            None,
        );
        progress.push(cptlab::sweep::Progress::PointEnded {
            point: *i,
            label: label.clone(),
            status: cptlab::telemetry::RunStatus::Finished,
            final_test_acc: Some(0.59 + better),
            run_dir: Some(run),
            exit_code: None,
        });
    }
    if !live && ran >= points.len() {
        progress.push(cptlab::sweep::Progress::SweepEnded {
            trained: ran,
            skipped: 0,
            failed: 0,
            points: points.len(),
            dir: dir.clone(),
            parallel: None,
        });
    }
    let text: String = progress.iter().map(|p| p.to_line() + "\n").collect();
    std::fs::write(dir.join("sweep.jsonl"), text).unwrap();
}

pub fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}
