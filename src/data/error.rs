//! Errors of the data module. Each names the file (or archive member) and what is wrong with it,
//! so a user can fix the input without reading the code.

use std::path::PathBuf;

/// The layouts `DataSource::detect` accepts, quoted in errors about unusable paths.
pub const ACCEPTED_LAYOUTS: &str = "\
  synthetic | synthetic:TRAIN[:TEST]          generated data, 10 classes of 32x32 RGB
  download:cifar10 | download:cifar100        fetch the official binary archive into the cache directory
  CIFAR-10 binary (folder or .tar.gz/.tgz)    cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin, batches.meta.txt
  CIFAR-100 binary (folder or .tar.gz/.tgz)   cifar-100-binary/train.bin, test.bin, fine_label_names.txt
  image folder (folder or .tar.gz/.tgz)       train/<class>/<image> and test/<class>/<image>, JPEG or PNG,
                                              optional classes.txt (one class name per line) beside train/
  each path layout may also sit under one top-level folder";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // Not a `#[source]`: the message already includes it, and `{:#}` would print it twice.
    #[error("{}: {}", path.display(), crate::files::describe(error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("cannot use {} as a data set: {reason}\naccepted layouts:\n{ACCEPTED_LAYOUTS}", path.display())]
    UnknownLayout { path: PathBuf, reason: String },

    #[error("{}: record {record} is truncated: expected {expected} bytes, found {found}", file.display())]
    TruncatedRecord {
        file: PathBuf,
        record: usize,
        expected: usize,
        found: usize,
    },

    #[error("{}: wrong total size for {what}: expected {expected} bytes, found {found}", path.display())]
    WrongSize {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },

    #[error("{}: record {record} has label {label}, but there are only {classes} classes", file.display())]
    LabelOutOfRange {
        file: PathBuf,
        record: usize,
        label: usize,
        classes: usize,
    },

    #[error("{}: missing file {name}", path.display())]
    MissingFile { path: PathBuf, name: String },

    #[error("{}: missing split: expected a {split}/ folder with one sub-folder per class", path.display())]
    MissingSplit { path: PathBuf, split: &'static str },

    #[error("{}: class folder has no images (JPEG or PNG)", path.display())]
    EmptyClass { path: PathBuf },

    #[error("{}: cannot decode image: {message}", path.display())]
    Decode { path: PathBuf, message: String },

    #[error("{}: image is {}x{}, expected {}x{} like the others (set an image size to resize)",
        path.display(), got.0, got.1, expected.0, expected.1)]
    InconsistentSize {
        path: PathBuf,
        /// (width, height)
        expected: (u32, u32),
        /// (width, height)
        got: (u32, u32),
    },

    /// Any other malformed input: class lists that disagree, unreadable headers, ...
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// A file that could not be read or written, or an input that is not a regular file
    /// ("cannot read …/test_batch.bin: it is a directory, not a file").
    #[error(transparent)]
    File(#[from] crate::files::FileError),

    #[error("invalid data option: {0}")]
    InvalidOption(String),

    #[error("download of {url} failed: {message}\nno network? Download the file elsewhere and pass the local copy with --data PATH (the .tar.gz, or the folder it extracts to)")]
    Download { url: String, message: String },

    #[error("{}: MD5 checksum mismatch: expected {expected}, got {got} (incomplete or corrupted download)", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        got: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            error,
        }
    }

    /// The I/O error kind behind this error, if it is one.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            DataError::Io { error, .. } => Some(error.kind()),
            DataError::File(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Attaches a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, DataError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, DataError> {
        self.map_err(|e| DataError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_problem() {
        let e = DataError::TruncatedRecord {
            file: "a/data_batch_1.bin".into(),
            record: 7,
            expected: 3073,
            found: 12,
        };
        let s = e.to_string();
        assert!(s.contains("a/data_batch_1.bin") && s.contains("record 7"));
        assert!(s.contains("3073") && s.contains("12"));

        let e = DataError::UnknownLayout {
            path: "/x".into(),
            reason: "no such file or directory".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("/x") && s.contains("cifar-10-batches-bin") && s.contains("train/<class>")
        );

        let e = DataError::Download {
            url: "http://h/f".into(),
            message: "refused".into(),
        };
        assert!(e.to_string().contains("--data"));
    }
}
