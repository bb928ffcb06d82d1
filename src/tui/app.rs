//! The workbench's state and the only place it changes: `update` (actions from keys) and
//! `on_msg` / `ingest` (what background threads report). Side effects on processes are queued
//! as `Command`s for the runtime to execute, so tests can drive the app without spawning
//! anything.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crossterm::event::KeyEvent;

use super::action::{Action, InputMode, View};
use super::compare::CompareState;
use super::dashboard::DashState;
use super::presets::PresetsState;
use super::process::{self, LockError};
use super::run_data::{Incoming, LogKind, RunData, RunStatus};
use super::runs::{RunRow, RunsState};
use super::sampler::DeviceSample;
use super::setup::{AbFirst, Field, SetupState};
use super::state::{self, SavedSetup};
use super::sweep::SweepsState;
use super::TuiOptions;
use crate::config::paths::Paths;
use crate::config::presets::{PresetEntry, PresetStore, DEFAULT_PRESET};
use crate::config::{DeviceSpec, RunConfig};
use crate::telemetry::event::Event;
use crate::telemetry::store;

pub type RunId = u64;

/// What background threads tell the app.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Run events are waiting in the inbox.
    Data,
    Spawned {
        run: RunId,
        pid: u32,
    },
    SpawnFailed {
        run: RunId,
        error: String,
    },
    /// A child exited (code, the tail of its stderr), or a followed run's process is gone.
    Exited {
        run: RunId,
        code: Option<i32>,
        stderr: String,
    },
    Notice {
        text: String,
        warn: bool,
    },
    Devices(DeviceSample),
    /// SIGHUP or SIGTERM reached the workbench: leave, letting runs finish headless.
    Hangup,
}

/// Side effects the runtime performs for the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Launch {
        run: RunId,
        config: Box<RunConfig>,
    },
    /// `cptlab run --resume DIR --json` (Runs: `r`).
    Resume {
        run: RunId,
        dir: PathBuf,
    },
    Follow {
        run: RunId,
        dir: PathBuf,
        live: bool,
    },
    Unfollow {
        run: RunId,
    },
    Signal {
        pid: u32,
        signal: i32,
    },
}

/// What a view's own key handling hands back. A view (a `Component`) changes only its own
/// state and asks the app for anything beyond it, as in ratatui's component template.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Not an action for this view (or not in its current state).
    Ignored,
    /// Handled inside the view's own state.
    Done,
    /// Handled; the app does the rest.
    Then(Request),
}

/// What a view asks of the app (`App::apply`).
#[derive(Debug, Clone)]
pub enum Request {
    /// Make run `id` the Dashboard's run.
    Current(RunId),
    /// Show run `id` in the Dashboard, remembering where `Esc` goes back to.
    Open(RunId),
    /// Make Compare's run at this index the baseline (first: the others' Δ are against it).
    Baseline(usize),
    /// The next loss smoothing weight (Dashboard and Compare share it).
    Smoothing,
    /// Open the run in this directory in the Dashboard (replay, or attach if live).
    OpenDir(PathBuf),
    /// Re-read the runs directory.
    RefreshRuns,
    /// Write the selected run's CSV files.
    ExportRun,
    /// Put this run's recorded config into Setup (Runs: `u`).
    CloneRun(PathBuf),
    /// Resume this incomplete or stopped run (Runs: `r`).
    ResumeRun(PathBuf),
    /// Ask before deleting this run (refused while it is live).
    DeleteRun(Box<RunRow>),
    /// Load this preset into Setup (asks first over unsaved edits).
    LoadPreset(Box<PresetEntry>),
    /// Ask for a name to save the setup under.
    SavePreset,
    Overlay(Overlay),
    Say(String, bool),
}

/// One view's state and key handling: `handle` sees the action and what it reads of the rest of
/// the app (`Ctx`), changes only `self`, and returns what the app should do besides. The keys it
/// answers are declared in its table in `keys`.
pub trait Component {
    type Ctx<'a>;
    fn handle(&mut self, action: &Action, ctx: Self::Ctx<'_>) -> Reply;
}

/// The Setup form keeps its own `handle` (it reads nothing outside itself).
impl Component for SetupState {
    type Ctx<'a> = ();

    fn handle(&mut self, action: &Action, (): ()) -> Reply {
        if SetupState::handle(self, action) {
            Reply::Done
        } else {
            Reply::Ignored
        }
    }
}

/// How this workbench relates to a run's process.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Nothing to control: a replay, or a run that has ended.
    None,
    /// Live (training in `pid`), but another workbench (`holder`) drives it.
    Watching {
        holder: u32,
        pid: u32,
    },
    /// Waiting for its turn (A/B one after the other).
    Queued(Box<RunConfig>),
    Launching,
    /// This workbench drives it: pause, resume, stop go to `pid`.
    Driven {
        pid: u32,
        /// Started by this workbench (its stdout is ours) rather than attached.
        child: bool,
        lock: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct RunSlot {
    pub id: RunId,
    pub data: RunData,
    pub control: Control,
    /// 'A' or 'B' for a pair launched together.
    pub tag: Option<char>,
}

impl RunSlot {
    pub fn pid(&self) -> Option<u32> {
        match self.control {
            Control::Driven { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Live and driven (or about to be) by this workbench.
    pub fn ours_and_live(&self) -> bool {
        match self.control {
            Control::Driven { .. } | Control::Launching => {
                self.data.status.is_active() || self.data.status == RunStatus::Starting
            }
            Control::Queued(_) => true,
            _ => false,
        }
    }

    pub fn title(&self) -> String {
        match self.tag {
            Some(t) => format!("{t}: {}", self.data.label),
            None => self.data.label.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    /// Leaving while runs are live: stop them, or let them finish headless.
    QuitLive,
    /// Leaving with Setup changed from its preset (remembered, but not saved as a preset).
    QuitUnsaved,
    /// `s`: what will start, asked once.
    ConfirmStart(Box<RunConfig>),
    /// Loading a preset would replace Setup's unsaved edits.
    LoadOverEdits {
        name: String,
        config: Box<RunConfig>,
    },
    StopRun(RunId),
    DeleteRun {
        dir: PathBuf,
        name: String,
    },
    DeletePreset(String),
    OverwritePreset {
        name: String,
        config: Box<RunConfig>,
        /// The name is a built-in's (the user preset would shadow it), not a user preset's.
        built_in: bool,
    },
    /// A/B pair: one after the other, or side by side on split devices.
    AbMode,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    SavePreset,
    DuplicatePreset(String),
    /// `/` in Runs: the filter, applied as it is typed (`before` comes back on Esc).
    FilterRuns {
        before: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub kind: PromptKind,
    pub input: super::line_edit::LineEdit,
    /// Why the text was not taken (shown in the prompt, which stays open with the text).
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Help,
    Dialog(Dialog),
    Prompt(Prompt),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub warn: bool,
}

const HISTORY: usize = 120;

#[derive(Debug, Clone, Default)]
pub struct GpuHist {
    pub name: String,
    pub util: VecDeque<f64>,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem: VecDeque<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcHist {
    pub cores: VecDeque<f64>,
    pub workers: BTreeMap<String, VecDeque<f64>>,
}

/// Device figures over the last couple of minutes.
#[derive(Debug, Clone, Default)]
pub struct DeviceHistory {
    pub gpus: BTreeMap<u32, GpuHist>,
    pub procs: HashMap<u32, ProcHist>,
    pub nvml_note: Option<String>,
}

fn push_hist(h: &mut VecDeque<f64>, x: f64) {
    if h.len() >= HISTORY {
        h.pop_front();
    }
    h.push_back(x);
}

impl DeviceHistory {
    pub fn add(&mut self, s: DeviceSample) {
        if let Some(n) = s.nvml_error {
            self.nvml_note = Some(n);
        }
        for g in s.gpus {
            let h = self.gpus.entry(g.index).or_default();
            h.name = g.name;
            h.mem_used = g.mem_used;
            h.mem_total = g.mem_total;
            push_hist(&mut h.util, f64::from(g.util) / 100.0);
            let mem = if g.mem_total > 0 {
                g.mem_used as f64 / g.mem_total as f64
            } else {
                0.0
            };
            push_hist(&mut h.mem, mem);
        }
        for p in s.procs {
            let h = self.procs.entry(p.pid).or_default();
            push_hist(&mut h.cores, p.cores);
            for (name, share) in p.workers {
                push_hist(h.workers.entry(name).or_default(), share);
            }
        }
    }
}

pub struct App {
    pub paths: Paths,
    pub view: View,
    back: Vec<View>,
    pub overlay: Option<Overlay>,
    pub setup: SetupState,
    pub runs: Vec<RunSlot>,
    /// The run the Dashboard shows.
    pub current: Option<RunId>,
    /// The runs Compare overlays (2–8), the baseline first.
    pub compared: Vec<RunId>,
    pub presets: PresetsState,
    pub history: RunsState,
    /// The Sweeps view: the sweep directories in the runs directory.
    pub sweeps: SweepsState,
    pub devices: DeviceHistory,
    pub dash: DashState,
    pub cmp: CompareState,
    pub status: Option<Status>,
    /// Set when the app should end, with the exit code.
    pub exit: Option<i32>,
    commands: Vec<Command>,
    next_id: RunId,
    /// CPU cores, for splitting a CPU between an A/B pair.
    pub cores: usize,
    /// `--data` / `CPTLAB_DATA`: kept when a preset is loaded.
    pub data_override: Option<String>,
    /// Set by Ctrl-Z: the event loop hands the terminal back and stops the process.
    pub suspend: bool,
    /// Set by `e` on Setup: the event loop hands the terminal to the editor (`edit_config`).
    pub edit: bool,
    /// Loss smoothing: an index into `SMOOTHING`.
    pub smoothing: usize,
    /// Lines the help is scrolled by (it is longer than an 80×24 terminal).
    pub help_scroll: usize,
    /// The state file (the remembered Setup) and the Setup revision last written to it.
    pub state_path: PathBuf,
    saved_rev: Option<u64>,
    state_error: Option<String>,
}

/// The loss smoothing weights `m` steps through (TensorBoard's EMA; 0.6 is its default).
pub const SMOOTHING: [f64; 6] = [0.0, 0.6, 0.8, 0.9, 0.95, 0.99];
/// Compare overlays at most this many runs (letters A–H).
pub const MAX_COMPARED: usize = 8;

impl App {
    pub fn new(paths: Paths, opts: &TuiOptions) -> App {
        let store = PresetStore::new(&paths.presets);
        let name = opts.preset.as_deref().unwrap_or(DEFAULT_PRESET);
        let (cfg, preset, status) = match store.load(name) {
            Ok(c) => (c, name.to_string(), None),
            Err(e) => {
                let c = store
                    .load(DEFAULT_PRESET)
                    .expect("the built-in default preset parses");
                (
                    c,
                    DEFAULT_PRESET.to_string(),
                    Some(Status {
                        text: e.to_string(),
                        warn: true,
                    }),
                )
            }
        };
        let data = opts.data.as_deref();
        let mut setup = SetupState::new(cfg, &preset, data);
        let mut notes: Vec<Status> = status.into_iter().collect();
        // The last Setup, unless a preset was asked for on the command line.
        let state_path = state::state_path(&paths);
        if opts.preset.is_none() {
            match state::load(&state_path) {
                Ok(Some(saved)) => {
                    if let Some(n) = restore_setup(&mut setup, &store, saved, data) {
                        notes.push(n);
                    }
                }
                Ok(None) => {}
                Err(e) => notes.push(Status {
                    text: format!("remembered Setup ignored: {e}"),
                    warn: true,
                }),
            }
        }
        // Checked against this machine from the start (devices, threads, fp16 on a CPU).
        setup.machine = opts.machine;
        if setup.machine.is_some() {
            setup.recheck();
        }
        let status = notes.into_iter().reduce(|a, b| Status {
            text: format!("{} · {}", a.text, b.text),
            warn: a.warn || b.warn,
        });
        let saved_rev = Some(setup.rev);
        let mut app = App {
            presets: PresetsState::new(&paths.presets),
            history: RunsState::new(&paths.runs),
            sweeps: SweepsState::new(&paths.runs),
            paths,
            view: View::Setup,
            back: Vec::new(),
            overlay: None,
            setup,
            runs: Vec::new(),
            current: None,
            compared: Vec::new(),
            devices: DeviceHistory::default(),
            dash: DashState::default(),
            cmp: CompareState::default(),
            status,
            exit: None,
            commands: Vec::new(),
            next_id: 1,
            cores: opts.machine.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |m| m.cores,
            ),
            data_override: opts.data.clone(),
            suspend: false,
            edit: false,
            smoothing: 1,
            help_scroll: 0,
            state_path,
            saved_rev,
            state_error: None,
        };
        // Runs left training headless by an earlier session: offer to attach.
        let live: Vec<usize> = app
            .history
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == store::RunState::Live)
            .map(|(i, _)| i)
            .collect();
        if let Some(&first) = live.first() {
            app.view = View::Runs;
            app.history.cursor = first;
            let mut text = format!(
                "{} run(s) still training headless: Enter attaches",
                live.len()
            );
            let mut warn = false;
            if let Some(s) = &app.status {
                text = format!("{text} · {}", s.text);
                warn = s.warn;
            }
            app.say(text, warn);
        }
        app
    }

    /// What the state file would hold now.
    pub fn state_text(&self) -> String {
        let s = &self.setup;
        SavedSetup {
            version: state::VERSION,
            preset: s.preset.clone(),
            fields: s.fields(),
            config: s.check.config.clone().unwrap_or_else(|| s.base.clone()),
        }
        .to_text()
    }

    /// Writes the remembered Setup if it changed since the last write (or always, `force`, at
    /// quit). The event loop calls it every couple of seconds, before a suspend and at exit; a
    /// failure is said once, never fatal.
    pub fn persist_state(&mut self, force: bool) {
        if !force && self.saved_rev == Some(self.setup.rev) {
            return;
        }
        match state::save(&self.state_path, &self.state_text()) {
            Ok(()) => {
                self.saved_rev = Some(self.setup.rev);
                self.state_error = None;
            }
            Err(e) => {
                // Not again for the same revision, and the same error is said once.
                self.saved_rev = Some(self.setup.rev);
                if self.state_error.as_deref() != Some(e.as_str()) {
                    self.say(format!("cannot remember the Setup: {e}"), true);
                    self.state_error = Some(e);
                }
            }
        }
    }

    /// `e` on Setup, once the terminal is the editor's: writes the whole config (or the text a
    /// failed edit left, with its error on top), runs `editor` on it, and takes what comes
    /// back if it parses and validates. An error is shown in the form and the text is kept.
    pub fn edit_config(&mut self, editor: &str) {
        let path = super::editor::edit_path(&self.paths);
        let s = &self.setup;
        let cfg = s.check.config.clone().unwrap_or_else(|| s.base.clone());
        let result = super::editor::prepare(&path, &cfg, s.edit_error.as_deref())
            .and_then(|()| super::editor::run_editor(editor, &path))
            .and_then(|()| super::editor::read_back(&path));
        match result {
            Ok(cfg) => {
                self.setup.adopt(cfg);
                let _ = std::fs::remove_file(&path);
                self.say("Setup takes the edited config", false);
            }
            Err(e) => {
                self.say(
                    format!(
                        "edited config not taken: {e} (kept in {}; e reopens it)",
                        path.display()
                    ),
                    true,
                );
                self.setup.edit_error = Some(e);
            }
        }
    }

    /// True if the last write of the remembered Setup failed.
    pub fn state_unsaved(&self) -> bool {
        self.state_error.is_some()
    }

    /// The loss smoothing weight in use.
    pub fn smoothing_weight(&self) -> f64 {
        SMOOTHING[self.smoothing % SMOOTHING.len()]
    }

    /// The compared runs that are open, in order (the baseline first).
    pub fn compared_slots(&self) -> Vec<&RunSlot> {
        self.compared
            .iter()
            .filter_map(|id| self.slot(*id))
            .collect()
    }

    pub fn say(&mut self, text: impl Into<String>, warn: bool) {
        self.status = Some(Status {
            text: text.into(),
            warn,
        });
    }

    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    pub fn push_command(&mut self, c: Command) {
        self.commands.push(c);
    }

    pub fn input_mode(&self) -> InputMode {
        match &self.overlay {
            Some(Overlay::Prompt(_)) => InputMode::Text,
            Some(Overlay::Dialog(_)) => InputMode::Dialog,
            _ if self.view == View::Setup && self.setup.captures_keys() => InputMode::Text,
            _ => InputMode::Normal,
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) {
        if let Some(a) = Action::from_key(key, self.input_mode()) {
            self.update(a);
        }
    }

    pub fn slot(&self, id: RunId) -> Option<&RunSlot> {
        self.runs.iter().find(|s| s.id == id)
    }

    pub fn slot_mut(&mut self, id: RunId) -> Option<&mut RunSlot> {
        self.runs.iter_mut().find(|s| s.id == id)
    }

    pub fn current_slot(&self) -> Option<&RunSlot> {
        self.current.and_then(|id| self.slot(id))
    }

    /// Runs this workbench drives that are still going (or waiting to).
    pub fn live_runs(&self) -> Vec<RunId> {
        self.runs
            .iter()
            .filter(|s| s.ours_and_live())
            .map(|s| s.id)
            .collect()
    }

    /// Processes the device sampler should watch.
    pub fn watched_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .runs
            .iter()
            .filter(|s| s.data.status.is_active())
            .filter_map(|s| match s.control {
                Control::Driven { pid, .. } => Some(pid),
                Control::Watching { pid, .. } => Some(pid),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn show(&mut self, v: View) {
        self.back.clear();
        self.enter(v);
    }

    /// Opens `v`, remembering where `Esc` goes back to.
    pub fn open(&mut self, v: View) {
        if self.view != v {
            self.back.push(self.view);
        }
        self.enter(v);
    }

    fn enter(&mut self, v: View) {
        self.view = v;
        match v {
            View::Runs => {
                self.history.refresh(&self.paths.runs);
            }
            View::Presets => self.presets.refresh(),
            View::Sweeps => {
                self.sweeps.refresh(&self.paths.runs);
            }
            _ => {}
        }
    }

    /// Called every couple of seconds; true if something visible changed.
    pub fn on_tick(&mut self) -> bool {
        if self.view == View::Runs && self.overlay.is_none() {
            return self.history.refresh(&self.paths.runs);
        }
        if self.view == View::Sweeps && self.overlay.is_none() {
            return self.sweeps.refresh(&self.paths.runs);
        }
        false
    }

    /// Applies one action. Returns false if it meant nothing in the current view and state (the
    /// key tests check that every action a view answers has a key listed in its help).
    pub fn update(&mut self, action: Action) -> bool {
        if let Some(ov) = self.overlay.clone() {
            self.update_overlay(ov, action);
            return true;
        }
        if self.view == View::Setup
            && self.setup.captures_keys()
            && !matches!(action, Action::Interrupt | Action::Suspend)
        {
            return self.setup.handle(&action);
        }
        match action {
            Action::Interrupt => self.interrupt(),
            Action::Suspend => self.suspend = true,
            Action::Key('e') if self.view == View::Setup => self.edit = true,
            Action::Quit => self.request_quit(),
            Action::Help => {
                self.help_scroll = 0;
                self.overlay = Some(Overlay::Help);
            }
            Action::Show(v) => self.show(v),
            Action::Back => {
                // The view cancels what it has open first; then back to where the user came
                // from. Never a quit.
                if matches!(self.view_handle(&Action::Back), Reply::Ignored) {
                    match self.back.pop() {
                        Some(v) => self.enter(v),
                        None => self.say("Esc goes back; q quits", false),
                    }
                }
            }
            Action::Start => {
                if self.view == View::Setup {
                    self.start_from_setup();
                } else {
                    self.say("s starts the run set up in Setup (1)", false);
                }
            }
            Action::PauseResume => self.pause_resume(),
            Action::Stop => match self.current_slot() {
                Some(s) if s.pid().is_some() && s.data.status.is_active() => {
                    self.overlay = Some(Overlay::Dialog(Dialog::StopRun(s.id)));
                }
                Some(s) if matches!(s.control, Control::Watching { .. }) => {
                    self.say("another workbench drives this run: stop it there", true)
                }
                _ => self.say("no live run of this workbench to stop", false),
            },
            Action::Compare => match self.view {
                View::Setup => self.ab_step(),
                View::Runs => super::runs::compare_marked(self),
                View::Sweeps => super::sweep::compare(self),
                _ => {
                    // The open runs (the last eight), unless a comparison is set up already.
                    if self.compared.len() < 2 && self.runs.len() >= 2 {
                        let n = self.runs.len();
                        self.compared = self.runs[n.saturating_sub(MAX_COMPARED)..]
                            .iter()
                            .map(|s| s.id)
                            .collect();
                        self.cmp = CompareState::default();
                    }
                    self.open(View::Compare);
                }
            },
            other => {
                return match self.view_handle(&other) {
                    Reply::Ignored => false,
                    Reply::Done => true,
                    Reply::Then(r) => {
                        self.apply(r);
                        true
                    }
                };
            }
        }
        true
    }

    /// Hands `action` to the current view's component.
    fn view_handle(&mut self, action: &Action) -> Reply {
        match self.view {
            View::Setup => Component::handle(&mut self.setup, action, ()),
            View::Dashboard => self.dash.handle(action, (&self.runs, self.current)),
            View::Compare => self.cmp.handle(action, &self.compared),
            View::Presets => self.presets.handle(action, ()),
            View::Runs => self.history.handle(action, ()),
            View::Sweeps => self.sweeps.handle(action, ()),
        }
    }

    /// Does what a view asked for.
    pub fn apply(&mut self, r: Request) {
        match r {
            Request::Current(id) => self.current = Some(id),
            Request::Open(id) => {
                self.current = Some(id);
                self.open(View::Dashboard);
            }
            Request::Baseline(i) => {
                if i < self.compared.len() {
                    let id = self.compared.remove(i);
                    self.compared.insert(0, id);
                    self.cmp.sel = 0;
                }
            }
            Request::Smoothing => {
                self.smoothing = (self.smoothing + 1) % SMOOTHING.len();
                let w = self.smoothing_weight();
                self.say(
                    if w == 0.0 {
                        "loss smoothing off".to_string()
                    } else {
                        format!("loss smoothing {w} (EMA; raw shown faint)")
                    },
                    false,
                );
            }
            Request::OpenDir(dir) => super::runs::open(self, &dir),
            Request::RefreshRuns => super::runs::refresh(self),
            Request::ExportRun => super::runs::export(self),
            Request::CloneRun(dir) => super::runs::clone_into_setup(self, &dir),
            Request::ResumeRun(dir) => super::runs::resume(self, &dir),
            Request::DeleteRun(row) => super::runs::ask_delete(self, *row),
            Request::LoadPreset(entry) => super::presets::ask_load(self, *entry),
            Request::SavePreset => super::presets::ask_save(self),
            Request::Overlay(o) => self.overlay = Some(o),
            Request::Say(text, warn) => self.say(text, warn),
        }
    }

    fn update_overlay(&mut self, ov: Overlay, action: Action) {
        match ov {
            Overlay::Help => match action {
                Action::Interrupt => {
                    self.overlay = None;
                    self.interrupt();
                }
                Action::Suspend => self.suspend = true,
                // q closes help like a pager; it quits only from a view.
                Action::Back | Action::Quit | Action::Help | Action::Select => self.overlay = None,
                // Scrolled like a pager too (drawing stops at its end).
                Action::Down => self.help_scroll += 1,
                Action::Up => self.help_scroll = self.help_scroll.saturating_sub(1),
                Action::PageDown => self.help_scroll += 10,
                Action::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                Action::Wheel(_, d) => {
                    self.help_scroll = (self.help_scroll as i64 + i64::from(d)).max(0) as usize
                }
                _ => {}
            },
            Overlay::Prompt(mut p) => match action {
                a if p.input.handle(&a) => {
                    self.prompt_changed(&p);
                    self.overlay = Some(Overlay::Prompt(p));
                }
                Action::Select => {
                    self.overlay = None;
                    match p.kind {
                        PromptKind::FilterRuns { .. } => {}
                        _ => super::presets::submit_prompt(self, p),
                    }
                }
                Action::Back => {
                    self.overlay = None;
                    if let PromptKind::FilterRuns { before } = &p.kind {
                        self.history.set_filter(before);
                    }
                }
                Action::Suspend => {
                    self.suspend = true;
                    self.overlay = Some(Overlay::Prompt(p));
                }
                Action::Interrupt => {
                    self.overlay = None;
                    self.interrupt();
                }
                _ => {}
            },
            Overlay::Dialog(d) => self.dialog(d, action),
        }
    }

    /// A prompt's text changed (the Runs filter applies as it is typed).
    fn prompt_changed(&mut self, p: &Prompt) {
        if let PromptKind::FilterRuns { .. } = p.kind {
            self.history.set_filter(p.input.text());
        }
    }

    fn dialog(&mut self, d: Dialog, action: Action) {
        if action == Action::Suspend {
            self.suspend = true;
            return;
        }
        let yes = matches!(action, Action::Select | Action::Key('y'));
        // q in a dialog answers no, except in the quit dialogs, where a second q quits.
        let no = matches!(action, Action::Back | Action::Key('n') | Action::Quit);
        match d {
            Dialog::QuitLive => match action {
                Action::Stop => {
                    self.overlay = None;
                    self.stop_all();
                    self.finish(0);
                }
                Action::Key('d') | Action::Interrupt | Action::Quit => {
                    self.overlay = None;
                    self.detach_all();
                    self.finish(0);
                }
                Action::Back => self.overlay = None,
                _ => {}
            },
            Dialog::QuitUnsaved => match action {
                Action::Key('y') | Action::Select | Action::Quit | Action::Interrupt => {
                    self.overlay = None;
                    self.finish(0);
                }
                Action::Key('s') => {
                    self.overlay = None;
                    super::presets::ask_save(self);
                }
                Action::Back | Action::Key('n') => self.overlay = None,
                _ => {}
            },
            Dialog::ConfirmStart(cfg) if yes => {
                self.overlay = None;
                self.start_config(*cfg);
            }
            Dialog::LoadOverEdits { name, config } if yes => {
                self.overlay = None;
                super::presets::load_config(self, &name, *config);
            }
            Dialog::StopRun(id) if yes => {
                self.overlay = None;
                self.stop_run(id);
            }
            Dialog::DeleteRun { dir, name } if yes => {
                self.overlay = None;
                super::runs::delete(self, &dir, &name);
            }
            Dialog::DeletePreset(name) if yes => {
                self.overlay = None;
                super::presets::delete(self, &name);
            }
            Dialog::OverwritePreset { name, config, .. } if yes => {
                self.overlay = None;
                super::presets::save(self, &name, &config, true);
                super::presets::adopt(self, &name, &config);
            }
            Dialog::AbMode => match action {
                Action::Key('1') => {
                    self.overlay = None;
                    self.launch_pair(false);
                }
                Action::Key('2') => {
                    self.overlay = None;
                    self.launch_pair(true);
                }
                Action::Back => self.overlay = None,
                _ => {}
            },
            _ if no || action == Action::Interrupt => self.overlay = None,
            _ => {}
        }
    }

    /// `q` (and Ctrl-C): quits, asking first while runs of this workbench are live or Setup
    /// has changes that no preset holds.
    fn request_quit(&mut self) {
        if !self.live_runs().is_empty() {
            self.overlay = Some(Overlay::Dialog(Dialog::QuitLive));
        } else if self.setup.modified() {
            self.overlay = Some(Overlay::Dialog(Dialog::QuitUnsaved));
        } else {
            self.finish(0);
        }
    }

    fn interrupt(&mut self) {
        self.request_quit();
    }

    /// Ends the app, releasing every lock this workbench holds.
    pub fn finish(&mut self, code: i32) {
        for s in &mut self.runs {
            if let Control::Driven {
                lock: Some(path), ..
            } = &s.control
            {
                process::release_lock(path);
            }
        }
        self.exit = Some(code);
    }

    /// Leaves every live run to finish headless (a paused one is resumed first: nobody would
    /// be left to resume it).
    pub fn detach_all(&mut self) {
        let mut cmds = Vec::new();
        for s in &mut self.runs {
            if let (Control::Driven { pid, .. }, RunStatus::Paused) = (&s.control, &s.data.status) {
                cmds.push(Command::Signal {
                    pid: *pid,
                    signal: libc::SIGCONT,
                });
                s.data.status = RunStatus::Training;
            }
            if matches!(s.control, Control::Queued(_)) {
                s.control = Control::None;
                s.data.status = RunStatus::Failed("not started: the workbench was closed".into());
            }
        }
        self.commands.extend(cmds);
    }

    fn stop_all(&mut self) {
        let ids: Vec<RunId> = self.live_runs();
        for id in ids {
            self.stop_run(id);
        }
    }

    fn stop_run(&mut self, id: RunId) {
        let Some(s) = self.slot_mut(id) else { return };
        match s.control.clone() {
            Control::Driven { pid, .. } if s.data.status.is_active() => {
                let paused = s.data.status == RunStatus::Paused;
                s.data.status = RunStatus::Stopping;
                s.data.note(
                    LogKind::Note,
                    "stop requested: the run checkpoints and writes its summary",
                );
                self.commands.push(Command::Signal {
                    pid,
                    signal: libc::SIGTERM,
                });
                if paused {
                    // A stopped process handles SIGTERM only once it runs again.
                    self.commands.push(Command::Signal {
                        pid,
                        signal: libc::SIGCONT,
                    });
                }
            }
            Control::Queued(_) => {
                s.control = Control::None;
                s.data.status = RunStatus::Ended(crate::telemetry::RunStatus::Stopped);
                s.data.note(LogKind::Note, "removed from the queue");
            }
            _ => {}
        }
    }

    fn pause_resume(&mut self) {
        let Some(id) = self.current else {
            self.say(
                "no run open: start one in Setup (1) or open one in Runs (5)",
                false,
            );
            return;
        };
        let Some(s) = self.slot_mut(id) else { return };
        let (pid, status) = match (&s.control, &s.data.status) {
            (Control::Driven { pid, .. }, st) => (*pid, st.clone()),
            (Control::Watching { holder, .. }, _) => {
                let h = *holder;
                self.say(
                    format!("another workbench (pid {h}) drives this run: watching only"),
                    true,
                );
                return;
            }
            _ => {
                self.say("this run is not live", false);
                return;
            }
        };
        let (signal, next, note) = match status {
            RunStatus::Training => (libc::SIGSTOP, RunStatus::Paused, "paused"),
            RunStatus::Paused => (libc::SIGCONT, RunStatus::Training, "resumed"),
            _ => {
                self.say("the run cannot be paused right now", false);
                return;
            }
        };
        s.data.status = next;
        s.data.note(LogKind::Note, note);
        self.commands.push(Command::Signal { pid, signal });
    }

    /// Adds a run to the workbench (scripted runs in tests come in here too).
    pub fn add_run(&mut self, data: RunData, control: Control, tag: Option<char>) -> RunId {
        let id = self.next_id;
        self.next_id += 1;
        self.runs.push(RunSlot {
            id,
            data,
            control,
            tag,
        });
        id
    }

    fn launch(&mut self, config: RunConfig, tag: Option<char>, queued: bool) -> RunId {
        let mut data = RunData::new(config.name.clone());
        if queued {
            data.status = RunStatus::Queued;
            let id = self.add_run(data, Control::Queued(Box::new(config)), tag);
            if let Some(s) = self.slot_mut(id) {
                s.data
                    .note(LogKind::Note, "queued: starts when the run before it ends");
            }
            return id;
        }
        data.note(
            LogKind::Note,
            "starting `cptlab run` (decoding data, building the model)",
        );
        let id = self.add_run(data, Control::Launching, tag);
        self.commands.push(Command::Launch {
            run: id,
            config: Box::new(config),
        });
        id
    }

    /// `s` in Setup: shows what will start and asks once.
    fn start_from_setup(&mut self) {
        let Some(cfg) = self
            .setup
            .check
            .config
            .clone()
            .filter(|_| self.setup.check.ok())
        else {
            let c = &self.setup.check;
            let n = c.errors.len() + c.setting_errors.len() + usize::from(c.general.is_some());
            // The first marked row comes into view (it may be far down the settings).
            self.setup.focus_first_problem();
            self.say(
                format!("cannot start: fix the {n} marked field(s) first"),
                true,
            );
            return;
        };
        self.overlay = Some(Overlay::Dialog(Dialog::ConfirmStart(Box::new(cfg))));
    }

    /// Starts `cfg` (confirmed) and shows it in the Dashboard.
    fn start_config(&mut self, cfg: RunConfig) {
        let id = self.launch(cfg, None, false);
        self.current = Some(id);
        self.open(View::Dashboard);
    }

    /// `c` in Setup: remember A, then (second press) choose how to run the pair.
    fn ab_step(&mut self) {
        let Some(cfg) = self
            .setup
            .check
            .config
            .clone()
            .filter(|_| self.setup.check.ok())
        else {
            self.say("cannot set up A/B: fix the marked fields first", true);
            return;
        };
        if self.setup.ab_first.is_none() {
            self.setup.ab_first = Some(AbFirst {
                config: cfg,
                summary: self.setup.summary(),
            });
            self.say(
                "A stored. Change the setup for B, then press c again (same seed is kept)",
                false,
            );
        } else {
            self.overlay = Some(Overlay::Dialog(Dialog::AbMode));
        }
    }

    fn launch_pair(&mut self, side_by_side: bool) {
        let (Some(first), Some(b)) = (self.setup.ab_first.clone(), self.setup.check.config.clone())
        else {
            return;
        };
        let mut a = first.config;
        let mut b = b;
        b.seed = a.seed;
        if a.name == b.name {
            a.name = format!("{}-a", a.name);
            b.name = format!("{}-b", b.name);
        }
        if side_by_side {
            if a.devices.devices == b.devices.devices {
                match split_devices(&a.devices.devices, self.cores) {
                    Ok((da, db, threads)) => {
                        a.devices.devices = da;
                        b.devices.devices = db;
                        if a.devices.threads.is_none() {
                            a.devices.threads = threads;
                        }
                        if b.devices.threads.is_none() {
                            b.devices.threads = threads;
                        }
                    }
                    Err(e) => {
                        self.say(format!("cannot run side by side: {e}"), true);
                        return;
                    }
                }
            }
            for c in [&a, &b] {
                if let Err(e) = c.validate() {
                    self.say(format!("cannot run side by side: {e}"), true);
                    return;
                }
            }
        }
        let ida = self.launch(a, Some('A'), false);
        let idb = self.launch(b, Some('B'), !side_by_side);
        self.setup.ab_first = None;
        self.compared = vec![ida, idb];
        self.current = Some(ida);
        self.cmp = CompareState::default();
        self.open(View::Compare);
        self.say(
            if side_by_side {
                "A and B started side by side with the same seed"
            } else {
                "A started; B (same seed) starts when A ends"
            },
            false,
        );
    }

    /// Starts a queued run once nothing of ours is training.
    fn start_queued(&mut self) {
        let busy = self.runs.iter().any(|s| {
            matches!(s.control, Control::Driven { .. } | Control::Launching)
                && s.data.status.is_active()
        });
        if busy {
            return;
        }
        let Some(idx) = self
            .runs
            .iter()
            .position(|s| matches!(s.control, Control::Queued(_)))
        else {
            return;
        };
        let s = &mut self.runs[idx];
        let Control::Queued(cfg) = std::mem::replace(&mut s.control, Control::Launching) else {
            return;
        };
        s.data.status = RunStatus::Starting;
        s.data.note(LogKind::Note, "starting `cptlab run`");
        let run = s.id;
        self.commands.push(Command::Launch { run, config: cfg });
    }

    /// Opens the run in `dir`: replays a finished run, attaches to a live one (driving it if no
    /// other workbench does). Returns the slot.
    pub fn open_dir(&mut self, dir: &Path) -> RunId {
        if let Some(s) = self
            .runs
            .iter()
            .find(|s| s.data.dir.as_deref() == Some(dir))
        {
            return s.id;
        }
        let mut data = RunData::for_dir(dir);
        // A summary that exists but cannot be read says so: it is not a resumable run.
        let (summary, corrupt) = match store::read_summary_if_present(dir) {
            Ok(s) => (s, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let live = (summary.is_none() && corrupt.is_none())
            .then(|| store::live_pid(dir))
            .flatten();
        data.status = match (&summary, &corrupt, live) {
            (Some(s), _, _) => RunStatus::Ended(s.status),
            (None, Some(e), _) => RunStatus::Failed(e.clone()),
            (None, None, Some(_)) => RunStatus::Starting,
            (None, None, None) => RunStatus::Incomplete,
        };
        let control = match live {
            None => Control::None,
            Some(pid) => match process::acquire_lock(dir) {
                Ok(lock) => {
                    if process::is_stopped(pid) {
                        data.status = RunStatus::Paused;
                    }
                    data.note(LogKind::Note, format!("attached to pid {pid}"));
                    Control::Driven {
                        pid,
                        child: false,
                        lock: Some(lock),
                    }
                }
                Err(LockError::Held(holder)) => {
                    data.note(
                        LogKind::Warn,
                        format!("another workbench (pid {holder}) drives this run: watching only"),
                    );
                    Control::Watching { holder, pid }
                }
                Err(LockError::Io(e)) => {
                    data.note(
                        LogKind::Warn,
                        format!("cannot lock the run: {e}; watching only"),
                    );
                    Control::Watching { holder: 0, pid }
                }
            },
        };
        let id = self.add_run(data, control, None);
        self.commands.push(Command::Follow {
            run: id,
            dir: dir.to_path_buf(),
            live: live.is_some(),
        });
        id
    }

    /// Folds one event of run `id` into its state.
    pub fn ingest(&mut self, id: RunId, inc: Incoming) {
        let Some(s) = self.slot_mut(id) else { return };
        let was_active = s.data.status.is_active();
        s.data.apply(&inc);
        if let (Event::Started(st), Control::Driven { lock: None, .. }) = (&inc.event, &s.control) {
            match process::acquire_lock(Path::new(&st.run_dir)) {
                Ok(path) => {
                    if let Control::Driven { lock, .. } = &mut s.control {
                        *lock = Some(path);
                    }
                }
                Err(e) => s.data.note(
                    LogKind::Warn,
                    format!("cannot lock the run directory: {e:?}"),
                ),
            }
        }
        let ended = matches!(inc.event, Event::Finished { .. } | Event::Failed { .. });
        if ended && was_active {
            let done = format!("{} {}", s.title(), s.data.status.label());
            if let Control::Driven {
                lock: Some(path),
                child: false,
                ..
            } = &s.control
            {
                // An attached run is over once its record says so; a child once it exits.
                process::release_lock(path);
                s.control = Control::None;
            }
            self.say(done, false);
            self.start_queued();
        }
    }

    pub fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Data => {}
            Msg::Spawned { run, pid } => {
                if let Some(s) = self.slot_mut(run) {
                    s.control = Control::Driven {
                        pid,
                        child: true,
                        lock: None,
                    };
                }
            }
            Msg::SpawnFailed { run, error } => {
                if let Some(s) = self.slot_mut(run) {
                    s.control = Control::None;
                    s.data.note(LogKind::Error, error.clone());
                    s.data.status = RunStatus::Failed(error.clone());
                }
                self.say(error, true);
                self.start_queued();
            }
            Msg::Exited { run, code, stderr } => {
                let Some(s) = self.slot_mut(run) else { return };
                if let Control::Driven {
                    lock: Some(path), ..
                } = &s.control
                {
                    process::release_lock(path);
                }
                s.control = Control::None;
                if s.data.status.is_active() {
                    s.data.status = match code {
                        None => RunStatus::Incomplete,
                        Some(c) => {
                            let why = if stderr.is_empty() {
                                format!("`cptlab run` exited with code {c}")
                            } else {
                                stderr.clone()
                            };
                            for l in why.lines() {
                                s.data.note(LogKind::Error, l.to_string());
                            }
                            RunStatus::Failed(why)
                        }
                    };
                    let msg = match &s.data.status {
                        RunStatus::Failed(why) => format!(
                            "{} failed: {}",
                            s.title(),
                            why.lines().last().unwrap_or_default()
                        ),
                        other => format!("{}: {}", s.title(), other.label()),
                    };
                    self.say(msg, true);
                }
                self.start_queued();
            }
            Msg::Notice { text, warn } => self.say(text, warn),
            Msg::Devices(d) => self.devices.add(d),
            Msg::Hangup => {
                self.detach_all();
                self.finish(0);
            }
        }
    }
}

/// Puts a remembered Setup into the form: its config (what the form does not show), then every
/// field as typed (the command line's `--data` wins). The "modified" marker compares with the
/// preset as it is now. Returns a note for the status line, if any.
fn restore_setup(
    setup: &mut SetupState,
    store: &PresetStore,
    saved: SavedSetup,
    data: Option<&str>,
) -> Option<Status> {
    let preset = store.load(&saved.preset);
    *setup = SetupState::new(saved.config, &saved.preset, data);
    let note = match &preset {
        Ok(p) => {
            setup.set_pristine_from(p, data);
            None
        }
        Err(e) => Some(Status {
            text: format!("remembered Setup kept; its preset does not load: {e}"),
            warn: true,
        }),
    };
    setup.restore_fields(&saved.fields, data.is_some().then_some(Field::Data));
    note
}

/// Splits one device spec between two runs: `(A's, B's, threads per run)`.
pub fn split_devices(
    spec: &DeviceSpec,
    cores: usize,
) -> Result<(DeviceSpec, DeviceSpec, Option<usize>), String> {
    match spec {
        // One device each way (the CPU, or one GPU): both runs on it, the cores halved.
        DeviceSpec::Cpu { workers: 1 } | DeviceSpec::Auto => {
            Ok((spec.clone(), spec.clone(), Some((cores / 2).max(1))))
        }
        DeviceSpec::Cpu { workers } => {
            let half = workers / 2;
            Ok((
                DeviceSpec::Cpu {
                    workers: workers - half,
                },
                DeviceSpec::Cpu { workers: half },
                None,
            ))
        }
        DeviceSpec::Cuda(ids) if ids.len() >= 2 => {
            let (a, b) = ids.split_at(ids.len().div_ceil(2));
            Ok((
                DeviceSpec::Cuda(a.to_vec()),
                DeviceSpec::Cuda(b.to_vec()),
                None,
            ))
        }
        DeviceSpec::Cuda(_) => Err(format!(
            "{spec} is one GPU: run the pair one after the other, or list two GPUs (cuda:0,1)"
        )),
        DeviceSpec::CudaAll => {
            Err("list the GPUs to split (e.g. cuda:0,1) instead of cuda:all".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_split_in_halves() {
        // Compared as specs: `cpu:1` and `cpu` are the same one worker.
        let d = |s: &str| s.parse::<DeviceSpec>().unwrap();
        let split_devices = |spec: &str, cores| split_devices(&d(spec), cores);
        assert_eq!(
            split_devices("cpu", 4).unwrap(),
            (d("cpu"), d("cpu"), Some(2))
        );
        assert_eq!(
            split_devices("cpu:3", 4).unwrap(),
            (d("cpu:2"), d("cpu:1"), None)
        );
        assert_eq!(
            split_devices("cuda:0,1,2,3", 4).unwrap(),
            (d("cuda:0,1"), d("cuda:2,3"), None)
        );
        assert!(split_devices("cuda:0", 4).is_err());
    }
}
