//! Data sets as u8 pixels and labels: CIFAR binary archives, image-folder trees (plain or
//! `.tar.gz`), synthetic data, a decoded-data cache, per-rank sampling and augmentation.
//!
//! No torch here: the engine turns the batches that [`augment::fill_batch`] fills into tensors.

pub mod augment;
pub mod cache;
pub mod cifar_binary;
pub mod download;
pub mod error;
pub mod image_folder;
pub mod sampler;
pub mod synthetic;

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};

pub use augment::{fill_batch, Augment};
pub use error::DataError;
use error::IoContext;
pub use sampler::{epoch_permutation, ShardPlan};

/// One split held as u8 pixels, CHW per image, images back to back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`, CHW. Panics when `i` is out of range.
    pub fn image(&self, i: usize, shape: &ImageShape) -> &[u8] {
        let n = shape.numel();
        &self.images[i * n..(i + 1) * n]
    }
}

// Printing 150 MB of pixels by accident would hang a terminal.
impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("len", &self.len())
            .field("image_bytes", &self.images.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// Bytes per image.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub classes: Vec<String>,
    pub shape: ImageShape,
    pub train: Split,
    pub test: Split,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CifarVariant {
    Cifar10,
    Cifar100,
}

impl CifarVariant {
    pub fn name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar10",
            CifarVariant::Cifar100 => "cifar100",
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Some(CifarVariant::Cifar10),
            "cifar100" | "cifar-100" => Some(CifarVariant::Cifar100),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Synthetic {
        train: usize,
        test: usize,
    },
    CifarBinary {
        path: PathBuf,
        variant: CifarVariant,
    },
    ImageFolder {
        path: PathBuf,
    },
    Download(CifarVariant),
}

pub const SYNTHETIC_TRAIN: usize = 10_000;
pub const SYNTHETIC_TEST: usize = 2_000;

impl DataSource {
    /// Auto-detect from what the user typed for `--data`: "synthetic" or "synthetic:TRAIN[:TEST]"
    /// (TEST defaults to TRAIN/5); "download:cifar10"/"download:cifar100"; otherwise a path: a
    /// `.tar.gz`/`.tgz` file or a directory, recognised by its entries (also when everything sits
    /// under one top-level folder). Anything else: an error naming the path and listing the
    /// layouts accepted.
    pub fn detect(spec: &str) -> Result<DataSource, DataError> {
        let spec = spec.trim();
        if spec == "synthetic" {
            return Ok(DataSource::Synthetic {
                train: SYNTHETIC_TRAIN,
                test: SYNTHETIC_TEST,
            });
        }
        if let Some(rest) = spec.strip_prefix("synthetic:") {
            return parse_synthetic(rest);
        }
        if let Some(rest) = spec.strip_prefix("download:") {
            return CifarVariant::parse(rest)
                .map(DataSource::Download)
                .ok_or_else(|| {
                    DataError::InvalidOption(format!(
                        "unknown download '{rest}': expected download:cifar10 or download:cifar100"
                    ))
                });
        }
        let path = PathBuf::from(spec);
        let unknown = |reason: &str| DataError::UnknownLayout {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unknown("no such file or folder"))
            }
            Err(e) => return Err(DataError::io(&path, e)),
        };
        if meta.is_dir() {
            if let Some((_, variant)) = cifar_binary::find_dir(&path) {
                return Ok(DataSource::CifarBinary { path, variant });
            }
            if image_folder::find_root(&path).is_some() {
                return Ok(DataSource::ImageFolder { path });
            }
            return Err(unknown("the folder holds none of the accepted layouts"));
        }
        if !is_tar_gz(&path) {
            return Err(unknown("a file, but not a .tar.gz or .tgz archive"));
        }
        detect_archive(&path)
    }
}

fn parse_synthetic(rest: &str) -> Result<DataSource, DataError> {
    let bad = || {
        DataError::InvalidOption(format!(
            "'synthetic:{rest}': expected synthetic:TRAIN or synthetic:TRAIN:TEST with positive counts"
        ))
    };
    let mut parts = rest.split(':');
    let count = |s: Option<&str>| -> Result<Option<usize>, DataError> {
        match s {
            None => Ok(None),
            Some(s) => match s.trim().replace('_', "").parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(bad()),
            },
        }
    };
    let train = count(parts.next())?.ok_or_else(bad)?;
    let test = count(parts.next())?.unwrap_or((train / 5).max(1));
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(DataSource::Synthetic { train, test })
}

/// Streams the archive until one entry tells which layout it holds.
fn detect_archive(path: &Path) -> Result<DataSource, DataError> {
    let mut archive = open_tar_gz(path)?;
    for entry in archive.entries().at(path)? {
        let entry = entry.at(path)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let comps = entry_components(&entry, path)?;
        if let Some(variant) = cifar_binary::variant_of_entry(&comps) {
            return Ok(DataSource::CifarBinary {
                path: path.to_path_buf(),
                variant,
            });
        }
        if image_folder::split_of_entry(&comps).is_some() {
            return Ok(DataSource::ImageFolder {
                path: path.to_path_buf(),
            });
        }
    }
    Err(DataError::UnknownLayout {
        path: path.to_path_buf(),
        reason: "the archive holds none of the accepted layouts".into(),
    })
}

/// The spec `detect` turns back into this source (for run records).
impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Synthetic { train, test } => write!(f, "synthetic:{train}:{test}"),
            DataSource::CifarBinary { path, .. } | DataSource::ImageFolder { path } => {
                write!(f, "{}", path.display())
            }
            DataSource::Download(v) => write!(f, "download:{}", v.name()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Seeds the synthetic set; real data ignores it.
    pub seed: u64,
    /// Resize images from image folders to this square size; None = keep (all must agree).
    pub image_size: Option<usize>,
    /// Where decoded data sets (and downloads) are kept; None = no data-set cache.
    pub cache_dir: Option<PathBuf>,
}

/// A loaded data set and how it was obtained; the caller decides what to print.
#[derive(Debug)]
pub struct Loaded {
    pub dataset: Dataset,
    pub from_cache: bool,
    /// The cache file read or written, if any.
    pub cache_file: Option<PathBuf>,
    /// Problems that did not stop the load (a corrupt cache file that was rebuilt, a cache that
    /// could not be written).
    pub warnings: Vec<String>,
}

pub fn load(source: &DataSource, opts: &LoadOptions) -> Result<Dataset, DataError> {
    load_with_report(source, opts).map(|l| l.dataset)
}

pub fn load_with_report(source: &DataSource, opts: &LoadOptions) -> Result<Loaded, DataError> {
    match source {
        DataSource::Synthetic { train, test } => {
            fixed_size_only("synthetic data", opts)?;
            Ok(Loaded {
                dataset: synthetic::generate(*train, *test, opts.seed),
                from_cache: false,
                cache_file: None,
                warnings: Vec::new(),
            })
        }
        DataSource::CifarBinary { path, variant } => load_cifar(path, *variant, opts),
        DataSource::ImageFolder { path } => {
            if opts.image_size == Some(0) {
                return Err(DataError::InvalidOption(
                    "image size must be positive".into(),
                ));
            }
            let content = if path.is_dir() {
                image_folder::find_root(path).unwrap_or_else(|| path.clone())
            } else {
                path.clone()
            };
            cache::load_or_build(
                opts.cache_dir.as_deref(),
                "image-folder",
                opts.image_size,
                &content,
                || image_folder::load(path, opts.image_size),
            )
        }
        DataSource::Download(variant) => {
            let dir = match &opts.cache_dir {
                Some(d) => d.clone(),
                None => download::default_cache_dir().ok_or_else(|| {
                    DataError::InvalidOption(
                        "no cache directory to download into: pass one, or a local copy with --data"
                            .into(),
                    )
                })?,
            };
            let archive = download::fetch(*variant, &dir)?;
            load_cifar(&archive, *variant, opts)
        }
    }
}

fn load_cifar(path: &Path, variant: CifarVariant, opts: &LoadOptions) -> Result<Loaded, DataError> {
    fixed_size_only("CIFAR binary data", opts)?;
    let content = if path.is_dir() {
        cifar_binary::find_dir(path).map_or_else(|| path.to_path_buf(), |(d, _)| d)
    } else {
        path.to_path_buf()
    };
    cache::load_or_build(
        opts.cache_dir.as_deref(),
        variant.name(),
        None,
        &content,
        || cifar_binary::load(path, variant),
    )
}

/// Only image folders are resized; a different size elsewhere is a configuration mistake.
fn fixed_size_only(what: &str, opts: &LoadOptions) -> Result<(), DataError> {
    match opts.image_size {
        None | Some(32) => Ok(()),
        Some(s) => Err(DataError::InvalidOption(format!(
            "image size {s} requested, but {what} is 32x32 (resizing applies to image folders only)"
        ))),
    }
}

pub(crate) type TarGz = tar::Archive<GzDecoder<BufReader<File>>>;

/// Opens an input file of a data set, which must be a regular file: a directory (or a FIFO, …)
/// where a file is expected is an error saying so, never "truncated" or "empty". Every loader
/// opens its inputs through this (or [`read_input`]). Returns the file and its length.
pub(crate) fn open_input(path: &Path) -> Result<(File, u64), DataError> {
    Ok(crate::files::open_regular(path)?)
}

/// Reads an input file of a data set (see [`open_input`]).
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(crate::files::read_regular(path)?)
}

pub(crate) fn is_tar_gz(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

pub(crate) fn open_tar_gz(path: &Path) -> Result<TarGz, DataError> {
    let (file, _) = open_input(path)?;
    Ok(tar::Archive::new(GzDecoder::new(BufReader::with_capacity(
        1 << 20,
        file,
    ))))
}

/// The one non-hidden sub-folder of `path`, when it has exactly one (a layout "under one
/// top-level folder").
pub(crate) fn single_subdir(path: &Path) -> Option<PathBuf> {
    let mut dirs = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_dir());
    let first = dirs.next()?;
    dirs.next().is_none().then(|| first.path())
}

/// The member's path as plain names ("./a/b" and "a/b" alike).
pub(crate) fn entry_components<R: Read>(
    entry: &tar::Entry<R>,
    archive: &Path,
) -> Result<Vec<String>, DataError> {
    let p = entry.path().at(archive)?;
    Ok(p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn detects_synthetic_and_download_specs() {
        assert_eq!(
            DataSource::detect("synthetic").unwrap(),
            DataSource::Synthetic {
                train: 10_000,
                test: 2_000
            }
        );
        assert_eq!(
            DataSource::detect("synthetic:500").unwrap(),
            DataSource::Synthetic {
                train: 500,
                test: 100
            }
        );
        assert_eq!(
            DataSource::detect("synthetic:500:30").unwrap(),
            DataSource::Synthetic {
                train: 500,
                test: 30
            }
        );
        assert!(DataSource::detect("synthetic:0").is_err());
        assert!(DataSource::detect("synthetic:x").is_err());
        assert!(DataSource::detect("synthetic:1:2:3").is_err());
        assert_eq!(
            DataSource::detect("download:cifar100").unwrap(),
            DataSource::Download(CifarVariant::Cifar100)
        );
        assert!(DataSource::detect("download:mnist").is_err());
        for spec in ["synthetic:500:30", "download:cifar10"] {
            assert_eq!(DataSource::detect(spec).unwrap().to_string(), spec);
        }
    }

    #[test]
    fn unknown_paths_name_the_path_and_the_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = DataSource::detect(missing.to_str().unwrap()).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("nope") && s.contains("no such file"), "{s}");
        assert!(
            s.contains("cifar-10-batches-bin") && s.contains("train/<class>"),
            "{s}"
        );

        fs::write(dir.path().join("readme.txt"), "hi").unwrap();
        let e = DataSource::detect(dir.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(e, DataError::UnknownLayout { .. }), "{e}");
        let e = DataSource::detect(dir.path().join("readme.txt").to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a .tar.gz"), "{e}");
    }

    #[test]
    fn synthetic_rejects_a_resize() {
        let opts = LoadOptions {
            image_size: Some(64),
            ..Default::default()
        };
        let e = load(
            &DataSource::Synthetic {
                train: 10,
                test: 10,
            },
            &opts,
        )
        .unwrap_err();
        assert!(matches!(e, DataError::InvalidOption(_)), "{e}");
    }

    #[test]
    fn split_image_slices_one_image() {
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let s = Split {
            images: (0..12).collect(),
            labels: vec![0, 1, 2],
        };
        assert_eq!(s.len(), 3);
        assert_eq!(s.image(1, &shape), &[4, 5, 6, 7]);
    }
}
