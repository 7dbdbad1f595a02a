//! Shared helpers for integration tests: `mod support;` from any `tests/*.rs`.
//!
//! * [`external`] and the `require_*` helpers implement the rule for tests that
//!   need a piece from outside the Rust toolchain (Debian's chromium, the npm
//!   packages in `node_modules`, python's `httpx-sse`): when it is missing the
//!   test is skipped with a printed reason, unless `CI` is set, in which case
//!   it fails. `bash .ci/setup` (as root) installs all of them.
//! * [`run_node`] / [`run_python`] run a script from `tests/js/` or `tests/py/`
//!   with a hard timeout and capture its output.
//! * [`serve`] serves an `axum::Router` on an ephemeral loopback port.
#![allow(dead_code)]

pub mod nats;
pub mod redis;
pub mod stress;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::process::Command;
use tokio::time::timeout;

/// Default bound for a client script (node / python) run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for a headless-browser script run (chromium start-up is slow
/// on a loaded 2-core machine).
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// How to install every external test dependency at once.
pub const SETUP_HINT: &str = "run `bash .ci/setup` as root";

// ---------------------------------------------------------------------------
// Skip-or-fail rule
// ---------------------------------------------------------------------------

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    match std::env::var_os("CI") {
        None => false,
        Some(v) => {
            let v = v.to_string_lossy().trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false")
        }
    }
}

/// Gate for a test that needs an external piece.
///
/// Returns `true` when `available`. Otherwise: under CI (`CI` set) it panics
/// with a clear message; elsewhere it prints
/// `skipping: <what> not available (<how_to_get>)` to stderr and returns
/// `false`, and the test should return early:
///
/// ```ignore
/// if !support::external("chromium", support::chromium_available(), "apt-get install chromium") {
///     return;
/// }
/// ```
pub fn external(what: &str, available: bool, how_to_get: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!(
            "{what} not available ({how_to_get}); CI is set, so a missing test \
             dependency is a failure, not a skip (.ci/setup should have installed it)"
        );
    }
    report_skip(&format!("{what} not available ({how_to_get})"));
    false
}

/// Says that the running test skips, where a reader sees it: straight to the terminal's
/// stderr (libtest captures only `eprintln!`, so this is not hidden by the harness), and as a
/// line in `$TOWER_SSE_SKIP_LOG` when set, which `scripts/test` lists at the end of the run.
pub fn report_skip(reason: &str) {
    use std::io::Write as _;

    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _hash)| name.to_owned())
        })
        .unwrap_or_default();
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let line = format!("{binary}::{test}: {reason}");
    let _ = writeln!(std::io::stderr(), "skipping {line}");
    if let Some(log) = std::env::var_os("TOWER_SSE_SKIP_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// The `data:` lines of an encoded event, joined with LF.
pub fn data(event: &tower_sse::EncodedEvent) -> String {
    std::str::from_utf8(event.as_bytes())
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate root (`CARGO_MANIFEST_DIR`).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the chromium binary: `$CHROMIUM` if set, else `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    match std::env::var_os("CHROMIUM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/usr/bin/chromium"),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether the chromium binary ([`chromium_path`]) exists and is executable.
pub fn chromium_available() -> bool {
    is_executable(&chromium_path())
}

/// Whether `program --version` runs successfully (looked up on `PATH`).
pub fn program_available(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether `$CARGO_MANIFEST_DIR/node_modules/<pkg>` is installed.
pub fn node_modules_available(pkg: &str) -> bool {
    manifest_dir()
        .join("node_modules")
        .join(pkg)
        .join("package.json")
        .is_file()
}

/// Whether `python3 -c "import <module>"` succeeds.
pub fn python_module_available(module: &str) -> bool {
    std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import {module}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// [`external`] gate for `node` plus one npm package from `package.json`.
pub fn require_node_package(pkg: &str) -> bool {
    external("node", program_available("node"), "install Node.js 20+")
        && external(
            &format!("npm package `{pkg}` (node_modules/{pkg})"),
            node_modules_available(pkg),
            "run `npm ci` in the crate root, or `bash .ci/setup` as root",
        )
}

/// [`external`] gate for the headless browser tests: chromium, node and
/// `playwright-core`.
pub fn require_chromium() -> bool {
    external(
        &format!("chromium ({})", chromium_path().display()),
        chromium_available(),
        "`apt-get install chromium`, or set CHROMIUM=/path/to/chromium; or `bash .ci/setup` as root",
    ) && require_node_package("playwright-core")
}

/// [`external`] gate for a python module (e.g. `httpx_sse`).
pub fn require_python_module(module: &str, pip_name: &str) -> bool {
    external(
        &format!("python module `{module}`"),
        python_module_available(module),
        &format!("`python3 -m pip install {pip_name}`, or `bash .ci/setup` as root"),
    )
}

// ---------------------------------------------------------------------------
// Running client scripts
// ---------------------------------------------------------------------------

/// What a script run produced.
#[derive(Debug)]
pub struct ScriptOutput {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the script was killed on timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptOutput {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Panic (printing the command, status, stdout and stderr) unless the
    /// script succeeded. Returns `self` for chaining.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        if !self.success() {
            panic!("script failed:\n{self}");
        }
        self
    }

    /// Every stdout line that parses as JSON (other lines are ignored).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{') || l.starts_with('['))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The single JSON line on stdout; panics (with the full output) otherwise.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let mut lines = self.json_lines();
        if lines.len() != 1 {
            panic!("expected exactly one JSON line on stdout:\n{self}");
        }
        lines.pop().unwrap()
    }
}

impl fmt::Display for ScriptOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        match (self.timed_out, self.status) {
            (true, _) => writeln!(f, "status: killed after timeout")?,
            (false, Some(s)) => writeln!(f, "status: {s}")?,
            (false, None) => writeln!(f, "status: unknown")?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Run `node $CARGO_MANIFEST_DIR/tests/js/<script> <args…>` with the crate root
/// as working directory (so `node_modules` resolves) and `CHROMIUM` set to
/// [`chromium_path`] unless already set. The script (and its process group,
/// e.g. a browser it launched) is killed after `timeout`.
pub async fn run_node(script: &str, args: &[&str], timeout: Duration) -> ScriptOutput {
    let path = manifest_dir().join("tests").join("js").join(script);
    let mut cmd = Command::new("node");
    cmd.arg(&path).args(args);
    if std::env::var_os("CHROMIUM").is_none() {
        cmd.env("CHROMIUM", chromium_path());
    }
    run_script(cmd, timeout).await
}

/// Run `python3 $CARGO_MANIFEST_DIR/tests/py/<script> <args…>`, like
/// [`run_node`].
pub async fn run_python(script: &str, args: &[&str], timeout: Duration) -> ScriptOutput {
    let path = manifest_dir().join("tests").join("py").join(script);
    let mut cmd = Command::new("python3");
    cmd.arg(&path).args(args).env("PYTHONUNBUFFERED", "1");
    run_script(cmd, timeout).await
}

/// Kills a whole process group when dropped (the test panicked or timed out),
/// so a browser launched by a script never outlives the test.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn kill_now(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill_now();
    }
}

async fn run_script(mut cmd: Command, timeout: Duration) -> ScriptOutput {
    let command = {
        let std_cmd = cmd.as_std();
        let mut parts: Vec<OsString> = vec![std_cmd.get_program().to_owned()];
        parts.extend(std_cmd.get_args().map(|a| a.to_owned()));
        parts
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    cmd.current_dir(manifest_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn `{command}`: {e}"));
    let mut killer = GroupKiller(child.id());

    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf).await;
        buf
    });
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });

    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (
            Some(status.unwrap_or_else(|e| panic!("waiting for `{command}`: {e}"))),
            false,
        ),
        Err(_) => {
            killer.kill_now();
            let _ = child.kill().await;
            (None, true)
        }
    };
    // Anything left in the group (a browser the script failed to close) would
    // keep the pipes open; the script is done, so end it.
    killer.kill_now();

    let collect = |task: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(buf)) => String::from_utf8_lossy(&buf).into_owned(),
            _ => String::from("<output not collected>"),
        }
    };
    let stdout = collect(out_task).await;
    let mut stderr = collect(err_task).await;
    if timed_out {
        stderr.push_str(&format!("\n<killed after {timeout:?}>"));
    }
    ScriptOutput {
        command,
        status,
        timed_out,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------
// Serving a router
// ---------------------------------------------------------------------------

/// A server started by [`serve`]; aborts the server task when dropped.
pub struct ServerHandle {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT<path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        url(self.addr, path)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `http://<addr><path>`; `path` should start with `/`.
/// Polls `check` (every 20 ms, for at most 10 s) until it holds: for states that cannot be
/// awaited (counts, lists on another process). Panics with `what` and the last state.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check().await {
            Ok(()) => return,
            Err(state) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still not true after 10 s: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Serve `router` on `127.0.0.1:0` in a spawned task (axum::serve, HTTP/1
/// and HTTP/2). Keep the handle alive for as long as the server is needed.
pub async fn serve(router: axum::Router) -> (SocketAddr, ServerHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("test server on {addr} stopped: {e}");
        }
    });
    (addr, ServerHandle { addr, task })
}

// ---------------------------------------------------------------------------
// Example binaries
// ---------------------------------------------------------------------------

/// A running example binary, killed on drop if the test did not stop it.
pub struct Example {
    child: Child,
    base: String,
}

impl Example {
    /// Starts `target/<profile>/examples/<name>` on `127.0.0.1:0` and reads the
    /// `listening on http://..` line it prints.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let path = example_path(name);
        let mut child = tokio::process::Command::new(&path)
            .env("ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.trim_end_matches('/').to_owned();
                }
            }
            panic!("{name} exited before listening");
        })
        .await
        .expect("example did not start listening");
        // Keep draining stdout so the example never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// The process's resident memory, in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// The `host:port` the example listens on.
    pub fn addr(&self) -> SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit by itself.
    pub async fn terminate_within(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        match timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("example still running {limit:?} after SIGTERM"),
        }
    }
}

/// Examples are built by `cargo test` next to the test binaries (`target/<profile>/examples`);
/// build it when a narrower command skipped that.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(manifest_dir())
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example {name} failed");
    }
    path
}

/// `Hub::disconnect` on process `a` ends a client's streams on process `b`: `alice_on_b` (and
/// another one made here) end; a stream of hers made afterwards counts on when the old one
/// goes, and gets what is sent to her (returned, still open). Shared by the Redis and NATS
/// tests.
pub async fn disconnect_reaches_the_other_process(
    a: &tower_sse::hub::Hub,
    b: &tower_sse::hub::Hub,
    mut alice_on_b: tower_sse::hub::Subscription,
) -> tower_sse::hub::Subscription {
    use futures_util::StreamExt as _;
    const WAIT: Duration = Duration::from_secs(10);
    let mut other_of_alice_on_b = b
        .subscriber("feed")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    assert_eq!(a.disconnect("alice").await.unwrap(), 0, "none on A");
    assert!(timeout(WAIT, alice_on_b.next()).await.unwrap().is_none());
    assert!(
        timeout(WAIT, other_of_alice_on_b.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(b.client_connections("alice"), 0);
    let mut again = b
        .subscriber("inbox/alice")
        .client_id("alice")
        .subscribe()
        .await
        .unwrap();
    drop(alice_on_b);
    assert_eq!(
        b.client_connections("alice"),
        1,
        "the old stream does not count out the new"
    );
    a.send_to("alice", tower_sse::Event::new().data("back"))
        .await
        .unwrap();
    let back = timeout(WAIT, again.next()).await.unwrap().unwrap();
    assert_eq!(data(&back), "back");
    again
}

/// On a broker's hub: an unknown id with `UnknownId::SendRecent(3)` is `history-lost` and gets
/// the newest three events of `topic` (`newest`, their data); each of `bogus` with
/// `UnknownId::LiveOnly` is `history-lost` and gets nothing. Shared by the Redis and NATS
/// tests.
pub async fn unknown_ids_are_history_lost(
    hub: &tower_sse::hub::Hub,
    topic: &str,
    newest: &[String],
    bogus: &[&str],
) {
    use futures_util::StreamExt as _;
    use tower_sse::replay::{Replay, UnknownId};
    let mut recent = hub
        .subscriber(topic)
        .last_event_id(Some("garbage"))
        .on_unknown_id(UnknownId::SendRecent(3))
        .subscribe()
        .await
        .unwrap();
    assert_eq!(recent.replay(), Replay::HistoryLost);
    assert_eq!(recent.backlog_len(), 3);
    let mut got = vec![];
    for _ in 0..3 {
        let event = timeout(Duration::from_secs(10), recent.next())
            .await
            .unwrap()
            .unwrap();
        got.push(data(&event));
    }
    assert_eq!(got, newest);
    for bogus in bogus {
        let sub = hub
            .subscriber(topic)
            .last_event_id(Some(bogus))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost, "{bogus}");
        assert_eq!(sub.backlog_len(), 0, "{bogus}");
    }
}

/// A broker's hub that does not create topics on demand (`auto_create(false)`, fresh topic
/// names): it knows which topics exist (a registry in the broker), refuses the others, and a
/// closed topic is gone. Shared by the Redis and NATS tests.
pub async fn a_topic_registry_without_auto_create(strict: &tower_sse::hub::Hub) {
    use futures_util::StreamExt as _;
    use tower_sse::{
        Event,
        hub::{PublishError, SubscribeError},
    };
    const WAIT: Duration = Duration::from_secs(10);
    assert!(!strict.close_topic("never-existed", None).await.unwrap());
    assert!(strict.create_topic("made").await.unwrap());
    assert!(!strict.create_topic("made").await.unwrap());
    assert_eq!(
        strict
            .publish("unmade", Event::new().data("x"))
            .await
            .unwrap_err(),
        PublishError::UnknownTopic
    );
    assert_eq!(
        strict.subscribe("unmade").await.unwrap_err(),
        SubscribeError::UnknownTopic
    );
    let mut made = strict.subscribe("made").await.unwrap();
    strict
        .publish("made", Event::new().data("ok"))
        .await
        .unwrap();
    let ok = timeout(WAIT, made.next()).await.unwrap().unwrap();
    assert_eq!(data(&ok), "ok");
    assert!(strict.close_topic("made", None).await.unwrap());
    assert!(timeout(WAIT, made.next()).await.unwrap().is_none());
    assert_eq!(
        strict
            .publish("made", Event::new().data("x"))
            .await
            .unwrap_err(),
        PublishError::UnknownTopic
    );
}

/// Publisher's ids on a broker (`a` and `b`: two processes' hubs on it, fresh topic names):
/// they are the events' ids on both, a `Last-Event-ID` with one resumes on the other process
/// exactly after it (across topics, with a position-id event in between), an id used twice
/// resumes after its first use, an unknown one is `history-lost`, and ids that spell a
/// position (or are too long) are refused with `InvalidId`. Shared by the Redis and NATS tests.
pub async fn publisher_ids_resume_on_the_other_process(
    a: &tower_sse::hub::Hub,
    b: &tower_sse::hub::Hub,
) {
    use futures_util::StreamExt as _;
    use tower_sse::{
        Event,
        hub::PublishError,
        replay::{Replay, UnknownId},
    };
    async fn next(sub: &mut tower_sse::hub::Subscription) -> tower_sse::EncodedEvent {
        timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
    }
    let mut live = b
        .subscriber("pid/one")
        .topic("pid/two")
        .subscribe()
        .await
        .unwrap();
    let first = a
        .publish("pid/one", Event::new().id("urn:uuid:first").data("1"))
        .await
        .unwrap();
    assert_eq!(first.id(), Some("urn:uuid:first"));
    a.publish("pid/two", Event::new().data("2")).await.unwrap();
    a.publish("pid/one", Event::new().id("urn:uuid:third").data("3"))
        .await
        .unwrap();
    a.publish(
        "pid/two",
        Event::new().id("urn:uuid:first").data("4 reuses 1's id"),
    )
    .await
    .unwrap();
    let mut seen = vec![];
    for _ in 0..4 {
        let event = next(&mut live).await;
        seen.push((event.id().unwrap_or_default().to_owned(), data(&event)));
    }
    assert_eq!(seen[0], ("urn:uuid:first".into(), "1".into()));
    assert_eq!(seen[2], ("urn:uuid:third".into(), "3".into()));
    assert!(seen[1].0.bytes().all(|b| b.is_ascii_digit()), "{seen:?}");

    // Resumed on the other process, from each process's point of view.
    for hub in [a, b] {
        let mut resumed = hub
            .subscriber("pid/one")
            .topic("pid/two")
            .last_event_id(Some("urn:uuid:third"))
            .subscribe()
            .await
            .unwrap();
        assert_eq!(resumed.replay(), Replay::Complete);
        assert_eq!(data(&next(&mut resumed).await), "4 reuses 1's id");
        let mut again = hub
            .subscriber("pid/one")
            .topic("pid/two")
            .last_event_id(Some("urn:uuid:first"))
            .subscribe()
            .await
            .unwrap();
        assert_eq!(again.replay(), Replay::Complete);
        let mut got = vec![];
        for _ in 0..3 {
            got.push(data(&next(&mut again).await));
        }
        assert_eq!(
            got,
            ["2", "3", "4 reuses 1's id"],
            "after the id's first use"
        );
        let unknown = hub
            .subscriber("pid/one")
            .last_event_id(Some("urn:uuid:never"))
            .on_unknown_id(UnknownId::LiveOnly)
            .subscribe()
            .await
            .unwrap();
        assert_eq!(unknown.replay(), Replay::HistoryLost);
    }
    for bad in ["42", "007", &"x".repeat(1025)] {
        assert_eq!(
            a.publish("pid/one", Event::new().id(bad).data("no"))
                .await
                .err(),
            Some(PublishError::InvalidId),
            "{bad:.20}"
        );
    }
    // Nothing was stored for them: the next event is the next one live.
    a.publish("pid/one", Event::new().data("5")).await.unwrap();
    assert_eq!(data(&next(&mut live).await), "5");
}

/// Presence on a broker (`a`, `b`, `c`: three processes' hubs on it, `c` not using presence
/// yet; `inject` publishes raw bytes on the hub's live channel, as a process that then
/// crashed would have): a member is seen on every process, a process that starts later learns
/// the members already there, a leave reaches every process, and a process that falls silent
/// has its members expire, handled by exactly one live process. Shared by the Redis and NATS
/// tests; the hubs' presence interval should be short (250 ms: expiry after 750 ms).
pub async fn presence_spans_processes_and_expires_the_silent<F, Fut>(
    a: &tower_sse::hub::Hub,
    b: &tower_sse::hub::Hub,
    c: &tower_sse::hub::Hub,
    inject: F,
) where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::StreamExt as _;
    use tower_sse::hub::{Presence, PresenceChange, PresenceEvents};

    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        eventually(what, async || ok().then_some(()).ok_or_else(String::new)).await;
    }
    async fn next_change(events: &mut PresenceEvents) -> tower_sse::hub::PresenceEvent {
        timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a presence event within 10 s")
            .expect("the events go on")
    }
    let keys = |p: &Presence, space: &str| -> Vec<String> {
        p.members(space)
            .iter()
            .map(|m| m.key().to_owned())
            .collect()
    };
    let (pa, pb) = (a.presence(), b.presence());
    let mut on_b = pb.events();
    // Each process hears the other (their heartbeats) before the test goes on.
    until("a and b know each other", || {
        pa.processes().len() == 2 && pb.processes().len() == 2
    })
    .await;

    let alice = pa.join("room", "alice", r#"{"n":1}"#).unwrap();
    let joined = next_change(&mut on_b).await;
    assert_eq!(joined.change(), PresenceChange::Joined);
    assert_eq!(joined.member().key(), "alice");
    assert_eq!(joined.member().meta(), r#"{"n":1}"#);
    assert_eq!(joined.member().process(), pa.process_id());
    assert!(!joined.member().is_here() && !joined.handled_here());
    assert_eq!(keys(&pb, "room"), ["alice"]);

    // A process that starts now learns who is already there.
    let pc = c.presence();
    until("c learns alice", || keys(&pc, "room") == ["alice"]).await;

    drop(alice);
    let left = next_change(&mut on_b).await;
    assert_eq!(
        (left.change(), left.member().key()),
        (PresenceChange::Left, "alice")
    );
    until("c sees alice leave", || keys(&pc, "room").is_empty()).await;

    // A process that joined `bob`, then went silent (crashed): its member expires after three
    // intervals, and one live process (the lowest id) handles it.
    let mut on_a = pa.events();
    let mut on_c = pc.events();
    inject(b"PJ12:dead-process1:11:04:room3:bob0:".to_vec()).await;
    let joined = next_change(&mut on_b).await;
    assert_eq!(
        (joined.change(), joined.member().key()),
        (PresenceChange::Joined, "bob")
    );
    assert_eq!(joined.member().process(), "dead-process");
    until("bob is listed everywhere", || {
        [&pa, &pb, &pc].iter().all(|p| keys(p, "room") == ["bob"])
    })
    .await;
    let mut handled = 0;
    for events in [&mut on_a, &mut on_b, &mut on_c] {
        let event = loop {
            let event = next_change(events).await;
            if event.change() == PresenceChange::Expired {
                break event;
            }
        };
        assert_eq!(event.member().key(), "bob");
        handled += usize::from(event.handled_here());
    }
    assert_eq!(handled, 1, "one process handles an expiry");
    for p in [&pa, &pb, &pc] {
        assert!(keys(p, "room").is_empty());
    }
    until("the live ones stay", || {
        [&pa, &pb, &pc].iter().all(|p| p.processes().len() == 3)
    })
    .await;
}
