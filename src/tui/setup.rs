//! Setup: the run form. Every field is kept as the text the user sees; `check` turns the form
//! into a `RunConfig` (or field-level errors) and computes the lr(t) / q(t) previews, so what is
//! drawn is always what `s` would start.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use std::collections::BTreeMap;

use super::action::Action;
use super::charts::{self, Plot};
use super::line_edit::{self, Completion, LineEdit};
use super::run_data::sample_steps;
use super::ui::{panel, theme};
use crate::config::{
    diff, schema, ConfigError, DeviceSpec, OptimizerConfig, OptimizerKind, Override, PrecisionMode,
    RunConfig,
};
use crate::data::{DataSource, SYNTHETIC_TRAIN};
use crate::models::ModelKind;
use crate::schedule::{
    LrContext, LrDefaults, LrScheduleKind, PrecisionSchedule, PrecisionScheduleKind,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    Model,
    Data,
    Batch,
    Epochs,
    Seed,
    Optimizer,
    Lr,
    Momentum,
    WeightDecay,
    LrSchedule,
    Warmup,
    Milestones,
    Mode,
    Cpt,
    QMin,
    QMax,
    Cycles,
    QBwd,
    Devices,
    Threads,
    Zero,
}

impl Field {
    pub const ALL: [Field; 22] = [
        Field::Name,
        Field::Model,
        Field::Data,
        Field::Batch,
        Field::Epochs,
        Field::Seed,
        Field::Optimizer,
        Field::Lr,
        Field::Momentum,
        Field::WeightDecay,
        Field::LrSchedule,
        Field::Warmup,
        Field::Milestones,
        Field::Mode,
        Field::Cpt,
        Field::QMin,
        Field::QMax,
        Field::Cycles,
        Field::QBwd,
        Field::Devices,
        Field::Threads,
        Field::Zero,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Model => "model",
            Field::Data => "data",
            Field::Batch => "batch size",
            Field::Epochs => "epochs",
            Field::Seed => "seed",
            Field::Optimizer => "optimizer",
            Field::Lr => "lr",
            Field::Momentum => "momentum",
            Field::WeightDecay => "weight decay",
            Field::LrSchedule => "lr schedule",
            Field::Warmup => "warmup steps",
            Field::Milestones => "milestones",
            Field::Mode => "precision",
            Field::Cpt => "CPT schedule",
            Field::QMin => "q_min",
            Field::QMax => "q_max",
            Field::Cycles => "cycles",
            Field::QBwd => "q_bwd",
            Field::Devices => "devices",
            Field::Threads => "threads",
            Field::Zero => "ZeRO stage",
        }
    }

    /// The field's name in the state file (stable; the label may change).
    pub fn key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Model => "model",
            Field::Data => "data",
            Field::Batch => "batch_size",
            Field::Epochs => "epochs",
            Field::Seed => "seed",
            Field::Optimizer => "optimizer",
            Field::Lr => "lr",
            Field::Momentum => "momentum",
            Field::WeightDecay => "weight_decay",
            Field::LrSchedule => "lr_schedule",
            Field::Warmup => "warmup_num_steps",
            Field::Milestones => "milestones",
            Field::Mode => "precision",
            Field::Cpt => "cpt",
            Field::QMin => "q_min",
            Field::QMax => "q_max",
            Field::Cycles => "cycles",
            Field::QBwd => "q_bwd",
            Field::Devices => "devices",
            Field::Threads => "threads",
            Field::Zero => "zero",
        }
    }

    /// The config key the field edits (the form's own fields; every other key is a
    /// [`Row::Setting`]).
    pub fn config_key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Model => "model.kind",
            Field::Data => "data.source",
            Field::Batch => "train.batch_size",
            Field::Epochs => "train.epochs",
            Field::Seed => "seed",
            Field::Optimizer => "optimizer.kind",
            Field::Lr => "optimizer.lr",
            Field::Momentum => "optimizer.momentum",
            Field::WeightDecay => "optimizer.weight_decay",
            Field::LrSchedule => "lr_schedule.kind",
            Field::Warmup => "lr_schedule.warmup_num_steps",
            Field::Milestones => "lr_schedule.milestones",
            Field::Mode => "precision.mode",
            Field::Cpt => "precision.schedule.kind",
            Field::QMin => "precision.schedule.q_min",
            Field::QMax => "precision.schedule.q_max",
            Field::Cycles => "precision.schedule.cycles",
            Field::QBwd => "precision.schedule.q_bwd",
            Field::Devices => "devices.devices",
            Field::Threads => "devices.threads",
            Field::Zero => "devices.zero",
        }
    }

    pub fn group(self) -> Group {
        Group::of_key(self.config_key())
    }

    pub fn from_key(k: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == k)
    }

    fn idx(self) -> usize {
        // ALL lists every variant (`fields_are_listed_once` checks it).
        Field::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// The form's sections, in order; every key of the config belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Run,
    Model,
    Data,
    Train,
    Optimizer,
    LrSchedule,
    Precision,
    LossScale,
    Devices,
}

impl Group {
    pub const ALL: [Group; 9] = [
        Group::Run,
        Group::Model,
        Group::Data,
        Group::Train,
        Group::Optimizer,
        Group::LrSchedule,
        Group::Precision,
        Group::LossScale,
        Group::Devices,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Run => "run",
            Group::Model => "model",
            Group::Data => "data and augmentation",
            Group::Train => "train loop",
            Group::Optimizer => "optimizer",
            Group::LrSchedule => "LR schedule",
            Group::Precision => "precision and CPT",
            Group::LossScale => "loss scale",
            Group::Devices => "devices",
        }
    }

    /// The table prefix of the group's keys ("" for the top level).
    fn prefix(self) -> &'static str {
        match self {
            Group::Run => "",
            Group::Model => "model.",
            Group::Data => "data.",
            Group::Train => "train.",
            Group::Optimizer => "optimizer.",
            Group::LrSchedule => "lr_schedule.",
            Group::Precision => "precision.",
            Group::LossScale => "precision.loss_scale.",
            Group::Devices => "devices.",
        }
    }

    /// The group of a dotted config key (the longest matching prefix).
    pub fn of_key(key: &str) -> Group {
        Group::ALL
            .into_iter()
            .filter(|g| !g.prefix().is_empty() && key.starts_with(g.prefix()))
            .max_by_key(|g| g.prefix().len())
            .unwrap_or(Group::Run)
    }
}

/// A row of the form: one of its own fields, or any other key of the config (a setting,
/// edited as a TOML value, as `--set KEY=VALUE` takes it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Row {
    Field(Field),
    Setting(String),
}

impl PartialEq<Field> for Row {
    fn eq(&self, f: &Field) -> bool {
        *self == Row::Field(*f)
    }
}

impl Row {
    pub fn group(&self) -> Group {
        match self {
            Row::Field(f) => f.group(),
            Row::Setting(k) => Group::of_key(k),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Row::Field(f) => f.label().to_string(),
            Row::Setting(k) => {
                let rest = k.strip_prefix(self.group().prefix()).unwrap_or(k);
                rest.strip_prefix("schedule.").unwrap_or(rest).to_string()
            }
        }
    }
}

/// Whether `key` is edited by one of the form's own fields.
fn is_form_key(key: &str) -> bool {
    // `precision.schedule` alone: the table a config without CPT lacks (the CPT field).
    Field::ALL.iter().any(|f| f.config_key() == key) || key == "precision.schedule"
}

/// Another key of the config, as Setup shows it: its value in the config the form makes (None:
/// unset) and, for enums and booleans, the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
    pub choices: Vec<String>,
}

/// A list of choices opened on a field (Enter): each with its description.
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub options: Vec<(String, String)>,
    pub cursor: usize,
}

/// The LR schedule picker: [`LrScheduleKind::ALL`] in order.
pub fn lr_kinds() -> Vec<&'static str> {
    LrScheduleKind::ALL.iter().map(|k| k.name()).collect()
}
const ZERO_STAGES: [&str; 2] = ["0", "1"];
/// The CPT choice for no schedule: full precision, no fake quantization.
pub const CPT_OFF: &str = "off";
/// Training-set size assumed for previews of image data whose size is not known up front.
pub const ESTIMATED_TRAIN: u64 = 50_000;

/// A picker field's choices, in display order (empty for text fields).
pub fn choices(f: Field) -> Vec<&'static str> {
    match f {
        Field::Model => ModelKind::ALL.iter().map(|k| k.name()).collect(),
        Field::Optimizer => OptimizerKind::ALL.iter().map(|k| k.name()).collect(),
        Field::LrSchedule => lr_kinds(),
        Field::Mode => precision_modes(),
        Field::Cpt => std::iter::once(CPT_OFF)
            .chain(PrecisionScheduleKind::ALL.iter().map(|k| k.name()))
            .collect(),
        Field::Zero => ZERO_STAGES.to_vec(),
        _ => Vec::new(),
    }
}

/// The precision modes the config accepts, by their config names.
pub fn precision_modes() -> Vec<&'static str> {
    PrecisionMode::ALL.iter().map(|m| m.name()).collect()
}

/// The form's verdict: a config ready to start, or what is wrong where; plus the previews.
#[derive(Debug, Clone, Default)]
pub struct Check {
    pub config: Option<RunConfig>,
    pub errors: Vec<(Field, String)>,
    pub general: Option<String>,
    pub notes: Vec<String>,
    /// What this machine makes of a field that is valid as such (fp16 on a CPU, more threads
    /// than cores): shown in place, in the warning colour; a start is not refused.
    pub warnings: Vec<(Field, String)>,
    pub steps_per_epoch: u64,
    pub spe_estimated: bool,
    pub train_size: u64,
    pub total_steps: u64,
    pub lr_curve: Vec<(f64, f64)>,
    pub q_curve: Vec<(f64, f64)>,
    pub cpt: Option<PrecisionSchedule>,
    pub cost_ratio: Option<f64>,
    pub mean_bits: Option<f64>,
    /// Every key of the config that the form's own fields do not edit, for the kinds chosen.
    pub settings: Vec<Setting>,
    /// What is wrong with a setting, by key.
    pub setting_errors: Vec<(String, String)>,
}

impl Check {
    pub fn error(&self, f: Field) -> Option<&str> {
        self.errors
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, e)| e.as_str())
    }

    pub fn warning(&self, f: Field) -> Option<&str> {
        self.warnings
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, m)| m.as_str())
    }

    pub fn setting_error(&self, key: &str) -> Option<&str> {
        self.setting_errors
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, e)| e.as_str())
    }

    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.general.is_none() && self.config.is_some()
    }
}

/// The first run of an A/B pair, kept while the user sets up the second.
#[derive(Debug, Clone)]
pub struct AbFirst {
    pub config: RunConfig,
    pub summary: String,
}

#[derive(Debug, Clone)]
pub struct SetupState {
    /// The preset the form started from: fields the form does not show come from it.
    pub base: RunConfig,
    pub preset: String,
    values: Vec<String>,
    /// The fields as the preset filled them: the form is "modified" when it differs.
    pristine: Vec<String>,
    focus: Row,
    /// The line being edited (Enter on a text field).
    pub editing: Option<LineEdit>,
    /// The choices opened on a field (Enter on a choice field).
    pub picker: Option<Picker>,
    /// What Tab found when it completed more than one path.
    pub completion: Option<String>,
    /// Settings as typed, by key (TOML values; empty: unset). Kept when the kind they belong to
    /// is switched away and back: hidden, not lost.
    settings: BTreeMap<String, String>,
    /// The settings as the preset has them (the "modified" marker compares with these).
    pristine_settings: BTreeMap<String, String>,
    pub check: Check,
    pub ab_first: Option<AbFirst>,
    /// Lines the form is scrolled by with the wheel beyond where the focus puts it (errors
    /// can make it longer than its panel); any key resets it.
    pub form_scroll: usize,
    /// Counts changes of the form (for saving it only when it changed).
    pub rev: u64,
    /// Why the config edited in `$EDITOR` (`e`) was not taken; the text is kept for the next `e`.
    pub edit_error: Option<String>,
    /// This machine's devices, for the checks only it can tell (None: not known, not checked).
    pub machine: Option<Machine>,
    data_cache: Option<(String, Result<DataSource, String>)>,
}

/// What the workbench knows of the machine it runs on, gathered by the CLI at start (the TUI
/// never probes devices itself): Setup checks devices, threads and precision against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// CUDA devices libtorch sees (0: none, or a build without CUDA).
    pub cuda_devices: usize,
    /// CPU cores this process may use.
    pub cores: usize,
}

/// Messages on fields: `(field, what to say)`.
pub type FieldNotes = Vec<(Field, String)>;

/// The machine checks of a config: errors (a device that is not there) and warnings (valid,
/// but slow here), each on its field.
pub fn machine_checks(cfg: &RunConfig, m: &Machine) -> (FieldNotes, FieldNotes) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let gpus = m.cuda_devices;
    match &cfg.devices.devices.on_machine(gpus) {
        DeviceSpec::Cuda(_) | DeviceSpec::CudaAll if gpus == 0 => errors.push((
            Field::Devices,
            format!(
                "{} needs CUDA, and this machine has no CUDA device: cpu or cpu:N",
                cfg.devices.devices
            ),
        )),
        DeviceSpec::Cuda(ids) => {
            if let Some(bad) = ids.iter().find(|i| **i >= gpus) {
                errors.push((
                    Field::Devices,
                    format!(
                        "cuda:{bad} is not on this machine: it has {gpus} GPU(s), cuda:0{}",
                        if gpus > 1 {
                            format!("–{}", gpus - 1)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        DeviceSpec::Cpu { workers } => {
            let threads = cfg.devices.threads.unwrap_or(1);
            let want = workers * threads;
            if want > m.cores {
                warnings.push((
                    Field::Threads,
                    format!(
                        "{workers} worker(s) × {threads} thread(s) = {want}, more than this machine's {} core(s): they contend",
                        m.cores
                    ),
                ));
            }
            if cfg.precision.mode == crate::config::PrecisionMode::Fp16 {
                warnings.push((
                    Field::Mode,
                    "fp16 on a CPU is about 100× slower than bf16 here (no fast fp16 kernels): bf16 or fp32".into(),
                ));
            }
        }
        DeviceSpec::CudaAll | DeviceSpec::Auto => {}
    }
    (errors, warnings)
}

fn num(x: f64) -> String {
    // Six significant digits: 0.05 × 2 shows as 0.1, not 0.1000000000000001.
    format!("{:.5e}", x).parse::<f64>().unwrap_or(x).to_string()
}

impl SetupState {
    pub fn new(base: RunConfig, preset: &str, data: Option<&str>) -> SetupState {
        let mut s = SetupState {
            values: vec![String::new(); Field::ALL.len()],
            pristine: Vec::new(),
            base: base.clone(),
            preset: preset.to_string(),
            focus: Row::Field(Field::Name),
            editing: None,
            picker: None,
            completion: None,
            settings: BTreeMap::new(),
            pristine_settings: BTreeMap::new(),
            check: Check::default(),
            ab_first: None,
            form_scroll: 0,
            rev: 0,
            edit_error: None,
            machine: None,
            data_cache: None,
        };
        s.load(base, preset, data);
        s
    }

    /// Replaces the form with a preset's values (the data source given on the command line
    /// stays, unless the preset names one and none was given).
    pub fn load(&mut self, cfg: RunConfig, preset: &str, data: Option<&str>) {
        self.values = form_values(&cfg, data);
        self.pristine = self.values.clone();
        self.pristine_settings = diff::fields(&cfg);
        self.settings.clear();
        self.base = cfg;
        self.preset = preset.to_string();
        self.editing = None;
        self.picker = None;
        self.recheck();
    }

    /// Takes a whole config (edited in `$EDITOR`): it fills the form and stands behind what the
    /// form does not show; the "modified" marker still compares with the preset.
    pub fn adopt(&mut self, cfg: RunConfig) {
        self.values = form_values(&cfg, None);
        self.settings.clear();
        self.base = cfg;
        self.editing = None;
        self.picker = None;
        self.edit_error = None;
        self.recheck();
    }

    /// True if the form differs from the preset it was loaded from.
    pub fn modified(&self) -> bool {
        self.values != self.pristine || !self.changed_settings().is_empty()
    }

    /// The settings typed that differ from the preset's.
    pub fn changed_settings(&self) -> Vec<String> {
        self.settings
            .iter()
            .filter(|(k, v)| self.setting_changed(k, v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn setting_changed(&self, key: &str, text: &str) -> bool {
        let was = self.pristine_settings.get(key).map_or("", String::as_str);
        // Compared as TOML values (`1e-4` and `0.0001` are one value).
        let value = crate::config::parse_value;
        value(text.trim()) != value(was)
    }

    /// The fields that differ from the preset.
    pub fn changed_fields(&self) -> Vec<Field> {
        Field::ALL
            .into_iter()
            .filter(|f| self.values.get(f.idx()) != self.pristine.get(f.idx()))
            .collect()
    }

    /// What the form's "modified" marker compares with: the fields `preset` fills in.
    pub fn set_pristine_from(&mut self, preset: &RunConfig, data: Option<&str>) {
        self.pristine = form_values(preset, data);
        self.pristine_settings = diff::fields(preset);
    }

    /// Every field as typed, by `Field::key` (for the state file).
    pub fn fields(&self) -> std::collections::BTreeMap<String, String> {
        Field::ALL
            .into_iter()
            .map(|f| (f.key().to_string(), self.value(f).to_string()))
            .chain(
                self.settings
                    .iter()
                    .map(|(k, v)| (format!("{SETTING_PREFIX}{k}"), v.clone())),
            )
            .collect()
    }

    /// Puts remembered field texts back (unknown keys are skipped; `keep` keeps its value).
    pub fn restore_fields(
        &mut self,
        fields: &std::collections::BTreeMap<String, String>,
        keep: Option<Field>,
    ) {
        for (k, v) in fields {
            if let Some(key) = k.strip_prefix(SETTING_PREFIX) {
                self.settings.insert(key.to_string(), v.clone());
            } else if let Some(f) = Field::from_key(k).filter(|f| Some(*f) != keep) {
                self.values[f.idx()] = v.clone();
            }
        }
        self.recheck();
    }
}

/// Settings in the state file: `set.KEY`.
const SETTING_PREFIX: &str = "set.";

/// The form's texts for `cfg` (the data source given on the command line wins).
fn form_values(cfg: &RunConfig, data: Option<&str>) -> Vec<String> {
    let mut values = vec![String::new(); Field::ALL.len()];
    let mut set = |f: Field, v: String| values[f.idx()] = v;
    set(Field::Name, cfg.name.clone());
    set(Field::Model, cfg.model.kind.name().into());
    let data = data
        .map(str::to_string)
        .or_else(|| cfg.data.source.clone())
        .unwrap_or_default();
    set(Field::Data, data);
    set(Field::Batch, cfg.train.batch_size.to_string());
    set(Field::Epochs, cfg.train.epochs.to_string());
    set(Field::Seed, cfg.seed.to_string());
    set(Field::Optimizer, cfg.optimizer.kind_name().into());
    set(Field::Lr, num(cfg.optimizer.lr()));
    let (momentum, wd) = match &cfg.optimizer {
        OptimizerConfig::Sgd {
            momentum,
            weight_decay,
            ..
        } => (*momentum, *weight_decay),
        OptimizerConfig::Adam { weight_decay, .. }
        | OptimizerConfig::AdamW { weight_decay, .. } => (0.9, *weight_decay),
    };
    set(Field::Momentum, num(momentum));
    set(Field::WeightDecay, num(wd));
    set(Field::LrSchedule, cfg.lr_schedule.name().into());
    let warmup = match cfg.lr_schedule.param(WARMUP_KEY) {
        Some(toml::Value::Integer(w)) => w.to_string(),
        _ => "1000".to_string(),
    };
    set(Field::Warmup, warmup);
    let milestones = match cfg.lr_schedule.param(MILESTONES_KEY) {
        Some(toml::Value::Array(ms)) => ms
            .iter()
            .map(|m| m.as_integer().map_or_else(String::new, |m| m.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    set(Field::Milestones, milestones);
    let mode = serde_json::to_value(cfg.precision.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "fp32".into());
    set(Field::Mode, mode);
    let (cpt, sched) = match &cfg.precision.schedule {
        Some(s) => (s.kind.name(), s.clone()),
        None => (CPT_OFF, PrecisionSchedule::new(PrecisionScheduleKind::Cr)),
    };
    set(Field::Cpt, cpt.into());
    set(Field::QMin, sched.q_min.to_string());
    set(Field::QMax, sched.q_max.to_string());
    set(Field::Cycles, sched.cycles.to_string());
    set(
        Field::QBwd,
        sched.q_bwd.map(|b| b.to_string()).unwrap_or_default(),
    );
    set(Field::Devices, cfg.devices.devices.to_string());
    set(
        Field::Threads,
        cfg.devices
            .threads
            .map_or("auto".to_string(), |t| t.to_string()),
    );
    set(Field::Zero, cfg.devices.zero.to_string());
    values
}

impl SetupState {
    pub fn value(&self, f: Field) -> &str {
        &self.values[f.idx()]
    }

    pub fn set(&mut self, f: Field, v: impl Into<String>) {
        self.values[f.idx()] = v.into();
        self.recheck();
    }

    pub fn focus(&self) -> Row {
        self.focus.clone()
    }

    /// Focuses a row (tests and the mouse).
    pub fn focus_row(&mut self, row: Row) {
        self.focus = row;
    }

    /// Focuses the first row with an error (where the form shows one), e.g. when a start is
    /// refused.
    pub fn focus_first_problem(&mut self) {
        let c = &self.check;
        let first = self.rows().into_iter().find(|r| match r {
            Row::Field(f) => c.error(*f).is_some(),
            Row::Setting(k) => c.setting_error(k).is_some(),
        });
        if let Some(r) = first {
            self.focus = r;
            self.form_scroll = 0;
        }
    }

    /// Whether the form has the keyboard (a line or a picker is open).
    pub fn captures_keys(&self) -> bool {
        self.editing.is_some() || self.picker.is_some()
    }

    /// The rows shown: the form's own fields for the current choices (what most runs change,
    /// on top), then every other key of the config, section by section.
    pub fn rows(&self) -> Vec<Row> {
        let mut out: Vec<Row> = self.visible().into_iter().map(Row::Field).collect();
        for g in Group::ALL {
            out.extend(
                self.check
                    .settings
                    .iter()
                    .filter(|s| Group::of_key(&s.key) == g)
                    .map(|s| Row::Setting(s.key.clone())),
            );
        }
        out
    }

    /// A setting's text: as typed, else the config's value ("" when unset).
    pub fn setting_text(&self, key: &str) -> String {
        match self.settings.get(key) {
            Some(t) => t.clone(),
            None => self
                .check
                .setting(key)
                .and_then(|s| s.value.clone())
                .unwrap_or_default(),
        }
    }

    /// Types `text` into a setting (as Enter after editing it does).
    pub fn set_setting(&mut self, key: &str, text: impl Into<String>) {
        self.settings.insert(key.to_string(), text.into());
        self.recheck();
    }

    fn row_text(&self, row: &Row) -> String {
        match row {
            Row::Field(f) => self.value(*f).to_string(),
            Row::Setting(k) => self.setting_text(k),
        }
    }

    fn set_row(&mut self, row: &Row, text: String) {
        match row {
            Row::Field(f) => self.set(*f, text),
            Row::Setting(k) => self.set_setting(k, text),
        }
    }

    /// A row's choices with their descriptions (empty for text rows).
    pub fn options(&self, row: &Row) -> Vec<(String, String)> {
        match row {
            Row::Field(f) => choices(*f)
                .into_iter()
                .map(|c| (c.to_string(), describe_choice(*f, c)))
                .collect(),
            Row::Setting(k) => self
                .check
                .setting(k)
                .map(|s| {
                    s.choices
                        .iter()
                        .map(|c| (c.clone(), schema::describe_value(k, c)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Fields shown for the current choices.
    pub fn visible(&self) -> Vec<Field> {
        let sgd = self.value(Field::Optimizer) == "sgd";
        let sched = self.value(Field::LrSchedule).parse::<LrScheduleKind>().ok();
        let warmup = sched.is_some_and(|k| k.has_field(WARMUP_KEY));
        let milestones = sched.is_some_and(|k| k.has_field(MILESTONES_KEY));
        let cpt = self.value(Field::Cpt);
        let quantized = cpt != CPT_OFF;
        let cyclic = quantized && cpt != "static";
        Field::ALL
            .into_iter()
            .filter(|f| match f {
                Field::Momentum => sgd,
                Field::Warmup => warmup,
                Field::Milestones => milestones,
                Field::QMin | Field::Cycles => cyclic,
                Field::QMax | Field::QBwd => quantized,
                _ => true,
            })
            .collect()
    }

    fn move_focus(&mut self, delta: isize, wrap: bool) {
        let rows = self.rows();
        let i = rows.iter().position(|r| *r == self.focus).unwrap_or(0) as isize;
        let n = rows.len() as isize;
        let j = if wrap {
            (i + delta).rem_euclid(n)
        } else {
            (i + delta).clamp(0, n - 1)
        };
        self.focus = rows[j as usize].clone();
    }

    /// Handles a key meant for the form; returns false if it was not for the form.
    pub fn handle(&mut self, action: &Action) -> bool {
        if let Some(p) = &mut self.picker {
            let n = p.options.len().max(1);
            match action {
                Action::Up => p.cursor = p.cursor.saturating_sub(1),
                Action::Down => p.cursor = (p.cursor + 1).min(n - 1),
                Action::PageUp | Action::First => p.cursor = 0,
                Action::PageDown | Action::Last => p.cursor = n - 1,
                // A letter jumps to the next choice that starts with it.
                Action::Input(c) => {
                    let c = c.to_ascii_lowercase();
                    if let Some(j) = (1..=n)
                        .map(|d| (p.cursor + d) % n)
                        .find(|&j| p.options[j].0.to_ascii_lowercase().starts_with(c))
                    {
                        p.cursor = j;
                    }
                }
                Action::Select => {
                    let choice = p.options.get(p.cursor).map(|o| o.0.clone());
                    self.picker = None;
                    if let Some(v) = choice {
                        let row = self.focus.clone();
                        self.set_row(&row, v);
                    }
                }
                Action::Back => self.picker = None,
                _ => return false,
            }
            return true;
        }
        if let Some(buf) = &mut self.editing {
            match action {
                Action::Select => {
                    let v = self.editing.take().unwrap_or_default();
                    self.completion = None;
                    let mut text = v.text().trim().to_string();
                    if self.focus == Field::Data {
                        text = line_edit::expanded(&text);
                    }
                    let row = self.focus.clone();
                    self.set_row(&row, text);
                }
                Action::Back => {
                    self.editing = None;
                    self.completion = None;
                }
                // Tab completes a path (the data field); elsewhere it does nothing while editing.
                Action::FocusNext => {
                    if self.focus == Field::Data {
                        self.completion = match buf.complete_path() {
                            Completion::Several(names) => Some(names.join("  ")),
                            Completion::None => Some("no path starts so".into()),
                            Completion::One => None,
                        };
                    }
                }
                a => {
                    if !buf.handle(a) {
                        return false;
                    }
                }
            }
            return true;
        }
        // Moving with keys brings the focus back into view.
        if !matches!(action, Action::Wheel(..)) {
            self.form_scroll = 0;
        }
        match action {
            Action::Up => self.move_focus(-1, false),
            Action::Down => self.move_focus(1, false),
            Action::FocusPrev => self.move_focus(-1, true),
            Action::FocusNext => self.move_focus(1, true),
            Action::PageUp => self.move_focus(-8, false),
            Action::PageDown => self.move_focus(8, false),
            Action::Pick(0, i) => match self.rows().get(*i) {
                Some(r) => self.focus = r.clone(),
                None => return false,
            },
            // The wheel scrolls the form (the mouse clamps it to the form's length).
            Action::Wheel(_, d) => {
                self.form_scroll = (self.form_scroll as i64 + i64::from(*d)).max(0) as usize;
                return true;
            }
            Action::Back if self.ab_first.is_some() => self.ab_first = None,
            Action::Left => self.adjust(-1),
            Action::Right => self.adjust(1),
            Action::Select => {
                let row = self.focus.clone();
                let options = self.options(&row);
                if options.is_empty() {
                    self.editing = Some(LineEdit::new(self.row_text(&row)));
                } else {
                    let now = self.row_text(&row);
                    let cursor = options.iter().position(|o| o.0 == now).unwrap_or(0);
                    self.picker = Some(Picker { options, cursor });
                }
            }
            _ => return false,
        }
        true
    }

    /// ←/→: the previous/next choice, or a step of a number.
    fn adjust(&mut self, dir: i64) {
        let f = match &self.focus {
            Row::Field(f) => *f,
            Row::Setting(k) => {
                // A setting's choices cycle; other settings are typed.
                let k = k.clone();
                let opts = self.options(&Row::Setting(k.clone()));
                if !opts.is_empty() {
                    let now = self.setting_text(&k);
                    let i = opts.iter().position(|o| o.0 == now).unwrap_or(0) as i64;
                    let j = (i + dir).rem_euclid(opts.len() as i64) as usize;
                    self.set_setting(&k, opts[j].0.clone());
                }
                return;
            }
        };
        let v = self.value(f).to_string();
        let opts = choices(f);
        if !opts.is_empty() {
            let i = opts.iter().position(|o| *o == v).unwrap_or(0) as i64;
            let j = (i + dir).rem_euclid(opts.len() as i64) as usize;
            self.set(f, opts[j]);
            return;
        }
        let int = |lo: i64, hi: i64, step: i64| -> Option<String> {
            let x: i64 = v.parse().ok()?;
            Some((x + dir * step).clamp(lo, hi).to_string())
        };
        let new = match f {
            Field::Batch => v.parse::<usize>().ok().map(|b| {
                if dir > 0 {
                    (b * 2).to_string()
                } else {
                    (b / 2).max(1).to_string()
                }
            }),
            Field::Epochs => int(1, 100_000, 1),
            Field::Seed => int(0, i64::MAX, 1),
            Field::Warmup => int(0, i64::MAX, 100),
            Field::QMin | Field::QMax | Field::QBwd => {
                if v.is_empty() {
                    Some(self.value(Field::QMax).to_string())
                } else {
                    int(1, 32, 1)
                }
            }
            Field::Cycles => int(1, 10_000, 1),
            Field::Threads => match v.parse::<i64>() {
                Ok(1) if dir < 0 => Some("auto".into()),
                Ok(t) => Some((t + dir).max(1).to_string()),
                Err(_) if dir > 0 => Some("1".into()),
                Err(_) => None,
            },
            Field::Lr => v
                .parse::<f64>()
                .ok()
                .map(|x| num(if dir > 0 { x * 2.0 } else { x / 2.0 })),
            Field::Momentum => v
                .parse::<f64>()
                .ok()
                .map(|x| num((x + dir as f64 * 0.05).clamp(0.0, 0.99))),
            Field::WeightDecay => v.parse::<f64>().ok().map(|x| match (dir > 0, x) {
                (true, x) if x <= 0.0 => num(1e-4),
                (true, x) => num(x * 10.0),
                (false, x) if x <= 1e-6 => "0".into(),
                (false, x) => num(x / 10.0),
            }),
            _ => None,
        };
        if let Some(n) = new {
            self.set(f, n);
        }
    }

    /// Re-validates the form and recomputes the previews.
    pub fn recheck(&mut self) {
        self.rev += 1;
        self.check = self.build();
        // Keep the focus on a row that is shown.
        if !self.rows().contains(&self.focus) {
            self.focus = Row::Field(Field::Name);
        }
    }

    fn data_source(&mut self, spec: &str) -> Result<DataSource, String> {
        if let Some((s, r)) = &self.data_cache {
            if s == spec {
                return r.clone();
            }
        }
        let r = DataSource::detect(spec).map_err(|e| e.to_string());
        self.data_cache = Some((spec.to_string(), r.clone()));
        r
    }

    /// The form as a config: its own fields over the preset, then the settings typed that
    /// apply to the kinds chosen (each through the config's deserializer, so a wrong one is
    /// marked on its row and left out), then the form's fields again over that.
    fn build(&mut self) -> Check {
        let preset = self.base.clone();
        let (_, first) = self.build_over(&preset, &[]);
        let keys: Vec<String> = schema::accepted_keys(&first)
            .into_iter()
            .filter(|k| !is_form_key(k) && schema::applies(&first, k))
            .collect();
        let mut tree = match toml::Value::try_from(&first) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let mut setting_errors = Vec::new();
        for (key, text) in &self.settings {
            if !keys.contains(key) {
                continue;
            }
            let mut t = tree.clone();
            match with_setting(&mut t, key, text.trim()) {
                Ok(()) => tree = t,
                Err(e) => setting_errors.push((key.clone(), e)),
            }
        }
        let with: RunConfig = {
            use serde::Deserialize;
            RunConfig::deserialize(toml::Value::Table(tree)).unwrap_or(first)
        };
        let (mut c, cfg) = self.build_over(&with, &keys);
        for (k, e) in setting_errors {
            if c.setting_error(&k).is_none() {
                c.setting_errors.push((k, e));
            }
        }
        if !c.setting_errors.is_empty() {
            c.config = None;
        }
        let flat = diff::fields(&cfg);
        c.settings = keys
            .into_iter()
            .map(|key| {
                let value = flat.get(&key).cloned();
                let choices = match value.as_deref() {
                    Some("true" | "false") => vec!["true".into(), "false".into()],
                    _ => schema::choices(&cfg, &key).unwrap_or_default(),
                };
                Setting {
                    key,
                    value,
                    choices,
                }
            })
            .collect();
        c
    }

    /// The form's own fields over `base`; validation errors that name one of `setting_keys`
    /// are marked on that setting. Also the config as built, valid or not.
    fn build_over(&mut self, base: &RunConfig, setting_keys: &[String]) -> (Check, RunConfig) {
        let mut c = Check::default();
        // One error per field: the first found says what to fix.
        fn err(c: &mut Check, f: Field, m: String) {
            if c.error(f).is_none() {
                c.errors.push((f, m));
            }
        }
        let mut cfg = base.clone();
        let vals = self.values.clone();
        let v = |f: Field| vals[f.idx()].trim().to_string();

        let name = v(Field::Name);
        if name.is_empty() {
            err(&mut c, Field::Name, "a name is needed".into());
        }
        cfg.name = name;
        match v(Field::Model).parse::<ModelKind>() {
            Ok(k) => cfg.model.kind = k,
            Err(e) => err(&mut c, Field::Model, e),
        }
        let batch = match v(Field::Batch).parse::<usize>() {
            Ok(b) if b > 0 => b,
            _ => {
                err(&mut c, Field::Batch, "a whole number ≥ 1".into());
                0
            }
        };
        cfg.train.batch_size = batch.max(1);
        let epochs = match v(Field::Epochs).parse::<u64>() {
            Ok(e) if e > 0 => e,
            _ => {
                err(&mut c, Field::Epochs, "a whole number ≥ 1".into());
                0
            }
        };
        cfg.train.epochs = epochs.max(1);
        match v(Field::Seed).parse::<u64>() {
            Ok(s) => cfg.seed = s,
            Err(_) => err(&mut c, Field::Seed, "a whole number ≥ 0".into()),
        }

        // Data: checked (and cached) only when the text changes; a path is looked at on disk.
        let data = v(Field::Data);
        let spec = if data.is_empty() {
            "synthetic".to_string()
        } else {
            data.clone()
        };
        cfg.data.source = (!data.is_empty()).then_some(data);
        c.train_size = ESTIMATED_TRAIN;
        c.spe_estimated = true;
        match self.data_source(&spec) {
            Ok(DataSource::Synthetic { train, .. }) => {
                c.train_size = train as u64;
                c.spe_estimated = false;
            }
            Ok(DataSource::CifarBinary { .. }) | Ok(DataSource::Download(_)) => {
                c.spe_estimated = false;
            }
            Ok(DataSource::ImageFolder { .. }) => {}
            Err(e) => err(&mut c, Field::Data, e),
        }
        if spec == "synthetic" {
            c.train_size = SYNTHETIC_TRAIN as u64;
        }
        c.steps_per_epoch = c.train_size / batch.max(1) as u64;
        if batch > 0 && c.steps_per_epoch == 0 {
            let m = format!("larger than the training set ({} images)", c.train_size);
            err(&mut c, Field::Batch, m);
        }
        // No curves from values that did not parse.
        c.total_steps = if batch > 0 {
            c.steps_per_epoch * epochs
        } else {
            0
        };
        if let Some(m) = cfg.train.max_steps {
            c.total_steps = c.total_steps.min(m);
        }

        // Optimizer: switching kind takes that optimizer's defaults, as `cptlab run --optimizer`.
        let lr_parsed = v(Field::Lr).parse::<f64>().ok().filter(|x| x.is_finite());
        if lr_parsed.is_none() {
            err(&mut c, Field::Lr, "a number, e.g. 0.1 or 1e-3".into());
        }
        let lr = lr_parsed.unwrap_or(0.0);
        let momentum = v(Field::Momentum).parse::<f64>().ok();
        let wd = v(Field::WeightDecay).parse::<f64>().ok();
        if wd.is_none() {
            err(&mut c, Field::WeightDecay, "a number ≥ 0".into());
        }
        let wd = wd.unwrap_or(0.0);
        let kind = match v(Field::Optimizer).parse::<OptimizerKind>() {
            Ok(k) => k,
            Err(e) => {
                err(&mut c, Field::Optimizer, e);
                cfg.optimizer.kind()
            }
        };
        if kind == OptimizerKind::Sgd && momentum.is_none() {
            err(&mut c, Field::Momentum, "a number ≥ 0".into());
        }
        // The preset's other settings while the kind is unchanged, the kind's defaults otherwise.
        let mut optimizer = if cfg.optimizer.kind() == kind {
            cfg.optimizer.clone()
        } else {
            OptimizerConfig::default_of(kind, lr)
        };
        match &mut optimizer {
            OptimizerConfig::Sgd {
                lr: l,
                momentum: m,
                weight_decay: w,
                ..
            } => {
                *l = lr;
                *m = momentum.unwrap_or(0.0);
                *w = wd;
            }
            OptimizerConfig::Adam {
                lr: l,
                weight_decay: w,
                ..
            }
            | OptimizerConfig::AdamW {
                lr: l,
                weight_decay: w,
                ..
            } => {
                *l = lr;
                *w = wd;
            }
        }
        cfg.optimizer = optimizer;

        // LR schedule: the preset's parameters while the kind is unchanged, defaults otherwise.
        let warmup = v(Field::Warmup).parse::<u64>();
        let sched_kind = v(Field::LrSchedule);
        let milestones: Result<Vec<u64>, _> = v(Field::Milestones)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse::<u64>)
            .collect();
        let mut sched = match sched_kind.parse::<LrScheduleKind>() {
            Ok(k) if k == cfg.lr_schedule.kind() => cfg.lr_schedule.clone(),
            Ok(k) => k.default_for(&LrDefaults {
                base_lr: lr,
                total_steps: c.total_steps,
                epochs,
            }),
            Err(e) => {
                err(&mut c, Field::LrSchedule, e.to_string());
                cfg.lr_schedule.clone()
            }
        };
        if sched.kind().has_field(WARMUP_KEY) {
            match warmup.ok().and_then(|w| i64::try_from(w).ok()) {
                Some(w) => match sched.with_param(WARMUP_KEY, toml::Value::Integer(w)) {
                    Ok(s) => sched = s,
                    Err(e) => err(&mut c, Field::Warmup, e),
                },
                None => err(&mut c, Field::Warmup, "a whole number of steps".into()),
            }
        }
        if sched.kind().has_field(MILESTONES_KEY) {
            let ms = milestones.ok().and_then(|ms| {
                ms.into_iter()
                    .map(|m| i64::try_from(m).ok().map(toml::Value::Integer))
                    .collect::<Option<Vec<_>>>()
            });
            match ms {
                Some(ms) => match sched.with_param(MILESTONES_KEY, toml::Value::Array(ms)) {
                    Ok(s) => sched = s,
                    Err(e) => err(&mut c, Field::Milestones, e),
                },
                None => err(
                    &mut c,
                    Field::Milestones,
                    "epochs separated by commas, e.g. 30,60,80".into(),
                ),
            }
        }
        cfg.lr_schedule = sched;

        let mode = v(Field::Mode);
        match mode.parse::<PrecisionMode>() {
            Ok(m) => cfg.precision.mode = m,
            Err(_) => err(
                &mut c,
                Field::Mode,
                format!("{mode} is not a precision mode"),
            ),
        }
        // The schedule's other settings (delay, window) are kept while its kind is.
        let cpt = self.cpt(&mut c, cfg.precision.schedule.as_ref());
        cfg.precision.schedule = cpt.clone();
        match v(Field::Zero).parse() {
            Ok(z) => cfg.devices.zero = z,
            Err(_) => err(&mut c, Field::Zero, "0 or 1".into()),
        }

        match DeviceSpec::parse(&v(Field::Devices)) {
            Ok(d) => cfg.devices.devices = d,
            Err(e) => err(&mut c, Field::Devices, e),
        }
        match v(Field::Threads).as_str() {
            "" | "auto" => cfg.devices.threads = None,
            t => match t.parse::<usize>() {
                Ok(n) if n > 0 => cfg.devices.threads = Some(n),
                _ => err(&mut c, Field::Threads, "auto or a whole number ≥ 1".into()),
            },
        }

        // What only the whole config can tell: every invalid field at once (a field whose
        // text did not parse is marked already; its placeholder is not judged again).
        let mut general = Vec::new();
        for e in validate_all(&cfg, &self.base) {
            if let ConfigError::Invalid {
                field, expected, ..
            } = &e
            {
                if setting_keys.contains(field) {
                    if c.setting_error(field).is_none() {
                        c.setting_errors.push((field.clone(), expected.clone()));
                    }
                    continue;
                }
            }
            let (field, msg) = match &e {
                ConfigError::Invalid {
                    field, expected, ..
                } => (field_for(field), expected.clone()),
                other => (None, other.to_string()),
            };
            match field {
                Some(f) if c.error(f).is_some() => {}
                Some(f) => err(&mut c, f, msg),
                None => general.push(e.to_string()),
            }
        }
        if !general.is_empty() {
            c.general = Some(general.join("\n"));
        }
        let ctx = LrContext {
            base_lr: lr,
            total_steps: c.total_steps.max(1),
            steps_per_epoch: c.steps_per_epoch.max(1),
            global_batch: batch.max(1) as u64,
            momentum: cfg.optimizer.momentum_kind(),
        };
        if c.total_steps > 0 && lr_parsed.is_some() {
            match cfg.lr_schedule.validate(&ctx) {
                Ok(()) => {
                    c.lr_curve = sample_steps(c.total_steps, 240)
                        .map(|t| (t as f64, cfg.lr_schedule.lr_at(t, &ctx)))
                        .collect();
                }
                Err(e) => {
                    let f = match e.field() {
                        Some("optimizer.lr") => Field::Lr,
                        Some(f) if f.contains("warmup") && f.ends_with("steps") => Field::Warmup,
                        Some(f) if f.contains("milestones") => Field::Milestones,
                        _ => Field::LrSchedule,
                    };
                    let (f, msg) = if self.visible().contains(&f) {
                        (f, in_place(&e))
                    } else {
                        (Field::LrSchedule, e.to_string())
                    };
                    err(&mut c, f, msg);
                }
            }
        }
        if let (Some(s), true) = (&cpt, c.total_steps > 0) {
            match s.validate(c.total_steps) {
                Ok(()) => {
                    c.q_curve = sample_steps(c.total_steps, 240)
                        .map(|t| (t as f64, f64::from(s.q_fwd_at(t, c.total_steps))))
                        .collect();
                    c.cost_ratio = Some(s.cost_ratio_vs_static(c.total_steps));
                    c.mean_bits = Some(s.mean_bits(c.total_steps));
                }
                Err(e) => {
                    let msg = in_place(&e);
                    let f = match e.field().and_then(|f| f.rsplit('.').next()) {
                        Some("q_min") => Field::QMin,
                        Some("q_max") => Field::QMax,
                        Some("q_bwd") => Field::QBwd,
                        Some("cycles") => Field::Cycles,
                        _ => Field::Cpt,
                    };
                    err(&mut c, f, msg);
                }
            }
        }
        c.cpt = cpt;
        if let Some(m) = &self.machine {
            let (errors, warnings) = machine_checks(&cfg, m);
            for (f, e) in errors {
                err(&mut c, f, e);
            }
            c.warnings = warnings;
        }
        if c.errors.is_empty() && c.general.is_none() && c.setting_errors.is_empty() {
            c.config = Some(cfg.clone());
        }
        (c, cfg)
    }

    /// The CPT fields as a schedule; None for no schedule (field errors recorded in `c`).
    fn cpt(&self, c: &mut Check, was: Option<&PrecisionSchedule>) -> Option<PrecisionSchedule> {
        let v = |f: Field| self.values[f.idx()].trim().to_string();
        if v(Field::Cpt) == CPT_OFF {
            return None;
        }
        let kind = match v(Field::Cpt).parse::<PrecisionScheduleKind>() {
            Ok(k) => k,
            Err(e) => {
                c.errors.push((Field::Cpt, e.to_string()));
                return None;
            }
        };
        let mut s = match was {
            Some(w) if w.kind == kind => w.clone(),
            _ => PrecisionSchedule::new(kind),
        };
        let mut bits = |f: Field| match v(f).parse::<u32>() {
            Ok(b) => Some(b),
            Err(_) => {
                c.errors.push((f, "a whole number of bits".into()));
                None
            }
        };
        s.q_max = bits(Field::QMax)?;
        s.q_bwd = match v(Field::QBwd).as_str() {
            "" => None,
            _ => Some(bits(Field::QBwd)?),
        };
        if kind == PrecisionScheduleKind::Static {
            s.q_min = s.q_min.min(s.q_max);
            return Some(s);
        }
        s.q_min = bits(Field::QMin)?;
        s.cycles = match v(Field::Cycles).parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                c.errors.push((Field::Cycles, "a whole number ≥ 1".into()));
                return None;
            }
        };
        Some(s)
    }

    /// One line describing the form's run, for the A/B prompt and logs.
    pub fn summary(&self) -> String {
        let cpt = self.value(Field::Cpt);
        let prec = if cpt == CPT_OFF {
            self.value(Field::Mode).to_string()
        } else if cpt == "static" {
            format!("static {} bits", self.value(Field::QMax))
        } else {
            format!(
                "{cpt} {}–{} bits",
                self.value(Field::QMin),
                self.value(Field::QMax)
            )
        };
        format!(
            "{} · {} · {} lr {} · {}",
            self.value(Field::Name),
            self.value(Field::Model),
            self.value(Field::Optimizer),
            self.value(Field::Lr),
            prec
        )
    }
}

/// A schedule error shown under its own field: the field name is already there.
fn in_place(e: &crate::schedule::ScheduleError) -> String {
    match e {
        crate::schedule::ScheduleError::Invalid { expected, got, .. } => {
            format!("must be {expected}, got {got}")
        }
        other => other.to_string(),
    }
}

/// Every validation error of `cfg`, not just the first: after each error the field it names is
/// given `fallback`'s value (the preset's) and the config is checked again, until it passes,
/// an error repeats, or a field cannot be patched.
pub fn validate_all(cfg: &RunConfig, fallback: &RunConfig) -> Vec<ConfigError> {
    let mut out: Vec<ConfigError> = Vec::new();
    let mut cur = cfg.clone();
    for _ in 0..16 {
        let Err(e) = cur.validate() else { break };
        let ConfigError::Invalid { field, .. } = &e else {
            out.push(e);
            break;
        };
        let key = field.clone();
        let seen = out
            .iter()
            .any(|o| matches!(o, ConfigError::Invalid { field, .. } if *field == key));
        if seen {
            break;
        }
        out.push(e);
        match patched(&cur, fallback, &key) {
            Some(c) => cur = c,
            None => break,
        }
    }
    out
}

/// `cur` with the dotted `key` taken from `fallback` (removed where `fallback` has none);
/// None when that changes nothing or does not make a config.
fn patched(cur: &RunConfig, fallback: &RunConfig, key: &str) -> Option<RunConfig> {
    let table = |c: &RunConfig| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => Some(t),
        _ => None,
    };
    let mut t = table(cur)?;
    let f = table(fallback)?;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts.split_last()?;
    let mut src = Some(&f);
    for p in path {
        src = src.and_then(|t| t.get(*p)).and_then(|v| v.as_table());
    }
    let src = src.and_then(|t| t.get(*last)).cloned();
    let mut dst = &mut t;
    for p in path {
        dst = dst.get_mut(*p)?.as_table_mut()?;
    }
    if dst.get(*last) == src.as_ref() {
        return None;
    }
    match src {
        Some(v) => dst.insert(last.to_string(), v),
        None => dst.remove(*last),
    };
    toml::Value::Table(t).try_into().ok()
}

/// `tree` with the setting `key` typed as `text` (a TOML value, as `--set` reads it; empty:
/// unset), checked by the config's deserializer.
fn with_setting(tree: &mut toml::Table, key: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        let parts: Vec<&str> = key.split('.').collect();
        let (last, path) = parts.split_last().ok_or("an empty key")?;
        let mut t = &mut *tree;
        for p in path {
            match t.get_mut(*p).and_then(toml::Value::as_table_mut) {
                Some(sub) => t = sub,
                None => return Ok(()),
            }
        }
        t.remove(*last);
    } else {
        let o: Override = format!("{key}={text}")
            .parse()
            .map_err(|e: ConfigError| e.to_string())?;
        crate::config::apply_override(tree, &o).map_err(|e| e.to_string())?;
    }
    use serde::Deserialize;
    RunConfig::deserialize(toml::Value::Table(tree.clone()))
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// A choice of one of the form's own fields, described from its kind's list.
fn describe_choice(f: Field, name: &str) -> String {
    use clap::ValueEnum;
    let d = match f {
        Field::Model => name.parse::<ModelKind>().ok().and_then(|k| {
            k.to_possible_value()
                .and_then(|v| v.get_help().map(|h| h.to_string()))
        }),
        Field::Optimizer => name
            .parse::<OptimizerKind>()
            .ok()
            .map(|k| k.describe().to_string()),
        Field::LrSchedule => name
            .parse::<LrScheduleKind>()
            .ok()
            .map(|k| k.describe().to_string()),
        Field::Mode => name
            .parse::<PrecisionMode>()
            .ok()
            .map(|k| k.describe().to_string()),
        Field::Cpt if name == CPT_OFF => Some("full precision: no fake quantization".into()),
        Field::Cpt => name
            .parse::<PrecisionScheduleKind>()
            .ok()
            .map(|k| k.describe().to_string()),
        Field::Zero => name
            .parse::<crate::config::ZeroStage>()
            .ok()
            .map(|z| z.describe().to_string()),
        _ => None,
    };
    d.unwrap_or_default()
}

/// The form field a config validation error names.
fn field_for(key: &str) -> Option<Field> {
    Some(match key {
        "name" => Field::Name,
        "train.batch_size" | "train.grad_accum" => Field::Batch,
        "train.epochs" => Field::Epochs,
        "optimizer.lr" => Field::Lr,
        "optimizer.momentum" | "optimizer.nesterov" => Field::Momentum,
        "optimizer.weight_decay" => Field::WeightDecay,
        "devices.devices" => Field::Devices,
        "devices.threads" => Field::Threads,
        "devices.zero" => Field::Zero,
        k if k.starts_with("optimizer.") => Field::Optimizer,
        k if k.starts_with("data.") => Field::Data,
        k if k.starts_with("model.") => Field::Model,
        k if k.starts_with("lr_schedule") => Field::LrSchedule,
        k if k.starts_with("precision") => Field::Mode,
        _ => return None,
    })
}

/// The `[lr_schedule]` keys the form edits (shown for the kinds that have them).
const WARMUP_KEY: &str = "warmup_num_steps";
const MILESTONES_KEY: &str = "milestones";

// ---- drawing ----

/// The form's area and the previews' beside it.
pub fn layout(area: Rect) -> (Rect, Rect) {
    let form_w = if area.width >= 120 {
        area.width * 2 / 5
    } else {
        (area.width * 11 / 20).max(40).min(area.width)
    };
    let [form, side] =
        Layout::horizontal([Constraint::Length(form_w), Constraint::Min(0)]).areas(area);
    (form, side)
}

pub fn draw(f: &mut Frame, area: Rect, s: &SetupState) {
    let (form, side) = layout(area);
    draw_form(f, form, s);
    draw_previews(f, side, s);
    if let Some(p) = &s.picker {
        draw_picker(f, area, s, p);
    }
}

/// The choices of the focused field over the Setup view, each with its description.
fn draw_picker(f: &mut Frame, area: Rect, s: &SetupState, p: &Picker) {
    let name_w = p
        .options
        .iter()
        .map(|o| o.0.chars().count())
        .max()
        .unwrap_or(4);
    let desc_w = p
        .options
        .iter()
        .map(|o| o.1.chars().count())
        .max()
        .unwrap_or(0);
    let w = (name_w + desc_w + 7).clamp(24, area.width.saturating_sub(2) as usize) as u16;
    let h = (p.options.len() + 3).min(area.height.saturating_sub(2) as usize) as u16;
    let rect = Rect {
        x: area.x + (area.width.saturating_sub(w)) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    let title = format!("{} · ↑↓ Enter picks · Esc keeps", s.focus.label());
    let block = panel(&title, true);
    let inner = block.inner(rect);
    f.render_widget(ratatui::widgets::Clear, rect);
    f.render_widget(block, rect);
    let rows = inner.height as usize;
    let first = super::ui::list_offset(p.cursor, rows);
    let lines: Vec<Line> = p
        .options
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, (name, desc))| {
            let text = clip(&format!(" {name:<name_w$}  {desc}"), inner.width as usize);
            if i == p.cursor {
                Line::styled(text, Style::default().add_modifier(Modifier::REVERSED))
            } else {
                Line::from(vec![
                    Span::raw(format!(" {name:<name_w$}  ")),
                    Span::styled(
                        clip(desc, (inner.width as usize).saturating_sub(name_w + 3)),
                        theme::muted(),
                    ),
                ])
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

/// Error lines a field shows when it is not focused (the focused one shows all of them).
const ERROR_LINES: usize = 2;
const LABEL_W: usize = 13;

/// One line of the form, with the row it belongs to (its row or its error; None: a heading).
pub type FormLine = (Option<Row>, Line<'static>);

/// The widest label column: longer setting names are cut with "…".
const LABEL_MAX: usize = 20;

/// The form as lines; and the lines of the focused row (its row, its last error line).
pub fn form_lines(s: &SetupState, width: usize) -> (Vec<FormLine>, (usize, usize)) {
    let rows = s.rows();
    // The form's own fields in one column; the settings, with longer names, in another.
    let setting_w = rows
        .iter()
        .filter(|r| matches!(r, Row::Setting(_)))
        .map(|r| r.label().chars().count())
        .max()
        .unwrap_or(LABEL_W)
        .clamp(LABEL_W, LABEL_MAX)
        .min(width / 2);
    let err_w = width.saturating_sub(3).max(8);
    let mut lines: Vec<FormLine> = Vec::new();
    let mut focus_line = 0;
    if let Some(a) = &s.ab_first {
        lines.push((
            None,
            Line::styled(
                clip(
                    &format!("A: {} — set up B, then c (Esc forgets A)", a.summary),
                    width,
                ),
                Style::default().fg(theme::ACCENT_B),
            ),
        ));
    }
    let mut group = None;
    for row in rows {
        // The settings under a heading per section.
        if matches!(row, Row::Setting(_)) && group != Some(row.group()) {
            group = Some(row.group());
            let title = format!("── {} ", row.group().title());
            let fill = width.saturating_sub(title.chars().count());
            lines.push((
                None,
                Line::styled(format!("{title}{}", "─".repeat(fill)), theme::muted()),
            ));
        }
        let focused = row == s.focus;
        if focused {
            focus_line = lines.len();
        }
        let label_w = match row {
            Row::Field(_) => LABEL_W,
            Row::Setting(_) => setting_w,
        };
        let val_w = width.saturating_sub(label_w + 2).max(4);
        let (err, warn, placeholder, changed) = match &row {
            Row::Field(field) => {
                let err = s.check.error(*field);
                let raw = s.value(*field);
                let placeholder = match field {
                    Field::Data => "(synthetic)",
                    Field::QBwd => "(= q_max)",
                    _ => "",
                };
                let changed = s.pristine.get(field.idx()).is_some_and(|p| p != raw);
                (
                    err,
                    s.check.warning(*field).filter(|_| err.is_none()),
                    placeholder,
                    changed,
                )
            }
            Row::Setting(k) => (
                s.check.setting_error(k),
                None,
                "(unset)",
                s.settings.get(k).is_some_and(|t| s.setting_changed(k, t)),
            ),
        };
        let raw = s.row_text(&row);
        let is_choice = !s.options(&row).is_empty();
        let label_style = if err.is_some() {
            Style::default().fg(theme::BAD)
        } else if changed || warn.is_some() {
            Style::default().fg(theme::WARN)
        } else {
            theme::muted()
        };
        let mut val_style = Style::default();
        if err.is_some() {
            val_style = val_style.fg(theme::BAD);
        }
        // ✗ an error, ! a warning, • changed from the preset.
        let mark = match (err.is_some(), warn.is_some(), changed) {
            (true, _, _) => "✗",
            (false, true, _) => "!",
            (false, false, true) => "•",
            _ => " ",
        };
        let mut spans = vec![Span::styled(
            format!("{mark}{:<label_w$} ", clip(&row.label(), label_w)),
            label_style,
        )];
        match (&s.editing, focused) {
            (Some(buf), true) => spans.extend(editing_spans(buf, val_w, val_style)),
            _ => {
                let shown = if raw.is_empty() {
                    placeholder.to_string()
                } else if focused && is_choice {
                    format!("◂ {raw} ▸")
                } else {
                    raw.clone()
                };
                let shown = if row == Field::Data {
                    clip_left(&shown, val_w)
                } else {
                    clip(&shown, val_w)
                };
                let style = if raw.is_empty() && !focused {
                    theme::muted()
                } else if focused {
                    val_style.add_modifier(Modifier::REVERSED)
                } else {
                    val_style
                };
                spans.push(Span::styled(shown, style));
            }
        }
        lines.push((Some(row.clone()), Line::from(spans)));
        let notes = err
            .map(|e| (e, theme::BAD))
            .into_iter()
            .chain(warn.map(|w| (w, theme::WARN)))
            .chain(
                s.completion
                    .as_deref()
                    .filter(|_| focused && s.editing.is_some())
                    .map(|c| (c, theme::WARN)),
            );
        for (text, colour) in notes {
            let wrapped = wrap(text, err_w);
            let keep = if focused { wrapped.len() } else { ERROR_LINES };
            let cut = wrapped.len() > keep;
            for (i, l) in wrapped.iter().take(keep).enumerate() {
                let text = if cut && i + 1 == keep {
                    clip(&format!("{l} …"), err_w)
                } else {
                    l.clone()
                };
                lines.push((
                    Some(row.clone()),
                    Line::styled(format!("   {text}"), Style::default().fg(colour)),
                ));
            }
        }
    }
    if let Some(g) = &s.check.general {
        for (i, l) in wrap(g, width.saturating_sub(2).max(8))
            .into_iter()
            .enumerate()
        {
            let lead = if i == 0 { "✗ " } else { "  " };
            lines.push((
                None,
                Line::styled(format!("{lead}{l}"), Style::default().fg(theme::BAD)),
            ));
        }
    }
    if let Some(e) = &s.edit_error {
        let text = format!("edited config not taken (e reopens your text): {e}");
        for (i, l) in wrap(&text, width.saturating_sub(2).max(8))
            .into_iter()
            .enumerate()
        {
            let lead = if i == 0 { "✗ " } else { "  " };
            lines.push((
                None,
                Line::styled(format!("{lead}{l}"), Style::default().fg(theme::BAD)),
            ));
        }
    }
    let focus_end = lines
        .iter()
        .rposition(|(r, _)| r.as_ref() == Some(&s.focus))
        .unwrap_or(focus_line);
    (lines, (focus_line, focus_end))
}

/// The line being edited in `w` columns: the part before the cursor cut from the left so the
/// cursor stays in view.
fn editing_spans(buf: &LineEdit, w: usize, style: Style) -> Vec<Span<'static>> {
    let (before, at, after) = buf.split();
    let room = w.saturating_sub(1);
    let before = clip_left(before, room);
    let left = room.saturating_sub(before.chars().count());
    let after = clip(after, left);
    let at = at.map_or("▏".to_string(), String::from);
    vec![
        Span::styled(before, style),
        Span::styled(at, style.add_modifier(Modifier::REVERSED)),
        Span::styled(after, style),
    ]
}

/// The first line shown of `n` lines in `rows` rows: the focused field and its error (as much
/// as fits, with the line after it) in view, then moved by the wheel's `scroll`.
pub fn form_offset(n: usize, focus: (usize, usize), rows: usize, scroll: usize) -> usize {
    let max = n.saturating_sub(rows);
    let (first, last) = focus;
    let base = (last + 2).saturating_sub(rows).min(first).min(max);
    (base + scroll).min(max)
}

/// The form panel's inner area.
pub fn form_inner(form: Rect) -> Rect {
    Block::bordered().inner(form)
}

/// The index in `rows()` of the row drawn at screen row `y` of the form, if any.
pub fn field_at(s: &SetupState, form: Rect, y: u16) -> Option<usize> {
    let inner = form_inner(form);
    if y < inner.y || y >= inner.y + inner.height {
        return None;
    }
    let (lines, focus_line) = form_lines(s, inner.width as usize);
    let off = form_offset(
        lines.len(),
        focus_line,
        inner.height as usize,
        s.form_scroll,
    );
    let row = lines.get(off + (y - inner.y) as usize)?.0.clone()?;
    s.rows().iter().position(|r| *r == row)
}

fn draw_form(f: &mut Frame, area: Rect, s: &SetupState) {
    let mut title = format!("Setup · preset {}", s.preset);
    if s.modified() {
        title.push_str(" · modified");
    }
    let block = panel(&title, true);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (lines, focus_line) = form_lines(s, inner.width as usize);
    let rows = inner.height as usize;
    let n = lines.len();
    let offset = form_offset(n, focus_line, rows, s.form_scroll);
    let visible: Vec<Line> = lines
        .into_iter()
        .skip(offset)
        .take(rows)
        .map(|l| l.1)
        .collect();
    f.render_widget(Paragraph::new(visible), inner);
    // More above or below: a mark on the border.
    let more = |f: &mut Frame, y: u16, c: &str| {
        let x = area.x + area.width.saturating_sub(2);
        f.buffer_mut().set_string(x, y, c, theme::border(true));
    };
    if offset > 0 {
        more(f, area.y, "▲");
    }
    if offset + rows < n {
        more(f, area.y + area.height.saturating_sub(1), "▼");
    }
}

fn draw_previews(f: &mut Frame, area: Rect, s: &SetupState) {
    let c = &s.check;
    let inner_w = area.width.saturating_sub(2) as usize;
    let est = if c.spe_estimated { " (est.)" } else { "" };
    let mut lines = vec![Line::from(clip(
        &format!(
            "{} steps = {}/epoch × {}{est}",
            c.total_steps,
            c.steps_per_epoch,
            s.value(Field::Epochs)
        ),
        inner_w,
    ))];
    let cpt = s.value(Field::Cpt);
    match (c.cost_ratio, c.mean_bits) {
        (Some(r), Some(m)) if cpt != "static" => lines.push(Line::from(vec![
            Span::raw("GBitOps "),
            Span::styled(
                format!("{r:.2}× static"),
                Style::default()
                    .fg(theme::GOOD)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(clip(
                &format!(" · mean {m:.1} bits"),
                inner_w.saturating_sub(21),
            )),
        ])),
        _ if cpt == CPT_OFF => lines.push(Line::from(clip(
            "full precision: no fake quantization",
            inner_w,
        ))),
        (Some(_), _) => lines.push(Line::from("GBitOps 1.00× static (no cycling)")),
        _ => lines.push(Line::from("GBitOps: -")),
    }
    for n in &c.notes {
        lines.push(Line::styled(
            clip(n, inner_w),
            Style::default().fg(theme::WARN),
        ));
    }
    if let Some(m) = memory_preview(c) {
        lines.push(Line::from(clip(&m, inner_w)));
    }
    lines.push(if c.ok() {
        Line::styled(
            clip("ready: s starts · c for an A/B pair", inner_w),
            Style::default().fg(theme::GOOD),
        )
    } else {
        Line::styled(
            clip("fix the marked fields to start", inner_w),
            Style::default().fg(theme::BAD),
        )
    });
    let est_h = lines.len() as u16 + 2;
    let [lr_a, q_a, est_a] = Layout::vertical([
        Constraint::Ratio(1, 2),
        Constraint::Ratio(1, 2),
        Constraint::Length(est_h),
    ])
    .areas(area);
    let total = c.total_steps.max(1) as f64;
    let lr_title = format!("lr(t) · {}", s.value(Field::LrSchedule));
    let lr_max = c.lr_curve.iter().map(|p| p.1).fold(0.0, f64::max);
    charts::draw(
        f,
        lr_a,
        &Plot {
            title: &lr_title,
            focused: false,
            x: charts::XAxis::steps(total),
            y: charts::YAxis::Auto {
                lo: 0.0,
                hi: if lr_max > 0.0 { lr_max } else { 1.0 },
            },
            series: vec![charts::line("lr", &c.lr_curve, theme::LR)],
            empty: "fix the marked fields to see lr(t)",
        },
    );
    let mode_bits = match s.value(Field::Mode) {
        "fp16" | "bf16" => 16.0,
        _ => 32.0,
    };
    let flat;
    let (q_series, q_title) = match (cpt, c.cpt.as_ref()) {
        (CPT_OFF, _) | (_, None) => {
            flat = vec![(0.0, mode_bits), (total, mode_bits)];
            (
                flat.as_slice(),
                format!("q(t) · {} full precision", s.value(Field::Mode)),
            )
        }
        ("static", Some(p)) => {
            let b = f64::from(p.q_max);
            flat = vec![(0.0, b), (total, b)];
            (flat.as_slice(), format!("q(t) · static {} bits", p.q_max))
        }
        (_, Some(p)) => (
            c.q_curve.as_slice(),
            format!("q(t) · {cpt} {}–{} bits × {}", p.q_min, p.q_max, p.cycles),
        ),
    };
    charts::draw(
        f,
        q_a,
        &Plot {
            title: &q_title,
            focused: false,
            x: charts::XAxis::steps(total),
            y: charts::YAxis::Levels(q_series.iter().map(|p| p.1).collect()),
            series: vec![charts::step_line("q_fwd", q_series, theme::PRECISION)],
            empty: "fix the marked fields to see q(t)",
        },
    );
    f.render_widget(Paragraph::new(lines).block(panel("estimate", false)), est_a);
}

/// Memory per rank for a config (`cptlab estimate`'s totals), as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFigures {
    pub total_zero0: u64,
    pub total_zero1: u64,
    /// The stage the config uses.
    pub stage: u8,
}

/// Computes [`MemoryFigures`] outside the workbench's own code: the CLI installs the engine's
/// estimate ([`set_memory_estimator`]), so the TUI never builds a model itself.
pub type MemoryEstimator = fn(&RunConfig) -> Result<MemoryFigures, String>;

static MEMORY_ESTIMATOR: std::sync::OnceLock<MemoryEstimator> = std::sync::OnceLock::new();

type MemoryCache = Option<(RunConfig, Result<MemoryFigures, String>)>;

/// The last config estimated and its figures: the estimate runs a few CPU forwards, so it is
/// computed once per config change, not per frame.
static MEMORY_CACHE: std::sync::Mutex<MemoryCache> = std::sync::Mutex::new(None);

pub fn set_memory_estimator(f: MemoryEstimator) {
    let _ = MEMORY_ESTIMATOR.set(f);
}

/// "memory/rank: X (zero 0) · Y (zero 1)", the used stage marked; None without an estimator
/// or a valid config.
pub fn memory_preview(c: &Check) -> Option<String> {
    let estimator = MEMORY_ESTIMATOR.get()?;
    let cfg = c.config.as_ref().filter(|_| c.ok())?;
    let mut cache = MEMORY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.as_ref().is_none_or(|(k, _)| k != cfg) {
        *cache = Some((cfg.clone(), estimator(cfg)));
    }
    let (_, figures) = cache.as_ref()?;
    Some(match figures {
        Ok(m) => {
            let mark = |s: u8| if m.stage == s { "*" } else { "" };
            format!(
                "memory/rank {} zero0{} · {} zero1{}",
                charts::bytes(m.total_zero0 as f64),
                mark(0),
                charts::bytes(m.total_zero1 as f64),
                mark(1)
            )
        }
        Err(e) => format!("memory: {e}"),
    })
}

/// `text` wrapped to lines of at most `w` characters: at spaces where it can, keeping its own
/// line breaks; a word longer than a line is broken.
pub fn wrap(text: &str, w: usize) -> Vec<String> {
    let w = w.max(1);
    let mut out = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split(' ') {
            let wl = word.chars().count();
            if len > 0 && len + 1 + wl > w {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if wl > w {
                // Longer than a line: broken into lines of its own, the rest continues.
                let chars: Vec<char> = word.chars().collect();
                let mut chunks = chars.chunks(w).peekable();
                while let Some(c) = chunks.next() {
                    if chunks.peek().is_some() {
                        out.push(c.iter().collect());
                    } else {
                        line = c.iter().collect();
                        len = c.len();
                    }
                }
                continue;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            line.push_str(word);
            len += wl;
        }
        out.push(line);
    }
    out
}

/// `s` cut to `w` characters, with an ellipsis when cut.
pub fn clip(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` cut to its last `w` characters: the end of a path says most.
fn clip_left(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n + 1 - w.max(1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets::PresetStore;
    use crate::schedule::LrSchedule;

    fn form() -> SetupState {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PresetStore::new(dir.path()).load("quickstart").unwrap();
        SetupState::new(cfg, "quickstart", Some("synthetic:2048:512"))
    }

    #[test]
    fn errors_wrap_at_words_and_keep_their_line_breaks() {
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("aaa bbb ccc", 6), ["aaa", "bbb", "ccc"]);
        assert_eq!(wrap("one\ntwo three", 20), ["one", "two three"]);
        // A word longer than a line is broken, and nothing is lost.
        assert_eq!(wrap("ab cdefghij", 4), ["ab", "cdef", "ghij"]);
        assert!(wrap("", 5).is_empty());
        for w in 1..12 {
            let text = "must be at least 1, got 0: the evaluation batch is separate";
            let lines = wrap(text, w);
            assert!(
                lines.iter().all(|l| l.chars().count() <= w),
                "{w}: {lines:?}"
            );
            let joined: String = lines.concat().split_whitespace().collect();
            let want: String = text.split_whitespace().collect();
            assert_eq!(joined, want, "{w}");
        }
    }

    #[test]
    fn the_state_round_trips_every_field_as_typed() {
        let mut s = form();
        s.set(Field::Seed, "not a number");
        s.set(Field::Cpt, "RTH");
        let fields = s.fields();
        assert_eq!(fields.len(), Field::ALL.len());
        let mut t = form();
        assert!(!t.modified());
        t.restore_fields(&fields, None);
        assert_eq!(t.value(Field::Seed), "not a number");
        assert_eq!(t.value(Field::Cpt), "RTH");
        assert!(t.modified());
        assert_eq!(t.changed_fields(), vec![Field::Seed, Field::Cpt]);
        for f in Field::ALL {
            assert_eq!(Field::from_key(f.key()), Some(f));
        }
    }

    #[test]
    fn preset_round_trips_through_the_form() {
        let s = form();
        assert!(s.check.ok(), "{:?}", s.check.errors);
        let c = s.check.config.clone().unwrap();
        assert_eq!(c.data.source.as_deref(), Some("synthetic:2048:512"));
        assert_eq!(s.check.steps_per_epoch, 2048 / 64);
        assert_eq!(s.check.total_steps, 32 * 3);
        assert!(!s.check.lr_curve.is_empty());
    }

    #[test]
    fn invalid_values_are_marked_on_their_field() {
        let mut s = form();
        s.set(Field::Batch, "0");
        assert!(s.check.error(Field::Batch).is_some());
        assert!(!s.check.ok());
        s.set(Field::Batch, "4096");
        assert!(s.check.error(Field::Batch).unwrap().contains("larger"));
        s.set(Field::Batch, "64");
        s.set(Field::Cpt, "CR");
        s.set(Field::QMin, "9");
        assert!(s.check.error(Field::QMin).is_some(), "{:?}", s.check.errors);
        s.set(Field::QMin, "3");
        assert!(s.check.ok(), "{:?}", s.check.errors);
        let r = s.check.cost_ratio.unwrap();
        assert!(r > 0.2 && r < 1.0, "{r}");
        s.set(Field::Devices, "gpu");
        assert!(s.check.error(Field::Devices).is_some());
    }

    #[test]
    fn switching_optimizer_and_schedule_takes_defaults() {
        let mut s = form();
        s.set(Field::Optimizer, "adamw");
        s.set(Field::LrSchedule, "multi_step");
        let c = s.check.config.clone().unwrap();
        assert_eq!(c.optimizer.kind_name(), "adamw");
        assert!(matches!(c.lr_schedule, LrSchedule::MultiStep { .. }));
        s.set(Field::Milestones, "2,1");
        assert!(
            s.check.error(Field::Milestones).is_some(),
            "{:?}",
            s.check.errors
        );
    }
}
