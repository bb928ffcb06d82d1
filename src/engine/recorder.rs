//! Where a worker's events go: into the run directory first (so the record survives any
//! front end), then to whoever listens. A listener that went away is not an error: the run
//! carries on headless. A run directory that cannot be written (a full disk) is: the event still
//! reaches the listener, and the error ends the run.
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use anyhow::Result;

use crate::telemetry::store::RunStore;
use crate::telemetry::{Event, Summary};

pub struct Recorder {
    /// None for ranks other than 0: they train but do not report.
    store: Option<RunStore>,
    run_dir: PathBuf,
    listener: Option<Sender<Event>>,
}

impl Recorder {
    pub fn new(store: RunStore, listener: Sender<Event>) -> Recorder {
        Recorder {
            run_dir: store.dir().to_path_buf(),
            store: Some(store),
            listener: Some(listener),
        }
    }

    /// A recorder that drops everything (ranks > 0).
    pub fn silent(run_dir: PathBuf) -> Recorder {
        Recorder {
            store: None,
            run_dir,
            listener: None,
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
        if let Some(tx) = &self.listener {
            if tx.send(event).is_err() {
                self.listener = None;
            }
        }
        recorded
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
