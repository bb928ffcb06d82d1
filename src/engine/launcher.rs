//! Which launcher started this process and where it puts it: torchrun (static, `--standalone`
//! or `--rdzv-backend c10d`), Slurm (`srun`), DeepSpeed's launcher, or plain environment
//! variables. Read from the environment only; nothing is contacted.
//!
//! - **torchrun** sets `TORCHELASTIC_RUN_ID` (and `RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//!   `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_RESTART_COUNT`).
//!   With `TORCHELASTIC_USE_AGENT_STORE=True` (static and c10d rendezvous, hence `--standalone`)
//!   the agent already serves a TCPStore at `MASTER_ADDR:MASTER_PORT`: every rank is its client,
//!   as torch's `_create_c10d_store` does. torch 2.11 stopped prefixing that store per restart
//!   ("a new TCPStore for every retry"), but its agents reuse one store across restarts (the
//!   static handler creates it once; c10d caches `_bootstrap_store_info`), so cptlab keeps torch's
//!   former prefix `/worker/attempt_<TORCHELASTIC_RESTART_COUNT>`: a restarted attempt never reads
//!   the keys of the one before. Which rendezvous backend the agent used is not visible to a
//!   worker (the same variables come in every case).
//! - **Slurm** (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NODEID`; when
//!   `MASTER_ADDR`/`MASTER_PORT` are unset, the first host of `SLURM_NODELIST` (bracket ranges
//!   expanded) and, as PyTorch Lightning does, port 15000 + the last four digits of
//!   `SLURM_JOB_ID`. A job named `bash` or `interactive` is not treated as Slurm-launched
//!   (Lightning's rule: processes started by hand inside an allocation).
//! - **DeepSpeed's launcher** sets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//!   `MASTER_PORT` (plus `CROSS_RANK`, `CROSS_SIZE`, `LOCAL_SIZE`) and passes `--local_rank=N`.
//! - **Plain environment**: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (`LOCAL_RANK`,
//!   `LOCAL_WORLD_SIZE`, `GROUP_RANK` optional).
//!
//! Without an agent store, rank 0 hosts the store on `MASTER_PORT`, on every interface.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

pub type Result<T> = std::result::Result<T, LaunchError>;

/// The launchers cptlab recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LauncherKind {
    Torchrun,
    Slurm,
    DeepSpeed,
    Env,
}

impl LauncherKind {
    pub const ALL: [LauncherKind; 4] = [
        LauncherKind::Torchrun,
        LauncherKind::Slurm,
        LauncherKind::DeepSpeed,
        LauncherKind::Env,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LauncherKind::Torchrun => "torchrun",
            LauncherKind::Slurm => "slurm",
            LauncherKind::DeepSpeed => "deepspeed",
            LauncherKind::Env => "env",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            LauncherKind::Torchrun => {
                "torchrun --no-python (static, --standalone or c10d rendezvous)"
            }
            LauncherKind::Slurm => {
                "srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_NODELIST"
            }
            LauncherKind::DeepSpeed => {
                "DeepSpeed's launcher: RANK, LOCAL_RANK, WORLD_SIZE and --local_rank=N"
            }
            LauncherKind::Env => "plain variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT",
        }
    }
}

impl fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the job's c10d store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHost {
    /// torchrun's agent serves it at `MASTER_ADDR:MASTER_PORT`; every rank is a client and
    /// works under `prefix`.
    Agent { prefix: String },
    /// Rank 0 serves it on `MASTER_PORT`, on every interface.
    Rank0,
}

/// Where this process sits in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub kind: LauncherKind,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// Processes on this node, when the launcher says (else counted at the rendezvous).
    pub local_world_size: Option<usize>,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub store: StoreHost,
    /// What else the launcher said (run id, restart count, job id), for the run header.
    pub detail: String,
}

/// The prefix torchrun's agent store is used under in attempt `restart`.
pub fn agent_prefix(restart: u64) -> String {
    format!("/worker/attempt_{restart}")
}

/// The port Lightning derives from a Slurm job id: 15000 + its last four digits.
pub fn slurm_port(job_id: &str) -> Option<u16> {
    let digits: String = job_id.chars().filter(|c| c.is_ascii_digit()).collect();
    let tail = &digits[digits.len().saturating_sub(4)..];
    tail.parse::<u16>().ok().map(|n| 15000 + n)
}

/// Expands a Slurm host list: `node[001-003,7],gpu5` → node001, node002, node003, node7,
/// gpu5 (zero padding kept, as `scontrol show hostnames` prints them).
pub fn expand_nodelist(list: &str) -> std::result::Result<Vec<String>, String> {
    let list = list.trim();
    let mut hosts = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        // One host expression: up to the next comma outside brackets.
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
            if depth < 0 {
                return Err(format!("{list:?}: unbalanced ']'"));
            }
        }
        let expr = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',');
        if expr.is_empty() {
            continue;
        }
        hosts.extend(expand_host(expr).map_err(|e| format!("{list:?}: {e}"))?);
    }
    if hosts.is_empty() {
        return Err(format!("{list:?} names no host"));
    }
    Ok(hosts)
}

/// One expression, possibly with several bracket groups (`rack[1-2]-n[01-02]`).
fn expand_host(expr: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = expr.find('[') else {
        if expr.contains(']') {
            return Err(format!("{expr:?}: unbalanced ']'"));
        }
        return Ok(vec![expr.to_string()]);
    };
    let close = expr[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("{expr:?}: '[' without ']'"))?;
    let (prefix, ranges, suffix) = (&expr[..open], &expr[open + 1..close], &expr[close + 1..]);
    let tails = expand_host(suffix)?;
    let mut out = Vec::new();
    for part in ranges.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let width = lo.len();
        let (a, b): (u64, u64) = match (lo.parse(), hi.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(format!("{part:?} is not a number or a range a-b")),
        };
        if b - a > 100_000 {
            return Err(format!("{part:?} is too large a range"));
        }
        for n in a..=b {
            for t in &tails {
                out.push(format!("{prefix}{n:0width$}{t}"));
            }
        }
    }
    Ok(out)
}

/// Slurm's per-node task counts (`SLURM_TASKS_PER_NODE`, e.g. `2(x3),1`), one per node.
fn tasks_per_node(spec: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        match part.split_once("(x") {
            Some((n, times)) => {
                let n: usize = n.parse().ok()?;
                let times: usize = times.trim_end_matches(')').parse().ok()?;
                out.extend(std::iter::repeat_n(n, times));
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Reads one launcher's variables through `get`.
struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    help: &'static str,
}

impl Vars<'_> {
    fn opt(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn req(&self, name: &str) -> Result<String> {
        self.opt(name)
            .ok_or_else(|| LaunchError(format!("{name} is not set: {}", self.help)))
    }

    fn num_opt(&self, name: &str) -> Result<Option<usize>> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| LaunchError(format!("{name}={v:?} is not a non-negative integer"))),
        }
    }

    fn num(&self, name: &str) -> Result<usize> {
        let v = self.req(name)?;
        v.parse()
            .map_err(|_| LaunchError(format!("{name}={v:?} is not a non-negative integer")))
    }

    fn port(&self, name: &str) -> Result<u16> {
        let v = self.req(name)?;
        parse_port(name, &v)
    }
}

fn parse_port(name: &str, v: &str) -> Result<u16> {
    v.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| LaunchError(format!("{name}={v:?} is not a port (1-65535)")))
}

const ENV_HELP: &str = "a cptlab worker is started by torchrun, srun or DeepSpeed's launcher, or given RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT";

/// The launcher these variables come from, if any, without checking them.
pub fn detect_kind(
    get: &dyn Fn(&str) -> Option<String>,
    local_rank_arg: bool,
) -> Option<LauncherKind> {
    let has = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());
    if has("TORCHELASTIC_RUN_ID") {
        return Some(LauncherKind::Torchrun);
    }
    let interactive =
        get("SLURM_JOB_NAME").is_some_and(|n| matches!(n.trim(), "bash" | "interactive"));
    if has("SLURM_NTASKS") && has("SLURM_PROCID") && !interactive {
        return Some(LauncherKind::Slurm);
    }
    if local_rank_arg || (has("RANK") && (has("CROSS_RANK") || has("LOCAL_SIZE"))) {
        return Some(LauncherKind::DeepSpeed);
    }
    if has("RANK") || has("WORLD_SIZE") || has("MASTER_ADDR") {
        return Some(LauncherKind::Env);
    }
    None
}

impl Launch {
    /// From this process's environment; `local_rank_arg`: a `--local_rank=N` on the command
    /// line (DeepSpeed's launcher).
    pub fn from_env(local_rank_arg: Option<usize>) -> Result<Launch> {
        Launch::from_lookup(&|k| std::env::var(k).ok(), local_rank_arg)
    }

    /// As [`Launch::from_env`], reading variables through `get`.
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        local_rank_arg: Option<usize>,
    ) -> Result<Launch> {
        let kind = detect_kind(get, local_rank_arg.is_some())
            .ok_or_else(|| LaunchError(format!("RANK is not set: {ENV_HELP}")))?;
        let launch = match kind {
            LauncherKind::Torchrun => torchrun(get)?,
            LauncherKind::Slurm => slurm(get)?,
            LauncherKind::DeepSpeed => deepspeed(get, local_rank_arg)?,
            LauncherKind::Env => plain(get)?,
        };
        if let (Some(arg), true) = (local_rank_arg, kind != LauncherKind::DeepSpeed) {
            if arg != launch.local_rank {
                return Err(LaunchError(format!(
                    "--local_rank={arg} disagrees with the local rank {} that {kind} set",
                    launch.local_rank
                )));
            }
        }
        launch.check()
    }

    fn check(self) -> Result<Launch> {
        if self.world_size == 0 {
            return Err(LaunchError("the world size is 0: at least one rank".into()));
        }
        if self.rank >= self.world_size {
            return Err(LaunchError(format!(
                "rank {} is not below the world size {} ({})",
                self.rank, self.world_size, self.kind
            )));
        }
        if let Some(l) = self.local_world_size {
            if l == 0 || self.local_rank >= l {
                return Err(LaunchError(format!(
                    "local rank {} is not below the local world size {l} ({})",
                    self.local_rank, self.kind
                )));
            }
        }
        Ok(self)
    }

    /// One line for `doctor` and the run header.
    pub fn describe(&self) -> String {
        let store = match &self.store {
            StoreHost::Agent { prefix } => format!(
                "the agent's store at {}:{} under {prefix}",
                self.master_addr, self.master_port
            ),
            StoreHost::Rank0 => format!(
                "store on rank 0 at {}:{}",
                self.master_addr, self.master_port
            ),
        };
        let local = match self.local_world_size {
            Some(l) => format!("local {} of {l}", self.local_rank),
            None => format!("local {}", self.local_rank),
        };
        let detail = if self.detail.is_empty() {
            String::new()
        } else {
            format!(", {}", self.detail)
        };
        format!(
            "{}: rank {} of {}, {local}, node {}, {store}{detail}",
            self.kind, self.rank, self.world_size, self.node_rank
        )
    }
}

/// What `doctor` prints: the launcher that started this process, or why none was found.
pub fn describe_environment() -> String {
    let get = |k: &str| std::env::var(k).ok();
    match detect_kind(&get, false) {
        None => "none (not started by torchrun, srun or DeepSpeed; RANK is unset)".into(),
        Some(kind) => match Launch::from_lookup(&get, None) {
            Ok(l) => l.describe(),
            Err(e) => format!("{kind}, but {e}"),
        },
    }
}

fn torchrun(get: &dyn Fn(&str) -> Option<String>) -> Result<Launch> {
    let v = Vars {
        get,
        help: "torchrun sets it for its workers; start cptlab as `torchrun … --no-python cptlab worker …`",
    };
    let restart = v.num_opt("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0) as u64;
    // torch compares with str(True) exactly.
    let agent = v.opt("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
    let run_id = v.opt("TORCHELASTIC_RUN_ID").unwrap_or_default();
    let max = v.opt("TORCHELASTIC_MAX_RESTARTS");
    let mut detail = format!("run id {run_id}, restart {restart}");
    if let Some(m) = max {
        detail.push_str(&format!(" of at most {m}"));
    }
    Ok(Launch {
        kind: LauncherKind::Torchrun,
        rank: v.num("RANK")?,
        world_size: v.num("WORLD_SIZE")?,
        local_rank: v.num("LOCAL_RANK")?,
        local_world_size: v.num_opt("LOCAL_WORLD_SIZE")?,
        node_rank: v.num_opt("GROUP_RANK")?.unwrap_or(0),
        master_addr: v.req("MASTER_ADDR")?,
        master_port: v.port("MASTER_PORT")?,
        store: if agent {
            StoreHost::Agent {
                prefix: agent_prefix(restart),
            }
        } else {
            StoreHost::Rank0
        },
        detail,
    })
}

fn slurm(get: &dyn Fn(&str) -> Option<String>) -> Result<Launch> {
    let v = Vars {
        get,
        help: "srun sets it for every task",
    };
    let job = v.opt("SLURM_JOB_ID").unwrap_or_default();
    let master_addr = match v.opt("MASTER_ADDR") {
        Some(a) => a,
        None => {
            let (name, list) = ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"]
                .iter()
                .find_map(|k| v.opt(k).map(|l| (*k, l)))
                .ok_or_else(|| {
                    LaunchError(
                        "neither MASTER_ADDR nor SLURM_NODELIST is set: srun sets SLURM_NODELIST, or export MASTER_ADDR".into(),
                    )
                })?;
            expand_nodelist(&list)
                .map_err(|e| LaunchError(format!("{name}: {e}")))?
                .remove(0)
        }
    };
    let master_port = match v.opt("MASTER_PORT") {
        Some(p) => parse_port("MASTER_PORT", &p)?,
        None => slurm_port(&job).ok_or_else(|| {
            LaunchError(format!(
                "MASTER_PORT is not set and SLURM_JOB_ID={job:?} has no digits to derive one from (15000 + its last four): export MASTER_PORT"
            ))
        })?,
    };
    let node_rank = v.num_opt("SLURM_NODEID")?.unwrap_or(0);
    let local_world_size = v
        .opt("SLURM_TASKS_PER_NODE")
        .and_then(|s| tasks_per_node(&s))
        .and_then(|per| per.get(node_rank).copied())
        .or(v.num_opt("SLURM_NTASKS_PER_NODE")?);
    Ok(Launch {
        kind: LauncherKind::Slurm,
        rank: v.num("SLURM_PROCID")?,
        world_size: v.num("SLURM_NTASKS")?,
        local_rank: v.num_opt("SLURM_LOCALID")?.unwrap_or(0),
        local_world_size,
        node_rank,
        master_addr,
        master_port,
        store: StoreHost::Rank0,
        detail: format!("job {job}"),
    })
}

fn deepspeed(get: &dyn Fn(&str) -> Option<String>, arg: Option<usize>) -> Result<Launch> {
    let v = Vars {
        get,
        help: "DeepSpeed's launcher sets it for every process",
    };
    let local_rank = match (v.num_opt("LOCAL_RANK")?, arg) {
        (Some(env), Some(arg)) if env != arg => {
            return Err(LaunchError(format!(
                "--local_rank={arg} disagrees with LOCAL_RANK={env}"
            )))
        }
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => 0,
    };
    Ok(Launch {
        kind: LauncherKind::DeepSpeed,
        rank: v.num("RANK")?,
        world_size: v.num("WORLD_SIZE")?,
        local_rank,
        local_world_size: v.num_opt("LOCAL_SIZE")?.or(v.num_opt("LOCAL_WORLD_SIZE")?),
        node_rank: v.num_opt("CROSS_RANK")?.unwrap_or(0),
        master_addr: v.req("MASTER_ADDR")?,
        master_port: v.port("MASTER_PORT")?,
        store: StoreHost::Rank0,
        detail: String::new(),
    })
}

fn plain(get: &dyn Fn(&str) -> Option<String>) -> Result<Launch> {
    let v = Vars {
        get,
        help: ENV_HELP,
    };
    Ok(Launch {
        kind: LauncherKind::Env,
        rank: v.num("RANK")?,
        world_size: v.num("WORLD_SIZE")?,
        local_rank: v.num_opt("LOCAL_RANK")?.unwrap_or(0),
        local_world_size: v.num_opt("LOCAL_WORLD_SIZE")?,
        node_rank: v
            .num_opt("GROUP_RANK")?
            .or(v.num_opt("NODE_RANK")?)
            .unwrap_or(0),
        master_addr: v.req("MASTER_ADDR")?,
        master_port: v.port("MASTER_PORT")?,
        store: StoreHost::Rank0,
        detail: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nodelists_expand_like_scontrol() {
        assert_eq!(expand_nodelist("node1").unwrap(), ["node1"]);
        assert_eq!(
            expand_nodelist("node[001-003,7],gpu5").unwrap(),
            ["node001", "node002", "node003", "node7", "gpu5"]
        );
        assert_eq!(
            expand_nodelist("r[1-2]-n[08-09]").unwrap(),
            ["r1-n08", "r1-n09", "r2-n08", "r2-n09"]
        );
        assert_eq!(expand_nodelist("a,b[3]").unwrap(), ["a", "b3"]);
        for bad in ["node[1-", "node]", "node[3-1]", "node[x]", ""] {
            assert!(expand_nodelist(bad).is_err(), "{bad:?}");
        }
        assert_eq!(tasks_per_node("2(x3),1"), Some(vec![2, 2, 2, 1]));
    }

    #[test]
    fn torchrun_with_the_agent_store_is_a_client_under_the_attempt_prefix() {
        let vars = [
            ("TORCHELASTIC_RUN_ID", "none"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("TORCHELASTIC_MAX_RESTARTS", "3"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("GROUP_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let l = Launch::from_lookup(&env(&vars), None).unwrap();
        assert_eq!(l.kind, LauncherKind::Torchrun);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.node_rank),
            (3, 4, 1, 1)
        );
        assert_eq!(
            l.store,
            StoreHost::Agent {
                prefix: "/worker/attempt_2".into()
            }
        );
        let d = l.describe();
        assert!(
            d.starts_with("torchrun: rank 3 of 4, local 1 of 2, node 1"),
            "{d}"
        );
        assert!(d.contains("10.0.0.1:29500 under /worker/attempt_2"), "{d}");
        // Without the agent store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), rank 0 hosts it.
        let mut no_agent = vars.to_vec();
        no_agent[3] = ("TORCHELASTIC_USE_AGENT_STORE", "False");
        let l = Launch::from_lookup(&env(&no_agent), None).unwrap();
        assert_eq!(l.store, StoreHost::Rank0);
        // A missing variable is named.
        let missing: Vec<_> = vars
            .iter()
            .copied()
            .filter(|(k, _)| *k != "MASTER_PORT")
            .collect();
        let e = Launch::from_lookup(&env(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MASTER_PORT is not set"), "{e}");
    }

    #[test]
    fn slurm_derives_master_and_port_as_lightning_does() {
        let vars = [
            ("SLURM_JOB_ID", "1234567"),
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "2"),
            ("SLURM_TASKS_PER_NODE", "2(x4)"),
            ("SLURM_NODELIST", "gpu[017-020]"),
        ];
        let l = Launch::from_lookup(&env(&vars), None).unwrap();
        assert_eq!(l.kind, LauncherKind::Slurm);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.node_rank),
            (5, 8, 1, 2)
        );
        assert_eq!(l.local_world_size, Some(2));
        assert_eq!(l.master_addr, "gpu017");
        assert_eq!(l.master_port, 15000 + 4567);
        assert_eq!(l.store, StoreHost::Rank0);
        let mut given = vars.to_vec();
        given.push(("MASTER_ADDR", "head"));
        given.push(("MASTER_PORT", "29400"));
        let l = Launch::from_lookup(&env(&given), None).unwrap();
        assert_eq!((l.master_addr.as_str(), l.master_port), ("head", 29400));
        // Processes started by hand in an allocation are not srun's.
        let mut interactive = vars.to_vec();
        interactive.push(("SLURM_JOB_NAME", "interactive"));
        assert_eq!(detect_kind(&env(&interactive), false), None);
        let mut bad = vars.to_vec();
        bad[6] = ("SLURM_NODELIST", "gpu[017-");
        let e = Launch::from_lookup(&env(&bad), None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SLURM_NODELIST: "), "{e}");
    }

    #[test]
    fn deepspeed_passes_local_rank_as_an_argument() {
        let vars = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("CROSS_RANK", "0"),
            ("LOCAL_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let l = Launch::from_lookup(&env(&vars), Some(1)).unwrap();
        assert_eq!(l.kind, LauncherKind::DeepSpeed);
        assert_eq!((l.local_rank, l.local_world_size), (1, Some(2)));
        // The environment alone (CROSS_RANK, LOCAL_SIZE) says DeepSpeed too.
        assert_eq!(
            Launch::from_lookup(&env(&vars), None).unwrap().kind,
            LauncherKind::DeepSpeed
        );
        let e = Launch::from_lookup(&env(&vars), Some(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--local_rank=0 disagrees with LOCAL_RANK=1"),
            "{e}"
        );
    }

    #[test]
    fn plain_variables_are_read_and_explained() {
        let vars = [
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let l = Launch::from_lookup(&env(&vars), None).unwrap();
        assert_eq!(l.kind, LauncherKind::Env);
        assert_eq!((l.rank, l.world_size, l.local_rank), (1, 4, 0));
        let with = |k: &'static str, val: &'static str| {
            let mut v = vars.to_vec();
            v.retain(|(key, _)| *key != k);
            v.push((k, val));
            v
        };
        let e = Launch::from_lookup(&env(&with("RANK", "x")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = Launch::from_lookup(&env(&with("RANK", "4")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not below the world size 4"), "{e}");
        let e = Launch::from_lookup(&env(&with("MASTER_PORT", "70000")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_PORT=\"70000\" is not a port"), "{e}");
        let e = Launch::from_lookup(&env(&[]), None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("RANK is not set"), "{e}");
        assert_eq!(detect_kind(&env(&[]), false), None);
    }

    #[test]
    fn launcher_names_are_distinct() {
        let names: std::collections::HashSet<_> =
            LauncherKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), LauncherKind::ALL.len());
        assert!(LauncherKind::ALL.iter().all(|k| !k.describe().is_empty()));
    }
}
