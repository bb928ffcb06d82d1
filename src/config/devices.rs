//! `[devices]`: where a run trains. Device specs and ZeRO stages are parsed once, when the
//! config is deserialized, into [`DeviceSpec`] and [`ZeroStage`]; the TOML keeps their text
//! forms (`devices = "cpu:2"`, `zero = 1`). Turning a spec into libtorch devices (and checking
//! that they exist) is the engine's job (`engine::device::resolve`).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `auto` (the default: one GPU where libtorch sees one, else the CPU), `cpu`, `cpu:N`,
    /// `cuda:N`, `cuda:0,1,…` or `cuda:all`.
    #[serde(default)]
    pub devices: DeviceSpec,
    /// Intra-op threads per worker (None: the cores divided among the CPU workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// ZeRO stage: 0 replicates optimizer state on every rank, 1 shards it (DeepSpeed stage 1).
    #[serde(default)]
    pub zero: ZeroStage,
}

/// The devices workers run on, as the config names them: `auto`, `cpu`, `cpu:N` (N CPU
/// workers), `cuda` (= `cuda:0`), `cuda:N`, `cuda:0,1,…`, `cuda:all`. Written back in canonical
/// form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// What a PyTorch script's `"cuda" if torch.cuda.is_available() else "cpu"` picks: one GPU
    /// (under a launcher, the local rank's) where there is one, else one CPU worker. Resolved
    /// by [`DeviceSpec::on_machine`] wherever the machine is known.
    Auto,
    Cpu {
        workers: usize,
    },
    Cuda(Vec<usize>),
    CudaAll,
}

impl Default for DeviceSpec {
    /// `auto`: a preset or config that does not name its devices trains on the GPU where there
    /// is one, as a GPU user expects, and on the CPU elsewhere.
    fn default() -> Self {
        DeviceSpec::Auto
    }
}

const DEVICES_EXPECTED: &str = "auto, cpu, cpu:N (N CPU workers), cuda:N, cuda:0,1,… or cuda:all";

impl DeviceSpec {
    /// Parses a spec; checks syntax only (whether CUDA devices exist is the engine's check).
    /// The error says what is wrong and what was expected, without the field name.
    pub fn parse(spec: &str) -> Result<DeviceSpec, String> {
        let spec = spec.trim();
        let expected = DEVICES_EXPECTED;
        if spec == "auto" {
            return Ok(DeviceSpec::Auto);
        }
        if spec == "cpu" {
            return Ok(DeviceSpec::Cpu { workers: 1 });
        }
        if let Some(n) = spec.strip_prefix("cpu:") {
            let workers: usize = n.parse().map_err(|_| {
                format!("{spec:?}: {n:?} is not a worker count; expected {expected}")
            })?;
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

    /// The spec on a machine whose libtorch sees `cuda_devices` GPUs: `auto` becomes `cuda:0`
    /// or `cpu`; every other spec is already concrete. The one place `auto` is decided.
    pub fn on_machine(&self, cuda_devices: usize) -> DeviceSpec {
        match self {
            DeviceSpec::Auto if cuda_devices > 0 => DeviceSpec::Cuda(vec![0]),
            DeviceSpec::Auto => DeviceSpec::Cpu { workers: 1 },
            other => other.clone(),
        }
    }

    /// The number of workers, when the spec alone says (not for `cuda:all`).
    pub fn known_world_size(&self) -> Option<usize> {
        match self {
            DeviceSpec::Auto => Some(1),
            DeviceSpec::Cpu { workers } => Some(*workers),
            DeviceSpec::Cuda(ids) => Some(ids.len()),
            DeviceSpec::CudaAll => None,
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu { workers: 1 } => f.write_str("cpu"),
            DeviceSpec::Cpu { workers } => write!(f, "cpu:{workers}"),
            DeviceSpec::Cuda(ids) => {
                let list: Vec<String> = ids.iter().map(usize::to_string).collect();
                write!(f, "cuda:{}", list.join(","))
            }
            DeviceSpec::CudaAll => f.write_str("cuda:all"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceSpec, String> {
        DeviceSpec::parse(s)
    }
}

/// Deserialization: the error names the field, the value and what was expected, like
/// `RunConfig::validate`'s (`invalid devices.devices = gpu: "gpu" is not a device; …`).
impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<DeviceSpec, String> {
        DeviceSpec::parse(&s).map_err(|e| format!("invalid devices.devices = {s}: {e}"))
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

/// `devices.zero`: DeepSpeed's ZeRO stage, `0` or `1` in the TOML.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// Replicated optimizer state, gradients all-reduced.
    #[default]
    Zero0,
    /// Optimizer state sharded, gradients reduce-scattered, parameters all-gathered.
    Zero1,
}

const ZERO_EXPECTED: &str = "0 (replicated optimizer state) or 1 (sharded, ZeRO stage 1)";

impl ZeroStage {
    /// One line for pickers.
    pub fn describe(self) -> &'static str {
        match self {
            ZeroStage::Zero0 => {
                "every worker keeps the whole optimizer state (plain data parallel)"
            }
            ZeroStage::Zero1 => "optimizer state sharded across workers (ZeRO stage 1)",
        }
    }

    pub fn level(self) -> u8 {
        match self {
            ZeroStage::Zero0 => 0,
            ZeroStage::Zero1 => 1,
        }
    }
}

impl fmt::Display for ZeroStage {
    /// The level as the TOML writes it (`0`, `1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level())
    }
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;
    fn try_from(level: u8) -> Result<ZeroStage, String> {
        match level {
            0 => Ok(ZeroStage::Zero0),
            1 => Ok(ZeroStage::Zero1),
            n => Err(format!("invalid devices.zero = {n}: {ZERO_EXPECTED}")),
        }
    }
}

impl From<ZeroStage> for u8 {
    fn from(z: ZeroStage) -> u8 {
        z.level()
    }
}

impl FromStr for ZeroStage {
    type Err = String;
    /// A level typed by hand (`"1"`); the error says what was expected.
    fn from_str(s: &str) -> Result<ZeroStage, String> {
        match s.trim().parse::<u8>() {
            Ok(n) => ZeroStage::try_from(n),
            Err(_) => Err(format!("invalid devices.zero = {s}: {ZERO_EXPECTED}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        devices: DeviceConfig,
    }

    fn doc(text: &str) -> Result<Doc, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn specs_parse_or_explain() {
        let p = DeviceSpec::parse;
        assert_eq!(p("auto"), Ok(DeviceSpec::Auto));
        assert_eq!(p("cpu"), Ok(DeviceSpec::Cpu { workers: 1 }));
        assert_eq!(p("cpu:2"), Ok(DeviceSpec::Cpu { workers: 2 }));
        assert_eq!(p("cuda:0,1"), Ok(DeviceSpec::Cuda(vec![0, 1])));
        assert_eq!(p("cuda"), Ok(DeviceSpec::Cuda(vec![0])));
        assert_eq!(p("cuda:all"), Ok(DeviceSpec::CudaAll));
        assert!(p("gpu").unwrap_err().contains("expected"));
        assert!(p("cuda:0,0").unwrap_err().contains("twice"));
        assert!(p("cpu:0").is_err());
        assert!(p("cpu:x").unwrap_err().contains("not a worker count"));
    }

    #[test]
    fn device_config_round_trips_in_the_same_toml() {
        for (text, spec, zero) in [
            ("auto", DeviceSpec::Auto, 0),
            ("cpu", DeviceSpec::Cpu { workers: 1 }, 0),
            ("cpu:2", DeviceSpec::Cpu { workers: 2 }, 1),
            ("cuda:0,1", DeviceSpec::Cuda(vec![0, 1]), 1),
            ("cuda:all", DeviceSpec::CudaAll, 0),
        ] {
            let src = format!("[devices]\ndevices = \"{text}\"\nzero = {zero}\n");
            let d = doc(&src).unwrap();
            assert_eq!(d.devices.devices, spec);
            assert_eq!(d.devices.zero.level(), zero);
            let out = toml::to_string(&d).unwrap();
            assert!(out.contains(&format!("devices = \"{text}\"")), "{out}");
            assert!(out.contains(&format!("zero = {zero}")), "{out}");
            assert_eq!(doc(&out).unwrap(), d);
        }
        // Defaults: auto, stage 0.
        let d = doc("[devices]\n").unwrap();
        assert_eq!(d.devices, DeviceConfig::default());
        assert_eq!(d.devices.devices.to_string(), "auto");
        assert_eq!(d.devices.zero, ZeroStage::Zero0);
    }

    #[test]
    fn auto_is_one_gpu_where_there_is_one_and_the_cpu_elsewhere() {
        assert_eq!(
            DeviceSpec::Auto.on_machine(0),
            DeviceSpec::Cpu { workers: 1 }
        );
        assert_eq!(DeviceSpec::Auto.on_machine(1), DeviceSpec::Cuda(vec![0]));
        assert_eq!(DeviceSpec::Auto.on_machine(8), DeviceSpec::Cuda(vec![0]));
        // Named devices are kept as named, whatever the machine has.
        for s in ["cpu", "cpu:2", "cuda:1", "cuda:all"] {
            let d: DeviceSpec = s.parse().unwrap();
            assert_eq!(d.on_machine(0), d);
            assert_eq!(d.on_machine(4), d);
        }
        assert_eq!(DeviceSpec::Auto.known_world_size(), Some(1));
    }

    #[test]
    fn bad_devices_and_stages_name_the_field_and_the_expectation() {
        let e = doc("[devices]\ndevices = \"gpu\"\n").unwrap_err();
        assert!(e.contains("devices.devices = gpu"), "{e}");
        assert!(
            e.contains("\"gpu\" is not a device; expected auto, cpu"),
            "{e}"
        );
        let e = doc("[devices]\ndevices = \"cuda:0,0\"\n").unwrap_err();
        assert!(e.contains("devices.devices") && e.contains("twice"), "{e}");
        let e = doc("[devices]\nzero = 2\n").unwrap_err();
        assert!(e.contains("devices.zero = 2"), "{e}");
        assert!(e.contains("0 (replicated optimizer state) or 1"), "{e}");
        assert!(doc("[devices]\nzero = 300\n").is_err());
        assert!(doc("[devices]\nzero = \"1\"\n").is_err());
        assert_eq!("1".parse::<ZeroStage>(), Ok(ZeroStage::Zero1));
        assert!("2"
            .parse::<ZeroStage>()
            .unwrap_err()
            .contains("devices.zero"));
        assert!("x"
            .parse::<ZeroStage>()
            .unwrap_err()
            .contains("devices.zero"));
    }
}
