//! Pause / resume / stop requests from a front end to the workers, and the clock that keeps
//! paused time out of training time.
//!
//! A run is paused in two ways: through `Control::pause` (between steps, every rank waits in
//! `checkpoint_wait`), or by stopping its whole process (the workbench sends SIGSTOP, a terminal
//! SIGTSTP; SIGCONT continues it). `TrainClock` excludes both: every timing the trainer reports
//! (step times, throughput, epoch seconds, `train_seconds`) is read from it.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::trainer::Stopped;

#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    paused: Mutex<bool>,
    wake: Condvar,
    clock: TrainClock,
}

impl Control {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.clock.release();
        self.wake.notify_all();
    }

    pub fn pause(&self) {
        *self.paused.lock().expect("control lock") = true;
    }

    pub fn resume(&self) {
        *self.paused.lock().expect("control lock") = false;
        self.clock.release();
        self.wake.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().expect("control lock")
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Training time of this run: the clock every timing of the trainer is read from.
    pub fn clock(&self) -> &TrainClock {
        &self.clock
    }

    /// Called by a worker between steps: blocks while paused, fails once a stop is requested.
    /// The time blocked is held out of the clock, from the first worker that blocks until
    /// `resume` or `stop`.
    pub fn checkpoint_wait(&self) -> Result<(), Stopped> {
        let mut paused = self.paused.lock().expect("control lock");
        if *paused && !self.stop_requested() {
            self.clock.hold();
        }
        while *paused && !self.stop_requested() {
            paused = self.wake.wait(paused).expect("control lock");
        }
        drop(paused);
        if self.stop_requested() {
            Err(Stopped::ByUser)
        } else {
            Ok(())
        }
    }
}

/// Wall-clock time minus the time a run spent paused: held by `Control` (`hold` … `release`)
/// or with its process stopped (SIGSTOP or SIGTSTP … SIGCONT, see `running_time`). Readings are
/// durations since the process started and never go backwards.
#[derive(Default)]
pub struct TrainClock {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Held time of the closed intervals.
    total: Duration,
    /// Process running time when the open interval began.
    since: Option<Duration>,
}

impl TrainClock {
    /// The current reading.
    pub fn now(&self) -> Duration {
        let run = running_time();
        let h = self.held.lock().expect("clock lock");
        let open = h.since.map_or(Duration::ZERO, |s| run.saturating_sub(s));
        run.saturating_sub(h.total + open)
    }

    /// Seconds of training time since the reading `t`.
    pub fn secs_since(&self, t: Duration) -> f64 {
        self.now().saturating_sub(t).as_secs_f64()
    }

    /// Stops the clock until `release` (idempotent: ranks that block later change nothing).
    pub fn hold(&self) {
        let run = running_time();
        let mut h = self.held.lock().expect("clock lock");
        if h.since.is_none() {
            h.since = Some(run);
        }
    }

    /// Restarts a held clock (idempotent).
    pub fn release(&self) {
        let run = running_time();
        let mut h = self.held.lock().expect("clock lock");
        if let Some(s) = h.since.take() {
            h.total += run.saturating_sub(s);
        }
    }
}

/// How often the stop watcher ticks, and the gap after which a reading no longer trusts the wall
/// clock: a stop is counted as its gap minus `LIMIT` (so never more than it lasted).
const TICK: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_millis(50);
/// How long the watcher waits, after a gap, for the SIGCONT that proves the process was stopped.
const CONFIRM: Duration = Duration::from_millis(200);

/// SIGCONT deliveries, counted by the signal handler (nothing else is safe in a handler).
static CONTINUED: AtomicU64 = AtomicU64::new(0);

struct StopWatch {
    t0: Instant,
    state: Mutex<Watched>,
}

struct Watched {
    last_tick: Instant,
    /// Time the process spent stopped.
    stopped: Duration,
}

/// Time since the process started that it was running: minus the intervals it spent stopped.
///
/// Linux keeps no account of that, so a watcher thread ticks every 10 ms; a gap between its
/// ticks that ends with a SIGCONT is time the process was stopped. Until the watcher has looked
/// at a gap, readings stay at the last tick (plus `LIMIT`), so they never include a stop and
/// never go backwards; a gap without a SIGCONT (a starved watcher) is then counted as running.
/// System suspend needs nothing: `Instant` does not advance during it on Linux.
pub fn running_time() -> Duration {
    let w = stop_watch();
    let now = Instant::now();
    let s = w.state.lock().expect("stop watch lock");
    let now = now.min(s.last_tick + LIMIT);
    now.saturating_duration_since(w.t0)
        .saturating_sub(s.stopped)
}

fn stop_watch() -> &'static StopWatch {
    static WATCH: OnceLock<&'static StopWatch> = OnceLock::new();
    WATCH.get_or_init(|| {
        let now = Instant::now();
        let w: &'static StopWatch = Box::leak(Box::new(StopWatch {
            t0: now,
            state: Mutex::new(Watched {
                last_tick: now,
                stopped: Duration::ZERO,
            }),
        }));
        // SAFETY: the handler only increments an atomic counter, which is async-signal-safe.
        let handler = unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGCONT, || {
                CONTINUED.fetch_add(1, Ordering::SeqCst);
            })
        };
        if let Err(e) = handler {
            tracing::warn!("no SIGCONT handler ({e}): time spent stopped counts as training");
        }
        let spawned = std::thread::Builder::new()
            .name("cptlab-stopwatch".into())
            .spawn(move || watch(w));
        if let Err(e) = spawned {
            tracing::warn!("no stop watcher thread ({e}): time spent stopped counts as training");
            // Readings must not freeze at the first tick: an unwatched clock is the wall clock.
            w.state.lock().expect("stop watch lock").last_tick = now + Duration::from_secs(1 << 40);
        }
        w
    })
}

fn watch(w: &'static StopWatch) {
    let mut seen = CONTINUED.load(Ordering::SeqCst);
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let last = w.state.lock().expect("stop watch lock").last_tick;
        let gap = now.saturating_duration_since(last);
        let mut stopped = Duration::ZERO;
        if gap > LIMIT {
            // The handler runs on whichever thread the kernel picks, maybe just after this one.
            let deadline = Instant::now() + CONFIRM;
            while CONTINUED.load(Ordering::SeqCst) == seen && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if CONTINUED.load(Ordering::SeqCst) != seen {
                stopped = gap - LIMIT;
            }
        }
        seen = CONTINUED.load(Ordering::SeqCst);
        let mut s = w.state.lock().expect("stop watch lock");
        s.stopped += stopped;
        s.last_tick = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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

    #[test]
    fn the_clock_holds_while_a_worker_waits_paused() {
        let c = Arc::new(Control::default());
        let wall = Instant::now();
        let t0 = c.clock().now();
        std::thread::sleep(Duration::from_millis(100));
        c.pause();
        let pause = Duration::from_millis(400);
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.checkpoint_wait().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        // Frozen while held.
        let during = c.clock().now();
        std::thread::sleep(pause);
        assert!(c.clock().now() - during < Duration::from_millis(5));
        c.resume();
        assert!(h.join().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        let measured = c.clock().secs_since(t0);
        let wall = wall.elapsed().as_secs_f64();
        assert!(
            measured < wall - pause.as_secs_f64() * 0.8,
            "measured {measured}s of {wall}s with a {pause:?} pause"
        );
        assert!(measured > 0.15, "the running parts count: {measured}s");
        // A second rank blocking in the same pause does not hold twice.
        c.clock().hold();
        c.clock().hold();
        c.clock().release();
        c.clock().release();
        assert!(c.clock().now() >= t0);
    }

    #[test]
    fn readings_never_go_backwards() {
        let c = Control::default();
        let mut prev = c.clock().now();
        for _ in 0..20_000 {
            let t = c.clock().now();
            assert!(t >= prev);
            prev = t;
        }
    }
}
