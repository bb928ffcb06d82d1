//! Learning-rate schedules, each a closed-form function of the optimizer step.
//!
//! The DeepSpeed ones follow `deepspeed/runtime/lr_schedules.py` of DeepSpeed 0.19.8 (`WarmupLR`,
//! `WarmupDecayLR`, `WarmupCosineLR`, `OneCycle`), the PyTorch ones `torch.optim.lr_scheduler`
//! (`CyclicLR`, `MultiStepLR`, `CosineAnnealingLR`'s closed form), operation for operation so the
//! numbers agree to the last bit where the libm does. `tests/reference/lr_schedules.py` runs the
//! libraries' own code for the reference values the tests hard-code.
//!
//! # Momentum
//! `CyclicLR` and `OneCycle` also cycle momentum by default (`cycle_momentum`), inversely to the
//! lr: [`LrSchedule::momentum_at`] gives the value the library's scheduler would write into the
//! optimizer for a step (SGD's `momentum`, Adam/AdamW's β1), None where it writes nothing.
//!
//! # Step convention
//! `step` counts optimizer steps already taken, so `lr_at(0)` is the rate the first optimizer step
//! uses.
//! - DeepSpeed's engine calls `optimizer.step()` and then `lr_scheduler.step()`; the scheduler
//!   starts at `last_batch_iteration = -1` and its constructor writes the lr for that state into
//!   the optimizer. Optimizer step `s` therefore runs with the lr computed for
//!   `last_batch_iteration = s - 1`, and step 0 with the constructor's value: `warmup_min_lr` for
//!   `WarmupLR`/`WarmupDecayLR`, **0.0** for `WarmupCosineLR` (its `get_lr` returns `[0.0]` before
//!   the first `step()`), `cycle_min_lr` for `OneCycle`.
//! - PyTorch's schedulers call `step()` once in their constructor (`last_epoch = 0`) and the loop
//!   calls `scheduler.step()` after `optimizer.step()`, so step `s` uses `last_epoch = s`.
//!   `multi_step` is stepped per epoch: it uses `last_epoch = step / steps_per_epoch`.
use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// What a schedule needs to know about the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrContext {
    /// The optimizer's configured lr.
    pub base_lr: f64,
    /// Optimizer steps in the whole run.
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    /// Samples per optimizer step over all devices (for `goyal`'s linear scaling).
    pub global_batch: u64,
    /// The optimizer's momentum, as a schedule that cycles momentum sees it.
    pub momentum: MomentumKind,
}

/// What a schedule that cycles momentum can set, by what the optimizer has (torch's
/// `optimizer.defaults`): SGD's `momentum` (present even when configured 0, so PyTorch's
/// `CyclicLR` turns momentum on), or Adam/AdamW's β1 (`betas[0]`; DeepSpeed's `OneCycle` cycles
/// only these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MomentumKind {
    #[default]
    SgdMomentum,
    AdamBeta1,
}

impl LrContext {
    fn validate(&self) -> Result<(), ScheduleError> {
        if !(self.base_lr >= 0.0 && self.base_lr.is_finite()) {
            return Err(ScheduleError::invalid(
                "optimizer.lr",
                "a non-negative finite number",
                self.base_lr,
            ));
        }
        for (field, v) in [
            ("lr_context.total_steps", self.total_steps),
            ("lr_context.steps_per_epoch", self.steps_per_epoch),
            ("lr_context.global_batch", self.global_batch),
        ] {
            if v == 0 {
                return Err(ScheduleError::invalid(field, "≥ 1", v));
            }
        }
        Ok(())
    }
}

/// DeepSpeed's warmup curves (`warmup_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupType {
    /// `ln(i + 1) / ln(warmup_num_steps)`.
    #[default]
    Log,
    /// `i / warmup_num_steps`.
    Linear,
}

/// PyTorch `CyclicLR` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CyclicMode {
    /// Amplitude constant.
    #[default]
    Triangular,
    /// Amplitude halved every cycle.
    Triangular2,
    /// Amplitude scaled by `gamma^iteration`.
    ExpRange,
}

/// What `CyclicLR`'s scale function is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CyclicScaleMode {
    /// The cycle number (1-based).
    Cycle,
    /// The step.
    Iterations,
}

impl CyclicMode {
    /// PyTorch forces this scale mode for the built-in modes (`_init_scale_fn`).
    pub fn default_scale_mode(self) -> CyclicScaleMode {
        match self {
            CyclicMode::Triangular | CyclicMode::Triangular2 => CyclicScaleMode::Cycle,
            CyclicMode::ExpRange => CyclicScaleMode::Iterations,
        }
    }
}

/// A learning-rate schedule. Keys are what users write under `[lr_schedule]`, with the source
/// library's names and defaults. See the module docs for the step convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The optimizer's lr throughout. (A struct variant so that unknown keys are rejected: serde
    /// ignores them on unit variants of internally tagged enums.)
    Constant {},
    /// DeepSpeed `WarmupLR`: `warmup_min_lr` to `warmup_max_lr` over `warmup_num_steps`, then flat.
    WarmupLr {
        #[serde(default)]
        warmup_min_lr: f64,
        /// None: the optimizer's lr (DeepSpeed's default too).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_max_lr: Option<f64>,
        /// DeepSpeed uses `max(2, warmup_num_steps)` and raises for 0.
        #[serde(default = "default_warmup_num_steps")]
        warmup_num_steps: u64,
        #[serde(default)]
        warmup_type: WarmupType,
    },
    /// DeepSpeed `WarmupDecayLR`: `WarmupLR`, then linear decay to 0 at `total_num_steps`.
    WarmupDecayLr {
        /// None: the run's total steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_num_steps: Option<u64>,
        #[serde(default)]
        warmup_min_lr: f64,
        /// None: the optimizer's lr. (DeepSpeed's `WarmupDecayLR` alone still defaults to 0.001.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_max_lr: Option<f64>,
        #[serde(default = "default_warmup_num_steps")]
        warmup_num_steps: u64,
        #[serde(default)]
        warmup_type: WarmupType,
    },
    /// DeepSpeed `WarmupCosineLR`: ratios of the optimizer's lr; warmup from `warmup_min_ratio`
    /// to 1, then cosine down to `cos_min_ratio` at `total_num_steps`.
    WarmupCosineLr {
        /// None: the run's total steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_num_steps: Option<u64>,
        #[serde(default)]
        warmup_min_ratio: f64,
        #[serde(default = "default_warmup_num_steps")]
        warmup_num_steps: u64,
        #[serde(default = "default_cos_min_ratio")]
        cos_min_ratio: f64,
        #[serde(default)]
        warmup_type: WarmupType,
    },
    /// DeepSpeed `OneCycle`: lr from `cycle_min_lr` up to `cycle_max_lr` and back over one
    /// cycle, then an optional decay; β1 of Adam/AdamW cycled inversely (DeepSpeed disables
    /// momentum cycling for optimizers without `betas`, so SGD's momentum is left alone).
    OneCycle {
        cycle_min_lr: f64,
        cycle_max_lr: f64,
        #[serde(default)]
        decay_lr_rate: f64,
        #[serde(default = "default_cycle_step_size")]
        cycle_first_step_size: u64,
        /// None: `cycle_first_step_size`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cycle_second_step_size: Option<u64>,
        /// Stairs in the rising half: the lr (and momentum) holds flat across each of that many
        /// equal parts instead of moving every step. 0: continuous.
        #[serde(default)]
        cycle_first_stair_count: u64,
        /// Stairs in the falling half. None: `cycle_first_stair_count`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cycle_second_stair_count: Option<u64>,
        /// 0: no decay after the cycle (lr stays at `cycle_min_lr`, momentum at
        /// `cycle_max_mom`).
        #[serde(default)]
        decay_step_size: u64,
        /// Cycle Adam/AdamW's β1 between `cycle_max_mom` (at `cycle_min_lr`) and
        /// `cycle_min_mom` (at `cycle_max_lr`).
        #[serde(default = "default_true")]
        cycle_momentum: bool,
        #[serde(default = "default_min_momentum")]
        cycle_min_mom: f64,
        #[serde(default = "default_max_momentum")]
        cycle_max_mom: f64,
        /// After the cycle β1 = `cycle_max_mom · (1 + decay_mom_rate · decay_steps /
        /// decay_step_size)` (it grows, as in DeepSpeed). 0: stays at `cycle_max_mom`.
        #[serde(default)]
        decay_mom_rate: f64,
    },
    /// PyTorch `CyclicLR`, stepped every optimizer step.
    CyclicLr {
        /// None: the optimizer's lr.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_lr: Option<f64>,
        max_lr: f64,
        #[serde(default = "default_cycle_step_size")]
        step_size_up: u64,
        /// None: `step_size_up`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_size_down: Option<u64>,
        #[serde(default)]
        mode: CyclicMode,
        /// Only `exp_range` reads it.
        #[serde(default = "default_one")]
        gamma: f64,
        /// None: PyTorch's choice for `mode` (cycle for triangular/triangular2, iterations for
        /// exp_range). Setting it is what PyTorch does with the same function passed as a custom
        /// `scale_fn`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale_mode: Option<CyclicScaleMode>,
        /// Cycle the momentum (SGD's momentum, Adam/AdamW's β1) inversely to the lr between
        /// `max_momentum` (at `base_lr`) and `base_momentum` (at `max_lr`), scaled like the lr.
        #[serde(default = "default_true")]
        cycle_momentum: bool,
        #[serde(default = "default_min_momentum")]
        base_momentum: f64,
        #[serde(default = "default_max_momentum")]
        max_momentum: f64,
    },
    /// PyTorch `MultiStepLR` stepped once per epoch: `lr × gamma^(milestones ≤ epoch)`.
    MultiStep {
        /// Epochs, strictly increasing.
        milestones: Vec<u64>,
        #[serde(default = "default_tenth")]
        gamma: f64,
    },
    /// PyTorch `CosineAnnealingLR` (closed form), stepped every optimizer step.
    CosineAnnealing {
        /// Steps; None: the run's total steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        t_max: Option<u64>,
        #[serde(default)]
        eta_min: f64,
    },
    /// Goyal et al. 2017: lr scaled by `global_batch / reference_batch`, reached by a per-step
    /// linear warmup from the unscaled lr over `warmup_epochs`, then `gamma` at each milestone.
    Goyal {
        #[serde(default = "default_reference_batch")]
        reference_batch: u64,
        #[serde(default = "default_warmup_epochs")]
        warmup_epochs: f64,
        /// Epochs, strictly increasing.
        #[serde(default = "default_goyal_milestones")]
        milestones: Vec<u64>,
        #[serde(default = "default_tenth")]
        gamma: f64,
    },
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::Constant {}
    }
}

/// The LR schedule kinds: the one list that the CLI (`cptlab schedule lr NAME`), the TUI's
/// picker and the error messages read, in the TUI's display order.
///
/// Adding a schedule: its [`LrSchedule`] variant (serde names it) and that variant's arms in
/// `kind`, `lr_at`, `momentum_at` and `validate`; here, the variant, its line in `ALL`, and its
/// arms in `name`, `describe` and `default_for`. Nothing outside this file lists the kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LrScheduleKind {
    Constant,
    CosineAnnealing,
    WarmupLr,
    WarmupDecayLr,
    WarmupCosineLr,
    OneCycle,
    CyclicLr,
    MultiStep,
    Goyal,
}

/// What a new schedule's defaults are scaled to (a warmup that fits a short run, milestones
/// inside the epochs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrDefaults {
    /// The optimizer's lr.
    pub base_lr: f64,
    /// Optimizer steps in the run.
    pub total_steps: u64,
    pub epochs: u64,
}

impl LrScheduleKind {
    pub const ALL: [LrScheduleKind; 9] = [
        LrScheduleKind::Constant,
        LrScheduleKind::CosineAnnealing,
        LrScheduleKind::WarmupLr,
        LrScheduleKind::WarmupDecayLr,
        LrScheduleKind::WarmupCosineLr,
        LrScheduleKind::OneCycle,
        LrScheduleKind::CyclicLr,
        LrScheduleKind::MultiStep,
        LrScheduleKind::Goyal,
    ];

    /// The config name (`kind = "..."`), serde's name of the [`LrSchedule`] variant.
    pub fn name(self) -> &'static str {
        match self {
            LrScheduleKind::Constant => "constant",
            LrScheduleKind::CosineAnnealing => "cosine_annealing",
            LrScheduleKind::WarmupLr => "warmup_lr",
            LrScheduleKind::WarmupDecayLr => "warmup_decay_lr",
            LrScheduleKind::WarmupCosineLr => "warmup_cosine_lr",
            LrScheduleKind::OneCycle => "one_cycle",
            LrScheduleKind::CyclicLr => "cyclic_lr",
            LrScheduleKind::MultiStep => "multi_step",
            LrScheduleKind::Goyal => "goyal",
        }
    }

    /// One line for listings.
    pub fn describe(self) -> &'static str {
        match self {
            LrScheduleKind::Constant => "the optimizer's lr throughout",
            LrScheduleKind::CosineAnnealing => "PyTorch CosineAnnealingLR: cosine down to eta_min",
            LrScheduleKind::WarmupLr => "DeepSpeed WarmupLR: warmup, then flat",
            LrScheduleKind::WarmupDecayLr => "DeepSpeed WarmupDecayLR: warmup, then linear decay",
            LrScheduleKind::WarmupCosineLr => "DeepSpeed WarmupCosineLR: warmup, then cosine decay",
            LrScheduleKind::OneCycle => "DeepSpeed OneCycle: up and back down once, then decay",
            LrScheduleKind::CyclicLr => "PyTorch CyclicLR: triangular cycles between two lrs",
            LrScheduleKind::MultiStep => "PyTorch MultiStepLR: × gamma at each milestone epoch",
            LrScheduleKind::Goyal => "Goyal et al.: linear scaling with warmup, step decay",
        }
    }

    /// This kind's default schedule, scaled to the run: what the TUI switches to when the kind
    /// changes.
    pub fn default_for(self, run: &LrDefaults) -> LrSchedule {
        let lr = run.base_lr;
        let total = run.total_steps.max(2);
        let epochs = run.epochs;
        match self {
            LrScheduleKind::Constant => LrSchedule::Constant {},
            LrScheduleKind::CosineAnnealing => LrSchedule::CosineAnnealing {
                t_max: None,
                eta_min: 0.0,
            },
            LrScheduleKind::WarmupLr => LrSchedule::WarmupLr {
                warmup_min_lr: 0.0,
                warmup_max_lr: None,
                warmup_num_steps: (total / 10).max(2),
                warmup_type: Default::default(),
            },
            LrScheduleKind::WarmupDecayLr => LrSchedule::WarmupDecayLr {
                total_num_steps: None,
                warmup_min_lr: 0.0,
                warmup_max_lr: None,
                warmup_num_steps: (total / 10).max(2),
                warmup_type: Default::default(),
            },
            LrScheduleKind::WarmupCosineLr => LrSchedule::WarmupCosineLr {
                total_num_steps: None,
                warmup_min_ratio: 0.0,
                warmup_num_steps: (total / 10).max(2),
                cos_min_ratio: default_cos_min_ratio(),
                warmup_type: Default::default(),
            },
            LrScheduleKind::OneCycle => LrSchedule::OneCycle {
                cycle_min_lr: lr / 10.0,
                cycle_max_lr: lr,
                decay_lr_rate: 0.0,
                cycle_first_step_size: (total / 2).max(1),
                cycle_second_step_size: None,
                cycle_first_stair_count: 0,
                cycle_second_stair_count: None,
                decay_step_size: 0,
                cycle_momentum: true,
                cycle_min_mom: default_min_momentum(),
                cycle_max_mom: default_max_momentum(),
                decay_mom_rate: 0.0,
            },
            LrScheduleKind::CyclicLr => LrSchedule::CyclicLr {
                base_lr: Some(lr / 10.0),
                max_lr: lr,
                step_size_up: (total / 8).max(1),
                step_size_down: None,
                mode: Default::default(),
                gamma: default_one(),
                scale_mode: None,
                cycle_momentum: true,
                base_momentum: default_min_momentum(),
                max_momentum: default_max_momentum(),
            },
            LrScheduleKind::MultiStep => {
                let a = (epochs / 2).max(1);
                let b = (epochs * 3 / 4).max(a + 1);
                LrSchedule::MultiStep {
                    milestones: vec![a, b],
                    gamma: default_tenth(),
                }
            }
            LrScheduleKind::Goyal => LrSchedule::Goyal {
                reference_batch: default_reference_batch(),
                warmup_epochs: default_warmup_epochs(),
                milestones: default_goyal_milestones(),
                gamma: default_tenth(),
            },
        }
    }

    /// The `[lr_schedule]` keys this kind's default writes (`kind` excepted), read from the type
    /// itself: optional parameters left unset (None) are not among them.
    pub fn fields(self) -> Vec<String> {
        let run = LrDefaults {
            base_lr: 0.1,
            total_steps: 1000,
            epochs: 10,
        };
        self.default_for(&run)
            .to_table()
            .keys()
            .filter(|k| *k != "kind")
            .cloned()
            .collect()
    }

    /// Whether this kind has the `[lr_schedule]` parameter `key`.
    pub fn has_field(self, key: &str) -> bool {
        self.fields().iter().any(|f| f == key)
    }

    /// The names of [`ALL`](Self::ALL), comma-separated.
    pub fn valid_names() -> String {
        Self::ALL.map(|k| k.name()).join(", ")
    }
}

impl std::fmt::Display for LrScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LrScheduleKind {
    type Err = ScheduleError;

    /// Case-insensitive; an unknown name is an error listing the valid ones.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ScheduleError::UnknownLrKind {
                got: s.to_string(),
                valid: Self::valid_names(),
            })
    }
}

fn default_warmup_num_steps() -> u64 {
    1000
}
fn default_cos_min_ratio() -> f64 {
    0.0001
}
fn default_cycle_step_size() -> u64 {
    2000
}
fn default_one() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
/// `CyclicLR.base_momentum`, `OneCycle.cycle_min_mom`.
fn default_min_momentum() -> f64 {
    0.8
}
/// `CyclicLR.max_momentum`, `OneCycle.cycle_max_mom`.
fn default_max_momentum() -> f64 {
    0.9
}
fn default_tenth() -> f64 {
    0.1
}
fn default_reference_batch() -> u64 {
    256
}
fn default_warmup_epochs() -> f64 {
    5.0
}
fn default_goyal_milestones() -> Vec<u64> {
    vec![30, 60, 80]
}

/// DeepSpeed's warmup state: `warmup_num_steps` after `max(2, ·)`.
struct DsWarmup {
    steps: u64,
    kind: WarmupType,
    inverse_log_warm_up: f64,
}

impl DsWarmup {
    fn new(warmup_num_steps: u64, kind: WarmupType) -> DsWarmup {
        let steps = warmup_num_steps.max(2);
        DsWarmup {
            steps,
            kind,
            inverse_log_warm_up: 1.0 / (steps as f64).ln(),
        }
    }

    /// `_get_gamma`'s warmup branch; None once `last_batch_iteration ≥ steps`.
    fn gamma(&self, lbi: u64) -> Option<f64> {
        (lbi < self.steps).then(|| match self.kind {
            WarmupType::Log => self.inverse_log_warm_up * ((lbi + 1) as f64).ln(),
            WarmupType::Linear => lbi as f64 / self.steps as f64,
        })
    }
}

/// DeepSpeed's `last_batch_iteration` when optimizer step `step` runs; None: still -1.
fn ds_last_batch_iteration(step: u64) -> Option<u64> {
    step.checked_sub(1)
}

fn milestones_passed(milestones: &[u64], epoch: u64) -> usize {
    milestones.iter().filter(|&&m| m <= epoch).count()
}

impl LrSchedule {
    /// The config name (`kind = "..."`).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Which kind of schedule this is.
    pub fn kind(&self) -> LrScheduleKind {
        match self {
            LrSchedule::Constant {} => LrScheduleKind::Constant,
            LrSchedule::WarmupLr { .. } => LrScheduleKind::WarmupLr,
            LrSchedule::WarmupDecayLr { .. } => LrScheduleKind::WarmupDecayLr,
            LrSchedule::WarmupCosineLr { .. } => LrScheduleKind::WarmupCosineLr,
            LrSchedule::OneCycle { .. } => LrScheduleKind::OneCycle,
            LrSchedule::CyclicLr { .. } => LrScheduleKind::CyclicLr,
            LrSchedule::MultiStep { .. } => LrScheduleKind::MultiStep,
            LrSchedule::CosineAnnealing { .. } => LrScheduleKind::CosineAnnealing,
            LrSchedule::Goyal { .. } => LrScheduleKind::Goyal,
        }
    }

    /// `kind`'s default, scaled to the run (see [`LrScheduleKind::default_for`]).
    pub fn default_of(kind: LrScheduleKind, run: &LrDefaults) -> LrSchedule {
        kind.default_for(run)
    }

    /// The `[lr_schedule]` table of this schedule, `kind` included.
    pub fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            other => unreachable!("an LrSchedule serializes to a TOML table, got {other:?}"),
        }
    }

    /// The parameter `key` as the `[lr_schedule]` table has it (None: not set, or not a
    /// parameter of this kind).
    pub fn param(&self, key: &str) -> Option<toml::Value> {
        self.to_table().remove(key)
    }

    /// This schedule with the parameter `key` set to `value`, through the same deserializer as
    /// a config file (an unknown key or a wrong type is an error).
    pub fn with_param(&self, key: &str, value: toml::Value) -> Result<LrSchedule, String> {
        let mut t = self.to_table();
        t.insert(key.to_string(), value);
        LrSchedule::deserialize(toml::Value::Table(t)).map_err(|e| e.message().to_string())
    }

    /// The lr for the optimizer step after `step` steps have been taken (0-based).
    pub fn lr_at(&self, step: u64, ctx: &LrContext) -> f64 {
        match self {
            LrSchedule::Constant {} => ctx.base_lr,
            LrSchedule::WarmupLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => {
                let w = DsWarmup::new(*warmup_num_steps, *warmup_type);
                let delta = warmup_max_lr.unwrap_or(ctx.base_lr) - warmup_min_lr;
                match ds_last_batch_iteration(step) {
                    None => *warmup_min_lr,
                    Some(lbi) => warmup_min_lr + delta * w.gamma(lbi).unwrap_or(1.0),
                }
            }
            LrSchedule::WarmupDecayLr {
                total_num_steps,
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => {
                let w = DsWarmup::new(*warmup_num_steps, *warmup_type);
                let total = total_num_steps.unwrap_or(ctx.total_steps) as f64;
                let delta = warmup_max_lr.unwrap_or(ctx.base_lr) - warmup_min_lr;
                match ds_last_batch_iteration(step) {
                    None => *warmup_min_lr,
                    Some(lbi) => {
                        let gamma = w.gamma(lbi).unwrap_or_else(|| {
                            f64::max(
                                0.0,
                                (total - lbi as f64) / f64::max(1.0, total - w.steps as f64),
                            )
                        });
                        warmup_min_lr + delta * gamma
                    }
                }
            }
            LrSchedule::WarmupCosineLr {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                warmup_type,
            } => {
                let w = DsWarmup::new(*warmup_num_steps, *warmup_type);
                let total = total_num_steps.unwrap_or(ctx.total_steps);
                let Some(lbi) = ds_last_batch_iteration(step) else {
                    return 0.0;
                };
                let ratio = match w.gamma(lbi) {
                    Some(g) => warmup_min_ratio + g * (1.0 - warmup_min_ratio),
                    None => {
                        let real_last_step = (lbi - w.steps + 1) as f64;
                        let real_total_steps = (total as f64 - w.steps as f64).max(1.0);
                        // Clamped: past total_num_steps the ratio holds cos_min_ratio.
                        let progress = f64::min(1.0, real_last_step / real_total_steps);
                        let r = (1.0 + (PI * progress).cos()) / 2.0;
                        f64::max(0.0, cos_min_ratio + (1.0 - cos_min_ratio) * r)
                    }
                };
                ctx.base_lr * ratio
            }
            LrSchedule::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                decay_step_size,
                ..
            } => {
                let shape = self.one_cycle_shape().expect("one_cycle");
                let total_size = shape.total_size();
                // get_lr: `last_batch_iteration < total_size` with lbi = step - 1. At step 0
                // (lbi -1) the constructor's cycle_min_lr, which the formula also gives.
                if (step as f64) - 1.0 < total_size {
                    // _get_scale_factor uses batch_iteration = lbi + 1 = step.
                    cycle_min_lr + (cycle_max_lr - cycle_min_lr) * shape.scale_factor(step)
                } else if *decay_step_size == 0 || *decay_lr_rate == 0.0 {
                    *cycle_min_lr
                } else {
                    let decay_batch_iteration = step as f64 - total_size;
                    let interval = decay_batch_iteration / *decay_step_size as f64;
                    cycle_min_lr / (1.0 + decay_lr_rate * interval)
                }
            }
            LrSchedule::CyclicLr {
                base_lr, max_lr, ..
            } => {
                let base = base_lr.unwrap_or(ctx.base_lr);
                let (scale_factor, scale) = self.cyclic_scales(step).expect("cyclic_lr");
                base + (max_lr - base) * scale_factor * scale
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                let epoch = step / ctx.steps_per_epoch.max(1);
                ctx.base_lr * gamma.powf(milestones_passed(milestones, epoch) as f64)
            }
            LrSchedule::CosineAnnealing { t_max, eta_min } => {
                let t_max = t_max.unwrap_or(ctx.total_steps).max(1) as f64;
                eta_min + (ctx.base_lr - eta_min) * (1.0 + (PI * step as f64 / t_max).cos()) / 2.0
            }
            LrSchedule::Goyal {
                reference_batch,
                warmup_epochs,
                milestones,
                gamma,
            } => {
                let target =
                    ctx.base_lr * ctx.global_batch as f64 / (*reference_batch).max(1) as f64;
                let warmup = goyal_warmup_steps(*warmup_epochs, ctx.steps_per_epoch);
                // Warmup only ramps up: a batch at or below the reference starts at its target.
                if step < warmup && target > ctx.base_lr {
                    ctx.base_lr + (target - ctx.base_lr) * step as f64 / warmup as f64
                } else {
                    let epoch = step / ctx.steps_per_epoch.max(1);
                    target * gamma.powf(milestones_passed(milestones, epoch) as f64)
                }
            }
        }
    }

    /// The momentum the library's scheduler sets for the optimizer step after `step` steps
    /// (SGD's `momentum` or Adam/AdamW's β1, by `ctx.momentum`), None where it sets none: the
    /// optimizer then uses its configured value. Same step convention as [`LrSchedule::lr_at`].
    ///
    /// - `cyclic_lr` (PyTorch `CyclicLR.get_lr`): `max_momentum - (max_momentum - base_momentum)
    ///   · scale_factor · scale_fn(·)`, the lr's triangle and scale, for SGD and Adam/AdamW.
    /// - `one_cycle` (DeepSpeed `OneCycle`): Adam/AdamW only. Step 0 runs with the constructor's
    ///   `cycle_min_mom` (DeepSpeed's `_initialize_momentum` writes `min_moms`, although the
    ///   cycle formula would give `cycle_max_mom` there); then `cycle_max_mom - (cycle_max_mom -
    ///   cycle_min_mom) · scale_factor` (stairs included), and after the cycle `cycle_max_mom`,
    ///   or `cycle_max_mom · (1 + decay_mom_rate · interval)` with decay. DeepSpeed also writes
    ///   β2 = 0.99 into every param group (`(mom, 0.99)` tuples); that is not reproduced: β2
    ///   stays the configured one.
    pub fn momentum_at(&self, step: u64, ctx: &LrContext) -> Option<f64> {
        match self {
            LrSchedule::CyclicLr {
                cycle_momentum: true,
                base_momentum,
                max_momentum,
                ..
            } => {
                let (scale_factor, scale) = self.cyclic_scales(step)?;
                let base_height = (max_momentum - base_momentum) * scale_factor;
                Some(max_momentum - base_height * scale)
            }
            LrSchedule::OneCycle {
                cycle_momentum: true,
                cycle_min_mom,
                cycle_max_mom,
                decay_mom_rate,
                decay_step_size,
                ..
            } => {
                if ctx.momentum != MomentumKind::AdamBeta1 {
                    // `'betas' not in optimizer.defaults`: cycle_momentum disabled.
                    return None;
                }
                let Some(lbi) = ds_last_batch_iteration(step) else {
                    return Some(*cycle_min_mom);
                };
                let shape = self.one_cycle_shape()?;
                let total_size = shape.total_size();
                if (lbi as f64) < total_size {
                    let base_height = (cycle_max_mom - cycle_min_mom) * shape.scale_factor(step);
                    Some(cycle_max_mom - base_height)
                } else if *decay_step_size == 0 || *decay_mom_rate == 0.0 {
                    Some(*cycle_max_mom)
                } else {
                    // _get_decay_mom(lbi - total_size + 1).
                    let decay_batch_iteration = step as f64 - total_size;
                    let interval = decay_batch_iteration / *decay_step_size as f64;
                    Some(cycle_max_mom * (1.0 + decay_mom_rate * interval))
                }
            }
            _ => None,
        }
    }

    /// `one_cycle`'s cycle shape.
    fn one_cycle_shape(&self) -> Option<OneCycleShape> {
        match self {
            LrSchedule::OneCycle {
                cycle_first_step_size,
                cycle_second_step_size,
                cycle_first_stair_count,
                cycle_second_stair_count,
                ..
            } => {
                let first = *cycle_first_step_size as f64;
                Some(OneCycleShape {
                    first,
                    second: cycle_second_step_size.map_or(first, |s| s as f64),
                    first_stairs: *cycle_first_stair_count,
                    second_stairs: cycle_second_stair_count.unwrap_or(*cycle_first_stair_count),
                })
            }
            _ => None,
        }
    }

    /// `cyclic_lr`'s `(scale_factor, scale_fn(cycle or iteration))` at `last_epoch = step`.
    fn cyclic_scales(&self, step: u64) -> Option<(f64, f64)> {
        let LrSchedule::CyclicLr {
            step_size_up,
            step_size_down,
            mode,
            gamma,
            scale_mode,
            ..
        } = self
        else {
            return None;
        };
        let up = *step_size_up as f64;
        let down = step_size_down.map_or(up, |s| s as f64);
        let total_size = up + down;
        let cycle = (1.0 + step as f64 / total_size).floor();
        let scale_factor = triangle_scale(step, total_size, up / total_size);
        let position = match scale_mode.unwrap_or(mode.default_scale_mode()) {
            CyclicScaleMode::Cycle => cycle,
            CyclicScaleMode::Iterations => step as f64,
        };
        let scale = match mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(position - 1.0),
            CyclicMode::ExpRange => gamma.powf(position),
        };
        Some((scale_factor, scale))
    }

    /// The lr for every step `0..ctx.total_steps`.
    pub fn curve(&self, ctx: &LrContext) -> Vec<f64> {
        (0..ctx.total_steps).map(|s| self.lr_at(s, ctx)).collect()
    }

    /// Checks what serde cannot: ranges, orderings, and fit with the run.
    pub fn validate(&self, ctx: &LrContext) -> Result<(), ScheduleError> {
        ctx.validate()?;
        match self {
            LrSchedule::Constant {} => Ok(()),
            // A warmup longer than the run is an error, as for the other warmup schedules
            // (DeepSpeed's WarmupLR has no run length to check it against): a short trial run
            // of a long preset shortens it too (`--set lr_schedule.warmup_num_steps=N`).
            LrSchedule::WarmupLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                ..
            } => {
                check_warmup_lrs(*warmup_min_lr, *warmup_max_lr, ctx)?;
                check_warmup_num_steps(*warmup_num_steps)?;
                check_le(
                    "warmup_num_steps",
                    *warmup_num_steps,
                    ctx.total_steps,
                    "the run's total steps",
                )
            }
            LrSchedule::WarmupDecayLr {
                total_num_steps,
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                ..
            } => {
                check_warmup_lrs(*warmup_min_lr, *warmup_max_lr, ctx)?;
                check_warmup_num_steps(*warmup_num_steps)?;
                let (total, what) = check_total_num_steps(*total_num_steps, ctx)?;
                check_le("warmup_num_steps", *warmup_num_steps, total, what)
            }
            LrSchedule::WarmupCosineLr {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                ..
            } => {
                check_unit("warmup_min_ratio", *warmup_min_ratio)?;
                check_unit("cos_min_ratio", *cos_min_ratio)?;
                check_warmup_num_steps(*warmup_num_steps)?;
                let (total, what) = check_total_num_steps(*total_num_steps, ctx)?;
                // The cosine phase runs from max(2, warmup_num_steps) to total. DeepSpeed holds
                // cos_min_ratio when it is empty; a cosine schedule without a cosine is refused.
                let effective = (*warmup_num_steps).max(2);
                if effective >= total {
                    return Err(ScheduleError::invalid(
                        field("warmup_num_steps"),
                        format!(
                            "< {what} ({total}) (DeepSpeed counts at least 2 warmup steps, and \
                             the cosine needs at least one step after them)"
                        ),
                        warmup_num_steps,
                    ));
                }
                Ok(())
            }
            LrSchedule::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                cycle_first_step_size,
                cycle_momentum,
                cycle_min_mom,
                cycle_max_mom,
                decay_mom_rate,
                ..
            } => {
                check_lr("cycle_min_lr", *cycle_min_lr)?;
                check_lr("cycle_max_lr", *cycle_max_lr)?;
                if cycle_max_lr < cycle_min_lr {
                    return Err(ScheduleError::invalid(
                        field("cycle_max_lr"),
                        format!("≥ cycle_min_lr ({cycle_min_lr})"),
                        cycle_max_lr,
                    ));
                }
                check_nonneg("decay_lr_rate", *decay_lr_rate)?;
                check_ge1("cycle_first_step_size", *cycle_first_step_size)?;
                if *cycle_momentum {
                    check_momentum("cycle_min_mom", *cycle_min_mom, ctx)?;
                    check_momentum("cycle_max_mom", *cycle_max_mom, ctx)?;
                    check_nonneg("decay_mom_rate", *decay_mom_rate)?;
                    // β1 grows in the decay phase: it must stay below 1 to the run's end.
                    let last = ctx.total_steps - 1;
                    if let Some(m) = self.momentum_at(last, ctx) {
                        if ctx.momentum == MomentumKind::AdamBeta1 && m >= 1.0 {
                            return Err(ScheduleError::invalid(
                                field("decay_mom_rate"),
                                format!(
                                    "small enough that β1 stays below 1 (it reaches {m} at \
                                     step {last})"
                                ),
                                decay_mom_rate,
                            ));
                        }
                    }
                }
                Ok(())
            }
            LrSchedule::CyclicLr {
                base_lr,
                max_lr,
                step_size_up,
                gamma,
                cycle_momentum,
                base_momentum,
                max_momentum,
                ..
            } => {
                let base = base_lr.unwrap_or(ctx.base_lr);
                if let Some(b) = base_lr {
                    check_lr("base_lr", *b)?;
                }
                check_lr("max_lr", *max_lr)?;
                if *max_lr < base {
                    let source = if base_lr.is_some() {
                        "base_lr"
                    } else {
                        "the optimizer's lr"
                    };
                    return Err(ScheduleError::invalid(
                        field("max_lr"),
                        format!("≥ {source} ({base})"),
                        max_lr,
                    ));
                }
                check_ge1("step_size_up", *step_size_up)?;
                check_positive("gamma", *gamma)?;
                if *cycle_momentum {
                    check_momentum("base_momentum", *base_momentum, ctx)?;
                    check_momentum("max_momentum", *max_momentum, ctx)?;
                }
                Ok(())
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                check_increasing("milestones", milestones)?;
                check_positive("gamma", *gamma)
            }
            LrSchedule::CosineAnnealing { t_max, eta_min } => {
                if let Some(t) = t_max {
                    check_ge1("t_max", *t)?;
                }
                check_lr("eta_min", *eta_min)?;
                if *eta_min > ctx.base_lr {
                    return Err(ScheduleError::invalid(
                        field("eta_min"),
                        format!("≤ the optimizer's lr ({})", ctx.base_lr),
                        eta_min,
                    ));
                }
                Ok(())
            }
            LrSchedule::Goyal {
                reference_batch,
                warmup_epochs,
                milestones,
                gamma,
            } => {
                check_ge1("reference_batch", *reference_batch)?;
                check_nonneg("warmup_epochs", *warmup_epochs)?;
                check_increasing("milestones", milestones)?;
                check_positive("gamma", *gamma)?;
                if let Some(&first) = milestones.first() {
                    if (first as f64) < *warmup_epochs {
                        return Err(ScheduleError::invalid(
                            field("milestones"),
                            format!("at or after the warmup's end (epoch {warmup_epochs})"),
                            format!("{milestones:?}"),
                        ));
                    }
                }
                let warmup = goyal_warmup_steps(*warmup_epochs, ctx.steps_per_epoch);
                if warmup > ctx.total_steps {
                    return Err(ScheduleError::invalid(
                        field("warmup_epochs"),
                        format!(
                            "at most the run's length ({} steps of {} per epoch)",
                            ctx.total_steps, ctx.steps_per_epoch
                        ),
                        format!("{warmup_epochs} ({warmup} steps)"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// `CyclicLR.get_lr`'s (and `OneCycle._get_scale_factor`'s continuous) position within a triangle of
/// `total_size` steps whose rising part is `step_ratio` of it, in [0, 1].
fn triangle_scale(iteration: u64, total_size: f64, step_ratio: f64) -> f64 {
    let cycle = (1.0 + iteration as f64 / total_size).floor();
    let x = 1.0 + iteration as f64 / total_size - cycle;
    if x <= step_ratio {
        x / step_ratio
    } else {
        (x - 1.0) / (step_ratio - 1.0)
    }
}

/// `OneCycle`'s cycle: the two halves' lengths and stair counts.
struct OneCycleShape {
    first: f64,
    second: f64,
    first_stairs: u64,
    second_stairs: u64,
}

impl OneCycleShape {
    fn total_size(&self) -> f64 {
        self.first + self.second
    }

    /// `OneCycle._get_scale_factor` at `batch_iteration`, stairs included (DeepSpeed 0.19.8):
    /// the half is chosen by `x <= step_ratio`, and a stair count `n > 0` of that half replaces
    /// the continuous factor by `floor(position) / n`, the position counted from the integer
    /// offset within the cycle (`batch_iteration % total_size`).
    fn scale_factor(&self, batch_iteration: u64) -> f64 {
        let total_size = self.total_size();
        let step_ratio = self.first / total_size;
        let cycle = (1.0 + batch_iteration as f64 / total_size).floor();
        let x = 1.0 + batch_iteration as f64 / total_size - cycle;
        let (scale_factor, stairs) = if x <= step_ratio {
            (x / step_ratio, self.first_stairs)
        } else {
            ((x - 1.0) / (step_ratio - 1.0), self.second_stairs)
        };
        if stairs == 0 {
            return scale_factor;
        }
        let stairs = stairs as f64;
        let cycle_iteration = batch_iteration as f64 % total_size;
        let position = if cycle_iteration <= self.first {
            cycle_iteration * stairs / self.first
        } else {
            (total_size - cycle_iteration) * stairs / self.second
        };
        position.floor() / stairs
    }
}

/// Steps of Goyal warmup: `warmup_epochs × steps_per_epoch`, rounded to a whole step.
fn goyal_warmup_steps(warmup_epochs: f64, steps_per_epoch: u64) -> u64 {
    (warmup_epochs * steps_per_epoch as f64).round().max(0.0) as u64
}

fn field(name: &str) -> String {
    format!("lr_schedule.{name}")
}

fn check_lr(name: &str, v: f64) -> Result<(), ScheduleError> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ScheduleError::invalid(
            field(name),
            "a non-negative finite learning rate",
            v,
        ))
    }
}

fn check_nonneg(name: &str, v: f64) -> Result<(), ScheduleError> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ScheduleError::invalid(field(name), "finite and ≥ 0", v))
    }
}

fn check_positive(name: &str, v: f64) -> Result<(), ScheduleError> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ScheduleError::invalid(field(name), "finite and > 0", v))
    }
}

fn check_unit(name: &str, v: f64) -> Result<(), ScheduleError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ScheduleError::invalid(field(name), "in [0, 1]", v))
    }
}

/// DeepSpeed's `WarmupLR`/`WarmupCosineLR` (and so `WarmupDecayLR`) raise
/// `warmup_num_steps must be a positive integer` for 0; 1 still counts as 2.
fn check_warmup_num_steps(v: u64) -> Result<(), ScheduleError> {
    if v >= 1 {
        Ok(())
    } else {
        Err(ScheduleError::invalid(
            field("warmup_num_steps"),
            "≥ 1 (DeepSpeed raises for 0)",
            v,
        ))
    }
}

/// A momentum a schedule sets: finite and ≥ 0, and below 1 for Adam/AdamW's β1.
fn check_momentum(name: &str, v: f64, ctx: &LrContext) -> Result<(), ScheduleError> {
    match ctx.momentum {
        MomentumKind::SgdMomentum => check_nonneg(name, v),
        MomentumKind::AdamBeta1 if (0.0..1.0).contains(&v) => Ok(()),
        MomentumKind::AdamBeta1 => Err(ScheduleError::invalid(
            field(name),
            "in [0, 1) (it is Adam's β1)",
            v,
        )),
    }
}

fn check_ge1(name: &str, v: u64) -> Result<(), ScheduleError> {
    if v >= 1 {
        Ok(())
    } else {
        Err(ScheduleError::invalid(field(name), "≥ 1", v))
    }
}

fn check_le(name: &str, v: u64, limit: u64, what: &str) -> Result<(), ScheduleError> {
    if v <= limit {
        Ok(())
    } else {
        Err(ScheduleError::invalid(
            field(name),
            format!("≤ {what} ({limit})"),
            v,
        ))
    }
}

fn check_increasing(name: &str, v: &[u64]) -> Result<(), ScheduleError> {
    if v.windows(2).all(|w| w[0] < w[1]) {
        Ok(())
    } else {
        Err(ScheduleError::invalid(
            field(name),
            "strictly increasing epochs",
            format!("{v:?}"),
        ))
    }
}

fn check_warmup_lrs(min: f64, max: Option<f64>, ctx: &LrContext) -> Result<(), ScheduleError> {
    check_lr("warmup_min_lr", min)?;
    let (max, source) = match max {
        Some(m) => {
            check_lr("warmup_max_lr", m)?;
            (m, "")
        }
        None => (ctx.base_lr, " (the optimizer's lr)"),
    };
    if max < min {
        return Err(ScheduleError::invalid(
            field("warmup_max_lr"),
            format!("≥ warmup_min_lr ({min})"),
            format!("{max}{source}"),
        ));
    }
    Ok(())
}

/// `total_num_steps` resolved against the run, and how to name it in a message.
fn check_total_num_steps(
    total_num_steps: Option<u64>,
    ctx: &LrContext,
) -> Result<(u64, &'static str), ScheduleError> {
    match total_num_steps {
        Some(t) => {
            check_ge1("total_num_steps", t)?;
            Ok((t, "total_num_steps"))
        }
        None => Ok((ctx.total_steps, "the run's total steps")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(base_lr: f64, total_steps: u64) -> LrContext {
        LrContext {
            base_lr,
            total_steps,
            steps_per_epoch: 10,
            global_batch: 256,
            momentum: MomentumKind::SgdMomentum,
        }
    }

    #[track_caller]
    fn close(got: f64, want: f64) {
        let tol = 1e-12 * want.abs().max(1e-300);
        assert!((got - want).abs() <= tol, "got {got}, want {want}");
    }

    fn parse(text: &str) -> Result<LrSchedule, toml::de::Error> {
        #[derive(Deserialize)]
        struct Wrapper {
            lr_schedule: LrSchedule,
        }
        toml::from_str::<Wrapper>(text).map(|w| w.lr_schedule)
    }

    fn warmup_lr(min: f64, max: Option<f64>, steps: u64, kind: WarmupType) -> LrSchedule {
        LrSchedule::WarmupLr {
            warmup_min_lr: min,
            warmup_max_lr: max,
            warmup_num_steps: steps,
            warmup_type: kind,
        }
    }

    #[test]
    fn constant_is_base_lr_and_default() {
        let c = ctx(0.1, 5);
        assert_eq!(LrSchedule::default(), LrSchedule::Constant {});
        assert_eq!(LrSchedule::Constant {}.curve(&c), vec![0.1; 5]);
        assert_eq!(LrSchedule::Constant {}.name(), "constant");
    }

    #[test]
    fn warmup_lr_log_follows_deepspeed_step_order() {
        // W = 10, min 0.01, max 0.11 (delta 0.1). Optimizer step s uses lbi = s - 1.
        let s = warmup_lr(0.01, Some(0.11), 10, WarmupType::Log);
        let c = ctx(1.0, 100);
        // s = 0: constructor value (lbi = -1) = warmup_min_lr.
        close(s.lr_at(0, &c), 0.01);
        // s = 1: lbi 0, gamma = ln(1)/ln(10) = 0.
        close(s.lr_at(1, &c), 0.01);
        // s = 2: lbi 1, gamma = ln 2 / ln 10 = 0.30103 → 0.01 + 0.1·0.30103 = 0.040103.
        close(
            s.lr_at(2, &c),
            0.01 + 0.1 * ((1.0 / 10f64.ln()) * 2f64.ln()),
        );
        assert!((s.lr_at(2, &c) - 0.040103).abs() < 1e-6);
        // s = 10: lbi 9, gamma = ln 10 / ln 10 = 1 → the max, one step before warmup ends.
        close(s.lr_at(10, &c), 0.11);
        // s = 11: lbi 10 ≥ W: gamma = 1.
        close(s.lr_at(11, &c), 0.11);
        close(s.lr_at(99, &c), 0.11);
    }

    #[test]
    fn warmup_lr_linear_and_defaults() {
        // Linear, W = 4, max None = base_lr 0.2, min 0.
        let s = warmup_lr(0.0, None, 4, WarmupType::Linear);
        let c = ctx(0.2, 50);
        let want = [0.0, 0.0, 0.2 * 0.25, 0.2 * 0.5, 0.2 * 0.75, 0.2, 0.2];
        for (step, w) in want.iter().enumerate() {
            close(s.lr_at(step as u64, &c), *w);
        }
    }

    #[test]
    fn deepspeed_warmup_num_steps_one_counts_as_two() {
        // DeepSpeed: warmup_num_steps = max(2, 1) = 2, so log gamma at lbi 1 = ln 2/ln 2 = 1
        // and linear gamma at lbi 1 = 1/2.
        let c = ctx(1.0, 10);
        let log = warmup_lr(0.0, None, 1, WarmupType::Log);
        assert!(log.validate(&c).is_ok());
        close(log.lr_at(1, &c), 0.0);
        close(log.lr_at(2, &c), 1.0);
        let lin = warmup_lr(0.0, None, 1, WarmupType::Linear);
        close(lin.lr_at(2, &c), 0.5);
        close(lin.lr_at(3, &c), 1.0);
    }

    /// DeepSpeed 0.19.8 `WarmupLR.__init__` and `WarmupCosineLR.__init__` (and so
    /// `WarmupDecayLR`, through `WarmupLR`) raise `ValueError: warmup_num_steps must be a
    /// positive integer, got 0` (tests/reference/lr_schedules.py).
    #[test]
    fn deepspeed_warmup_num_steps_zero_raises() {
        let c = ctx(0.1, 100);
        let want = "lr_schedule.warmup_num_steps: must be ≥ 1 (DeepSpeed raises for 0), got 0";
        invalid(&warmup_lr(0.0, None, 0, WarmupType::Linear), &c, want);
        let decay = LrSchedule::WarmupDecayLr {
            total_num_steps: None,
            warmup_min_lr: 0.0,
            warmup_max_lr: None,
            warmup_num_steps: 0,
            warmup_type: WarmupType::Log,
        };
        invalid(&decay, &c, want);
        let cosine = LrSchedule::WarmupCosineLr {
            total_num_steps: None,
            warmup_min_ratio: 0.0,
            warmup_num_steps: 0,
            cos_min_ratio: 0.0001,
            warmup_type: WarmupType::Log,
        };
        invalid(&cosine, &c, want);
    }

    /// A warmup longer than the run is an error for warmup_lr as for the decay/cosine ones.
    #[test]
    fn warmup_lr_longer_than_the_run_is_an_error() {
        let c = ctx(0.1, 500);
        invalid(
            &warmup_lr(0.0, None, 1000, WarmupType::Log),
            &c,
            "lr_schedule.warmup_num_steps: must be ≤ the run's total steps (500), got 1000",
        );
        assert!(warmup_lr(0.0, None, 500, WarmupType::Log)
            .validate(&c)
            .is_ok());
    }

    #[test]
    fn warmup_decay_lr_decays_linearly_to_zero() {
        // W = 10 (linear), total 30, max = base 1.0.
        let s = LrSchedule::WarmupDecayLr {
            total_num_steps: None,
            warmup_min_lr: 0.0,
            warmup_max_lr: None,
            warmup_num_steps: 10,
            warmup_type: WarmupType::Linear,
        };
        let c = ctx(1.0, 30);
        close(s.lr_at(0, &c), 0.0);
        // s = 10: lbi 9 → 9/10.
        close(s.lr_at(10, &c), 0.9);
        // s = 11: lbi 10 → (30 - 10)/(30 - 10) = 1.
        close(s.lr_at(11, &c), 1.0);
        // s = 21: lbi 20 → (30 - 20)/20 = 0.5.
        close(s.lr_at(21, &c), 0.5);
        // last step s = 29: lbi 28 → 2/20 = 0.1.
        close(s.lr_at(29, &c), 0.1);
        // lbi 30 → 0, later clamped at 0.
        close(s.lr_at(31, &c), 0.0);
        assert_eq!(s.lr_at(40, &c), 0.0);
    }

    #[test]
    fn warmup_cosine_lr_matches_deepspeed() {
        // base 0.5, W = 10 (log), total 110, warmup_min_ratio 0.1, cos_min_ratio 0.01.
        let s = LrSchedule::WarmupCosineLr {
            total_num_steps: Some(110),
            warmup_min_ratio: 0.1,
            warmup_num_steps: 10,
            cos_min_ratio: 0.01,
            warmup_type: WarmupType::Log,
        };
        let c = ctx(0.5, 200);
        // s = 0: DeepSpeed's get_lr returns [0.0] before the first scheduler step.
        assert_eq!(s.lr_at(0, &c), 0.0);
        // s = 1: lbi 0, ratio = 0.1 + 0·0.9 = 0.1 → 0.05.
        close(s.lr_at(1, &c), 0.05);
        // s = 5: lbi 4, ratio = 0.1 + (ln 5/ln 10)·0.9 = 0.1 + 0.69897·0.9 = 0.729073.
        close(
            s.lr_at(5, &c),
            0.5 * (0.1 + (1.0 / 10f64.ln()) * 5f64.ln() * 0.9),
        );
        assert!((s.lr_at(5, &c) - 0.5 * 0.729073).abs() < 1e-6);
        // s = 11: lbi 10, real_last 1 of 100: (1 + cos(π/100))/2 = 0.999383 →
        // 0.01 + 0.99·0.999383.
        let r = (1.0 + (PI / 100.0).cos()) / 2.0;
        close(s.lr_at(11, &c), 0.5 * (0.01 + 0.99 * r));
        // s = 60: lbi 59, real_last 50 of 100: cos(π/2) ≈ 0 → 0.01 + 0.99·0.5 = 0.505.
        assert!((s.lr_at(60, &c) - 0.5 * 0.505).abs() < 1e-12);
        // s = 110: lbi 109, real_last 100 of 100: cos π = -1 → cos_min_ratio.
        close(s.lr_at(110, &c), 0.5 * 0.01);
    }

    /// DeepSpeed 0.19.8 `WarmupCosineLR.get_lr_ratio` clamps the cosine progress
    /// (`min(1.0, real_last_step / real_total_steps)`): past `total_num_steps` the lr holds
    /// `cos_min_ratio · lr` instead of climbing back to the peak. Values from
    /// tests/reference/lr_schedules.py (base 0.5, W = 10 log, total 110, ratios 0.1 and 0.01, a
    /// run of 200 steps).
    #[test]
    fn deepspeed_warmup_cosine_lr_holds_cos_min_ratio_past_total_num_steps() {
        let s = LrSchedule::WarmupCosineLr {
            total_num_steps: Some(110),
            warmup_min_ratio: 0.1,
            warmup_num_steps: 10,
            cos_min_ratio: 0.01,
            warmup_type: WarmupType::Log,
        };
        let c = ctx(0.5, 200);
        assert!(s.validate(&c).is_ok());
        for (step, want) in [
            (0, 0.0),
            (1, 0.05),
            (5, 0.3645365019512084),
            (11, 0.49987787369051856),
            (60, 0.2525),
            (109, 0.0051221263094814295),
            (110, 0.005),
            (111, 0.005),
            (150, 0.005),
            (199, 0.005),
        ] {
            assert_eq!(s.lr_at(step, &c), want, "step {step}");
        }
    }

    #[test]
    fn one_cycle_matches_deepspeed() {
        // min 0.1, max 1.0, up 4, down 6 (total 10, step_ratio 0.4), decay every 5 steps at 0.5.
        let s = LrSchedule::OneCycle {
            cycle_min_lr: 0.1,
            cycle_max_lr: 1.0,
            decay_lr_rate: 0.5,
            cycle_first_step_size: 4,
            cycle_second_step_size: Some(6),
            cycle_first_stair_count: 0,
            cycle_second_stair_count: None,
            decay_step_size: 5,
            cycle_momentum: true,
            cycle_min_mom: 0.8,
            cycle_max_mom: 0.9,
            decay_mom_rate: 0.0,
        };
        let c = ctx(1.0, 100);
        // s = 0: constructor sets cycle_min_lr; the formula at batch_iteration 0 agrees.
        close(s.lr_at(0, &c), 0.1);
        // s = 2: x = 0.2 ≤ 0.4 → scale 0.5 → 0.1 + 0.9·0.5 = 0.55.
        close(s.lr_at(2, &c), 0.55);
        // s = 4: x = 0.4 → scale 1 → the max.
        close(s.lr_at(4, &c), 1.0);
        // s = 7: x = 0.7 → (0.7 - 1)/(0.4 - 1) = 0.5 → 0.55.
        close(s.lr_at(7, &c), 0.1 + 0.9 * ((0.7 - 1.0) / (0.4 - 1.0)));
        // s = 10: lbi 9 < 10 still cycles; x = 0 → min.
        close(s.lr_at(10, &c), 0.1);
        // s = 20: decay iteration 20 - 10 = 10, interval 2 → 0.1/(1 + 0.5·2) = 0.05.
        close(s.lr_at(20, &c), 0.05);
        // Without decay the lr stays at the min.
        let flat = LrSchedule::OneCycle {
            cycle_min_lr: 0.1,
            cycle_max_lr: 1.0,
            decay_lr_rate: 0.0,
            cycle_first_step_size: 4,
            cycle_second_step_size: None,
            cycle_first_stair_count: 0,
            cycle_second_stair_count: None,
            decay_step_size: 5,
            cycle_momentum: true,
            cycle_min_mom: 0.8,
            cycle_max_mom: 0.9,
            decay_mom_rate: 0.0,
        };
        // second = first = 4: s = 6 → x = 0.75, (0.75 - 1)/(0.5 - 1) = 0.5.
        close(flat.lr_at(6, &c), 0.55);
        close(flat.lr_at(50, &c), 0.1);
    }

    fn one_cycle(first: u64, second: Option<u64>, stairs: (u64, Option<u64>)) -> LrSchedule {
        LrSchedule::OneCycle {
            cycle_min_lr: 0.1,
            cycle_max_lr: 1.0,
            decay_lr_rate: 0.0,
            cycle_first_step_size: first,
            cycle_second_step_size: second,
            cycle_first_stair_count: stairs.0,
            cycle_second_stair_count: stairs.1,
            decay_step_size: 0,
            cycle_momentum: true,
            cycle_min_mom: 0.8,
            cycle_max_mom: 0.9,
            decay_mom_rate: 0.0,
        }
    }

    fn with_momentum(c: LrContext, momentum: MomentumKind) -> LrContext {
        LrContext { momentum, ..c }
    }

    /// DeepSpeed 0.19.8 `OneCycle` with stair counts 2 (rising) and 3 (falling), lr decay 0.5
    /// and momentum decay 0.1 every 5 steps, on Adam: lr and β1 of every step, from
    /// tests/reference/lr_schedules.py. On SGD DeepSpeed disables momentum cycling (no
    /// `betas`): the lr is the same, the momentum untouched.
    #[test]
    fn deepspeed_one_cycle_stairs_and_momentum() {
        let s = LrSchedule::OneCycle {
            cycle_min_lr: 0.1,
            cycle_max_lr: 1.0,
            decay_lr_rate: 0.5,
            cycle_first_step_size: 4,
            cycle_second_step_size: Some(6),
            cycle_first_stair_count: 2,
            cycle_second_stair_count: Some(3),
            decay_step_size: 5,
            cycle_momentum: true,
            cycle_min_mom: 0.8,
            cycle_max_mom: 0.9,
            decay_mom_rate: 0.1,
        };
        let adam = with_momentum(ctx(1.0, 30), MomentumKind::AdamBeta1);
        let want: [(f64, f64); 12] = [
            (0.1, 0.8),
            (0.1, 0.9),
            (0.55, 0.8500000000000001),
            (0.55, 0.8500000000000001),
            (1.0, 0.8),
            (0.7, 0.8333333333333334),
            (0.7, 0.8333333333333334),
            (0.4, 0.8666666666666667),
            (0.4, 0.8666666666666667),
            (0.1, 0.9),
            (0.1, 0.9),
            (0.09090909090909091, 0.918),
        ];
        for (step, (lr, mom)) in want.iter().enumerate() {
            let step = step as u64;
            assert_eq!(s.lr_at(step, &adam), *lr, "lr at {step}");
            assert_eq!(s.momentum_at(step, &adam), Some(*mom), "β1 at {step}");
        }
        assert_eq!(s.lr_at(15, &adam), 0.06666666666666667);
        assert_eq!(s.momentum_at(15, &adam), Some(0.9900000000000001));
        assert_eq!(s.lr_at(29, &adam), 0.034482758620689655);
        assert_eq!(s.momentum_at(29, &adam), Some(1.242));
        // β1 passes 1 at step 16: a run that long is refused on Adam, fine up to 16 steps.
        invalid(
            &s,
            &adam,
            "lr_schedule.decay_mom_rate: must be small enough that β1 stays below 1",
        );
        assert!(s
            .validate(&with_momentum(ctx(1.0, 16), MomentumKind::AdamBeta1))
            .is_ok());
        let sgd = ctx(1.0, 30);
        assert!(s.validate(&sgd).is_ok());
        for step in 0..30 {
            assert_eq!(s.lr_at(step, &sgd), s.lr_at(step, &adam));
            assert_eq!(s.momentum_at(step, &sgd), None);
        }
    }

    /// DeepSpeed 0.19.8 `OneCycle` with the default stair counts (0: continuous), an asymmetric
    /// 3/7 cycle, no lr or momentum decay (the rates are 0), on Adam.
    #[test]
    fn deepspeed_one_cycle_continuous_asymmetric() {
        let mut s = one_cycle(3, Some(7), (0, None));
        if let LrSchedule::OneCycle {
            cycle_min_lr,
            cycle_max_lr,
            decay_step_size,
            ..
        } = &mut s
        {
            (*cycle_min_lr, *cycle_max_lr, *decay_step_size) = (0.01, 0.1, 2);
        }
        let c = with_momentum(ctx(1.0, 14), MomentumKind::AdamBeta1);
        let want = [
            (0.01, 0.8),
            (0.04000000000000003, 0.8666666666666667),
            (0.06999999999999999, 0.8333333333333334),
            (0.1, 0.8),
            (0.08714285714285716, 0.8142857142857143),
            (0.07428571428571429, 0.8285714285714286),
            (0.06142857142857142, 0.8428571428571429),
            (0.048571428571428585, 0.8571428571428572),
            (0.03571428571428571, 0.8714285714285714),
            (0.02285714285714287, 0.8857142857142857),
            (0.01, 0.9),
            (0.01, 0.9),
            (0.01, 0.9),
            (0.01, 0.9),
        ];
        for (step, (lr, mom)) in want.iter().enumerate() {
            let step = step as u64;
            assert_eq!(s.lr_at(step, &c), *lr, "lr at {step}");
            assert_eq!(s.momentum_at(step, &c), Some(*mom), "β1 at {step}");
        }
    }

    /// DeepSpeed 0.19.8 `OneCycle`: `cycle_second_stair_count` None takes the first's; 2 stairs
    /// over a 5/5 cycle from 0 to 1.
    #[test]
    fn deepspeed_one_cycle_second_stair_count_defaults_to_first() {
        let mut s = one_cycle(5, None, (2, None));
        if let LrSchedule::OneCycle { cycle_min_lr, .. } = &mut s {
            *cycle_min_lr = 0.0;
        }
        let c = with_momentum(ctx(1.0, 11), MomentumKind::AdamBeta1);
        let lr = [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0];
        let half = 0.8500000000000001;
        let mom = [0.8, 0.9, 0.9, half, half, 0.8, half, half, 0.9, 0.9, 0.9];
        for step in 0..11 {
            assert_eq!(s.lr_at(step, &c), lr[step as usize], "lr at {step}");
            assert_eq!(
                s.momentum_at(step, &c),
                Some(mom[step as usize]),
                "β1 at {step}"
            );
        }
        // cycle_momentum = false: the optimizer keeps its β1.
        if let LrSchedule::OneCycle { cycle_momentum, .. } = &mut s {
            *cycle_momentum = false;
        }
        assert!((0..11).all(|t| s.momentum_at(t, &c).is_none()));
    }

    fn cyclic(mode: CyclicMode, gamma: f64) -> LrSchedule {
        cyclic_momentum(mode, gamma, true, 0.8, 0.9)
    }

    fn cyclic_momentum(
        mode: CyclicMode,
        gamma: f64,
        cycle_momentum: bool,
        base_momentum: f64,
        max_momentum: f64,
    ) -> LrSchedule {
        LrSchedule::CyclicLr {
            base_lr: Some(0.1),
            max_lr: 0.5,
            step_size_up: 2,
            step_size_down: Some(3),
            mode,
            gamma,
            scale_mode: None,
            cycle_momentum,
            base_momentum,
            max_momentum,
        }
    }

    /// PyTorch `torch.optim.lr_scheduler.CyclicLR` (torch 2.11) with its default
    /// `cycle_momentum=True, base_momentum=0.8, max_momentum=0.9` on SGD: lr and momentum of
    /// every step of two cycles in each mode, from tests/reference/lr_schedules.py.
    #[test]
    fn pytorch_cyclic_lr_cycles_momentum() {
        let c = ctx(0.1, 100);
        let tri: [(f64, f64); 12] = [
            (0.1, 0.9),
            (0.29999999999999993, 0.8500000000000001),
            (0.4999999999999999, 0.8),
            (0.3666666666666666, 0.8333333333333334),
            (0.2333333333333333, 0.8666666666666667),
            (0.1, 0.9),
            (0.30000000000000016, 0.85),
            (0.4999999999999999, 0.8),
            (0.3666666666666666, 0.8333333333333334),
            (0.23333333333333348, 0.8666666666666667),
            (0.1, 0.9),
            (0.30000000000000016, 0.85),
        ];
        let tri2: [(f64, f64); 12] = [
            (0.1, 0.9),
            (0.29999999999999993, 0.8500000000000001),
            (0.4999999999999999, 0.8),
            (0.3666666666666666, 0.8333333333333334),
            (0.2333333333333333, 0.8666666666666667),
            (0.1, 0.9),
            (0.2000000000000001, 0.875),
            (0.29999999999999993, 0.8500000000000001),
            (0.2333333333333333, 0.8666666666666667),
            (0.16666666666666674, 0.8833333333333333),
            (0.1, 0.9),
            (0.15000000000000005, 0.8875000000000001),
        ];
        let exp: [(f64, f64); 12] = [
            (0.1, 0.9),
            (0.27999999999999997, 0.8550000000000001),
            (0.42399999999999993, 0.8190000000000001),
            (0.2944, 0.8514),
            (0.18747999999999998, 0.8781300000000001),
            (0.1, 0.9),
            (0.20628820000000012, 0.87342795),
            (0.29131876, 0.85217031),
            (0.21479125599999999, 0.871302186),
            (0.15165606520000008, 0.8870859837),
            (0.1, 0.9),
            (0.16276211921800007, 0.8843094701955),
        ];
        for (s, want) in [
            (cyclic(CyclicMode::Triangular, 1.0), tri),
            (cyclic(CyclicMode::Triangular2, 1.0), tri2),
            (cyclic(CyclicMode::ExpRange, 0.9), exp),
        ] {
            for (step, (lr, mom)) in want.iter().enumerate() {
                let step = step as u64;
                assert_eq!(s.lr_at(step, &c), *lr, "{s:?} lr at {step}");
                assert_eq!(
                    s.momentum_at(step, &c),
                    Some(*mom),
                    "{s:?} momentum at {step}"
                );
            }
        }
    }

    /// PyTorch `CyclicLR` on Adam sets β1 (β2 untouched); on SGD configured without momentum it
    /// still cycles the momentum (SGD's `defaults` have `momentum`, so it does not raise).
    #[test]
    fn pytorch_cyclic_lr_sets_adam_beta1() {
        let tri = CyclicMode::Triangular;
        let s = cyclic_momentum(tri, 1.0, true, 0.85, 0.95);
        let c = with_momentum(ctx(0.1, 100), MomentumKind::AdamBeta1);
        assert!(s.validate(&c).is_ok());
        let want = [
            0.95,
            0.9,
            0.85,
            0.8833333333333333,
            0.9166666666666666,
            0.95,
        ];
        for (step, mom) in want.iter().enumerate() {
            assert_eq!(s.momentum_at(step as u64, &c), Some(*mom));
        }
        // β1 must stay below 1 (Adam's range); SGD's momentum may be anything ≥ 0.
        let high = cyclic_momentum(tri, 1.0, true, 0.85, 1.0);
        invalid(
            &high,
            &c,
            "lr_schedule.max_momentum: must be in [0, 1) (it is Adam's β1), got 1",
        );
        assert!(high.validate(&ctx(0.1, 100)).is_ok());
        invalid(
            &cyclic_momentum(tri, 1.0, true, -0.1, 0.95),
            &ctx(0.1, 100),
            "lr_schedule.base_momentum: must be finite and ≥ 0, got -0.1",
        );
        let off = cyclic_momentum(tri, 1.0, false, 0.85, 0.95);
        assert!((0..10).all(|t| off.momentum_at(t, &c).is_none()));
    }

    #[test]
    fn only_cycling_schedules_set_momentum() {
        let c = ctx(0.1, 100);
        for s in [
            LrSchedule::Constant {},
            warmup_lr(0.0, None, 10, WarmupType::Linear),
            LrSchedule::CosineAnnealing {
                t_max: None,
                eta_min: 0.0,
            },
        ] {
            assert!((0..100).all(|t| s.momentum_at(t, &c).is_none()), "{s:?}");
        }
    }

    #[test]
    fn cyclic_lr_modes_match_pytorch() {
        // base 0.1, max 0.5, up 2, down 3 (total 5, ratio 0.4).
        let mk = |mode, gamma| LrSchedule::CyclicLr {
            base_lr: Some(0.1),
            max_lr: 0.5,
            step_size_up: 2,
            step_size_down: Some(3),
            mode,
            gamma,
            scale_mode: None,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        };
        let c = ctx(9.0, 100);
        let tri = mk(CyclicMode::Triangular, 1.0);
        close(tri.lr_at(0, &c), 0.1);
        // t = 1: x = 0.2 → 0.2/0.4 = 0.5 → 0.1 + 0.4·0.5 = 0.3.
        close(tri.lr_at(1, &c), 0.3);
        close(tri.lr_at(2, &c), 0.5);
        // t = 4: x = 0.8 → (0.8 - 1)/(0.4 - 1) = 1/3 → 0.1 + 0.4/3.
        close(tri.lr_at(4, &c), 0.1 + 0.4 * ((0.8 - 1.0) / (0.4 - 1.0)));
        close(tri.lr_at(7, &c), 0.5);
        // triangular2, cycle 2 (t = 7: cycle = floor(1 + 7/5) = 2): amplitude / 2 → 0.3.
        close(mk(CyclicMode::Triangular2, 1.0).lr_at(7, &c), 0.3);
        // exp_range, iterations mode: t = 7 → 0.1 + 0.4·1·0.9^7.
        close(
            mk(CyclicMode::ExpRange, 0.9).lr_at(7, &c),
            0.1 + 0.4 * 1.0 * 0.9f64.powf(7.0),
        );
        // base_lr None: the optimizer's lr; step_size_down None: = up.
        let s = LrSchedule::CyclicLr {
            base_lr: None,
            max_lr: 1.0,
            step_size_up: 4,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
            scale_mode: None,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        };
        let c = ctx(0.2, 100);
        close(s.lr_at(0, &c), 0.2);
        close(s.lr_at(4, &c), 1.0);
        close(s.lr_at(6, &c), 0.2 + 0.8 * 0.5);
        close(s.lr_at(8, &c), 0.2);
    }

    #[test]
    fn multi_step_steps_per_epoch() {
        // 10 steps per epoch, milestones at epochs 2 and 4.
        let s = LrSchedule::MultiStep {
            milestones: vec![2, 4],
            gamma: 0.1,
        };
        let c = ctx(1.0, 100);
        close(s.lr_at(0, &c), 1.0);
        close(s.lr_at(19, &c), 1.0);
        close(s.lr_at(20, &c), 0.1);
        close(s.lr_at(39, &c), 0.1);
        close(s.lr_at(40, &c), 0.1f64.powf(2.0));
        close(s.lr_at(99, &c), 0.1f64.powf(2.0));
    }

    #[test]
    fn cosine_annealing_closed_form() {
        let s = LrSchedule::CosineAnnealing {
            t_max: None,
            eta_min: 0.1,
        };
        let c = ctx(1.0, 100);
        close(s.lr_at(0, &c), 1.0);
        // t = 50 of 100: (1 + cos(π/2))/2 = 0.5 → 0.1 + 0.9·0.5.
        assert!((s.lr_at(50, &c) - 0.55).abs() < 1e-15);
        // t = 25: (1 + cos(π/4))/2 = 0.853553 → 0.868198.
        close(s.lr_at(25, &c), 0.1 + 0.9 * (1.0 + (PI / 4.0).cos()) / 2.0);
        assert!((s.lr_at(25, &c) - 0.868198).abs() < 1e-6);
        // Last step 99: (1 + cos(0.99π))/2 = 0.000247 → barely above eta_min.
        assert!((s.lr_at(99, &c) - (0.1 + 0.9 * 0.000_246_7)).abs() < 1e-6);
        let short = LrSchedule::CosineAnnealing {
            t_max: Some(10),
            eta_min: 0.0,
        };
        close(
            short.lr_at(10, &c),
            0.0 + (1.0 - 0.0) * (1.0 + (-1.0)) / 2.0,
        );
    }

    #[test]
    fn goyal_warms_up_per_step_then_decays() {
        // base 0.1 at 256; global batch 1024 → k = 4, target 0.4.
        // 10 steps/epoch, warmup 2 epochs = 20 steps, milestones at epochs 3 and 5.
        let s = LrSchedule::Goyal {
            reference_batch: 256,
            warmup_epochs: 2.0,
            milestones: vec![3, 5],
            gamma: 0.1,
        };
        let c = LrContext {
            base_lr: 0.1,
            total_steps: 80,
            steps_per_epoch: 10,
            global_batch: 1024,
            momentum: MomentumKind::SgdMomentum,
        };
        close(s.lr_at(0, &c), 0.1);
        // s = 5: 0.1 + (0.4 - 0.1)·5/20 = 0.175.
        close(s.lr_at(5, &c), 0.175);
        close(s.lr_at(19, &c), 0.1 + 0.3 * 19.0 / 20.0);
        // End of warmup: the scaled lr.
        close(s.lr_at(20, &c), 0.4);
        close(s.lr_at(29, &c), 0.4);
        // Epoch 3 (step 30): 0.4·0.1; epoch 5: 0.4·0.01.
        close(s.lr_at(30, &c), 0.4 * 0.1);
        close(s.lr_at(79, &c), 0.4 * 0.1f64.powf(2.0));
        // At the reference batch there is nothing to warm up.
        let c = LrContext {
            global_batch: 256,
            ..c
        };
        close(s.lr_at(0, &c), 0.1);
    }

    #[test]
    fn curve_covers_every_step() {
        let s = warmup_lr(0.0, None, 4, WarmupType::Linear);
        let c = ctx(1.0, 7);
        let curve = s.curve(&c);
        assert_eq!(curve.len(), 7);
        for (i, v) in curve.iter().enumerate() {
            assert_eq!(*v, s.lr_at(i as u64, &c));
        }
    }

    #[track_caller]
    fn invalid(s: &LrSchedule, c: &LrContext, needle: &str) {
        let e = s.validate(c).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn validation_names_field_and_expectation() {
        let c = ctx(0.1, 500);
        assert!(warmup_lr(0.0, None, 500, WarmupType::Log)
            .validate(&c)
            .is_ok());
        invalid(
            &warmup_lr(0.5, None, 10, WarmupType::Log),
            &c,
            "lr_schedule.warmup_max_lr: must be ≥ warmup_min_lr (0.5), got 0.1 (the optimizer's lr)",
        );
        let cyc = |max_lr, up| LrSchedule::CyclicLr {
            base_lr: None,
            max_lr,
            step_size_up: up,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
            scale_mode: None,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        };
        invalid(
            &cyc(0.01, 10),
            &c,
            "lr_schedule.max_lr: must be ≥ the optimizer's lr (0.1), got 0.01",
        );
        invalid(
            &cyc(1.0, 0),
            &c,
            "lr_schedule.step_size_up: must be ≥ 1, got 0",
        );
        assert!(cyc(1.0, 10).validate(&c).is_ok());
        invalid(
            &LrSchedule::MultiStep {
                milestones: vec![30, 30, 60],
                gamma: 0.1,
            },
            &c,
            "lr_schedule.milestones: must be strictly increasing epochs, got [30, 30, 60]",
        );
        invalid(
            &LrSchedule::WarmupDecayLr {
                total_num_steps: Some(100),
                warmup_min_lr: 0.0,
                warmup_max_lr: None,
                warmup_num_steps: 200,
                warmup_type: WarmupType::Log,
            },
            &c,
            "lr_schedule.warmup_num_steps: must be ≤ total_num_steps (100), got 200",
        );
        invalid(
            &LrSchedule::WarmupCosineLr {
                total_num_steps: None,
                warmup_min_ratio: 0.0,
                warmup_num_steps: 500,
                cos_min_ratio: 0.0001,
                warmup_type: WarmupType::Log,
            },
            &c,
            "lr_schedule.warmup_num_steps: must be < the run's total steps (500)",
        );
        invalid(
            &LrSchedule::OneCycle {
                cycle_min_lr: 0.5,
                cycle_max_lr: 0.1,
                decay_lr_rate: 0.0,
                cycle_first_step_size: 10,
                cycle_second_step_size: None,
                cycle_first_stair_count: 0,
                cycle_second_stair_count: None,
                decay_step_size: 0,
                cycle_momentum: true,
                cycle_min_mom: 0.8,
                cycle_max_mom: 0.9,
                decay_mom_rate: 0.0,
            },
            &c,
            "lr_schedule.cycle_max_lr: must be ≥ cycle_min_lr (0.5), got 0.1",
        );
        invalid(
            &LrSchedule::CosineAnnealing {
                t_max: Some(0),
                eta_min: 0.0,
            },
            &c,
            "lr_schedule.t_max: must be ≥ 1, got 0",
        );
        invalid(
            &LrSchedule::Goyal {
                reference_batch: 256,
                warmup_epochs: 5.0,
                milestones: vec![3, 60],
                gamma: 0.1,
            },
            &c,
            "lr_schedule.milestones: must be at or after the warmup's end (epoch 5)",
        );
        invalid(
            &LrSchedule::Goyal {
                reference_batch: 256,
                warmup_epochs: 100.0,
                milestones: vec![],
                gamma: 0.1,
            },
            &c,
            "lr_schedule.warmup_epochs",
        );
        invalid(
            &LrSchedule::Constant {},
            &LrContext {
                steps_per_epoch: 0,
                ..c
            },
            "lr_context.steps_per_epoch: must be ≥ 1, got 0",
        );
    }

    #[test]
    fn toml_fills_library_defaults() {
        let s = parse("[lr_schedule]\nkind = \"warmup_lr\"\n").unwrap();
        assert_eq!(s, warmup_lr(0.0, None, 1000, WarmupType::Log));
        let s = parse(
            "[lr_schedule]\nkind = \"warmup_cosine_lr\"\nwarmup_num_steps = 10\nwarmup_type = \"linear\"\n",
        )
        .unwrap();
        assert_eq!(
            s,
            LrSchedule::WarmupCosineLr {
                total_num_steps: None,
                warmup_min_ratio: 0.0,
                warmup_num_steps: 10,
                cos_min_ratio: 0.0001,
                warmup_type: WarmupType::Linear,
            }
        );
        // Integers are accepted for float keys.
        let s = parse("[lr_schedule]\nkind = \"one_cycle\"\ncycle_min_lr = 0\ncycle_max_lr = 1\n")
            .unwrap();
        assert_eq!(
            s,
            LrSchedule::OneCycle {
                cycle_min_lr: 0.0,
                cycle_max_lr: 1.0,
                decay_lr_rate: 0.0,
                cycle_first_step_size: 2000,
                cycle_second_step_size: None,
                cycle_first_stair_count: 0,
                cycle_second_stair_count: None,
                decay_step_size: 0,
                cycle_momentum: true,
                cycle_min_mom: 0.8,
                cycle_max_mom: 0.9,
                decay_mom_rate: 0.0,
            }
        );
        let s = parse("[lr_schedule]\nkind = \"cyclic_lr\"\nmax_lr = 0.5\nmode = \"exp_range\"\n")
            .unwrap();
        assert_eq!(
            s,
            LrSchedule::CyclicLr {
                base_lr: None,
                max_lr: 0.5,
                step_size_up: 2000,
                step_size_down: None,
                mode: CyclicMode::ExpRange,
                gamma: 1.0,
                scale_mode: None,
                cycle_momentum: true,
                base_momentum: 0.8,
                max_momentum: 0.9,
            }
        );
        let s = parse("[lr_schedule]\nkind = \"goyal\"\n").unwrap();
        assert_eq!(
            s,
            LrSchedule::Goyal {
                reference_batch: 256,
                warmup_epochs: 5.0,
                milestones: vec![30, 60, 80],
                gamma: 0.1,
            }
        );
        let s = parse("[lr_schedule]\nkind = \"multi_step\"\nmilestones = [2, 5]\n").unwrap();
        assert_eq!(
            s,
            LrSchedule::MultiStep {
                milestones: vec![2, 5],
                gamma: 0.1
            }
        );
        assert_eq!(
            parse("[lr_schedule]\nkind = \"constant\"\n").unwrap(),
            LrSchedule::Constant {}
        );
    }

    #[test]
    fn toml_rejects_unknown_keys_and_kinds() {
        let e = parse("[lr_schedule]\nkind = \"warmup_lr\"\nwarmup_steps = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `warmup_steps`"), "{e}");
        let e = parse("[lr_schedule]\nkind = \"constant\"\nwarmup_num_steps = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `warmup_num_steps`"), "{e}");
        let e = parse("[lr_schedule]\nkind = \"warmup\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `warmup`"), "{e}");
        let e = parse("[lr_schedule]\nkind = \"cyclic_lr\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `max_lr`"), "{e}");
    }

    #[test]
    fn every_variant_round_trips_through_toml_and_json() {
        let all = vec![
            LrSchedule::Constant {},
            warmup_lr(0.0, Some(0.3), 7, WarmupType::Linear),
            warmup_lr(0.0, None, 7, WarmupType::Log),
            LrSchedule::WarmupDecayLr {
                total_num_steps: Some(70),
                warmup_min_lr: 0.001,
                warmup_max_lr: None,
                warmup_num_steps: 7,
                warmup_type: WarmupType::Log,
            },
            LrSchedule::WarmupCosineLr {
                total_num_steps: None,
                warmup_min_ratio: 0.1,
                warmup_num_steps: 7,
                cos_min_ratio: 0.0001,
                warmup_type: WarmupType::Log,
            },
            LrSchedule::OneCycle {
                cycle_min_lr: 0.01,
                cycle_max_lr: 0.1,
                decay_lr_rate: 0.5,
                cycle_first_step_size: 10,
                cycle_second_step_size: Some(20),
                cycle_first_stair_count: 0,
                cycle_second_stair_count: Some(3),
                decay_step_size: 5,
                cycle_momentum: false,
                cycle_min_mom: 0.85,
                cycle_max_mom: 0.95,
                decay_mom_rate: 0.01,
            },
            LrSchedule::CyclicLr {
                base_lr: Some(0.01),
                max_lr: 0.1,
                step_size_up: 10,
                step_size_down: None,
                mode: CyclicMode::Triangular2,
                gamma: 1.0,
                scale_mode: Some(CyclicScaleMode::Iterations),
                cycle_momentum: true,
                base_momentum: 0.7,
                max_momentum: 0.95,
            },
            LrSchedule::MultiStep {
                milestones: vec![1, 2],
                gamma: 0.5,
            },
            LrSchedule::CosineAnnealing {
                t_max: Some(10),
                eta_min: 0.0,
            },
            LrSchedule::Goyal {
                reference_batch: 128,
                warmup_epochs: 2.5,
                milestones: vec![],
                gamma: 0.1,
            },
        ];
        #[derive(Serialize, Deserialize)]
        struct Wrapper {
            lr_schedule: LrSchedule,
        }
        for s in all {
            let text = toml::to_string(&Wrapper {
                lr_schedule: s.clone(),
            })
            .unwrap();
            assert!(text.contains(&format!("kind = \"{}\"", s.name())), "{text}");
            assert_eq!(parse(&text).unwrap(), s, "{text}");
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), s);
        }
    }
}
