//! Device sampling once a second on its own thread: GPU utilization and memory through NVML
//! (libnvidia-ml loaded at run time), and — always, since CPU runs have no NVML — each watched
//! process's CPU share and its `cptlab-worker-N` threads' busy share from /proc.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::app::Msg;

pub const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    /// Percent of the last sample period with a kernel running.
    pub util: u32,
    pub mem_used: u64,
    pub mem_total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    pub pid: u32,
    /// CPU time over wall time, in cores (2.0 = two cores busy).
    pub cores: f64,
    /// Each `cptlab-worker-N` thread's busy share (0..1), by thread name.
    pub workers: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    pub gpus: Vec<GpuSample>,
    pub procs: Vec<ProcSample>,
    /// Why there are no GPU figures (NVML missing), once.
    pub nvml_error: Option<String>,
}

/// Tells the sampler thread which processes to watch.
#[derive(Clone, Default)]
pub struct Watch(Arc<Mutex<Vec<u32>>>);

impl Watch {
    pub fn set(&self, pids: Vec<u32>) {
        *self.0.lock().expect("watch lock") = pids;
    }

    fn get(&self) -> Vec<u32> {
        self.0.lock().expect("watch lock").clone()
    }
}

/// Starts the sampler; it sends a sample each period while there is anything to report.
pub fn spawn(tx: UnboundedSender<Msg>) -> Watch {
    let watch = Watch::default();
    let w = watch.clone();
    let _ = std::thread::Builder::new()
        .name("cptlab-tui-sampler".into())
        .spawn(move || {
            let (nvml, mut nvml_error) = match nvml_wrapper::Nvml::init() {
                Ok(n) => (Some(n), None),
                Err(e) => (
                    None,
                    Some(format!("NVML unavailable ({e}): CPU figures only")),
                ),
            };
            let mut cpu = CpuSampler::default();
            loop {
                let pids = w.get();
                let gpus = nvml.as_ref().map(sample_gpus).unwrap_or_default();
                let procs: Vec<ProcSample> = pids.iter().filter_map(|&p| cpu.sample(p)).collect();
                cpu.forget_except(&pids);
                if !gpus.is_empty() || !procs.is_empty() || nvml_error.is_some() {
                    let sample = DeviceSample {
                        gpus,
                        procs,
                        nvml_error: nvml_error.take(),
                    };
                    if tx.send(Msg::Devices(sample)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(PERIOD);
            }
        });
    watch
}

fn sample_gpus(nvml: &nvml_wrapper::Nvml) -> Vec<GpuSample> {
    let n = nvml.device_count().unwrap_or(0);
    (0..n)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mem = d.memory_info().ok()?;
            Some(GpuSample {
                index: i,
                name: d.name().unwrap_or_default(),
                util: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                mem_used: mem.used,
                mem_total: mem.total,
            })
        })
        .collect()
}

/// CPU time (utime + stime, in clock ticks) of each thread since the previous sample.
#[derive(Default)]
struct CpuSampler {
    prev: HashMap<u32, (Instant, u64, HashMap<u32, u64>)>,
}

impl CpuSampler {
    fn sample(&mut self, pid: u32) -> Option<ProcSample> {
        let now = Instant::now();
        let threads = read_threads(pid)?;
        let total: u64 = threads.iter().map(|t| t.ticks).sum();
        let ticks: HashMap<u32, u64> = threads.iter().map(|t| (t.tid, t.ticks)).collect();
        let prev = self.prev.insert(pid, (now, total, ticks));
        let (t0, total0, ticks0) = prev?;
        let wall = now.duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let hz = clock_ticks_per_second();
        let share = |d: u64| d as f64 / hz / wall;
        let mut workers: Vec<(String, f64)> = threads
            .iter()
            .filter(|t| t.name.starts_with("cptlab-worker"))
            .map(|t| {
                let before = ticks0.get(&t.tid).copied().unwrap_or(t.ticks);
                (
                    t.name.clone(),
                    share(t.ticks.saturating_sub(before)).min(1.0),
                )
            })
            .collect();
        workers.sort_by(|a, b| a.0.cmp(&b.0));
        Some(ProcSample {
            pid,
            cores: share(total.saturating_sub(total0)),
            workers,
        })
    }

    fn forget_except(&mut self, pids: &[u32]) {
        self.prev.retain(|p, _| pids.contains(p));
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThreadTicks {
    pub tid: u32,
    pub name: String,
    pub ticks: u64,
}

fn read_threads(pid: u32) -> Option<Vec<ThreadTicks>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| {
                let tid: u32 = e.file_name().to_str()?.parse().ok()?;
                let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
                parse_stat(tid, &text)
            })
            .collect(),
    )
}

/// Parses `/proc/<pid>/task/<tid>/stat`: the name sits in parentheses (and may hold spaces or
/// parentheses itself), utime and stime are fields 14 and 15.
pub fn parse_stat(tid: u32, text: &str) -> Option<ThreadTicks> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(ThreadTicks {
        tid,
        name,
        ticks: utime + stime,
    })
}

/// This thread's CPU seconds so far (utime + stime), for the workbench's own load figure.
pub fn thread_cpu_seconds(tid: u32) -> Option<f64> {
    let pid = std::process::id();
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    Some(parse_stat(tid, &text)?.ticks as f64 / clock_ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_with_spaces_and_parens_parse() {
        let line = "4242 (cptlab-worker-0) R 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        let t = parse_stat(4242, line).unwrap();
        assert_eq!(t.name, "cptlab-worker-0");
        assert_eq!(t.ticks, 280);
        let odd = "7 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 1 2 0";
        assert_eq!(parse_stat(7, odd).unwrap().name, "a (b) c");
        assert_eq!(parse_stat(7, odd).unwrap().ticks, 3);
    }

    #[test]
    fn own_process_is_sampled() {
        let mut s = CpuSampler::default();
        let me = std::process::id();
        assert!(
            s.sample(me).is_none(),
            "first sample only sets the baseline"
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let p = s.sample(me).unwrap();
        assert!(p.cores >= 0.0);
    }
}
