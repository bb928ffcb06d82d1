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
    gpu_lines()?;
    optimisation_lines(cuda)?;
    outln!(
        "launcher: {}",
        crate::engine::launcher::describe_environment()
    )?;
    outln!(
        "gloo (CPU multi-process): {}",
        match crate::engine::collective::GlooCollective::available() {
            Ok(()) => "built in".to_string(),
            Err(e) => e,
        }
    )?;
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

/// The GPUs as NVML sees them (name, memory, UUID, MIG), the driver and its CUDA version, NCCL.
fn gpu_lines() -> Result<()> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        outln!("CUDA_VISIBLE_DEVICES: {v}")?;
    }
    match nvml_wrapper::Nvml::init() {
        Err(e) => outln!("gpus (NVML): none ({e})")?,
        Ok(nvml) => {
            let driver = nvml
                .sys_driver_version()
                .unwrap_or_else(|e| format!("? ({e})"));
            let cuda = nvml.sys_cuda_driver_version().map_or_else(
                |e| format!("? ({e})"),
                |v| {
                    format!(
                        "{}.{}",
                        nvml_wrapper::cuda_driver_version_major(v),
                        nvml_wrapper::cuda_driver_version_minor(v)
                    )
                },
            );
            outln!("nvidia driver: {driver} (CUDA {cuda})")?;
            let n = nvml.device_count().unwrap_or(0);
            outln!("gpus (NVML): {n}")?;
            for i in 0..n {
                let Ok(d) = nvml.device_by_index(i) else {
                    outln!("  gpu {i}: not readable")?;
                    continue;
                };
                let name = d.name().unwrap_or_else(|e| format!("? ({e})"));
                let mem = d.memory_info().map_or_else(
                    |e| format!("? ({e})"),
                    |m| format!("{:.1} GiB", m.total as f64 / (1u64 << 30) as f64),
                );
                let uuid = d.uuid().unwrap_or_else(|e| format!("? ({e})"));
                let mig = match d.mig_mode() {
                    Ok(m) if m.current == 1 => "on".to_string(),
                    Ok(_) => "off".to_string(),
                    Err(e) => format!("N/A ({e})"),
                };
                outln!("  gpu {i}: {name}, {mem}, {uuid}, MIG {mig}")?;
            }
            // `cuda:N` is CUDA's numbering (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), not
            // NVML's: matched by UUID, as the workbench's sampler does.
            use crate::tui::sampler::{cuda_uuids, match_devices, nvml_gpus};
            match cuda_uuids() {
                Ok(cuda) => {
                    for m in match_devices(&cuda, &nvml_gpus(&nvml)) {
                        outln!("  {}", m.describe(&cuda[m.cuda() as usize]))?;
                    }
                }
                Err(e) => outln!("  cuda devices to NVML: unknown ({e})")?,
            }
        }
    }
    match crate::engine::collective::NcclCollective::library() {
        Ok((path, version)) => outln!("nccl: {version} ({path})")?,
        Err(e) => outln!("nccl: unavailable ({e})")?,
    }
    Ok(())
}

/// Which of the GPU-side optimisations a run on this machine uses.
fn optimisation_lines(cuda: bool) -> Result<()> {
    if !cuda {
        outln!(
            "gpu optimisations: none (no CUDA device); on the CPU a run reads the device once per train.log_every steps and prefetches batches on a thread when a core is free"
        )?;
        outln!(
            "channels_last: off on the CPU under precision.channels_last = auto (\"on\" forces it: mkldnn channels_last convolutions)"
        )?;
        return Ok(());
    }
    let m = crate::engine::device::cuda_math_for(None);
    let on = |b: bool| if b { "on" } else { "off" };
    outln!(
        "gpu optimisations: cudnn.benchmark {}, TF32 convolutions {} and matmuls {} (PyTorch's defaults; precision.tf32 changes both), pinned non-blocking batch copies from a prefetch thread, one host read per train.log_every steps, autocast (precision.mode amp_bf16 | amp_fp16)",
        on(m.cudnn_benchmark),
        on(m.tf32_conv),
        on(m.tf32_matmul)
    )?;
    outln!(
        "channels_last: on for CNNs under amp/half precision modes (precision.channels_last = auto; \"on\" / \"off\" force it), off for fp32 and the ViT"
    )?;
    Ok(())
}
