//! Checkpoints: every model variable (parameters and BatchNorm statistics), the optimizer state
//! and what the loop needs to continue (`Meta`), in one libtorch archive written atomically.
//! Data order and augmentation are pure functions of (seed, epoch), so no RNG state is stored.
//!
//! The archive is serialized into memory first and then written with [`files::write_atomic`]:
//! libtorch's own file writer throws from a destructor when the disk fills (the process aborts
//! with a C++ backtrace and leaves its temporary file), while a failed atomic write is an error
//! naming the path and the cause, and leaves the previous checkpoint and no temporary file.
//! Reading goes the same way round: the bytes are read by Rust (so a missing file, a directory or
//! a permission problem says so) and parsed from memory. libtorch's messages pass through
//! [`torch_error::clean`], which drops the C++ backtrace.
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

use crate::files;

use super::torch_error;

pub const LAST: &str = "last.pt";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// Epochs completed (the next epoch to run).
    pub epochs_done: u64,
    /// Optimizer steps completed.
    pub global_step: u64,
    pub seconds_per_epoch: Vec<f64>,
    pub test_acc_per_epoch: Vec<f64>,
    pub train_seconds: f64,
    /// Training seconds of the epoch in progress when a mid-epoch stop took the checkpoint
    /// (0 at an epoch end; already in `train_seconds`): the resumed session adds the rest of
    /// that epoch to it.
    #[serde(default)]
    pub partial_epoch_seconds: f64,
    /// The run's length ended inside the epoch in progress and it was evaluated there: the last
    /// entry of `test_acc_per_epoch` is that open epoch's, replaced once the epoch is finished.
    #[serde(default)]
    pub open_epoch_evaluated: bool,
    /// Length of `metrics.jsonl` when the checkpoint was taken: a resume cuts what came after.
    pub metrics_len: u64,
    /// Effective GBitOps so far.
    #[serde(default)]
    pub gbitops: f64,
    #[serde(default)]
    pub skipped_steps: u64,
    /// fp16's loss-scaler state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::engine::loss_scale::LossScaler>,
    /// The model kind the checkpoint was taken of (`model.kind`); empty in older checkpoints.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Trainable parameters of that model (filled in by `save`); 0 in older checkpoints.
    #[serde(default)]
    pub params: u64,
}

impl Meta {
    /// A fresh run's meta, recording which model it belongs to.
    pub fn for_model(model: &str, params: u64) -> Meta {
        Meta {
            model: model.to_string(),
            params,
            ..Meta::default()
        }
    }

    /// Refuses a checkpoint of another model than the one the config asks for (`model`, with
    /// `params` trainable parameters), naming both. Older checkpoints without a record pass.
    pub fn check_model(&self, path: &Path, model: &str, params: u64) -> Result<()> {
        if !self.model.is_empty() && self.model != model {
            anyhow::bail!(
                "checkpoint {} is of model {}, the config asks for {model}",
                path.display(),
                self.model
            );
        }
        if self.params != 0 && params != 0 && self.params != params {
            let of = if self.model.is_empty() {
                String::new()
            } else {
                format!(" of model {}", self.model)
            };
            anyhow::bail!(
                "checkpoint {} holds {} parameters{of}, the config's model {model} has {params}",
                path.display(),
                self.params
            );
        }
        Ok(())
    }
}

/// Trainable parameters of a model's variables (what `Meta::params` records).
pub fn trainable_params(vs: &VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

/// A `Write` that libtorch can own (it takes a `'static` stream) while we keep the bytes.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("checkpoint buffer lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The libtorch archive of `named`, in memory.
fn serialize(named: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let buf = SharedBuf::default();
    Tensor::save_multi_to_stream(named, buf.clone()).map_err(|e| {
        anyhow::anyhow!(
            "cannot serialize the checkpoint: {}",
            torch_error::clean(&e.to_string())
        )
    })?;
    let bytes = std::mem::take(&mut *buf.0.lock().expect("checkpoint buffer lock"));
    Ok(bytes)
}

/// Every entry of the archive at `path`: read by Rust, parsed by libtorch from memory.
fn read_archive(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = files::read_regular(path)?;
    let len = bytes.len();
    Tensor::load_multi_from_stream(Cursor::new(bytes)).map_err(|e| {
        anyhow::anyhow!(
            "checkpoint {} ({len} bytes) is not a readable checkpoint (truncated or not a cptlab checkpoint): {}",
            path.display(),
            torch_error::clean(&e.to_string())
        )
    })
}

/// Saves to `dir/last.pt` atomically (see the module docs); on any error the previous
/// checkpoint is intact and no temporary file is left.
pub fn save(
    dir: &Path,
    vs: &VarStore,
    optimizer_state: &[(String, Tensor)],
    meta: &Meta,
) -> Result<PathBuf> {
    files::create_dir_all(dir)?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        named.push((format!("var/{name}"), t));
    }
    for (name, t) in optimizer_state {
        named.push((format!("opt/{name}"), t.shallow_clone()));
    }
    let meta = Meta {
        format: FORMAT,
        params: if meta.params == 0 {
            trainable_params(vs)
        } else {
            meta.params
        },
        ..meta.clone()
    };
    let json = serde_json::to_vec(&meta)?;
    named.push(("meta".into(), Tensor::from_slice(&json)));
    // libtorch archives keep only CPU-loadable tensors portable: move everything to the CPU.
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| (n, t.to_device(tch::Device::Cpu)))
        .collect();
    let path = dir.join(LAST);
    let bytes = serialize(&named)?;
    files::write_atomic(&path, &bytes)
        .map_err(|e| anyhow::anyhow!("{e} (checkpoint not saved; the previous one is kept)"))?;
    Ok(path)
}

pub struct Loaded {
    pub meta: Meta,
    pub optimizer_state: Vec<(String, Tensor)>,
}

/// Reads only the meta record of a checkpoint.
pub fn read_meta(path: &Path) -> Result<Meta> {
    let entries = read_archive(path)?;
    let (_, t) = entries
        .into_iter()
        .find(|(n, _)| n == "meta")
        .ok_or_else(|| anyhow::anyhow!("{}: no meta record", path.display()))?;
    parse_meta(path, &t)
}

fn parse_meta(path: &Path, t: &Tensor) -> Result<Meta> {
    let bytes: Vec<u8> = Vec::<u8>::try_from(t)?;
    let meta: Meta = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: unreadable meta record", path.display()))?;
    anyhow::ensure!(
        meta.format == FORMAT,
        "{}: checkpoint format {} (this build reads {FORMAT})",
        path.display(),
        meta.format
    );
    Ok(meta)
}

/// Loads `path` into `vs` (every variable must be present with the same shape) and returns the
/// optimizer state and meta.
pub fn load(path: &Path, vs: &VarStore) -> Result<Loaded> {
    let entries = read_archive(path)?;
    let mut meta = None;
    let mut optimizer_state = Vec::new();
    let mut vars = std::collections::HashMap::new();
    for (name, t) in entries {
        // tch stores '.' as '|' in archive names.
        let name = name.replace('|', ".");
        if name == "meta" {
            meta = Some(parse_meta(path, &t)?);
        } else if let Some(n) = name.strip_prefix("opt/") {
            optimizer_state.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("var/") {
            vars.insert(n.to_string(), t);
        }
    }
    let meta = meta.ok_or_else(|| anyhow::anyhow!("{}: no meta record", path.display()))?;
    let device = vs.device();
    // Which model the checkpoint is of, for the errors below.
    let of = match (meta.model.as_str(), meta.params) {
        ("", 0) => String::new(),
        ("", p) => format!(" (it holds a model with {p} parameters)"),
        (m, _) => format!(" (it is of model {m})"),
    };
    tch::no_grad(|| -> Result<()> {
        for (name, mut dst) in vs.variables() {
            let src = vars.get(&name).ok_or_else(|| {
                anyhow::anyhow!(
                    "checkpoint {} does not fit this model: it has no variable {name}{of}",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                src.size() == dst.size(),
                "checkpoint {} does not fit this model: {name} has shape {:?}, the model needs {:?}{of}",
                path.display(),
                src.size(),
                dst.size()
            );
            dst.copy_(&src.to_device(device));
        }
        Ok(())
    })?;
    let optimizer_state = optimizer_state
        .into_iter()
        .map(|(n, t)| (n, t.to_device(device)))
        .collect();
    Ok(Loaded {
        meta,
        optimizer_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn linear(outputs: i64) -> VarStore {
        let vs = VarStore::new(tch::Device::Cpu);
        let _ = nn::linear(vs.root() / "fc", 3, outputs, Default::default());
        vs
    }

    #[test]
    fn records_the_model_and_refuses_another_one_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let vs = linear(2);
        let p = save(dir.path(), &vs, &[], &Meta::for_model("lenet", 0)).unwrap();
        let m = read_meta(&p).unwrap();
        assert_eq!((m.model.as_str(), m.params), ("lenet", 8));
        m.check_model(&p, "lenet", 8).unwrap();
        let e = m.check_model(&p, "resnet20", 8).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "checkpoint {} is of model lenet, the config asks for resnet20",
                p.display()
            )
        );
        let e = m.check_model(&p, "lenet", 9).unwrap_err().to_string();
        assert!(e.contains("holds 8 parameters of model lenet"), "{e}");
        let e = load(&p, &linear(5)).err().unwrap().to_string();
        assert!(
            e.contains("does not fit this model") && e.contains("of model lenet"),
            "{e}"
        );
        load(&p, &linear(2)).unwrap();
    }

    #[test]
    fn unreadable_checkpoints_say_so_in_one_line_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let vs = linear(2);
        let p = save(dir.path(), &vs, &[], &Meta::default()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = format!("{:#}", read_meta(&p).unwrap_err());
        assert!(
            e.contains(&p.display().to_string()) && e.contains("not a readable checkpoint"),
            "{e}"
        );
        assert!(!e.contains("frame #") && e.lines().count() == 1, "{e}");

        // Something in the way of last.pt: an error naming it, no temporary file.
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = format!(
            "{:#}",
            save(dir.path(), &vs, &[], &Meta::default()).unwrap_err()
        );
        assert!(
            e.contains("is a directory") && e.contains("previous one is kept"),
            "{e}"
        );
        let e = format!("{:#}", read_meta(&p).unwrap_err());
        assert!(e.contains("it is a directory, not a file"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
