//! The ranks of a multi-process job meet through libtorch's c10d store ([`super::store`]): the
//! agent's store under torchrun, else the one rank 0 serves on `MASTER_PORT` (every interface).
//! On top of the store, before any training state is built:
//!
//! - **Authentication** with a shared secret (`CPTLAB_RDZV_TOKEN`, required on every rank) that
//!   never enters the store: rank 0 publishes a random nonce with its message; every rank
//!   answers with a keyed BLAKE3 MAC (key derived from the token) over that nonce, its own nonce
//!   and its hello; rank 0's verdict carries a MAC over every rank's nonce and the verdict. So
//!   each rank knows the others hold the token and that the verdict is fresh and unaltered.
//!   MACs are compared in constant time (`blake3::Hash`'s equality). Anyone who can reach the
//!   store can still write to it (so can anyone reaching a PyTorch job's): the token makes a
//!   forged or foreign rank fail the rendezvous instead of joining it.
//! - **Configuration agreement**: rank 0 publishes the configuration it resolved; every rank
//!   compares it with its own and a rank with another config is refused, naming the fields that
//!   differ (on that rank and, through the verdict, on every other).
//! - **Timeouts** name what is missing: "ranks 1, 3 did not join within 30 s" (on rank 0 and, in
//!   the verdict, on the ranks that came), "rank 0 did not arrive", "could not reach the store".
//!   A duplicate rank or a rank counting another world size fails the rendezvous on every rank.
//!
//! Nothing read from the store is executed: messages are JSON of fixed types, with size limits;
//! the configuration is returned as text for the caller to parse and validate.
use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::launcher::{Launch, StoreHost};
use super::store::{Store, StoreError, StoreErrorKind};

/// The shared secret's environment variable.
pub const TOKEN_ENV: &str = "CPTLAB_RDZV_TOKEN";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 8;
/// Largest configuration handed out.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
/// The namespace of cptlab's keys in the job's store.
pub const KEY_PREFIX: &str = "cptlab";
const PROTOCOL: u32 = 2;
/// How often the waiting ranks look at the store.
const POLL: Duration = Duration::from_millis(50);
/// Longest hello a rank may write (its hostname and, on a mismatch, the differing fields).
const MAX_HELLO_BYTES: usize = 64 * 1024;
/// Fields listed in a configuration mismatch.
const MAX_FIELDS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RendezvousError {
    /// A launcher variable is missing or invalid (the message names it).
    #[error("{0}")]
    Env(String),
    #[error("{0}")]
    Token(String),
    #[error("rendezvous timed out: {0}")]
    Timeout(String),
    #[error("configuration mismatch: {0}")]
    ConfigMismatch(String),
    /// Rank 0 refused this rank, or another rank was refused (authentication, world size,
    /// duplicate rank).
    #[error("rendezvous refused: {0}")]
    Refused(String),
    /// Rank 0 cannot serve the store: the port is taken.
    #[error("{0}")]
    AddressInUse(String),
    /// Something in the store is not a valid message.
    #[error("rendezvous protocol error: {0}")]
    Protocol(String),
    /// The store failed (connection lost, …).
    #[error("rendezvous: {0}")]
    Store(String),
}

pub type Result<T> = std::result::Result<T, RendezvousError>;

impl From<super::launcher::LaunchError> for RendezvousError {
    fn from(e: super::launcher::LaunchError) -> Self {
        RendezvousError::Env(e.0)
    }
}

fn store_err(what: &str, e: StoreError) -> RendezvousError {
    match e.kind {
        StoreErrorKind::Timeout => RendezvousError::Timeout(format!("{what}: {}", e.message)),
        _ => RendezvousError::Store(format!("{what}: {}", e.message)),
    }
}

/// The shared secret from `CPTLAB_RDZV_TOKEN`; an error (saying how to set one) if unset or
/// shorter than [`MIN_TOKEN_CHARS`].
pub fn token_from_env() -> Result<String> {
    let t = std::env::var(TOKEN_ENV).unwrap_or_default();
    check_token(&t)?;
    Ok(t)
}

pub fn check_token(t: &str) -> Result<()> {
    if t.is_empty() {
        return Err(RendezvousError::Token(format!(
            "{TOKEN_ENV} is not set: a multi-process rendezvous needs a shared secret; set the same value on every node, e.g. export {TOKEN_ENV}=$(openssl rand -hex 16)"
        )));
    }
    if t.chars().count() < MIN_TOKEN_CHARS {
        return Err(RendezvousError::Token(format!(
            "{TOKEN_ENV} is too short ({} characters): use at least {MIN_TOKEN_CHARS}, e.g. $(openssl rand -hex 16)",
            t.chars().count()
        )));
    }
    Ok(())
}

/// The hash of a configuration's TOML text (BLAKE3).
pub fn config_hash(config_toml: &str) -> [u8; 32] {
    *blake3::hash(config_toml.as_bytes()).as_bytes()
}

/// "30 s", "1.5 s", "200 ms".
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// "rank 2" or "ranks 1, 3".
pub fn rank_list(ranks: &[usize]) -> String {
    let list = ranks
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ranks.len() == 1 {
        format!("rank {list}")
    } else {
        format!("ranks {list}")
    }
}

/// A rank that took part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub rank: usize,
    pub local_rank: usize,
    pub hostname: String,
    /// The address this rank's traffic to the store leaves from (what its peers reach it at).
    pub addr: String,
    pub pid: u32,
}

/// What the rendezvous agreed on.
#[derive(Debug)]
pub struct Agreement {
    /// Rank 0's configuration (equal to this rank's).
    pub config_toml: String,
    /// Every rank, in rank order.
    pub peers: Vec<PeerInfo>,
    /// The job's store, under cptlab's prefix (for the collectives and the exit).
    pub store: Store,
    /// Whether this process serves the store (rank 0 without an agent).
    pub serves_store: bool,
    /// Where the store is, for messages ("127.0.0.1:29500").
    pub store_addr: String,
}

/// Rank 0's message.
#[derive(Debug, Serialize, Deserialize)]
struct HostMsg {
    protocol: u32,
    world_size: usize,
    nonce: String,
    hostname: String,
    config_toml: String,
    mac: String,
}

/// Every other rank's hello.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    protocol: u32,
    peer: PeerInfo,
    world_size: usize,
    nonce: String,
    config_hash: String,
    /// The fields in which this rank's config differs from rank 0's (empty when equal).
    mismatch: Vec<String>,
    mac: String,
}

/// Rank 0's verdict.
#[derive(Debug, Serialize, Deserialize)]
struct Verdict {
    /// Empty on success.
    error: String,
    kind: VerdictKind,
    peers: Vec<PeerInfo>,
    /// Every rank's nonce (rank order; empty for ranks that did not come).
    nonces: Vec<String>,
    mac: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum VerdictKind {
    Ok,
    Timeout,
    Config,
    Refused,
}

fn derive_key(token: &str) -> [u8; 32] {
    blake3::derive_key("cptlab rendezvous v2 shared token", token.as_bytes())
}

fn mac(key: &[u8; 32], label: &str, parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(label.as_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex().to_string()
}

/// Constant-time check of a hex MAC.
fn mac_ok(expected_hex: &str, got_hex: &str) -> bool {
    match (
        blake3::Hash::from_hex(expected_hex),
        blake3::Hash::from_hex(got_hex),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn host_mac(key: &[u8; 32], m: &HostMsg) -> String {
    mac(
        key,
        "host",
        &[
            &m.protocol.to_le_bytes(),
            &(m.world_size as u64).to_le_bytes(),
            m.nonce.as_bytes(),
            m.hostname.as_bytes(),
            m.config_toml.as_bytes(),
        ],
    )
}

fn hello_mac(key: &[u8; 32], host_nonce: &str, h: &Hello) -> String {
    let peer = serde_json::to_vec(&h.peer).expect("peer info serializes");
    let mismatch = h.mismatch.join("\n");
    mac(
        key,
        "hello",
        &[
            host_nonce.as_bytes(),
            &h.protocol.to_le_bytes(),
            &peer,
            &(h.world_size as u64).to_le_bytes(),
            h.nonce.as_bytes(),
            h.config_hash.as_bytes(),
            mismatch.as_bytes(),
        ],
    )
}

fn verdict_mac(key: &[u8; 32], host_nonce: &str, v: &Verdict) -> String {
    let peers = serde_json::to_vec(&v.peers).expect("peers serialize");
    let kind = serde_json::to_vec(&v.kind).expect("kind serializes");
    let nonces = v.nonces.join(",");
    mac(
        key,
        "verdict",
        &[
            host_nonce.as_bytes(),
            v.error.as_bytes(),
            &kind,
            &peers,
            nonces.as_bytes(),
        ],
    )
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: writes at most buf.len() bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    if !ok {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The local address traffic to `host:port` leaves from (a UDP socket "connected" there: no
/// packet is sent).
pub fn route_source(host: &str, port: u16) -> Option<IpAddr> {
    let target = (host, port).to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(target).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// The address this rank's collective transport should bind: where its traffic to the store
/// leaves from, unless that is a loopback address while some rank runs on another host (a host
/// name that `/etc/hosts` maps to 127.0.1.1): then the route towards such a rank.
pub fn transport_address(me: &PeerInfo, peers: &[PeerInfo]) -> String {
    let loopback = |a: &str| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback(&me.addr) {
        return me.addr.clone();
    }
    peers
        .iter()
        .filter(|p| p.hostname != me.hostname && !loopback(&p.addr))
        .find_map(|p| route_source(&p.addr, 9))
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| me.addr.clone())
}

/// The dotted paths at which two configurations differ ("optimizer.lr = 0.5 on rank 1, 0.1 on
/// rank 0"), at most [`MAX_FIELDS`].
pub fn config_diff(mine: &str, theirs: &str, me: &str, them: &str) -> Vec<String> {
    let parse = |s: &str| s.parse::<toml::Table>().unwrap_or_default();
    let (a, b) = (parse(mine), parse(theirs));
    let mut out = Vec::new();
    diff_tables("", &a, &b, me, them, &mut out);
    if out.is_empty() {
        // Same values, different text (another cptlab version's formatting).
        out.push("the configuration text (same values, different form)".into());
    }
    if out.len() > MAX_FIELDS {
        let more = out.len() - MAX_FIELDS;
        out.truncate(MAX_FIELDS);
        out.push(format!("and {more} more"));
    }
    out
}

fn show(v: Option<&toml::Value>) -> String {
    match v {
        None => "unset".into(),
        Some(toml::Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

fn diff_tables(
    path: &str,
    a: &toml::Table,
    b: &toml::Table,
    me: &str,
    them: &str,
    out: &mut Vec<String>,
) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match (a.get(k), b.get(k)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                diff_tables(&p, x, y, me, them, out)
            }
            (x, y) if x != y => {
                out.push(format!("{p} = {} on {me}, {} on {them}", show(x), show(y)))
            }
            _ => {}
        }
    }
}

/// Connects to the job's store as the launcher says: the agent's (torchrun), or rank 0's
/// (served here on rank 0). Returns the store under cptlab's prefix and whether this process
/// serves it.
pub fn open_store(launch: &Launch, timeout: Duration) -> Result<(Store, bool)> {
    super::store::quiet_c10_logs();
    let at = format!("{}:{}", launch.master_addr, launch.master_port);
    let (base, serves) = match &launch.store {
        StoreHost::Agent { prefix } => {
            let s =
                Store::connect(&launch.master_addr, launch.master_port, timeout).map_err(|e| {
                    match e.kind {
                        StoreErrorKind::Timeout => RendezvousError::Timeout(format!(
                            "rank {} could not reach torchrun's agent store at {at} within {}: {}",
                            launch.rank,
                            seconds(timeout),
                            e.message
                        )),
                        _ => RendezvousError::Store(format!(
                            "rank {}: torchrun's agent store at {at}: {}",
                            launch.rank, e.message
                        )),
                    }
                })?;
            let s = s
                .prefixed(prefix)
                .map_err(|e| store_err("prefixing the store", e))?;
            (s, false)
        }
        StoreHost::Rank0 if launch.rank == 0 => {
            let s = Store::serve(launch.master_port, timeout).map_err(|e| match e.kind {
                StoreErrorKind::AddressInUse => RendezvousError::AddressInUse(format!(
                    "port {} (MASTER_PORT) is already in use on this host: another job or a launcher's own store listens there; pick another MASTER_PORT",
                    launch.master_port
                )),
                _ => RendezvousError::Store(format!(
                    "rank 0 cannot serve the store on port {}: {}",
                    launch.master_port, e.message
                )),
            })?;
            (s, true)
        }
        StoreHost::Rank0 => {
            let s = Store::connect(&launch.master_addr, launch.master_port, timeout).map_err(
                |e| match e.kind {
                    StoreErrorKind::Timeout => RendezvousError::Timeout(format!(
                        "rank {} could not reach the store at {at} within {} (rank 0 serves it: is rank 0 running, and MASTER_ADDR/MASTER_PORT right?): {}",
                        launch.rank,
                        seconds(timeout),
                        e.message
                    )),
                    _ => RendezvousError::Store(format!(
                        "rank {}: the store at {at}: {}",
                        launch.rank, e.message
                    )),
                },
            )?;
            (s, false)
        }
    };
    let store = base
        .prefixed(KEY_PREFIX)
        .map_err(|e| store_err("prefixing the store", e))?;
    Ok((store, serves))
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
    max: usize,
    what: &str,
) -> Result<T> {
    let bytes = store.get(key).map_err(|e| store_err(what, e))?;
    if bytes.len() > max {
        return Err(RendezvousError::Protocol(format!(
            "{what}: {} bytes exceed the {max}-byte limit",
            bytes.len()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| RendezvousError::Protocol(format!("{what} is not a cptlab message: {e}")))
}

fn write_json<T: Serialize>(store: &Store, key: &str, v: &T, what: &str) -> Result<()> {
    let bytes = serde_json::to_vec(v).expect("messages serialize");
    store.set(key, &bytes).map_err(|e| store_err(what, e))
}

/// Polls until `key` exists or the deadline passes (each poll is one small request, so a
/// deadline is honoured to within [`POLL`]).
fn wait_key(store: &Store, key: &str, deadline: Instant) -> Result<bool> {
    loop {
        if store
            .check(key)
            .map_err(|e| store_err("reading the store", e))?
        {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Meets every other rank: rank 0 publishes its config and decides; every other rank checks
/// its own config against it. `timeout` bounds the whole wait.
pub fn meet(
    launch: &Launch,
    store: Store,
    serves_store: bool,
    token: &str,
    config_toml: &str,
    timeout: Duration,
) -> Result<Agreement> {
    check_token(token)?;
    if config_toml.len() > MAX_CONFIG_BYTES {
        return Err(RendezvousError::Protocol(format!(
            "the configuration has {} bytes, more than the {MAX_CONFIG_BYTES}-byte limit",
            config_toml.len()
        )));
    }
    let key = derive_key(token);
    let me = PeerInfo {
        rank: launch.rank,
        local_rank: launch.local_rank,
        hostname: hostname(),
        addr: route_source(&launch.master_addr, launch.master_port)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        pid: std::process::id(),
    };
    let store_addr = format!("{}:{}", launch.master_addr, launch.master_port);
    // A second process with this rank (a wrong RANK, or a job started twice on one store).
    let claims = store
        .add(&format!("rdzv/claim/{}", me.rank), 1)
        .map_err(|e| store_err("claiming this rank", e))?;
    if claims > 1 {
        let _ = store.set(
            &format!("rdzv/duplicate/{}", me.rank),
            me.hostname.as_bytes(),
        );
        return Err(RendezvousError::Refused(format!(
            "rank {} joined twice: another process on the store at {store_addr} already has RANK={} (check RANK on every node, or another job uses this MASTER_PORT)",
            me.rank, me.rank
        )));
    }
    let peers = if me.rank == 0 {
        host(launch, &store, serves_store, &key, me, config_toml, timeout)?
    } else {
        join(launch, &store, &key, me, config_toml, timeout)?
    };
    Ok(Agreement {
        config_toml: config_toml.to_string(),
        peers,
        store,
        serves_store,
        store_addr,
    })
}

#[allow(clippy::too_many_arguments)]
fn host(
    launch: &Launch,
    store: &Store,
    serves_store: bool,
    key: &[u8; 32],
    me: PeerInfo,
    config_toml: &str,
    timeout: Duration,
) -> Result<Vec<PeerInfo>> {
    let world = launch.world_size;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut msg = HostMsg {
        protocol: PROTOCOL,
        world_size: world,
        nonce: nonce(),
        hostname: me.hostname.clone(),
        config_toml: config_toml.to_string(),
        mac: String::new(),
    };
    msg.mac = host_mac(key, &msg);
    write_json(store, "rdzv/host", &msg, "publishing rank 0's message")?;
    // Wait for every other rank's hello (each adds one to `rdzv/joined` after writing it).
    loop {
        let joined = store
            .add("rdzv/joined", 0)
            .map_err(|e| store_err("counting ranks", e))?;
        if joined as usize >= world - 1 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    let mut peers: Vec<Option<PeerInfo>> = vec![None; world];
    let mut nonces = vec![String::new(); world];
    peers[0] = Some(me);
    let mut missing = Vec::new();
    // Ranks that will read the verdict (the others gave up on their own).
    let mut readers = 0i64;
    let mut refusals: Vec<String> = Vec::new();
    let mut mismatches: Vec<String> = Vec::new();
    for r in 1..world {
        let k = format!("rdzv/hello/{r}");
        if !store
            .check(&k)
            .map_err(|e| store_err("reading hellos", e))?
        {
            missing.push(r);
            continue;
        }
        let hello: Hello = match read_json(store, &k, MAX_HELLO_BYTES, &format!("rank {r}'s hello"))
        {
            Ok(h) => h,
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
        let from = format!("rank {r} (on {})", hello.peer.hostname);
        if hello.protocol != PROTOCOL {
            refusals.push(format!(
                "{from} speaks rendezvous protocol {}, rank 0 speaks {PROTOCOL} (different cptlab versions)",
                hello.protocol
            ));
            continue;
        }
        if !mac_ok(&hello_mac(key, &msg.nonce, &hello), &hello.mac) || hello.peer.rank != r {
            refusals.push(format!(
                "{from} failed authentication: its {TOKEN_ENV} differs from rank 0's"
            ));
            continue;
        }
        if hello.world_size != world {
            refusals.push(format!(
                "{from} counts a world of {} ranks, rank 0 counts {world}",
                hello.world_size
            ));
            continue;
        }
        if !hello.mismatch.is_empty() {
            mismatches.push(format!("{from}: {}", hello.mismatch.join("; ")));
        } else {
            readers += 1;
        }
        nonces[r] = hello.nonce.clone();
        peers[r] = Some(hello.peer);
    }
    let duplicates: Vec<usize> = (0..world)
        .filter(|r| store.check(&format!("rdzv/duplicate/{r}")).unwrap_or(false))
        .collect();
    let (kind, error) = if !refusals.is_empty() {
        (VerdictKind::Refused, refusals.join("; "))
    } else if !duplicates.is_empty() {
        (
            VerdictKind::Refused,
            format!("{} started twice", rank_list(&duplicates)),
        )
    } else if !mismatches.is_empty() {
        (
            VerdictKind::Config,
            format!(
                "rank 0's configuration differs from {}",
                mismatches.join("; ")
            ),
        )
    } else if !missing.is_empty() {
        (
            VerdictKind::Timeout,
            format!(
                "{} did not join within {}",
                rank_list(&missing),
                seconds(timeout)
            ),
        )
    } else {
        (VerdictKind::Ok, String::new())
    };
    let peers: Vec<PeerInfo> = peers.into_iter().flatten().collect();
    let mut verdict = Verdict {
        error: error.clone(),
        kind,
        peers: peers.clone(),
        nonces,
        mac: String::new(),
    };
    verdict.mac = verdict_mac(key, &msg.nonce, &verdict);
    write_json(store, "rdzv/verdict", &verdict, "publishing the verdict")?;
    if serves_store {
        // The store lives in this process: keep it up until the verdict has been read.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && store.add("rdzv/read", 0).is_ok_and(|n| n < readers) {
            std::thread::sleep(POLL);
        }
    }
    match kind {
        VerdictKind::Ok => Ok(peers),
        VerdictKind::Timeout => Err(RendezvousError::Timeout(error)),
        VerdictKind::Config => Err(RendezvousError::ConfigMismatch(error)),
        VerdictKind::Refused => Err(RendezvousError::Refused(error)),
    }
}

fn join(
    launch: &Launch,
    store: &Store,
    key: &[u8; 32],
    me: PeerInfo,
    config_toml: &str,
    timeout: Duration,
) -> Result<Vec<PeerInfo>> {
    let rank = me.rank;
    let deadline = Instant::now() + timeout;
    if !wait_key(store, "rdzv/host", deadline)? {
        return Err(RendezvousError::Timeout(format!(
            "rank 0 did not arrive at the store at {}:{} within {}",
            launch.master_addr,
            launch.master_port,
            seconds(timeout)
        )));
    }
    let host: HostMsg = read_json(store, "rdzv/host", 2 * MAX_CONFIG_BYTES, "rank 0's message")?;
    let host_ok = mac_ok(&host_mac(key, &host), &host.mac);
    let mismatch = if host_ok && host.config_toml != config_toml {
        config_diff(
            config_toml,
            &host.config_toml,
            &format!("rank {rank}"),
            "rank 0",
        )
    } else {
        Vec::new()
    };
    let mut hello = Hello {
        protocol: PROTOCOL,
        peer: me,
        world_size: launch.world_size,
        nonce: nonce(),
        config_hash: hex::encode(config_hash(config_toml)),
        mismatch: mismatch.clone(),
        mac: String::new(),
    };
    hello.mac = hello_mac(key, &host.nonce, &hello);
    write_json(
        store,
        &format!("rdzv/hello/{rank}"),
        &hello,
        "sending this rank's hello",
    )?;
    store
        .add("rdzv/joined", 1)
        .map_err(|e| store_err("announcing this rank", e))?;
    // Rank 0 is told why; this rank says so at once.
    if !host_ok {
        return Err(RendezvousError::Refused(format!(
            "rank 0's message (from {}) does not verify with this rank's {TOKEN_ENV}: the tokens differ, or another job uses this store",
            host.hostname
        )));
    }
    if host.protocol != PROTOCOL {
        return Err(RendezvousError::Protocol(format!(
            "rank 0 speaks rendezvous protocol {}, this rank {PROTOCOL} (different cptlab versions)",
            host.protocol
        )));
    }
    if host.world_size != launch.world_size {
        return Err(RendezvousError::Refused(format!(
            "rank 0 counts a world of {} ranks, rank {rank} counts {}",
            host.world_size, launch.world_size
        )));
    }
    if !mismatch.is_empty() {
        return Err(RendezvousError::ConfigMismatch(format!(
            "rank {rank}'s configuration differs from rank 0's: {}",
            mismatch.join("; ")
        )));
    }
    // Rank 0 decides at most `timeout` after publishing its message.
    let verdict_deadline = Instant::now() + timeout + Duration::from_secs(5);
    if !wait_key(store, "rdzv/verdict", verdict_deadline)? {
        return Err(RendezvousError::Timeout(format!(
            "rank 0 published no verdict within {} of its message",
            seconds(timeout)
        )));
    }
    let verdict: Verdict = read_json(store, "rdzv/verdict", 4 * 1024 * 1024, "rank 0's verdict")?;
    let _ = store.add("rdzv/read", 1);
    // A success must name this rank's own nonce (it is fresh); a failure only has to verify.
    let fresh = verdict.nonces.get(rank) == Some(&hello.nonce);
    if !mac_ok(&verdict_mac(key, &host.nonce, &verdict), &verdict.mac)
        || (verdict.kind == VerdictKind::Ok && !fresh)
    {
        return Err(RendezvousError::Refused(
            "rank 0's verdict does not verify (it is not this job's rank 0, or the store was tampered with)".into(),
        ));
    }
    match verdict.kind {
        VerdictKind::Ok => Ok(verdict.peers),
        VerdictKind::Timeout => Err(RendezvousError::Timeout(verdict.error)),
        VerdictKind::Config => Err(RendezvousError::ConfigMismatch(verdict.error)),
        VerdictKind::Refused => Err(RendezvousError::Refused(verdict.error)),
    }
}

/// Leaving the job: every rank checks out; rank 0, when it serves the store, waits (up to
/// `grace`) for every rank not in `gone` to check out first, so none loses the store while it
/// still reads an error or a verdict from it.
pub fn leave(agreement: &Agreement, rank: usize, gone: &[usize], grace: Duration) {
    let world = agreement.peers.len().max(1);
    let _ = agreement.store.add("exit", 1);
    if !(agreement.serves_store && rank == 0) {
        return;
    }
    let expected = world.saturating_sub(gone.iter().filter(|&&r| r != 0).count()) as i64;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match agreement.store.add("exit", 0) {
            Ok(n) if n >= expected => return,
            Ok(_) => std::thread::sleep(POLL),
            Err(_) => return,
        }
    }
}

/// A summary of the peers, rank order (for `--check` and the log).
pub fn describe_peers(peers: &[PeerInfo]) -> BTreeMap<usize, String> {
    peers
        .iter()
        .map(|p| {
            (
                p.rank,
                format!(
                    "rank {} (local {}) on {} at {}, pid {}",
                    p.rank, p.local_rank, p.hostname, p.addr, p.pid
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::launcher::LauncherKind;
    use std::thread;

    const TOKEN: &str = "correct horse battery staple";

    fn launch(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            kind: LauncherKind::Env,
            rank,
            world_size: world,
            local_rank: rank,
            local_world_size: Some(world),
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            store: StoreHost::Rank0,
            detail: String::new(),
        }
    }

    /// Rank 0's store on a free port.
    fn serve(world: usize) -> (Launch, Store, u16) {
        let base = Store::serve(0, Duration::from_secs(10)).unwrap();
        let port = base.port();
        let store = base.prefixed(KEY_PREFIX).unwrap();
        (launch(0, world, port), store, port)
    }

    fn joiner(
        rank: usize,
        world: usize,
        port: u16,
        token: &'static str,
        config: &'static str,
        timeout: Duration,
    ) -> thread::JoinHandle<Result<Agreement>> {
        thread::spawn(move || {
            let l = launch(rank, world, port);
            let (store, serves) = open_store(&l, timeout)?;
            meet(&l, store, serves, token, config, timeout)
        })
    }

    const CONFIG: &str = "seed = 1\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";

    #[test]
    fn three_ranks_agree_and_list_each_other() {
        let (l0, store, port) = serve(3);
        let j2 = joiner(2, 3, port, TOKEN, CONFIG, Duration::from_secs(10));
        let j1 = joiner(1, 3, port, TOKEN, CONFIG, Duration::from_secs(10));
        let a0 = meet(&l0, store, true, TOKEN, CONFIG, Duration::from_secs(10)).unwrap();
        assert_eq!(
            a0.peers.iter().map(|p| p.rank).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        for j in [j1, j2] {
            let a = j.join().unwrap().unwrap();
            assert_eq!(a.config_toml, CONFIG);
            assert_eq!(a.peers, a0.peers);
            leave(&a, a.peers.len() - 1, &[], Duration::from_secs(1));
        }
        assert_eq!(a0.peers[1].pid, std::process::id());
        leave(&a0, 0, &[], Duration::from_secs(5));
        assert_eq!(a0.store.add("exit", 0).unwrap(), 3);
    }

    #[test]
    fn a_wrong_token_fails_every_rank_and_says_why() {
        let (l0, store, port) = serve(2);
        let bad = joiner(
            1,
            2,
            port,
            "not the right token",
            CONFIG,
            Duration::from_secs(10),
        );
        let e0 = meet(&l0, store, true, TOKEN, CONFIG, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e0, RendezvousError::Refused(_)), "{e0}");
        assert!(
            e0.to_string().contains("rank 1") && e0.to_string().contains("failed authentication"),
            "{e0}"
        );
        let e1 = bad.join().unwrap().unwrap_err();
        assert!(matches!(e1, RendezvousError::Refused(_)), "{e1}");
        assert!(e1.to_string().contains("the tokens differ"), "{e1}");
    }

    #[test]
    fn a_config_mismatch_names_the_fields_on_both_sides() {
        let (l0, store, port) = serve(3);
        let same = joiner(1, 3, port, TOKEN, CONFIG, Duration::from_secs(10));
        let other = joiner(
            2,
            3,
            port,
            TOKEN,
            "seed = 1\n[optimizer]\nkind = \"sgd\"\nlr = 0.5\nmomentum = 0.9\n",
            Duration::from_secs(10),
        );
        let e0 = meet(&l0, store, true, TOKEN, CONFIG, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e0, RendezvousError::ConfigMismatch(_)), "{e0}");
        let t = e0.to_string();
        assert!(t.contains("rank 2"), "{t}");
        assert!(
            t.contains("optimizer.lr = 0.5 on rank 2, 0.1 on rank 0"),
            "{t}"
        );
        assert!(
            t.contains("optimizer.momentum = 0.9 on rank 2, unset on rank 0"),
            "{t}"
        );
        let e2 = other.join().unwrap().unwrap_err();
        assert!(e2.to_string().contains("optimizer.lr"), "{e2}");
        // The rank whose config matched is told too.
        let e1 = same.join().unwrap().unwrap_err();
        assert!(matches!(e1, RendezvousError::ConfigMismatch(_)), "{e1}");
        assert!(e1.to_string().contains("optimizer.lr"), "{e1}");
    }

    #[test]
    fn missing_ranks_are_named_on_every_rank() {
        let (l0, store, port) = serve(4);
        let j2 = joiner(2, 4, port, TOKEN, CONFIG, Duration::from_secs(10));
        let t = Duration::from_millis(1500);
        let e0 = meet(&l0, store, true, TOKEN, CONFIG, t).unwrap_err();
        assert!(matches!(e0, RendezvousError::Timeout(_)), "{e0}");
        assert!(
            e0.to_string()
                .contains("ranks 1, 3 did not join within 1.5 s"),
            "{e0}"
        );
        let e2 = j2.join().unwrap().unwrap_err();
        assert!(e2.to_string().contains("ranks 1, 3 did not join"), "{e2}");
    }

    #[test]
    fn a_lone_rank_names_what_it_waited_for() {
        // Nobody serves the store.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = open_store(&launch(1, 2, port), Duration::from_millis(500))
            .err()
            .unwrap();
        assert!(matches!(e, RendezvousError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("could not reach the store"), "{e}");
        // The store is there, rank 0 is not (as under torchrun's agent store).
        let base = Store::serve(0, Duration::from_secs(5)).unwrap();
        let store = base.prefixed(KEY_PREFIX).unwrap();
        let e = meet(
            &launch(1, 2, base.port()),
            store,
            false,
            TOKEN,
            CONFIG,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rank 0 did not arrive"), "{e}");
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = open_store(&launch(0, 2, port), Duration::from_secs(2))
            .err()
            .unwrap();
        assert!(matches!(e, RendezvousError::AddressInUse(_)), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("port {port} (MASTER_PORT) is already in use")),
            "{e}"
        );
    }

    #[test]
    fn a_duplicate_rank_is_refused() {
        let (l0, store, port) = serve(2);
        let first = joiner(1, 2, port, TOKEN, CONFIG, Duration::from_secs(10));
        let a0 = meet(&l0, store, true, TOKEN, CONFIG, Duration::from_secs(10)).unwrap();
        first.join().unwrap().unwrap();
        let again = joiner(1, 2, port, TOKEN, CONFIG, Duration::from_secs(2))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(again.to_string().contains("rank 1 joined twice"), "{again}");
        drop(a0);
    }

    #[test]
    fn tokens_are_checked_before_anything() {
        assert!(check_token("").unwrap_err().to_string().contains(TOKEN_ENV));
        assert!(check_token("short")
            .unwrap_err()
            .to_string()
            .contains("too short"));
        assert_eq!(rank_list(&[2]), "rank 2");
        assert_eq!(rank_list(&[1, 3]), "ranks 1, 3");
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
    }

    #[test]
    fn the_transport_avoids_loopback_when_ranks_span_hosts() {
        let p = |rank: usize, host: &str, addr: &str| PeerInfo {
            rank,
            local_rank: 0,
            hostname: host.into(),
            addr: addr.into(),
            pid: 1,
        };
        let me = p(0, "a", "127.0.1.1");
        // Everyone on this host: loopback is right.
        assert_eq!(
            transport_address(&me, &[me.clone(), p(1, "a", "127.0.0.1")]),
            "127.0.1.1"
        );
        // A non-loopback address is kept.
        let real = p(0, "a", "10.1.2.3");
        assert_eq!(
            transport_address(&real, std::slice::from_ref(&real)),
            "10.1.2.3"
        );
    }
}
