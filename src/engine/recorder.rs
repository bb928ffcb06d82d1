//! Where a worker's events go: into the run directory first (so the record survives any
//! front end), then to the TensorBoard file when `cptlab run --tensorboard DIR` asked for one,
//! then to whoever listens. A listener that went away is not an error: the run carries on
//! headless. A run directory that cannot be written (a full disk) is: the event still reaches
//! the listener, and the error ends the run. A TensorBoard file that cannot be written is only
//! a warning: the run's record is `metrics.jsonl`, and `runs export --format tensorboard`
//! rebuilds the file from it.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::SystemTime;

use anyhow::Result;

use crate::files::FileError;
use crate::telemetry::event::LogLevel;
use crate::telemetry::store::{self, RunStore};
use crate::telemetry::tensorboard::{self, EventWriter};
use crate::telemetry::{Event, Summary};

pub struct Recorder {
    /// None for ranks other than 0: they train but do not report.
    store: Option<RunStore>,
    run_dir: PathBuf,
    listener: Option<Sender<Event>>,
    tensorboard: Option<TensorBoardSink>,
}

impl Recorder {
    /// Rank 0's recorder; `tensorboard`: also write the events as TensorBoard events there.
    pub fn new(store: RunStore, listener: Sender<Event>, tensorboard: Option<PathBuf>) -> Recorder {
        Recorder {
            run_dir: store.dir().to_path_buf(),
            store: Some(store),
            listener: Some(listener),
            tensorboard: tensorboard.map(TensorBoardSink::new),
        }
    }

    /// A recorder that drops everything (ranks > 0).
    pub fn silent(run_dir: PathBuf) -> Recorder {
        Recorder {
            store: None,
            run_dir,
            listener: None,
            tensorboard: None,
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Records `event`, then passes it to the listener. The listener gets it even when it could
    /// not be recorded (a full disk): the error that ends the run must reach the user. The
    /// recording error is returned after that.
    pub fn emit(&mut self, event: Event) -> Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let recorded = store.record(&event);
        let note = match self.tensorboard.as_mut() {
            Some(tb) => match tb.write(&event, &self.run_dir) {
                Ok(opened) => opened.map(|path| {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    Event::Log {
                        level: LogLevel::Info,
                        message: format!(
                            "TensorBoard events: {} (tensorboard --logdir {})",
                            path.display(),
                            dir.display()
                        ),
                    }
                }),
                Err(e) => {
                    self.tensorboard = None;
                    Some(Event::Log {
                        level: LogLevel::Warn,
                        message: format!(
                            "TensorBoard: {e:#}; no further events go there (the run goes on; `cptlab runs export {} --format tensorboard` writes them all from the record)",
                            self.run_dir.display()
                        ),
                    })
                }
            },
            None => None,
        };
        send(&mut self.listener, event);
        let noted = match note {
            Some(n) => {
                let r = store.record(&n);
                send(&mut self.listener, n);
                r
            }
            None => Ok(()),
        };
        recorded.and(noted)
    }

    pub fn metrics_len(&mut self) -> Result<u64> {
        match self.store.as_mut() {
            Some(s) => s.metrics_len(),
            None => Ok(0),
        }
    }

    pub fn write_summary(&mut self, summary: &Summary) -> Result<()> {
        match self.store.as_mut() {
            Some(s) => s.write_summary(summary),
            None => Ok(()),
        }
    }
}

/// Passes `event` to the listener; one that went away is dropped (the run goes on headless).
fn send(listener: &mut Option<Sender<Event>>, event: Event) {
    if let Some(tx) = listener {
        if tx.send(event).is_err() {
            *listener = None;
        }
    }
}

/// The live TensorBoard file: opened at the session's `started` event, one record per event
/// with numbers, each written and flushed at once (`tensorboard --logdir` follows it).
struct TensorBoardSink {
    dir: PathBuf,
    /// The open file and its path.
    writer: Option<(EventWriter<File>, PathBuf)>,
    /// A resumed session's config text waits for its first step, with a session start there
    /// that makes TensorBoard drop what an earlier file holds from that step on (the part of
    /// the interrupted session after its checkpoint, redone now).
    config_pending: Option<String>,
}

impl TensorBoardSink {
    fn new(dir: PathBuf) -> TensorBoardSink {
        TensorBoardSink {
            dir,
            writer: None,
            config_pending: None,
        }
    }

    /// Writes `event`'s scalars; returns the file's path when this event opened it.
    fn write(&mut self, event: &Event, run_dir: &Path) -> Result<Option<PathBuf>> {
        let now = tensorboard::unix_seconds(SystemTime::now());
        let opened = match self.writer {
            Some(_) => None,
            // Events before the session's start (data loading's log lines) have no numbers,
            // and the start says whether the session resumes a run.
            None if !matches!(event, Event::Started(_)) => return Ok(None),
            None => {
                let (mut w, path) = tensorboard::create_live(&self.dir)?;
                let config = store::read_config_text(run_dir)?;
                if matches!(event, Event::Started(s) if s.resumed_after_epoch.is_some()) {
                    // The totals (GBitOps, skipped steps) go on from the sessions before.
                    let events = store::read_metrics(run_dir)?;
                    let this = events
                        .iter()
                        .rposition(|e| matches!(e, Event::Started(_)))
                        .unwrap_or(events.len());
                    for e in &events[..this] {
                        w.skip_event(e);
                    }
                    self.config_pending = Some(config);
                } else {
                    self.config_pending = None;
                    w.write_config(&config, 0, now)
                        .map_err(|e| FileError::new("write", &path, e))?;
                }
                self.writer = Some((w, path.clone()));
                Some(path)
            }
        };
        let (w, path) = self.writer.as_mut().expect("opened above");
        if let (Event::Step(s), Some(config)) = (event, self.config_pending.as_ref()) {
            // From the first step this session redoes (a step event may cover several).
            let first = (s.step + 1).saturating_sub(s.steps.unwrap_or(1));
            w.write_session_start(first, now, "resumed from a checkpoint")
                .and_then(|()| w.write_config(config, s.step, now))
                .map_err(|e| FileError::new("write", &*path, e))?;
            self.config_pending = None;
        }
        w.write_event(event, now)
            .map_err(|e| FileError::new("write", &*path, e))?;
        Ok(opened)
    }
}
