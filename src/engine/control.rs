//! Pause / resume / stop requests from a front end to the workers.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::trainer::Stopped;

#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    paused: Mutex<bool>,
    wake: Condvar,
}

impl Control {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    pub fn pause(&self) {
        *self.paused.lock().expect("control lock") = true;
    }

    pub fn resume(&self) {
        *self.paused.lock().expect("control lock") = false;
        self.wake.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().expect("control lock")
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Called by a worker between steps: blocks while paused, fails once a stop is requested.
    pub fn checkpoint_wait(&self) -> Result<(), Stopped> {
        let mut paused = self.paused.lock().expect("control lock");
        while *paused && !self.stop_requested() {
            paused = self.wake.wait(paused).expect("control lock");
        }
        if self.stop_requested() {
            Err(Stopped::ByUser)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn pause_blocks_until_resume_and_stop_wins() {
        let c = Arc::new(Control::default());
        assert!(c.checkpoint_wait().is_ok());
        c.pause();
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.checkpoint_wait().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!h.is_finished());
        c.resume();
        assert!(h.join().unwrap());
        c.pause();
        c.stop();
        assert!(c.checkpoint_wait().is_err());
    }
}
