//! The bad-input catalogue: every case fails with a clear message naming the file, field or
//! value, and leaves nothing behind (no run directory, no half-written file).
mod common;

use std::io::Write;
use std::path::Path;

use common::Home;

/// Runs `cptlab` with `args`, expects failure, returns stderr; checks no run was created.
fn fails(home: &Home, args: &[&str]) -> String {
    let out = home.cmd().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail; stderr: {err}");
    assert!(
        home.run_dirs().is_empty(),
        "{args:?} left a run directory behind"
    );
    err
}

fn assert_has(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "expected {p:?} in: {err}");
    }
}

#[test]
fn config_errors_name_the_field_and_what_was_expected() {
    let home = Home::new();
    assert_has(
        &fails(&home, &["run", "--preset", "nope"]),
        &["no preset named \"nope\"", "quickstart"],
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"x\"\n[model]\nkind = \"lenet\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nbatch_size = 8\nepochs = 1\nwarmup = 3\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert_has(
        &fails(&home, &["run", "--config", f]),
        &["bad.toml", "unknown field `warmup`", "line 10"],
    );

    std::fs::write(&file, "name = \"x\"\n[model]\nkind = \"resnet19\"\n").unwrap();
    assert_has(
        &fails(&home, &["run", "--config", f]),
        &["bad.toml", "resnet19"],
    );

    assert_has(
        &fails(&home, &["run", "--batch-size", "0"]),
        &["train.batch_size = 0", "at least 1"],
    );
    assert_has(
        &fails(&home, &["run", "--set", "train.batch_size=\"big\""]),
        &["train.batch_size"],
    );
    assert_has(
        &fails(&home, &["run", "--set", "train.nope=1"]),
        &["unknown field `nope`"],
    );
    assert_has(&fails(&home, &["run", "--set", "noequals"]), &["KEY=VALUE"]);
    assert_has(
        &fails(&home, &["run", "--set", "train.grad_accum=3"]),
        &["train.grad_accum = 3", "divisor"],
    );
    assert_has(&fails(&home, &["run", "--optimizer", "lion"]), &["lion"]);
    assert_has(
        &fails(
            &home,
            &[
                "run",
                "--set",
                "lr_schedule.kind=\"cyclic_lr\"",
                "--set",
                "lr_schedule.max_lr=0.0001",
            ],
        ),
        &["max_lr"],
    );
}

#[test]
fn device_errors_are_clear() {
    let home = Home::new();
    assert_has(
        &fails(&home, &["run", "--devices", "gpu"]),
        &["\"gpu\" is not a device"],
    );
    if !home
        .cmd()
        .arg("doctor")
        .output()
        .unwrap()
        .stdout
        .windows(20)
        .any(|w| w == b"cuda available: true")
    {
        assert_has(
            &fails(&home, &["run", "--devices", "cuda:0"]),
            &["use --devices cpu"],
        );
    }
}

fn cifar_record(label: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend(std::iter::repeat_n(7u8, 3072));
    r
}

fn write_cifar10(root: &Path, train_records: usize, truncate_last: bool, bad_label: bool) {
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(d.join("batches.meta.txt"), names).unwrap();
    for i in 1..=5 {
        let mut bytes: Vec<u8> = (0..train_records)
            .flat_map(|k| cifar_record((k % 10) as u8))
            .collect();
        if i == 3 && truncate_last {
            bytes.truncate(bytes.len() - 100);
        }
        if i == 2 && bad_label {
            bytes[0] = 42;
        }
        std::fs::write(d.join(format!("data_batch_{i}.bin")), bytes).unwrap();
    }
    let test: Vec<u8> = (0..train_records)
        .flat_map(|k| cifar_record((k % 10) as u8))
        .collect();
    std::fs::write(d.join("test_batch.bin"), test).unwrap();
}

#[test]
fn data_errors_name_the_file_and_the_problem() {
    let home = Home::new();
    assert_has(
        &fails(&home, &["run", "--data", "/no/such/place"]),
        &["/no/such/place"],
    );

    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown");
    std::fs::create_dir_all(unknown.join("stuff")).unwrap();
    assert_has(
        &fails(&home, &["run", "--data", unknown.to_str().unwrap()]),
        &["unknown"],
    );

    let truncated = dir.path().join("truncated");
    write_cifar10(&truncated, 20, true, false);
    assert_has(
        &fails(&home, &["run", "--data", truncated.to_str().unwrap()]),
        &["data_batch_3.bin", "truncated"],
    );

    let bad_label = dir.path().join("badlabel");
    write_cifar10(&bad_label, 20, false, true);
    assert_has(
        &fails(&home, &["run", "--data", bad_label.to_str().unwrap()]),
        &["data_batch_2.bin", "42"],
    );

    let folders = dir.path().join("folders");
    for split in ["train", "test"] {
        for class in ["cat", "dog"] {
            std::fs::create_dir_all(folders.join(split).join(class)).unwrap();
            let img = image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]));
            img.save(folders.join(split).join(class).join("a.png"))
                .unwrap();
        }
    }
    let broken = folders.join("train/dog/broken.jpg");
    std::fs::File::create(&broken)
        .unwrap()
        .write_all(b"not a jpeg")
        .unwrap();
    assert_has(
        &fails(&home, &["run", "--data", folders.to_str().unwrap()]),
        &["broken.jpg"],
    );
    std::fs::remove_file(&broken).unwrap();
    std::fs::create_dir_all(folders.join("train/empty")).unwrap();
    assert_has(
        &fails(&home, &["run", "--data", folders.to_str().unwrap()]),
        &["empty"],
    );
}

#[test]
fn an_input_file_that_is_a_directory_says_so() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar");
    write_cifar10(&root, 4, false, false);
    let test_batch = root.join("cifar-10-batches-bin/test_batch.bin");
    std::fs::remove_file(&test_batch).unwrap();
    std::fs::create_dir(&test_batch).unwrap();
    let err = fails(&home, &["run", "--data", root.to_str().unwrap()]);
    assert_has(
        &err,
        &[
            &test_batch.display().to_string(),
            "it is a directory, not a file",
        ],
    );
    assert!(!err.contains("truncated"), "{err}");
}

/// The decoded-data cache carries a checksum of its pixels and labels: a flipped byte is found,
/// the cache rebuilt, and the run's log says so once.
#[test]
fn a_corrupted_data_cache_is_rebuilt_and_the_log_says_so() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar");
    write_cifar10(&root, 4, false, false);
    let data = root.to_str().unwrap();
    let args = ["run", "--data", data, "--epochs", "1", "--batch-size", "4"];
    let ok = |args: &[&str]| {
        let out = home.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    ok(&args);
    let datasets = home.dir.path().join("cache/datasets");
    let file = std::fs::read_dir(&datasets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = ok(&args);
    assert_eq!(err.matches("checksum mismatch").count(), 1, "{err}");
    assert!(
        err.contains("warning:") && err.contains("rebuilding"),
        "{err}"
    );
    assert!(!ok(&args).contains("warning"));
}
