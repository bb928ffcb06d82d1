//! TCP rendezvous for multi-node runs, started like `torchrun` (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
//!
//! Rank 0 ([`host`]) listens on exactly `MASTER_ADDR:MASTER_PORT` (never on all interfaces
//! unless `MASTER_ADDR` says `0.0.0.0`) and hands every other rank ([`join`]) an opaque blob (the
//! NCCL unique id) and the resolved configuration (TOML text), once all ranks are there.
//!
//! - **Authentication** with a shared secret (`CPTLAB_RDZV_TOKEN`, required on every rank) that
//!   never crosses the network: the host sends a random challenge, the joining rank answers with
//!   a keyed BLAKE3 MAC over the challenge and its hello (key derived from the token), and the
//!   host's welcome carries a MAC over the rank's own nonce and the payload, so each side knows
//!   the other holds the token and the payload was not altered. MACs are compared in constant
//!   time (`blake3::Hash`'s equality). A connection that fails authentication, or sends anything
//!   malformed or oversized, is refused and the host keeps waiting for the real ranks.
//! - **Nothing received is executed**: messages are length-prefixed JSON (4-byte big-endian
//!   length, checked against a per-message limit before anything is allocated) of a fixed set of
//!   types; the configuration is returned as text for the caller to parse and validate.
//! - **Configuration agreement**: each joining rank may send the hash ([`config_hash`]) of the
//!   configuration it resolved itself; one that differs from rank 0's fails the rendezvous on
//!   every rank with an error naming the ranks. So do a world size that differs and a rank that
//!   joins twice.
//! - **Timeouts**: the whole rendezvous has a deadline ([`DEFAULT_TIMEOUT`], configurable); the
//!   host's error names the ranks that never came, a joining rank's error says whether rank 0
//!   could not be reached or did not answer. A joining rank retries connecting until the
//!   deadline, so ranks may start in any order.
//! - The host returns once every rank has confirmed the welcome, so NCCL's initialisation (which
//!   has no timeout of its own) starts with every rank known to be alive.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The shared secret's environment variable.
pub const TOKEN_ENV: &str = "CPTLAB_RDZV_TOKEN";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 8;
/// Largest blob handed out (an NCCL unique id is 128 bytes).
pub const MAX_BLOB_BYTES: usize = 64 * 1024;
/// Largest configuration handed out.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
/// Limit for every message but the welcome.
const MAX_SMALL_MESSAGE: usize = 64 * 1024;
/// Limit for the welcome (hex blob + config + peers).
const MAX_WELCOME_MESSAGE: usize = 2 * MAX_BLOB_BYTES + 2 * MAX_CONFIG_BYTES + 1024 * 1024;
const PROTOCOL: u32 = 1;
/// Connections being authenticated at once; more are closed unanswered.
const MAX_PENDING_HANDSHAKES: usize = 256;
const ENV_HELP: &str =
    "a multi-node worker reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, as torchrun sets them";

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
    /// Rank 0 refused this rank (authentication, world size, duplicate rank, another rank's
    /// failure).
    #[error("rendezvous refused: {0}")]
    Refused(String),
    /// A peer sent something that is not a valid message.
    #[error("rendezvous protocol error: {0}")]
    Protocol(String),
    #[error("rendezvous: {0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, RendezvousError>;

/// Where this process sits in the job, from torchrun's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl RendezvousEnv {
    pub fn from_env() -> Result<RendezvousEnv> {
        RendezvousEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`RendezvousEnv::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<RendezvousEnv> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| RendezvousError::Env(format!("{name} is not set: {ENV_HELP}")))
        };
        let num = |name: &str| -> Result<usize> {
            let v = var(name)?;
            v.parse().map_err(|_| {
                RendezvousError::Env(format!("{name}={v:?} is not a non-negative integer"))
            })
        };
        let rank = num("RANK")?;
        let world_size = num("WORLD_SIZE")?;
        let local_rank = num("LOCAL_RANK")?;
        let master_addr = var("MASTER_ADDR")?;
        let port = var("MASTER_PORT")?;
        let master_port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            RendezvousError::Env(format!("MASTER_PORT={port:?} is not a port (1-65535)"))
        })?;
        if world_size == 0 {
            return Err(RendezvousError::Env(
                "WORLD_SIZE=0: at least one rank".into(),
            ));
        }
        if rank >= world_size {
            return Err(RendezvousError::Env(format!(
                "RANK={rank} is not below WORLD_SIZE={world_size}"
            )));
        }
        Ok(RendezvousEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        })
    }
}

/// The shared secret from `CPTLAB_RDZV_TOKEN`; an error (saying how to set one) if unset or
/// shorter than [`MIN_TOKEN_CHARS`].
pub fn token_from_env() -> Result<String> {
    let t = std::env::var(TOKEN_ENV).unwrap_or_default();
    check_token(&t)?;
    Ok(t)
}

fn check_token(t: &str) -> Result<()> {
    if t.is_empty() {
        return Err(RendezvousError::Token(format!(
            "{TOKEN_ENV} is not set: a multi-node rendezvous needs a shared secret; set the same value on every node, e.g. export {TOKEN_ENV}=$(openssl rand -hex 16)"
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

/// The hash a rank sends of the configuration it resolved (BLAKE3 of the TOML text).
pub fn config_hash(config_toml: &str) -> [u8; 32] {
    *blake3::hash(config_toml.as_bytes()).as_bytes()
}

/// A rank that took part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub rank: usize,
    pub local_rank: usize,
    pub hostname: String,
    /// The address rank 0 saw the connection come from (rank 0: the address it listened on).
    pub addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Refusal {
    Auth,
    Invalid,
    Config,
    World,
    Duplicate,
    Timeout,
    Aborted,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Msg {
    Challenge {
        protocol: u32,
        nonce: String,
    },
    Hello {
        protocol: u32,
        rank: usize,
        world_size: usize,
        local_rank: usize,
        hostname: String,
        config_hash: Option<String>,
        nonce: String,
        mac: String,
    },
    Welcome {
        blob: String,
        config_toml: String,
        peers: Vec<PeerInfo>,
        mac: String,
    },
    Refused {
        kind: Refusal,
        reason: String,
    },
    Ack {
        rank: usize,
    },
}

fn derive_key(token: &str) -> [u8; 32] {
    blake3::derive_key("cptlab rendezvous v1 shared token", token.as_bytes())
}

fn mac(key: &[u8; 32], label: &str, parts: &[&[u8]]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(label.as_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()
}

#[allow(clippy::too_many_arguments)]
fn hello_mac(
    key: &[u8; 32],
    server_nonce: &str,
    client_nonce: &str,
    rank: usize,
    world: usize,
    local_rank: usize,
    hostname: &str,
    config_hash: Option<&str>,
) -> blake3::Hash {
    mac(
        key,
        "hello",
        &[
            server_nonce.as_bytes(),
            client_nonce.as_bytes(),
            &(rank as u64).to_le_bytes(),
            &(world as u64).to_le_bytes(),
            &(local_rank as u64).to_le_bytes(),
            hostname.as_bytes(),
            config_hash.unwrap_or("").as_bytes(),
        ],
    )
}

fn welcome_mac(key: &[u8; 32], client_nonce: &str, blob_hex: &str, config: &str) -> blake3::Hash {
    mac(
        key,
        "welcome",
        &[
            client_nonce.as_bytes(),
            blob_hex.as_bytes(),
            config.as_bytes(),
        ],
    )
}

/// Constant-time check of a hex MAC.
fn mac_matches(expected: &blake3::Hash, got_hex: &str) -> bool {
    match blake3::Hash::from_hex(got_hex) {
        Ok(h) => h == *expected,
        Err(_) => false,
    }
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn io_err(what: &str, e: std::io::Error) -> RendezvousError {
    RendezvousError::Io(format!("{what}: {e}"))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn write_msg(stream: &mut TcpStream, msg: &Msg) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    stream.flush()
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Protocol(String),
}

/// Reads one message of at most `max` bytes; the length is checked before allocating.
fn read_msg(r: &mut impl Read, max: usize) -> std::result::Result<Msg, ReadError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(ReadError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ReadError::Protocol(format!(
            "message of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(ReadError::Io)?;
    serde_json::from_slice(&body)
        .map_err(|e| ReadError::Protocol(format!("malformed message: {e}")))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: writes at most buf.len() bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    if !ok {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Rank 0's listening socket, bound before serving (tests bind port 0 and read the port).
pub struct RendezvousServer {
    listener: TcpListener,
    env: RendezvousEnv,
}

/// What a handshake thread reports.
enum Handshake {
    Joined(Box<Joined>),
    Refused(String),
}

struct Joined {
    stream: TcpStream,
    peer: SocketAddr,
    rank: usize,
    world_size: usize,
    local_rank: usize,
    hostname: String,
    config_hash: Option<String>,
    nonce: String,
}

impl RendezvousServer {
    /// Binds `MASTER_ADDR:MASTER_PORT` (MASTER_ADDR may be a host name; it is resolved and
    /// the first address that binds is used).
    pub fn bind(env: &RendezvousEnv) -> Result<RendezvousServer> {
        if env.rank != 0 {
            return Err(RendezvousError::Env(format!(
                "rank {} cannot host the rendezvous: rank 0 does",
                env.rank
            )));
        }
        let listener =
            TcpListener::bind((env.master_addr.as_str(), env.master_port)).map_err(|e| {
                RendezvousError::Io(format!(
                    "cannot listen on MASTER_ADDR:MASTER_PORT = {}:{}: {e}",
                    env.master_addr, env.master_port
                ))
            })?;
        Ok(RendezvousServer {
            listener,
            env: env.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Waits until every other rank has joined, hands each the blob and the configuration,
    /// and returns every rank's info (rank order, rank 0 first) once all have confirmed.
    pub fn serve(
        self,
        token: &str,
        blob: &[u8],
        config_toml: &str,
        timeout: Duration,
    ) -> Result<Vec<PeerInfo>> {
        check_token(token)?;
        if blob.len() > MAX_BLOB_BYTES || config_toml.len() > MAX_CONFIG_BYTES {
            return Err(RendezvousError::Protocol(format!(
                "the blob ({} bytes) or configuration ({} bytes) exceeds the limits ({MAX_BLOB_BYTES}, {MAX_CONFIG_BYTES})",
                blob.len(),
                config_toml.len()
            )));
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let key = derive_key(token);
        let world = self.env.world_size;
        let own_hash = hex::encode(config_hash(config_toml));
        let addr = self.local_addr();
        self.listener
            .set_nonblocking(true)
            .map_err(|e| io_err("listener", e))?;
        let (tx, rx) = mpsc::channel::<Handshake>();
        let mut joined: BTreeMap<usize, Joined> = BTreeMap::new();
        let mut refused: Vec<String> = Vec::new();
        // Handshakes running (one thread each, each bounded by a read timeout).
        let in_flight = Arc::new(AtomicUsize::new(0));

        while joined.len() + 1 < world {
            if remaining(deadline).is_none() {
                let missing: Vec<usize> = (1..world).filter(|r| !joined.contains_key(r)).collect();
                let mut msg = format!(
                    "rank 0 waited {timeout:?} on {addr}: {} of {world} ranks arrived; missing ranks {missing:?}",
                    joined.len() + 1
                );
                if !refused.is_empty() {
                    msg.push_str(&format!(
                        "; refused {} connection(s): {}",
                        refused.len(),
                        refused.join("; ")
                    ));
                }
                refuse_all(&mut joined, Refusal::Timeout, &msg);
                return Err(RendezvousError::Timeout(msg));
            }
            let mut busy = false;
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    busy = true;
                    if in_flight.load(Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
                        refused.push(format!("{peer}: too many connections at once"));
                        drop(stream);
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let (tx, in_flight) = (tx.clone(), in_flight.clone());
                    std::thread::spawn(move || {
                        let h = handshake(stream, peer, key, world, deadline);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let _ = tx.send(h);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => refused.push(format!("accept failed: {e}")),
            }
            while let Ok(h) = rx.try_recv() {
                busy = true;
                let mut j = match h {
                    Handshake::Refused(why) => {
                        refused.push(why);
                        continue;
                    }
                    Handshake::Joined(j) => *j,
                };
                let fatal = if j.world_size != world {
                    Some((
                        Refusal::World,
                        format!(
                            "rank {} ({}) has WORLD_SIZE={}, rank 0 has WORLD_SIZE={world}",
                            j.rank, j.hostname, j.world_size
                        ),
                    ))
                } else if let Some(prev) = joined.get(&j.rank) {
                    Some((
                        Refusal::Duplicate,
                        format!(
                            "rank {} joined twice (from {} and from {})",
                            j.rank, prev.peer, j.peer
                        ),
                    ))
                } else {
                    match &j.config_hash {
                        Some(h) if *h != own_hash => Some((
                            Refusal::Config,
                            format!(
                                "rank {} ({}) resolved a different configuration than rank 0 (config hash {}… vs {}…); start every rank with the same configuration",
                                j.rank,
                                j.hostname,
                                &h[..h.len().min(12)],
                                &own_hash[..12]
                            ),
                        )),
                        _ => None,
                    }
                };
                if let Some((kind, reason)) = fatal {
                    let _ = write_msg(
                        &mut j.stream,
                        &Msg::Refused {
                            kind,
                            reason: reason.clone(),
                        },
                    );
                    refuse_all(&mut joined, kind, &reason);
                    return Err(match kind {
                        Refusal::Config => RendezvousError::ConfigMismatch(reason),
                        _ => RendezvousError::Refused(reason),
                    });
                }
                joined.insert(j.rank, j);
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        let mut peers = vec![PeerInfo {
            rank: 0,
            local_rank: self.env.local_rank,
            hostname: hostname(),
            addr: addr.to_string(),
        }];
        peers.extend(joined.values().map(|j| PeerInfo {
            rank: j.rank,
            local_rank: j.local_rank,
            hostname: j.hostname.clone(),
            addr: j.peer.to_string(),
        }));
        let blob_hex = hex::encode(blob);
        for j in joined.values_mut() {
            let welcome = Msg::Welcome {
                mac: welcome_mac(&key, &j.nonce, &blob_hex, config_toml)
                    .to_hex()
                    .to_string(),
                blob: blob_hex.clone(),
                config_toml: config_toml.to_string(),
                peers: peers.clone(),
            };
            write_msg(&mut j.stream, &welcome)
                .map_err(|e| io_err(&format!("sending the welcome to rank {}", j.rank), e))?;
        }
        for j in joined.values_mut() {
            let left = remaining(deadline).unwrap_or(Duration::from_millis(1));
            let _ = j.stream.set_read_timeout(Some(left));
            match read_msg(&mut j.stream, MAX_SMALL_MESSAGE) {
                Ok(Msg::Ack { rank }) if rank == j.rank => {}
                Ok(other) => {
                    return Err(RendezvousError::Protocol(format!(
                        "rank {} answered the welcome with {other:?}",
                        j.rank
                    )))
                }
                Err(ReadError::Io(e)) if is_timeout(&e) => {
                    return Err(RendezvousError::Timeout(format!(
                        "rank {} did not confirm the welcome",
                        j.rank
                    )))
                }
                Err(ReadError::Io(e)) => {
                    return Err(RendezvousError::Io(format!(
                        "rank {} did not confirm the welcome (it rejected rank 0 or failed): {e}",
                        j.rank
                    )))
                }
                Err(ReadError::Protocol(p)) => {
                    return Err(RendezvousError::Protocol(format!("rank {}: {p}", j.rank)))
                }
            }
        }
        Ok(peers)
    }
}

fn refuse_all(joined: &mut BTreeMap<usize, Joined>, kind: Refusal, reason: &str) {
    let kind = if kind == Refusal::Timeout {
        Refusal::Timeout
    } else {
        Refusal::Aborted
    };
    for j in joined.values_mut() {
        let _ = write_msg(
            &mut j.stream,
            &Msg::Refused {
                kind,
                reason: format!("the rendezvous failed: {reason}"),
            },
        );
    }
}

/// Challenge, hello, authentication and the checks that need no shared state. Runs on its own
/// thread per connection.
fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    key: [u8; 32],
    world: usize,
    deadline: Instant,
) -> Handshake {
    let refuse = |stream: &mut TcpStream, kind: Refusal, reason: String| {
        let _ = write_msg(
            stream,
            &Msg::Refused {
                kind,
                reason: reason.clone(),
            },
        );
        Handshake::Refused(format!("{peer}: {reason}"))
    };
    let left = remaining(deadline).unwrap_or(Duration::from_millis(1));
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(left.min(Duration::from_secs(30))));
    let _ = stream.set_write_timeout(Some(left.min(Duration::from_secs(30))));
    let _ = stream.set_nodelay(true);
    let server_nonce = nonce();
    let challenge = Msg::Challenge {
        protocol: PROTOCOL,
        nonce: server_nonce.clone(),
    };
    if let Err(e) = write_msg(&mut stream, &challenge) {
        return Handshake::Refused(format!("{peer}: {e}"));
    }
    let hello = match read_msg(&mut stream, MAX_SMALL_MESSAGE) {
        Ok(m) => m,
        Err(ReadError::Protocol(p)) => return refuse(&mut stream, Refusal::Invalid, p),
        Err(ReadError::Io(e)) => return Handshake::Refused(format!("{peer}: no hello ({e})")),
    };
    let Msg::Hello {
        protocol,
        rank,
        world_size,
        local_rank,
        hostname,
        config_hash,
        nonce,
        mac,
    } = hello
    else {
        return refuse(
            &mut stream,
            Refusal::Invalid,
            "expected a hello message".into(),
        );
    };
    let expected = hello_mac(
        &key,
        &server_nonce,
        &nonce,
        rank,
        world_size,
        local_rank,
        &hostname,
        config_hash.as_deref(),
    );
    if !mac_matches(&expected, &mac) {
        return refuse(
            &mut stream,
            Refusal::Auth,
            format!("authentication failed: {TOKEN_ENV} differs from rank 0's"),
        );
    }
    if protocol != PROTOCOL {
        return refuse(
            &mut stream,
            Refusal::Invalid,
            format!("protocol {protocol}, rank 0 speaks {PROTOCOL} (different cptlab versions)"),
        );
    }
    if rank == 0 || (rank >= world && world_size == world) {
        return refuse(
            &mut stream,
            Refusal::Invalid,
            format!("rank {rank} cannot join a world of {world} as a non-host rank"),
        );
    }
    if hostname.len() > 255 || nonce.len() != 64 {
        return refuse(&mut stream, Refusal::Invalid, "malformed hello".into());
    }
    Handshake::Joined(Box::new(Joined {
        stream,
        peer,
        rank,
        world_size,
        local_rank,
        hostname,
        config_hash,
        nonce,
    }))
}

/// Rank 0: binds `MASTER_ADDR:MASTER_PORT` and serves (see [`RendezvousServer::serve`]).
pub fn host(
    env: &RendezvousEnv,
    token: &str,
    blob: &[u8],
    config_toml: &str,
    timeout: Duration,
) -> Result<Vec<PeerInfo>> {
    check_token(token)?;
    RendezvousServer::bind(env)?.serve(token, blob, config_toml, timeout)
}

fn connect(env: &RendezvousEnv, deadline: Instant, timeout: Duration) -> Result<TcpStream> {
    let target = format!("{}:{}", env.master_addr, env.master_port);
    let mut last = String::from("no attempt");
    while let Some(left) = remaining(deadline) {
        match (env.master_addr.as_str(), env.master_port).to_socket_addrs() {
            Ok(addrs) => {
                for a in addrs {
                    match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(2))) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = format!("{a}: {e}"),
                    }
                }
            }
            Err(e) => last = format!("cannot resolve {target}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100).min(left));
    }
    Err(RendezvousError::Timeout(format!(
        "rank {} could not reach rank 0 at {target} within {timeout:?} (last attempt: {last})",
        env.rank
    )))
}

/// A rank other than 0: connects to rank 0 (retrying until the deadline), authenticates, and
/// returns the blob and the configuration rank 0 hands out. `config_hash`: the hash of the
/// configuration this rank resolved itself, checked against rank 0's; `None` takes rank 0's.
pub fn join(
    env: &RendezvousEnv,
    token: &str,
    config_hash: Option<[u8; 32]>,
    timeout: Duration,
) -> Result<(Vec<u8>, String)> {
    check_token(token)?;
    if env.rank == 0 {
        return Err(RendezvousError::Env(
            "rank 0 hosts the rendezvous; it does not join".into(),
        ));
    }
    let deadline = Instant::now() + timeout;
    let key = derive_key(token);
    let mut stream = connect(env, deadline, timeout)?;
    let _ = stream.set_nodelay(true);
    let target = format!("{}:{}", env.master_addr, env.master_port);
    let read = |stream: &mut TcpStream, max: usize, waiting_for: &str| -> Result<Msg> {
        let left = remaining(deadline).ok_or_else(|| {
            RendezvousError::Timeout(format!("rank {} ran out of time {waiting_for}", env.rank))
        })?;
        let _ = stream.set_read_timeout(Some(left));
        match read_msg(stream, max) {
            Ok(Msg::Refused { kind, reason }) => Err(match kind {
                Refusal::Config => RendezvousError::ConfigMismatch(reason),
                Refusal::Timeout => RendezvousError::Timeout(reason),
                _ => RendezvousError::Refused(reason),
            }),
            Ok(m) => Ok(m),
            Err(ReadError::Io(e)) if is_timeout(&e) => Err(RendezvousError::Timeout(format!(
                "rank {} connected to rank 0 at {target} but got no answer within {timeout:?} {waiting_for}",
                env.rank
            ))),
            Err(ReadError::Io(e)) => Err(RendezvousError::Io(format!(
                "connection to rank 0 at {target} failed {waiting_for}: {e}"
            ))),
            Err(ReadError::Protocol(p)) => Err(RendezvousError::Protocol(format!(
                "rank 0 at {target}: {p}"
            ))),
        }
    };
    let Msg::Challenge {
        protocol,
        nonce: server_nonce,
    } = read(&mut stream, MAX_SMALL_MESSAGE, "waiting for the challenge")?
    else {
        return Err(RendezvousError::Protocol(
            "expected a challenge from rank 0".into(),
        ));
    };
    if protocol != PROTOCOL {
        return Err(RendezvousError::Protocol(format!(
            "rank 0 speaks protocol {protocol}, this rank {PROTOCOL} (different cptlab versions)"
        )));
    }
    let own_nonce = nonce();
    let host = hostname();
    let hash = config_hash.map(hex::encode);
    let hello = Msg::Hello {
        protocol: PROTOCOL,
        rank: env.rank,
        world_size: env.world_size,
        local_rank: env.local_rank,
        hostname: host.clone(),
        mac: hello_mac(
            &key,
            &server_nonce,
            &own_nonce,
            env.rank,
            env.world_size,
            env.local_rank,
            &host,
            hash.as_deref(),
        )
        .to_hex()
        .to_string(),
        config_hash: hash,
        nonce: own_nonce.clone(),
    };
    write_msg(&mut stream, &hello).map_err(|e| io_err("sending the hello", e))?;
    let Msg::Welcome {
        blob,
        config_toml,
        mac,
        ..
    } = read(
        &mut stream,
        MAX_WELCOME_MESSAGE,
        "waiting for the other ranks",
    )?
    else {
        return Err(RendezvousError::Protocol(
            "expected a welcome from rank 0".into(),
        ));
    };
    if !mac_matches(&welcome_mac(&key, &own_nonce, &blob, &config_toml), &mac) {
        return Err(RendezvousError::Refused(format!(
            "the host at {target} failed authentication ({TOKEN_ENV} differs, or it is not cptlab's rank 0)"
        )));
    }
    let blob = hex::decode(&blob)
        .map_err(|e| RendezvousError::Protocol(format!("blob is not hex: {e}")))?;
    write_msg(&mut stream, &Msg::Ack { rank: env.rank })
        .map_err(|e| io_err("confirming the welcome", e))?;
    Ok((blob, config_toml))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const TOKEN: &str = "correct horse battery staple";

    fn env(rank: usize, world: usize, port: u16) -> RendezvousEnv {
        RendezvousEnv {
            rank,
            world_size: world,
            local_rank: rank % 2,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        }
    }

    /// Binds port 0 on loopback and returns the server and the port it got.
    fn server(world: usize) -> (RendezvousServer, u16) {
        let s = RendezvousServer::bind(&env(0, world, 0)).unwrap();
        let port = s.local_addr().port();
        (s, port)
    }

    fn join_thread(
        rank: usize,
        world: usize,
        port: u16,
        token: &'static str,
        hash: Option<[u8; 32]>,
        timeout: Duration,
    ) -> thread::JoinHandle<Result<(Vec<u8>, String)>> {
        thread::spawn(move || join(&env(rank, world, port), token, hash, timeout))
    }

    #[test]
    fn env_variables_are_read_and_explained() {
        let full = |k: &str| {
            match k {
                "RANK" => Some("1"),
                "WORLD_SIZE" => Some("4"),
                "LOCAL_RANK" => Some("1"),
                "MASTER_ADDR" => Some("10.0.0.1"),
                "MASTER_PORT" => Some("29500"),
                _ => None,
            }
            .map(String::from)
        };
        let e = RendezvousEnv::from_lookup(full).unwrap();
        assert_eq!((e.rank, e.world_size, e.master_port), (1, 4, 29500));
        let without = |skip: &'static str| move |k: &str| if k == skip { None } else { full(k) };
        for v in [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        ] {
            let err = RendezvousEnv::from_lookup(without(v))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{v} is not set")), "{err}");
        }
        let with = |key: &'static str, val: &'static str| {
            move |k: &str| {
                if k == key {
                    Some(val.to_string())
                } else {
                    full(k)
                }
            }
        };
        let err = RendezvousEnv::from_lookup(with("RANK", "x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RANK=\"x\""), "{err}");
        let err = RendezvousEnv::from_lookup(with("RANK", "4"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not below WORLD_SIZE=4"), "{err}");
        let err = RendezvousEnv::from_lookup(with("MASTER_PORT", "70000"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT"), "{err}");
        assert!(check_token("").unwrap_err().to_string().contains(TOKEN_ENV));
        assert!(check_token("short")
            .unwrap_err()
            .to_string()
            .contains("too short"));
    }

    #[test]
    fn happy_path_world_3() {
        let (srv, port) = server(3);
        assert_eq!(srv.local_addr().ip().to_string(), "127.0.0.1");
        let blob: Vec<u8> = (0..128u8).collect();
        let config = "[model]\nkind = \"lenet\"\n";
        let hash = config_hash(config);
        // Rank 2 starts before the server serves: it retries until rank 0 answers.
        let j2 = join_thread(2, 3, port, TOKEN, Some(hash), Duration::from_secs(5));
        thread::sleep(Duration::from_millis(100));
        let b = blob.clone();
        let host = thread::spawn(move || srv.serve(TOKEN, &b, config, Duration::from_secs(5)));
        let j1 = join_thread(1, 3, port, TOKEN, None, Duration::from_secs(5));
        let peers = host.join().unwrap().unwrap();
        assert_eq!(
            peers.iter().map(|p| p.rank).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(peers[2].local_rank, 0);
        assert_eq!(peers[1].local_rank, 1);
        for j in [j1, j2] {
            let (got_blob, got_config) = j.join().unwrap().unwrap();
            assert_eq!(got_blob, blob);
            assert_eq!(got_config, config);
        }
    }

    #[test]
    fn a_wrong_token_is_refused_and_the_real_ranks_still_join() {
        let (srv, port) = server(2);
        let host = thread::spawn(move || srv.serve(TOKEN, b"id", "cfg", Duration::from_secs(5)));
        let bad = join_thread(
            1,
            2,
            port,
            "not the right token",
            None,
            Duration::from_secs(5),
        );
        let e = bad.join().unwrap().unwrap_err();
        assert!(matches!(e, RendezvousError::Refused(_)), "{e}");
        assert!(e.to_string().contains("authentication failed"), "{e}");
        let good = join_thread(1, 2, port, TOKEN, None, Duration::from_secs(5));
        assert_eq!(
            good.join().unwrap().unwrap(),
            (b"id".to_vec(), "cfg".into())
        );
        assert_eq!(host.join().unwrap().unwrap().len(), 2);
    }

    #[test]
    fn timeout_names_the_missing_rank_on_both_sides() {
        let (srv, port) = server(3);
        let t0 = Instant::now();
        let host =
            thread::spawn(move || srv.serve(TOKEN, b"id", "cfg", Duration::from_millis(1500)));
        let j1 = join_thread(1, 3, port, TOKEN, None, Duration::from_secs(10));
        let e = host.join().unwrap().unwrap_err();
        assert!(matches!(e, RendezvousError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("missing ranks [2]"), "{e}");
        let e1 = j1.join().unwrap().unwrap_err();
        assert!(matches!(e1, RendezvousError::Timeout(_)), "{e1}");
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "rank 1 is told at once"
        );
        // Nobody listening at all.
        let (srv, port) = server(2);
        drop(srv);
        let e = join(&env(1, 2, port), TOKEN, None, Duration::from_millis(700)).unwrap_err();
        assert!(matches!(e, RendezvousError::Timeout(_)), "{e}");
        assert!(e.to_string().contains("could not reach rank 0"), "{e}");
    }

    #[test]
    fn a_config_mismatch_fails_every_rank_and_names_the_rank() {
        let (srv, port) = server(3);
        let config = "seed = 1\n";
        let host = thread::spawn(move || srv.serve(TOKEN, b"id", config, Duration::from_secs(5)));
        let j1 = join_thread(
            1,
            3,
            port,
            TOKEN,
            Some(config_hash(config)),
            Duration::from_secs(5),
        );
        thread::sleep(Duration::from_millis(200));
        let j2 = join_thread(
            2,
            3,
            port,
            TOKEN,
            Some(config_hash("seed = 2\n")),
            Duration::from_secs(5),
        );
        let e = host.join().unwrap().unwrap_err();
        assert!(matches!(e, RendezvousError::ConfigMismatch(_)), "{e}");
        assert!(e.to_string().contains("rank 2"), "{e}");
        let e2 = j2.join().unwrap().unwrap_err();
        assert!(matches!(e2, RendezvousError::ConfigMismatch(_)), "{e2}");
        assert!(e2.to_string().contains("rank 2"), "{e2}");
        let e1 = j1.join().unwrap().unwrap_err();
        assert!(e1.to_string().contains("rank 2"), "{e1}");
    }

    #[test]
    fn oversized_and_malformed_messages_are_rejected() {
        // The reader refuses before allocating.
        let mut huge = std::io::Cursor::new(vec![0x7f, 0xff, 0xff, 0xff]);
        match read_msg(&mut huge, MAX_SMALL_MESSAGE) {
            Err(ReadError::Protocol(p)) => assert!(p.contains("exceeds"), "{p}"),
            other => panic!("{other:?}"),
        }
        let body = b"{\"type\":\"run\",\"cmd\":\"rm -rf /\"}";
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        assert!(matches!(
            read_msg(&mut std::io::Cursor::new(frame), MAX_SMALL_MESSAGE),
            Err(ReadError::Protocol(_))
        ));
        // Over the network: the host refuses the connection and goes on waiting.
        let (srv, port) = server(2);
        let host =
            thread::spawn(move || srv.serve(TOKEN, b"id", "cfg", Duration::from_millis(1500)));
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        assert!(matches!(
            read_msg(&mut s, MAX_SMALL_MESSAGE),
            Ok(Msg::Challenge { .. })
        ));
        s.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
        match read_msg(&mut s, MAX_SMALL_MESSAGE) {
            Ok(Msg::Refused { reason, .. }) => assert!(reason.contains("exceeds"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let e = host.join().unwrap().unwrap_err().to_string();
        assert!(
            e.contains("refused 1 connection(s)") && e.contains("exceeds"),
            "{e}"
        );
    }
}
