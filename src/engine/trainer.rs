//! One worker's training loop on one device: batches, forward, backward, flat optimizer step,
//! evaluation each epoch, checkpoints. Reports only through the `Recorder`.
//!
//! The host never waits for the device inside a step: the loss is summed on the device, and
//! every `train.log_every` steps (and at an epoch's or the run's end) one read
//! ([`read_to_host`](super::device::read_to_host), counted) brings the window's loss sum — with
//! the ranks' stop and pause requests, all-reduced together — for one step event carrying the
//! means over the window. Only fp16's overflow decision reads the device every step (as
//! PyTorch's `GradScaler` does); clipping stays on the device (`zero`), and the window's
//! gradient norms are summed there and read with its loss.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};

use super::batch::{BatchConverter, BatchPlan, Prefetcher};
use super::checkpoint::{self, Meta};
use super::collective::{Collective, CollectiveError, ReduceOp};
use super::control::Control;
use super::device::{host_reads, read_to_host};
use super::flat::FlatParams;
use super::loss_scale::{LossScaleError, LossScaler};
use super::recorder::Recorder;
use super::zero::{DataParallelOptimizer, ShardLayout};
use crate::config::RunConfig;
use crate::data::{epoch_permutation, fill_batch, Augment, Dataset, ShardPlan};
use crate::models::{self, Classifier};
use crate::quant::cost::CostModel;
use crate::quant::grad::quantize_grads_;
use crate::quant::{AutocastGuard, Bits};
use crate::schedule::lr::LrContext;
use crate::telemetry::event::{ClassAccuracy, EvalEvent, Event, StartedEvent, StepEvent};
use crate::telemetry::{RunStatus, Summary};

/// Name of the fp32 master weights in a checkpoint of a half-precision run.
const MASTER: &str = "master";

/// Why a loop ended early.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("diverged at step {step} (loss = {loss})")]
    Diverged { step: u64, loss: f64 },
    #[error("stopped by the user")]
    ByUser,
}

pub struct Trainer {
    cfg: RunConfig,
    device: Device,
    dataset: Arc<Dataset>,
    vs: VarStore,
    model: Box<dyn Classifier>,
    flat: FlatParams,
    /// fp32 master weights of a half-precision replica (fp16/bf16); None at fp32.
    master: Option<FlatParams>,
    /// fp16's dynamic (or static) loss scale.
    scaler: Option<LossScaler>,
    /// Effective BitOps per step of this model at the run's batch.
    cost: CostModel,
    segments: Vec<(i64, i64)>,
    /// The optimizer over this rank's part of the flat buffer, with the collective: the same
    /// code path at world size 1.
    dp: DataParallelOptimizer,
    rank: usize,
    world: usize,
    converter: BatchConverter,
    plan: ShardPlan,
    lr_ctx: LrContext,
    total_steps: u64,
    meta: Meta,
    params: u64,
    fault: Option<(usize, u64)>,
    injected_overflows: Vec<u64>,
    /// Autocast dtype (amp_bf16, amp_fp16); None without autocast.
    amp: Option<Kind>,
    log_every: u64,
    /// Device→host reads in this session's training steps, and those steps.
    step_reads: u64,
    session_steps: u64,
}

/// The steps since the last step event: the loss summed on the device, the rest on the host.
struct Window {
    steps: u64,
    /// Sum of this rank's step losses (f64 on the device).
    loss: Option<Tensor>,
    started: Duration,
    t_data: f64,
    t_fwd: f64,
    t_bwd: f64,
    t_comm: f64,
    t_opt: f64,
    /// Sum of the steps' global gradient norms (f64 on the device; read with the loss).
    grad_norm_sum: Option<Tensor>,
    grad_norms: u64,
    gbitops: f64,
    skipped: u64,
}

impl Window {
    fn new(started: Duration) -> Window {
        Window {
            steps: 0,
            loss: None,
            started,
            t_data: 0.0,
            t_fwd: 0.0,
            t_bwd: 0.0,
            t_comm: 0.0,
            t_opt: 0.0,
            grad_norm_sum: None,
            grad_norms: 0,
            gbitops: 0.0,
            skipped: 0,
        }
    }
}

/// Keeps BatchNorm's parameters and running statistics in fp32 in a half-precision replica
/// (apex's `keep_batchnorm_fp32`): a BatchNorm module is a path with `running_mean`.
fn keep_norms_fp32(vs: &VarStore) {
    let vars = vs.variables();
    let norms: Vec<&str> = vars
        .keys()
        .filter_map(|n| n.strip_suffix("running_mean"))
        .collect();
    tch::no_grad(|| {
        for (name, t) in &vars {
            let in_norm = norms.iter().any(|p| {
                name.strip_prefix(p).is_some_and(|rest| {
                    ["weight", "bias", "running_mean", "running_var"].contains(&rest)
                })
            });
            if in_norm && t.kind() != Kind::Float {
                let mut t = t.shallow_clone();
                t.set_data(&t.to_kind(Kind::Float));
            }
        }
    });
}

/// Seeds libtorch's generator for `epoch`, so dropout draws are reproducible after a resume.
fn epoch_seed(seed: u64, epoch: u64) -> i64 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.wrapping_add(1)) as i64 & i64::MAX
}

/// Test hook: `CPTLAB_INJECT_OVERFLOW=3,4,10` scales the loss to inf on those steps (fp16 tests of
/// the loss scaler against DeepSpeed's rules).
fn injected_overflows() -> Vec<u64> {
    std::env::var("CPTLAB_INJECT_OVERFLOW")
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Test hook: `CPTLAB_INJECT_FAULT=rank=R,step=S` makes rank R fail at step S, to test that a
/// failing worker stops the others and the run records the error. Read once per trainer.
fn injected_fault() -> Option<(usize, u64)> {
    let spec = std::env::var("CPTLAB_INJECT_FAULT").ok()?;
    let field = |name: &str| -> Option<u64> {
        spec.split(',').find_map(|kv| {
            kv.trim()
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        })
    };
    Some((field("rank")? as usize, field("step")?))
}

impl Trainer {
    /// Builds rank `collective.rank()`'s replica. Every rank seeds libtorch identically before
    /// building, so all replicas start from the same weights (and `run` broadcasts rank 0's to be
    /// sure). Build replicas one after another: libtorch's generator is process-wide.
    pub fn new(
        cfg: RunConfig,
        device: Device,
        dataset: Arc<Dataset>,
        collective: Box<dyn Collective>,
    ) -> Result<Trainer> {
        let (rank, world) = (collective.rank(), collective.world_size());
        tch::manual_seed(cfg.seed as i64);
        let vs = VarStore::new(device);
        let kind = cfg.model.kind;
        let shape = dataset.shape;
        let mut model = models::build(
            kind,
            &cfg.model.vit,
            &vs.root(),
            dataset.classes.len() as i64,
            shape.channels as i64,
        );
        let p = &cfg.precision;
        model.set_layer_roles(p.first_layer_full_precision, p.last_layer_full_precision);
        let mut vs = vs;
        let dtype = super::device::replica_kind(p.mode);
        if dtype != Kind::Float {
            // The replica runs in half precision; the optimizer keeps fp32 master weights.
            vs.set_kind(dtype);
            keep_norms_fp32(&vs);
        }
        if let Device::Cuda(_) = device {
            // Process-wide, as in PyTorch; every rank sets the same.
            crate::quant::set_cuda_math(super::device::cuda_math_for(p.tf32))
                .map_err(|e| anyhow::anyhow!("setting cudnn.benchmark and TF32: {e}"))?;
        }
        let params: u64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum();
        // Checkpoints record which model they hold, so a resume under another config says so.
        let cfg_model_name = cfg.model.kind.to_string();
        let channels_last =
            super::device::channels_last_active(p.channels_last, p.mode, device, kind);
        let flat = FlatParams::with_layout(&vs, ShardLayout::pad_multiple(world), channels_last);
        let master = (dtype != Kind::Float).then(|| flat.master_copy());
        let segments = flat.segments();
        let scaler =
            super::device::scales_loss(p.mode).then(|| LossScaler::new(p.loss_scale.clone()));
        let amp = super::device::autocast_kind(p.mode);
        let stage = cfg.devices.zero;
        let layout = ShardLayout::for_flat(&flat, world, rank)?;
        let dp = DataParallelOptimizer::new(stage, &cfg.optimizer, layout, collective, device)?;
        let info = kind.info();
        // Inputs keep the data's size unless `data.resize` asks for another (the DeepSpeed
        // benchmark fed torchvision models 224×224; CIFAR practice trains them at 32×32).
        let input = cfg
            .data
            .resize
            .map(|r| r as i64)
            .unwrap_or(shape.height as i64);
        let fits = input >= info.min_input && info.max_input.is_none_or(|m| input <= m);
        anyhow::ensure!(
            fits,
            "model {kind} takes inputs from {} to {} pixels square; the batches would be {input}×{input}: set data.resize (the model's usual size is {})",
            info.min_input,
            info.max_input.map_or("any size".into(), |m| m.to_string()),
            info.default_input
        );
        if kind == models::ModelKind::Vit {
            anyhow::ensure!(
                cfg.model.vit.image_size == input,
                "model.vit.image_size = {} but the batches are {input}×{input}: set one to match the other",
                cfg.model.vit.image_size
            );
        }
        let converter = BatchConverter::new(device, shape, cfg.data.normalize, Some(input))
            .with_kind(dtype)
            .with_channels_last(channels_last);
        let probe = Tensor::zeros([1, shape.channels as i64, input, input], (dtype, device));
        let cost = crate::models::measure_cost(model.as_mut(), cfg.train.batch_size as i64, &probe);
        let plan = ShardPlan::new(cfg.train.batch_size, world, rank, true)
            .map_err(|e| anyhow::anyhow!("train.batch_size: {e}"))?;
        let steps_per_epoch = plan.steps_per_epoch(dataset.train.len()) as u64;
        anyhow::ensure!(
            steps_per_epoch > 0,
            "train.batch_size = {} is larger than the training set ({} images)",
            cfg.train.batch_size,
            dataset.train.len()
        );
        let mut total_steps = steps_per_epoch * cfg.train.epochs;
        if let Some(m) = cfg.train.max_steps {
            total_steps = total_steps.min(m);
        }
        let lr_ctx = LrContext {
            base_lr: cfg.optimizer.lr(),
            total_steps,
            steps_per_epoch,
            global_batch: cfg.train.batch_size as u64,
            momentum: cfg.optimizer.momentum_kind(),
        };
        cfg.lr_schedule
            .validate(&lr_ctx)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(s) = &cfg.precision.schedule {
            s.validate(total_steps)
                .map_err(|e| anyhow::anyhow!("precision.schedule: {e}"))?;
        }
        let log_every = cfg.train.log_every.max(1);
        Ok(Trainer {
            cfg,
            device,
            dataset,
            vs,
            model,
            flat,
            master,
            scaler,
            cost,
            segments,
            dp,
            rank,
            world,
            converter,
            plan,
            lr_ctx,
            total_steps,
            meta: Meta::for_model(&cfg_model_name, params),
            params,
            fault: injected_fault(),
            injected_overflows: injected_overflows(),
            amp,
            log_every,
            step_reads: 0,
            session_steps: 0,
        })
    }

    /// Autocast for this worker's thread while the guard lives (amp modes; None otherwise).
    fn autocast(&self) -> Result<Option<AutocastGuard>> {
        self.amp
            .map(|k| AutocastGuard::enter(self.device, k))
            .transpose()
            .map_err(|e| anyhow::anyhow!("entering autocast: {e}"))
    }

    /// Bits of optimizer step `step` (0-based): the precision schedule's, else full precision.
    fn bits_at(&self, step: u64) -> Bits {
        match &self.cfg.precision.schedule {
            Some(s) => Bits {
                fwd: s.q_fwd_at(step, self.total_steps),
                bwd: s.q_bwd_at(step, self.total_steps),
            },
            None => Bits::FULL,
        }
    }

    /// Evaluation runs at the schedule's top precision (where CPT ends), else full precision.
    fn eval_bits(&self) -> Bits {
        match &self.cfg.precision.schedule {
            Some(s) => Bits {
                fwd: s.q_max,
                bwd: s.q_bwd(),
            },
            None => Bits::FULL,
        }
    }

    /// Whether this replica runs channels_last (`precision.channels_last` decided).
    pub fn channels_last(&self) -> bool {
        self.converter.channels_last()
    }

    /// The run header's line about the memory layout, when it is channels_last.
    pub fn layout_note(&self) -> Option<String> {
        self.channels_last().then(|| {
            format!(
                "memory layout: channels_last (precision.channels_last = {}): conv weights and batches in NHWC strides",
                self.cfg.precision.channels_last.name()
            )
        })
    }

    /// The flat parameter buffers (for tests of their layout).
    pub fn flat(&self) -> &FlatParams {
        &self.flat
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn params(&self) -> u64 {
        self.params
    }

    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.lr_ctx.steps_per_epoch
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// This rank's device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Every rank's own device in rank order (`cpu`, `cuda:N` as each rank's process numbers
    /// its GPUs), agreed through the collective: every rank must call it. One small all-reduce
    /// and read before training.
    pub fn rank_devices(&mut self) -> Result<Vec<String>> {
        if self.world == 1 {
            return Ok(vec![super::device::device_name(self.device)]);
        }
        // 0: no rank wrote the slot, 1: CPU, 2 + i: cuda:i.
        let code = match self.device {
            Device::Cuda(i) => 2.0 + i as f64,
            _ => 1.0,
        };
        let mut t = Tensor::zeros([self.world as i64], (Kind::Double, self.device));
        let _ = t.narrow(0, self.rank as i64, 1).fill_(code);
        self.dp.collective().all_reduce(&mut t, ReduceOp::Sum)?;
        let v = read_to_host(&t)?;
        self.dp.collective().check_read()?;
        Ok(v.into_iter()
            .map(|c| match c as i64 {
                1 => "cpu".to_string(),
                c if c >= 2 => format!("cuda:{}", c - 2),
                _ => "?".to_string(),
            })
            .collect())
    }

    pub fn abort_handle(&self) -> super::collective::AbortHandle {
        self.dp.abort_handle()
    }

    /// Continues from a checkpoint: weights, optimizer state (any world size) and progress.
    pub fn restore(&mut self, path: &std::path::Path) -> Result<&Meta> {
        let loaded = checkpoint::load(path, &self.vs)?;
        self.dp.load_full_state(&loaded.optimizer_state)?;
        if let Some(master) = &mut self.master {
            let saved = loaded
                .optimizer_state
                .iter()
                .find(|(n, _)| n == MASTER)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: no fp32 master weights in this checkpoint (was it saved at fp32?)",
                        path.display()
                    )
                })?;
            let len = saved.numel() as i64;
            tch::no_grad(|| {
                master.params.narrow(0, 0, len).copy_(saved);
                self.flat.params.copy_(&master.params);
            });
            self.flat.load_apart_params(&master.params);
        }
        if let Some(scaler) = &mut self.scaler {
            if let Some(state) = &loaded.meta.loss_scaler {
                *scaler = state.clone();
            }
        }
        self.meta = loaded.meta;
        anyhow::ensure!(
            self.flat.is_intact(),
            "internal: flat parameter buffer detached after restore"
        );
        Ok(&self.meta)
    }

    pub fn started_event(&self, run_dir: &str, threads: usize) -> StartedEvent {
        let d = &self.dataset;
        StartedEvent {
            run_dir: run_dir.to_string(),
            name: self.cfg.name.clone(),
            model: self.cfg.model.kind.to_string(),
            params: self.params,
            dataset: d.name.clone(),
            classes: d.classes.clone(),
            train_size: d.train.len() as u64,
            test_size: d.test.len() as u64,
            steps_per_epoch: self.lr_ctx.steps_per_epoch,
            total_steps: self.total_steps,
            epochs: self.cfg.train.epochs,
            devices: vec![super::device::device_name(self.device); self.world],
            threads,
            resumed_after_epoch: (self.meta.epochs_done > 0).then_some(self.meta.epochs_done),
            epoch_base: crate::telemetry::event::EPOCH_BASE,
            // `cptlab estimate`'s figure for the workbench (a failed estimate only leaves it out).
            memory_estimate_bytes: super::memory::estimate(
                &self.cfg,
                d.classes.len() as i64,
                d.shape.channels as i64,
            )
            .ok()
            .map(|e| e.total_bytes),
        }
    }

    /// Runs the remaining epochs. Returns the summary (also for diverged or stopped runs).
    pub fn run(&mut self, rec: &mut Recorder, control: &Control) -> Result<Summary> {
        let mut summary = self.base_summary(rec);
        summary.optimizer_state_bytes_per_rank = Some(self.dp.optimizer_state_bytes());
        self.dp.sync_parameters(&mut self.flat)?;
        let mut per_class = Vec::new();
        let outcome = self.run_epochs(rec, control, &mut per_class);
        summary.epochs = self.meta.epochs_done;
        summary.steps = self.meta.global_step;
        summary.train_seconds = self.meta.train_seconds;
        summary.seconds_per_epoch = self.meta.seconds_per_epoch.clone();
        summary.test_acc_per_epoch = self.meta.test_acc_per_epoch.clone();
        summary.final_test_acc = self.meta.test_acc_per_epoch.last().copied();
        if let Some((i, best)) = self
            .meta
            .test_acc_per_epoch
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
        {
            summary.best_test_acc = Some(*best);
            summary.best_epoch = Some(i as u64 + 1);
        }
        summary.per_class_acc = per_class;
        summary.skipped_steps = self.meta.skipped_steps;
        summary.host_reads_per_step =
            (self.session_steps > 0).then(|| self.step_reads as f64 / self.session_steps as f64);
        summary.gbitops = Some(self.meta.gbitops);
        if let Some((bytes, kind)) = super::memory::peak_memory(self.device) {
            summary.peak_memory_bytes = Some(bytes);
            summary.peak_memory_kind = Some(kind);
        }
        summary.gbitops_ratio_vs_static = Some(match &self.cfg.precision.schedule {
            Some(s) => {
                let base = self.cost.static_baseline_gbitops(s, self.meta.global_step);
                if base > 0.0 {
                    self.meta.gbitops / base
                } else {
                    1.0
                }
            }
            None => 1.0,
        });
        match outcome {
            Ok(()) => summary.status = RunStatus::Finished,
            Err(e) => {
                summary.status = match e.downcast_ref::<Stopped>() {
                    Some(Stopped::Diverged { .. }) => RunStatus::Diverged,
                    Some(Stopped::ByUser) => RunStatus::Stopped,
                    None => RunStatus::Failed,
                };
                summary.aborted_by_peer =
                    summary.status == RunStatus::Failed && CollectiveError::aborts(&e);
                summary.error = Some(format!("{e:#}"));
            }
        }
        Ok(summary)
    }

    /// After an epoch: autograd and the optimizer kept every parameter and gradient in the flat
    /// buffers, in the layout they were given (pointer and stride checks, no device work).
    fn check_layout(&self) -> Result<()> {
        anyhow::ensure!(
            self.flat.is_intact(),
            "internal: a parameter or gradient left the flat buffers during training"
        );
        anyhow::ensure!(
            !self.channels_last() || self.flat.is_channels_last(),
            "internal: a conv weight or its gradient lost its channels_last strides during training"
        );
        Ok(())
    }

    fn base_summary(&self, rec: &Recorder) -> Summary {
        Summary {
            run_dir: rec.run_dir().display().to_string(),
            name: self.cfg.name.clone(),
            model: self.cfg.model.kind.to_string(),
            params: self.params,
            dataset: self.dataset.name.clone(),
            ..Summary::default()
        }
    }

    fn run_epochs(
        &mut self,
        rec: &mut Recorder,
        control: &Control,
        per_class: &mut Vec<ClassAccuracy>,
    ) -> Result<()> {
        let spe = self.lr_ctx.steps_per_epoch;
        let epochs_needed = self.total_steps.div_ceil(spe);
        let clock = control.clock();
        while self.meta.epochs_done < epochs_needed && self.meta.global_step < self.total_steps {
            // 0-based inside the loop (data order and seeds); events count from 1.
            let epoch = self.meta.epochs_done;
            let t0 = clock.now();
            let train_loss = match self.train_epoch(epoch, rec, control) {
                Ok(loss) => loss,
                Err(e) => {
                    // The part of the epoch that ran counts as training time; a resume adds
                    // the rest of the epoch to it.
                    let part = clock.secs_since(t0);
                    self.meta.partial_epoch_seconds += part;
                    self.meta.train_seconds += part;
                    // A user's stop keeps the progress: checkpoint mid-epoch; resume continues
                    // at the next step of this epoch.
                    if matches!(e.downcast_ref::<Stopped>(), Some(Stopped::ByUser))
                        && self.cfg.train.checkpoint
                    {
                        self.checkpoint(rec)?;
                    }
                    return Err(e);
                }
            };
            self.check_layout()?;
            // Paused time is not in it (the clock holds while paused or stopped).
            let session_part = clock.secs_since(t0);
            self.meta.train_seconds += session_part;
            // A run whose length (train.max_steps) ends inside this epoch leaves it open: its
            // time stays partial and it is not counted done, so a resume that extends the run
            // finishes this epoch and counts it whole.
            let complete = self.meta.global_step >= (epoch + 1) * spe;
            let epoch_seconds = if complete {
                let secs = std::mem::take(&mut self.meta.partial_epoch_seconds) + session_part;
                self.meta.epochs_done += 1;
                self.meta.seconds_per_epoch.push(secs);
                secs
            } else {
                self.meta.partial_epoch_seconds += session_part;
                self.meta.partial_epoch_seconds
            };
            if self.cfg.train.eval {
                let (test_loss, test_acc, classes) = self.evaluate()?;
                // An open epoch's evaluation is replaced when the epoch is finished later.
                if std::mem::replace(&mut self.meta.open_epoch_evaluated, !complete) {
                    self.meta.test_acc_per_epoch.pop();
                }
                self.meta.test_acc_per_epoch.push(test_acc);
                rec.emit(Event::Eval(EvalEvent {
                    epoch: epoch + 1,
                    step: self.meta.global_step,
                    test_loss,
                    test_acc,
                    train_loss,
                    epoch_seconds,
                }))?;
                *per_class = classes;
            }
            if self.cfg.train.checkpoint {
                self.checkpoint(rec)?;
            }
        }
        Ok(())
    }

    /// Consolidated checkpoint: every rank takes part in gathering the optimizer state (and
    /// rank 0's BatchNorm statistics), rank 0 writes it.
    fn checkpoint(&mut self, rec: &mut Recorder) -> Result<()> {
        self.broadcast_buffers()?;
        let mut state = self.dp.full_state()?;
        if self.rank != 0 {
            return Ok(());
        }
        if let Some(master) = &self.master {
            let len = self.flat.param_len();
            state.push((MASTER.into(), master.params.narrow(0, 0, len)));
        }
        self.meta.loss_scaler = self.scaler.clone();
        self.meta.metrics_len = rec.metrics_len()?;
        let path = checkpoint::save(
            &rec.run_dir().join(crate::telemetry::store::CHECKPOINT_DIR),
            &self.vs,
            &state,
            &self.meta,
        )?;
        // The epoch of the checkpoint's last step (1-based): the epoch just finished, or the one
        // a mid-epoch stop interrupted.
        let spe = self.lr_ctx.steps_per_epoch.max(1);
        let step = self.meta.global_step;
        rec.emit(Event::Checkpoint {
            epoch: step.div_ceil(spe),
            step,
            path: path.display().to_string(),
        })
    }

    /// Reduces, (un)scales, optionally quantizes the gradients, and updates: the fp32 buffers
    /// directly, or a half-precision replica's fp32 master weights, then refreshes the replica.
    fn optimizer_step(
        &mut self,
        lr: f64,
        momentum: Option<f64>,
        bits: Bits,
        loss_scale: f64,
    ) -> Result<super::zero::StepOutcome> {
        let clip = self.cfg.train.grad_clip;
        let quantize = self.cfg.precision.quantize_weight_grads && bits.bwd < 32;
        // The norm and the clip stay on the device; fp16's overflow check reads the norm once
        // (through `read_to_host`, counted).
        let check_overflow = self.scaler.is_some();
        let outcome = match &mut self.master {
            None => {
                if loss_scale != 1.0 {
                    // Autocast fp16: fp32 gradients of the scaled loss, unscaled in place.
                    let _ = tch::no_grad(|| self.flat.grads.g_mul_scalar_(1.0 / loss_scale));
                }
                if quantize {
                    quantize_grads_(&mut self.flat.grads, &self.segments, bits.bwd)?;
                }
                self.dp
                    .step(&mut self.flat, lr, momentum, clip, check_overflow)?
            }
            Some(master) => {
                tch::no_grad(|| master.grads.copy_(&self.flat.grads));
                // BatchNorm's fp32 gradients, kept apart from the half buffer.
                self.flat.copy_apart_grads(&master.grads);
                if loss_scale != 1.0 {
                    let _ = tch::no_grad(|| master.grads.g_mul_scalar_(1.0 / loss_scale));
                }
                if quantize {
                    quantize_grads_(&mut master.grads, &self.segments, bits.bwd)?;
                }
                let out = self.dp.step(master, lr, momentum, clip, check_overflow)?;
                if !out.overflow {
                    tch::no_grad(|| self.flat.params.copy_(&master.params));
                    self.flat.load_apart_params(&master.params);
                }
                out
            }
        };
        self.flat.zero_grads();
        Ok(outcome)
    }

    /// Gives every replica rank 0's non-trainable float buffers (BatchNorm running statistics),
    /// as DDP's `broadcast_buffers` does: ranks train on their own batch statistics, evaluation
    /// and checkpoints use rank 0's.
    fn broadcast_buffers(&mut self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let mut buffers: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| {
                !t.requires_grad() && matches!(t.kind(), Kind::Float | Kind::Half | Kind::BFloat16)
            })
            .collect();
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, mut t) in buffers {
            tch::no_grad(|| self.dp.collective().broadcast(&mut t, 0))?;
        }
        Ok(())
    }

    /// One epoch (or what is left of the step budget); returns the mean training loss.
    fn train_epoch(&mut self, epoch: u64, rec: &mut Recorder, control: &Control) -> Result<f64> {
        tch::manual_seed(epoch_seed(self.cfg.seed, epoch));
        let reads = host_reads();
        let (mut loss_sum, mut loss_count) = (0.0, 0u64);
        let out = self.train_steps(epoch, rec, control, &mut loss_sum, &mut loss_count);
        self.step_reads += host_reads() - reads;
        self.session_steps += loss_count;
        out?;
        Ok(if loss_count > 0 {
            loss_sum / loss_count as f64
        } else {
            f64::NAN
        })
    }

    /// The steps of [`Trainer::train_epoch`]; adds each step event's loss sum (the mean over
    /// the global batch, summed over its steps) to `loss_sum` and its steps to `loss_count`.
    fn train_steps(
        &mut self,
        epoch: u64,
        rec: &mut Recorder,
        control: &Control,
        loss_sum: &mut f64,
        loss_count: &mut u64,
    ) -> Result<()> {
        let n = self.dataset.train.len();
        let perm = epoch_permutation(n, self.cfg.seed, epoch);
        let spe = self.lr_ctx.steps_per_epoch;
        let accum = self.cfg.train.grad_accum;
        let batch = self.cfg.train.batch_size;
        let micro = self.plan.local_batch() / accum;
        let aug = Augment {
            random_crop_padding: self.cfg.data.random_crop_padding,
            horizontal_flip: self.cfg.data.horizontal_flip,
        };
        // Every timing below is training time: pauses and a stopped process are not in it.
        let clock = control.clock();
        let first_step_in_epoch = self.meta.global_step - epoch * spe;
        let end = spe
            .min(self.total_steps.saturating_sub(epoch * spe))
            .max(first_step_in_epoch);
        // The epoch's micro-batches in training order, filled ahead by the prefetch thread.
        let mut plan = BatchPlan {
            indices: Vec::new(),
            positions: Vec::new(),
        };
        for s in first_step_in_epoch..end {
            let indices = self.plan.rank_indices(&perm, s);
            let positions = self.plan.rank_positions(n, s);
            for m in 0..accum {
                plan.indices
                    .push(indices[m * micro..(m + 1) * micro].to_vec());
                plan.positions
                    .push(positions[m * micro..(m + 1) * micro].to_vec());
            }
        }
        let gpu = matches!(self.device, Device::Cuda(_));
        // A thread of its own only where it takes no core from libtorch's intra-op threads.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let busy = tch::get_num_threads().max(1) as usize * self.world;
        let mut prefetch = Prefetcher::spawn(
            self.dataset.clone(),
            plan,
            aug,
            (self.cfg.seed, epoch),
            gpu,
            gpu || busy < cores,
        );
        let mut w = Window::new(clock.now());
        for s in first_step_in_epoch..end {
            let bits = self.bits_at(self.meta.global_step);
            let loss_scale = self.scaler.as_ref().map_or(1.0, |s| s.scale());
            let inject_overflow = self
                .injected_overflows
                .contains(&(self.meta.global_step + 1));
            let mut step_loss: Option<Tensor> = None;
            for _ in 0..accum {
                let t = clock.now();
                let host = prefetch.next_batch()?;
                let (x, y) = self.converter.convert_batch(&host);
                w.t_data += clock.secs_since(t);
                let t = clock.now();
                let logits = {
                    let _amp = self.autocast()?;
                    self.model.forward(&x, true, bits)
                };
                // The loss in fp32 whatever the replica's type, outside autocast.
                let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                    &y,
                    None,
                    Reduction::Mean,
                    -100,
                    self.cfg.train.label_smoothing,
                );
                let loss = if accum > 1 { loss / accum as f64 } else { loss };
                w.t_fwd += clock.secs_since(t);
                let t = clock.now();
                if inject_overflow {
                    (&loss * f64::INFINITY).backward();
                } else if loss_scale != 1.0 {
                    (&loss * loss_scale).backward();
                } else {
                    loss.backward();
                }
                // Summed on the device, in f64 as the host summed it before.
                let l = loss.detach().to_kind(Kind::Double);
                step_loss = Some(match step_loss {
                    None => l,
                    Some(acc) => acc + l,
                });
                w.t_bwd += clock.secs_since(t);
            }
            let step = self.meta.global_step + 1;
            if self.fault == Some((self.rank, step)) {
                anyhow::bail!("injected fault (CPTLAB_INJECT_FAULT) at step {step}");
            }
            let step_loss = step_loss.expect("at least one micro-batch");
            w.loss = Some(match w.loss.take() {
                None => step_loss,
                Some(acc) => acc + step_loss,
            });
            // The LR schedule advances with optimizer updates (skipped fp16 steps do not count).
            // So does its momentum (CyclicLR, OneCycle): a pure function of the step, handed to
            // the optimizer for this update only and never checkpointed.
            let updates = self.dp.steps_taken();
            let lr = self.cfg.lr_schedule.lr_at(updates, &self.lr_ctx);
            let momentum = self.cfg.lr_schedule.momentum_at(updates, &self.lr_ctx);
            let t = clock.now();
            let outcome = self.optimizer_step(lr, momentum, bits, loss_scale)?;
            let skipped = outcome.overflow;
            if let Some(scaler) = &mut self.scaler {
                scaler.update(skipped).map_err(|e| match e {
                    LossScaleError::AtMinimum { .. } => anyhow::anyhow!(
                        "{e} (fp16 overflow at the minimum loss scale, step {step}; try bf16, a lower learning rate, or precision.loss_scale.min_loss_scale)"
                    ),
                })?;
            }
            if skipped {
                self.meta.skipped_steps += 1;
                w.skipped += 1;
            }
            let gbitops = self.cost.gbitops(bits.fwd, bits.bwd);
            self.meta.gbitops += gbitops;
            w.gbitops += gbitops;
            // The optimizer times its parts with the wall clock: a stop inside it must not
            // inflate them, so they are scaled to fit the call's training time.
            let call = clock.secs_since(t);
            let parts = outcome.t_comm + outcome.t_opt;
            let fit = if parts > call && parts > 0.0 {
                call / parts
            } else {
                1.0
            };
            w.t_comm += outcome.t_comm * fit;
            w.t_opt += outcome.t_opt * fit;
            if let Some(g) = outcome.grad_norm {
                w.grad_norm_sum = Some(match w.grad_norm_sum.take() {
                    None => g,
                    Some(acc) => acc + g,
                });
                w.grad_norms += 1;
            }
            self.meta.global_step = step;
            w.steps += 1;
            // A single rank reads its own requests on the host at every step; several agree on
            // them with the window's loss, at known steps (no rank is left in a collective).
            let alone = self.world == 1;
            let stop_here = alone && control.stop_requested();
            let due = step.is_multiple_of(self.log_every)
                || s + 1 == spe
                || step == self.total_steps
                || stop_here;
            if !due {
                if alone && control.is_paused() {
                    control.checkpoint_wait()?;
                }
                continue;
            }
            let (window_sum, stop, pause, grad_norm_sum) = self.agree(&mut w, control)?;
            let steps = w.steps as f64;
            let mean = window_sum / steps;
            // Under fp16 an overflow is the loss scaler's business (skip and rescale).
            if !mean.is_finite() && self.scaler.is_none() {
                return Err(Stopped::Diverged { step, loss: mean }.into());
            }
            *loss_sum += window_sum;
            *loss_count += w.steps;
            let dt = clock.secs_since(w.started);
            let fp16 = self.scaler.is_some();
            let peak = super::memory::peak_memory(self.device);
            rec.emit(Event::Step(StepEvent {
                step,
                epoch: epoch + 1,
                loss: mean,
                lr,
                images_per_sec: batch as f64 * steps / dt.max(1e-9),
                grad_norm: grad_norm_sum.map(|g| g / w.grad_norms as f64),
                t_data: w.t_data / steps,
                t_fwd: w.t_fwd / steps,
                t_bwd: w.t_bwd / steps,
                t_comm: w.t_comm / steps,
                t_opt: w.t_opt / steps,
                q_fwd: self.cfg.precision.schedule.as_ref().map(|_| bits.fwd),
                q_bwd: self.cfg.precision.schedule.as_ref().map(|_| bits.bwd),
                gbitops: Some(w.gbitops),
                loss_scale: fp16.then_some(loss_scale),
                skipped: fp16.then_some(w.skipped > 0),
                steps: (w.steps > 1).then_some(w.steps),
                skipped_steps: (fp16 && w.steps > 1).then_some(w.skipped),
                peak_memory_bytes: peak.map(|p| p.0),
                peak_memory_kind: peak.map(|p| p.1),
            }))?;
            w = Window::new(clock.now());
            if stop {
                return Err(Stopped::ByUser.into());
            }
            if pause {
                // Every rank saw the pause: all wait here, none inside a collective.
                control.checkpoint_wait()?;
            }
        }
        debug_assert_eq!(w.steps, 0, "every step reported");
        Ok(())
    }

    /// The window's loss sum (mean over the ranks of their sums) and the stop and pause
    /// requests, agreed by every rank, and the window's gradient norm sum (already agreed):
    /// one all-reduce and one host read.
    fn agree(
        &mut self,
        w: &mut Window,
        control: &Control,
    ) -> Result<(f64, bool, bool, Option<f64>)> {
        let local = w.loss.take().expect("a window with steps");
        let norms = w.grad_norm_sum.take();
        // The norm sum rides along in the same read, after the all-reduce (every rank has the
        // same norms: reducing them would only add rounding).
        let with_norms = |t: Tensor| match &norms {
            None => t,
            Some(g) => Tensor::cat(&[t, g.view([1])], 0),
        };
        let flags = [control.stop_requested(), control.is_paused()];
        if self.world == 1 {
            let v = read_to_host(&with_norms(local.view([1])))?;
            return Ok((v[0], flags[0], flags[1], norms.map(|_| v[1])));
        }
        let clock = control.clock();
        let t = clock.now();
        let flags = Tensor::from_slice(&flags.map(|f| f as u8 as f64)).to_device(self.device);
        let mut shared = Tensor::cat(&[local.view([1]), flags], 0);
        self.dp
            .collective()
            .all_reduce(&mut shared, ReduceOp::Sum)?;
        let v = read_to_host(&with_norms(shared))?;
        w.t_comm += clock.secs_since(t);
        Ok((
            v[0] / self.world as f64,
            v[1] > 0.0,
            v[2] > 0.0,
            norms.map(|_| v[3]),
        ))
    }

    /// Test loss, top-1 accuracy and per-class accuracy over the whole test split.
    /// Each rank evaluates a strided share of the test split; sums are all-reduced.
    fn evaluate(&mut self) -> Result<(f64, f64, Vec<ClassAccuracy>)> {
        self.broadcast_buffers()?;
        let dataset = self.dataset.clone();
        let test = &dataset.test;
        let n = test.len();
        let nc = self.dataset.classes.len();
        let mut total = vec![0u64; nc];
        let eb = self.cfg.data.eval_batch_size;
        let no_aug = Augment {
            random_crop_padding: 0,
            horizontal_flip: false,
        };
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        let bits = self.eval_bits();
        // Sums on the device (the loss in f64 of fp32 batch sums, hits per class), read once.
        let device = self.device;
        let mut loss_dev = Tensor::zeros([], (Kind::Double, device));
        let mut hits_dev = Tensor::zeros([nc as i64], (Kind::Double, device));
        // This rank's share: test images rank, rank + W, rank + 2W, …
        let mine: Vec<u32> = (self.rank as u32..n as u32).step_by(self.world).collect();
        tch::no_grad(|| -> Result<()> {
            for chunk in mine.chunks(eb) {
                let pos: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
                fill_batch(
                    test,
                    &dataset.shape,
                    chunk,
                    &pos,
                    &no_aug,
                    0,
                    0,
                    &mut pixels,
                    &mut labels,
                );
                for &l in &labels {
                    total[l as usize] += 1;
                }
                let (x, y) = self.converter.convert(&pixels, &labels);
                let logits = {
                    let _amp = self.autocast()?;
                    self.model.forward(&x, false, bits)
                };
                // Summed in fp32 whatever the replica's type: an fp16 sum over a batch
                // overflows long before the loss is large.
                let logits = logits.to_kind(Kind::Float);
                let loss = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0);
                loss_dev += loss.to_kind(Kind::Double);
                let hit = logits.argmax(1, false).eq_tensor(&y).to_kind(Kind::Double);
                hits_dev += y.bincount(Some(&hit), nc as i64);
            }
            Ok(())
        })?;
        let sums = read_to_host(&Tensor::cat(&[loss_dev.view([1]), hits_dev], 0))?;
        let mut loss_sum = sums[0];
        let mut correct: Vec<u64> = sums[1..].iter().map(|&c| c.round() as u64).collect();
        if self.world > 1 {
            let mut sums: Vec<f64> = std::iter::once(loss_sum)
                .chain(correct.iter().map(|&c| c as f64))
                .chain(total.iter().map(|&t| t as f64))
                .collect();
            self.dp.all_reduce_scalars(&mut sums, ReduceOp::Sum)?;
            loss_sum = sums[0];
            for i in 0..nc {
                correct[i] = sums[1 + i].round() as u64;
                total[i] = sums[1 + nc + i].round() as u64;
            }
        }
        let acc = correct.iter().sum::<u64>() as f64 / n.max(1) as f64;
        let per_class = self
            .dataset
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassAccuracy {
                class: c.clone(),
                acc: if total[i] > 0 {
                    correct[i] as f64 / total[i] as f64
                } else {
                    0.0
                },
            })
            .collect();
        Ok((loss_sum / n.max(1) as f64, acc, per_class))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::checkpoint;
    use crate::config::paths::Paths;
    use crate::config::RunConfig;
    use crate::engine::job::{Job, JobSpec};
    use crate::telemetry::event::Event;
    use crate::telemetry::store::{self, CHECKPOINT_DIR};
    use crate::telemetry::RunStatus;

    /// LeNet on synthetic data: 64 steps of 32 images per epoch, one thread.
    fn spec(home: &std::path::Path, epochs: u64) -> JobSpec {
        let text = format!(
            r#"
name = "clock"
[model]
kind = "lenet"
[data]
source = "synthetic:2048:64"
random_crop_padding = 0
horizontal_flip = false
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
[train]
batch_size = 32
epochs = {epochs}
log_every = 1
[devices]
threads = 1
"#
        );
        JobSpec {
            config: RunConfig::from_toml_str(&text, "trainer tests").unwrap(),
            paths: paths(home),
        }
    }

    fn paths(home: &std::path::Path) -> Paths {
        Paths {
            runs: home.join("runs"),
            presets: home.join("presets"),
            cache: home.join("cache"),
        }
    }

    /// Reads the job's events; at step `at` calls `act`. Returns the events and the wall time
    /// from the `started` event to the end of the stream.
    fn follow(job: &Job, at: u64, mut act: impl FnMut()) -> (Vec<Event>, f64) {
        let mut events = Vec::new();
        let mut t0 = None;
        for e in job.events().iter() {
            if matches!(e, Event::Started(_)) {
                t0 = Some(Instant::now());
            }
            if matches!(&e, Event::Step(s) if s.step == at) {
                act();
            }
            events.push(e);
        }
        (events, t0.expect("a started event").elapsed().as_secs_f64())
    }

    fn evals(events: &[Event]) -> Vec<&crate::telemetry::event::EvalEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Eval(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn paused_time_is_not_training_time() {
        let home = tempfile::tempdir().unwrap();
        let job = Job::start(spec(home.path(), 2)).unwrap();
        let control = job.control().clone();
        let pause = Duration::from_millis(1500);
        let mut paused_for = 0.0;
        let (events, wall) = follow(&job, 3, || {
            let t = Instant::now();
            control.pause();
            std::thread::sleep(pause);
            control.resume();
            paused_for = t.elapsed().as_secs_f64();
        });
        let summary = job.wait();
        assert_eq!(summary.status, RunStatus::Finished);
        let ev = evals(&events);
        assert_eq!(ev.len(), 2);
        // The pause fell in the first epoch; neither its seconds nor the run's include it.
        let first = ev[0].epoch_seconds;
        assert!(
            first < wall - paused_for * 0.8,
            "epoch 1: {first:.3}s of a {wall:.3}s run paused for {paused_for:.3}s"
        );
        assert!(
            summary.train_seconds < wall - paused_for * 0.8,
            "train_seconds {:.3}s of a {wall:.3}s run paused for {paused_for:.3}s",
            summary.train_seconds
        );
        let per_epoch: Vec<f64> = ev.iter().map(|e| e.epoch_seconds).collect();
        assert_eq!(summary.seconds_per_epoch, per_epoch);
        assert!((summary.train_seconds - per_epoch.iter().sum::<f64>()).abs() < 1e-9);
        // Throughput is of training time too: no step took the pause.
        let slowest = events
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some(32.0 / s.images_per_sec),
                _ => None,
            })
            .fold(0.0, f64::max);
        assert!(slowest < paused_for * 0.5, "a step of {slowest:.3}s");
    }

    /// Paused, then stopped mid-epoch, then resumed: the epoch's seconds are both sessions'
    /// running parts, the pause in neither.
    #[test]
    fn a_mid_epoch_stop_and_resume_add_the_two_parts_of_the_epoch() {
        let home = tempfile::tempdir().unwrap();
        let job = Job::start(spec(home.path(), 1)).unwrap();
        let dir = job.run_dir().to_path_buf();
        let control = job.control().clone();
        let pause = Duration::from_millis(1500);
        let mut paused_for = 0.0;
        let (events, wall) = follow(&job, 20, || {
            let t = Instant::now();
            control.pause();
            std::thread::sleep(pause);
            control.stop();
            paused_for = t.elapsed().as_secs_f64();
        });
        let first = job.wait();
        assert_eq!(first.status, RunStatus::Stopped);
        assert!(first.seconds_per_epoch.is_empty());
        let part = first.train_seconds;
        assert!(part > 0.0, "the stopped session trained for {part}s");
        assert!(
            part < wall - paused_for * 0.8,
            "{part:.3}s of a {wall:.3}s session paused for {paused_for:.3}s"
        );
        let meta = checkpoint::read_meta(&dir.join(CHECKPOINT_DIR).join(checkpoint::LAST)).unwrap();
        assert_eq!(meta.partial_epoch_seconds, part);
        assert_eq!(meta.epochs_done, 0);
        // The mid-epoch checkpoint names the epoch it interrupted, as its last step does.
        let last_step = events.iter().rev().find_map(|e| match e {
            Event::Step(s) => Some(s.clone()),
            _ => None,
        });
        let last_step = last_step.unwrap();
        let ckpt = events.iter().rev().find_map(|e| match e {
            Event::Checkpoint { epoch, step, .. } => Some((*epoch, *step)),
            _ => None,
        });
        assert_eq!(ckpt, Some((1, last_step.step)));
        assert_eq!(last_step.epoch, 1);

        let job = Job::resume(&dir, paths(home.path()), &[]).unwrap();
        let (events, _) = follow(&job, 0, || {});
        let second = job.wait();
        assert_eq!(second.status, RunStatus::Finished);
        let ev = evals(&events);
        assert_eq!(ev.len(), 1);
        let resumed_part = ev[0].epoch_seconds - part;
        assert!(
            resumed_part > 0.0,
            "epoch 1: {:.3}s, of which {part:.3}s before the stop",
            ev[0].epoch_seconds
        );
        assert_eq!(second.seconds_per_epoch, vec![ev[0].epoch_seconds]);
        assert!((second.train_seconds - ev[0].epoch_seconds).abs() < 1e-9);
    }

    /// Step events, eval events, their CSV exports, checkpoint events and the summary all name
    /// the same epochs, counted from 1.
    #[test]
    fn every_record_numbers_epochs_from_1() {
        let home = tempfile::tempdir().unwrap();
        let job = Job::start(spec(home.path(), 2)).unwrap();
        let dir = job.run_dir().to_path_buf();
        let (events, _) = follow(&job, 0, || {});
        let summary = job.wait();
        assert_eq!(summary.status, RunStatus::Finished);
        let spe = 2048 / 32;
        let steps: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some((s.step, s.epoch)),
                _ => None,
            })
            .collect();
        assert_eq!(steps.len() as u64, 2 * spe);
        assert!(steps.iter().all(|&(s, e)| e == (s - 1) / spe + 1));
        let ev = evals(&events);
        let eval_epochs: Vec<u64> = ev.iter().map(|e| e.epoch).collect();
        assert_eq!(eval_epochs, [1, 2]);
        assert_eq!(steps.last().unwrap().1, ev.last().unwrap().epoch);
        assert_eq!(
            steps[spe as usize - 1].1,
            ev[0].epoch,
            "epoch 1's last step"
        );
        let checkpoints: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Checkpoint { epoch, step, .. } => Some((*epoch, *step)),
                _ => None,
            })
            .collect();
        assert_eq!(checkpoints, [(1, spe), (2, 2 * spe)]);
        let best = summary.best_epoch.unwrap();
        assert!(best == 1 || best == 2, "best_epoch {best}");
        let best_eval = ev.iter().find(|e| e.epoch == best).unwrap();
        assert_eq!(Some(best_eval.test_acc), summary.best_test_acc);
        assert_eq!(
            summary.test_acc_per_epoch[best as usize - 1],
            best_eval.test_acc
        );

        // The record on disk and its CSV exports say the same.
        let mut recorded = store::read_metrics(&dir).unwrap();
        let before = recorded.clone();
        crate::telemetry::event::upgrade_epochs(&mut recorded);
        assert_eq!(recorded, before, "this build's record needs no upgrade");
        let steps_csv = store::steps_csv(&recorded);
        let csv_epochs: Vec<&str> = steps_csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(csv_epochs.first(), Some(&"1"));
        assert_eq!(csv_epochs.last(), Some(&"2"));
        let evals_csv = store::evals_csv(&recorded);
        let csv_evals: Vec<&str> = evals_csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(csv_evals, ["1", "2"]);
    }
}
