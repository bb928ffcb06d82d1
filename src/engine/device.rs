//! Devices for the engine: a config's [`DeviceSpec`] (parsed when the config was read) resolved
//! into the libtorch devices of this machine, and a precision mode's tensor type.
use tch::{Device, Kind};

use crate::config::PrecisionMode;
pub use crate::config::{DeviceSpec, ZeroStage};

/// The concrete devices of `spec`, checked against what this machine has.
pub fn resolve(spec: &DeviceSpec) -> Result<Vec<Device>, String> {
    match spec {
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

/// The replica's tensor type for a precision mode.
pub fn replica_kind(mode: PrecisionMode) -> Kind {
    match mode {
        PrecisionMode::Fp32 => Kind::Float,
        PrecisionMode::Fp16 => Kind::Half,
        PrecisionMode::Bf16 => Kind::BFloat16,
    }
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
    }
}
