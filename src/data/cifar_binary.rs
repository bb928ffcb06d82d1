//! The official CIFAR binary layout.
//!
//! CIFAR-10: `cifar-10-batches-bin/` with `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`
//! (records of 1 label byte + 3072 pixel bytes: R plane, G plane, B plane, 32×32) and
//! `batches.meta.txt` (class names, one a line). CIFAR-100: `cifar-100-binary/` with `train.bin`,
//! `test.bin` (1 coarse + 1 fine label byte + 3072 pixels; the fine label is used) and
//! `fine_label_names.txt`. Read from the extracted folder or streamed from the `.tar.gz`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{DataError, IoContext};
use super::{
    entry_components, open_input, open_tar_gz, single_subdir, CifarVariant, Dataset, ImageShape,
    Split,
};

pub const SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};
const PIXELS: usize = 3 * 32 * 32;

const CIFAR10_DIR: &str = "cifar-10-batches-bin";
const CIFAR100_DIR: &str = "cifar-100-binary";
const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR100_TRAIN: [&str; 1] = ["train.bin"];

fn train_files(v: CifarVariant) -> &'static [&'static str] {
    match v {
        CifarVariant::Cifar10 => &CIFAR10_TRAIN,
        CifarVariant::Cifar100 => &CIFAR100_TRAIN,
    }
}

fn test_file(v: CifarVariant) -> &'static str {
    match v {
        CifarVariant::Cifar10 => "test_batch.bin",
        CifarVariant::Cifar100 => "test.bin",
    }
}

fn meta_file(v: CifarVariant) -> &'static str {
    match v {
        CifarVariant::Cifar10 => "batches.meta.txt",
        CifarVariant::Cifar100 => "fine_label_names.txt",
    }
}

/// Label bytes before the pixels; the last one is the label used.
fn label_bytes(v: CifarVariant) -> usize {
    match v {
        CifarVariant::Cifar10 => 1,
        CifarVariant::Cifar100 => 2,
    }
}

fn record_len(v: CifarVariant) -> usize {
    label_bytes(v) + PIXELS
}

/// The folder that holds the batch files, given that folder, its parent, or a folder with one
/// top-level sub-folder around either.
pub fn find_dir(path: &Path) -> Option<(PathBuf, CifarVariant)> {
    let mut bases = vec![path.to_path_buf()];
    if let Some(only) = single_subdir(path) {
        bases.push(only);
    }
    for base in bases {
        for dir in [
            base.clone(),
            base.join(CIFAR10_DIR),
            base.join(CIFAR100_DIR),
        ] {
            // `exists`, not `is_file`: a batch "file" that is a folder is found here and then
            // reported by the loader as not a file, instead of the layout going unrecognised.
            if dir.join(CIFAR10_TRAIN[0]).exists() {
                return Some((dir, CifarVariant::Cifar10));
            }
            if dir.join(CIFAR100_TRAIN[0]).exists() {
                return Some((dir, CifarVariant::Cifar100));
            }
        }
    }
    None
}

/// Which variant an archive member belongs to: a known file name at the top, in the official
/// folder, or one folder deeper.
pub fn variant_of_entry(comps: &[String]) -> Option<CifarVariant> {
    let name = comps.last()?.as_str();
    let placed = match comps.len() {
        1 => true,
        2 => !matches!(comps[0].as_str(), "train" | "test"),
        3 => comps[1] == CIFAR10_DIR || comps[1] == CIFAR100_DIR,
        _ => false,
    };
    if !placed {
        return None;
    }
    [CifarVariant::Cifar10, CifarVariant::Cifar100]
        .into_iter()
        .find(|&v| train_files(v).contains(&name) || name == test_file(v) || name == meta_file(v))
}

/// Loads a CIFAR binary folder (see [`find_dir`]) or `.tar.gz`.
pub fn load(path: &Path, variant: CifarVariant) -> Result<Dataset, DataError> {
    let (train, test, classes) = if path.is_dir() {
        let (dir, found) = find_dir(path).ok_or_else(|| DataError::UnknownLayout {
            path: path.to_path_buf(),
            reason: format!("no {} binary batch files found", variant.name()),
        })?;
        if found != variant {
            return Err(DataError::Format {
                path: dir,
                message: format!(
                    "holds {} binary files, but {} was asked for",
                    found.name(),
                    variant.name()
                ),
            });
        }
        load_dir(&dir, variant)?
    } else {
        load_archive(path, variant)?
    };
    Ok(Dataset {
        name: variant.name().to_string(),
        classes,
        shape: SHAPE,
        train,
        test,
    })
}

fn load_dir(dir: &Path, v: CifarVariant) -> Result<(Split, Split, Vec<String>), DataError> {
    let open = |name: &str| -> Result<(File, u64, PathBuf), DataError> {
        let p = dir.join(name);
        let (f, size) = open_input(&p).map_err(|e| match e.io_kind() {
            Some(std::io::ErrorKind::NotFound) => DataError::MissingFile {
                path: dir.to_path_buf(),
                name: name.to_string(),
            },
            _ => e,
        })?;
        Ok((f, size, p))
    };
    let read_split = |names: &[&str]| -> Result<Split, DataError> {
        let mut split = Split::default();
        for name in names {
            let (f, size, p) = open(name)?;
            read_records(BufReader::new(f), size, &p, v, &mut split)?;
        }
        Ok(split)
    };
    let train = read_split(train_files(v))?;
    let test = read_split(&[test_file(v)])?;
    let (mut f, _, p) = open(meta_file(v))?;
    let mut text = String::new();
    f.read_to_string(&mut text).at(&p)?;
    let classes = parse_names(&text, &p, v)?;
    Ok((train, test, classes))
}

fn load_archive(archive: &Path, v: CifarVariant) -> Result<(Split, Split, Vec<String>), DataError> {
    // Members may come in any order: keep each file's records until all are read.
    let mut parts: HashMap<String, Split> = HashMap::new();
    let mut classes = None;
    let mut tar = open_tar_gz(archive)?;
    for entry in tar.entries().at(archive)? {
        let mut entry = entry.at(archive)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let comps = entry_components(&entry, archive)?;
        if variant_of_entry(&comps) != Some(v) {
            continue;
        }
        let name = comps.last().cloned().unwrap_or_default();
        let member = archive.join(comps.join("/"));
        if name == meta_file(v) {
            let mut text = String::new();
            entry.read_to_string(&mut text).at(&member)?;
            classes = Some(parse_names(&text, &member, v)?);
        } else {
            let size = entry.size();
            let mut split = Split::default();
            read_records(&mut entry, size, &member, v, &mut split)?;
            parts.insert(name, split);
        }
    }
    let mut take = |names: &[&str]| -> Result<Split, DataError> {
        let mut out = Split::default();
        for name in names {
            let part = parts.remove(*name).ok_or_else(|| DataError::MissingFile {
                path: archive.to_path_buf(),
                name: name.to_string(),
            })?;
            if out.is_empty() {
                out = part;
            } else {
                out.images.extend_from_slice(&part.images);
                out.labels.extend_from_slice(&part.labels);
            }
        }
        Ok(out)
    };
    let train = take(train_files(v))?;
    let test = take(&[test_file(v)])?;
    let classes = classes.ok_or_else(|| DataError::MissingFile {
        path: archive.to_path_buf(),
        name: meta_file(v).to_string(),
    })?;
    Ok((train, test, classes))
}

/// Appends the records of one batch file of `size` bytes to `split`.
fn read_records(
    mut r: impl Read,
    size: u64,
    file: &Path,
    v: CifarVariant,
    split: &mut Split,
) -> Result<(), DataError> {
    let rec = record_len(v);
    let size = usize::try_from(size).map_err(|_| DataError::WrongSize {
        path: file.to_path_buf(),
        what: "a CIFAR batch file".into(),
        expected: 0,
        found: size,
    })?;
    if size % rec != 0 {
        return Err(DataError::TruncatedRecord {
            file: file.to_path_buf(),
            record: size / rec,
            expected: rec,
            found: size % rec,
        });
    }
    let n = size / rec;
    split.images.reserve(n * PIXELS);
    split.labels.reserve(n);
    let classes = v.num_classes();
    let mut buf = vec![0u8; rec];
    for record in 0..n {
        let got = read_full(&mut r, &mut buf).at(file)?;
        if got < rec {
            return Err(DataError::TruncatedRecord {
                file: file.to_path_buf(),
                record,
                expected: rec,
                found: got,
            });
        }
        let label = buf[label_bytes(v) - 1] as usize;
        if label >= classes {
            return Err(DataError::LabelOutOfRange {
                file: file.to_path_buf(),
                record,
                label,
                classes,
            });
        }
        split.labels.push(label as u16);
        split.images.extend_from_slice(&buf[label_bytes(v)..]);
    }
    Ok(())
}

/// Like `read_exact`, but says how much it got before the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn parse_names(text: &str, file: &Path, v: CifarVariant) -> Result<Vec<String>, DataError> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != v.num_classes() {
        return Err(DataError::Format {
            path: file.to_path_buf(),
            message: format!(
                "lists {} class names, expected {} for {}",
                names.len(),
                v.num_classes(),
                v.name()
            ),
        });
    }
    Ok(names)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::DataSource;
    use flate2::write::GzEncoder;
    use std::fs;

    fn pixel(record: usize, j: usize) -> u8 {
        (record * 31 + j * 7) as u8
    }

    /// Writes the official CIFAR-10 layout with `per_batch` records per file under
    /// `root/cifar-10-batches-bin`; returns the expected training and test labels.
    pub(crate) fn write_cifar10(root: &Path, per_batch: usize) -> (Vec<u16>, Vec<u16>) {
        let dir = root.join(CIFAR10_DIR);
        fs::create_dir_all(&dir).unwrap();
        let mut train = Vec::new();
        let mut test = Vec::new();
        let mut k = 0;
        for name in CIFAR10_TRAIN.iter().chain([&"test_batch.bin"]) {
            let mut bytes = Vec::new();
            for _ in 0..per_batch {
                let label = (k * 3 % 10) as u8;
                bytes.push(label);
                bytes.extend((0..PIXELS).map(|j| pixel(k, j)));
                if *name == "test_batch.bin" {
                    &mut test
                } else {
                    &mut train
                }
                .push(label as u16);
                k += 1;
            }
            fs::write(dir.join(name), bytes).unwrap();
        }
        let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
        fs::write(dir.join("batches.meta.txt"), names + "\n").unwrap();
        (train, test)
    }

    fn write_cifar100(root: &Path, n: usize) {
        let dir = root.join(CIFAR100_DIR);
        fs::create_dir_all(&dir).unwrap();
        for name in ["train.bin", "test.bin"] {
            let mut bytes = Vec::new();
            for k in 0..n {
                bytes.extend([(k % 20) as u8, (k * 7 % 100) as u8]);
                bytes.extend((0..PIXELS).map(|j| pixel(k, j)));
            }
            fs::write(dir.join(name), bytes).unwrap();
        }
        let names: String = (0..100).map(|i| format!("fine{i}\n")).collect();
        fs::write(dir.join("fine_label_names.txt"), names).unwrap();
        fs::write(dir.join("coarse_label_names.txt"), "c\n").unwrap();
    }

    /// Packs `dir`'s contents into `out` as a gzipped tar, members named relative to `dir`.
    pub(crate) fn tar_gz(dir: &Path, out: &Path) {
        let gz = GzEncoder::new(File::create(out).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        b.append_dir_all(".", dir).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn cifar10_folder_parent_and_archive_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("extracted");
        let (train_labels, test_labels) = write_cifar10(&root, 3);
        let archive = tmp.path().join("cifar-10-binary.tar.gz");
        tar_gz(&root, &archive);

        let a = load(&root, CifarVariant::Cifar10).unwrap();
        let b = load(&root.join(CIFAR10_DIR), CifarVariant::Cifar10).unwrap();
        let c = load(&archive, CifarVariant::Cifar10).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.train.labels, train_labels);
        assert_eq!(a.test.labels, test_labels);
        assert_eq!(a.train.len(), 15);
        assert_eq!(a.classes[3], "class3");
        // Record 4 of the training set is the second record of data_batch_2.
        let img = a.train.image(4, &a.shape);
        assert!(img.iter().enumerate().all(|(j, &p)| p == pixel(4, j)));
        assert_eq!(a.test.image(0, &a.shape)[5], pixel(15, 5));

        for p in [&root, &root.join(CIFAR10_DIR), &archive] {
            let s = DataSource::detect(p.to_str().unwrap()).unwrap();
            assert!(
                matches!(
                    s,
                    DataSource::CifarBinary {
                        variant: CifarVariant::Cifar10,
                        ..
                    }
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn cifar100_uses_fine_labels_from_folder_under_a_top_level_folder() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar100(&tmp.path().join("top"), 4);
        let archive = tmp.path().join("c100.tgz");
        tar_gz(tmp.path(), &archive);
        let s = DataSource::detect(tmp.path().to_str().unwrap()).unwrap();
        assert!(matches!(
            s,
            DataSource::CifarBinary {
                variant: CifarVariant::Cifar100,
                ..
            }
        ));
        let s = DataSource::detect(archive.to_str().unwrap()).unwrap();
        assert!(matches!(
            s,
            DataSource::CifarBinary {
                variant: CifarVariant::Cifar100,
                ..
            }
        ));

        let a = load(tmp.path(), CifarVariant::Cifar100).unwrap();
        assert_eq!(a.train.labels, vec![0, 7, 14, 21]);
        assert_eq!(a.classes.len(), 100);
        assert_eq!(a, load(&archive, CifarVariant::Cifar100).unwrap());
        let e = load(tmp.path(), CifarVariant::Cifar10).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{e}");
    }

    #[test]
    fn truncated_record_names_file_record_and_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 2);
        let f = tmp.path().join(CIFAR10_DIR).join("data_batch_3.bin");
        let mut bytes = fs::read(&f).unwrap();
        bytes.extend([1u8; 10]);
        fs::write(&f, bytes).unwrap();
        match load(tmp.path(), CifarVariant::Cifar10).unwrap_err() {
            DataError::TruncatedRecord {
                file,
                record,
                expected,
                found,
            } => {
                assert_eq!(file, f);
                assert_eq!((record, expected, found), (2, 3073, 10));
            }
            e => panic!("{e}"),
        }
        // The same from an archive, where the reader is a tar member.
        let archive = tmp.path().with_extension("tar.gz");
        tar_gz(tmp.path(), &archive);
        let e = load(&archive, CifarVariant::Cifar10).unwrap_err();
        assert!(
            matches!(e, DataError::TruncatedRecord { record: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("data_batch_3.bin"), "{e}");
    }

    #[test]
    fn label_out_of_range_and_missing_files_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 2);
        let dir = tmp.path().join(CIFAR10_DIR);
        let f = dir.join("test_batch.bin");
        let good = fs::read(&f).unwrap();
        let mut bytes = good.clone();
        bytes[3073] = 12;
        fs::write(&f, bytes).unwrap();
        match load(tmp.path(), CifarVariant::Cifar10).unwrap_err() {
            DataError::LabelOutOfRange {
                file,
                record,
                label,
                classes,
            } => assert_eq!((file, record, label, classes), (f.clone(), 1, 12, 10)),
            e => panic!("{e}"),
        }
        fs::write(&f, good).unwrap();
        fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
        let e = load(tmp.path(), CifarVariant::Cifar10).unwrap_err();
        assert!(e.to_string().contains("data_batch_4.bin"), "{e}");
        let archive = tmp.path().with_extension("tgz");
        tar_gz(tmp.path(), &archive);
        let e = load(&archive, CifarVariant::Cifar10).unwrap_err();
        assert!(matches!(e, DataError::MissingFile { .. }), "{e}");
    }

    #[test]
    fn an_input_that_is_a_directory_is_not_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 1);
        let dir = tmp.path().join(CIFAR10_DIR);
        for name in ["test_batch.bin", "batches.meta.txt", "data_batch_1.bin"] {
            let f = dir.join(name);
            let keep = fs::read(&f).unwrap();
            fs::remove_file(&f).unwrap();
            fs::create_dir(&f).unwrap();
            let e = load(tmp.path(), CifarVariant::Cifar10)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("cannot read {}: it is a directory, not a file", f.display())
            );
            fs::remove_dir(&f).unwrap();
            fs::write(&f, keep).unwrap();
        }
        load(tmp.path(), CifarVariant::Cifar10).unwrap();
    }

    #[test]
    fn wrong_number_of_class_names_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 1);
        fs::write(
            tmp.path().join(CIFAR10_DIR).join("batches.meta.txt"),
            "a\nb\n",
        )
        .unwrap();
        let e = load(tmp.path(), CifarVariant::Cifar10).unwrap_err();
        assert!(e.to_string().contains("lists 2 class names"), "{e}");
    }
}
