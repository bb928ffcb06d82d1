//! The run configuration: what a run is, fully described, plus where files live.
//!
//! A `RunConfig` is built from a preset (TOML), then command-line overrides are applied to the
//! TOML tree (so `--set a.b=c` and a preset file go through the same deserializer and give the
//! same errors), then `validate` checks what serde cannot.
pub mod deepspeed;
mod devices;
pub mod diff;
mod loss_scale;
pub mod model;
mod overrides;
pub mod paths;
pub mod presets;
pub mod schema;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::schedule::lr::LrSchedule;
use crate::schedule::precision::PrecisionSchedule;
pub use model::{ModelKind, VitConfig};

pub use devices::{DeviceConfig, DeviceSpec, ZeroStage};
pub use loss_scale::LossScaleConfig;
pub use overrides::{apply_override, parse_value, Override};

/// Everything that decides a run's numbers (with the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Short name, used in the run directory's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataConfig,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    pub train: TrainConfig,
    #[serde(default)]
    pub precision: PrecisionConfig,
    #[serde(default)]
    pub devices: DeviceConfig,
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Only read for `kind = "vit"`.
    #[serde(default)]
    pub vit: VitConfig,
}

/// How pixels become a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Per-channel mean/std of CIFAR-10's training set.
    Cifar,
    /// `x/127.5 - 1`: pixels in [-1, 1], as the DeepSpeed CIFAR example (`Normalize(0.5, 0.5)`).
    Half,
    /// `x/255`.
    Unit,
}

impl Normalize {
    pub const ALL: [Normalize; 3] = [Normalize::Cifar, Normalize::Half, Normalize::Unit];

    pub fn name(self) -> &'static str {
        match self {
            Normalize::Cifar => "cifar",
            Normalize::Half => "half",
            Normalize::Unit => "unit",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Normalize::Cifar => "per-channel mean/std of CIFAR-10's training set",
            Normalize::Half => "x/127.5 - 1, pixels in [-1, 1] (the DeepSpeed CIFAR example)",
            Normalize::Unit => "x/255, pixels in [0, 1]",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic`, `synthetic:TRAIN[:TEST]`, `download:cifar10`, or a path. None: `CPTLAB_DATA`,
    /// then the synthetic set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Square size images from image folders are decoded to (None: keep, all must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Resize every batch to this square size for the model (the DeepSpeed benchmark fed each
    /// model its own input size). None: the model's default input size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
    /// Random crop with this much zero padding (0 = off); training only.
    #[serde(default = "default_crop")]
    pub random_crop_padding: usize,
    #[serde(default = "default_true")]
    pub horizontal_flip: bool,
    #[serde(default = "default_normalize")]
    pub normalize: Normalize,
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
}

fn default_crop() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_normalize() -> Normalize {
    Normalize::Cifar
}
fn default_eval_batch() -> usize {
    500
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: None,
            image_size: None,
            resize: None,
            random_crop_padding: default_crop(),
            horizontal_flip: true,
            normalize: default_normalize(),
            eval_batch_size: default_eval_batch(),
        }
    }
}

/// Optimizers, with `torch.optim`'s defaults and semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        dampening: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    #[serde(rename = "adamw")]
    AdamW {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_adamw_wd")]
        weight_decay: f64,
    },
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_wd() -> f64 {
    1e-2
}

/// The kind in `all` called `s`; the error lists every valid name.
fn kind_from_name<K: Copy>(
    all: &[K],
    name: fn(K) -> &'static str,
    s: &str,
    what: &str,
) -> Result<K, String> {
    all.iter().copied().find(|k| name(*k) == s).ok_or_else(|| {
        let valid: Vec<&str> = all.iter().map(|k| name(*k)).collect();
        format!("unknown {what} {s:?}: expected one of {}", valid.join(", "))
    })
}

/// clap's possible values for a kind's list: the names in the list's order, each with its
/// description as help (CLI value lists come from the kinds' `ALL`, never written by hand).
pub fn possible_values(
    kinds: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        kinds
            .into_iter()
            .map(|(name, help)| clap::builder::PossibleValue::new(name).help(help)),
    )
}

impl OptimizerConfig {
    /// What a schedule's cycled momentum acts on for this optimizer (SGD's momentum, Adam's β1).
    pub fn momentum_kind(&self) -> crate::schedule::MomentumKind {
        match self {
            OptimizerConfig::Sgd { .. } => crate::schedule::MomentumKind::SgdMomentum,
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                crate::schedule::MomentumKind::AdamBeta1
            }
        }
    }

    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => *lr,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn kind(&self) -> OptimizerKind {
        match self {
            OptimizerConfig::Sgd { .. } => OptimizerKind::Sgd,
            OptimizerConfig::Adam { .. } => OptimizerKind::Adam,
            OptimizerConfig::AdamW { .. } => OptimizerKind::AdamW,
        }
    }

    /// `kind` at `lr` with every other setting at its default: the serde defaults above, the
    /// one place they are written.
    pub fn default_of(kind: OptimizerKind, lr: f64) -> OptimizerConfig {
        let mut t = toml::Table::new();
        t.insert("kind".into(), toml::Value::String(kind.name().into()));
        t.insert("lr".into(), toml::Value::Float(lr));
        OptimizerConfig::deserialize(toml::Value::Table(t))
            .expect("lr is every optimizer's only required setting")
    }
}

/// The optimizer kinds (`optimizer.kind`), the list the CLI and the TUI offer.
///
/// Adding an optimizer: its [`OptimizerConfig`] variant, a variant here, its line in `ALL`, its
/// arms in `name`, `describe` and `OptimizerConfig::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 3] = [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
    ];

    /// The config name, serde's name of the [`OptimizerConfig`] variant.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// One line for listings.
    pub fn describe(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "SGD with optional momentum / Nesterov (torch.optim.SGD)",
            OptimizerKind::Adam => "Adam, L2 weight decay (torch.optim.Adam)",
            OptimizerKind::AdamW => "AdamW, decoupled weight decay (torch.optim.AdamW)",
        }
    }

    /// clap's possible values: [`ALL`](Self::ALL) in order.
    pub fn value_parser() -> clap::builder::PossibleValuesParser {
        possible_values(Self::ALL.map(|k| (k.name(), k.describe())))
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        kind_from_name(&Self::ALL, Self::name, s, "optimizer")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Global batch: samples per optimizer step, over all devices and micro-batches.
    pub batch_size: usize,
    pub epochs: u64,
    /// Stop after this many optimizer steps (None: run all epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Clip gradients to this global L2 norm (None: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    /// Samples per device per micro-batch (optional: derived from the others; when given, it
    /// must satisfy batch_size = micro_batch_size × grad_accum × world size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch_size: Option<usize>,
    #[serde(default)]
    pub label_smoothing: f64,
    /// Save a checkpoint at every epoch end.
    #[serde(default = "default_true")]
    pub checkpoint: bool,
    /// Evaluate on the test split at every epoch end.
    #[serde(default = "default_true")]
    pub eval: bool,
    /// A step event (the mean over these steps) every this many steps, and the one host read
    /// of the training loop (loss, stop/pause agreement) that comes with it.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
}

fn default_one() -> usize {
    1
}

/// `train.log_every`'s default: one device→host read per 10 steps.
pub const DEFAULT_LOG_EVERY: u64 = 10;

fn default_log_every() -> u64 {
    DEFAULT_LOG_EVERY
}

/// Numeric precision of training: the number format (`mode`) and an optional cyclic precision
/// schedule for fake-quantized forward/backward passes (CPT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionConfig {
    #[serde(default)]
    pub mode: PrecisionMode,
    /// CPT: forward bits follow this schedule; backward at `q_bwd`. None: full precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<PrecisionSchedule>,
    /// Keep the first conv/linear layer at full precision.
    #[serde(default)]
    pub first_layer_full_precision: bool,
    /// Keep the classifier at full precision (CPT's default).
    #[serde(default = "default_true")]
    pub last_layer_full_precision: bool,
    /// Also quantize each parameter's gradient to `q_bwd` bits (stochastic rounding) before the
    /// reduction and the optimizer; CPT itself quantizes only the error signal.
    #[serde(default)]
    pub quantize_weight_grads: bool,
    /// fp16 loss scaling, with DeepSpeed's keys and defaults (`loss_scale = 0`: dynamic).
    #[serde(default)]
    pub loss_scale: LossScaleConfig,
    /// TF32 on CUDA: absent follows PyTorch's defaults (convolutions in TF32, matmuls in
    /// IEEE fp32); `true` allows it for both, `false` for neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<bool>,
    /// Memory layout of convolutions: `auto` (channels_last for CNNs under a half/amp mode on
    /// CUDA, as PyTorch users do with `model.to(memory_format=torch.channels_last)`), `on`
    /// (also on the CPU, where mkldnn has channels_last convolutions) or `off`.
    #[serde(default)]
    pub channels_last: ChannelsLast,
}

impl Default for PrecisionConfig {
    fn default() -> Self {
        PrecisionConfig {
            mode: PrecisionMode::Fp32,
            schedule: None,
            first_layer_full_precision: false,
            last_layer_full_precision: true,
            quantize_weight_grads: false,
            loss_scale: LossScaleConfig::default(),
            tf32: None,
            channels_last: ChannelsLast::Auto,
        }
    }
}

/// `precision.channels_last`: whether 4-D conv weights and inputs use the NHWC layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelsLast {
    #[default]
    Auto,
    On,
    Off,
}

impl ChannelsLast {
    pub const ALL: [ChannelsLast; 3] = [ChannelsLast::Auto, ChannelsLast::On, ChannelsLast::Off];

    pub fn name(self) -> &'static str {
        match self {
            ChannelsLast::Auto => "auto",
            ChannelsLast::On => "on",
            ChannelsLast::Off => "off",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ChannelsLast::Auto => "channels_last for CNNs under amp/half modes on CUDA, else off",
            ChannelsLast::On => "channels_last convolutions on every device (CPU: mkldnn)",
            ChannelsLast::Off => "contiguous NCHW throughout",
        }
    }

    /// clap's possible values: [`ALL`](Self::ALL) in order.
    pub fn value_parser() -> clap::builder::PossibleValuesParser {
        possible_values(Self::ALL.map(|k| (k.name(), k.describe())))
    }
}

impl std::str::FromStr for ChannelsLast {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        kind_from_name(&Self::ALL, Self::name, s, "precision.channels_last")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionMode {
    #[default]
    Fp32,
    /// fp16 replica with fp32 master weights and dynamic loss scaling (DeepSpeed's fp16).
    Fp16,
    /// bf16 replica with fp32 master weights, no loss scaling.
    Bf16,
    /// fp32 weights, ops in bf16 where `torch.autocast` casts them (no loss scaling).
    AmpBf16,
    /// fp32 weights, ops in fp16 where `torch.autocast` casts them, dynamic loss scaling.
    AmpFp16,
}

impl PrecisionMode {
    /// Every mode, in the order the CLI and the TUI list them.
    pub const ALL: [PrecisionMode; 5] = [
        PrecisionMode::Fp32,
        PrecisionMode::AmpBf16,
        PrecisionMode::AmpFp16,
        PrecisionMode::Fp16,
        PrecisionMode::Bf16,
    ];

    /// The config name (`precision.mode`), serde's name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionMode::Fp32 => "fp32",
            PrecisionMode::Fp16 => "fp16",
            PrecisionMode::Bf16 => "bf16",
            PrecisionMode::AmpBf16 => "amp_bf16",
            PrecisionMode::AmpFp16 => "amp_fp16",
        }
    }

    /// One line for listings.
    pub fn describe(self) -> &'static str {
        match self {
            PrecisionMode::Fp32 => "fp32 throughout",
            PrecisionMode::Fp16 => "DeepSpeed-style: fp16 weights, fp32 master copy, loss scaling",
            PrecisionMode::Bf16 => "DeepSpeed-style: bf16 weights, fp32 master copy",
            PrecisionMode::AmpBf16 => "torch.autocast to bf16: fp32 weights, loss in fp32",
            PrecisionMode::AmpFp16 => {
                "torch.autocast to fp16: fp32 weights, loss in fp32, loss scaling"
            }
        }
    }

    /// clap's possible values: [`ALL`](Self::ALL) in order.
    pub fn value_parser() -> clap::builder::PossibleValuesParser {
        possible_values(Self::ALL.map(|k| (k.name(), k.describe())))
    }

    /// Whether the loss is scaled (fp16's narrow exponent): `precision.loss_scale` is read.
    pub fn scales_loss(self) -> bool {
        matches!(self, PrecisionMode::Fp16 | PrecisionMode::AmpFp16)
    }
}

impl std::str::FromStr for PrecisionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        kind_from_name(&Self::ALL, Self::name, s, "precision mode")
    }
}

/// The largest counts a config may hold (see `RunConfig::validate`).
pub const MAX_THREADS: u64 = 1024;
/// Workers of one job (`cpu:N`, the GPUs of `cuda:…`).
pub const MAX_WORKERS: usize = 1024;
pub const MAX_BATCH: u64 = 1 << 20;
pub const MAX_EPOCHS: u64 = 1_000_000;
pub const MAX_STEPS: u64 = 1 << 53;
pub const MAX_IMAGE_SIZE: u64 = 8192;

/// A configuration error: names the field, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid {field} = {value}: {expected}")]
    Invalid {
        field: String,
        value: String,
        expected: String,
    },
    #[error("{0}")]
    Other(String),
}

fn invalid(field: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

impl RunConfig {
    /// Parses TOML text; `origin` (a file path or preset name) prefixes every error, and
    /// toml's message carries the line and column.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RunConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    pub fn from_file(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The fully resolved config as TOML (what a run directory records).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serializes")
    }

    /// Applies `key=value` overrides (dotted keys, TOML values) and re-validates the types.
    ///
    /// Changing a table's `kind` (`optimizer.kind`, `lr_schedule.kind`, …) keeps the fields the
    /// new kind also has (`lr`, `weight_decay`, `warmup_num_steps`: same name, same meaning) and
    /// drops the ones it does not know; the new kind's other fields take its defaults. A field
    /// the overrides themselves set is never dropped: if the new kind does not know it, that is
    /// the error.
    pub fn with_overrides(&self, overrides: &[Override]) -> Result<RunConfig, ConfigError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let before = toml::Table::try_from(self).expect("a RunConfig always serializes");
        let mut tree = before.clone();
        for o in overrides {
            apply_override(&mut tree, o)?;
        }
        let mut carried = overrides::carried_over(&before, &tree, overrides);
        let origin = overrides
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        loop {
            match RunConfig::deserialize(toml::Value::Table(tree.clone())) {
                Ok(config) => return Ok(config),
                Err(e) => {
                    // serde stops at the first unknown field: drop it if the old kind left it.
                    if let Some(i) = carried.iter().position(|c| c.rejected_by(&e)) {
                        carried.swap_remove(i).remove_from(&mut tree);
                        continue;
                    }
                    return Err(ConfigError::Parse {
                        origin: format!("overrides ({origin})"),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Checks what the types cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_counts()?;
        if self.name.trim().is_empty() {
            return Err(invalid("name", "\"\"", "a non-empty name"));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(invalid("train.batch_size", 0, "at least 1"));
        }
        if t.epochs == 0 {
            return Err(invalid("train.epochs", 0, "at least 1"));
        }
        if t.grad_accum == 0 {
            return Err(invalid("train.grad_accum", 0, "at least 1"));
        }
        if !t.batch_size.is_multiple_of(t.grad_accum) {
            return Err(invalid(
                "train.grad_accum",
                t.grad_accum,
                &format!(
                    "a divisor of train.batch_size ({}): train batch = micro batch × accumulation",
                    t.batch_size
                ),
            ));
        }
        if let Some(0) = t.max_steps {
            return Err(invalid(
                "train.max_steps",
                0,
                "at least 1 (or leave it out)",
            ));
        }
        if let Some(c) = t.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(invalid("train.grad_clip", c, "a positive finite norm"));
            }
        }
        if t.log_every == 0 {
            return Err(invalid(
                "train.log_every",
                0,
                "at least 1 (steps per step event)",
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(invalid(
                "train.label_smoothing",
                t.label_smoothing,
                "a value in [0, 1)",
            ));
        }
        self.validate_optimizer()?;
        let d = &self.data;
        if d.eval_batch_size == 0 {
            return Err(invalid("data.eval_batch_size", 0, "at least 1"));
        }
        if let Some(0) = d.image_size {
            return Err(invalid("data.image_size", 0, "a positive size in pixels"));
        }
        if let Some(r) = d.resize {
            let min = self.model.kind.info().min_input as usize;
            if r < min {
                return Err(invalid(
                    "data.resize",
                    r,
                    &format!(
                        "at least {min}, the smallest input {:?} accepts",
                        self.model.kind
                    ),
                ));
            }
        }
        if self.model.kind == ModelKind::Vit {
            model::validate_vit(&self.model.vit)
                .map_err(|e| invalid("model.vit", format!("{:?}", self.model.vit), &e))?;
        }
        self.precision.loss_scale.validate("precision.loss_scale")?;
        if let Some(0) = self.devices.threads {
            return Err(invalid(
                "devices.threads",
                0,
                "at least 1 (or leave it out)",
            ));
        }
        // The device spec and ZeRO stage were parsed (and checked) when the config was read.
        if let Some(world) = self.devices.devices.known_world_size() {
            if world > MAX_WORKERS {
                return Err(invalid(
                    "devices.devices",
                    &self.devices.devices,
                    &format!("at most {MAX_WORKERS} workers"),
                ));
            }
            let t = &self.train;
            if !t.batch_size.is_multiple_of(t.grad_accum * world) {
                return Err(invalid(
                    "train.batch_size",
                    t.batch_size,
                    &format!(
                        "a multiple of grad_accum × world size = {} × {world}: train batch = micro batch × gradient accumulation × world size",
                        t.grad_accum
                    ),
                ));
            }
            if let Some(micro) = t.micro_batch_size {
                if micro * t.grad_accum * world != t.batch_size {
                    // DeepSpeed's own wording for the same disagreement.
                    return Err(ConfigError::Other(format!(
                        "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size {} != {} * {} * {}",
                        t.batch_size, micro, t.grad_accum, world
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every count in the config against the largest a run can use. The bounds sit far above
    /// any real run and far below where the engine's products of them (epochs × steps per
    /// epoch, micro batch × accumulation × world size) could overflow, and every value fits
    /// TOML's integers (a run directory records the config as TOML).
    fn validate_counts(&self) -> Result<(), ConfigError> {
        let (t, d) = (&self.train, &self.data);
        let n = |x: usize| Some(x as u64);
        let counts = [
            ("seed", Some(self.seed), i64::MAX as u64, ""),
            ("train.batch_size", n(t.batch_size), MAX_BATCH, " samples"),
            (
                "train.micro_batch_size",
                t.micro_batch_size.and_then(n),
                MAX_BATCH,
                " samples",
            ),
            (
                "train.grad_accum",
                n(t.grad_accum),
                MAX_BATCH,
                " micro-batches",
            ),
            ("train.epochs", Some(t.epochs), MAX_EPOCHS, " epochs"),
            ("train.max_steps", t.max_steps, MAX_STEPS, " steps"),
            ("train.log_every", Some(t.log_every), MAX_STEPS, " steps"),
            (
                "data.eval_batch_size",
                n(d.eval_batch_size),
                MAX_BATCH,
                " samples",
            ),
            (
                "data.image_size",
                d.image_size.and_then(n),
                MAX_IMAGE_SIZE,
                " pixels",
            ),
            (
                "data.resize",
                d.resize.and_then(n),
                MAX_IMAGE_SIZE,
                " pixels",
            ),
            (
                "data.random_crop_padding",
                n(d.random_crop_padding),
                MAX_IMAGE_SIZE,
                " pixels",
            ),
            (
                "devices.threads",
                self.devices.threads.and_then(n),
                MAX_THREADS,
                " threads",
            ),
        ];
        for (field, value, max, unit) in counts {
            if let Some(v) = value.filter(|v| *v > max) {
                let mut expected = format!("at most {max}{unit}");
                if field == "devices.threads" {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    expected.push_str(&format!(" (this machine has {cores} cores)"));
                }
                return Err(invalid(field, v, &expected));
            }
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<(), ConfigError> {
        let lr = self.optimizer.lr();
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(invalid("optimizer.lr", lr, "a non-negative finite number"));
        }
        match &self.optimizer {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                if *momentum < 0.0 {
                    return Err(invalid("optimizer.momentum", momentum, "≥ 0"));
                }
                if *weight_decay < 0.0 {
                    return Err(invalid("optimizer.weight_decay", weight_decay, "≥ 0"));
                }
                if *nesterov && (*momentum <= 0.0 || *dampening != 0.0) {
                    // torch.optim.SGD raises the same.
                    return Err(invalid(
                        "optimizer.nesterov",
                        nesterov,
                        "momentum > 0 and dampening = 0 (Nesterov momentum requires them)",
                    ));
                }
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                ..
            }
            | OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                for (i, b) in betas.iter().enumerate() {
                    if !(0.0..1.0).contains(b) {
                        return Err(invalid(
                            &format!("optimizer.betas[{i}]"),
                            b,
                            "a value in [0, 1)",
                        ));
                    }
                }
                if *eps < 0.0 {
                    return Err(invalid("optimizer.eps", eps, "≥ 0"));
                }
                if *weight_decay < 0.0 {
                    return Err(invalid("optimizer.weight_decay", weight_decay, "≥ 0"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[model]
kind = "lenet"
[optimizer]
kind = "sgd"
lr = 0.01
[train]
batch_size = 8
epochs = 1
"#;

    #[test]
    fn minimal_config_fills_defaults() {
        let c = RunConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.seed, 42);
        assert_eq!(c.train.grad_accum, 1);
        assert_eq!(c.data.random_crop_padding, 4);
        assert_eq!(c.devices.devices.to_string(), "auto");
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = MINIMAL.replace("epochs = 1", "epochs = 1\nepoch = 2");
        let e = RunConfig::from_toml_str(&text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains("unknown field `epoch`"), "{e}");
        assert!(e.contains("line 11"), "{e}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = RunConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        let back = RunConfig::from_toml_str(&c.to_toml(), "resolved").unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn overrides_change_nested_fields_and_keep_types_checked() {
        let c = RunConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        let o: Override = "optimizer.momentum=0.9".parse().unwrap();
        let c2 = c.with_overrides(&[o]).unwrap();
        assert!(matches!(c2.optimizer, OptimizerConfig::Sgd { momentum, .. } if momentum == 0.9));
        let bad: Override = "train.batch_size=\"many\"".parse().unwrap();
        let e = c.with_overrides(&[bad]).unwrap_err().to_string();
        assert!(e.contains("train.batch_size"), "{e}");
    }

    #[test]
    fn validation_names_field_and_expectation() {
        let mut c = RunConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        c.train.grad_accum = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("train.grad_accum = 3"), "{e}");
        c.train.grad_accum = 1;
        c.optimizer = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("optimizer.nesterov"), "{e}");
    }

    #[test]
    fn a_new_kind_keeps_shared_fields_and_drops_the_rest() {
        let text = MINIMAL.replace(
            "lr = 0.01",
            "lr = 0.01\nmomentum = 0.9\nweight_decay = 5e-4\n[lr_schedule]\nkind = \"cosine_annealing\"\neta_min = 0.001",
        );
        let c = RunConfig::from_toml_str(&text, "t.toml").unwrap();
        let o = |s: &str| s.parse::<Override>().unwrap();
        let c2 = c
            .with_overrides(&[o("lr_schedule.kind=warmup_lr"), o("optimizer.kind=adamw")])
            .unwrap();
        assert!(
            matches!(c2.lr_schedule, LrSchedule::WarmupLr { .. }),
            "{:?}",
            c2.lr_schedule
        );
        match c2.optimizer {
            OptimizerConfig::AdamW {
                lr,
                weight_decay,
                betas,
                ..
            } => {
                assert_eq!((lr, weight_decay), (0.01, 5e-4));
                assert_eq!(betas, default_betas());
            }
            other => panic!("{other:?}"),
        }
        // What the overrides set themselves is kept, and checked.
        let e = c
            .with_overrides(&[o("lr_schedule.kind=warmup_lr"), o("lr_schedule.eta_min=0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `eta_min`"), "{e}");
        // Without a kind change an unknown field stays an error.
        let e = c
            .with_overrides(&[o("optimizer.betas=[0.9, 0.99]")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `betas`"), "{e}");
    }

    #[test]
    fn counts_are_bounded_with_the_field_named() {
        let c = RunConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        let check = |f: &dyn Fn(&mut RunConfig), field: &str| {
            let mut c = c.clone();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{field} = ")) && e.contains("at most"),
                "{e}"
            );
        };
        check(&|c| c.devices.threads = Some(100_000), "devices.threads");
        check(&|c| c.train.epochs = 1 << 62, "train.epochs");
        check(&|c| c.train.max_steps = Some(u64::MAX), "train.max_steps");
        check(&|c| c.train.batch_size = usize::MAX, "train.batch_size");
        check(&|c| c.train.grad_accum = usize::MAX, "train.grad_accum");
        check(
            &|c| c.data.eval_batch_size = 1 << 40,
            "data.eval_batch_size",
        );
        check(&|c| c.seed = u64::MAX, "seed");
        check(
            &|c| c.devices.devices = "cpu:100000".parse().unwrap(),
            "devices.devices",
        );
        let mut ok = c.clone();
        ok.devices.threads = Some(MAX_THREADS as usize);
        ok.train.epochs = MAX_EPOCHS;
        ok.validate().unwrap();
    }
}
