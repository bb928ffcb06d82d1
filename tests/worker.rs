//! `cptlab worker`: several processes rendezvous on loopback like torchrun-started ranks and
//! agree on the config (NCCL training itself needs GPUs; CI checks the handshake).
mod common;

use std::process::{Child, Output, Stdio};

use common::Home;

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
        .args([
            "worker",
            "--check",
            "--rdzv-timeout",
            "20",
            "--preset",
            "quickstart",
        ])
        .args(extra)
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

#[test]
fn three_processes_agree_on_the_config() {
    let home = Home::new();
    let port = free_port();
    let token = "a-shared-secret-token";
    let children: Vec<Child> = (0..3)
        .map(|r| spawn_rank(&home, r, 3, port, token, &[]))
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let hashes: Vec<String> = outs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", text(o));
            let t = text(o);
            t.lines()
                .find(|l| l.contains("rendezvous complete"))
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(hashes.iter().all(|h| h == &hashes[0]), "{hashes:?}");
    assert!(
        text(&outs[0]).contains("rank 2"),
        "rank 0 lists its peers: {}",
        text(&outs[0])
    );
}

#[test]
fn a_rank_with_another_config_is_refused() {
    let home = Home::new();
    let port = free_port();
    let token = "a-shared-secret-token";
    let r0 = spawn_rank(&home, 0, 2, port, token, &[]);
    let r1 = spawn_rank(&home, 1, 2, port, token, &["--lr", "0.5"]);
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    assert!(!o1.status.success());
    assert!(!o0.status.success());
    assert!(text(&o1).to_lowercase().contains("config"), "{}", text(&o1));
}

#[test]
fn a_wrong_token_is_refused_and_a_missing_one_explained() {
    let home = Home::new();
    let port = free_port();
    let r0 = spawn_rank(&home, 0, 2, port, "a-shared-secret-token", &[]);
    let r1 = spawn_rank(&home, 1, 2, port, "another-secret-token", &[]);
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    assert!(!o1.status.success(), "{}", text(&o1));
    assert!(!o0.status.success(), "{}", text(&o0));
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
    assert!(text(&out).contains("CPTLAB_RDZV_TOKEN"), "{}", text(&out));
}
