//! Process identity: a pid plus the process's start time (`/proc/<pid>/stat` field 22, clock
//! ticks since boot) and the boot id, so a pid that the kernel has since given to another process
//! does not count as the recorded process being alive.
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks after boot at which the process started; None where `/proc` is unreadable
    /// (or a record written before start times were kept).
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the record was made.
    pub boot_id: Option<String>,
}

/// Whether the process a [`ProcessId`] names is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Gone, or its pid now belongs to another process.
    Dead,
    /// A process with that pid runs, but the record has no start time to tell whether it is the
    /// same one.
    Unknown,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        static ME: OnceLock<ProcessId> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            ProcessId {
                pid,
                start_time: start_time(pid),
                boot_id: boot_id(),
            }
        })
        .clone()
    }

    /// A record with only a pid (an old marker file): liveness is at best `Unknown`.
    pub fn pid_only(pid: u32) -> ProcessId {
        ProcessId {
            pid,
            start_time: None,
            boot_id: None,
        }
    }

    pub fn liveness(&self) -> Liveness {
        if !exists(self.pid) {
            return Liveness::Dead;
        }
        if let (Some(recorded), Some(now)) = (&self.boot_id, boot_id()) {
            if *recorded != now {
                return Liveness::Dead;
            }
        }
        match (self.start_time, start_time(self.pid)) {
            (Some(a), Some(b)) if a == b => Liveness::Alive,
            (Some(_), Some(_)) => Liveness::Dead,
            _ => Liveness::Unknown,
        }
    }

    /// Alive for certain (not `Unknown`).
    pub fn is_alive(&self) -> bool {
        self.liveness() == Liveness::Alive
    }
}

/// A process with this pid exists (a zombie does not count). Another user's process counts.
pub fn exists(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(p, 0) };
    let found = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    found && stat_fields(pid).is_none_or(|f| f.first().map(String::as_str) != Some("Z"))
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks after boot.
pub fn start_time(pid: u32) -> Option<u64> {
    // Fields after the command name start at field 3 (the state).
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the parenthesized command name (which may itself hold
/// spaces and parentheses).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    Some(
        text[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = ProcessId::current();
        assert!(me.start_time.is_some(), "/proc is readable on Linux");
        assert_eq!(me.liveness(), Liveness::Alive);
        // The same pid with another start time: the pid was reused by this process.
        let other = ProcessId {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert_eq!(other.liveness(), Liveness::Dead);
        let rebooted = ProcessId {
            boot_id: Some("another-boot".into()),
            ..me.clone()
        };
        assert_eq!(rebooted.liveness(), Liveness::Dead);
        assert_eq!(ProcessId::pid_only(me.pid).liveness(), Liveness::Unknown);
        assert_eq!(ProcessId::pid_only(u32::MAX).liveness(), Liveness::Dead);
        assert_eq!(ProcessId::pid_only(0).liveness(), Liveness::Dead);
    }

    #[test]
    fn an_exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId {
            pid: child.id(),
            start_time: start_time(child.id()),
            boot_id: boot_id(),
        };
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Dead);
    }
}
