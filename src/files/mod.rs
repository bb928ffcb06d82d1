//! Writing files so that nothing is ever half-written or silently wrong, and telling whether the
//! process that wrote a marker file is still the one running.
//!
//! - [`write_atomic`] / [`AtomicFile`]: a temporary file in the target's directory, named
//!   [`TEMP_PREFIX`]`<pid>-<start time>-<n>-<name>`, fsynced, renamed over the target, and the
//!   directory fsynced. A failed write removes its temporary file; one left by a process that was
//!   killed mid-write is removed by [`clean_stale_temps`] the next time that directory is used
//!   (never one whose writer is still alive).
//! - [`FileError`]: every failure names the path and says the cause in words ("no space left on
//!   device", "read-only file system", "<ancestor> is not a directory", "permission denied").
//! - [`process`]: a process identity (pid + start time), so a pid reused by another process does
//!   not count as the writer being alive.
//!
//! A leaf module: it uses nothing else of the crate.
mod atomic;
mod error;
pub mod process;

pub use atomic::{
    clean_stale_temps, create_dir_all, is_temp_name, open_regular, read_regular, write_atomic,
    write_atomic_with, AtomicFile, TEMP_PREFIX,
};
pub use error::{describe, file_type_name, FileError};
