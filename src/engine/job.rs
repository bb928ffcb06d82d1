//! A job: one run's lifecycle. `Job::start` checks everything that can be checked up front
//! (config, devices, data layout, resume state) before creating anything, then trains on a
//! worker thread and reports through an event channel.
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use super::checkpoint;
use super::collective::{make_group, AbortHandle, Collective, CollectiveError};
use super::control::Control;
use super::recorder::Recorder;
use super::trainer::Trainer;
use crate::config::paths::Paths;
use crate::config::{Override, RunConfig};
use crate::data::{self, DataSource, Dataset, LoadOptions};
use crate::telemetry::event::{Event, LogLevel};
use crate::telemetry::store::{self, RunStore, CHECKPOINT_DIR};
use crate::telemetry::{RunStatus, Summary};

/// The data source used when neither the config nor `CPTLAB_DATA` names one.
pub const DEFAULT_DATA: &str = "synthetic";

pub struct JobSpec {
    pub config: RunConfig,
    pub paths: Paths,
}

/// Where rank 0's events go besides the run directory and the listener.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// `cptlab run --tensorboard DIR`: TensorBoard event files, written live.
    pub tensorboard: Option<PathBuf>,
    /// `cptlab run --run-dir DIR`: the run is recorded in DIR (`RunStore::create_in`), not in
    /// a new directory under the runs root.
    pub run_dir: Option<PathBuf>,
}

pub struct Job {
    events: Receiver<Event>,
    control: Arc<Control>,
    /// Joins the workers (one thread per device), records how the run ended, returns the summary.
    finisher: JoinHandle<Summary>,
    run_dir: PathBuf,
}

/// What a worker thread hands back: its outcome and its recorder (rank 0's holds the run store
/// and the listener).
type WorkerResult = (Result<Summary>, Recorder);

/// Resolves the data source a config will use: the config's, else `CPTLAB_DATA`, else synthetic.
/// Relative paths become absolute so the recorded config works from any directory.
pub fn resolve_data_source(config: &mut RunConfig) -> Result<DataSource> {
    let spec = config
        .data
        .source
        .clone()
        .or_else(|| std::env::var("CPTLAB_DATA").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_DATA.to_string());
    let spec = match std::fs::canonicalize(&spec) {
        Ok(abs) if Path::new(&spec).exists() => abs.display().to_string(),
        _ => spec,
    };
    let source = DataSource::detect(&spec).map_err(|e| anyhow::anyhow!("data.source: {e}"))?;
    config.data.source = Some(spec);
    Ok(source)
}

impl Job {
    /// Starts a new run.
    pub fn start(spec: JobSpec) -> Result<Job> {
        Self::start_with(spec, Sinks::default())
    }

    /// Starts a new run whose events also go to `sinks`.
    pub fn start_with(spec: JobSpec, sinks: Sinks) -> Result<Job> {
        let JobSpec { mut config, paths } = spec;
        config.validate()?;
        let source = resolve_data_source(&mut config)?;
        let devices = check_devices(&config)?;
        let data = load_data(&config, &source, &paths)?;
        resolve_threads(&mut config, &devices);
        let trainers = build_trainers(&config, &data, &devices)?;
        let store = match &sinks.run_dir {
            Some(dir) => RunStore::create_in(dir, &config)?,
            None => RunStore::create(&paths.runs, &config)?,
        };
        Ok(Self::spawn(
            config,
            data,
            trainers,
            Some(store),
            None,
            sinks,
        ))
    }

    /// Starts this process's ranks of a multi-process job (`cptlab worker`): one per device,
    /// each with its collective (Gloo or NCCL across processes). Global rank 0 records the run;
    /// the others only train.
    pub fn start_ranks(
        spec: JobSpec,
        ranks: Vec<(tch::Device, Box<dyn Collective>)>,
    ) -> Result<Job> {
        let JobSpec { mut config, paths } = spec;
        config.validate()?;
        let source = resolve_data_source(&mut config)?;
        let data = load_data(&config, &source, &paths)?;
        let cpu_ranks = ranks.iter().filter(|(d, _)| *d == tch::Device::Cpu).count();
        let threads = worker_threads(&config, cpu_ranks);
        let records = ranks.iter().any(|(_, c)| c.rank() == 0);
        // One after another, as build_trainers: identical seeding gives identical weights.
        let trainers = build_quietly(|| {
            ranks
                .into_iter()
                .map(|(device, c)| {
                    crate::quant::set_current_device(device).map_err(|e| {
                        anyhow::anyhow!("selecting {device:?} for its replica: {e}")
                    })?;
                    Trainer::new(config.clone(), device, data.dataset.clone(), c)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        config.devices.threads = Some(threads);
        let store = if records {
            Some(RunStore::create(&paths.runs, &config)?)
        } else {
            None
        };
        Ok(Self::spawn(
            config,
            data,
            trainers,
            store,
            None,
            Sinks::default(),
        ))
    }

    /// Continues the run in `run_dir` from its last checkpoint, with the config it recorded;
    /// `overrides` may change where it runs (devices, threads, ZeRO stage), at any world size.
    pub fn resume(run_dir: &Path, paths: Paths, overrides: &[Override]) -> Result<Job> {
        Self::resume_with(run_dir, paths, overrides, Sinks::default())
    }

    /// Continues a run whose events also go to `sinks`.
    pub fn resume_with(
        run_dir: &Path,
        paths: Paths,
        overrides: &[Override],
        sinks: Sinks,
    ) -> Result<Job> {
        let marker = run_dir.join(store::PROCESS_FILE);
        match store::run_process(run_dir) {
            store::RunProcess::None => {}
            store::RunProcess::Live(pid) => anyhow::bail!(
                "{}: the run is live (process {pid} is training it); it cannot be resumed twice. Stop that process first; if it is not training this run, delete {} and resume again",
                run_dir.display(),
                marker.display()
            ),
            store::RunProcess::Unsure(pid) => anyhow::bail!(
                "{}: {} says process {pid} is training the run, and a process {pid} is running, but the file (written by an older cptlab) has no start time to tell whether it is the same process. If no cptlab process is training this run, delete {} and resume again",
                run_dir.display(),
                marker.display(),
                marker.display()
            ),
        }
        let config_file = run_dir.join(store::CONFIG_FILE);
        let recorded = store::read_config(run_dir)?;
        let config = recorded.with_overrides(overrides)?;
        let ckpt = run_dir.join(CHECKPOINT_DIR).join(checkpoint::LAST);
        anyhow::ensure!(
            ckpt.exists(),
            "{}: no checkpoint to resume from (runs save one at every epoch end)",
            ckpt.display()
        );
        let meta = checkpoint::read_meta(&ckpt)?;
        // A config.toml edited to another model: say so, before decoding any data.
        let model = config.model.kind.to_string();
        let edited = |e: anyhow::Error| {
            anyhow::anyhow!(
                "{e} (model.kind in {}: was it edited?)",
                config_file.display()
            )
        };
        meta.check_model(&ckpt, &model, 0).map_err(edited)?;
        let mut config = config;
        config.validate()?;
        let source = resolve_data_source(&mut config)?;
        let devices = check_devices(&config)?;
        let data = load_data(&config, &source, &paths)?;
        resolve_threads(&mut config, &devices);
        let mut trainers = build_trainers(&config, &data, &devices)?;
        if let Some(t) = trainers.first() {
            meta.check_model(&ckpt, &model, t.params())
                .map_err(edited)?;
        }
        for t in &mut trainers {
            t.restore(&ckpt)?;
        }
        let store = RunStore::reopen(run_dir, meta.metrics_len)?;
        // The record follows what the overrides changed (devices, a longer run).
        if config != recorded {
            crate::files::write_atomic(&config_file, config.to_toml().as_bytes())?;
        }
        Ok(Self::spawn(
            config,
            data,
            trainers,
            Some(store),
            Some(ckpt),
            sinks,
        ))
    }

    fn spawn(
        config: RunConfig,
        data: LoadedData,
        trainers: Vec<Trainer>,
        mut store: Option<RunStore>,
        resume: Option<PathBuf>,
        sinks: Sinks,
    ) -> Job {
        let (tx, rx) = channel();
        let control = Arc::new(Control::default());
        let run_dir = store
            .as_ref()
            .map(|s| s.dir().to_path_buf())
            .unwrap_or_else(|| paths_placeholder(&config));
        let aborts: Vec<AbortHandle> = trainers.iter().map(|t| t.abort_handle()).collect();
        // Resolved by build_trainers / start_ranks: every worker sets it in its own thread.
        let threads = config.devices.threads;
        let mut handles = Vec::new();
        for trainer in trainers {
            let rank = trainer.rank();
            let mut rec = match store.take() {
                Some(s) if rank == 0 => Recorder::new(s, tx.clone(), sinks.tensorboard.clone()),
                other => {
                    store = other;
                    Recorder::silent(run_dir.clone())
                }
            };
            let (control, data, resume) = (control.clone(), data.clone(), resume.clone());
            let aborts = aborts.clone();
            let device = trainer.device();
            let handle = std::thread::Builder::new()
                .name(format!("cptlab-worker-{rank}"))
                .spawn(move || {
                    // OpenMP's thread count is per calling thread: set it in the worker.
                    if let Some(n) = threads {
                        tch::set_num_threads(n as i32);
                    }
                    // A libtorch error surfaces as a panic in tch: turn it into this rank's
                    // error so the others are aborted instead of waiting for a timeout.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        // The current CUDA device is per thread (0 by default): set this rank's
                        // before its first CUDA call, so nothing lands on another rank's GPU.
                        crate::quant::set_current_device(device).map_err(|e| {
                            anyhow::anyhow!("rank {rank}: selecting {device:?}: {e}")
                        })?;
                        run_worker(data, trainer, resume.as_deref(), &mut rec, &control)
                    }))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        // libtorch's C++ backtrace is noise to a user: keep its first line.
                        Err(anyhow::anyhow!(
                            "worker panicked: {}",
                            super::torch_error::clean(&msg)
                        ))
                    });
                    if let Err(e) = &out {
                        // Wake every other rank blocked in a collective: the run has failed.
                        for a in &aborts {
                            a.abort(&format!("rank {rank} failed: {e:#}"));
                        }
                    }
                    (out, rec)
                })
                .expect("spawning a worker thread");
            handles.push(handle);
        }
        drop(tx);
        let dir = run_dir.clone();
        let finisher = std::thread::Builder::new()
            .name("cptlab-finisher".into())
            .spawn(move || finish_run(handles, &config, &dir))
            .expect("spawning the finisher thread");
        Job {
            events: rx,
            control,
            finisher,
            run_dir,
        }
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Waits for the run to end and returns its summary.
    pub fn wait(self) -> Summary {
        let Job {
            events,
            finisher,
            run_dir,
            ..
        } = self;
        drop(events);
        finisher.join().unwrap_or_else(|_| Summary {
            status: RunStatus::Failed,
            error: Some("the job's finisher thread panicked".into()),
            run_dir: run_dir.display().to_string(),
            ..Summary::default()
        })
    }
}

/// Joins every worker; the run's summary is rank 0's, unless a rank failed: then the first real
/// error (a rank that failed, not one that was only woken by the abort). Records the ending with
/// rank 0's recorder, whose drop then closes the event stream.
fn finish_run(
    handles: Vec<JoinHandle<WorkerResult>>,
    config: &RunConfig,
    run_dir: &Path,
) -> Summary {
    let mut results = Vec::new();
    let mut rank0_rec = None;
    for (rank, h) in handles.into_iter().enumerate() {
        let (out, rec) = h.join().unwrap_or_else(|_| {
            (
                Err(anyhow::anyhow!("the worker thread panicked")),
                Recorder::silent(run_dir.to_path_buf()),
            )
        });
        if rank == 0 {
            rank0_rec = Some(rec);
        }
        results.push(out);
    }
    // Each rank's error: an Err, or a summary whose status is failed (the trainer keeps the
    // progress made before the error).
    let errors: Vec<(usize, RankError)> = results
        .iter()
        .enumerate()
        .filter_map(|(rank, r)| RankError::of(r).map(|e| (rank, e)))
        .collect();
    let root_cause = errors
        .iter()
        .find(|(_, e)| matches!(e, RankError::Failed(_)))
        .or(errors.first())
        .map(|(rank, e)| {
            if results.len() > 1 {
                format!("rank {rank}: {}", e.message())
            } else {
                e.message().to_string()
            }
        });
    let summary = match (results.remove(0), root_cause) {
        (Ok(s), None) => s,
        (Ok(mut s), Some(err)) => {
            s.status = RunStatus::Failed;
            s.error = Some(err);
            s
        }
        (Err(_), Some(err)) => failed_summary(config, run_dir, err),
        (Err(e), None) => failed_summary(config, run_dir, format!("{e:#}")),
    };
    let mut rec = rank0_rec.unwrap_or_else(|| Recorder::silent(run_dir.to_path_buf()));
    let mut summary = summary;
    finish(&mut rec, &mut summary);
    summary
}

/// How one rank ended without a usable summary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RankError {
    /// Woken by the group's abort: another rank (or the job) ended the group, so the root cause
    /// is elsewhere.
    AbortedByPeer(String),
    /// The rank itself failed: a root cause.
    Failed(String),
}

impl RankError {
    /// A rank's error, if it has one: an `Err`, or a summary whose status is failed.
    fn of(result: &Result<Summary>) -> Option<RankError> {
        match result {
            Err(e) if CollectiveError::aborts(e) => {
                Some(RankError::AbortedByPeer(format!("{e:#}")))
            }
            Err(e) => Some(RankError::Failed(format!("{e:#}"))),
            Ok(s) if s.status == RunStatus::Failed => {
                let msg = s.error.clone().unwrap_or_default();
                Some(if s.aborted_by_peer {
                    RankError::AbortedByPeer(msg)
                } else {
                    RankError::Failed(msg)
                })
            }
            Ok(_) => None,
        }
    }

    fn message(&self) -> &str {
        match self {
            RankError::AbortedByPeer(m) | RankError::Failed(m) => m,
        }
    }
}

/// Ranks other than 0 of a multi-process job record nothing; their "run directory" is only a
/// name for messages.
fn paths_placeholder(config: &RunConfig) -> PathBuf {
    PathBuf::from(format!("(rank > 0 of {}: recorded by rank 0)", config.name))
}

fn failed_summary(config: &RunConfig, run_dir: &Path, error: String) -> Summary {
    Summary {
        status: RunStatus::Failed,
        error: Some(error),
        run_dir: run_dir.display().to_string(),
        name: config.name.clone(),
        model: config.model.kind.to_string(),
        ..Summary::default()
    }
}

fn check_devices(config: &RunConfig) -> Result<Vec<tch::Device>> {
    let devices = super::device::resolve(&config.devices.devices)
        .map_err(|e| anyhow::anyhow!("devices.devices: {e}"))?;
    let world = devices.len();
    let t = &config.train;
    anyhow::ensure!(
        t.batch_size.is_multiple_of(t.grad_accum * world),
        "train.batch_size = {} is not a multiple of grad_accum × world size = {} × {world}",
        t.batch_size,
        t.grad_accum
    );
    Ok(devices)
}

/// One collective handle per device: threads over shared memory for CPU workers, NCCL for GPUs.
fn collectives(devices: &[tch::Device]) -> Result<Vec<Box<dyn Collective>>> {
    // Threads over shared memory for CPU workers and a single GPU, NCCL for several GPUs.
    make_group(devices, None).map_err(|e| anyhow::anyhow!("devices.devices: {e}"))
}

/// A decoded dataset and how long decoding (or the cache) took.
#[derive(Clone)]
struct LoadedData {
    dataset: Arc<Dataset>,
    seconds: f64,
    /// What went wrong without stopping the load (a corrupt cache rebuilt, a cache that could
    /// not be written): rank 0 logs each once as a warning.
    warnings: Vec<String>,
}

/// Decodes the data before anything is created, so bad data leaves no run directory behind.
fn load_data(config: &RunConfig, source: &DataSource, paths: &Paths) -> Result<LoadedData> {
    let t = std::time::Instant::now();
    let loaded = data::load_with_report(
        source,
        &LoadOptions {
            seed: config.seed,
            image_size: config.data.image_size,
            cache_dir: Some(paths.cache.clone()),
        },
    )
    .with_context(|| {
        format!(
            "data.source {}",
            config.data.source.as_deref().unwrap_or(DEFAULT_DATA)
        )
    })?;
    Ok(LoadedData {
        dataset: Arc::new(loaded.dataset),
        seconds: t.elapsed().as_secs_f64(),
        warnings: loaded.warnings,
    })
}

/// Intra-op threads per worker: the configured number, else the cores divided among the CPU
/// workers (libtorch's default — one per core — for a single worker).
fn worker_threads(config: &RunConfig, cpu_workers: usize) -> usize {
    config.devices.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / cpu_workers.max(1)).max(1)
    })
}

/// Records the intra-op thread count every worker will use (the resolved config says it).
fn resolve_threads(config: &mut RunConfig, devices: &[tch::Device]) {
    let cpu_workers = devices.iter().filter(|d| **d == tch::Device::Cpu).count();
    config.devices.threads = Some(worker_threads(config, cpu_workers));
}

/// Runs `build` (model construction, a dry forward) with libtorch's intra-op pool at one thread.
/// A thread that has run a parallel OpenMP region keeps its team of threads, and ops on another
/// thread (our worker) then run about 2× slower with 2 threads (measured here, also in plain
/// PyTorch); so the job's own thread never runs parallel work. Workers set their own count.
fn build_quietly<T>(build: impl FnOnce() -> Result<T>) -> Result<T> {
    tch::set_num_threads(1);
    build()
}

/// Builds every rank's replica, one after another (libtorch's generator is process-wide, so
/// sequential seeding gives identical initial weights).
fn build_trainers(
    config: &RunConfig,
    data: &LoadedData,
    devices: &[tch::Device],
) -> Result<Vec<Trainer>> {
    let collectives = collectives(devices)?;
    build_quietly(|| {
        collectives
            .into_iter()
            .zip(devices)
            .map(|(c, &d)| {
                // The replica's CUDA state (allocator, cuDNN, streams) on its own GPU.
                crate::quant::set_current_device(d)
                    .map_err(|e| anyhow::anyhow!("selecting {d:?} for its replica: {e}"))?;
                Trainer::new(config.clone(), d, data.dataset.clone(), c)
            })
            .collect()
    })
}

fn run_worker(
    data: LoadedData,
    mut trainer: Trainer,
    resume: Option<&Path>,
    rec: &mut Recorder,
    control: &Control,
) -> Result<Summary> {
    let threads = tch::get_num_threads() as usize;
    let dataset = data.dataset;
    // Collective: every rank tells its own device (rank 0 alone would repeat its own).
    let devices = trainer.rank_devices()?;
    if trainer.rank() != 0 {
        return trainer.run(rec, control);
    }
    for message in &data.warnings {
        rec.emit(Event::Log {
            level: LogLevel::Warn,
            message: message.clone(),
        })?;
    }
    rec.emit(Event::Log {
        level: LogLevel::Info,
        message: format!(
            "data {}: {} train / {} test images, {} classes, ready in {:.2}s",
            dataset.name,
            dataset.train.len(),
            dataset.test.len(),
            dataset.classes.len(),
            data.seconds
        ),
    })?;
    if let Some(ckpt) = resume {
        let meta = trainer.meta();
        let msg = format!(
            "resumed from {} after epoch {} (step {})",
            ckpt.display(),
            meta.epochs_done,
            meta.global_step
        );
        rec.emit(Event::Log {
            level: LogLevel::Info,
            message: msg,
        })?;
    }
    let dir = rec.run_dir().display().to_string();
    let mut started = trainer.started_event(&dir, threads);
    started.devices = devices;
    rec.emit(Event::Started(started))?;
    if let Some(message) = trainer.layout_note() {
        rec.emit(Event::Log {
            level: LogLevel::Info,
            message,
        })?;
    }
    trainer.run(rec, control)
}

/// Records how the run ended: the summary file, then the final event.
/// A summary that cannot be written (a full disk) turns the ending into a failure that names
/// the file: a run whose record is incomplete must not report success.
fn finish(rec: &mut Recorder, summary: &mut Summary) {
    if let Err(e) = rec.write_summary(summary) {
        // The first error (the cause, e.g. the metrics write that hit the full disk) leads.
        let also = format!("{e:#}");
        summary.error = Some(match summary.error.take() {
            Some(first) => format!("{first}; then {also}"),
            None => also,
        });
        summary.status = RunStatus::Failed;
    }
    let event = Event::ending(summary);
    let _ = rec.emit(event);
}

#[cfg(test)]
mod rank_error_tests {
    use super::*;

    fn failed(error: &str, aborted_by_peer: bool) -> Result<Summary> {
        Ok(Summary {
            status: RunStatus::Failed,
            error: Some(error.into()),
            aborted_by_peer,
            ..Summary::default()
        })
    }

    #[test]
    fn aborted_ranks_are_told_apart_from_failed_ones_by_type() {
        let aborted: Result<Summary> = Err(CollectiveError::Aborted("rank 1 failed".into()).into());
        assert!(matches!(
            RankError::of(&aborted),
            Some(RankError::AbortedByPeer(m)) if m == "collective aborted: rank 1 failed"
        ));
        // Wrapped in context, an abort is still an abort.
        let wrapped: Result<Summary> =
            Err(anyhow::Error::from(CollectiveError::Aborted("x".into()))
                .context("all-reduce of gradients"));
        assert!(matches!(
            RankError::of(&wrapped),
            Some(RankError::AbortedByPeer(_))
        ));
        let real: Result<Summary> = Err(anyhow::anyhow!("out of memory"));
        assert_eq!(
            RankError::of(&real),
            Some(RankError::Failed("out of memory".into()))
        );
        assert_eq!(
            RankError::of(&failed("collective aborted: y", true)),
            Some(RankError::AbortedByPeer("collective aborted: y".into()))
        );
        assert_eq!(
            RankError::of(&failed("disk full", false)),
            Some(RankError::Failed("disk full".into()))
        );
        for status in [RunStatus::Finished, RunStatus::Stopped, RunStatus::Diverged] {
            let ok: Result<Summary> = Ok(Summary {
                status,
                ..Summary::default()
            });
            assert_eq!(RankError::of(&ok), None, "{status}");
        }
    }
}
