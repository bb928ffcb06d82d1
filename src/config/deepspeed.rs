//! DeepSpeed JSON configs in: a `ds_config.json` read as [`Override`]s on a base `RunConfig`.
//!
//! The names, defaults and rules are DeepSpeed's (`deepspeed/runtime/config.py`,
//! `runtime/engine.py`'s optimizer choice, `runtime/lr_schedules.py`, `runtime/fp16/loss_scaler.py`):
//! - Batch: two of `train_batch_size`, `train_micro_batch_size_per_gpu` and
//!   `gradient_accumulation_steps` determine the third, with the world size of the base config's
//!   devices; all three must then agree (`train = micro × accumulation × world`).
//! - `"type": "Adam"` trains as AdamW unless `"adam_w_mode": false` (DeepSpeed's default), and
//!   without `torch_adam` DeepSpeed's fused Adam defaults `weight_decay` to 0.
//! - A section the JSON has replaces the base's (its missing keys take DeepSpeed's defaults); a
//!   section it lacks leaves the base alone. `"auto"` takes the base config's value (what the
//!   Hugging Face integration fills in from its own arguments), or where the base has none the
//!   default, which for `warmup_max_lr` and `total_num_steps` is the run's own lr and length.
//!
//! DeepSpeed silently ignores keys it does not know; here a near-miss of a key that matters
//! (`optimiser`) is an error, other unknown keys and known keys without meaning here (bucket
//! sizes, offload) are warnings returned with the overrides.
use std::path::Path;

use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::{Override, RunConfig};

/// Top-level keys that change the run.
pub const MAPPED_KEYS: &[&str] = &[
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "optimizer",
    "scheduler",
    "fp16",
    "bf16",
    "bfloat16",
    "zero_optimization",
    "gradient_clipping",
    "steps_per_print",
    "wall_clock_breakdown",
];

/// Top-level keys DeepSpeed knows that have no meaning here (listed as ignored).
pub const IGNORED_KEYS: &[&str] = &[
    "prescale_gradients",
    "gradient_predivide_factor",
    "gradient_allreduce_op",
    "sparse_gradients",
    "communication_data_type",
    "seq_parallel_communication_data_type",
    "amp",
    "torch_autocast",
    "activation_checkpointing",
    "flops_profiler",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "comet",
    "comms_logger",
    "dump_state",
    "disable_allgather",
    "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer",
    "memory_breakdown",
    "elasticity",
    "pipeline",
    "sparse_attention",
    "checkpoint",
    "data_types",
    "aio",
    "autotuning",
    "compression_training",
    "data_efficiency",
    "curriculum_learning",
    "progressive_layer_drop",
    "eigenvalue",
    "quantize_training",
    "dataloader_drop_last",
    "timers",
    "hybrid_engine",
    "compile",
    "nebula",
    "graph_harvesting",
    "weight_quantization",
    "tensor_parallel",
    "expert_parallel",
    "managed_gradient_accumulation",
    "use_data_before_expert_parallel_",
    "log_level",
    "vocabulary_size",
];

/// `zero_optimization` keys other than `stage`: communication and memory tuning.
const ZERO_IGNORED: &[&str] = &[
    "allgather_partitions",
    "allgather_bucket_size",
    "overlap_comm",
    "reduce_scatter",
    "reduce_bucket_size",
    "contiguous_gradients",
    "offload_optimizer",
    "offload_param",
    "cpu_offload",
    "cpu_offload_params",
    "cpu_offload_use_pin_memory",
    "sub_group_size",
    "elastic_checkpoint",
    "round_robin_gradients",
    "load_from_fp32_weights",
    "ignore_unused_parameters",
    "legacy_stage1",
    "use_multi_rank_bucket_allreduce",
    "zero_hpz_partition_size",
    "zero_quantized_weights",
    "zero_quantized_nontrainable_weights",
    "zero_quantized_gradients",
    "mics_shard_size",
    "mics_hierarchical_params_gather",
    "memory_efficient_linear",
    "pipeline_loading_checkpoint",
    "override_module_apply",
    "log_trace_cache_warnings",
    "stage3_prefetch_bucket_size",
    "stage3_param_persistence_threshold",
    "stage3_model_persistence_threshold",
    "stage3_max_live_parameters",
    "stage3_max_reuse_distance",
    "stage3_gather_16bit_weights_on_model_save",
    "stage3_gather_fp16_weights_on_model_save",
    "stage3_module_granularity_threshold",
    "stage3_use_all_reduce_for_fetch_params",
    "zenflow",
];

/// `fp16` keys mapped onto `precision.loss_scale`, with DeepSpeed's names.
const FP16_LOSS_SCALE: &[&str] = &[
    "loss_scale",
    "initial_scale_power",
    "loss_scale_window",
    "hysteresis",
    "consecutive_hysteresis",
    "min_loss_scale",
];
const FP16_IGNORED: &[&str] = &[
    "auto_cast",
    "fp16_master_weights_and_grads",
    "fp16_opt_level",
];
const BF16_IGNORED: &[&str] = &[
    "immediate_grad_update",
    "check_grad_overflow",
    "bf16_master_weights_and_grads",
    "bf16_optimizer_states",
];

const ADAM_PARAMS: &[&str] = &["lr", "betas", "eps", "weight_decay"];
const SGD_PARAMS: &[&str] = &["lr", "momentum", "dampening", "weight_decay", "nesterov"];
/// Optimizer arguments that change nothing here at their usual values.
const OPTIMIZER_IGNORED: &[&str] = &[
    "set_grad_none",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "max_grad_norm",
];

/// DeepSpeed's schedules: the JSON name, ours, and the parameters (the same names in both).
const SCHEDULES: &[(&str, &str, &[&str])] = &[
    (
        "WarmupLR",
        "warmup_lr",
        &[
            "warmup_min_lr",
            "warmup_max_lr",
            "warmup_num_steps",
            "warmup_type",
        ],
    ),
    (
        "WarmupDecayLR",
        "warmup_decay_lr",
        &[
            "total_num_steps",
            "warmup_min_lr",
            "warmup_max_lr",
            "warmup_num_steps",
            "warmup_type",
        ],
    ),
    (
        "WarmupCosineLR",
        "warmup_cosine_lr",
        &[
            "total_num_steps",
            "warmup_min_ratio",
            "warmup_num_steps",
            "cos_min_ratio",
            "warmup_type",
        ],
    ),
    (
        "OneCycle",
        "one_cycle",
        &[
            "cycle_min_lr",
            "cycle_max_lr",
            "decay_lr_rate",
            "cycle_first_step_size",
            "cycle_second_step_size",
            "cycle_first_stair_count",
            "cycle_second_stair_count",
            "decay_step_size",
            "cycle_momentum",
            "cycle_min_mom",
            "cycle_max_mom",
            "decay_mom_rate",
        ],
    ),
];

/// How close (normalized Damerau-Levenshtein) an unknown key must be to a known one to be
/// taken for a typo of it: one slip in an 8-letter key (`optimiser`) is 0.89.
const NEAR_MISS: f64 = 0.75;

/// Why a DeepSpeed config cannot be used; every variant names the file, most the key path.
#[derive(Debug, thiserror::Error)]
pub enum DeepSpeedError {
    #[error("{origin}: {message}")]
    Read { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "{origin}: train_batch_size {train} ≠ micro {micro} × accumulation {accum} × world {world} = {}",
        micro * accum * world
    )]
    Batch {
        origin: String,
        train: usize,
        micro: usize,
        accum: usize,
        world: usize,
    },
    #[error("{origin}: {key}: unknown key; did you mean {suggestion:?}? (DeepSpeed would silently ignore it)")]
    Typo {
        origin: String,
        key: String,
        suggestion: String,
    },
}

/// A DeepSpeed config as overrides, with what it said that changes nothing here.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepSpeedImport {
    /// Applied with `RunConfig::with_overrides`, before the command line's own flags.
    pub overrides: Vec<Override>,
    /// Ignored and unknown keys, one line each (the CLI prints them on stderr).
    pub warnings: Vec<String>,
    /// DeepSpeed's logging interval, applied as `train.log_every` (the step-event window).
    pub steps_per_print: Option<u64>,
    /// cptlab always records the time breakdown; this only informs.
    pub wall_clock_breakdown: Option<bool>,
}

impl DeepSpeedImport {
    /// `base` with the config applied (types checked; `validate` is the caller's).
    pub fn apply(&self, base: &RunConfig) -> Result<RunConfig, super::ConfigError> {
        base.with_overrides(&self.overrides)
    }
}

/// Reads `path` against `base` (whose devices give the world size and whose values `"auto"`
/// takes).
pub fn read(path: &Path, base: &RunConfig) -> Result<DeepSpeedImport, DeepSpeedError> {
    let origin = path.display().to_string();
    let bytes = crate::files::read_regular(path).map_err(|e| DeepSpeedError::Read {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| DeepSpeedError::Read {
        origin: origin.clone(),
        message: "not UTF-8 text; expected a DeepSpeed JSON config".into(),
    })?;
    parse(&text, &origin, base)
}

/// Parses DeepSpeed JSON `text`; `origin` (the file) prefixes every error.
pub fn parse(
    text: &str,
    origin: &str,
    base: &RunConfig,
) -> Result<DeepSpeedImport, DeepSpeedError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DeepSpeedError::Read {
        origin: origin.to_string(),
        message: format!("not valid JSON: {e}"),
    })?;
    let Value::Object(root) = value else {
        return Err(DeepSpeedError::Read {
            origin: origin.to_string(),
            message: "expected a JSON object of DeepSpeed settings".into(),
        });
    };
    let base_tree = toml::Table::try_from(base).expect("a RunConfig always serializes");
    let mut r = Reader {
        origin,
        base,
        base_tree: &base_tree,
        out: DeepSpeedImport {
            overrides: Vec::new(),
            warnings: Vec::new(),
            steps_per_print: None,
            wall_clock_breakdown: None,
        },
        ignored: Vec::new(),
    };
    r.check_keys(&root, "", MAPPED_KEYS, IGNORED_KEYS, true)?;
    r.train(&root)?;
    if let Some(v) = root.get("optimizer") {
        r.optimizer(v)?;
    }
    if let Some(v) = root.get("scheduler") {
        r.scheduler(v)?;
    }
    r.precision(&root)?;
    if let Some(v) = root.get("zero_optimization") {
        r.zero(v)?;
    }
    if let Some(v) = root.get("steps_per_print") {
        r.out.steps_per_print = r.count("steps_per_print", v)?.map(|n| n as u64);
        // DeepSpeed's logging interval is cptlab's step-event window (`train.log_every`).
        match r.out.steps_per_print {
            Some(0) => {
                return Err(r.err(
                    "steps_per_print",
                    "0: expected a positive number of steps between reports",
                ))
            }
            Some(n) => r.out.overrides.push(Override::new(
                "train.log_every",
                toml::Value::Integer(n as i64),
            )),
            None => {} // auto: the base's
        }
    }
    if let Some(v) = root.get("wall_clock_breakdown") {
        r.out.wall_clock_breakdown = r.boolean("wall_clock_breakdown", v)?;
    }
    if !r.ignored.is_empty() {
        let line = format!("ignored (no meaning in cptlab): {}", r.ignored.join(", "));
        r.warn(line);
    }
    Ok(r.out)
}

struct Reader<'a> {
    origin: &'a str,
    base: &'a RunConfig,
    base_tree: &'a toml::Table,
    out: DeepSpeedImport,
    /// Known keys without meaning here, listed in one warning at the end.
    ignored: Vec<String>,
}

fn is_auto(v: &Value) -> bool {
    v.as_str() == Some("auto")
}

/// `a.b` (or `b` at the top).
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The known key closest to `key`, when it is close enough to be a typo of it.
fn nearest<'k>(key: &str, known: impl IntoIterator<Item = &'k &'k str>) -> Option<&'k str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', ' '], "_");
    let key = norm(key);
    known
        .into_iter()
        .map(|k| (*k, strsim::normalized_damerau_levenshtein(&key, &norm(k))))
        .filter(|(_, s)| *s >= NEAR_MISS)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

impl Reader<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> DeepSpeedError {
        DeepSpeedError::Key {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn warn(&mut self, line: String) {
        self.out.warnings.push(format!("{}: {line}", self.origin));
    }

    /// Sorts the keys of `table` (at `prefix`) into mapped, ignored (a warning) and unknown.
    /// An unknown key close to a mapped one is an error; `lenient` (the top level, where
    /// DeepSpeed ignores what it does not know) makes other unknown keys warnings, otherwise
    /// they are errors too (DeepSpeed's own constructors reject them).
    fn check_keys(
        &mut self,
        table: &Map<String, Value>,
        prefix: &str,
        mapped: &[&str],
        ignored: &[&str],
        lenient: bool,
    ) -> Result<(), DeepSpeedError> {
        for key in table.keys() {
            let k = key.as_str();
            if mapped.contains(&k) {
                continue;
            }
            if ignored.contains(&k) {
                self.ignored.push(join(prefix, k));
                continue;
            }
            let path = join(prefix, k);
            let near_mapped = nearest(k, mapped);
            if let Some(s) = near_mapped {
                return Err(DeepSpeedError::Typo {
                    origin: self.origin.to_string(),
                    key: path,
                    suggestion: join(prefix, s),
                });
            }
            if !lenient {
                if let Some(s) = nearest(k, ignored) {
                    return Err(DeepSpeedError::Typo {
                        origin: self.origin.to_string(),
                        key: path,
                        suggestion: join(prefix, s),
                    });
                }
                return Err(self.err(
                    &path,
                    format!("unknown key; expected one of {}", mapped.join(", ")),
                ));
            }
            match nearest(k, ignored) {
                Some(s) => self.warn(format!(
                    "unknown key {path:?} ignored (did you mean {:?}?)",
                    join(prefix, s)
                )),
                None => self.warn(format!("unknown key {path:?} ignored")),
            }
        }
        Ok(())
    }

    fn object<'v>(
        &self,
        key: &str,
        v: &'v Value,
    ) -> Result<&'v Map<String, Value>, DeepSpeedError> {
        v.as_object()
            .ok_or_else(|| self.err(key, format!("expected a JSON object, got {v}")))
    }

    /// A non-negative integer (a float with no fraction too, as Python accepts); None for auto.
    fn count(&self, key: &str, v: &Value) -> Result<Option<usize>, DeepSpeedError> {
        if is_auto(v) {
            return Ok(None);
        }
        let n = v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 2f64.powi(53))
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                self.err(
                    key,
                    format!("expected a non-negative integer or \"auto\", got {v}"),
                )
            })?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n as u64 <= super::MAX_BATCH.max(super::MAX_STEPS))
            .map(Some)
            .ok_or_else(|| self.err(key, format!("{n} is too large")))
    }

    fn number(&self, key: &str, v: &Value) -> Result<Option<f64>, DeepSpeedError> {
        if is_auto(v) {
            return Ok(None);
        }
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| self.err(key, format!("expected a number or \"auto\", got {v}")))
    }

    fn boolean(&self, key: &str, v: &Value) -> Result<Option<bool>, DeepSpeedError> {
        if is_auto(v) {
            return Ok(None);
        }
        v.as_bool()
            .map(Some)
            .ok_or_else(|| self.err(key, format!("expected true, false or \"auto\", got {v}")))
    }

    /// A JSON value as the TOML value of a config field (numbers, booleans, strings, arrays of
    /// numbers). Integers stay integers so that count fields deserialize.
    fn to_toml(&self, key: &str, v: &Value) -> Result<toml::Value, DeepSpeedError> {
        Ok(match v {
            Value::Bool(b) => toml::Value::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => toml::Value::String(s.clone()),
            Value::Array(a) => toml::Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| self.to_toml(&format!("{key}[{i}]"), x))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(self.err(key, format!("expected a number, got {other}"))),
        })
    }

    /// The base config's table at `path` (`optimizer`, `lr_schedule`).
    fn base_table(&self, path: &str) -> Option<&toml::Table> {
        path.split('.').try_fold(self.base_tree, |t, p| {
            t.get(p).and_then(toml::Value::as_table)
        })
    }

    /// Batch (DeepSpeed's rule) and `gradient_clipping`, written as one `train` table so that
    /// a stale `micro_batch_size` or `grad_clip` of the base goes too.
    fn train(&mut self, root: &Map<String, Value>) -> Result<(), DeepSpeedError> {
        let get = |k: &str| root.get(k);
        let (tb, mb, ga) = (
            get("train_batch_size"),
            get("train_micro_batch_size_per_gpu"),
            get("gradient_accumulation_steps"),
        );
        let clip = get("gradient_clipping");
        if tb.is_none() && mb.is_none() && ga.is_none() && clip.is_none() {
            return Ok(());
        }
        let mut train = self
            .base_table("train")
            .cloned()
            .expect("a RunConfig has a train table");
        let opt = |k: &str, v: Option<&Value>| -> Result<Option<usize>, DeepSpeedError> {
            v.map(|v| self.count(k, v)).transpose().map(Option::flatten)
        };
        let train_batch = opt("train_batch_size", tb)?;
        let micro = opt("train_micro_batch_size_per_gpu", mb)?;
        // "auto" accumulation is the base's (the trainer's own setting, as in Hugging Face).
        let accum = match ga {
            Some(v) if is_auto(v) => Some(self.base.train.grad_accum),
            v => opt("gradient_accumulation_steps", v)?,
        };
        for (k, v) in [
            ("train_batch_size", train_batch),
            ("train_micro_batch_size_per_gpu", micro),
            ("gradient_accumulation_steps", accum),
        ] {
            if v == Some(0) {
                return Err(self.err(k, "must be greater than 0"));
            }
        }
        if train_batch.is_some() || micro.is_some() {
            let world = self.base.devices.devices.known_world_size();
            let batch_error = |t: usize, m: usize, a: usize, world: usize| DeepSpeedError::Batch {
                origin: self.origin.to_string(),
                train: t,
                micro: m,
                accum: a,
                world,
            };
            let (train_batch, accum) = match (train_batch, micro) {
                (Some(t), None) => {
                    // DeepSpeed: micro = train // world // accumulation, then the check.
                    let a = accum.unwrap_or(1);
                    if let Some(world) = world {
                        let m = t / world / a;
                        if m == 0 || m * a * world != t {
                            return Err(batch_error(t, m, a, world));
                        }
                    }
                    (t, a)
                }
                (t, Some(m)) => {
                    let world = world.ok_or_else(|| {
                        self.err(
                            "train_micro_batch_size_per_gpu",
                            format!(
                                "the world size of devices = {} is not known before the run; name the GPUs (cuda:0,1) or give train_batch_size instead",
                                self.base.devices.devices
                            ),
                        )
                    })?;
                    let a = match (accum, t) {
                        (Some(a), _) => a,
                        // DeepSpeed: accumulation = train // micro // world.
                        (None, Some(t)) => t / m / world,
                        (None, None) => 1,
                    };
                    let t = t.unwrap_or(m * a * world);
                    if a == 0 || t != m * a * world {
                        return Err(batch_error(t, m, a, world));
                    }
                    (t, a)
                }
                (None, None) => unreachable!("one of them is given"),
            };
            train.insert(
                "batch_size".into(),
                toml::Value::Integer(train_batch as i64),
            );
            train.insert("grad_accum".into(), toml::Value::Integer(accum as i64));
            // Derived from the two above, so that a later --batch-size stays consistent.
            train.remove("micro_batch_size");
        } else if ga.is_some_and(|v| !is_auto(v)) {
            return Err(self.err(
                "gradient_accumulation_steps",
                "needs train_batch_size or train_micro_batch_size_per_gpu beside it (DeepSpeed's rule: two determine the third)",
            ));
        }
        if let Some(v) = clip {
            match self.number("gradient_clipping", v)? {
                None => {} // auto: the base's
                Some(0.0) => {
                    // DeepSpeed's default: no clipping.
                    train.remove("grad_clip");
                }
                Some(c) if c > 0.0 => {
                    train.insert("grad_clip".into(), toml::Value::Float(c));
                }
                Some(c) => {
                    return Err(self.err(
                        "gradient_clipping",
                        format!("{c}: expected a positive norm, or 0 for no clipping"),
                    ))
                }
            }
        }
        self.out
            .overrides
            .push(Override::new("train", toml::Value::Table(train)));
        Ok(())
    }

    fn optimizer(&mut self, v: &Value) -> Result<(), DeepSpeedError> {
        let o = self.object("optimizer", v)?;
        self.check_keys(
            o,
            "optimizer",
            &["type", "params"],
            &["legacy_fusion"],
            false,
        )?;
        let ty = o
            .get("type")
            .ok_or_else(|| self.err("optimizer.type", "missing: expected Adam, AdamW or SGD"))?;
        let ty = ty
            .as_str()
            .ok_or_else(|| self.err("optimizer.type", format!("expected a name, got {ty}")))?;
        let empty = Map::new();
        let params = match o.get("params") {
            Some(p) => self.object("optimizer.params", p)?,
            None => &empty,
        };
        let lower = ty.to_ascii_lowercase();
        let (kind, names): (&str, &[&str]) = match lower.as_str() {
            "adam" | "adamw" => {
                let mut names = ADAM_PARAMS.to_vec();
                names.extend(["torch_adam", "adam_w_mode", "bias_correction", "amsgrad"]);
                self.check_keys(params, "optimizer.params", &names, OPTIMIZER_IGNORED, false)?;
                let flag = |k: &str, default: bool| -> Result<bool, DeepSpeedError> {
                    match params.get(k) {
                        Some(v) => Ok(self
                            .boolean(&format!("optimizer.params.{k}"), v)?
                            .unwrap_or(default)),
                        None => Ok(default),
                    }
                };
                let torch_adam = flag("torch_adam", false)?;
                // engine.py: the name AdamW, or adam_w_mode (default true), picks AdamW.
                let adam_w = lower == "adamw" || flag("adam_w_mode", true)?;
                if !flag("bias_correction", true)? {
                    return Err(self.err(
                        "optimizer.params.bias_correction",
                        "false is not supported here: cptlab's Adam always corrects the bias (torch.optim's semantics)",
                    ));
                }
                if flag("amsgrad", false)? {
                    return Err(self.err(
                        "optimizer.params.amsgrad",
                        "true is not supported here: cptlab's Adam and AdamW have no AMSGrad variant",
                    ));
                }
                let kind = if adam_w { "adamw" } else { "adam" };
                let mut t = self.optimizer_table(kind, params, ADAM_PARAMS)?;
                // DeepSpeed's fused Adam defaults weight_decay to 0; torch.optim.AdamW to 0.01.
                if !t.contains_key("weight_decay") && !torch_adam {
                    t.insert("weight_decay".into(), toml::Value::Float(0.0));
                }
                self.push_optimizer(t, params);
                return Ok(());
            }
            "sgd" => ("sgd", SGD_PARAMS),
            _ => {
                let ours: Vec<&str> = super::OptimizerKind::ALL.iter().map(|k| k.name()).collect();
                return Err(self.err(
                    "optimizer.type",
                    format!(
                        "{ty:?} is not an optimizer cptlab has: expected Adam, AdamW or SGD (cptlab's {})",
                        ours.join(", ")
                    ),
                ));
            }
        };
        self.check_keys(params, "optimizer.params", names, OPTIMIZER_IGNORED, false)?;
        let t = self.optimizer_table(kind, params, names)?;
        self.push_optimizer(t, params);
        Ok(())
    }

    /// `[optimizer]` of `kind` from DeepSpeed's `params`: given values, "auto" from the base.
    fn optimizer_table(
        &self,
        kind: &str,
        params: &Map<String, Value>,
        names: &[&str],
    ) -> Result<toml::Table, DeepSpeedError> {
        let base = self.base_table("optimizer");
        let mut t = toml::Table::new();
        t.insert("kind".into(), toml::Value::String(kind.into()));
        for name in names {
            let key = format!("optimizer.params.{name}");
            match params.get(*name) {
                Some(v) if is_auto(v) => {
                    if let Some(b) = base.and_then(|b| b.get(*name)) {
                        t.insert(name.to_string(), b.clone());
                    }
                }
                Some(v) => {
                    let value = match *name {
                        "nesterov" => toml::Value::Boolean(v.as_bool().ok_or_else(|| {
                            self.err(&key, format!("expected true or false, got {v}"))
                        })?),
                        "betas" => {
                            let a = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                                self.err(&key, format!("expected [beta1, beta2], got {v}"))
                            })?;
                            let b = a
                                .iter()
                                .enumerate()
                                .map(|(i, x)| {
                                    x.as_f64().map(toml::Value::Float).ok_or_else(|| {
                                        self.err(
                                            &format!("{key}[{i}]"),
                                            format!("expected a number, got {x}"),
                                        )
                                    })
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            toml::Value::Array(b)
                        }
                        _ => toml::Value::Float(self.number(&key, v)?.expect("auto handled above")),
                    };
                    t.insert(name.to_string(), value);
                }
                None => {}
            }
        }
        if !t.contains_key("lr") {
            // torch.optim's and DeepSpeed's fused Adam's default.
            t.insert("lr".into(), toml::Value::Float(1e-3));
        }
        Ok(t)
    }

    fn push_optimizer(&mut self, t: toml::Table, params: &Map<String, Value>) {
        if params.contains_key("max_grad_norm") {
            self.warn(
                "optimizer.params.max_grad_norm is not an optimizer setting (DeepSpeed warns the same); use \"gradient_clipping\"".into(),
            );
        }
        self.out
            .overrides
            .push(Override::new("optimizer", toml::Value::Table(t)));
    }

    fn scheduler(&mut self, v: &Value) -> Result<(), DeepSpeedError> {
        let o = self.object("scheduler", v)?;
        self.check_keys(o, "scheduler", &["type", "params"], &[], false)?;
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err("scheduler.type", "missing or not a name"))?;
        let names: Vec<&str> = SCHEDULES.iter().map(|s| s.0).collect();
        if ty == "LRRangeTest" {
            return Err(self.err(
                "scheduler.type",
                "LRRangeTest is not a training schedule here: run `cptlab range-test` for CPT's precision range test, or `cptlab schedule lr NAME` to look at a schedule, and train with WarmupLR, WarmupDecayLR, WarmupCosineLR or OneCycle",
            ));
        }
        let Some((_, kind, params_known)) = SCHEDULES.iter().find(|s| s.0 == ty) else {
            return Err(self.err(
                "scheduler.type",
                format!(
                    "{ty:?}: cptlab maps DeepSpeed's {}; for PyTorch's schedules use --set lr_schedule.kind=… (cptlab schedule lr lists them)",
                    names.join(", ")
                ),
            ));
        };
        let empty = Map::new();
        let params = match o.get("params") {
            Some(p) => self.object("scheduler.params", p)?,
            None => &empty,
        };
        let mut known = params_known.to_vec();
        known.push("last_batch_iteration");
        self.check_keys(params, "scheduler.params", &known, &[], false)?;
        if let Some(v) = params.get("last_batch_iteration") {
            if v.as_i64() != Some(-1) {
                return Err(self.err(
                    "scheduler.params.last_batch_iteration",
                    format!("{v}: only -1 (a fresh schedule); a run continues with `cptlab run --resume`"),
                ));
            }
        }
        let base = self.base_table("lr_schedule");
        let mut t = toml::Table::new();
        t.insert("kind".into(), toml::Value::String(kind.to_string()));
        for name in params_known.iter() {
            let key = format!("scheduler.params.{name}");
            match params.get(*name) {
                Some(v) if is_auto(v) => {
                    if let Some(b) = base.and_then(|b| b.get(*name)) {
                        t.insert(name.to_string(), b.clone());
                    }
                }
                Some(v) => {
                    t.insert(name.to_string(), self.to_toml(&key, v)?);
                }
                None => {}
            }
        }
        if *kind == "one_cycle" {
            for req in ["cycle_min_lr", "cycle_max_lr"] {
                if !t.contains_key(req) {
                    return Err(self.err(
                        &format!("scheduler.params.{req}"),
                        "missing: OneCycle needs cycle_min_lr and cycle_max_lr",
                    ));
                }
            }
        }
        // Type-check now, so that a bad value names the JSON key rather than the override.
        if let Err(e) = crate::schedule::lr::LrSchedule::deserialize(toml::Value::Table(t.clone()))
        {
            return Err(self.err("scheduler.params", e.to_string().trim().to_string()));
        }
        self.out
            .overrides
            .push(Override::new("lr_schedule", toml::Value::Table(t)));
        Ok(())
    }

    /// `fp16` and `bf16` onto `precision.mode` and `precision.loss_scale`.
    fn precision(&mut self, root: &Map<String, Value>) -> Result<(), DeepSpeedError> {
        let fp16 = match root.get("fp16") {
            Some(v) => Some(self.object("fp16", v)?),
            None => None,
        };
        let (bf16_key, bf16) = match (root.get("bf16"), root.get("bfloat16")) {
            (Some(v), _) => ("bf16", Some(self.object("bf16", v)?)),
            (None, Some(v)) => ("bfloat16", Some(self.object("bfloat16", v)?)),
            (None, None) => ("bf16", None),
        };
        let enabled = |this: &Self,
                       t: Option<&Map<String, Value>>,
                       key: &str|
         -> Result<Option<bool>, DeepSpeedError> {
            match t.and_then(|t| t.get("enabled")) {
                Some(v) => this.boolean(&format!("{key}.enabled"), v),
                // A section without "enabled" is off (DeepSpeed's default).
                None => Ok(t.map(|_| false)),
            }
        };
        let mut mapped = vec!["enabled"];
        mapped.extend(FP16_LOSS_SCALE);
        if let Some(t) = fp16 {
            self.check_keys(t, "fp16", &mapped, FP16_IGNORED, false)?;
        }
        if let Some(t) = bf16 {
            self.check_keys(t, bf16_key, &["enabled"], BF16_IGNORED, false)?;
        }
        let fp16_on = enabled(self, fp16, "fp16")?;
        let bf16_on = enabled(self, bf16, bf16_key)?;
        let base_mode = self.base.precision.mode;
        use super::PrecisionMode as M;
        let mode = match (fp16_on, bf16_on) {
            (Some(true), Some(true)) => {
                return Err(self.err(
                    "fp16.enabled",
                    format!(
                        "fp16 and {bf16_key} cannot both be enabled (DeepSpeed refuses the same)"
                    ),
                ))
            }
            (Some(true), _) => Some(M::Fp16),
            (_, Some(true)) => Some(M::Bf16),
            // Explicitly off: the base's mode unless it was the one turned off.
            (f, b) => {
                let off = (f == Some(false) && base_mode == M::Fp16)
                    || (b == Some(false) && base_mode == M::Bf16);
                off.then_some(M::Fp32)
            }
        };
        if let Some(m) = mode {
            self.out
                .overrides
                .push(Override::new("precision.mode", m.name().to_string().into()));
        }
        if let (Some(t), Some(true) | None) = (fp16, fp16_on) {
            let base = self.base_table("precision.loss_scale");
            let mut ls = toml::Table::new();
            for name in FP16_LOSS_SCALE {
                let key = format!("fp16.{name}");
                match t.get(*name) {
                    Some(v) if is_auto(v) => {
                        if let Some(b) = base.and_then(|b| b.get(*name)) {
                            ls.insert(name.to_string(), b.clone());
                        }
                    }
                    Some(v) => {
                        let value = match *name {
                            "consecutive_hysteresis" => toml::Value::Boolean(
                                self.boolean(&key, v)?.expect("auto handled above"),
                            ),
                            "loss_scale" | "min_loss_scale" => toml::Value::Float(
                                self.number(&key, v)?.expect("auto handled above"),
                            ),
                            _ => toml::Value::Integer(
                                self.count(&key, v)?.expect("auto handled above") as i64,
                            ),
                        };
                        ls.insert(name.to_string(), value);
                    }
                    None => {}
                }
            }
            let checked = super::LossScaleConfig::deserialize(toml::Value::Table(ls.clone()))
                .map_err(|e| self.err("fp16", e.to_string().trim().to_string()))?;
            checked.validate("fp16").map_err(|e| DeepSpeedError::Read {
                origin: self.origin.to_string(),
                message: e.to_string(),
            })?;
            self.out.overrides.push(Override::new(
                "precision.loss_scale",
                toml::Value::Table(ls),
            ));
        }
        Ok(())
    }

    fn zero(&mut self, v: &Value) -> Result<(), DeepSpeedError> {
        // Old configs write `"zero_optimization": true` for stage 1.
        let stage = match v {
            Value::Bool(b) => Some(u64::from(*b)),
            Value::Object(o) => {
                self.check_keys(o, "zero_optimization", &["stage"], ZERO_IGNORED, false)?;
                match o.get("stage") {
                    Some(s) => self.count("zero_optimization.stage", s)?.map(|n| n as u64),
                    None => Some(0),
                }
            }
            other => {
                return Err(self.err(
                    "zero_optimization",
                    format!("expected an object with \"stage\", got {other}"),
                ))
            }
        };
        match stage {
            None => {}
            Some(s @ (0 | 1)) => self.out.overrides.push(Override::new(
                "devices.zero",
                toml::Value::Integer(s as i64),
            )),
            Some(s) => {
                return Err(self.err(
                    "zero_optimization.stage",
                    format!(
                    "{s}: not supported here: cptlab shards optimizer state, stage 1 (use 0 or 1)"
                ),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunConfig {
        crate::config::presets::PresetStore::new("/nonexistent")
            .load(crate::config::presets::DEFAULT_PRESET)
            .unwrap()
    }

    fn resolve(json: &str) -> Result<(RunConfig, Vec<String>), String> {
        let b = base();
        let d = parse(json, "ds.json", &b).map_err(|e| e.to_string())?;
        let c = d.apply(&b).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok((c, d.warnings))
    }

    #[test]
    fn near_misses_of_keys_that_matter_are_errors() {
        for (typo, want) in [
            ("optimiser", "optimizer"),
            ("schedular", "scheduler"),
            ("fp_16", "fp16"),
            ("train_batchsize", "train_batch_size"),
        ] {
            let e = resolve(&format!(r#"{{"train_batch_size": 8, "{typo}": {{}}}}"#)).unwrap_err();
            assert!(
                e.contains(typo) && e.contains(&format!("did you mean \"{want}\"")),
                "{e}"
            );
            assert!(e.starts_with("ds.json: "), "{e}");
        }
    }

    #[test]
    fn unknown_and_ignored_keys_are_warnings() {
        let (_, w) = resolve(
            r#"{"train_batch_size": 8, "prescale_gradient": false, "flops_profiler": {}, "zzz": 1,
                "zero_optimization": {"stage": 1, "overlap_comm": true, "reduce_bucket_size": 5e8}}"#,
        )
        .unwrap();
        let all = w.join("\n");
        assert!(
            all.contains("\"prescale_gradient\" ignored (did you mean \"prescale_gradients\"?)"),
            "{all}"
        );
        assert!(all.contains("unknown key \"zzz\" ignored"), "{all}");
        assert!(
            all.contains("zero_optimization.overlap_comm, zero_optimization.reduce_bucket_size"),
            "{all}"
        );
        assert!(all.contains("flops_profiler"), "{all}");
    }

    #[test]
    fn batch_rule_derives_the_third_and_shows_the_arithmetic() {
        let (c, _) =
            resolve(r#"{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 16}"#).unwrap();
        assert_eq!((c.train.batch_size, c.train.grad_accum), (64, 4));
        let (c, _) =
            resolve(r#"{"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 3}"#)
                .unwrap();
        assert_eq!((c.train.batch_size, c.train.grad_accum), (24, 3));
        let (c, _) = resolve(r#"{"train_batch_size": 32}"#).unwrap();
        assert_eq!((c.train.batch_size, c.train.grad_accum), (32, 1));
        let mut b = base();
        b.devices.devices = "cpu:2".parse().unwrap();
        let e = parse(
            r#"{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2}"#,
            "ds.json",
            &b,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "ds.json: train_batch_size 64 ≠ micro 8 × accumulation 2 × world 2 = 32"
        );
        let e = resolve(r#"{"train_batch_size": 0}"#).unwrap_err();
        assert!(
            e.contains("train_batch_size: must be greater than 0"),
            "{e}"
        );
    }

    #[test]
    fn zero_stages_two_and_three_are_refused() {
        let e =
            resolve(r#"{"train_batch_size": 8, "zero_optimization": {"stage": 2}}"#).unwrap_err();
        assert!(e.contains("zero_optimization.stage: 2: not supported here: cptlab shards optimizer state, stage 1"), "{e}");
        let (c, _) =
            resolve(r#"{"train_batch_size": 8, "zero_optimization": {"stage": 1}}"#).unwrap();
        assert_eq!(c.devices.zero, crate::config::ZeroStage::Zero1);
    }

    #[test]
    fn adam_trains_as_adamw_unless_told_otherwise() {
        let (c, _) = resolve(r#"{"optimizer": {"type": "Adam", "params": {"lr": 0.01}}}"#).unwrap();
        assert!(
            matches!(c.optimizer, crate::config::OptimizerConfig::AdamW { lr, weight_decay, .. } if lr == 0.01 && weight_decay == 0.0),
            "{:?}",
            c.optimizer
        );
        let (c, _) = resolve(r#"{"optimizer": {"type": "Adam", "params": {"adam_w_mode": false, "torch_adam": true}}}"#).unwrap();
        assert!(
            matches!(c.optimizer, crate::config::OptimizerConfig::Adam { lr, .. } if lr == 1e-3),
            "{:?}",
            c.optimizer
        );
        let (c, _) =
            resolve(r#"{"optimizer": {"type": "AdamW", "params": {"torch_adam": true}}}"#).unwrap();
        assert!(
            matches!(c.optimizer, crate::config::OptimizerConfig::AdamW { weight_decay, .. } if weight_decay == 1e-2)
        );
        let e = resolve(r#"{"optimizer": {"type": "Lamb"}}"#).unwrap_err();
        assert!(e.contains("optimizer.type") && e.contains("Lamb"), "{e}");
        let e =
            resolve(r#"{"optimizer": {"type": "SGD", "params": {"momentun": 0.9}}}"#).unwrap_err();
        assert!(
            e.contains("optimizer.params.momentun") && e.contains("\"optimizer.params.momentum\""),
            "{e}"
        );
    }

    #[test]
    fn auto_takes_the_base_value() {
        let (c, _) = resolve(r#"{"optimizer": {"type": "SGD", "params": {"lr": "auto", "momentum": "auto"}}, "gradient_clipping": "auto"}"#).unwrap();
        let b = base();
        assert!(
            matches!(c.optimizer, crate::config::OptimizerConfig::Sgd { lr, momentum, .. } if lr == b.optimizer.lr() && momentum == 0.9)
        );
        assert_eq!(c.train.grad_clip, b.train.grad_clip);
    }

    #[test]
    fn range_test_and_unknown_schedules_say_what_to_use() {
        let e = resolve(r#"{"scheduler": {"type": "LRRangeTest"}}"#).unwrap_err();
        assert!(
            e.contains("scheduler.type") && e.contains("cptlab range-test"),
            "{e}"
        );
        let e = resolve(r#"{"scheduler": {"type": "WarmupLR", "params": {"warmup_num_step": 5}}}"#)
            .unwrap_err();
        assert!(
            e.contains("did you mean \"scheduler.params.warmup_num_steps\""),
            "{e}"
        );
        let e =
            resolve(r#"{"scheduler": {"type": "WarmupLR", "params": {"warmup_type": "cubic"}}}"#)
                .unwrap_err();
        assert!(e.contains("ds.json: scheduler.params"), "{e}");
    }

    #[test]
    fn bad_json_names_the_file() {
        let e = parse("{", "x.json", &base()).unwrap_err().to_string();
        assert!(e.starts_with("x.json: not valid JSON"), "{e}");
        let e = parse("[]", "x.json", &base()).unwrap_err().to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
        let e = parse(
            r#"{"fp16": {"enabled": true, "hysteresis": -1}}"#,
            "x.json",
            &base(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fp16.hysteresis"), "{e}");
    }
}
