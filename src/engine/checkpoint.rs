//! Checkpoints: every model variable (parameters and BatchNorm statistics), the optimizer state
//! and what the loop needs to continue (`Meta`), in one libtorch archive written atomically.
//! Data order and augmentation are pure functions of (seed, epoch), so no RNG state is stored.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

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
}

/// Saves to `dir/last.pt` via a temp file and rename.
pub fn save(
    dir: &Path,
    vs: &VarStore,
    optimizer_state: &[(String, Tensor)],
    meta: &Meta,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
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
    let tmp = tempfile::Builder::new()
        .prefix(".last-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    Tensor::save_multi(&named, tmp.path())
        .with_context(|| format!("cannot write checkpoint {}", tmp.path().display()))?;
    std::fs::File::open(tmp.path())?.sync_all()?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move checkpoint into {}", path.display()))?;
    Ok(path)
}

pub struct Loaded {
    pub meta: Meta,
    pub optimizer_state: Vec<(String, Tensor)>,
}

/// Reads only the meta record of a checkpoint.
pub fn read_meta(path: &Path) -> Result<Meta> {
    let entries = Tensor::load_multi(path)
        .with_context(|| format!("{}: not a readable checkpoint", path.display()))?;
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
    let entries = Tensor::load_multi(path)
        .with_context(|| format!("{}: not a readable checkpoint", path.display()))?;
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
    tch::no_grad(|| -> Result<()> {
        for (name, mut dst) in vs.variables() {
            let src = vars.get(&name).ok_or_else(|| {
                anyhow::anyhow!("{}: no tensor for model variable {name}", path.display())
            })?;
            anyhow::ensure!(
                src.size() == dst.size(),
                "{}: {name} has shape {:?}, the model needs {:?}",
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
