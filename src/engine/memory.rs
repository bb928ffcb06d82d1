//! Memory per rank: estimated from a config before a run (`cptlab estimate`, the `started`
//! event), and measured while it trains (the step events' and summary's `peak_memory_bytes`).
//!
//! The estimate follows what the trainer allocates, buffer by buffer:
//! - parameters and gradients: the flat buffers ([`FlatParams`](super::flat::FlatParams)), padded
//!   to the world size's multiple, in the replica's type; in the half-replica modes the
//!   BatchNorm parameters stay fp32 apart (their own storage and gradient beside the buffers'
//!   segment);
//! - the fp32 master copy (`fp16`/`bf16` only): fp32 parameters and gradients of the padded length;
//! - optimizer state, as [`FlatOptimizer::state_bytes`](super::optim::FlatOptimizer) counts it:
//!   SGD's momentum buffer (when momentum is set), Adam/AdamW's two moments, in fp32, over the
//!   whole padded buffer (ZeRO stage 0) or this rank's shard (stage 1); Adam's work space (one more
//!   buffer of the same length) is listed apart;
//! - activations: **measured**, not modelled. The model is built on the CPU and run forward in
//!   training mode at micro-batches 2 and 4 while a thread-local allocation tracker
//!   (`csrc/memory.cpp`, libtorch's memory-reporting hook) counts the bytes still held when the
//!   forward returns (what autograd saved for backward, plus the logits). Two batches separate
//!   the per-sample part from the part that does not grow with the batch (quantized weight
//!   copies); both are scaled to the configured micro-batch, and by the mode's element size
//!   (fp32: 4 bytes; the half replicas and autocast: 2 — autocast keeps some fp32 copies, so it
//!   is a lower bound there).
use std::ffi::{c_char, c_int, c_void, CStr};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::zero::ShardLayout;
use crate::config::{OptimizerConfig, PrecisionMode, RunConfig, ZeroStage};
use crate::models;
use crate::quant::Bits;
use crate::telemetry::event::MemoryKind;

extern "C" {
    fn cpt_free_error(err: *mut c_char);
    fn cpt_memtrack_begin(out: *mut *mut c_void) -> *mut c_char;
    fn cpt_memtrack_read(handle: *mut c_void, current: *mut i64, peak: *mut i64);
    fn cpt_memtrack_end(handle: *mut c_void);
    fn cpt_cuda_allocated(device: c_int, current: *mut i64, peak: *mut i64) -> *mut c_char;
}

fn shim_error(err: *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a non-null error is a NUL-terminated string from `strdup`, freed exactly once here.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { cpt_free_error(err) };
    Some(msg)
}

/// Counts the CPU bytes libtorch allocates on this thread while it lives.
struct AllocTracker(*mut c_void);

impl AllocTracker {
    fn start() -> Result<AllocTracker> {
        let mut h = std::ptr::null_mut();
        // SAFETY: the shim writes a fresh handle on success.
        if let Some(e) = shim_error(unsafe { cpt_memtrack_begin(&mut h) }) {
            bail!("starting the allocation tracker: {e}");
        }
        Ok(AllocTracker(h))
    }

    /// Bytes allocated since the start and still held, and the most held at once.
    fn read(&self) -> (i64, i64) {
        let (mut cur, mut peak) = (0, 0);
        // SAFETY: the handle is live until drop.
        unsafe { cpt_memtrack_read(self.0, &mut cur, &mut peak) };
        (cur, peak)
    }
}

impl Drop for AllocTracker {
    fn drop(&mut self) {
        // SAFETY: created by `cpt_memtrack_begin` on this thread (the type is not Send).
        unsafe { cpt_memtrack_end(self.0) };
    }
}

/// Bytes per rank, before a run. Plain numbers (the front ends show them as they are).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    pub model: String,
    pub precision_mode: String,
    pub optimizer: String,
    pub world_size: usize,
    /// The stage the config uses (`devices.zero`); both stages' optimizer state are given.
    pub zero_stage: u8,
    /// Samples per rank per micro-batch, and the square input side the activations were
    /// measured at.
    pub micro_batch: u64,
    pub input_size: i64,
    /// Trainable parameters (elements).
    pub params: u64,
    pub parameters_bytes: u64,
    pub gradients_bytes: u64,
    /// fp32 master parameters and gradients (`fp16`/`bf16`; 0 otherwise).
    pub master_bytes: u64,
    pub optimizer_state_bytes_zero0: u64,
    pub optimizer_state_bytes_zero1: u64,
    /// Adam/AdamW's work buffer (the denominator), as long as one state buffer.
    pub optimizer_scratch_bytes: u64,
    /// Saved for backward at the configured micro-batch: the part that grows with the batch
    /// plus the part that does not.
    pub activations_bytes: u64,
    pub activations_bytes_per_sample: u64,
    pub total_bytes: u64,
}

impl MemoryEstimate {
    /// The optimizer state under the config's stage.
    pub fn optimizer_state_bytes(&self) -> u64 {
        self.optimizer_state_bytes_at(self.zero_stage)
    }

    pub fn optimizer_state_bytes_at(&self, stage: u8) -> u64 {
        if stage == 0 {
            self.optimizer_state_bytes_zero0
        } else {
            self.optimizer_state_bytes_zero1
        }
    }

    /// The total under ZeRO `stage` (the same everything else).
    pub fn total_at(&self, stage: u8) -> u64 {
        self.total_bytes - self.optimizer_state_bytes() - self.optimizer_scratch_bytes
            + self.optimizer_state_bytes_at(stage)
            + self.scratch_at(stage)
    }

    /// Adam's work space under ZeRO `stage` (as long as one state buffer).
    pub fn scratch_at(&self, stage: u8) -> u64 {
        match (self.optimizer_state_bytes(), self.optimizer_scratch_bytes) {
            (0, _) | (_, 0) => 0,
            (state, scratch) => scratch * self.optimizer_state_bytes_at(stage) / state,
        }
    }
}

/// Bytes per element of the replica's parameters (and of the activations) in `mode`.
pub fn element_bytes(mode: PrecisionMode) -> u64 {
    match super::device::replica_kind(mode) {
        Kind::Float => 4,
        _ => 2,
    }
}

fn activation_element_bytes(mode: PrecisionMode) -> u64 {
    match mode {
        PrecisionMode::Fp32 => 4,
        PrecisionMode::Fp16
        | PrecisionMode::Bf16
        | PrecisionMode::AmpBf16
        | PrecisionMode::AmpFp16 => 2,
    }
}

/// fp32 state buffers of the optimizer (each as long as the buffer it steps).
pub fn optimizer_buffers(opt: &OptimizerConfig) -> u64 {
    match opt {
        OptimizerConfig::Sgd { momentum, .. } => u64::from(*momentum != 0.0),
        OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => 2,
    }
}

/// The world size a config trains at (`cuda:all`: the GPUs this machine has, at least 1).
pub fn world_size_of(cfg: &RunConfig) -> usize {
    cfg.devices
        .devices
        .known_world_size()
        .unwrap_or_else(|| tch::Cuda::device_count().max(1) as usize)
}

/// The square input side the model is fed: `data.resize`, else `data.image_size`, else ViT's
/// `model.vit.image_size`, else 32 (CIFAR's and the synthetic set's size).
pub fn input_size_of(cfg: &RunConfig) -> i64 {
    cfg.data
        .resize
        .or(cfg.data.image_size)
        .map(|s| s as i64)
        .unwrap_or(if cfg.model.kind == models::ModelKind::Vit {
            cfg.model.vit.image_size
        } else {
            32
        })
}

/// The estimate for `cfg` with `classes` classes and `channels` input channels (10 and 3 for
/// CIFAR-10 when the data is not known yet). Builds the model on the CPU (a few forwards at
/// micro-batches 2 and 4); draws from libtorch's generator.
pub fn estimate(cfg: &RunConfig, classes: i64, channels: i64) -> Result<MemoryEstimate> {
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let world = world_size_of(cfg);
    let kind = cfg.model.kind;
    let input = input_size_of(cfg);
    let info = kind.info();
    if input < info.min_input || info.max_input.is_some_and(|m| input > m) {
        bail!(
            "model {kind} takes inputs from {} to {} pixels square; the batches would be {input}×{input}: set data.resize (the model's usual size is {})",
            info.min_input,
            info.max_input.map_or("any size".into(), |m| m.to_string()),
            info.default_input
        );
    }
    let t = &cfg.train;
    let micro = match t.micro_batch_size {
        Some(m) => m as u64,
        None => (t.batch_size / (t.grad_accum.max(1) * world)).max(1) as u64,
    };
    let vs = VarStore::new(Device::Cpu);
    let mut model = models::build(kind, &cfg.model.vit, &vs.root(), classes, channels);
    let p = &cfg.precision;
    model.set_layer_roles(p.first_layer_full_precision, p.last_layer_full_precision);
    let (params, norm_params) = count_params(&vs);
    let mode = p.mode;
    let half = super::device::replica_kind(mode) != Kind::Float;
    let el = element_bytes(mode);
    let padded = ShardLayout::new(params as i64, world, 0).padded as u64;
    let shard = padded / world as u64;
    // Half replicas keep BatchNorm's parameters fp32 beside the buffers (trainer's
    // `keep_norms_fp32`): those elements cost 4 bytes more than their half segment.
    let apart = if half { norm_params * 4 } else { 0 };
    let parameters_bytes = padded * el + apart;
    let gradients_bytes = parameters_bytes;
    let master_bytes = if half { padded * 8 } else { 0 };
    let buffers = optimizer_buffers(&cfg.optimizer);
    let zero0 = buffers * padded * 4;
    let zero1 = buffers * shard * 4;
    let stage = cfg.devices.zero.level();
    let scratch_len = if cfg.devices.zero == ZeroStage::Zero0 {
        padded
    } else {
        shard
    };
    let optimizer_scratch_bytes = match cfg.optimizer {
        OptimizerConfig::Sgd { .. } => 0,
        OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => scratch_len * 4,
    };
    let bits = match &p.schedule {
        Some(s) => Bits {
            fwd: s.q_max,
            bwd: s.q_bwd(),
        },
        None => Bits::FULL,
    };
    let at = |b: i64| saved_bytes(model.as_ref(), b, channels, input, bits);
    let (two, four) = (at(2)?, at(4)?);
    let per_sample_fp32 = four.saturating_sub(two) / 2;
    let fixed_fp32 = two.saturating_sub(2 * per_sample_fp32);
    let scale = |b: u64| b * activation_element_bytes(mode) / 4;
    let activations_bytes_per_sample = scale(per_sample_fp32);
    let activations_bytes = scale(fixed_fp32 + per_sample_fp32 * micro);
    let state = if stage == 0 { zero0 } else { zero1 };
    let total_bytes = parameters_bytes
        + gradients_bytes
        + master_bytes
        + state
        + optimizer_scratch_bytes
        + activations_bytes;
    Ok(MemoryEstimate {
        model: kind.to_string(),
        precision_mode: mode.name().to_string(),
        optimizer: cfg.optimizer.kind_name().to_string(),
        world_size: world,
        zero_stage: stage,
        micro_batch: micro,
        input_size: input,
        params,
        parameters_bytes,
        gradients_bytes,
        master_bytes,
        optimizer_state_bytes_zero0: zero0,
        optimizer_state_bytes_zero1: zero1,
        optimizer_scratch_bytes,
        activations_bytes,
        activations_bytes_per_sample,
        total_bytes,
    })
}

/// Trainable elements, and those of them that are BatchNorm parameters (a module with
/// `running_mean`).
fn count_params(vs: &VarStore) -> (u64, u64) {
    let vars = vs.variables();
    let norms: Vec<&str> = vars
        .keys()
        .filter_map(|n| n.strip_suffix("running_mean"))
        .collect();
    let (mut all, mut norm) = (0, 0);
    for (name, t) in &vars {
        if !t.requires_grad() {
            continue;
        }
        let n = t.numel() as u64;
        all += n;
        let in_norm = norms.iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest == "weight" || rest == "bias")
        });
        if in_norm {
            norm += n;
        }
    }
    (all, norm)
}

/// Bytes a training-mode forward of `batch` images leaves allocated (fp32, CPU).
fn saved_bytes(
    model: &dyn models::Classifier,
    batch: i64,
    channels: i64,
    side: i64,
    bits: Bits,
) -> Result<u64> {
    // Deterministic, not random: the estimate must not depend on libtorch's generator.
    let x = Tensor::ones([batch, channels, side, side], (Kind::Float, Device::Cpu));
    let tracker = AllocTracker::start()?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.forward(&x, true, bits)
    }))
    .map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!("{}", super::torch_error::clean(&msg))
    })
    .context("measuring the activations (a CPU forward at micro-batch 2 and 4)")?;
    let (held, _) = tracker.read();
    drop(out);
    Ok(held.max(0) as u64)
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The CUDA caching allocator's (current, peak) allocated bytes on GPU `index`; None without
/// CUDA or before the allocator is set up.
pub fn cuda_allocated_bytes(index: usize) -> Option<(u64, u64)> {
    if !tch::Cuda::is_available() {
        return None;
    }
    let (mut cur, mut peak) = (0i64, 0i64);
    // SAFETY: plain out-parameters; errors come back as a message.
    let err = unsafe { cpt_cuda_allocated(index as c_int, &mut cur, &mut peak) };
    if shim_error(err).is_some() {
        return None;
    }
    Some((cur.max(0) as u64, peak.max(0) as u64))
}

/// The peak memory a rank on `device` reports: its GPU's allocator peak, or the process's peak
/// RSS on the CPU.
pub fn peak_memory(device: Device) -> Option<(u64, MemoryKind)> {
    match device {
        Device::Cuda(i) => cuda_allocated_bytes(i).map(|(_, peak)| (peak, MemoryKind::Cuda)),
        _ => peak_rss_bytes().map(|b| (b, MemoryKind::Rss)),
    }
}

/// Bytes in binary units for people ("1.50 MiB").
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> RunConfig {
        let text = format!(
            "name = \"m\"\n[model]\nkind = \"lenet\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\n[train]\nbatch_size = 32\nepochs = 1\n{extra}"
        );
        RunConfig::from_toml_str(&text, "test").unwrap()
    }

    #[test]
    fn parameters_are_the_count_times_the_element_size() {
        let e = estimate(&config(""), 10, 3).unwrap();
        // LeNet for 10 classes: 3·6·25+6 + 6·16·25+16 + 400·120+120 + 120·84+84 + 84·10+10.
        let lenet = 456 + 2416 + 48120 + 10164 + 850;
        assert_eq!(e.params, lenet);
        assert_eq!(e.parameters_bytes, lenet * 4);
        assert_eq!(e.gradients_bytes, lenet * 4);
        assert_eq!(e.master_bytes, 0);
        assert_eq!(e.optimizer_state_bytes_zero0, lenet * 4);
        let half = estimate(&config("[precision]\nmode = \"fp16\"\n"), 10, 3).unwrap();
        assert_eq!(half.parameters_bytes, lenet * 2);
        assert_eq!(half.master_bytes, lenet * 8);
    }

    #[test]
    fn activations_grow_with_the_batch() {
        let small = estimate(&config(""), 10, 3).unwrap();
        let big = estimate(&config("").with_batch(64), 10, 3).unwrap();
        assert!(small.activations_bytes_per_sample > 0);
        // LeNet keeps at least conv1's 6×28×28 fp32 output per sample.
        assert!(small.activations_bytes_per_sample >= 6 * 28 * 28 * 4);
        assert_eq!(
            big.activations_bytes - small.activations_bytes,
            32 * small.activations_bytes_per_sample
        );
    }

    #[test]
    fn zero1_shards_the_state_over_the_ranks() {
        let e = estimate(
            &config("[devices]\ndevices = \"cpu:2\"\nzero = 1\n").with_optimizer(
                OptimizerConfig::default_of(crate::config::OptimizerKind::Adam, 1e-3),
            ),
            10,
            3,
        )
        .unwrap();
        let padded = ShardLayout::new(e.params as i64, 2, 0).padded as u64;
        assert_eq!(e.optimizer_state_bytes_zero0, padded * 8);
        assert_eq!(e.optimizer_state_bytes_zero1, padded * 4);
        assert_eq!(e.optimizer_state_bytes(), padded * 4);
        assert_eq!(e.total_at(0) - e.total_at(1), padded * 4 + padded * 2);
    }

    #[test]
    fn the_peak_rss_is_read() {
        let rss = peak_rss_bytes().unwrap();
        assert!(rss > 1 << 20, "{rss}");
        assert!(matches!(peak_memory(Device::Cpu), Some((b, MemoryKind::Rss)) if b > 0));
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }

    trait With {
        fn with_batch(self, b: usize) -> Self;
        fn with_optimizer(self, o: OptimizerConfig) -> Self;
    }

    impl With for RunConfig {
        fn with_batch(mut self, b: usize) -> Self {
            self.train.batch_size = b;
            self
        }
        fn with_optimizer(mut self, o: OptimizerConfig) -> Self {
            self.optimizer = o;
            self
        }
    }
}
