//! Following a run from the command line: signals, the progress bar or JSON lines, the summary.
//!
//! A front end that cannot print (a closed pipe, a full disk behind `>`) never stops a run: it
//! stops printing and goes on following events until the run ends, so the run directory gets
//! its summary and the exit code tells how the run ended.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{self, errln, outln, OutputError, Stream};
use super::EXIT_STOPPED;
use crate::engine::Job;
use crate::telemetry::event::{Event, LogLevel};
use crate::telemetry::Summary;

/// SIGINT, SIGTERM and SIGHUP (the terminal or SSH session went away). While a run trains, the
/// first asks it to stop gracefully (checkpoint, summary `stopped`, exit 130) and a second exits
/// at once (130). Before the run exists (config, data, model, rendezvous) the first exits at
/// once: there is nothing to save yet. A signal that was ignored when the process started
/// (`nohup cptlab run …`) stays ignored.
pub struct Signals {
    interrupted: Arc<AtomicBool>,
    starting: Arc<AtomicBool>,
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl Signals {
    pub fn install() -> Result<Signals> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let starting = Arc::new(AtomicBool::new(true));
        for sig in SIGNALS {
            if ignored_at_start(sig) {
                continue;
            }
            // Handlers run in registration order: exit while starting, exit on a second
            // signal, else note the first.
            signal_hook::flag::register_conditional_shutdown(sig, EXIT_STOPPED, starting.clone())?;
            signal_hook::flag::register_conditional_shutdown(
                sig,
                EXIT_STOPPED,
                interrupted.clone(),
            )?;
            signal_hook::flag::register(sig, interrupted.clone())?;
        }
        Ok(Signals {
            interrupted,
            starting,
        })
    }

    /// The run exists: from now on a first signal stops it gracefully.
    pub fn started(&self) {
        self.starting.store(false, Ordering::SeqCst);
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// Whether `sig` is ignored (SIG_IGN, inherited from `nohup` or a shell).
fn ignored_at_start(sig: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current disposition into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Feeds every event of `job` to `f` until the run ends, asking it to stop on a signal.
fn follow(job: Job, signals: &Signals, mut f: impl FnMut(Event)) -> Summary {
    signals.started();
    let mut stop_sent = false;
    loop {
        if signals.interrupted() && !stop_sent {
            job.control().stop();
            stop_sent = true;
        }
        match job.events().recv_timeout(Duration::from_millis(100)) {
            Ok(event) => f(event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    job.wait()
}

/// Says once on stderr that stdout failed (not a closed pipe: that is the reader's choice).
fn warn_lost_stdout(e: &OutputError, warned: &mut bool, run_dir: &str) {
    if let OutputError::Failed {
        stream: Stream::Stdout,
        ..
    } = e
    {
        if !*warned {
            *warned = true;
            let _ = errln!("warning: {e}; the run goes on, recorded in {run_dir}");
        }
    }
}

/// `--json`: every event as one line on stdout, ending with exactly one `finished` or `failed`
/// (from the summary, if the run's own last event never arrived).
pub fn follow_json(job: Job, signals: &Signals) -> Summary {
    let run_dir = job.run_dir().display().to_string();
    let mut ended = false;
    let mut warned = false;
    let summary = follow(job, signals, |event| {
        ended |= matches!(event, Event::Finished { .. } | Event::Failed { .. });
        if let Err(e) = output::stdout().json_line(&event) {
            warn_lost_stdout(&e, &mut warned, &run_dir);
        }
    });
    if !ended {
        let _ = output::stdout().json_line(&Event::ending(&summary));
    }
    summary
}

/// The progress bar (stderr on a terminal) or plain lines on stderr, and the summary on stdout.
pub fn follow_human(job: Job, signals: &Signals) -> Summary {
    let run_dir = job.run_dir().display().to_string();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    // indicatif ignores its own write errors (a terminal that went away); the plain lines
    // stop at the first failed write.
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => {
            let _ = errln!("{line}");
        }
    };
    let mut warned = false;
    let mut ended = false;
    let summary = follow(job, signals, |event| match event {
        Event::Started(s) => {
            say(format!(
                "run {}: {} ({} params) on {} ({} train / {} test), {} epochs × {} steps, {} on {} thread(s)",
                s.name, s.model, s.params, s.dataset, s.train_size, s.test_size, s.epochs,
                s.steps_per_epoch, s.devices.join(","), s.threads
            ));
            say(format!("recording to {}", s.run_dir));
            if let Some(b) = &bar {
                b.set_length(s.total_steps);
                b.set_position(
                    s.total_steps
                        .min(s.resumed_after_epoch.unwrap_or(0) * s.steps_per_epoch),
                );
            }
        }
        Event::Step(s) => {
            if let Some(b) = &bar {
                b.set_position(s.step);
                b.set_prefix(format!("{}", s.epoch));
                b.set_message(format!("loss {:.4} lr {:.3e}", s.loss, s.lr));
            }
        }
        Event::Eval(e) => say(format!(
            "epoch {:>3}  train loss {:.4}  test loss {:.4}  test acc {:6.2}%  {:.1}s",
            e.epoch,
            e.train_loss,
            e.test_loss,
            e.test_acc * 100.0,
            e.epoch_seconds
        )),
        Event::Log { level, message } => say(match level {
            LogLevel::Info => message,
            LogLevel::Warn => format!("warning: {message}"),
        }),
        Event::Checkpoint { .. } => {}
        Event::Finished { summary } => {
            ended = true;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if let Err(e) = print_summary(&summary) {
                warn_lost_stdout(&e, &mut warned, &run_dir);
            }
        }
        Event::Failed { error, .. } => {
            ended = true;
            if let Some(b) = &bar {
                b.abandon();
            }
            let _ = errln!("error: {error}");
        }
    });
    if !ended {
        if let Some(b) = &bar {
            b.abandon();
        }
        match Event::ending(&summary) {
            Event::Failed { error, .. } => {
                let _ = errln!("error: {error}");
            }
            _ => {
                let _ = print_summary(&summary);
            }
        }
    }
    summary
}

/// The summary lines of `cptlab run` and `cptlab runs show` (on stdout).
pub fn print_summary(s: &Summary) -> Result<(), OutputError> {
    let pct = |x: Option<f64>| {
        x.map(|a| format!("{:.2}%", a * 100.0))
            .unwrap_or("-".into())
    };
    outln!(
        "{}: {} after {} epochs ({} steps, {:.1}s training); final test acc {}, best {}{}",
        s.name,
        s.status,
        s.epochs,
        s.steps,
        s.train_seconds,
        pct(s.final_test_acc),
        pct(s.best_test_acc),
        s.best_epoch
            .map(|e| format!(" (epoch {e})"))
            .unwrap_or_default()
    )?;
    if !s.per_class_acc.is_empty() {
        let parts: Vec<String> = s
            .per_class_acc
            .iter()
            .map(|c| format!("{} {:.1}%", c.class, c.acc * 100.0))
            .collect();
        outln!("per class: {}", parts.join(", "))?;
    }
    outln!("run directory: {}", s.run_dir)
}
