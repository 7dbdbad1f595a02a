//! Load generator for the SSE benchmark servers of issue 6 (`examples/bench_server.rs`,
//! `examples/bench_peer_axum.rs`, or anything with the same API: `GET /events` is an SSE
//! stream, `POST /publish` broadcasts its raw body as one event with an incrementing id).
//!
//! ```text
//! cargo build --release --examples
//! taskset -c 1 target/release/examples/loadgen --url http://127.0.0.1:3100 \
//!     --server-pid "$PID" --clients 1000 --rate 200 --size 128 --duration 10
//! ```
//!
//! What it does, on one thread (it is meant to get one core, `taskset -c 1`):
//!
//! 1. Opens `--clients` SSE connections (plain HTTP/1.1 over `TcpStream`, chunked bodies
//!    decoded here; events parsed by a lean parser for the subset of the format the servers
//!    emit, without allocating per event, or with `--spec-decoder` by the spec-exact
//!    `tower_sse::client::Decoder`, which costs the load generator about twice as much per
//!    event), at most
//!    `--connect-concurrency` connecting at once, and waits until every one has its response
//!    headers.
//! 2. With `--idle`: waits `--settle` seconds and reports the server's RSS growth per connection
//!    (S2). Otherwise: `--publishers` keep-alive connections `POST /publish` for `--duration`
//!    seconds, at `--rate` messages per second in total, open loop (each request leaves at its
//!    scheduled time, answered or not: a server that falls behind shows as latency; how late
//!    the load generator itself wrote them is reported too), or with `--rate 0` flat out, each publisher with `--pipeline` requests in
//!    flight (HTTP/1.1 pipelining). Each body is `--size` bytes: the send time in nanoseconds since
//!    the load generator started (20 digits), padded with `x`. Then it waits until every open
//!    stream has every published event, or no event came for `--quiet` seconds, at most
//!    `--drain` seconds.
//! 3. Reports: latency (receive time of the read that carried the event minus the send time in
//!    the payload) p50 / p99 / max; delivered events per second (unique events received, over
//!    the time from the first publish to the last delivery); per stream, id gaps (events never
//!    received: missing in the middle, or at the end when the stream was closed early) and
//!    duplicates (an id not above the last one); streams the server closed early; the server's
//!    CPU time (utime + stime from `/proc/PID/stat`) per delivered event over the same window;
//!    the server's RSS (`VmRSS` in `/proc/PID/status`) before connecting, once connected and at
//!    the end; the load generator's own CPU use (if it is near 100 %, it was the bottleneck);
//!    and the CPU the rest of the machine used meanwhile (`/proc/stat`; noise, when large).
//!
//! Ids are compared as numbers: the digits after the last `-` (tower-sse's hub ids are
//! `<epoch>-<seq>`; the axum peer's are plain numbers).
//!
//! Options (all `--name value`): `--url` (default `http://127.0.0.1:3100`), `--path` (the SSE
//! stream, default `/events`), `--server-pid`
//! (no server figures without it), `--clients` (100), `--rate` (200, messages/s in total; `0`
//! flat out), `--size` (128 bytes, at least 21), `--duration` (10 s), `--publishers` (1),
//! `--pipeline` (1; requests in flight per publisher when flat out),
//! `--idle` (flag), `--spec-decoder` (flag), `--settle` (1 s; with `--idle` only: the wait
//! before the memory reading), `--delay` (0 s; when publishing: the wait after connecting,
//! before the first publish), `--drain` (10 s), `--quiet` (1 s),
//! `--connect-concurrency` (256), `--sources` (0; `N`: connect from the loopback addresses
//! 127.0.0.2 … 127.0.0.(N+1) in turn, to get past one address's port range for more than
//! about 28,000 connections), `--json` (flag: one JSON line instead of the text report, with
//! the latency histogram's non-empty buckets as `latency_hist`, to merge several reports),
//! `--label` (a name echoed in the JSON), `--wall-clock` (flag: timestamps in nanoseconds since
//! the Unix epoch rather than since the process started, so that the latencies of several load
//! generators on one machine agree), `--expect N` (with `--publishers 0`: subscribe only; after
//! connecting, print `loadgen: K of M connected` to stderr, then wait at most `--drain`
//! seconds for `N` events on every stream that another process publishes; the quiet time
//! starts with the first event). `benches/c100k.sh` runs several of these beside one
//! publishing load generator, past one process's file limit.
//!
//! Bounded: the process exits by itself after `duration + drain + 120` seconds whatever
//! happens. It needs one file descriptor per connection: raise `ulimit -n` first (it warns when
//! the soft limit is too low).

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};
use tower_sse::client::{Decoder, Frame};

/// Digits of the timestamp at the start of each payload.
const TS_DIGITS: usize = 20;
/// Read buffer per SSE connection.
const READ_BUF: usize = 8 * 1024;

/// Command-line options.
#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    server_pid: Option<u32>,
    clients: usize,
    rate: f64,
    size: usize,
    duration: f64,
    publishers: usize,
    pipeline: usize,
    idle: bool,
    spec_decoder: bool,
    settle: f64,
    delay: f64,
    drain: f64,
    quiet: f64,
    connect_concurrency: usize,
    /// Loopback source addresses to connect from (127.0.0.2 onwards), 0: the system's
    /// choice; each gives about 28,000 connections to one server port.
    sources: u8,
    json: bool,
    label: String,
    /// Times in nanoseconds since the Unix epoch instead of since this process started, so
    /// several load generators on one machine agree (`--wall-clock`).
    wall_clock: bool,
    /// Subscribe only (`--publishers 0`): the number of events another process publishes.
    expect: Option<u64>,
}

fn usage(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    eprintln!(
        "usage: loadgen [--url http://HOST:PORT] [--path /events] [--server-pid PID] [--clients N] [--rate MSG_PER_S|0] \
         [--size BYTES] [--duration S] [--publishers N] [--pipeline N] [--idle] [--spec-decoder] [--settle S] [--delay S] [--drain S] \
         [--quiet S] [--connect-concurrency N] [--sources N] [--json] [--label NAME] [--wall-clock] [--expect N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut url = "http://127.0.0.1:3100".to_owned();
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3100)),
        host: String::new(),
        path: "/events".to_owned(),
        server_pid: None,
        clients: 100,
        rate: 200.0,
        size: 128,
        duration: 10.0,
        publishers: 1,
        pipeline: 1,
        idle: false,
        spec_decoder: false,
        settle: 1.0,
        delay: 0.0,
        drain: 10.0,
        quiet: 1.0,
        connect_concurrency: 256,
        sources: 0,
        json: false,
        label: String::new(),
        wall_clock: false,
        expect: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        fn num<T: std::str::FromStr>(flag: &str, value: String) -> T {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {value}")))
        }
        match flag.as_str() {
            "--url" => url = value(),
            "--path" => args.path = value(),
            "--server-pid" => args.server_pid = Some(num(&flag, value())),
            "--clients" => args.clients = num(&flag, value()),
            "--rate" => args.rate = num(&flag, value()),
            "--size" => args.size = num(&flag, value()),
            "--duration" => args.duration = num(&flag, value()),
            "--publishers" => args.publishers = num(&flag, value()),
            "--pipeline" => args.pipeline = num(&flag, value()),
            "--settle" => args.settle = num(&flag, value()),
            "--delay" => args.delay = num(&flag, value()),
            "--drain" => args.drain = num(&flag, value()),
            "--quiet" => args.quiet = num(&flag, value()),
            "--connect-concurrency" => args.connect_concurrency = num(&flag, value()),
            "--sources" => {
                args.sources = num(&flag, value());
                if args.sources > 253 {
                    usage("--sources: at most 253 (127.0.0.2 to 127.0.0.254)");
                }
            }
            "--label" => args.label = value(),
            "--idle" => args.idle = true,
            "--spec-decoder" => args.spec_decoder = true,
            "--json" => args.json = true,
            "--wall-clock" => args.wall_clock = true,
            "--expect" => args.expect = Some(num(&flag, value())),
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown option {other}")),
        }
    }
    let host = url
        .strip_prefix("http://")
        .unwrap_or_else(|| usage("--url must start with http://"))
        .trim_end_matches('/');
    args.addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {host}")));
    args.host = host.to_owned();
    if args.size <= TS_DIGITS {
        usage("--size must be more than 20 bytes (the timestamp)");
    }
    if !(args.rate >= 0.0 && args.duration > 0.0) {
        usage("--rate must be >= 0 and --duration > 0");
    }
    match (args.publishers, args.expect) {
        (0, None) => usage("--publishers 0 (subscribe only) needs --expect N"),
        (0, Some(_)) => {}
        (_, Some(_)) => usage("--expect goes with --publishers 0 (subscribe only)"),
        _ => {}
    }
    args.pipeline = args.pipeline.max(1);
    args.connect_concurrency = args.connect_concurrency.max(1);
    args
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process, all threads, in microseconds.
fn cpu_us(pid: &str, ticks: u64) -> Option<u64> {
    cpu_split_us(pid, ticks).map(|(user, system)| user + system)
}

/// (utime, stime) of a process, all threads, in microseconds. The kernel splits them by
/// sampling at its clock ticks: over thousands of ticks a fair split, not an exact one.
fn cpu_split_us(pid: &str, ticks: u64) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 (1-based) are utime and stime; `fields[0]` is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime * 1_000_000 / ticks, stime * 1_000_000 / ticks))
}

/// Busy CPU time of the whole machine (all CPUs, everything but idle and iowait), in
/// microseconds.
fn machine_busy_us(ticks: u64) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle) * 1_000_000 / ticks)
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The soft limit on open files.
fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets, 64 per power of two (< 1.6 % error), lock-free.

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    fn index(value: u64) -> usize {
        if value < SUB as u64 {
            return value as usize;
        }
        let exp = 63 - value.leading_zeros();
        let shift = exp - SUB_BITS;
        let mantissa = (value >> shift) as usize & (SUB - 1);
        (shift as usize + 1) * SUB + mantissa
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> u64 {
        if index < SUB {
            return index as u64;
        }
        let shift = (index / SUB - 1) as u32;
        let low = ((SUB + index % SUB) as u64) << shift;
        low + ((1u64 << shift) >> 1)
    }

    fn record(&self, value: u64) {
        self.counts[Self::index(value)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// The non-empty buckets: (middle value, count).
    fn buckets(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(index, count)| (Self::value(index), count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= rank {
                return Self::value(index).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct Shared {
    epoch: Instant,
    /// Added to every time: 0, or with `--wall-clock` the Unix time of `epoch` in nanoseconds.
    base_ns: u64,
    latency: Histogram,
    /// How late each `--rate` publish was written against its schedule.
    lateness: Histogram,
    /// Unique events received, all streams.
    delivered: AtomicU64,
    /// Nanoseconds since `epoch` of the last read that delivered an event.
    last_delivery: AtomicU64,
    /// Streams with their response headers.
    connected: AtomicU64,
    connect_failures: AtomicU64,
    /// Set when the load generator stops on purpose (a stream ending after that is not early).
    stopping: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base_ns + self.epoch.elapsed().as_nanos() as u64
    }
}

/// One SSE stream's account.
#[derive(Default)]
struct Stream {
    /// Unique events received (ids above every earlier one).
    received: AtomicU64,
    /// Events skipped over inside the stream (sum of id jumps beyond +1).
    jumps: AtomicU64,
    duplicates: AtomicU64,
    /// The server ended the stream (or the connection) before the load generator stopped.
    closed_early: AtomicBool,
    /// Events without a parsable id or timestamp.
    malformed: AtomicU64,
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1, just enough

/// Reads up to the end of the SSE response head; returns (status, chunked, how many bytes
/// after the head are now at the start of `buf`).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, bool, usize)> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= 64 * 1024 {
                return Err(io::Error::other("response head too long"));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| io::Error::other("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other("bad status line"))?;
        let chunked = lines.any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("transfer-encoding")
                    && value.trim().eq_ignore_ascii_case("chunked")
            })
        });
        buf.copy_within(end + 4..filled, 0);
        return Ok((status, chunked, filled - end - 4));
    }
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: usize,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    /// In a chunk extension, up to the LF.
    SizeRest,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero-size) chunk.
    Done,
}

impl Chunked {
    /// Feeds `input`, hands the body bytes to `out`; `Ok(true)` once the body has ended.
    fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or("chunk size overflow")?;
                        }
                        b'\r' | b';' | b' ' => self.state = ChunkState::SizeRest,
                        b'\n' => self.end_size(),
                        _ => return Err(format!("bad chunk size byte {b:#x}")),
                    }
                }
                ChunkState::SizeRest => {
                    if let Some(at) = memchr_lf(input) {
                        input = &input[at + 1..];
                        self.end_size();
                    } else {
                        input = &[];
                    }
                }
                ChunkState::Data => {
                    let n = self.size.min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.size -= n;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err("missing CRLF after chunk".into()),
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
        Ok(self.state == ChunkState::Done)
    }

    fn end_size(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }
}

fn memchr_lf(input: &[u8]) -> Option<usize> {
    input.iter().position(|&b| b == b'\n')
}

// ---------------------------------------------------------------------------------------------
// SSE streams

/// The number in an id: the digits after the last `-`.
fn id_seq(id: &[u8]) -> Option<u64> {
    digits(id.rsplit(|&b| b == b'-').next()?)
}

/// The send time at the start of a payload.
fn payload_ts(data: &[u8]) -> Option<u64> {
    digits(data.get(..TS_DIGITS)?)
}

fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// One dispatched event, as the load generator needs it: (id number, send time).
type Seen = (Option<u64>, Option<u64>);

/// Turns the body bytes into events.
enum Parser {
    /// Lean: the subset of the event-stream format both servers emit (LF or CRLF line ends;
    /// `data`, `id` and comment lines; other fields ignored), no allocation per event.
    Lean(Lean),
    /// `tower_sse::client::Decoder`, spec-exact, one `MessageEvent` (three strings) per event.
    Spec(Box<Decoder>),
}

impl Parser {
    fn feed(&mut self, data: &[u8], out: &mut Vec<Seen>) {
        match self {
            Parser::Lean(lean) => lean.feed(data, out),
            Parser::Spec(decoder) => {
                decoder.feed(data);
                while let Ok(Some(frame)) = decoder.decode() {
                    if let Frame::Event(event) = frame {
                        out.push((
                            id_seq(event.id().as_bytes()),
                            payload_ts(event.data().as_bytes()),
                        ));
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Lean {
    /// An incomplete line carried over from the last read.
    partial: Vec<u8>,
    /// The last event id (it carries over to events without an `id` field, as in the spec).
    id: Option<u64>,
    ts: Option<u64>,
    has_data: bool,
}

impl Lean {
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Seen>) {
        if !self.partial.is_empty() {
            let Some(at) = memchr::memchr(b'\n', data) else {
                self.partial.extend_from_slice(data);
                return;
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&data[..at]);
            self.line(&line, out);
            line.clear();
            self.partial = line;
            data = &data[at + 1..];
        }
        while let Some(at) = memchr::memchr(b'\n', data) {
            self.line(&data[..at], out);
            data = &data[at + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Seen>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                out.push((self.id, self.ts));
            }
            self.has_data = false;
            self.ts = None;
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // a comment (keep-alive)
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" if !self.has_data => {
                self.has_data = true;
                self.ts = payload_ts(value);
            }
            b"id" => self.id = id_seq(value),
            _ => {}
        }
    }
}

/// Opens one SSE stream and reads it until it ends or the runtime is dropped.
async fn sse_stream(
    args: Arc<Args>,
    shared: Arc<Shared>,
    account: Arc<Stream>,
    permits: Arc<Semaphore>,
    index: usize,
) {
    let permit = permits.acquire_owned().await;
    let mut buf = vec![0u8; READ_BUF];
    let connected = async {
        let mut tcp = match args.sources {
            0 => TcpStream::connect(args.addr).await?,
            n => {
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(n)) as u8);
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                socket.connect(args.addr).await?
            }
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            args.path, args.host
        );
        tcp.write_all(request.as_bytes()).await?;
        let (status, chunked, leftover) = read_head(&mut tcp, &mut buf).await?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "GET {}: status {status}",
                args.path
            )));
        }
        io::Result::Ok((tcp, chunked, leftover))
    }
    .await;
    drop(permit);
    let (mut tcp, chunked, leftover) = match connected {
        Ok(ok) => ok,
        Err(err) => {
            if shared.connect_failures.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("loadgen: connect: {err}");
            }
            account.closed_early.store(true, Ordering::Relaxed);
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);

    let mut body = Chunked::default();
    let mut parser = if args.spec_decoder {
        Parser::Spec(Box::default())
    } else {
        Parser::Lean(Lean::default())
    };
    let mut seen: Vec<Seen> = Vec::new();
    let mut last: Option<u64> = None;
    let mut pending = leftover;
    loop {
        let n = if pending > 0 {
            std::mem::take(&mut pending)
        } else {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            }
        };
        let now = shared.now_ns();
        let ended = if chunked {
            match body.feed(&buf[..n], &mut |data| parser.feed(data, &mut seen)) {
                Ok(ended) => ended,
                Err(err) => {
                    eprintln!("loadgen: bad chunked body: {err}");
                    break;
                }
            }
        } else {
            parser.feed(&buf[..n], &mut seen);
            false
        };
        let mut delivered = 0;
        for (seq, sent) in seen.drain(..) {
            let (Some(seq), Some(sent)) = (seq, sent) else {
                account.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match last {
                Some(prev) if seq <= prev => {
                    account.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(prev) if seq > prev + 1 => {
                    account.jumps.fetch_add(seq - prev - 1, Ordering::Relaxed);
                }
                _ => {}
            }
            last = Some(seq);
            shared.latency.record(now.saturating_sub(sent));
            delivered += 1;
        }
        if delivered > 0 {
            account.received.fetch_add(delivered, Ordering::Relaxed);
            shared.delivered.fetch_add(delivered, Ordering::Relaxed);
            shared.last_delivery.fetch_max(now, Ordering::Relaxed);
        }
        if ended {
            break;
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        account.closed_early.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Publishers

#[derive(Default)]
struct PublishCount {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// The next complete response head in `buf[..*filled]`, consumed with its body: its status.
/// `Ok(None)` when more bytes are needed.
fn take_response(buf: &mut [u8], filled: &mut usize) -> io::Result<Option<u16>> {
    let Some(end) = buf[..*filled].windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| io::Error::other("bad head"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    let mut length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(io::Error::other("unexpected chunked answer to POST"));
            }
        }
    }
    let total = end + 4 + length;
    if total > *filled {
        return Ok(None);
    }
    buf.copy_within(total..*filled, 0);
    *filled -= total;
    Ok(Some(status))
}

/// Most requests in flight on one publishing connection in `--rate` mode.
const MAX_IN_FLIGHT: usize = 100_000;

/// One keep-alive publishing connection: `POST /publish` until `deadline`.
///
/// With a `period` it is open loop: each request goes out at its scheduled time whether or not
/// the earlier ones were answered (HTTP/1.1 pipelining), so a server that falls behind shows it
/// as latency instead of slowing the publisher down (no coordinated omission). Each request
/// carries the time it was written; how late that was against the schedule (the load
/// generator's own timer and scheduling delay, which is not the server's) is reported apart.
/// Without a `period` it is flat out: `--pipeline` requests in flight.
async fn publisher(
    args: Arc<Args>,
    shared: Arc<Shared>,
    count: Arc<PublishCount>,
    period: Option<Duration>,
    deadline: tokio::time::Instant,
) -> io::Result<()> {
    let tcp = TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let (mut rd, mut wr) = tcp.into_split();
    let depth = if period.is_some() {
        MAX_IN_FLIGHT
    } else {
        args.pipeline
    };
    let permits = Arc::new(Semaphore::new(depth));
    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());

    // Answers, in order.
    let reader = tokio::spawn({
        let (count, permits, sent, finished, wake) = (
            count.clone(),
            permits.clone(),
            sent.clone(),
            finished.clone(),
            wake.clone(),
        );
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            let mut answered = 0;
            loop {
                while let Some(status) = take_response(&mut buf, &mut filled)? {
                    answered += 1;
                    permits.add_permits(1);
                    if status == 204 || status == 200 {
                        count.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        count.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if finished.load(Ordering::Acquire) && answered == sent.load(Ordering::Acquire) {
                    return io::Result::Ok(());
                }
                if filled == buf.len() {
                    return Err(io::Error::other("response head too long"));
                }
                tokio::select! {
                    read = rd.read(&mut buf[filled..]) => match read? {
                        0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                        n => filled += n,
                    },
                    () = wake.notified() => {}
                }
            }
        }
    });

    let head = format!(
        "POST /publish HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        args.host, args.size
    );
    let mut request = head.into_bytes();
    let body_at = request.len();
    request.resize(body_at + args.size, b'x');
    request[body_at + TS_DIGITS] = b' ';
    let start = tokio::time::Instant::now();
    let start_ns = shared.now_ns();
    let mut n: u32 = 0;
    let written = async {
        loop {
            let ts = match period {
                Some(period) => {
                    let offset = period * n;
                    if start + offset >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(start + offset).await;
                    permits.acquire().await.map_err(io::Error::other)?.forget();
                    let now = shared.now_ns();
                    let scheduled = start_ns + offset.as_nanos() as u64;
                    shared.lateness.record(now.saturating_sub(scheduled));
                    now
                }
                None => {
                    permits.acquire().await.map_err(io::Error::other)?.forget();
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    shared.now_ns()
                }
            };
            let ts = format!("{ts:0width$}", width = TS_DIGITS);
            request[body_at..body_at + TS_DIGITS].copy_from_slice(ts.as_bytes());
            wr.write_all(&request).await?;
            n += 1;
            sent.fetch_add(1, Ordering::Release);
        }
        io::Result::Ok(())
    }
    .await;
    finished.store(true, Ordering::Release);
    wake.notify_one();
    let answers = tokio::time::timeout(Duration::from_secs_f64(args.drain), reader).await;
    written?;
    match answers {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err(io::Error::other(err)),
        Err(_) => Err(io::Error::other(
            "publish answers still missing after --drain",
        )),
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Arc::new(parse_args());
    let hard_limit = Duration::from_secs_f64(args.duration + args.drain + 120.0);
    std::thread::spawn(move || {
        std::thread::sleep(hard_limit);
        eprintln!("loadgen: hard time limit reached, exiting");
        std::process::exit(3);
    });
    if let Some(limit) = nofile_limit() {
        let needed = (args.clients + args.publishers + 64) as u64;
        if limit < needed {
            eprintln!(
                "loadgen: warning: open-file limit {limit} < {needed} needed; raise it with `ulimit -n`"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(run(args.clone()));
    // Dropping the runtime drops (and closes) every stream.
    drop(runtime);
    if args.json {
        println!("{report}");
    } else {
        print_text(&args, &report);
    }
}

async fn run(args: Arc<Args>) -> serde_json::Value {
    let ticks = clock_ticks();
    let pid = args.server_pid.map(|pid| pid.to_string());
    let pid = pid.as_deref();
    let server_cpu = || pid.and_then(|pid| cpu_split_us(pid, ticks));
    let server_rss = || pid.and_then(rss_kib);
    let self_cpu = || cpu_us("self", ticks);

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        base_ns: if args.wall_clock {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        } else {
            0
        },
        latency: Histogram::new(),
        lateness: Histogram::new(),
        delivered: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        connect_failures: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });

    // 1. Connect.
    let rss_before = server_rss();
    let connect_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let accounts: Vec<Arc<Stream>> = (0..args.clients).map(|_| Arc::default()).collect();
    for (index, account) in accounts.iter().enumerate() {
        tokio::spawn(sse_stream(
            args.clone(),
            shared.clone(),
            account.clone(),
            permits.clone(),
            index,
        ));
    }
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = shared.connected.load(Ordering::Relaxed)
            + shared.connect_failures.load(Ordering::Relaxed);
        if done >= args.clients as u64 || Instant::now() > connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    let failures = shared.connect_failures.load(Ordering::Relaxed);

    let mut report = json!({
        "label": args.label,
        "mode": if args.idle { "idle" } else { "publish" },
        "path": args.path,
        "clients": args.clients,
        "connected": connected,
        "connect_failures": failures,
        "connect_secs": connect_secs,
        "rss_before_kib": rss_before,
    });

    if args.idle {
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        let rss_after = server_rss();
        let per_conn = match (rss_before, rss_after) {
            (Some(before), Some(after)) if connected > 0 => {
                Some(after.saturating_sub(before) as f64 * 1024.0 / connected as f64)
            }
            _ => None,
        };
        report["rss_connected_kib"] = json!(rss_after);
        report["rss_per_conn_bytes"] = json!(per_conn);
        shared.stopping.store(true, Ordering::Relaxed);
        return report;
    }

    // 2. Publish (after `--delay`: `benches/instructions.sh` zeroes the server's counters
    // meanwhile).
    if args.delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.delay)).await;
    }
    let rss_connected = server_rss();
    let cpu0 = server_cpu();
    let self0 = self_cpu();
    let busy0 = machine_busy_us(ticks);
    let t0 = shared.now_ns();
    let publish_start = tokio::time::Instant::now();
    let deadline = publish_start + Duration::from_secs_f64(args.duration);
    let count = Arc::new(PublishCount::default());
    let period =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.publishers as f64 / args.rate));
    let mut tasks = Vec::new();
    if let Some(expect) = args.expect {
        // Subscribe only: another process publishes; say when this one is ready for it.
        eprintln!(
            "loadgen: {connected} of {} connected, expecting {expect} events",
            args.clients
        );
    }
    for _ in 0..args.publishers {
        tasks.push(tokio::spawn(publisher(
            args.clone(),
            shared.clone(),
            count.clone(),
            period,
            deadline,
        )));
    }
    let mut publish_errors = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                publish_errors += 1;
                eprintln!("loadgen: publisher: {err}");
            }
            Err(err) => {
                publish_errors += 1;
                eprintln!("loadgen: publisher task: {err}");
            }
        }
    }
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let published = args
        .expect
        .unwrap_or_else(|| count.ok.load(Ordering::Relaxed));

    // 3. Drain: until every open stream has every event, or nothing arrives for `quiet`.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    let mut last_seen = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let complete = accounts.iter().all(|a| {
            a.closed_early.load(Ordering::Relaxed)
                || a.received.load(Ordering::Relaxed) >= published
        });
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last_seen.0 {
            last_seen = (delivered, Instant::now());
        }
        // Subscribing only, the quiet time starts with the first event.
        let waiting = args.expect.is_some() && delivered == 0;
        if complete
            || Instant::now() > drain_deadline
            || (!waiting && last_seen.1.elapsed().as_secs_f64() > args.quiet)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = server_cpu();
    let self1 = self_cpu();
    let busy1 = machine_busy_us(ticks);
    let t_end = shared.now_ns();
    shared.stopping.store(true, Ordering::Relaxed);
    let rss_end = server_rss();

    // 4. Account.
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let last_delivery = shared.last_delivery.load(Ordering::Relaxed).max(t0);
    let window = (last_delivery - t0) as f64 / 1e9;
    let (mut lost, mut jumps, mut duplicates, mut closed_early, mut malformed) = (0, 0, 0, 0, 0);
    let mut streams_with_gaps = 0;
    for account in &accounts {
        let received = account.received.load(Ordering::Relaxed);
        let missing = published.saturating_sub(received);
        lost += missing;
        streams_with_gaps += u64::from(missing > 0);
        jumps += account.jumps.load(Ordering::Relaxed);
        duplicates += account.duplicates.load(Ordering::Relaxed);
        closed_early += u64::from(account.closed_early.load(Ordering::Relaxed));
        malformed += account.malformed.load(Ordering::Relaxed);
    }
    let server_user_us = cpu0.zip(cpu1).map(|(a, b)| b.0.saturating_sub(a.0));
    let server_cpu_us = cpu0
        .zip(cpu1)
        .map(|(a, b)| (b.0 + b.1).saturating_sub(a.0 + a.1));
    let self_cpu_us = self0.zip(self1).map(|(a, b)| b.saturating_sub(a));
    // Everything else the machine did meanwhile: other processes, and kernel work not charged
    // to either process (softirqs may be charged to whoever runs). Noise, when large.
    let other_cpu_us = busy0
        .zip(busy1)
        .map(|(a, b)| b.saturating_sub(a))
        .map(|busy| busy.saturating_sub(server_cpu_us.unwrap_or(0) + self_cpu_us.unwrap_or(0)));
    let ms = |ns: u64| ns as f64 / 1e6;
    let extra = json!({
        "rate": args.rate,
        "size": args.size,
        "publishers": args.publishers,
        "pipeline": args.pipeline,
        "spec_decoder": args.spec_decoder,
        "published": published,
        "publish_failed": count.failed.load(Ordering::Relaxed),
        "publish_errors": publish_errors,
        "publish_secs": publish_secs,
        "publish_rate": published as f64 / publish_secs,
        "expected": published * connected,
        "delivered": delivered,
        "delivery_secs": window,
        "events_per_sec": if window > 0.0 { delivered as f64 / window } else { 0.0 },
        "p50_ms": ms(shared.latency.quantile(0.50)),
        "p99_ms": ms(shared.latency.quantile(0.99)),
        "max_ms": ms(shared.latency.max.load(Ordering::Relaxed)),
        // The latency histogram's non-empty buckets, [middle of bucket in ns, count], to
        // merge the reports of several load generators (`--wall-clock`).
        "latency_hist": shared.latency.buckets(),
        "publish_late_p99_ms": ms(shared.lateness.quantile(0.99)),
        "publish_late_max_ms": ms(shared.lateness.max.load(Ordering::Relaxed)),
        "lost": lost,
        "id_jumps": jumps,
        "duplicates": duplicates,
        "streams_with_gaps": streams_with_gaps,
        "closed_early": closed_early,
        "malformed": malformed,
        "server_cpu_us": server_cpu_us,
        "cpu_us_per_event": server_cpu_us
            .filter(|_| delivered > 0)
            .map(|us| us as f64 / delivered as f64),
        // Of it, in user space (the rest is the kernel's: the writes, epoll).
        "server_user_us": server_user_us,
        "server_cpu_share": server_cpu_us.map(|us| us as f64 / ((t_end - t0) as f64 / 1e3)),
        "loadgen_cpu_share": self_cpu_us.map(|us| us as f64 / ((t_end - t0) as f64 / 1e3)),
        "other_cpu_cores": other_cpu_us.map(|us| us as f64 / ((t_end - t0) as f64 / 1e3)),
        "rss_connected_kib": rss_connected,
        "rss_end_kib": rss_end,
    });
    if let (Some(object), serde_json::Value::Object(more)) = (report.as_object_mut(), extra) {
        object.extend(more);
    }
    report
}

fn print_text(args: &Args, r: &serde_json::Value) {
    let f = |key: &str| {
        r[key]
            .as_f64()
            .map_or("n/a".to_owned(), |v| format!("{v:.2}"))
    };
    let i = |key: &str| r[key].as_u64().map_or("n/a".to_owned(), |v| v.to_string());
    println!(
        "connections: {}/{} in {} s ({} failed)",
        i("connected"),
        args.clients,
        f("connect_secs"),
        i("connect_failures")
    );
    if args.idle {
        println!(
            "server RSS: {} KiB before, {} KiB connected: {} bytes per connection",
            i("rss_before_kib"),
            i("rss_connected_kib"),
            f("rss_per_conn_bytes")
        );
        return;
    }
    println!(
        "published: {} in {} s ({} msg/s, {} failed)",
        i("published"),
        f("publish_secs"),
        f("publish_rate"),
        i("publish_failed")
    );
    println!(
        "delivered: {} of {} expected, {} events/s over {} s",
        i("delivered"),
        i("expected"),
        f("events_per_sec"),
        f("delivery_secs")
    );
    println!(
        "latency: p50 {} ms, p99 {} ms, max {} ms (publishes written late: p99 {} ms, max {} ms)",
        f("p50_ms"),
        f("p99_ms"),
        f("max_ms"),
        f("publish_late_p99_ms"),
        f("publish_late_max_ms")
    );
    println!(
        "lost: {} events ({} streams, {} id jumps), duplicates: {}, closed early: {}, malformed: {}",
        i("lost"),
        i("streams_with_gaps"),
        i("id_jumps"),
        i("duplicates"),
        i("closed_early"),
        i("malformed")
    );
    println!(
        "server CPU: {} us ({} us per event, {} of a core; user {} us); load generator: {} \
         of a core; everything else: {} cores",
        i("server_cpu_us"),
        f("cpu_us_per_event"),
        f("server_cpu_share"),
        i("server_user_us"),
        f("loadgen_cpu_share"),
        f("other_cpu_cores")
    );
    println!(
        "server RSS: {} KiB before, {} KiB connected, {} KiB at the end",
        i("rss_before_kib"),
        i("rss_connected_kib"),
        i("rss_end_kib")
    );
}
