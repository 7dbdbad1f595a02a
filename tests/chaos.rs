//! A short run of the chaos soak (`examples/chaos.rs`): 50 clients for 15 s against two `chat`
//! processes on their own `redis-server` (and `nats-server -js`), with cuts, one chat process
//! killed and restarted and one broker restart; the tool audits every event and exits non-zero
//! on an unsignalled gap, a duplicate, an order violation or counts that do not return to 0.
//!
//! Skips (prints why) when the broker is not installed, except under `CI`. No timing
//! assertion: the figures are printed, only the audit's verdict is checked.

mod support;

use std::{process::Stdio, time::Duration};

async fn smoke(broker: &str, program: &str) {
    if !support::external(
        program,
        support::program_available(program),
        &format!("apt-get install {program}, or run `bash .ci/setup` as root"),
    ) {
        return;
    }
    // The tool starts `chat` from its own directory.
    support::example_path("chat");
    let chaos = support::example_path("chaos");
    let run = tokio::process::Command::new(&chaos)
        .args(["--broker", broker])
        .args(["--clients", "50", "--secs", "15", "--rooms", "5"])
        .args(["--rate", "100", "--publishers", "4", "--cuts-per-sec", "5"])
        // One chat process killed at 7.5 s, one broker restart at 11.25 s.
        .args([
            "--kill-every",
            "15",
            "--broker-every",
            "15",
            "--drain",
            "15",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // The tool stops itself (secs + 150 s); this bound is only for a wedged build.
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the chaos tool ends by itself")
        .expect("the chaos tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "chaos on {broker} failed ({}): see the table above",
        output.status
    );
    assert!(
        stdout.contains("| chat process kills + restarts | 1 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| broker kills + restarts | 1 |"),
        "{stdout}"
    );
    assert!(stdout.contains("| **gaps unsignalled** | 0 |"), "{stdout}");
    assert!(stdout.contains("| result | PASS |"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke_redis() {
    smoke("redis", "redis-server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke_nats() {
    smoke("nats", "nats-server").await;
}
