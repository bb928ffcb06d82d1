//! Atomic replacement of files, cleanup of what interrupted writes left, and reading inputs that
//! must be regular files.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::{file_type_name, FileError};
use super::process::ProcessId;

/// Every temporary file this crate writes starts with this: `.cptlab-tmp-<pid>-<start time>-<n>-
/// <target name>`. Hidden, recognisable, and tied to the process that writes it.
pub const TEMP_PREFIX: &str = ".cptlab-tmp-";

/// Temporary files of earlier versions (`.last-*.tmp` checkpoints, `tempfile`'s `.tmpXXXXXX`)
/// carry no owner, so they are removed only when at least this old.
const LEGACY_MIN_AGE: Duration = Duration::from_secs(600);

/// Whether a file name is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| f.error(e))?;
    f.commit()
}

/// Like [`write_atomic`], with the content streamed by `fill` (large files).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    let mut f = AtomicFile::create(path)?;
    fill(&mut f).map_err(|e| f.error(e))?;
    f.commit()
}

/// A file being written in its target's directory under a temporary name. [`commit`] flushes,
/// fsyncs, renames it over the target and fsyncs the directory; dropping it uncommitted (an
/// error, a panic) removes the temporary file.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile, FileError> {
        let dir = parent_dir(path);
        let existing = fs::metadata(path).ok();
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(FileError::new(
                    "write",
                    path,
                    io::Error::from_raw_os_error(libc::EISDIR),
                ));
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = truncate_to_boundary(&name, 150);
        let me = ProcessId::current();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(
                "{TEMP_PREFIX}{}-{}-{n}-{name}",
                me.pid,
                me.start_time.unwrap_or(0)
            ));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    if let Some(m) = existing.filter(|m| m.is_file()) {
                        // Replacing a file keeps its permissions.
                        let _ = file.set_permissions(m.permissions());
                    }
                    return Ok(AtomicFile {
                        path: path.to_path_buf(),
                        tmp,
                        file: Some(BufWriter::with_capacity(1 << 20, file)),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(FileError::new("write", path, e)),
            }
        }
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error while writing this file, as a `FileError` naming the target.
    pub fn error(&self, e: io::Error) -> FileError {
        FileError::new("write", &self.path, e)
    }

    pub fn commit(mut self) -> Result<(), FileError> {
        let w = self.file.take().expect("an uncommitted file");
        let file = w.into_inner().map_err(|e| self.error(e.into_error()))?;
        file.sync_all().map_err(|e| self.error(e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&self.tmp);
            self.error(e)
        })?;
        // Done: nothing to remove on drop any more.
        self.tmp = PathBuf::new();
        sync_dir(parent_dir(&self.path)).map_err(|e| self.error(e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("an uncommitted file").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("an uncommitted file")
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("an uncommitted file").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.tmp.as_os_str().is_empty() {
            return;
        }
        // The buffered rest would only fail again (or partly land): discard it, then the file.
        if let Some(w) = self.file.take() {
            let (file, _) = w.into_parts();
            drop(file);
        }
        let _ = fs::remove_file(&self.tmp);
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn truncate_to_boundary(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// fsync of a directory, so a rename survives a power loss. File systems that cannot sync a
/// directory say EINVAL; that is not a failure of the write.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => Ok(()),
        other => other,
    }
}

/// Removes the temporary files that writes interrupted by a kill (or a power loss) left in
/// `dir`: ours whose writing process is gone (never one a live process is writing), and those of
/// earlier versions once they are ten minutes old. A missing `dir` has none. Returns what was
/// removed.
pub fn clean_stale_temps(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::new("read directory", dir, e)),
    };
    let mut removed = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FileError::new("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let old = || {
            meta.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= LEGACY_MIN_AGE)
        };
        let stale = if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
            match owner(rest) {
                Some(id) => id.liveness() == super::process::Liveness::Dead,
                None => old(),
            }
        } else {
            is_legacy_temp(&name) && old()
        };
        if stale {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FileError::new("remove", &path, e)),
            }
        }
    }
    Ok(removed)
}

/// The writer recorded in a temporary name (after the prefix): `<pid>-<start time>-…`.
fn owner(rest: &str) -> Option<ProcessId> {
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    Some(ProcessId {
        pid,
        // 0: the writer could not read its own start time; judge by the pid alone.
        start_time: (start != 0).then_some(start),
        boot_id: None,
    })
}

fn is_legacy_temp(name: &str) -> bool {
    let tempfile_default = name.len() == 10
        && name.starts_with(".tmp")
        && name[4..].chars().all(|c| c.is_ascii_alphanumeric());
    let old_checkpoint = name.starts_with(".last-") && name.ends_with(".tmp");
    tempfile_default || old_checkpoint
}

/// Opens an input that must be a regular file (a directory, a FIFO, … is an error saying so,
/// checked before opening, so a FIFO never blocks). Returns the file and its length.
pub fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    let meta = fs::metadata(path).map_err(|e| FileError::new("read", path, e))?;
    if !meta.is_file() {
        return Err(FileError::not_a_file(
            "read",
            path,
            file_type_name(&meta.file_type()),
        ));
    }
    let f = File::open(path).map_err(|e| FileError::new("read", path, e))?;
    Ok((f, meta.len()))
}

/// Reads an input that must be a regular file (see [`open_regular`]).
pub fn read_regular(path: &Path) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    let (mut f, len) = open_regular(path)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| FileError::new("read", path, e))?;
    Ok(buf)
}

/// `fs::create_dir_all` whose error names the part of the path that is not a directory.
pub fn create_dir_all(path: &Path) -> Result<(), FileError> {
    match fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => {
            // create_dir_all says "exists" when the path itself is a file.
            if let Ok(m) = fs::metadata(path) {
                if !m.is_dir() {
                    return Err(FileError::new(
                        "create directory",
                        path,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
            }
            Err(FileError::new("create directory", path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(dir.path()), vec!["f.json"]);
        // A failing fill leaves the old file and no temporary.
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert!(e.is_no_space());
        assert_eq!(
            e.to_string(),
            format!("cannot write {}: no space left on device", p.display())
        );
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(dir.path()), vec!["f.json"]);
        // A directory in the way is said so before anything is written.
        fs::create_dir(dir.path().join("d")).unwrap();
        let e = write_atomic(&dir.path().join("d"), b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let me = ProcessId::current();
        let live = format!(
            "{TEMP_PREFIX}{}-{}-0-last.pt",
            me.pid,
            me.start_time.unwrap()
        );
        // Same pid, another start time: a dead writer whose pid was reused (by us).
        let reused = format!(
            "{TEMP_PREFIX}{}-{}-0-last.pt",
            me.pid,
            me.start_time.unwrap() + 1
        );
        let dead = format!("{TEMP_PREFIX}{}-5-0-x.bin", u32::MAX);
        for n in [
            &live,
            &reused,
            &dead,
            &".last-abc.tmp".to_string(),
            &"keep".to_string(),
        ] {
            fs::write(d.join(n), b"x").unwrap();
        }
        let removed = clean_stale_temps(d).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        // The legacy temp is young: kept until it is ten minutes old.
        let mut want = vec![".last-abc.tmp".to_string(), "keep".into(), live];
        want.sort();
        assert_eq!(names(d), want);
        assert!(clean_stale_temps(&d.join("missing")).unwrap().is_empty());
        assert!(is_legacy_temp(".tmpAb12Cd") && !is_legacy_temp(".tmp"));
    }

    #[test]
    fn inputs_must_be_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: it is a directory, not a file",
                dir.path().display()
            )
        );
        let f = dir.path().join("f");
        fs::write(&f, b"abc").unwrap();
        assert_eq!(read_regular(&f).unwrap(), b"abc");
        let e = read_regular(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().ends_with("no such file or directory"), "{e}");
        let e = create_dir_all(&f.join("sub")).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = create_dir_all(&f).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
