//! `cptlab doctor`: torch, CUDA and thread settings, and where files live.
use anyhow::Result;

use super::output::outln;
use crate::config::paths::Paths;
use crate::config::presets::PresetStore;

pub fn run(paths: &Paths) -> Result<()> {
    outln!("cptlab {}", env!("CARGO_PKG_VERSION"))?;
    outln!("libtorch (built against): {}", env!("CPTLAB_TORCH_VERSION"))?;
    let cuda = tch::Cuda::is_available();
    outln!("cuda available: {cuda}")?;
    outln!("cudnn available: {}", tch::Cuda::cudnn_is_available())?;
    outln!("cuda devices: {}", tch::Cuda::device_count())?;
    if cuda {
        outln!("cudart version: {}", tch::utils::version_cudart())?;
        outln!("cudnn version: {}", tch::utils::version_cudnn())?;
    }
    outln!("intra-op threads: {}", tch::get_num_threads())?;
    outln!(
        "cpu cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    let presets = PresetStore::new(&paths.presets);
    outln!("presets: {}", presets.dir().display())?;
    outln!("runs: {}", paths.runs.display())?;
    outln!("cache: {}", paths.cache.display())?;
    outln!(
        "data (CPTLAB_DATA): {}",
        std::env::var("CPTLAB_DATA").unwrap_or_else(|_| "(unset: synthetic)".into())
    )?;
    Ok(())
}
