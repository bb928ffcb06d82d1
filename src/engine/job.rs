//! A job: one run's lifecycle. `Job::start` checks everything that can be checked up front
//! (config, devices, data layout, resume state) before creating anything, then trains on a
//! worker thread and reports through an event channel.
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use super::checkpoint;
use super::control::Control;
use super::device::parse_devices;
use super::recorder::Recorder;
use super::trainer::Trainer;
use crate::config::paths::Paths;
use crate::config::RunConfig;
use crate::data::{self, DataSource, Dataset, LoadOptions};
use crate::telemetry::event::{Event, LogLevel};
use crate::telemetry::store::{self, RunStore, CHECKPOINT_DIR};
use crate::telemetry::Summary;

/// The data source used when neither the config nor `CPTLAB_DATA` names one.
pub const DEFAULT_DATA: &str = "synthetic";

pub struct JobSpec {
    pub config: RunConfig,
    pub paths: Paths,
}

pub struct Job {
    events: Receiver<Event>,
    control: Arc<Control>,
    handle: JoinHandle<Summary>,
    run_dir: PathBuf,
}

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
        let JobSpec { mut config, paths } = spec;
        config.validate()?;
        let source = resolve_data_source(&mut config)?;
        let devices = check_devices(&config)?;
        let data = load_data(&config, &source, &paths)?;
        let trainer = build_trainer(&config, &data, devices[0])?;
        let store = RunStore::create(&paths.runs, &config)?;
        Ok(Self::spawn(config, data, trainer, store, None))
    }

    /// Continues the run in `run_dir` from its last checkpoint, with the config it recorded.
    pub fn resume(run_dir: &Path, paths: Paths) -> Result<Job> {
        let config = RunConfig::from_file(&run_dir.join(store::CONFIG_FILE))?;
        let ckpt = run_dir.join(CHECKPOINT_DIR).join(checkpoint::LAST);
        anyhow::ensure!(
            ckpt.is_file(),
            "{}: no checkpoint to resume from (runs save one at every epoch end)",
            ckpt.display()
        );
        let meta = checkpoint::read_meta(&ckpt)?;
        let mut config = config;
        config.validate()?;
        let source = resolve_data_source(&mut config)?;
        let devices = check_devices(&config)?;
        let data = load_data(&config, &source, &paths)?;
        let mut trainer = build_trainer(&config, &data, devices[0])?;
        trainer.restore(&ckpt)?;
        let store = RunStore::reopen(run_dir, meta.metrics_len)?;
        Ok(Self::spawn(config, data, trainer, store, Some(ckpt)))
    }

    fn spawn(
        config: RunConfig,
        data: LoadedData,
        trainer: Trainer,
        store: RunStore,
        resume: Option<PathBuf>,
    ) -> Job {
        let (tx, rx) = channel();
        let control = Arc::new(Control::default());
        let run_dir = store.dir().to_path_buf();
        let mut rec = Recorder::new(store, tx);
        let worker_control = control.clone();
        let handle = std::thread::Builder::new()
            .name("cptlab-worker-0".into())
            .spawn(move || {
                let outcome =
                    run_worker(data, trainer, resume.as_deref(), &mut rec, &worker_control);
                let summary = match outcome {
                    Ok(s) => s,
                    Err(e) => Summary {
                        status: "failed".into(),
                        error: Some(format!("{e:#}")),
                        run_dir: rec.run_dir().display().to_string(),
                        name: config.name.clone(),
                        model: config.model.kind.to_string(),
                        ..Summary::default()
                    },
                };
                finish(&mut rec, &summary);
                summary
            })
            .expect("spawning the worker thread");
        Job {
            events: rx,
            control,
            handle,
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

    /// Waits for the worker and returns the run's summary.
    pub fn wait(self) -> Summary {
        let Job {
            events,
            handle,
            run_dir,
            ..
        } = self;
        drop(events);
        handle.join().unwrap_or_else(|_| Summary {
            status: "failed".into(),
            error: Some("the worker thread panicked".into()),
            run_dir: run_dir.display().to_string(),
            ..Summary::default()
        })
    }
}

fn check_devices(config: &RunConfig) -> Result<Vec<tch::Device>> {
    let spec = parse_devices(&config.devices.devices)
        .map_err(|e| anyhow::anyhow!("devices.devices: {e}"))?;
    let devices = spec
        .resolve()
        .map_err(|e| anyhow::anyhow!("devices.devices: {e}"))?;
    anyhow::ensure!(
        devices.len() == 1,
        "devices.devices = {:?}: this build trains on one device; data-parallel workers (cpu:N, several GPUs) are not available yet",
        config.devices.devices
    );
    Ok(devices)
}

/// A decoded dataset and how long decoding (or the cache) took.
struct LoadedData {
    dataset: Arc<Dataset>,
    seconds: f64,
}

/// Decodes the data before anything is created, so bad data leaves no run directory behind.
fn load_data(config: &RunConfig, source: &DataSource, paths: &Paths) -> Result<LoadedData> {
    let t = std::time::Instant::now();
    let dataset = data::load(
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
        dataset: Arc::new(dataset),
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn build_trainer(config: &RunConfig, data: &LoadedData, device: tch::Device) -> Result<Trainer> {
    // libtorch's intra-op pool is process-wide: set it before any work.
    if let Some(n) = config.devices.threads {
        tch::set_num_threads(n as i32);
    }
    Trainer::new(config.clone(), device, data.dataset.clone())
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
    rec.emit(Event::Started(trainer.started_event(&dir, threads)))?;
    trainer.run(rec, control)
}

/// Records how the run ended: the summary file, then the final event.
fn finish(rec: &mut Recorder, summary: &Summary) {
    let _ = rec.write_summary(summary);
    let event = match summary.status.as_str() {
        "finished" | "stopped" => Event::Finished {
            summary: summary.clone(),
        },
        _ => Event::Failed {
            error: summary
                .error
                .clone()
                .unwrap_or_else(|| summary.status.clone()),
            step: (summary.steps > 0).then_some(summary.steps),
        },
    };
    let _ = rec.emit(event);
}
