//! `cptlab worker --check`: processes meet through libtorch's c10d store as torchrun-, srun-,
//! DeepSpeed- or hand-started ranks and agree on the config, or are refused with the reason:
//! a wrong or missing token, another config (naming the fields), a rank that never comes, a
//! port already in use. Training across processes is in tests/multiprocess.rs.
mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use common::Home;

const TOKEN: &str = "a-shared-secret-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_rank(
    home: &Home,
    rank: usize,
    world: usize,
    port: u16,
    token: &str,
    extra: &[&str],
) -> Child {
    home.std_cmd()
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("CPTLAB_RDZV_TOKEN", token)
        .args(["worker", "--check", "--preset", "quickstart"])
        .args(extra)
        // A test's own --rdzv-timeout replaces the default (clap takes one).
        .args(if extra.contains(&"--rdzv-timeout") {
            &[][..]
        } else {
            &["--rdzv-timeout", "20"][..]
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn config_hash(o: &Output) -> String {
    let t = text(o);
    t.lines()
        .find(|l| l.contains("rendezvous complete"))
        .unwrap_or_else(|| panic!("no rendezvous line: {t}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn three_processes_agree_on_the_config() {
    let home = Home::new();
    let port = free_port();
    let children: Vec<Child> = (0..3)
        .map(|r| spawn_rank(&home, r, 3, port, TOKEN, &[]))
        .collect();
    let outs = wait_all(children);
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let hashes: Vec<String> = outs.iter().map(config_hash).collect();
    assert!(hashes.iter().all(|h| h == &hashes[0]), "{hashes:?}");
    let t0 = text(&outs[0]);
    assert!(
        t0.contains("env: rank 0 of 3"),
        "the launcher is named: {t0}"
    );
    assert!(
        t0.contains("rank 2 (local 2) on "),
        "every rank lists its peers: {t0}"
    );
}

#[test]
fn a_rank_with_another_config_is_refused_naming_the_field() {
    let home = Home::new();
    let port = free_port();
    let r0 = spawn_rank(&home, 0, 3, port, TOKEN, &[]);
    let r1 = spawn_rank(&home, 1, 3, port, TOKEN, &[]);
    let r2 = spawn_rank(&home, 2, 3, port, TOKEN, &["--lr", "0.5"]);
    let outs = wait_all(vec![r0, r1, r2]);
    for (r, o) in outs.iter().enumerate() {
        assert!(!o.status.success(), "rank {r}: {}", text(o));
        let t = text(o);
        assert!(
            t.contains("configuration mismatch") && t.contains("optimizer.lr = 0.5 on rank 2"),
            "rank {r} is told which field differs: {t}"
        );
    }
}

#[test]
fn a_wrong_token_is_refused_and_a_missing_one_explained() {
    let home = Home::new();
    let port = free_port();
    let r0 = spawn_rank(&home, 0, 2, port, TOKEN, &[]);
    let r1 = spawn_rank(&home, 1, 2, port, "another-secret-token", &[]);
    let outs = wait_all(vec![r0, r1]);
    let (o0, o1) = (&outs[0], &outs[1]);
    assert!(!o1.status.success(), "{}", text(o1));
    assert!(!o0.status.success(), "{}", text(o0));
    assert!(text(o0).contains("rank 1"), "{}", text(o0));
    assert!(text(o0).contains("failed authentication"), "{}", text(o0));
    assert!(text(o1).contains("the tokens differ"), "{}", text(o1));
    let out = home
        .cmd()
        .env_remove("CPTLAB_RDZV_TOKEN")
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .args(["worker", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("CPTLAB_RDZV_TOKEN is not set"),
        "{}",
        text(&out)
    );
}

#[test]
fn ranks_that_never_come_are_named_on_the_ranks_that_did() {
    let home = Home::new();
    let port = free_port();
    let extra = ["--rdzv-timeout", "3"];
    let r0 = spawn_rank(&home, 0, 4, port, TOKEN, &extra);
    let r2 = spawn_rank(&home, 2, 4, port, TOKEN, &extra);
    let outs = wait_all(vec![r0, r2]);
    for o in &outs {
        assert!(!o.status.success());
        let t = text(o);
        assert!(t.contains("ranks 1, 3 did not join within 3 s"), "{t}");
    }
}

#[test]
fn a_port_in_use_is_named() {
    let home = Home::new();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = spawn_rank(&home, 0, 2, port, TOKEN, &[])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains(&format!("port {port} (MASTER_PORT) is already in use")),
        "{t}"
    );
}

#[test]
fn deepspeeds_local_rank_argument_is_accepted() {
    let home = Home::new();
    let port = free_port();
    // DeepSpeed's launcher: RANK, LOCAL_RANK, WORLD_SIZE, CROSS_RANK, LOCAL_SIZE and an
    // argument --local_rank=N.
    let rank = |r: usize| {
        home.std_cmd()
            .env("RANK", r.to_string())
            .env("LOCAL_RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .env("CROSS_RANK", "0")
            .env("CROSS_SIZE", "1")
            .env("LOCAL_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("CPTLAB_RDZV_TOKEN", TOKEN)
            // `deepspeed --no_python cptlab worker …` runs `cptlab --local_rank=N worker …`:
            // rank 0 has it where the launcher puts it, rank 1 after the subcommand.
            .args(if r == 0 {
                vec![format!("--local_rank={r}"), "worker".into()]
            } else {
                vec!["worker".into(), format!("--local_rank={r}")]
            })
            .args(["--check", "--rdzv-timeout", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let outs = wait_all(vec![rank(0), rank(1)]);
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
        assert!(text(o).contains("deepspeed: rank"), "{}", text(o));
    }
    // A --local_rank that contradicts LOCAL_RANK is an error naming both.
    let out = home
        .cmd()
        .env("RANK", "0")
        .env("LOCAL_RANK", "0")
        .env("WORLD_SIZE", "1")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("CPTLAB_RDZV_TOKEN", TOKEN)
        .args(["worker", "--check", "--local_rank=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--local_rank=1 disagrees with LOCAL_RANK=0"),
        "{}",
        text(&out)
    );
    // Before another subcommand it is a usage error that says where it belongs.
    let out = home
        .cmd()
        .args(["--local_rank=0", "runs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is for `cptlab worker`"),
        "{}",
        text(&out)
    );
}

#[test]
fn torchruns_agent_store_is_joined_not_fought_over() {
    // The issue this layout fixes: torchrun's agent already serves a TCPStore on the master
    // port; every worker must be its client.
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    if !torchrun.exists() {
        eprintln!("skipped: no .venv/bin/torchrun");
        return;
    }
    let home = Home::new();
    let out = std::process::Command::new(torchrun)
        .env("CPTLAB_RUNS_DIR", home.runs())
        .env("CPTLAB_PRESETS_DIR", home.dir.path().join("presets"))
        .env("CPTLAB_CACHE_DIR", home.dir.path().join("cache"))
        .env("CPTLAB_RDZV_TOKEN", TOKEN)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(assert_cmd::cargo::cargo_bin("cptlab"))
        .args(["worker", "--check", "--rdzv-timeout", "30"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("rendezvous complete").count(), 2, "{t}");
    assert!(t.contains("the agent's store at"), "{t}");
    assert!(t.contains("under /worker/attempt_0"), "{t}");
}
