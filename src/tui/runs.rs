//! Runs: the history in the runs directory — status and headline figures; filter and sort;
//! open in the Dashboard (replay or attach), mark up to eight for Compare, export CSV, delete.
use std::path::{Path, PathBuf};

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::action::{Action, View};
use super::app::{
    App, Command, Component, Control, Dialog, Overlay, Prompt, PromptKind, Reply, Request,
    MAX_COMPARED,
};
use super::process;
use super::run_data::pct;
use super::setup::clip;
use super::ui::{panel, theme};
use crate::telemetry::store::{self, RunInfo};
use crate::telemetry::Summary;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub dir: PathBuf,
    pub name: String,
    pub status: store::RunState,
    pub summary: Option<Summary>,
    /// Model, optimizer, batch, epochs, precision — from the recorded config.
    pub about: String,
    /// The columns read from the recorded config.
    pub facts: RunFacts,
    /// Another live workbench drives it.
    pub locked_by: Option<u32>,
}

/// How the Runs list is ordered (`o` steps through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Newest first (run directories start with their start time).
    #[default]
    Newest,
    /// By the run's name (after the time stamp), then newest.
    Name,
    /// Live first, then incomplete, failed, stopped, finished.
    Status,
    /// Best accuracy, highest first.
    Accuracy,
    /// Training time, longest first.
    Time,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Newest,
        SortKey::Name,
        SortKey::Status,
        SortKey::Accuracy,
        SortKey::Time,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Newest => "newest",
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::Accuracy => "accuracy",
            SortKey::Time => "time",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

#[derive(Debug, Clone)]
pub struct RunsState {
    root: PathBuf,
    /// Every run in the runs directory, newest first.
    pub all: Vec<RunRow>,
    /// The runs shown: `all` filtered and sorted.
    pub rows: Vec<RunRow>,
    pub cursor: usize,
    /// Up to eight runs picked for Compare, in the order they were marked (A, B, C, …).
    pub marked: Vec<PathBuf>,
    /// `/`: only runs whose name, description or status contain every word of it.
    pub filter: String,
    pub sort: SortKey,
}

/// What the Runs table shows of a run's recorded config ("?" where it does not say).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunFacts {
    pub model: String,
    /// The mode, and the CPT schedule when there is one (`fp32 CR 3–8`).
    pub precision: String,
    /// The data set: `synthetic:…`, `download:…`, or a path's last part.
    pub data: String,
    pub devices: String,
}

/// The columns of a run from its `config.toml`, read loosely (a newer build may add fields).
pub fn facts(dir: &Path) -> RunFacts {
    let Ok(text) = std::fs::read_to_string(dir.join(store::CONFIG_FILE)) else {
        return RunFacts::default();
    };
    let Ok(t) = text.parse::<toml::Table>() else {
        return RunFacts::default();
    };
    let get = |a: &str, b: &str| t.get(a).and_then(|x| x.get(b)).cloned();
    let s = |v: Option<toml::Value>| match v {
        Some(toml::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => "?".into(),
    };
    let sched = t.get("precision").and_then(|p| p.get("schedule"));
    let mode = s(get("precision", "mode")).replace('?', "fp32");
    let precision = match sched.and_then(|s| s.get("kind")).and_then(|k| k.as_str()) {
        Some("static") => format!(
            "{mode} static {}",
            sched
                .and_then(|s| s.get("q_max"))
                .map_or("8".into(), |q| q.to_string())
        ),
        Some(k) => {
            let q = |key: &str, d: &str| {
                sched
                    .and_then(|s| s.get(key))
                    .map_or(d.to_string(), |q| q.to_string())
            };
            format!("{mode} {k} {}–{}", q("q_min", "3"), q("q_max", "8"))
        }
        None => mode,
    };
    let data = match get("data", "source") {
        Some(toml::Value::String(src)) if src.contains('/') => Path::new(&src)
            .file_name()
            .map_or(src.clone(), |n| n.to_string_lossy().into_owned()),
        Some(toml::Value::String(src)) => src,
        _ => "synthetic".into(),
    };
    RunFacts {
        model: s(get("model", "kind")),
        precision,
        data,
        devices: match get("devices", "devices") {
            Some(v) => s(Some(v)),
            None => "auto".into(),
        },
    }
}

/// A column of the Runs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Mark,
    Run,
    Status,
    Model,
    Precision,
    Data,
    Devices,
    Started,
    Time,
    Epochs,
    Final,
    Best,
    SecondsPerEpoch,
}

struct Column {
    kind: Col,
    title: &'static str,
    /// The title in a narrow table.
    short: Option<&'static str>,
    width: u16,
    /// Shown from this table width on (80 columns: the figures; 110: model, precision and
    /// time too; 150: everything).
    from: u16,
}

const fn col(kind: Col, title: &'static str, width: u16, from: u16) -> Column {
    Column {
        kind,
        title,
        short: None,
        width,
        from,
    }
}

const COLUMNS: [Column; 13] = [
    col(Col::Mark, "", 1, 0),
    col(Col::Run, "run", 20, 0),
    col(Col::Status, "status", 17, 0),
    col(Col::Model, "model", 12, 110),
    col(Col::Precision, "precision", 14, 110),
    col(Col::Data, "data", 18, 150),
    col(Col::Devices, "devices", 8, 150),
    col(Col::Started, "started", 11, 150),
    col(Col::Time, "time", 7, 110),
    Column {
        short: Some("ep"),
        ..col(Col::Epochs, "epochs", 6, 0)
    },
    col(Col::Final, "final", 7, 0),
    col(Col::Best, "best", 7, 0),
    Column {
        short: Some("s/ep"),
        ..col(Col::SecondsPerEpoch, "s/epoch", 7, 0)
    },
];

/// One cell of the Runs table.
fn cell(h: &RunsState, r: &RunRow, kind: Col) -> Cell<'static> {
    let s = r.summary.clone().unwrap_or_default();
    let f = &r.facts;
    // A run without a summary (live, interrupted) has no figures to show yet.
    let ended = |text: String| {
        if r.summary.is_some() {
            text
        } else {
            "-".into()
        }
    };
    match kind {
        Col::Mark => Cell::from(h.mark_of(&r.dir).unwrap_or(' ').to_string())
            .style(Style::default().fg(theme::ACCENT_B)),
        Col::Run => Cell::from(r.name.clone()),
        Col::Status => {
            use crate::telemetry::RunStatus as S;
            use store::RunState as R;
            let color = match r.status {
                R::Ended(S::Finished) => theme::GOOD,
                R::Live => theme::ACCENT,
                R::Ended(S::Failed | S::Diverged) => theme::BAD,
                R::Ended(S::Stopped) | R::Corrupt | R::Incomplete => theme::WARN,
            };
            let status = match r.locked_by {
                Some(_) => format!("{} (locked)", r.status),
                None => r.status.to_string(),
            };
            Cell::from(status).style(Style::default().fg(color))
        }
        Col::Model => Cell::from(f.model.clone()),
        Col::Precision => Cell::from(f.precision.clone()),
        Col::Data => Cell::from(f.data.clone()),
        Col::Devices => Cell::from(f.devices.clone()),
        Col::Started => Cell::from(started(&r.dir).unwrap_or_else(|| "-".into())),
        Col::Time => Cell::from(ended(duration(s.train_seconds))),
        Col::Epochs => Cell::from(ended(s.epochs.to_string())),
        Col::Final => Cell::from(pct(s.final_test_acc)),
        Col::Best => Cell::from(pct(s.best_test_acc)),
        Col::SecondsPerEpoch => Cell::from(if s.seconds_per_epoch.is_empty() {
            "-".into()
        } else {
            format!(
                "{:.1}",
                s.seconds_per_epoch.iter().sum::<f64>() / s.seconds_per_epoch.len() as f64
            )
        }),
    }
}

/// When a run started, from its directory's name (`YYYYMMDD-HHMMSS-name`): `MM-DD HH:MM`.
pub fn started(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let stamp = name.get(..15)?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").ok()?;
    Some(t.format("%m-%d %H:%M").to_string())
}

/// A duration as `42s`, `3m20s`, `1h02m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A line about a run from its `config.toml`, read loosely (a newer build may add fields).
pub fn about(dir: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(dir.join(store::CONFIG_FILE)) else {
        return String::new();
    };
    let Ok(t) = text.parse::<toml::Table>() else {
        return "unreadable config.toml".into();
    };
    let get = |a: &str, b: &str| t.get(a).and_then(|x| x.get(b)).cloned();
    let s = |v: Option<toml::Value>| match v {
        Some(toml::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => "?".into(),
    };
    let prec = t
        .get("precision")
        .and_then(|p| p.get("schedule"))
        .and_then(|s| s.get("kind"))
        .and_then(|k| k.as_str())
        .filter(|k| *k != "static")
        .map(|k| format!(" · CPT {k}"))
        .unwrap_or_default();
    format!(
        "{} · {} lr {} · batch {} · {} epochs · {}{} · seed {}",
        s(get("model", "kind")),
        s(get("optimizer", "kind")),
        s(get("optimizer", "lr")),
        s(get("train", "batch_size")),
        s(get("train", "epochs")),
        s(get("precision", "mode")).replace('?', "fp32"),
        prec,
        s(t.get("seed").cloned()),
    )
}

impl RunsState {
    pub fn new(root: &Path) -> RunsState {
        let mut s = RunsState {
            root: root.to_path_buf(),
            all: Vec::new(),
            rows: Vec::new(),
            cursor: 0,
            marked: Vec::new(),
            filter: String::new(),
            sort: SortKey::default(),
        };
        s.refresh(root);
        s
    }

    /// Re-reads the runs directory; true if anything shown changed.
    pub fn refresh(&mut self, root: &Path) -> bool {
        self.root = root.to_path_buf();
        let rows: Vec<RunRow> = store::list_runs(root)
            .into_iter()
            .map(|r: RunInfo| RunRow {
                status: r.status(),
                about: about(&r.dir),
                facts: facts(&r.dir),
                locked_by: process::locked_by_other(&r.dir),
                dir: r.dir,
                name: r.name,
                summary: r.summary,
            })
            .collect();
        let changed = rows != self.all;
        self.all = rows;
        self.arrange();
        self.marked.retain(|m| m.is_dir());
        changed
    }

    /// Applies the filter and the sort to `all`, keeping the cursor on the run it was on.
    fn arrange(&mut self) {
        let selected = self.rows.get(self.cursor).map(|r| r.dir.clone());
        let words: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let mut rows: Vec<RunRow> = self
            .all
            .iter()
            .filter(|r| {
                let f = &r.facts;
                let hay = format!(
                    "{} {} {} {} {} {}",
                    r.name, r.about, r.status, f.data, f.devices, f.precision
                )
                .to_lowercase();
                words.iter().all(|w| hay.contains(w.as_str()))
            })
            .cloned()
            .collect();
        let acc = |r: &RunRow| r.summary.as_ref().and_then(|s| s.best_test_acc);
        let secs = |r: &RunRow| r.summary.as_ref().map(|s| s.train_seconds);
        let rank = |r: &RunRow| {
            use crate::telemetry::RunStatus as S;
            use store::RunState as R;
            match r.status {
                R::Live => 0,
                R::Incomplete => 1,
                R::Corrupt => 2,
                R::Ended(S::Failed | S::Diverged) => 3,
                R::Ended(S::Stopped) => 4,
                R::Ended(S::Finished) => 5,
            }
        };
        let desc = |a: Option<f64>, b: Option<f64>| {
            b.unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&a.unwrap_or(f64::NEG_INFINITY))
        };
        // `all` is newest first; a stable sort keeps that order among equals.
        match self.sort {
            SortKey::Newest => {}
            SortKey::Name => rows.sort_by(|a, b| short_name(&a.name).cmp(short_name(&b.name))),
            SortKey::Status => rows.sort_by_key(rank),
            SortKey::Accuracy => rows.sort_by(|a, b| desc(acc(a), acc(b))),
            SortKey::Time => rows.sort_by(|a, b| desc(secs(a), secs(b))),
        }
        self.rows = rows;
        if let Some(i) = selected.and_then(|sel| self.rows.iter().position(|r| r.dir == sel)) {
            self.cursor = i;
        }
        self.cursor = self.cursor.min(self.rows.len().saturating_sub(1));
    }

    /// Sets the filter (as typed) and shows the runs that match.
    pub fn set_filter(&mut self, text: &str) {
        self.filter = text.to_string();
        self.arrange();
    }

    pub fn set_sort(&mut self, key: SortKey) {
        self.sort = key;
        self.arrange();
    }

    pub fn selected(&self) -> Option<&RunRow> {
        self.rows.get(self.cursor)
    }

    /// The letter of a marked run (A for the first marked), if it is marked.
    pub fn mark_of(&self, dir: &Path) -> Option<char> {
        let i = self.marked.iter().position(|m| m == dir)?;
        Some((b'A' + i as u8) as char)
    }
}

/// A run directory's name without its time stamp (`20250101-120000-cr-3-8` → `cr-3-8`).
pub fn short_name(name: &str) -> &str {
    let b = name.as_bytes();
    let stamped = b.len() > 16
        && b[8] == b'-'
        && b[15] == b'-'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if stamped {
        &name[16..]
    } else {
        name
    }
}

impl Component for RunsState {
    type Ctx<'a> = ();

    fn handle(&mut self, a: &Action, (): ()) -> Reply {
        let n = self.rows.len();
        let last = n.saturating_sub(1);
        let h = self;
        match a {
            Action::Up => h.cursor = h.cursor.saturating_sub(1),
            Action::Down => h.cursor = (h.cursor + 1).min(last),
            Action::PageUp => h.cursor = h.cursor.saturating_sub(10),
            Action::PageDown => h.cursor = (h.cursor + 10).min(last),
            Action::First => h.cursor = 0,
            Action::Last => h.cursor = last,
            Action::Pick(0, i) if *i < n => h.cursor = *i,
            Action::Wheel(_, d) => {
                h.cursor = (h.cursor as i64 + i64::from(*d)).clamp(0, last as i64) as usize
            }
            Action::Back if !h.filter.is_empty() => h.set_filter(""),
            Action::Key('/') => {
                return Reply::Then(Request::Overlay(Overlay::Prompt(Prompt {
                    input: super::line_edit::LineEdit::new(h.filter.clone()),
                    note: None,
                    kind: PromptKind::FilterRuns {
                        before: h.filter.clone(),
                    },
                })))
            }
            Action::Key('o') => {
                let next = h.sort.next();
                h.set_sort(next);
                return Reply::Then(Request::Say(
                    format!("runs sorted by {}", next.label()),
                    false,
                ));
            }
            Action::Key(' ') => {
                let Some(dir) = h.selected().map(|r| r.dir.clone()) else {
                    return Reply::Done;
                };
                if let Some(i) = h.marked.iter().position(|m| *m == dir) {
                    h.marked.remove(i);
                } else if h.marked.len() >= MAX_COMPARED {
                    return Reply::Then(Request::Say(
                        format!("Compare takes up to {MAX_COMPARED} runs: unmark one first"),
                        true,
                    ));
                } else {
                    h.marked.push(dir);
                }
            }
            Action::Key('R') => return Reply::Then(Request::RefreshRuns),
            Action::Key('u') => {
                if let Some(dir) = h.selected().map(|r| r.dir.clone()) {
                    return Reply::Then(Request::CloneRun(dir));
                }
            }
            Action::Key('r') => {
                let Some(row) = h.selected() else {
                    return Reply::Done;
                };
                return Reply::Then(match row.status {
                    store::RunState::Incomplete
                    | store::RunState::Ended(crate::telemetry::RunStatus::Stopped) => {
                        Request::ResumeRun(row.dir.clone())
                    }
                    store::RunState::Live => {
                        Request::Say("this run is live: Enter attaches to it".into(), false)
                    }
                    other => Request::Say(
                        format!("only an incomplete or stopped run resumes; this one is {other}"),
                        true,
                    ),
                });
            }
            Action::Select => {
                if let Some(dir) = h.selected().map(|r| r.dir.clone()) {
                    return Reply::Then(Request::OpenDir(dir));
                }
            }
            Action::Key('e') => return Reply::Then(Request::ExportRun),
            Action::Key('d') => {
                if let Some(row) = h.selected().cloned() {
                    return Reply::Then(Request::DeleteRun(Box::new(row)));
                }
            }
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

/// `u`: the run's recorded config into Setup (marked modified against its preset), to start
/// a new run like it.
pub fn clone_into_setup(app: &mut App, dir: &Path) {
    match store::read_config(dir) {
        Ok(cfg) => {
            let name = cfg.name.clone();
            app.setup.adopt(cfg);
            app.show(View::Setup);
            app.say(
                format!("Setup holds {name}'s config: change it, s starts a new run"),
                false,
            );
        }
        Err(e) => app.say(format!("cannot clone: {e}"), true),
    }
}

/// `r`: resumes the run in `dir` (`cptlab run --resume`) and shows it in the Dashboard.
pub fn resume(app: &mut App, dir: &Path) {
    let mut data = super::run_data::RunData::for_dir(dir);
    // The whole run, not only the new session: read before the child cuts the record back
    // to its checkpoint (the command is queued, so it starts after this).
    match store::read_metrics(dir) {
        Ok(events) => {
            data.apply_resumed_record(&events);
        }
        Err(e) => data.note(
            super::run_data::LogKind::Warn,
            format!("the earlier sessions are not shown: {e:#}"),
        ),
    }
    data.note(
        super::run_data::LogKind::Note,
        "resuming from the last checkpoint (`cptlab run --resume`)",
    );
    let id = app.add_run(data, super::app::Control::Launching, None);
    app.push_command(super::app::Command::Resume {
        run: id,
        dir: dir.to_path_buf(),
    });
    app.current = Some(id);
    app.open(View::Dashboard);
}

/// `R`: re-reads the runs directory and says how many runs it holds.
pub fn refresh(app: &mut App) {
    let root = app.paths.runs.clone();
    app.history.refresh(&root);
    app.say(format!("{} run(s)", app.history.rows.len()), false);
}

/// Enter: opens the run in `dir` in the Dashboard (replay, or attach if live).
pub fn open(app: &mut App, dir: &Path) {
    let id = app.open_dir(dir);
    app.current = Some(id);
    app.dash.log_scroll = 0;
    app.open(View::Dashboard);
}

/// `d`: asks before deleting, and refuses a live run.
pub fn ask_delete(app: &mut App, row: RunRow) {
    if row.status == store::RunState::Live || ours(app, &row.dir) {
        app.say(
            "a live run cannot be deleted: stop it first (x in its Dashboard)",
            true,
        );
        return;
    }
    app.overlay = Some(Overlay::Dialog(Dialog::DeleteRun {
        dir: row.dir,
        name: row.name,
    }));
}

/// True if this workbench has the run open and live.
fn ours(app: &App, dir: &Path) -> bool {
    app.runs
        .iter()
        .any(|s| s.data.dir.as_deref() == Some(dir) && s.data.status.is_active())
}

/// `c` in Runs: the marked runs (2–8, in the order marked), or the one marked and the one
/// under the cursor.
pub fn compare_marked(app: &mut App) {
    let h = &app.history;
    let mut dirs = h.marked.clone();
    if dirs.len() == 1 {
        if let Some(sel) = h.selected() {
            if sel.dir != dirs[0] {
                dirs.push(sel.dir.clone());
            }
        }
    }
    if dirs.len() < 2 {
        app.say(
            "mark 2–8 runs with space (or one, and put the cursor on another), then c",
            true,
        );
        return;
    }
    app.compared = dirs.iter().map(|d| app.open_dir(d)).collect();
    app.cmp = Default::default();
    app.open(View::Compare);
}

/// Writes `steps.csv` and `evals.csv` into the run directory (or, if that is read-only, the
/// current directory) and says where.
pub fn export(app: &mut App) {
    let Some(row) = app.history.selected().cloned() else {
        return;
    };
    let events = match store::read_metrics(&row.dir) {
        // Older builds' recordings count epochs from 0: exported 1-based like this build's.
        Ok(mut e) => {
            crate::telemetry::event::upgrade_epochs(&mut e);
            e
        }
        Err(e) => {
            app.say(format!("cannot read the metrics: {e:#}"), true);
            return;
        }
    };
    let files = [
        ("steps.csv", store::steps_csv(&events)),
        ("evals.csv", store::evals_csv(&events)),
    ];
    let write = |dir: &Path| -> std::io::Result<PathBuf> {
        for (name, text) in &files {
            store::write_atomic(&dir.join(name), text.as_bytes())?;
        }
        Ok(dir.to_path_buf())
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match write(&row.dir).or_else(|_| write(&cwd)) {
        Ok(dir) => app.say(
            format!("wrote steps.csv and evals.csv to {}", dir.display()),
            false,
        ),
        Err(e) => app.say(format!("cannot write the CSV files: {e}"), true),
    }
}

pub fn delete(app: &mut App, dir: &Path, name: &str) {
    // Checked again: the run may have come alive since the question.
    if store::live_pid(dir).is_some() || ours(app, dir) {
        app.say("a live run cannot be deleted", true);
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            let gone: Vec<_> = app
                .runs
                .iter()
                .filter(|s| s.data.dir.as_deref() == Some(dir))
                .map(|s| s.id)
                .collect();
            for id in gone {
                app.push_command(Command::Unfollow { run: id });
                app.runs.retain(|s| s.id != id);
                if app.current == Some(id) {
                    app.current = None;
                }
                app.compared.retain(|c| *c != id);
            }
            let root = app.paths.runs.clone();
            app.history.refresh(&root);
            app.say(format!("deleted {name}"), false);
        }
        Err(e) => app.say(format!("cannot delete {name}: {e}"), true),
    }
}

/// The list's area and the detail's below it.
pub fn layout(area: Rect) -> (Rect, Rect) {
    let [list, detail] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
    (list, detail)
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let h = &app.history;
    let (list, detail) = layout(area);
    if h.rows.is_empty() {
        let mut lines = vec![Line::from("")];
        if h.all.is_empty() {
            lines.push(Line::from("No runs yet."));
            lines.push(Line::from("Start one from Setup (1) with s."));
        } else {
            lines.push(Line::from(format!(
                "No run of {} matches \"{}\".",
                h.all.len(),
                h.filter
            )));
            lines.push(Line::from("/ changes the filter, Esc clears it."));
        }
        let p = Paragraph::new(lines).centered().block(panel("Runs", true));
        f.render_widget(p, list);
    } else {
        let cols: Vec<&Column> = COLUMNS.iter().filter(|c| area.width >= c.from).collect();
        let narrow = area.width < 110;
        let header: Vec<&str> = cols
            .iter()
            .map(|c| match (narrow, c.short) {
                (true, Some(short)) => short,
                _ => c.title,
            })
            .collect();
        let rows: Vec<Row> = h
            .rows
            .iter()
            .map(|r| Row::new(cols.iter().map(|c| cell(h, r, c.kind))))
            .collect();
        let widths: Vec<Constraint> = cols
            .iter()
            .map(|c| match c.kind {
                Col::Run => Constraint::Min(20),
                Col::Status if narrow => Constraint::Length(10),
                Col::Epochs if narrow => Constraint::Length(3),
                Col::SecondsPerEpoch if narrow => Constraint::Length(5),
                _ => Constraint::Length(c.width),
            })
            .collect();
        let mut title = if h.rows.len() == h.all.len() {
            format!("Runs · {}", h.rows.len())
        } else {
            format!("Runs · {} of {}", h.rows.len(), h.all.len())
        };
        if !h.filter.is_empty() {
            title.push_str(&format!(" · /{}", h.filter));
        }
        if h.sort != SortKey::Newest {
            title.push_str(&format!(" · by {}", h.sort.label()));
        }
        let t = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .block(panel(&title, true));
        let (_, shown) = super::ui::table_body(list);
        let mut state = TableState::default()
            .with_offset(super::ui::list_offset(h.cursor, shown))
            .with_selected(Some(h.cursor));
        f.render_stateful_widget(t, list, &mut state);
    }
    let w = detail.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    if let Some(r) = h.selected() {
        lines.push(Line::from(clip(&r.about, w)));
        let open = app
            .runs
            .iter()
            .find(|s| s.data.dir.as_deref() == Some(r.dir.as_path()));
        let note = match (r.locked_by, open.map(|s| &s.control)) {
            (Some(pid), _) => format!("driven by another workbench (pid {pid}): Enter watches it"),
            (_, Some(Control::Driven { .. })) => "driven by this workbench".into(),
            _ if r.status == store::RunState::Live => {
                "training headless: Enter attaches and takes control".into()
            }
            _ if r.status == store::RunState::Incomplete => {
                "interrupted: `cptlab run --resume <dir>` continues it".into()
            }
            _ => "Enter replays it in the Dashboard".into(),
        };
        lines.push(Line::styled(clip(&note, w), theme::muted()));
    }
    f.render_widget(Paragraph::new(lines).block(panel("run", false)), detail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_come_from_the_recorded_config_and_the_directory_name() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("20261203-061502-demo");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(
            run.join(store::CONFIG_FILE),
            "name = \"demo\"\n[model]\nkind = \"resnet20\"\n[data]\nsource = \"/data/cifar-10-batches-bin\"\n\
             [precision]\nmode = \"amp_bf16\"\n[precision.schedule]\nkind = \"CR\"\nq_min = 4\nq_max = 8\n\
             [devices]\ndevices = \"cpu:2\"\n",
        )
        .unwrap();
        let f = facts(&run);
        assert_eq!(f.model, "resnet20");
        assert_eq!(f.precision, "amp_bf16 CR 4–8");
        assert_eq!(f.data, "cifar-10-batches-bin");
        assert_eq!(f.devices, "cpu:2");
        assert_eq!(started(&run).as_deref(), Some("12-03 06:15"));
        assert_eq!(started(dir.path()), None);
        assert_eq!(facts(dir.path()), RunFacts::default(), "no config: blank");
        assert_eq!(
            (duration(42.4), duration(200.0), duration(3725.0)),
            ("42s".into(), "3m20s".into(), "1h02m".into())
        );
    }
}
