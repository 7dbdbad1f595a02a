//! A chaos soak that audits every event: many SSE clients against two `chat` processes sharing
//! one broker (Redis or NATS JetStream), while clients are cut, a chat process is killed and
//! restarted, and the broker is killed and restarted. Every client checks its own sequence; at
//! the end every acknowledged message is accounted for.
//!
//! ```text
//! cargo build --release --example chat --example chaos
//! target/release/examples/chaos --broker redis --clients 1000 --secs 300
//! target/release/examples/chaos --broker nats  --clients 1000 --secs 300
//! ```
//!
//! (`cargo run --release --example chaos -- --broker redis …` works too once the `chat` example
//! is built: the tool starts `chat` from its own directory, or from `--chat PATH`.)
//!
//! # What it does
//!
//! Loopback only, and bounded: it stops by itself (exit status 3) `secs + 150` seconds after it
//! started, whatever happens.
//!
//! 1. Starts its own broker on a free loopback port with a fresh temporary directory:
//!    `redis-server --appendonly yes --appendfsync always`, or `nats-server -js -sd <dir>` (file
//!    storage). It never touches a broker it did not start.
//! 2. Starts two `chat` processes (`REDIS_URL` or `NATS_URL`, `MAX_STREAMS_PER_CLIENT=0`,
//!    `MAX_STREAMS=0`, `KEEP_ALIVE_SECS=5`, `COMPRESSION=false`), each on its own free port,
//!    and creates `--rooms` rooms.
//! 3. Opens `--clients` SSE streams (hyper HTTP/1.1 over `TcpStream`, events parsed by
//!    `tower_sse::client::Decoder`), spread over the source addresses 127.0.0.2–127.0.0.9, each
//!    on a random process: four in five follow one room (`GET /rooms/{room}/events`), the rest
//!    two or three rooms on one stream (`GET /rooms/events?room=..&room=..`).
//! 4. `--publishers` tasks post numbered messages (`text` is `p<publisher>-<seq>`) to random
//!    rooms on random processes, `--rate` messages per second in all. A `202 {"id"}` is an
//!    acknowledged message: recorded as (id, room, text). A `503`, an error or a timeout (2 s)
//!    is not acknowledged (such a message may still have been stored and be delivered).
//! 5. Chaos, for `--secs` seconds: every second about `--cuts-per-sec` random clients drop
//!    their connection and reconnect at once to a random process with `Last-Event-ID`; every
//!    `--kill-every` seconds one chat process gets SIGKILL and is started again on the same port
//!    0.5–1.5 s later (its clients reconnect elsewhere, or to it once it is back); every
//!    `--broker-every` seconds the broker gets SIGKILL and is started again on the same port with
//!    the same data 0.5–1.5 s later. A client whose connection fails or is refused (`503`, …)
//!    retries after 0.2–1 s; a stream with no byte for 20 s is dropped and reopened. About
//!    `--away-per-min` times a minute a cut client stays away 45–75 s first (when it is back
//!    5 s before the end): longer than Redis's log lasts at 250 msg/s (10,000 entries, the
//!    broker's default), so such resumes get `history-lost` on Redis; on NATS (100,000
//!    entries) they replay what they missed.
//! 6. Then: publishers stop; clients drain (until each has the newest acknowledged id of its
//!    rooms, at most `--drain` seconds); clients close; `GET /stats` on both processes is polled
//!    until `connections` and `subscribers` are 0 (at most 30 s).
//!
//! # The audit
//!
//! Each client keeps the ids (numbers, hub-wide ordered per broker) of the messages it got, in
//! order, across all its connections, and each `history-lost` signal (the `Sse-Replay:
//! history-lost` response header or an `event: history-lost`). A signal covers the ids between
//! the last message before it and the first message after it. Then:
//!
//! - **order violations**: an id not above the previous one (and not seen before);
//! - **duplicates**: an id seen before;
//! - every acknowledged message of the client's rooms with an id at or after the first message
//!   the client got must have been received (with the text that was acknowledged for that id),
//!   unless a signal covers it (**missed, signalled**); otherwise it is a **gap, unsignalled**;
//! - the final `/stats` counts must be 0.
//!
//! The summary is printed as a Markdown table (for `RELIABILITY.md`). The exit status is 0 when
//! there is no unsignalled gap, duplicate, order violation, wrong text or client that never got
//! a message, and the counts came back to 0; 1 otherwise; 2 on a set-up error; 3 at the hard
//! stop.
//!
//! `--sabotage N` makes every client throw away one message in N, as a server losing events
//! would: the run must then fail with unsignalled gaps (a check of the audit itself).
//!
//! Options (`--name value`): `--broker` (`redis` or `nats`, default `redis`), `--clients`
//! (1000), `--secs` (300), `--rooms` (20), `--rate` (250), `--publishers` (16),
//! `--cuts-per-sec` (10), `--away-per-min` (6), `--kill-every` (secs/6, at least 5),
//! `--broker-every` (secs/4, at least 5), `--drain` (30), `--sabotage` (0: off), `--seed`
//! (random), `--chat` (the `chat` binary).
//!
//! It needs a file descriptor per client (and the chat processes one per stream): `ulimit -n`
//! of a few thousand.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use std::io::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
    process::{Child, Command},
    sync::{Notify, watch},
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};
use tower_sse::client::{Decoder, Frame};

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerKind {
    Redis,
    Nats,
}

impl BrokerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    broker: BrokerKind,
    clients: usize,
    secs: u64,
    rooms: usize,
    rate: f64,
    publishers: usize,
    cuts_per_sec: f64,
    kill_every: f64,
    broker_every: f64,
    drain: u64,
    away_per_min: f64,
    sabotage: u64,
    seed: u64,
    chat: Option<PathBuf>,
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}");
    eprintln!(
        "usage: chaos [--broker redis|nats] [--clients N] [--secs S] [--rooms N] [--rate R] \
         [--publishers N] [--cuts-per-sec R] [--kill-every S] [--broker-every S] [--drain S] \
         [--away-per-min R] [--sabotage N] [--seed N] [--chat PATH]"
    );
    std::process::exit(2);
}

fn parse_options() -> Options {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            usage(&format!("unexpected argument {arg:?}"));
        };
        let Some(value) = args.next() else {
            usage(&format!("--{name} needs a value"));
        };
        values.insert(name.to_owned(), value);
    }
    fn take<T: std::str::FromStr>(values: &mut HashMap<String, String>, name: &str) -> Option<T> {
        values.remove(name).map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("--{name} {value:?} is not valid")))
        })
    }
    let broker = match values.remove("broker").as_deref() {
        None | Some("redis") => BrokerKind::Redis,
        Some("nats") => BrokerKind::Nats,
        Some(other) => usage(&format!("--broker {other:?}: redis or nats")),
    };
    let secs: u64 = take(&mut values, "secs").unwrap_or(300);
    let options = Options {
        broker,
        clients: take(&mut values, "clients").unwrap_or(1000),
        secs,
        rooms: take(&mut values, "rooms").unwrap_or(20),
        rate: take(&mut values, "rate").unwrap_or(250.0),
        publishers: take(&mut values, "publishers").unwrap_or(16),
        cuts_per_sec: take(&mut values, "cuts-per-sec").unwrap_or(10.0),
        kill_every: take(&mut values, "kill-every").unwrap_or((secs as f64 / 6.0).max(5.0)),
        broker_every: take(&mut values, "broker-every").unwrap_or((secs as f64 / 4.0).max(5.0)),
        drain: take(&mut values, "drain").unwrap_or(30),
        away_per_min: take(&mut values, "away-per-min").unwrap_or(6.0),
        sabotage: take(&mut values, "sabotage").unwrap_or(0),
        seed: take(&mut values, "seed").unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).expect("the operating system's random source");
            u64::from_le_bytes(bytes)
        }),
        chat: take(&mut values, "chat"),
    };
    if let Some(name) = values.keys().next() {
        usage(&format!("unknown option --{name}"));
    }
    if options.clients == 0 || options.rooms == 0 || options.publishers == 0 {
        usage("--clients, --rooms and --publishers must be at least 1");
    }
    if !(options.rate > 0.0 && options.rate <= 5000.0) {
        usage("--rate must be in (0, 5000]");
    }
    if options.secs == 0 || options.secs > 3600 || options.clients > 20_000 || options.rooms > 1000
    {
        usage("bounded: --secs 1..=3600, --clients up to 20000, --rooms up to 1000");
    }
    options
}

// ---------------------------------------------------------------------------------------------
// Randomness: SplitMix64, seeded once (printed, so a run can be repeated with --seed)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        low + (high.saturating_sub(low)).mul_f64(self.unit())
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one registered by pid until reaped, so a panic, a signal or the hard
// stop kills exactly the processes this tool started
// ---------------------------------------------------------------------------------------------

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// The run's temporary directory (broker data, chat logs).
static WORK_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(child: &Child) {
    if let Some(pid) = child.id() {
        lock(&CHILDREN).push(pid);
    }
}

/// SIGKILL and reap; the pid is forgotten once reaped (so it can never name another process).
async fn kill_child(child: &mut Child) {
    let pid = child.id();
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(pid) = pid {
        lock(&CHILDREN).retain(|&p| p != pid);
    }
}

/// The last resort (panic, signal, hard stop): SIGKILL every registered child, remove the
/// broker's data. Synchronous, callable from anywhere.
fn emergency_cleanup() {
    let pids: Vec<u32> = lock(&CHILDREN).drain(..).collect();
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(dir) = lock(&WORK_DIR).as_ref() {
        let _ = std::fs::remove_dir_all(dir.join("broker"));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

// ---------------------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------------------

struct Broker {
    kind: BrokerKind,
    port: u16,
    monitor: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    async fn start(kind: BrokerKind, dir: PathBuf) -> Result<Self, String> {
        let program = match kind {
            BrokerKind::Redis => "redis-server",
            BrokerKind::Nats => "nats-server",
        };
        let found = std::process::Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Err(format!(
                "{program} not found (apt-get install {program}, or `bash .ci/setup` as root)"
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let mut broker = Self {
            kind,
            port: free_port(),
            monitor: free_port(),
            dir,
            child: None,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut command = match self.kind {
            BrokerKind::Redis => {
                let mut command = Command::new("redis-server");
                command
                    .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                    ])
                    .arg("--dir")
                    .arg(&self.dir)
                    .args(["--daemonize", "no", "--loglevel", "warning"])
                    .args(["--maxclients", "1000"]);
                command
            }
            BrokerKind::Nats => {
                let mut command = Command::new("nats-server");
                command
                    .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                    .args(["-m", &self.monitor.to_string(), "-js", "-sd"])
                    .arg(&self.dir);
                command
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .map_err(|err| format!("broker log: {err}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|err| err.to_string())?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", self.kind.name()))?;
        register(&child);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ready().await {
                return Ok(());
            }
            sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "{} on port {} not ready in 20 s",
            self.kind.name(),
            self.port
        ))
    }

    async fn ready(&self) -> bool {
        match self.kind {
            BrokerKind::Redis => {
                let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await else {
                    return false;
                };
                if conn.write_all(b"*1\r\n$4\r\nPING\r\n").await.is_err() {
                    return false;
                }
                let mut reply = [0; 7];
                matches!(
                    timeout(Duration::from_secs(1), conn.read_exact(&mut reply)).await,
                    Ok(Ok(_)) if &reply == b"+PONG\r\n"
                )
            }
            BrokerKind::Nats => {
                let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.monitor)).await else {
                    return false;
                };
                let request =
                    "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                if conn.write_all(request.as_bytes()).await.is_err() {
                    return false;
                }
                let mut reply = Vec::new();
                matches!(
                    timeout(Duration::from_secs(1), conn.read_to_end(&mut reply)).await,
                    Ok(Ok(_)) if String::from_utf8_lossy(&reply).contains("ok")
                )
            }
        }
    }

    /// NATS: the streams' creation times and last sequences, from the monitoring port (what a
    /// restart must keep); Redis: `None`.
    async fn streams(&self) -> Option<String> {
        if self.kind != BrokerKind::Nats {
            return None;
        }
        let mut conn = TcpStream::connect(("127.0.0.1", self.monitor)).await.ok()?;
        let request = "GET /jsz?streams=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        timeout(Duration::from_secs(2), conn.read_to_end(&mut reply))
            .await
            .ok()?
            .ok()?;
        let reply = String::from_utf8_lossy(&reply);
        let (_, body) = reply.split_once("\r\n\r\n")?;
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let mut streams = Vec::new();
        for account in value["account_details"].as_array()? {
            for stream in account["stream_detail"].as_array()? {
                streams.push(format!(
                    "{} created {} last_seq {}",
                    stream["name"].as_str().unwrap_or("?"),
                    stream["created"].as_str().unwrap_or("?"),
                    stream["state"]["last_seq"]
                ));
            }
        }
        Some(streams.join("; "))
    }

    fn env(&self) -> (&'static str, String) {
        match self.kind {
            BrokerKind::Redis => ("REDIS_URL", format!("redis://127.0.0.1:{}", self.port)),
            BrokerKind::Nats => ("NATS_URL", format!("nats://127.0.0.1:{}", self.port)),
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The chat processes
// ---------------------------------------------------------------------------------------------

struct ChatProcess {
    index: usize,
    port: u16,
    bin: PathBuf,
    env: (&'static str, String),
    log: PathBuf,
    child: Option<Child>,
}

impl ChatProcess {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts it on its port; retried (the port may still be held for a moment, the broker
    /// may be restarting) for at most 30 s.
    async fn spawn(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match self.try_spawn().await {
                Ok(()) => return Ok(()),
                Err(err) => last_error = err,
            }
            sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "chat {} on port {} did not start in 30 s: {last_error} (log: {})",
            self.index,
            self.port,
            self.log.display()
        ))
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|err| format!("{}: {err}", self.log.display()))?;
        let mut child = Command::new(&self.bin)
            .env("ADDR", self.addr().to_string())
            .env(self.env.0, &self.env.1)
            .env("MAX_STREAMS_PER_CLIENT", "0")
            .env("MAX_STREAMS", "0")
            .env("KEEP_ALIVE_SECS", "5")
            .env("COMPRESSION", "false")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(|err| err.to_string())?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", self.bin.display()))?;
        register(&child);
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Its stdout (where its tracing goes too) into the log file.
        let mut log = std::io::LineWriter::new(log);
        let listening = timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
                if line.starts_with("listening on ") {
                    return true;
                }
            }
            false
        })
        .await;
        if listening != Ok(true) {
            kill_child(&mut child).await;
            return Err("exited or silent before listening".to_owned());
        }
        // Keep reading stdout so the process never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared counters
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connect_errors: AtomicU64,
    refused_503: AtomicU64,
    refused_other: AtomicU64,
    cuts: AtomicU64,
    aways: AtomicU64,
    ended_by_server: AtomicU64,
    read_timeouts: AtomicU64,
    replay_complete: AtomicU64,
    replay_lost: AtomicU64,
    publish_acked: AtomicU64,
    publish_503: AtomicU64,
    publish_other: AtomicU64,
    publish_error: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------------

/// An acknowledged message: its id, room (index) and the tag of its text (`p<pub>-<seq>`).
#[derive(Clone, Copy)]
struct Ack {
    id: u64,
    room: usize,
    tag: u64,
}

fn tag(publisher: usize, seq: u64) -> u64 {
    ((publisher as u64) << 40) | seq
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    index: usize,
    mut rng: Rng,
    rate: f64,
    rooms: Arc<Vec<String>>,
    processes: Arc<Vec<SocketAddr>>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Ack> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(2)
        .build()
        .expect("a reqwest client");
    let mut acks = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Spread the publishers' first ticks.
    sleep(rng.between(Duration::ZERO, Duration::from_secs_f64(1.0 / rate))).await;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        seq += 1;
        let room = rng.below(rooms.len());
        let addr = processes[rng.below(processes.len())];
        let url = format!("http://{addr}/rooms/{}/messages", rooms[room]);
        let body = format!(r#"{{"user":"pub{index}","text":"p{index}-{seq}"}}"#);
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().as_u16() == 202 => {
                let id = response
                    .bytes()
                    .await
                    .ok()
                    .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
                    .and_then(|value| value["id"].as_str().and_then(|id| id.parse().ok()));
                match id {
                    Some(id) => {
                        add(&counters.publish_acked);
                        acks.push(Ack {
                            id,
                            room,
                            tag: tag(index, seq),
                        });
                    }
                    // The body was lost on the way: not acknowledged, as far as we know.
                    None => add(&counters.publish_error),
                }
            }
            Ok(response) if response.status().as_u16() == 503 => add(&counters.publish_503),
            Ok(_) => add(&counters.publish_other),
            Err(_) => add(&counters.publish_error),
        }
    }
    acks
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// What a client saw, kept for the audit.
struct ClientLog {
    rooms: Vec<usize>,
    /// Message ids in the order received (strictly increasing: violations are counted, not
    /// kept).
    ids: Vec<u64>,
    /// The tag of each message's text, parallel to `ids`.
    tags: Vec<u64>,
    /// Id ranges `(after, before)` a `history-lost` signal covers (exclusive bounds; `before`
    /// is `u64::MAX` when no message followed the signal).
    covered: Vec<(u64, u64)>,
    signals: u64,
    duplicates: u64,
    order_violations: u64,
    /// Messages of rooms the client does not follow, or that did not parse.
    foreign: u64,
}

/// What the rest of the tool can see of a running client.
struct ClientHandle {
    rooms: Vec<usize>,
    last: Arc<AtomicU64>,
    cut: Arc<Notify>,
    /// Set before a cut: stay away this many milliseconds before reconnecting.
    away_ms: Arc<AtomicU64>,
}

/// The text's tag and the room id, read from the chat's JSON data without a full parse:
/// `{"room":"<id>","text":"p<pub>-<seq>",...}`.
fn parse_data(data: &str) -> Option<(&str, u64)> {
    let room = data.split_once(r#""room":""#)?.1.split_once('"')?.0;
    let text = data.split_once(r#""text":"p"#)?.1.split_once('"')?.0;
    let (publisher, seq) = text.split_once('-')?;
    Some((room, tag(publisher.parse().ok()?, seq.parse().ok()?)))
}

enum Opened {
    Stream(hyper::Response<Incoming>, JoinHandle<()>),
    Refused(u16),
    Failed,
}

async fn open(addr: SocketAddr, source: Ipv4Addr, path: &str, last: Option<u64>) -> Opened {
    let connect = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((source, 0))).ok()?;
        let stream = socket.connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::get(path)
            .header("host", addr.to_string())
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let request = request.body(Empty::new()).ok()?;
        match sender.send_request(request).await {
            Ok(response) => Some((response, task)),
            Err(_) => {
                task.abort();
                None
            }
        }
    };
    match timeout(Duration::from_secs(5), connect).await {
        Ok(Some((response, task))) if response.status().as_u16() == 200 => {
            Opened::Stream(response, task)
        }
        Ok(Some((response, task))) => {
            task.abort();
            Opened::Refused(response.status().as_u16())
        }
        _ => Opened::Failed,
    }
}

#[allow(clippy::too_many_arguments)]
async fn client(
    index: usize,
    mut rng: Rng,
    rooms: Vec<usize>,
    room_ids: Arc<Vec<String>>,
    processes: Arc<Vec<SocketAddr>>,
    counters: Arc<Counters>,
    last_shared: Arc<AtomicU64>,
    cut: Arc<Notify>,
    away_ms: Arc<AtomicU64>,
    sabotage: u64,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let source = Ipv4Addr::new(127, 0, 0, 2 + (index % 8) as u8);
    let path = match rooms.as_slice() {
        [room] => format!("/rooms/{}/events", room_ids[*room]),
        _ => {
            let query: Vec<String> = rooms
                .iter()
                .map(|&room| format!("room={}", room_ids[room]))
                .collect();
            format!("/rooms/events?{}", query.join("&"))
        }
    };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for &room in &rooms {
        by_id.insert(room_ids[room].as_str(), room);
    }
    let mut log = ClientLog {
        rooms: rooms.clone(),
        ids: Vec::new(),
        tags: Vec::new(),
        covered: Vec::new(),
        signals: 0,
        duplicates: 0,
        order_violations: 0,
        foreign: 0,
    };
    // A signal seen, not yet followed by a message: the id before it.
    let mut pending_signal: Option<u64> = None;
    'connections: while !*stop.borrow() {
        let addr = processes[rng.below(processes.len())];
        let last = log.ids.last().copied();
        let (mut response, task) = match open(addr, source, &path, last).await {
            Opened::Stream(response, task) => (response, task),
            Opened::Refused(status) => {
                if status == 503 {
                    add(&counters.refused_503);
                } else {
                    add(&counters.refused_other);
                }
                let pause = rng.between(Duration::from_millis(200), Duration::from_secs(1));
                tokio::select! {
                    () = sleep(pause) => continue,
                    _ = stop.changed() => break,
                }
            }
            Opened::Failed => {
                add(&counters.connect_errors);
                let pause = rng.between(Duration::from_millis(200), Duration::from_secs(1));
                tokio::select! {
                    () = sleep(pause) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        add(&counters.connects);
        let replay = response
            .headers()
            .get("sse-replay")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // One signal per connection, by the header or the event (both come together).
        let mut signalled_here = false;
        match replay.as_str() {
            "history-lost" => {
                add(&counters.replay_lost);
                signalled_here = true;
                log.signals += 1;
                pending_signal.get_or_insert(last.unwrap_or(0));
            }
            "complete" => add(&counters.replay_complete),
            _ => {}
        }
        let mut decoder = Decoder::new();
        let body = response.body_mut();
        let reconnect_now = loop {
            let frame = tokio::select! {
                () = cut.notified() => {
                    add(&counters.cuts);
                    break true;
                }
                _ = stop.changed() => {
                    task.abort();
                    break 'connections;
                }
                frame = timeout(Duration::from_secs(20), body.frame()) => frame,
            };
            let data = match frame {
                Err(_) => {
                    add(&counters.read_timeouts);
                    break false;
                }
                Ok(None) | Ok(Some(Err(_))) => {
                    add(&counters.ended_by_server);
                    break false;
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            decoder.feed(&data);
            loop {
                let event = match decoder.decode() {
                    Ok(Some(Frame::Event(event))) => event,
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => {
                        log.foreign += 1;
                        break;
                    }
                };
                match event.event() {
                    "history-lost" => {
                        if !signalled_here {
                            signalled_here = true;
                            log.signals += 1;
                        }
                        pending_signal.get_or_insert(log.ids.last().copied().unwrap_or(0));
                    }
                    "message" => {
                        let Ok(id) = event.id().parse::<u64>() else {
                            log.foreign += 1;
                            continue;
                        };
                        let Some((room, tag)) = parse_data(event.data()) else {
                            log.foreign += 1;
                            continue;
                        };
                        if !by_id.contains_key(room) {
                            log.foreign += 1;
                            continue;
                        }
                        if let Some(&previous) = log.ids.last() {
                            if id <= previous {
                                if log.ids.binary_search(&id).is_ok() {
                                    log.duplicates += 1;
                                } else {
                                    log.order_violations += 1;
                                }
                                continue;
                            }
                        }
                        if sabotage > 0 && rng.below(sabotage as usize) == 0 {
                            // --sabotage: drop this one, as a buggy server would, to show
                            // that the audit sees it.
                            continue;
                        }
                        if let Some(after) = pending_signal.take() {
                            log.covered.push((after, id));
                        }
                        log.ids.push(id);
                        log.tags.push(tag);
                        last_shared.store(id, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        };
        task.abort();
        drop(response);
        let away = away_ms.swap(0, Ordering::Relaxed);
        if reconnect_now && away > 0 {
            add(&counters.aways);
            tokio::select! {
                () = sleep(Duration::from_millis(away)) => {}
                _ = stop.changed() => break,
            }
        }
        if !reconnect_now {
            let pause = rng.between(Duration::from_millis(50), Duration::from_millis(300));
            tokio::select! {
                () = sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
    }
    if let Some(after) = pending_signal {
        log.covered.push((after, u64::MAX));
    }
    log
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

/// `GET /stats` until `connections` and `subscribers` are 0, at most `limit`: the last answer.
async fn settle_stats(addr: SocketAddr, limit: Duration) -> Option<serde_json::Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a reqwest client");
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/stats")).send().await {
            if response.status().is_success() {
                if let Ok(body) = response.bytes().await {
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
                        let zero = value["connections"].as_u64() == Some(0)
                            && value["subscribers"].as_u64() == Some(0);
                        last = Some(value);
                        if zero {
                            return last;
                        }
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Audit {
    delivered: u64,
    delivered_acked: u64,
    delivered_unacked: u64,
    expected: u64,
    missed_signalled: u64,
    unsignalled: u64,
    wrong_text: u64,
    duplicates: u64,
    order_violations: u64,
    foreign: u64,
    signals: u64,
    clients_signalled: u64,
    silent_clients: u64,
    examples: Vec<String>,
}

fn audit(logs: &[ClientLog], acks: &[Ack], rooms: usize) -> Audit {
    let mut by_room: Vec<Vec<(u64, u64)>> = vec![Vec::new(); rooms];
    for ack in acks {
        by_room[ack.room].push((ack.id, ack.tag));
    }
    for room in &mut by_room {
        room.sort_unstable();
    }
    let mut result = Audit::default();
    for (index, log) in logs.iter().enumerate() {
        result.delivered += log.ids.len() as u64;
        result.duplicates += log.duplicates;
        result.order_violations += log.order_violations;
        result.foreign += log.foreign;
        result.signals += log.signals;
        if log.signals > 0 {
            result.clients_signalled += 1;
        }
        let Some(&first) = log.ids.first() else {
            // A client that never got a message although its rooms had some acknowledged
            // after it started: counted (the rooms are busy; this should not happen).
            if log.rooms.iter().any(|&room| !by_room[room].is_empty()) {
                result.silent_clients += 1;
                if result.examples.len() < 10 {
                    result
                        .examples
                        .push(format!("client {index}: no message at all"));
                }
            }
            continue;
        };
        let mut matched = 0u64;
        for &room in &log.rooms {
            let room_acks = &by_room[room];
            let start = room_acks.partition_point(|&(id, _)| id < first);
            for &(id, tag) in &room_acks[start..] {
                result.expected += 1;
                match log.ids.binary_search(&id) {
                    Ok(at) => {
                        matched += 1;
                        if log.tags[at] != tag {
                            result.wrong_text += 1;
                            if result.examples.len() < 10 {
                                result
                                    .examples
                                    .push(format!("client {index}: id {id} has another text"));
                            }
                        }
                    }
                    Err(_) => {
                        if log
                            .covered
                            .iter()
                            .any(|&(after, before)| after < id && id < before)
                        {
                            result.missed_signalled += 1;
                        } else {
                            result.unsignalled += 1;
                            if result.examples.len() < 10 {
                                let before = log.ids.partition_point(|&x| x < id);
                                let around = (
                                    before.checked_sub(1).map(|at| log.ids[at]),
                                    log.ids.get(before).copied(),
                                );
                                result.examples.push(format!(
                                    "client {index}: acknowledged id {id} (room {room}) missing, \
                                     unsignalled; received around it: {around:?}; covered: {:?}",
                                    log.covered
                                ));
                            }
                        }
                    }
                }
            }
        }
        result.delivered_acked += matched;
        result.delivered_unacked += log.ids.len() as u64 - matched;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn chat_binary(options: &Options) -> Result<PathBuf, String> {
    let path = match &options.chat {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|err| err.to_string())?
            .parent()
            .ok_or("no directory for the running binary")?
            .join("chat"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first (`cargo build --release --example chat`) or pass --chat",
            path.display()
        ))
    }
}

fn main() {
    let options = parse_options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Hard stop: whatever happens, the tool ends (and its children die) by then.
    let hard_stop = Duration::from_secs(options.secs + 150);
    std::thread::spawn(move || {
        std::thread::sleep(hard_stop);
        eprintln!("chaos: hard stop after {hard_stop:?}: killing the processes it started");
        emergency_cleanup();
        std::process::exit(3);
    });
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        emergency_cleanup();
        default_hook(info);
    }));
    let code = runtime.block_on(async {
        tokio::select! {
            code = run(options) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("chaos: interrupted");
                130
            }
        }
    });
    emergency_cleanup();
    drop(runtime);
    std::process::exit(code);
}

async fn run(options: Options) -> i32 {
    match soak(options).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            eprintln!("chaos: {err}");
            2
        }
    }
}

async fn soak(options: Options) -> Result<bool, String> {
    let started = Instant::now();
    let chat_bin = chat_binary(&options)?;
    let mut rng = Rng(options.seed);
    let dir = std::env::temp_dir().join(format!("tower-sse-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    *lock(&WORK_DIR) = Some(dir.clone());
    println!(
        "chaos: broker {}, {} clients, {} s, {} rooms, {} msg/s, seed {}, work dir {}",
        options.broker.name(),
        options.clients,
        options.secs,
        options.rooms,
        options.rate,
        options.seed,
        dir.display()
    );

    let mut broker = Broker::start(options.broker, dir.join("broker")).await?;
    let mut chats = Vec::new();
    for index in 0..2 {
        let mut chat = ChatProcess {
            index,
            port: free_port(),
            bin: chat_bin.clone(),
            env: broker.env(),
            log: dir.join(format!("chat-{index}.log")),
            child: None,
        };
        chat.spawn().await?;
        chats.push(chat);
    }
    let processes: Arc<Vec<SocketAddr>> = Arc::new(chats.iter().map(ChatProcess::addr).collect());

    // Rooms.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|err| err.to_string())?;
    let mut room_ids = Vec::new();
    for _ in 0..options.rooms {
        let response = http
            .post(format!("http://{}/rooms", processes[0]))
            .send()
            .await
            .map_err(|err| format!("POST /rooms: {err}"))?;
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.map_err(|err| err.to_string())?)
                .map_err(|err| format!("POST /rooms: {err}"))?;
        let id = body["room"]
            .as_str()
            .ok_or_else(|| format!("POST /rooms answered {body}"))?;
        room_ids.push(id.to_owned());
    }
    let room_ids = Arc::new(room_ids);

    // Clients.
    let counters = Arc::new(Counters::default());
    let (stop_clients, stop_clients_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..options.clients {
        let rooms = if rng.below(5) == 0 {
            let mut rooms: Vec<usize> = Vec::new();
            let want = (2 + rng.below(2)).min(options.rooms);
            while rooms.len() < want {
                let room = rng.below(options.rooms);
                if !rooms.contains(&room) {
                    rooms.push(room);
                }
            }
            rooms
        } else {
            vec![rng.below(options.rooms)]
        };
        let handle = ClientHandle {
            rooms: rooms.clone(),
            last: Arc::new(AtomicU64::new(0)),
            cut: Arc::new(Notify::new()),
            away_ms: Arc::new(AtomicU64::new(0)),
        };
        tasks.push(tokio::spawn(client(
            index,
            rng.fork(),
            rooms,
            room_ids.clone(),
            processes.clone(),
            counters.clone(),
            handle.last.clone(),
            handle.cut.clone(),
            handle.away_ms.clone(),
            options.sabotage,
            stop_clients_rx.clone(),
        )));
        handles.push(handle);
        if index % 50 == 49 {
            sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the streams open before the first message.
    let opening = Instant::now() + Duration::from_secs(10);
    while (get(&counters.connects) as usize) < options.clients && Instant::now() < opening {
        sleep(Duration::from_millis(100)).await;
    }
    println!(
        "chaos: {} streams open after {:.1} s; soak starts",
        get(&counters.connects),
        started.elapsed().as_secs_f64()
    );

    // Publishers.
    let (stop_publishers, stop_publishers_rx) = watch::channel(false);
    let per_publisher = options.rate / options.publishers as f64;
    let publishers: Vec<JoinHandle<Vec<Ack>>> = (0..options.publishers)
        .map(|index| {
            tokio::spawn(publisher(
                index,
                rng.fork(),
                per_publisher,
                room_ids.clone(),
                processes.clone(),
                counters.clone(),
                stop_publishers_rx.clone(),
            ))
        })
        .collect();

    // Cuts, and long absences (45-75 s: on Redis, longer than its default 10,000-entry log
    // lasts at 250 msg/s, so they resume with `history-lost`), only while the absent client
    // is back 5 s before the soak ends.
    let stop_cuts = Arc::new(AtomicBool::new(false));
    let cutter = {
        let cuts: Vec<(Arc<Notify>, Arc<AtomicU64>)> = handles
            .iter()
            .map(|h| (h.cut.clone(), h.away_ms.clone()))
            .collect();
        let stop = stop_cuts.clone();
        let mut rng = rng.fork();
        let per_tick = options.cuts_per_sec / 10.0;
        let away_per_tick = options.away_per_min / 600.0;
        let soak_end = Instant::now() + Duration::from_secs(options.secs);
        tokio::spawn(async move {
            let (mut owed, mut owed_away) = (0.0, 0.0);
            while !stop.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(100)).await;
                owed += per_tick;
                owed_away += away_per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    cuts[rng.below(cuts.len())].0.notify_one();
                }
                while owed_away >= 1.0 {
                    owed_away -= 1.0;
                    let away = rng.between(Duration::from_secs(45), Duration::from_secs(75));
                    if Instant::now() + away + Duration::from_secs(5) < soak_end {
                        let (cut, away_ms) = &cuts[rng.below(cuts.len())];
                        away_ms.store(away.as_millis() as u64, Ordering::Relaxed);
                        cut.notify_one();
                    }
                }
            }
        })
    };

    // Process kills and broker restarts, one at a time, until the soak's end.
    let soak_start = Instant::now();
    let soak_end = soak_start + Duration::from_secs(options.secs);
    let kill_every = Duration::from_secs_f64(options.kill_every);
    let broker_every = Duration::from_secs_f64(options.broker_every);
    let mut next_kill = soak_start + kill_every / 2;
    let mut next_broker = soak_start + broker_every.mul_f64(0.75);
    let (mut process_restarts, mut broker_restarts) = (0u64, 0u64);
    loop {
        let next = next_kill.min(next_broker);
        if next >= soak_end {
            tokio::time::sleep_until(soak_end).await;
            break;
        }
        tokio::time::sleep_until(next).await;
        let at = soak_start.elapsed().as_secs_f64();
        if next_kill <= next_broker {
            let victim = rng.below(chats.len());
            chats[victim].kill().await;
            sleep(rng.between(Duration::from_millis(500), Duration::from_millis(1500))).await;
            chats[victim].spawn().await?;
            process_restarts += 1;
            println!("chaos: t={at:.0}s killed chat {victim} (SIGKILL), back up");
            next_kill += kill_every;
        } else {
            let before = broker.streams().await;
            broker.kill().await;
            sleep(rng.between(Duration::from_millis(500), Duration::from_millis(1500))).await;
            broker.spawn().await?;
            if let Some(before) = before {
                let after = broker.streams().await.unwrap_or_default();
                println!("chaos: streams before the kill: {before}");
                println!("chaos: streams after the restart: {after}");
            }
            broker_restarts += 1;
            println!(
                "chaos: t={at:.0}s killed the broker (SIGKILL), back up after {:.1} s",
                soak_start.elapsed().as_secs_f64() - at
            );
            next_broker += broker_every;
        }
    }

    // Wind down: no more chaos, no more messages.
    stop_cuts.store(true, Ordering::Relaxed);
    let _ = cutter.await;
    let _ = stop_publishers.send(true);
    let mut acks = Vec::new();
    for publisher in publishers {
        acks.extend(
            publisher
                .await
                .map_err(|err| format!("a publisher: {err}"))?,
        );
    }
    let soak_secs = soak_start.elapsed().as_secs_f64();
    println!(
        "chaos: soak over after {soak_secs:.0} s: {} messages acknowledged; draining",
        acks.len()
    );

    // Drain: every client reaches the newest acknowledged id of its rooms.
    let mut newest = vec![0u64; options.rooms];
    for ack in &acks {
        newest[ack.room] = newest[ack.room].max(ack.id);
    }
    let drain_start = Instant::now();
    let drain_end = drain_start + Duration::from_secs(options.drain);
    let behind = |handles: &[ClientHandle]| {
        handles
            .iter()
            .filter(|h| {
                let target = h.rooms.iter().map(|&r| newest[r]).max().unwrap_or(0);
                h.last.load(Ordering::Relaxed) < target
            })
            .count()
    };
    let mut lagging = behind(&handles);
    while lagging > 0 && Instant::now() < drain_end {
        sleep(Duration::from_millis(200)).await;
        lagging = behind(&handles);
    }
    println!(
        "chaos: drained in {:.1} s ({lagging} clients still behind)",
        drain_start.elapsed().as_secs_f64()
    );

    // Close every client, then the servers' counts must come back to 0.
    let _ = stop_clients.send(true);
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.map_err(|err| format!("a client: {err}"))?);
    }
    let mut finals = Vec::new();
    let settle_start = Instant::now();
    for addr in processes.iter() {
        finals.push(settle_stats(*addr, Duration::from_secs(30)).await);
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();
    let counts_zero = finals.iter().all(|stats| {
        stats.as_ref().is_some_and(|s| {
            s["connections"].as_u64() == Some(0) && s["subscribers"].as_u64() == Some(0)
        })
    });

    for chat in &mut chats {
        chat.kill().await;
    }
    broker.kill().await;

    let result = audit(&logs, &acks, options.rooms);
    let ok = result.unsignalled == 0
        && result.duplicates == 0
        && result.order_violations == 0
        && result.wrong_text == 0
        && result.foreign == 0
        && result.silent_clients == 0
        && counts_zero;

    let finals_text: Vec<String> = finals
        .iter()
        .map(|stats| match stats {
            Some(s) => format!(
                "connections {}, subscribers {}",
                s["connections"], s["subscribers"]
            ),
            None => "no answer".to_owned(),
        })
        .collect();
    let c = &counters;
    println!();
    println!(
        "| {} | {} clients, {} rooms, {} s, {} msg/s, seed {} |",
        options.broker.name(),
        options.clients,
        options.rooms,
        options.secs,
        options.rate,
        options.seed
    );
    println!("|---|---|");
    let rows: Vec<(&str, String)> = vec![
        (
            "messages acknowledged (202)",
            get(&c.publish_acked).to_string(),
        ),
        (
            "publishes not acknowledged (503 / other / error or timeout)",
            format!(
                "{} / {} / {}",
                get(&c.publish_503),
                get(&c.publish_other),
                get(&c.publish_error)
            ),
        ),
        (
            "events delivered (all clients)",
            result.delivered.to_string(),
        ),
        (
            "  of acknowledged messages / of unacknowledged ones",
            format!("{} / {}", result.delivered_acked, result.delivered_unacked),
        ),
        (
            "acknowledged deliveries expected",
            result.expected.to_string(),
        ),
        (
            "client cuts (of which away 45-75 s)",
            format!("{} ({})", get(&c.cuts), get(&c.aways)),
        ),
        (
            "chat process kills + restarts",
            process_restarts.to_string(),
        ),
        ("broker kills + restarts", broker_restarts.to_string()),
        (
            "stream (re)connections / failed / 503 / other refusals",
            format!(
                "{} / {} / {} / {}",
                get(&c.connects),
                get(&c.connect_errors),
                get(&c.refused_503),
                get(&c.refused_other)
            ),
        ),
        (
            "streams ended by the server / read timeouts",
            format!("{} / {}", get(&c.ended_by_server), get(&c.read_timeouts)),
        ),
        (
            "resumes: Sse-Replay complete / history-lost",
            format!("{} / {}", get(&c.replay_complete), get(&c.replay_lost)),
        ),
        (
            "gaps signalled (history-lost signals, clients)",
            format!("{} ({} clients)", result.signals, result.clients_signalled),
        ),
        (
            "messages missed under a signal",
            result.missed_signalled.to_string(),
        ),
        ("**gaps unsignalled**", result.unsignalled.to_string()),
        ("**duplicates**", result.duplicates.to_string()),
        ("**order violations**", result.order_violations.to_string()),
        (
            "wrong text / foreign or unparsable events / clients with no message",
            format!(
                "{} / {} / {}",
                result.wrong_text, result.foreign, result.silent_clients
            ),
        ),
        (
            "**final counts** (chat 0; chat 1)",
            format!("{} (after {settle_secs:.1} s)", finals_text.join("; ")),
        ),
        ("result", if ok { "PASS" } else { "FAIL" }.to_owned()),
    ];
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    println!();
    for example in &result.examples {
        println!("chaos: {example}");
    }
    println!("chaos: {:.0} s in all", started.elapsed().as_secs_f64());
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let _ = std::fs::remove_dir_all(dir.join("broker"));
        println!("chaos: chat logs kept in {}", dir.display());
    }
    Ok(ok)
}
