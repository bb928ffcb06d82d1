//! Decoded data sets on disk, so later loads skip decoding.
//!
//! Files live at `cache_dir/datasets/<key>.bin`, where key is the BLAKE3 hex digest of the cache
//! format version, the source kind, the image size, and the source's content (an archive's bytes;
//! for a folder, every regular file's relative path and bytes, as a per-file digest, in sorted
//! path order). A changed
//! source therefore gets a new file; old ones are never reused.
//!
//! # File format (all integers little-endian)
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `CPTLAB01` |
//! | 8 | 8 | u64 `H`: header length |
//! | 16 | H | UTF-8 JSON `{"name", "classes": [..], "shape": {"channels", "height", "width"}, "train_len", "test_len", "payload_blake3"}`, space-padded so 16+H is a multiple of 8 |
//! | 16+H | train_len·C·H·W | train images, u8, CHW per image, images back to back |
//! | … | 2·train_len | train labels, u16 |
//! | … | test_len·C·H·W | test images |
//! | … | 2·test_len | test labels, u16 |
//!
//! The file is exactly that long, and `payload_blake3` (hex) is the BLAKE3 digest of everything
//! after the header; anything else is treated as corrupt (the load says so and rebuilds the
//! file). Files are written atomically (`files::write_atomic_with`); temporary files that an
//! interrupted write left are removed the next time the cache is used. From Python:
//!
//! ```python
//! import json, torch
//! buf = bytearray(open(path, "rb").read())
//! assert buf[:8] == b"CPTLAB01"
//! h = int.from_bytes(buf[8:16], "little"); hdr = json.loads(buf[16:16 + h]); o = 16 + h
//! c, hh, ww = (hdr["shape"][k] for k in ("channels", "height", "width"))
//! def take(n, dtype):
//!     global o
//!     t = torch.frombuffer(buf, dtype=dtype, count=n, offset=o); o += n * t.element_size()
//!     return t
//! x_train = take(hdr["train_len"] * c * hh * ww, torch.uint8).view(-1, c, hh, ww)
//! y_train = take(hdr["train_len"], torch.int16)  # u16 on disk; fine below 32768 classes
//! x_test = take(hdr["test_len"] * c * hh * ww, torch.uint8).view(-1, c, hh, ww)
//! y_test = take(hdr["test_len"], torch.int16)
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{DataError, IoContext};
use super::{Dataset, ImageShape, Loaded, Split};
use crate::files;

pub const MAGIC: &[u8; 8] = b"CPTLAB01";
/// Part of every key: bump it when decoding or the layout changes so old files go unused.
/// 2: the header carries the payload's BLAKE3.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    classes: Vec<String>,
    shape: ImageShape,
    train_len: u64,
    test_len: u64,
    /// BLAKE3 (hex) of everything after the header.
    payload_blake3: String,
}

/// The payload's bytes in file order: per split, the images, then the labels (u16 LE).
fn for_each_payload_chunk(
    ds: &Dataset,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 14);
    for split in [&ds.train, &ds.test] {
        f(&split.images)?;
        for chunk in split.labels.chunks(1 << 13) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|l| l.to_le_bytes()));
            f(&buf)?;
        }
    }
    Ok(())
}

/// The key of a source: see the module docs. `content` is an archive file or a folder.
pub fn cache_key(
    kind: &str,
    image_size: Option<usize>,
    content: &Path,
) -> Result<String, DataError> {
    let mut h = blake3::Hasher::new();
    h.update(b"cptlab dataset cache");
    h.update(&FORMAT_VERSION.to_le_bytes());
    hash_str(&mut h, kind);
    h.update(&(image_size.map_or(0, |s| s as u64 + 1)).to_le_bytes());
    if content.is_dir() {
        let mut files = Vec::new();
        list_files(content, "", &mut files)?;
        files.sort();
        h.update(b"dir");
        for ((rel, _), digest) in files.iter().zip(file_digests(&files)?) {
            hash_str(&mut h, rel);
            h.update(digest.as_bytes());
        }
    } else {
        h.update(b"file");
        h.update(file_digest(content)?.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Per-file digests on a few threads: tens of thousands of small files are bound by opening
/// them, and a digest per file keeps the key independent of the thread count.
fn file_digests(files: &[(String, PathBuf)]) -> Result<Vec<blake3::Hash>, DataError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 8);
    let per = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(|(_, p)| file_digest(p)).collect()))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            let part: Result<Vec<_>, DataError> = h.join().expect("hashing thread panicked");
            out.extend(part?);
        }
        Ok(out)
    })
}

/// Length-prefixed, so concatenations cannot collide.
fn hash_str(h: &mut blake3::Hasher, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn file_digest(path: &Path) -> Result<blake3::Hash, DataError> {
    let mut h = blake3::Hasher::new();
    let (f, _) = files::open_regular(path)?;
    h.update_reader(f).at(path)?;
    Ok(h.finalize())
}

fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), DataError> {
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let p = e.path();
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        // The entry's own type avoids a stat per file; only links need one.
        let mut ty = e.file_type().at(&p)?;
        if ty.is_symlink() {
            ty = std::fs::metadata(&p).at(&p)?.file_type();
        }
        if ty.is_dir() {
            list_files(&p, &format!("{rel}/"), out)?;
        } else if ty.is_file() {
            out.push((rel, p));
        }
    }
    Ok(())
}

pub fn cache_file(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("datasets").join(format!("{key}.bin"))
}

/// Writes `ds` to `path` atomically: a temporary file in the same folder, renamed when complete
/// (an error removes it; see `files::write_atomic_with`).
pub fn write(path: &Path, ds: &Dataset) -> Result<(), DataError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    files::create_dir_all(dir)?;
    let mut hasher = blake3::Hasher::new();
    for_each_payload_chunk(ds, |b| {
        hasher.update(b);
        Ok(())
    })
    .expect("hashing cannot fail");
    let mut header = serde_json::to_vec(&Header {
        name: ds.name.clone(),
        classes: ds.classes.clone(),
        shape: ds.shape,
        train_len: ds.train.len() as u64,
        test_len: ds.test.len() as u64,
        payload_blake3: hasher.finalize().to_hex().to_string(),
    })
    .expect("header serializes");
    // JSON ignores trailing spaces; 8-aligned pixel data lets readers map it directly.
    header.resize(header.len().next_multiple_of(8), b' ');
    files::write_atomic_with(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for_each_payload_chunk(ds, |b| w.write_all(b))
    })?;
    Ok(())
}

/// Reads a cache file, checking that its lengths add up and its labels are in range.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    let (mut f, file_len) = files::open_regular(path)?;
    let corrupt = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("corrupt cache file: {message}"),
    };
    let mut head = [0u8; 16];
    if file_len < 16 {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            what: "a cache file (shorter than its preamble)".into(),
            expected: 16,
            found: file_len,
        });
    }
    f.read_exact(&mut head).at(path)?;
    if &head[..8] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let header_len = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    if header_len > file_len - 16 {
        return Err(corrupt(format!("header length {header_len} past the end")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).at(path)?;
    let h: Header = serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let per_image = h.shape.numel() as u64;
    let expected = [h.train_len, h.test_len]
        .iter()
        .try_fold(16 + header_len, |acc, &n| {
            n.checked_mul(per_image + 2)?.checked_add(acc)
        })
        .ok_or_else(|| corrupt("lengths overflow".into()))?;
    if expected != file_len {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            what: "a cache file (header lengths and file size disagree)".into(),
            expected,
            found: file_len,
        });
    }
    let mut hasher = blake3::Hasher::new();
    let mut read_split = |n: u64| -> Result<Split, DataError> {
        let mut images = vec![0u8; (n * per_image) as usize];
        f.read_exact(&mut images).at(path)?;
        hasher.update(&images);
        let mut raw = vec![0u8; 2 * n as usize];
        f.read_exact(&mut raw).at(path)?;
        hasher.update(&raw);
        let labels: Vec<u16> = raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Split { images, labels })
    };
    let train = read_split(h.train_len)?;
    let test = read_split(h.test_len)?;
    let digest = hasher.finalize().to_hex();
    if !digest
        .as_str()
        .eq_ignore_ascii_case(h.payload_blake3.trim())
    {
        return Err(corrupt(format!(
            "payload checksum mismatch (BLAKE3 {digest}, the header says {}): pixel or label bytes changed after the file was written",
            h.payload_blake3
        )));
    }
    let classes = h.classes.len();
    if let Some(&l) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= classes)
    {
        return Err(corrupt(format!("label {l} with {classes} classes")));
    }
    Ok(Dataset {
        name: h.name,
        classes: h.classes,
        shape: h.shape,
        train,
        test,
    })
}

/// The data set from `cache_dir`'s file for this source if it is usable, else built and stored.
/// Problems with the cache never fail the load: they come back as warnings.
pub fn load_or_build(
    cache_dir: Option<&Path>,
    kind: &str,
    image_size: Option<usize>,
    content: &Path,
    build: impl FnOnce() -> Result<Dataset, DataError>,
) -> Result<Loaded, DataError> {
    let built = |dataset, cache_file, warnings| Loaded {
        dataset,
        from_cache: false,
        cache_file,
        warnings,
    };
    let Some(dir) = cache_dir else {
        return Ok(built(build()?, None, Vec::new()));
    };
    let key = match cache_key(kind, image_size, content) {
        Ok(k) => k,
        // The loader names an unreadable source better than the hasher does.
        Err(e) => {
            let ds = build()?;
            return Ok(built(
                ds,
                None,
                vec![format!("data-set cache not used: {e}")],
            ));
        }
    };
    let file = cache_file(dir, &key);
    let mut warnings = Vec::new();
    // What writes interrupted by a kill left (never a live process's temporary file). A folder
    // that cannot be cleaned cannot be written either: the write below says so, once.
    if let Some(datasets) = file.parent() {
        let _ = files::clean_stale_temps(datasets);
    }
    match read(&file) {
        Ok(dataset) => {
            return Ok(Loaded {
                dataset,
                from_cache: true,
                cache_file: Some(file),
                warnings,
            })
        }
        // No cache file yet (or no cache folder: the write below says why, once).
        Err(e)
            if matches!(
                e.io_kind(),
                Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
            ) => {}
        Err(e) => warnings.push(format!("ignored unusable cache file ({e}); rebuilding it")),
    }
    let dataset = build()?;
    match write(&file, &dataset) {
        Ok(()) => Ok(built(dataset, Some(file), warnings)),
        Err(e) => {
            warnings.push(format!(
                "data-set cache not written, the next run decodes the data again: {e}"
            ));
            Ok(built(dataset, None, warnings))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synthetic, DataSource, LoadOptions};
    use std::fs;

    fn small() -> Dataset {
        let mut ds = synthetic::generate(7, 3, 1);
        ds.name = "small".into();
        ds
    }

    #[test]
    fn round_trip_and_documented_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("datasets/x.bin");
        let ds = small();
        write(&p, &ds).unwrap();
        assert_eq!(read(&p).unwrap(), ds);

        let bytes = fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"CPTLAB01");
        let h = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[16..16 + h]).unwrap();
        assert_eq!(header["train_len"], 7);
        assert_eq!(header["shape"]["channels"], 3);
        let o = 16 + h;
        assert_eq!(&bytes[o..o + 7 * 3072], &ds.train.images[..]);
        let lo = o + 7 * 3072;
        assert_eq!(bytes[lo + 2..lo + 4], ds.train.labels[1].to_le_bytes());
        assert_eq!(bytes.len(), o + 10 * (3072 + 2));
        // Only the final file is left behind.
        assert_eq!(
            fs::read_dir(tmp.path().join("datasets")).unwrap().count(),
            1
        );
    }

    #[test]
    fn truncated_or_garbled_files_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.bin");
        write(&p, &small()).unwrap();
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(read(&p).unwrap_err(), DataError::WrongSize { .. }));
        fs::write(&p, &bytes[..5]).unwrap();
        assert!(matches!(read(&p).unwrap_err(), DataError::WrongSize { .. }));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        fs::write(&p, &bad).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("magic"));
        let mut bad = bytes.clone();
        bad[16] = b'#';
        fs::write(&p, &bad).unwrap();
        assert!(matches!(read(&p).unwrap_err(), DataError::Format { .. }));
        let mut bad = bytes;
        let last = bad.len() - 1;
        bad[last] = 0xff;
        fs::write(&p, &bad).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("checksum"));
        // A label out of range in a file whose checksum matches.
        let mut ds = small();
        ds.train.labels[0] = 99;
        write(&p, &ds).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("label 99"));
    }

    #[test]
    fn a_flipped_pixel_is_detected_and_the_cache_rebuilt_with_one_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        crate::data::cifar_binary::tests::write_cifar10(&src, 2);
        let source = DataSource::detect(src.to_str().unwrap()).unwrap();
        let opts = LoadOptions {
            seed: 0,
            image_size: None,
            cache_dir: Some(tmp.path().join("cache")),
        };
        let first = crate::data::load_with_report(&source, &opts).unwrap();
        let file = first.cache_file.clone().unwrap();
        // One pixel byte in the middle of the training images, same length.
        let mut bytes = fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&file, &bytes).unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let second = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(!second.from_cache);
        assert_eq!(second.dataset, first.dataset);
        assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
        assert!(
            second.warnings[0].contains("checksum") && second.warnings[0].contains("rebuilding"),
            "{:?}",
            second.warnings
        );
        let third = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(third.from_cache && third.warnings.is_empty());
    }

    #[test]
    fn an_unwritable_cache_says_so_once_and_stale_temps_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        crate::data::cifar_binary::tests::write_cifar10(&src, 1);
        let source = DataSource::detect(src.to_str().unwrap()).unwrap();
        let not_a_dir = tmp.path().join("cache-file");
        fs::write(&not_a_dir, "x").unwrap();
        let opts = LoadOptions {
            seed: 0,
            image_size: None,
            cache_dir: Some(not_a_dir.clone()),
        };
        let l = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(l.cache_file.is_none());
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("not written")
                && l.warnings[0].contains(&format!("{} is not a directory", not_a_dir.display())),
            "{:?}",
            l.warnings
        );

        // A temporary file of a write that was killed is removed on the next load.
        let cache = tmp.path().join("cache");
        let opts = LoadOptions {
            cache_dir: Some(cache.clone()),
            ..opts
        };
        let datasets = cache.join("datasets");
        fs::create_dir_all(&datasets).unwrap();
        let stale = datasets.join(format!("{}{}-3-0-x.bin", files::TEMP_PREFIX, u32::MAX));
        fs::write(&stale, b"half a cache file").unwrap();
        crate::data::load_with_report(&source, &opts).unwrap();
        assert!(!stale.exists());
        assert_eq!(fs::read_dir(&datasets).unwrap().count(), 1);
    }

    #[test]
    fn keys_follow_content_kind_and_size() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir_all(d.join("a")).unwrap();
        fs::write(d.join("a/1"), "x").unwrap();
        fs::write(d.join("b"), "y").unwrap();
        let k = cache_key("k", None, &d).unwrap();
        assert_eq!(k.len(), 64);
        assert_eq!(k, cache_key("k", None, &d).unwrap());
        assert_ne!(k, cache_key("k2", None, &d).unwrap());
        assert_ne!(k, cache_key("k", Some(32), &d).unwrap());
        fs::write(d.join("a/1"), "z").unwrap();
        let k2 = cache_key("k", None, &d).unwrap();
        assert_ne!(k, k2);
        fs::rename(d.join("b"), d.join("c")).unwrap();
        assert_ne!(k2, cache_key("k", None, &d).unwrap());
    }

    #[test]
    fn load_uses_rebuilds_and_reports_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        crate::data::cifar_binary::tests::write_cifar10(&src, 2);
        let source = DataSource::detect(src.to_str().unwrap()).unwrap();
        let opts = LoadOptions {
            seed: 0,
            image_size: None,
            cache_dir: Some(tmp.path().join("cache")),
        };
        let first = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(!first.from_cache && first.warnings.is_empty());
        let file = first.cache_file.clone().unwrap();
        assert!(file.starts_with(tmp.path().join("cache/datasets")));
        let second = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(second.from_cache);
        assert_eq!(second.dataset, first.dataset);

        // A truncated file is ignored with a warning and rewritten.
        let len = fs::metadata(&file).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let third = crate::data::load_with_report(&source, &opts).unwrap();
        assert!(!third.from_cache);
        assert_eq!(third.warnings.len(), 1, "{:?}", third.warnings);
        assert!(third.warnings[0].contains("rebuilding"));
        assert_eq!(third.dataset, first.dataset);
        assert_eq!(fs::metadata(&file).unwrap().len(), len);
        assert!(
            crate::data::load_with_report(&source, &opts)
                .unwrap()
                .from_cache
        );

        // Synthetic data is never cached.
        let syn = DataSource::Synthetic {
            train: 10,
            test: 10,
        };
        let l = crate::data::load_with_report(&syn, &opts).unwrap();
        assert!(!l.from_cache && l.cache_file.is_none());
        assert_eq!(
            fs::read_dir(tmp.path().join("cache/datasets"))
                .unwrap()
                .count(),
            1
        );
    }
}
