//! Device specs: `cpu`, `cpu:N`, `cuda:N`, `cuda:0,1,…`, `cuda:all`.
use tch::Device;

/// Parses a device spec into the devices workers would run on. Checks syntax only; whether
/// CUDA devices exist is checked by `resolve`.
pub fn parse_devices(spec: &str) -> Result<DeviceSpec, String> {
    let spec = spec.trim();
    let expected = "cpu, cpu:N (N CPU workers), cuda:N, cuda:0,1,… or cuda:all";
    if spec == "cpu" {
        return Ok(DeviceSpec::Cpu { workers: 1 });
    }
    if let Some(n) = spec.strip_prefix("cpu:") {
        let workers: usize = n
            .parse()
            .map_err(|_| format!("{spec:?}: {n:?} is not a worker count; expected {expected}"))?;
        if workers == 0 {
            return Err(format!("{spec:?}: at least one CPU worker"));
        }
        return Ok(DeviceSpec::Cpu { workers });
    }
    if let Some(list) = spec.strip_prefix("cuda:") {
        if list == "all" {
            return Ok(DeviceSpec::CudaAll);
        }
        let mut ids = Vec::new();
        for part in list.split(',') {
            let id: usize = part.trim().parse().map_err(|_| {
                format!("{spec:?}: {part:?} is not a GPU index; expected {expected}")
            })?;
            if ids.contains(&id) {
                return Err(format!("{spec:?}: GPU {id} is listed twice"));
            }
            ids.push(id);
        }
        return Ok(DeviceSpec::Cuda(ids));
    }
    if spec == "cuda" {
        return Ok(DeviceSpec::Cuda(vec![0]));
    }
    Err(format!("{spec:?} is not a device; expected {expected}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu { workers: usize },
    Cuda(Vec<usize>),
    CudaAll,
}

impl DeviceSpec {
    /// The number of workers, when the spec alone says (not for `cuda:all`).
    pub fn known_world_size(&self) -> Option<usize> {
        match self {
            DeviceSpec::Cpu { workers } => Some(*workers),
            DeviceSpec::Cuda(ids) => Some(ids.len()),
            DeviceSpec::CudaAll => None,
        }
    }

    /// The concrete devices, checked against what this machine has.
    pub fn resolve(&self) -> Result<Vec<Device>, String> {
        match self {
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
    fn specs_parse_or_explain() {
        assert_eq!(parse_devices("cpu"), Ok(DeviceSpec::Cpu { workers: 1 }));
        assert_eq!(parse_devices("cpu:2"), Ok(DeviceSpec::Cpu { workers: 2 }));
        assert_eq!(parse_devices("cuda:0,1"), Ok(DeviceSpec::Cuda(vec![0, 1])));
        assert_eq!(parse_devices("cuda:all"), Ok(DeviceSpec::CudaAll));
        assert!(parse_devices("gpu").unwrap_err().contains("expected"));
        assert!(parse_devices("cuda:0,0").unwrap_err().contains("twice"));
        assert!(parse_devices("cpu:0").is_err());
    }

    #[test]
    fn cuda_without_gpus_is_a_clear_error() {
        if tch::Cuda::device_count() == 0 {
            let e = DeviceSpec::Cuda(vec![0]).resolve().unwrap_err();
            assert!(e.contains("use --devices cpu"), "{e}");
        }
    }
}
