//! Devices for the engine: a config's [`DeviceSpec`] (parsed when the config was read) resolved
//! into the libtorch devices of this machine, a precision mode's tensor types, the CUDA math
//! switches, and the one counted way to read the device from the host ([`read_to_host`]).
use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use crate::config::{ChannelsLast, PrecisionMode};
pub use crate::config::{DeviceSpec, ZeroStage};

/// The concrete devices of `spec`, checked against what this machine has.
pub fn resolve(spec: &DeviceSpec) -> Result<Vec<Device>, String> {
    match spec {
        DeviceSpec::Auto => resolve(&on_this_machine(spec)),
        DeviceSpec::Cpu { workers } => Ok(vec![Device::Cpu; *workers]),
        DeviceSpec::Cuda(ids) => {
            let count = tch::Cuda::device_count() as usize;
            if count == 0 {
                return Err(format!(
                    "CUDA devices {ids:?} were asked for, but this machine has none that libtorch can use (cuda available: {}); use --devices cpu",
                    tch::Cuda::is_available()
                ));
            }
            for id in ids {
                if *id >= count {
                    return Err(format!(
                        "cuda:{id} does not exist: this machine has {count} CUDA device(s), cuda:0..{}",
                        count - 1
                    ));
                }
            }
            Ok(ids.iter().map(|&i| Device::Cuda(i)).collect())
        }
        DeviceSpec::CudaAll => {
            let count = tch::Cuda::device_count() as usize;
            if count == 0 {
                return Err("cuda:all was asked for, but this machine has no CUDA device that libtorch can use; use --devices cpu".into());
            }
            Ok((0..count).map(Device::Cuda).collect())
        }
    }
}

/// `spec` with `auto` decided for this machine (the GPUs libtorch sees).
pub fn on_this_machine(spec: &DeviceSpec) -> DeviceSpec {
    match spec {
        DeviceSpec::Auto => spec.on_machine(tch::Cuda::device_count().max(0) as usize),
        other => other.clone(),
    }
}

/// The replica's tensor type for a precision mode: half for DeepSpeed-style replicas, fp32
/// for fp32 and autocast.
pub fn replica_kind(mode: PrecisionMode) -> Kind {
    match mode {
        PrecisionMode::Fp32 | PrecisionMode::AmpBf16 | PrecisionMode::AmpFp16 => Kind::Float,
        PrecisionMode::Fp16 => Kind::Half,
        PrecisionMode::Bf16 => Kind::BFloat16,
    }
}

/// The autocast dtype of a precision mode (None: no autocast).
pub fn autocast_kind(mode: PrecisionMode) -> Option<Kind> {
    match mode {
        PrecisionMode::AmpBf16 => Some(Kind::BFloat16),
        PrecisionMode::AmpFp16 => Some(Kind::Half),
        PrecisionMode::Fp32 | PrecisionMode::Fp16 | PrecisionMode::Bf16 => None,
    }
}

/// Whether a mode scales the loss (fp16 in either form).
pub fn scales_loss(mode: PrecisionMode) -> bool {
    mode.scales_loss()
}

/// Whether a run lays its 4-D conv weights and its inputs out channels_last:
/// `precision.channels_last` decided for `model` under `mode` on `device` (`auto`: on for a
/// CNN under an amp/half mode on CUDA, as a tuned PyTorch loop does; off on the CPU).
pub fn channels_last_active(
    setting: ChannelsLast,
    mode: PrecisionMode,
    device: Device,
    model: crate::config::ModelKind,
) -> bool {
    match setting {
        ChannelsLast::On => true,
        ChannelsLast::Off => false,
        ChannelsLast::Auto => {
            device.is_cuda() && mode != PrecisionMode::Fp32 && model.is_convolutional()
        }
    }
}

/// The CUDA math switches for a run: cudnn.benchmark on (inputs keep one size per run, so the
/// timing pays once), TF32 as `precision.tf32` says (absent: PyTorch's defaults, convolutions
/// in TF32 and matmuls in IEEE fp32).
pub fn cuda_math_for(tf32: Option<bool>) -> crate::quant::CudaMath {
    crate::quant::CudaMath {
        cudnn_benchmark: true,
        tf32_matmul: tf32.unwrap_or(false),
        tf32_conv: tf32.unwrap_or(true),
    }
}

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
}

/// Copies `t` to the host as f64 values. Every read of the device in the training loop goes
/// through here (each one makes the host wait for the queued work), and each call counts one
/// read on the calling thread ([`host_reads`]); on the CPU the counting is the same, so tests
/// hold it.
pub fn read_to_host(t: &Tensor) -> Result<Vec<f64>, tch::TchError> {
    HOST_READS.with(|c| c.set(c.get() + 1));
    let host = t.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
    Vec::<f64>::try_from(host.f_flatten(0, -1)?)
}

/// Counts `n` reads that code outside [`read_to_host`] made on this thread (a collective's or
/// the optimizer's own host reads), so the count stays complete.
pub fn count_host_reads(n: u64) {
    HOST_READS.with(|c| c.set(c.get() + n));
}

/// Device→host reads counted on the calling thread so far.
pub fn host_reads() -> u64 {
    HOST_READS.with(Cell::get)
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_specs_resolve_to_cpu_workers() {
        assert_eq!(
            resolve(&"cpu:3".parse().unwrap()).unwrap(),
            vec![Device::Cpu; 3]
        );
        assert_eq!(resolve(&DeviceSpec::default()).unwrap(), vec![Device::Cpu]);
    }

    #[test]
    fn cuda_without_gpus_is_a_clear_error() {
        if tch::Cuda::device_count() == 0 {
            let e = resolve(&DeviceSpec::Cuda(vec![0])).unwrap_err();
            assert!(e.contains("use --devices cpu"), "{e}");
            let e = resolve(&DeviceSpec::CudaAll).unwrap_err();
            assert!(e.contains("use --devices cpu"), "{e}");
        }
    }

    #[test]
    fn replica_kinds() {
        assert_eq!(replica_kind(PrecisionMode::Fp32), Kind::Float);
        assert_eq!(replica_kind(PrecisionMode::Fp16), Kind::Half);
        assert_eq!(replica_kind(PrecisionMode::Bf16), Kind::BFloat16);
        for mode in PrecisionMode::ALL {
            // Autocast keeps fp32 weights; half replicas never autocast.
            let amp = autocast_kind(mode).is_some();
            assert!(!amp || replica_kind(mode) == Kind::Float, "{mode:?}");
            assert!(amp || replica_kind(mode) != Kind::Float || mode == PrecisionMode::Fp32);
        }
        assert_eq!(autocast_kind(PrecisionMode::AmpBf16), Some(Kind::BFloat16));
        assert_eq!(autocast_kind(PrecisionMode::AmpFp16), Some(Kind::Half));
    }

    #[test]
    fn host_reads_are_counted_per_thread() {
        let before = host_reads();
        let t = Tensor::from_slice(&[1.5f32, -2.0]);
        assert_eq!(read_to_host(&t).unwrap(), vec![1.5, -2.0]);
        assert_eq!(host_reads(), before + 1);
        // Another thread's reads are its own.
        std::thread::spawn(move || {
            assert_eq!(host_reads(), 0);
            read_to_host(&t).unwrap();
            assert_eq!(host_reads(), 1);
        })
        .join()
        .unwrap();
        assert_eq!(host_reads(), before + 1);
    }
}
