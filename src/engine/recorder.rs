//! Where a worker's events go: into the run directory first (so the record survives any
//! front end), then to whoever listens. A listener that went away is not an error: the run
//! carries on headless.
use std::path::Path;
use std::sync::mpsc::Sender;

use anyhow::Result;

use crate::telemetry::store::RunStore;
use crate::telemetry::{Event, Summary};

pub struct Recorder {
    store: RunStore,
    listener: Option<Sender<Event>>,
}

impl Recorder {
    pub fn new(store: RunStore, listener: Sender<Event>) -> Recorder {
        Recorder {
            store,
            listener: Some(listener),
        }
    }

    pub fn run_dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn emit(&mut self, event: Event) -> Result<()> {
        self.store.record(&event)?;
        if let Some(tx) = &self.listener {
            if tx.send(event).is_err() {
                self.listener = None;
            }
        }
        Ok(())
    }

    pub fn metrics_len(&mut self) -> Result<u64> {
        self.store.metrics_len()
    }

    pub fn write_summary(&mut self, summary: &Summary) -> Result<()> {
        self.store.write_summary(summary)
    }
}
