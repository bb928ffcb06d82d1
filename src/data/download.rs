//! Fetches the official CIFAR binary archives for real users. Nothing else may depend on it: the
//! build and test machines have no network, and a local copy passed with `--data` always works.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use super::error::DataError;
use super::CifarVariant;
use crate::files;

pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const CIFAR100_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
pub const CIFAR100_MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";

/// Short, so a machine without network fails in seconds rather than minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per read, so a stalled transfer fails without capping a slow but live one.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The user's cache directory for cptlab (downloads and decoded data sets).
pub fn default_cache_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "cptlab").map(|d| d.cache_dir().to_path_buf())
}

fn url_and_md5(v: CifarVariant) -> (&'static str, &'static str) {
    match v {
        CifarVariant::Cifar10 => (CIFAR10_URL, CIFAR10_MD5),
        CifarVariant::Cifar100 => (CIFAR100_URL, CIFAR100_MD5),
    }
}

/// Where the archive of `v` is kept: `cache_dir/downloads/<official file name>`.
pub fn archive_path(v: CifarVariant, cache_dir: &Path) -> PathBuf {
    let (url, _) = url_and_md5(v);
    let name = url.rsplit('/').next().unwrap_or(url);
    cache_dir.join("downloads").join(name)
}

/// The archive of `v`, downloaded first unless already there. Only a file whose MD5 matched is
/// ever renamed into place, so an existing one is not checked again.
pub fn fetch(v: CifarVariant, cache_dir: &Path) -> Result<PathBuf, DataError> {
    let dest = archive_path(v, cache_dir);
    if !dest.is_file() {
        let (url, md5) = url_and_md5(v);
        fetch_url(url, md5, &dest)?;
    }
    Ok(dest)
}

/// Downloads `url` to `dest` with a progress bar on stderr, checking its MD5.
pub fn fetch_url(url: &str, expected_md5: &str, dest: &Path) -> Result<(), DataError> {
    let failed = |message: String| DataError::Download {
        url: url.to_string(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(CONNECT_TIMEOUT * 3))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let bar = match response.body().content_length() {
        Some(len) => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_message(format!(
        "downloading {}",
        url.rsplit('/').next().unwrap_or(url)
    ));
    let reader = bar.wrap_read(response.into_body().into_reader());
    let result = save_verified(reader, url, dest, expected_md5);
    bar.finish_and_clear();
    result
}

/// Copies `reader` into `dest` atomically (a temporary file in the same folder, renamed once
/// complete) if its MD5 is `expected_md5`; otherwise leaves nothing behind. `source` names the
/// origin in errors.
pub fn save_verified(
    mut reader: impl Read,
    source: &str,
    dest: &Path,
    expected_md5: &str,
) -> Result<(), DataError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    files::create_dir_all(dir).map_err(DataError::File)?;
    // An earlier download killed half-way left its temporary file here.
    let _ = files::clean_stale_temps(dir);
    // Removed on every early return below: a failed download leaves nothing behind.
    let mut tmp = files::AtomicFile::create(dest).map_err(DataError::File)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DataError::Download {
                    url: source.to_string(),
                    message: e.to_string(),
                })
            }
        };
        md5.update(&buf[..k]);
        tmp.write_all(&buf[..k])
            .map_err(|e| DataError::File(tmp.error(e)))?;
    }
    let got = hex::encode(md5.finalize());
    if !got.eq_ignore_ascii_case(expected_md5) {
        return Err(DataError::Checksum {
            path: PathBuf::from(source),
            expected: expected_md5.to_string(),
            got,
        });
    }
    tmp.commit().map_err(DataError::File)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};

    #[test]
    fn md5_mismatch_leaves_nothing_and_a_match_lands() {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("local.tar.gz");
        fs::write(&local, b"not really an archive").unwrap();
        let dest = tmp.path().join("cache/downloads/cifar-10-binary.tar.gz");
        let src = local.to_string_lossy().into_owned();

        let e = save_verified(File::open(&local).unwrap(), &src, &dest, CIFAR10_MD5).unwrap_err();
        match &e {
            DataError::Checksum {
                path,
                expected,
                got,
            } => {
                assert_eq!(path, &local);
                assert_eq!(expected, CIFAR10_MD5);
                assert_eq!(got.len(), 32);
            }
            e => panic!("{e}"),
        }
        assert!(e.to_string().contains("MD5"));
        assert!(!dest.exists());
        assert_eq!(
            fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            0,
            "temp file left"
        );

        let right = hex::encode(Md5::digest(b"not really an archive"));
        save_verified(File::open(&local).unwrap(), &src, &dest, &right).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"not really an archive");
    }

    #[test]
    fn unreachable_server_fails_fast_and_says_how_to_pass_a_local_copy() {
        // A loopback port nobody listens on: refused at once, no network involved.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("x.tar.gz");
        let t = std::time::Instant::now();
        let e = fetch_url(
            &format!("http://127.0.0.1:{port}/x.tar.gz"),
            CIFAR10_MD5,
            &dest,
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        let s = e.to_string();
        assert!(s.contains("download of") && s.contains("--data"), "{s}");
        assert!(!dest.exists());
    }

    #[test]
    fn archives_live_under_the_cache_dir() {
        let p = archive_path(CifarVariant::Cifar100, Path::new("/c"));
        assert_eq!(p, Path::new("/c/downloads/cifar-100-binary.tar.gz"));
    }
}
