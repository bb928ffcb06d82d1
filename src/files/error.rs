//! File errors that name the path and say the cause in words.
use std::fs::FileType;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A failed file operation: `cannot <action> <path>: <cause>`, the cause in words (for a path
/// under something that is not a directory, that something is named).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {cause}", path.display())]
pub struct FileError {
    /// What was being done, as a verb phrase: "write", "read", "create directory", …
    pub action: &'static str,
    pub path: PathBuf,
    cause: String,
    // Not a `#[source]`: the message already says it, and `{:#}` would print it twice.
    error: io::Error,
}

impl FileError {
    pub fn new(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> FileError {
        let path = path.into();
        let cause = cause_at(&path, &error);
        FileError {
            action,
            path,
            cause,
            error,
        }
    }

    /// `path` exists but is not a regular file (`found`: see [`file_type_name`]).
    pub fn not_a_file(action: &'static str, path: impl Into<PathBuf>, found: &str) -> FileError {
        let error = match found {
            "a directory" => io::Error::from_raw_os_error(libc::EISDIR),
            _ => io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        };
        FileError {
            action,
            path: path.into(),
            cause: format!("it is {found}, not a file"),
            error,
        }
    }

    /// The cause in words, without the path ("no space left on device").
    pub fn cause(&self) -> &str {
        &self.cause
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }

    pub fn raw_os_error(&self) -> Option<i32> {
        self.error.raw_os_error()
    }

    pub fn io_error(&self) -> &io::Error {
        &self.error
    }

    /// The disk (or the quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }
}

/// For code that returns `io::Result`: the kind is kept and the message is the whole
/// `FileError` (path included).
impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// An I/O error's cause in words: "no space left on device", "read-only file system",
/// "permission denied", … (the OS's own wording, without "(os error N)", for the rest).
pub fn describe(e: &io::Error) -> String {
    let words = match e.raw_os_error() {
        Some(libc::ENOSPC) => "no space left on device",
        Some(libc::EDQUOT) => "disk quota exceeded",
        Some(libc::EROFS) => "read-only file system",
        Some(libc::ENOTDIR) => "not a directory",
        Some(libc::EISDIR) => "it is a directory",
        Some(libc::EACCES | libc::EPERM) => "permission denied",
        Some(libc::ENOENT) => "no such file or directory",
        Some(libc::EEXIST) => "it already exists",
        Some(libc::EIO) => "input/output error (is the disk failing?)",
        Some(libc::EMFILE | libc::ENFILE) => "too many open files",
        Some(libc::ENAMETOOLONG) => "file name too long",
        Some(libc::EFBIG) => "file too large",
        _ => "",
    };
    if !words.is_empty() {
        return words.to_string();
    }
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

/// What a file type is, in words: "a file", "a directory", "a FIFO", …
pub fn file_type_name(t: &FileType) -> &'static str {
    if t.is_file() {
        "a file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "neither a file nor a directory"
    }
}

/// `describe`, plus which part of `path` is not a directory when that is the cause.
fn cause_at(path: &Path, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        if let Some((p, t)) = first_non_directory(path) {
            return format!("{} is not a directory (it is {})", p.display(), t);
        }
    }
    describe(e)
}

/// The shortest prefix of `path` that exists and is not a directory.
fn first_non_directory(path: &Path) -> Option<(PathBuf, &'static str)> {
    let mut prefixes: Vec<&Path> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    prefixes.reverse();
    prefixes.into_iter().find_map(|p| {
        let m = std::fs::metadata(p).ok()?;
        (!m.is_dir()).then(|| (p.to_path_buf(), file_type_name(&m.file_type())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_words_and_name_the_non_directory() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(describe(&e(libc::ENOSPC)), "no space left on device");
        assert_eq!(describe(&e(libc::EROFS)), "read-only file system");
        assert_eq!(describe(&e(libc::EACCES)), "permission denied");
        assert_eq!(describe(&e(libc::EXDEV)), "invalid cross-device link");
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("runs");
        std::fs::write(&file, "x").unwrap();
        let err = std::fs::create_dir(file.join("a")).unwrap_err();
        let fe = FileError::new("create directory", file.join("a/b"), err);
        let s = fe.to_string();
        assert!(
            s.contains(&format!(
                "{} is not a directory (it is a file)",
                file.display()
            )),
            "{s}"
        );
        let io: io::Error = fe.into();
        assert!(io.to_string().contains("is not a directory"), "{io}");
    }
}
