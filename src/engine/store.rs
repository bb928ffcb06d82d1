//! libtorch's c10d key-value store (`c10d::TCPStore`, `c10d::PrefixStore`) through the C++ shim
//! (`csrc/c10d.cpp`): the same store torchrun's agent serves and `torch.distributed` ranks meet
//! through, so `torchrun --no-python cptlab worker` joins the agent's store as any PyTorch rank
//! would.
//!
//! A [`Store`] is one connection (a TCPStore client, or the server plus its own client); it may
//! be used from several threads (the TCPStore serializes its operations), but a blocking `get`
//! or `wait` holds the connection, so a second thread takes its own ([`Store::connect_again`]).
use std::ffi::{c_char, c_int, CStr, CString};
use std::time::Duration;

/// Whether this build has the Gloo backend (gloo's headers were found when it was built).
pub const GLOO_BUILT: bool = cfg!(cptlab_gloo);

/// What the binary says when CPU multi-process is asked of a build without Gloo.
pub const NO_GLOO: &str = "this build has no Gloo backend: install libgloo-dev and rebuild";

#[repr(C)]
pub(crate) struct CptStore {
    _private: [u8; 0],
}

extern "C" {
    fn cptlab_c10d_free_error(err: *mut c_char);
    fn cptlab_c10d_last_error_kind() -> c_int;
    fn cptlab_c10d_set_log_level(level: c_int);
    fn cptlab_c10d_has_gloo() -> c_int;
    fn cptlab_c10d_tcp_store(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut CptStore,
        bound_port: *mut u16,
    ) -> *mut c_char;
    fn cptlab_c10d_prefix_store(
        prefix: *const c_char,
        base: *const CptStore,
        out: *mut *mut CptStore,
    ) -> *mut c_char;
    fn cptlab_c10d_store_clone(s: *const CptStore, out: *mut *mut CptStore) -> *mut c_char;
    fn cptlab_c10d_store_free(s: *mut CptStore);
    fn cptlab_c10d_store_set_timeout(s: *mut CptStore, timeout_ms: i64);
    fn cptlab_c10d_store_set(
        s: *mut CptStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> *mut c_char;
    fn cptlab_c10d_store_get(
        s: *mut CptStore,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    fn cptlab_c10d_free_bytes(p: *mut u8);
    fn cptlab_c10d_store_add(
        s: *mut CptStore,
        key: *const c_char,
        delta: i64,
        result: *mut i64,
    ) -> *mut c_char;
    fn cptlab_c10d_store_check(
        s: *mut CptStore,
        key: *const c_char,
        exists: *mut c_int,
    ) -> *mut c_char;
    fn cptlab_c10d_store_wait(
        s: *mut CptStore,
        keys: *const *const c_char,
        n: usize,
        timeout_ms: i64,
    ) -> *mut c_char;
    fn cptlab_c10d_store_delete(
        s: *mut CptStore,
        key: *const c_char,
        deleted: *mut c_int,
    ) -> *mut c_char;
}

/// How a c10d call failed (the shim's error kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A connect, `get` or `wait` ran out of time.
    Timeout,
    /// The port is taken (a server that cannot listen).
    AddressInUse,
    /// Any other socket error (connection refused or reset, name resolution).
    Network,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    /// libtorch's message, without its C++ backtrace.
    pub message: String,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Turns the shim's error pointer into a `Result`, freeing the message. Must run on the thread
/// that made the call (the kind is thread-local).
pub(crate) fn check(err: *mut c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string from `strdup`, freed exactly once here.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { cptlab_c10d_free_error(err) };
    // SAFETY: reads a thread-local int.
    let kind = match unsafe { cptlab_c10d_last_error_kind() } {
        1 => StoreErrorKind::Timeout,
        2 if message.contains("EADDRINUSE") || message.contains("address already in use") => {
            StoreErrorKind::AddressInUse
        }
        2 => StoreErrorKind::Network,
        _ => StoreErrorKind::Other,
    };
    let message = crate::engine::torch_error::clean(&message);
    Err(StoreError { kind, message })
}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| StoreError {
        kind: StoreErrorKind::Other,
        message: format!("{what} {s:?} contains a NUL byte"),
    })
}

fn millis(d: Duration) -> i64 {
    d.as_millis().clamp(1, i64::MAX as u128) as i64
}

/// Whether the shim was compiled with Gloo (agrees with [`GLOO_BUILT`]).
pub fn shim_has_gloo() -> bool {
    // SAFETY: returns a constant.
    unsafe { cptlab_c10d_has_gloo() != 0 }
}

/// Silences c10's own log lines (every connect retry and failure, with a C++ backtrace)
/// unless the user chose a level with `TORCH_CPP_LOG_LEVEL`: cptlab reports these errors itself.
pub fn quiet_c10_logs() {
    if std::env::var_os("TORCH_CPP_LOG_LEVEL").is_some() {
        return;
    }
    // SAFETY: sets one int flag; c10 reads it when it logs.
    unsafe { cptlab_c10d_set_log_level(3) };
}

/// One connection to a c10d store.
pub struct Store {
    raw: *mut CptStore,
    /// The TCPStore's port (the one actually bound when serving on port 0).
    port: u16,
    timeout: Duration,
}

// SAFETY: c10d stores are thread-safe (TCPStore serializes operations on its connection under a
// mutex; PrefixStore forwards); the pointer is owned and freed once.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("port", &self.port).finish()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { cptlab_c10d_store_free(self.raw) };
    }
}

impl Store {
    /// The store's server, listening on every interface at `port` (0: a free port, see
    /// [`Store::port`]), with this process as its first client. An error of kind
    /// [`StoreErrorKind::AddressInUse`] when the port is taken.
    pub fn serve(port: u16, timeout: Duration) -> Result<Store> {
        // The host is only where this process's own client connects; the server binds every
        // interface.
        Store::tcp("127.0.0.1", port, true, timeout)
    }

    /// A client of the store at `host:port`, retrying the connection until `timeout`.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Store> {
        Store::tcp(host, port, false, timeout)
    }

    fn tcp(host: &str, port: u16, server: bool, timeout: Duration) -> Result<Store> {
        let h = cstr(host, "host")?;
        let mut raw = std::ptr::null_mut();
        let mut bound = 0u16;
        // SAFETY: writes one store and its port.
        check(unsafe {
            cptlab_c10d_tcp_store(
                h.as_ptr(),
                port,
                server as c_int,
                millis(timeout),
                &mut raw,
                &mut bound,
            )
        })?;
        Ok(Store {
            raw,
            port: bound,
            timeout,
        })
    }

    /// The same store seen through `prefix` (every key becomes `prefix/key`), sharing this
    /// connection.
    pub fn prefixed(&self, prefix: &str) -> Result<Store> {
        let p = cstr(prefix, "prefix")?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: reads the base store (kept alive by the new one's reference), writes one store.
        check(unsafe { cptlab_c10d_prefix_store(p.as_ptr(), self.raw, &mut raw) })?;
        Ok(Store {
            raw,
            port: self.port,
            timeout: self.timeout,
        })
    }

    /// A new connection to the same store (and prefix), for another thread.
    pub fn connect_again(&self) -> Result<Store> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one store.
        check(unsafe { cptlab_c10d_store_clone(self.raw, &mut raw) })?;
        Ok(Store {
            raw,
            port: self.port,
            timeout: self.timeout,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn raw(&self) -> *const CptStore {
        self.raw
    }

    /// Limit for blocking operations (`get`, `wait`) on this connection.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        // SAFETY: live store.
        unsafe { cptlab_c10d_store_set_timeout(self.raw, millis(timeout)) };
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = cstr(key, "key")?;
        // SAFETY: value is valid for len bytes.
        check(unsafe { cptlab_c10d_store_set(self.raw, k.as_ptr(), value.as_ptr(), value.len()) })
    }

    /// The value of `key`, waiting for it up to the connection's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = cstr(key, "key")?;
        let mut p = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: on success p is a malloc'ed buffer of len bytes, freed here.
        check(unsafe { cptlab_c10d_store_get(self.raw, k.as_ptr(), &mut p, &mut len) })?;
        let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        unsafe { cptlab_c10d_free_bytes(p) };
        Ok(v)
    }

    /// Adds `delta` to the integer at `key` (0 if absent) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = cstr(key, "key")?;
        let mut out = 0i64;
        // SAFETY: writes one integer.
        check(unsafe { cptlab_c10d_store_add(self.raw, k.as_ptr(), delta, &mut out) })?;
        Ok(out)
    }

    /// Whether `key` exists (does not wait).
    pub fn check(&self, key: &str) -> Result<bool> {
        let k = cstr(key, "key")?;
        let mut e: c_int = 0;
        // SAFETY: writes one int.
        check(unsafe { cptlab_c10d_store_check(self.raw, k.as_ptr(), &mut e) })?;
        Ok(e != 0)
    }

    /// Waits until every key exists, up to `timeout`.
    pub fn wait(&self, keys: &[&str], timeout: Duration) -> Result<()> {
        let owned = keys
            .iter()
            .map(|k| cstr(k, "key"))
            .collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: ptrs holds keys.len() valid C strings.
        check(unsafe {
            cptlab_c10d_store_wait(self.raw, ptrs.as_ptr(), ptrs.len(), millis(timeout))
        })
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let k = cstr(key, "key")?;
        let mut d: c_int = 0;
        // SAFETY: writes one int.
        check(unsafe { cptlab_c10d_store_delete(self.raw, k.as_ptr(), &mut d) })?;
        Ok(d != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_store_answers_its_clients_and_prefixes_keep_keys_apart() {
        quiet_c10_logs();
        let server = Store::serve(0, Duration::from_secs(10)).unwrap();
        let port = server.port();
        assert_ne!(port, 0);
        let client = Store::connect("127.0.0.1", port, Duration::from_secs(10)).unwrap();
        server.set("k", b"v1").unwrap();
        assert_eq!(client.get("k").unwrap(), b"v1");
        assert_eq!(client.add("n", 2).unwrap(), 2);
        assert_eq!(server.add("n", 3).unwrap(), 5);
        let a = client.prefixed("a").unwrap();
        let b = server.prefixed("b").unwrap();
        a.set("k", b"in a").unwrap();
        assert!(!b.check("k").unwrap());
        assert!(server.check("a/k").unwrap(), "a prefix is a key's path");
        assert_eq!(server.get("a/k").unwrap(), b"in a");
        let again = a.connect_again().unwrap();
        assert_eq!(again.get("k").unwrap(), b"in a");
        assert!(again.delete("k").unwrap());
        assert!(!a.check("k").unwrap());
        server.set("empty", b"").unwrap();
        assert_eq!(client.get("empty").unwrap(), b"");
    }

    #[test]
    fn errors_are_typed_address_in_use_timeout_unreachable() {
        quiet_c10_logs();
        let first = Store::serve(0, Duration::from_secs(5)).unwrap();
        let e = Store::serve(first.port(), Duration::from_secs(2)).expect_err("the port is taken");
        assert_eq!(e.kind, StoreErrorKind::AddressInUse, "{e}");
        assert!(e.message.contains(&first.port().to_string()), "{e}");
        assert!(!e.message.contains("frame #"), "no C++ backtrace: {e}");
        let mut c = Store::connect("127.0.0.1", first.port(), Duration::from_secs(5)).unwrap();
        c.set_timeout(Duration::from_millis(200));
        let e = c.get("never").unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Timeout, "{e}");
        let e = c
            .wait(&["never", "either"], Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Timeout, "{e}");
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Store::connect("127.0.0.1", free, Duration::from_millis(300))
            .expect_err("nobody listens");
        assert_eq!(e.kind, StoreErrorKind::Timeout, "{e}");
    }

    #[test]
    fn the_build_flag_and_the_shim_agree_on_gloo() {
        assert_eq!(GLOO_BUILT, shim_has_gloo());
    }
}
