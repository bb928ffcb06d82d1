//! The terminal workbench (setup, dashboard, compare, presets, runs, help).
//!
//! Shape: keys → `Action` (through the key tables in `keys`, which also write the help and the
//! footer) → `App::update`, which hands each view's actions to that view's state (a
//! `Component`: it changes only itself and returns a `Request` for the rest); background
//! threads (run children, run-directory followers, the device sampler, the hang-up watcher) →
//! `Msg` / the `Inbox` → `App`; the app queues `Command`s that the `Supervisor` executes;
//! `ui::draw` renders the state. Training never runs in this process: a run is a
//! `cptlab run --json` child in its own session. The mouse goes the same way (`mouse::action`
//! turns an event into an `Action`); the last Setup is remembered in a state file (`state`).
pub mod action;
pub mod app;
pub mod charts;
pub mod compare;
pub mod dashboard;
pub mod editor;
pub mod help;
pub mod keys;
pub mod line_edit;
pub mod mouse;
pub mod presets;
pub mod process;
pub mod run_data;
pub mod runs;
pub mod sampler;
pub mod setup;
pub mod state;
pub mod sweep;
pub mod ui;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{
    DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream, KeyEventKind,
};
use crossterm::terminal::{enable_raw_mode, EnterAlternateScreen};
use futures::StreamExt;
use ratatui::layout::Rect;
use tokio::time::MissedTickBehavior;

use crate::config::paths::Paths;
use app::{App, Msg};
use process::{Inbox, Supervisor};

/// What the command line hands the TUI.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// Preset loaded into Setup at start (default: quickstart).
    pub preset: Option<String>,
    /// Data source for new runs (`--data` or `CPTLAB_DATA`).
    pub data: Option<String>,
    /// `--no-mouse`: no mouse capture (as `CPTLAB_NO_MOUSE=1`).
    pub no_mouse: bool,
    /// This machine's devices (the CLI probes them), for Setup's checks; None: unchecked.
    pub machine: Option<setup::Machine>,
}

/// Shortest time between two frames drawn for new run data (at most 20 per second); a key is
/// drawn at once.
pub const FRAME: Duration = Duration::from_millis(50);
/// How often the Runs view re-reads the runs directory.
const SLOW_TICK: Duration = Duration::from_secs(2);

/// Runs the TUI until the user quits; returns the exit code.
pub fn run(paths: &Paths, opts: TuiOptions) -> Result<i32> {
    if !std::io::stdout().is_terminal() {
        // Not eprintln!: a closed stderr must not turn this message into a panic.
        let _ = writeln!(
            std::io::stderr(),
            "cptlab: stdout is not a terminal; use `cptlab run` for headless training"
        );
        return Ok(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(event_loop(paths.clone(), opts))
}

/// Puts the terminal back however the loop ends (error or return); panics are covered by the
/// hook `ratatui::try_init` installs, which restores before the message is printed (and by
/// `mouse_off_on_panic` for the mouse).
struct Restore {
    mouse: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        release_terminal(self.mouse);
    }
}

/// Gives the terminal back: no mouse capture, cooked mode, the main screen.
fn release_terminal(mouse: bool) {
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    }
    ratatui::restore();
}

/// Takes the terminal again (after a suspend): raw mode, the alternate screen, the mouse.
fn take_terminal(mouse: bool) -> std::io::Result<()> {
    enable_raw_mode()?;
    crossterm::execute!(std::io::stdout(), EnterAlternateScreen)?;
    if mouse {
        crossterm::execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    Ok(())
}

/// A panic with the mouse captured would leave the shell receiving mouse reports: the hook
/// turns capture off before ratatui's own hook restores the rest.
fn mouse_off_on_panic() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        prev(info);
    }));
}

/// Ctrl-Z: hands the terminal back and stops this process like any full-screen program
/// (SIGTSTP; the shell's `fg` sends SIGCONT), then takes the terminal again and redraws. Runs
/// are other processes: they keep training.
fn suspend(terminal: &mut ratatui::DefaultTerminal, mouse: bool) -> Result<()> {
    release_terminal(mouse);
    // SAFETY: raise(3) with a valid signal number; SIGTSTP's default action stops the process
    // (in an orphaned process group, with no shell to resume it, it is discarded).
    unsafe { libc::raise(libc::SIGTSTP) };
    take_terminal(mouse).context("cannot take the terminal back after a suspend")?;
    terminal.clear()?;
    Ok(())
}

/// The UI thread's own load, written to `$CPTLAB_TUI_STATS` at exit (for the benchmark notes).
struct Stats {
    start: Instant,
    cpu0: Option<f64>,
    tid: u32,
    frames: u64,
    keys: u64,
    key_latency_max: Duration,
    key_latency_sum: Duration,
}

impl Stats {
    fn new() -> Stats {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        Stats {
            start: Instant::now(),
            cpu0: sampler::thread_cpu_seconds(tid),
            tid,
            frames: 0,
            keys: 0,
            key_latency_max: Duration::ZERO,
            key_latency_sum: Duration::ZERO,
        }
    }

    fn write(&self) {
        let Some(path) = std::env::var_os("CPTLAB_TUI_STATS") else {
            return;
        };
        let wall = self.start.elapsed().as_secs_f64();
        let cpu = match (self.cpu0, sampler::thread_cpu_seconds(self.tid)) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let v = serde_json::json!({
            "wall_seconds": wall,
            "ui_thread_cpu_seconds": cpu,
            "ui_thread_cpu_percent": 100.0 * cpu / wall.max(1e-9),
            "frames": self.frames,
            "keys": self.keys,
            "key_to_frame_ms_max": self.key_latency_max.as_secs_f64() * 1e3,
            "key_to_frame_ms_mean": if self.keys > 0 {
                self.key_latency_sum.as_secs_f64() * 1e3 / self.keys as f64
            } else {
                0.0
            },
        });
        let _ = crate::files::write_atomic(std::path::Path::new(&path), v.to_string().as_bytes());
    }
}

async fn event_loop(paths: Paths, opts: TuiOptions) -> Result<i32> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    let inbox = Arc::new(Inbox::new(tx.clone()));
    let mut supervisor = Supervisor::new(paths.clone(), inbox.clone());
    let watch = sampler::spawn(tx.clone());
    {
        // A hang-up (dropped SSH) or SIGTERM: leave the runs training headless and exit cleanly.
        use signal_hook::consts::{SIGHUP, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM])?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("cptlab-tui-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    let _ = tx.send(Msg::Hangup);
                }
            })?;
    }
    let mut app = App::new(paths, &opts);
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let mouse = mouse::capture(opts.no_mouse);
    let _restore = Restore { mouse };
    if mouse {
        mouse_off_on_panic();
        crossterm::execute!(std::io::stdout(), EnableMouseCapture).context(
            "cannot turn on mouse reporting (--no-mouse or CPTLAB_NO_MOUSE=1 leaves it off)",
        )?;
    }
    let mut stats = Stats::new();
    let mut keys = EventStream::new();
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slow = tokio::time::interval(SLOW_TICK);
    slow.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending = false;
    let mut dirty = true;
    let mut watched: Vec<u32> = Vec::new();
    loop {
        // Commands may produce messages that queue more commands (a queued B after A fails).
        loop {
            let cmds = app.take_commands();
            if cmds.is_empty() {
                break;
            }
            for c in cmds {
                if let Some(m) = supervisor.exec(c) {
                    app.on_msg(m);
                    dirty = true;
                }
            }
        }
        let pids = app.watched_pids();
        if pids != watched {
            watch.set(pids.clone());
            watched = pids;
        }
        if let Some(code) = app.exit {
            app.persist_state(true);
            stats.write();
            return Ok(code);
        }
        if std::mem::take(&mut app.edit) {
            // `e` on Setup: the editor gets the terminal, as after a suspend.
            app.persist_state(false);
            release_terminal(mouse);
            app.edit_config(&editor::editor_from_env());
            take_terminal(mouse).context("cannot take the terminal back after the editor")?;
            terminal.clear()?;
            terminal.draw(|f| ui::draw(f, &app))?;
            dirty = false;
        }
        if std::mem::take(&mut app.suspend) {
            // A suspended workbench may never come back: Setup is remembered first.
            app.persist_state(false);
            suspend(&mut terminal, mouse)?;
            terminal.draw(|f| ui::draw(f, &app))?;
            dirty = false;
        }
        tokio::select! {
            ev = keys.next() => match ev {
                Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => {
                    let t = Instant::now();
                    app.on_key(k);
                    if app.exit.is_none() {
                        terminal.draw(|f| ui::draw(f, &app))?;
                        stats.frames += 1;
                        dirty = false;
                    }
                    let dt = t.elapsed();
                    stats.keys += 1;
                    stats.key_latency_sum += dt;
                    stats.key_latency_max = stats.key_latency_max.max(dt);
                }
                Some(Ok(TermEvent::Mouse(m))) => {
                    let size = terminal.size()?;
                    let area = Rect::new(0, 0, size.width, size.height);
                    if let Some(a) = mouse::action(&app, area, &m) {
                        app.update(a);
                        if app.exit.is_none() {
                            terminal.draw(|f| ui::draw(f, &app))?;
                            stats.frames += 1;
                            dirty = false;
                        }
                    }
                }
                Some(Ok(TermEvent::Resize(..))) => {
                    terminal.autoresize()?;
                    terminal.draw(|f| ui::draw(f, &app))?;
                    dirty = false;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                // The terminal is gone: like a hang-up.
                None => app.on_msg(Msg::Hangup),
            },
            Some(msg) = rx.recv() => match msg {
                Msg::Data => pending = true,
                m => {
                    app.on_msg(m);
                    dirty = true;
                }
            },
            _ = frame.tick(), if pending || dirty => {
                if pending {
                    for (run, inc) in inbox.drain() {
                        app.ingest(run, inc);
                    }
                    pending = false;
                }
                terminal.draw(|f| ui::draw(f, &app))?;
                stats.frames += 1;
                dirty = false;
            }
            _ = slow.tick() => {
                if app.on_tick() {
                    dirty = true;
                }
                // Setup changes reach the state file within a tick (not on every key: the
                // write is fsynced), and at exit.
                let said = app.status.clone();
                app.persist_state(false);
                if app.status != said {
                    dirty = true;
                }
            }
        }
    }
}
