//! The run configuration: what a run is, fully described, plus where files live.
//!
//! A `RunConfig` is built from a preset (TOML), then command-line overrides are applied to the
//! TOML tree (so `--set a.b=c` and a preset file go through the same deserializer and give the
//! same errors), then `validate` checks what serde cannot.
mod overrides;
pub mod paths;
pub mod presets;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::loss_scale::LossScaleConfig;
use crate::models::{ModelKind, VitConfig};
use crate::schedule::lr::LrSchedule;
use crate::schedule::precision::PrecisionSchedule;

pub use overrides::{apply_override, Override};

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

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => *lr,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::AdamW { .. } => "adamw",
        }
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
}

fn default_one() -> usize {
    1
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
        }
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
}

impl PrecisionMode {
    /// The replica's tensor type.
    pub fn kind(self) -> tch::Kind {
        match self {
            PrecisionMode::Fp32 => tch::Kind::Float,
            PrecisionMode::Fp16 => tch::Kind::Half,
            PrecisionMode::Bf16 => tch::Kind::BFloat16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub devices: String,
    /// Intra-op threads per worker (None: the cores divided among the CPU workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// ZeRO stage: 0 replicates optimizer state on every rank, 1 shards it (DeepSpeed stage 1).
    #[serde(default)]
    pub zero: u8,
}

fn default_device() -> String {
    "cpu".to_string()
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            devices: default_device(),
            threads: None,
            zero: 0,
        }
    }
}

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
    pub fn with_overrides(&self, overrides: &[Override]) -> Result<RunConfig, ConfigError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut tree = toml::Table::try_from(self).expect("a RunConfig always serializes");
        for o in overrides {
            apply_override(&mut tree, o)?;
        }
        let origin = overrides
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        RunConfig::deserialize(toml::Value::Table(tree)).map_err(|e| ConfigError::Parse {
            origin: format!("overrides ({origin})"),
            message: e.to_string(),
        })
    }

    /// Checks what the types cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
            crate::models::validate_vit(&self.model.vit)
                .map_err(|e| invalid("model.vit", format!("{:?}", self.model.vit), &e))?;
        }
        self.precision
            .loss_scale
            .validate("precision.loss_scale")
            .map_err(ConfigError::Other)?;
        if let Some(0) = self.devices.threads {
            return Err(invalid(
                "devices.threads",
                0,
                "at least 1 (or leave it out)",
            ));
        }
        let spec = crate::engine::device::parse_devices(&self.devices.devices)
            .map_err(|e| invalid("devices.devices", &self.devices.devices, &e))?;
        if self.devices.zero > 1 {
            return Err(invalid(
                "devices.zero",
                self.devices.zero,
                "0 (replicated optimizer state) or 1 (sharded, ZeRO stage 1)",
            ));
        }
        if let Some(world) = spec.known_world_size() {
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
        assert_eq!(c.devices.devices, "cpu");
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
}
