//! Every byte the command line prints goes through [`Out`] (the `outln!`/`errln!` macros).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe returns EPIPE, and `println!` turns that
//! into a panic. `Out` returns it instead, as [`OutputError::Closed`]: a listing command whose
//! reader went away (`cptlab runs list | head`) stops and exits 0, as `git log | head` does; a run
//! stops printing and goes on training and recording. Any other write error (a full disk behind
//! `> file`, `/dev/full`) is [`OutputError::Failed`]: a clear error and exit 1 for listings. Once
//! a stream has failed, every later write to it reports the same outcome without writing.
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicI32, Ordering};

/// Which standard stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader went away (EPIPE): not a failure of the command.
    #[error("{0} was closed by its reader")]
    Closed(Stream),
    /// The stream cannot take the bytes (ENOSPC, EIO, …).
    #[error("cannot write to {stream}: {error}")]
    Failed { stream: Stream, error: io::Error },
}

impl OutputError {
    /// The output error anywhere in `e`'s chain.
    pub fn in_chain(e: &anyhow::Error) -> Option<&OutputError> {
        e.chain().find_map(|c| c.downcast_ref::<OutputError>())
    }
}

/// The stream's state: open, closed by its reader, or failed with an errno.
const OPEN: i32 = 0;
const CLOSED: i32 = -1;
/// A failure without an OS error code.
const FAILED_OTHER: i32 = i32::MIN;

/// One standard stream. Get them with [`stdout`] and [`stderr`].
pub struct Out {
    stream: Stream,
    state: AtomicI32,
}

static STDOUT: Out = Out::new(Stream::Stdout);
static STDERR: Out = Out::new(Stream::Stderr);

pub fn stdout() -> &'static Out {
    &STDOUT
}

pub fn stderr() -> &'static Out {
    &STDERR
}

impl Out {
    const fn new(stream: Stream) -> Out {
        Out {
            stream,
            state: AtomicI32::new(OPEN),
        }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// False once a write failed or found the pipe closed.
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Relaxed) == OPEN
    }

    fn outcome(&self, state: i32) -> Result<(), OutputError> {
        match state {
            OPEN => Ok(()),
            CLOSED => Err(OutputError::Closed(self.stream)),
            FAILED_OTHER => Err(OutputError::Failed {
                stream: self.stream,
                error: io::Error::other("an earlier write failed"),
            }),
            errno => Err(OutputError::Failed {
                stream: self.stream,
                error: io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Records a write error; EPIPE is a closed pipe, the rest failures.
    fn fail(&self, e: io::Error) -> OutputError {
        let state = if e.kind() == io::ErrorKind::BrokenPipe {
            CLOSED
        } else {
            e.raw_os_error().filter(|&n| n > 0).unwrap_or(FAILED_OTHER)
        };
        self.state.store(state, Ordering::Relaxed);
        match state {
            CLOSED => OutputError::Closed(self.stream),
            _ => OutputError::Failed {
                stream: self.stream,
                error: e,
            },
        }
    }

    fn with_lock(&self, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        match self.stream {
            Stream::Stdout => f(&mut io::stdout().lock()),
            Stream::Stderr => f(&mut io::stderr().lock()),
        }
    }

    /// Writes `text` as it is.
    pub fn write_str(&self, text: &str) -> Result<(), OutputError> {
        self.outcome(self.state.load(Ordering::Relaxed))?;
        self.with_lock(|w| w.write_all(text.as_bytes()))
            .map_err(|e| self.fail(e))
    }

    /// Writes one line (the newline is added) and flushes it.
    pub fn line(&self, args: fmt::Arguments<'_>) -> Result<(), OutputError> {
        self.outcome(self.state.load(Ordering::Relaxed))?;
        self.with_lock(|w| {
            w.write_fmt(args)?;
            w.write_all(b"\n")?;
            w.flush()
        })
        .map_err(|e| self.fail(e))
    }

    /// Writes `value` as one line of JSON.
    pub fn json_line<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), OutputError> {
        let text = serde_json::to_string(value).expect("events serialize to JSON");
        self.line(format_args!("{text}"))
    }

    /// Flushes what a `write_str` left buffered.
    pub fn flush(&self) -> Result<(), OutputError> {
        self.outcome(self.state.load(Ordering::Relaxed))?;
        self.with_lock(|w| w.flush()).map_err(|e| self.fail(e))
    }
}

/// `println!` through [`stdout()`]: returns `Result<(), OutputError>`.
macro_rules! outln {
    () => { $crate::cli::output::stdout().line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::stdout().line(format_args!($($arg)*)) };
}

/// `eprintln!` through [`stderr()`]: returns `Result<(), OutputError>`.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::stderr().line(format_args!($($arg)*)) };
}

pub(crate) use errln;
pub(crate) use outln;

/// The `tracing` writer: stderr, where a closed or failing stream drops the message (the fmt
/// layer would otherwise report the error with `eprintln!`, which panics on a closed stderr).
pub struct TracingWriter;

impl Write for TracingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(text) = std::str::from_utf8(buf) {
            let _ = stderr().write_str(text);
        } else {
            let _ = io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_are_typed_and_sticky() {
        let out = Out::new(Stream::Stdout);
        let e = out.fail(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, OutputError::Closed(Stream::Stdout)));
        assert!(!out.is_open());
        assert!(matches!(
            out.outcome(out.state.load(Ordering::Relaxed)),
            Err(OutputError::Closed(_))
        ));
        let out = Out::new(Stream::Stderr);
        let e = out.fail(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.to_string().starts_with("cannot write to stderr: "), "{e}");
        let again = out.write_str("x").unwrap_err();
        assert!(
            matches!(&again, OutputError::Failed { error, .. } if error.raw_os_error() == Some(libc::ENOSPC)),
            "{again}"
        );
    }
}
