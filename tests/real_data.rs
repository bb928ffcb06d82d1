//! The real CIFAR-10 (JPEG tree in ../shared/data): `lenet-sgd` for 3 epochs reaches ≥ 50%.
//! `.ci/run` and the Makefile pass the archive's path in CPTLAB_TEST_CIFAR10.
mod common;

use common::{events, of_kind, Home};

#[test]
fn lenet_sgd_learns_cifar10_in_three_epochs() {
    let data = std::env::var("CPTLAB_TEST_CIFAR10")
        .expect("CPTLAB_TEST_CIFAR10 must point at cifar10-jpg.tar.gz (make test sets it)");
    assert!(
        std::path::Path::new(&data).is_file(),
        "{data} does not exist"
    );
    let home = Home::new();
    let out = home
        .cmd()
        .args([
            "run",
            "--preset",
            "lenet-sgd",
            "--data",
            &data,
            "--epochs",
            "3",
            // Pinned: the intra-op thread count changes float summation order.
            "--threads",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    let started = of_kind(&ev, "started")[0];
    assert_eq!(started["train_size"], 50_000);
    assert_eq!(started["test_size"], 10_000);
    assert_eq!(started["classes"][0], "airplane");
    let evals = of_kind(&ev, "eval");
    assert_eq!(evals.len(), 3);
    let acc = evals[2]["test_acc"].as_f64().unwrap();
    eprintln!(
        "lenet-sgd 3 epochs: test acc per epoch {:?}",
        evals
            .iter()
            .map(|e| e["test_acc"].as_f64().unwrap())
            .collect::<Vec<_>>()
    );
    assert!(acc >= 0.50, "test accuracy after 3 epochs: {acc}");
}
