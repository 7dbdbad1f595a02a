//! The Redis Streams backend (feature `redis`): several processes act as one hub.
//!
//! # Data path
//!
//! ```text
//!  publish ──XADD (MAXLEN ~ history)──► Redis stream "<prefix><topic>"
//!                                           │
//!    one reader task per process, one connection: XREAD BLOCK over every topic that has
//!    local subscribers, from the last id it read
//!                                           │  encode once per process ("id: <stream id>")
//!                                           ▼
//!                       local topic (history cache + shared ring) ──► subscribers
//! ```
//!
//! - **Ids** are the stream entry ids (`1700000000000-0`), so a `Last-Event-ID` means the same
//!   on every process and across restarts of the processes. An id the publisher set is
//!   replaced.
//! - **Replay**: from the local cache when it holds everything after the id (no round trip);
//!   otherwise `XRANGE` after the id, then a hand-off to live under the topic lock with no gap
//!   and no duplicate (live events up to the last one fetched are skipped by id).
//! - **Unknown ids**: the id must still be in the stream (`XRANGE id +` starts with it);
//!   trimmed, wiped by a Redis restart without persistence, or never issued, it is
//!   [`Replay::HistoryLost`], as with the in-memory hub.
//! - **Faults**: publishing and subscribing fail fast with `Unavailable` (a command timeout,
//!   default 2 s) while Redis is down; the reader and the pub/sub listener reconnect with
//!   backoff and go on from the last id read, so nothing Redis kept is lost.
//! - [`Hub::send_to`](super::Hub::send_to) and [`Hub::broadcast`](super::Hub::broadcast) go to
//!   every process over Redis pub/sub: live only, never replayed.
//! - [`Hub::close_topic`](super::Hub::close_topic) appends a closing entry: every process
//!   delivers the final event, then ends its subscribers' streams; an id from before the close
//!   is history lost for the topic that follows.
//!
//! # Connections per process
//!
//! Three, whatever the number of clients or topics: commands (`XADD`, `XRANGE`, ...), the
//! blocking reader, and pub/sub.

use std::{
    fmt,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use redis::{AsyncConnectionConfig, Client, Value, aio::ConnectionManager};
use tokio::{sync::mpsc, time::Instant};

use super::{
    Inner, PublishError, SubscribeError, SubscribeRequest, Subscription, lock, topic::Topic,
};
use crate::{
    EncodedEvent, Event,
    replay::{Replay, UnknownId},
};

/// The stream entry field that holds the event's encoded fields (without an id).
const DATA: &str = "d";
/// Present on the entry that closes the topic.
const CLOSE: &str = "close";
/// How many entries one `XREAD` round takes per stream.
const READ_COUNT: usize = 512;
/// How long one `XREAD` blocks before it looks at its topics again.
const BLOCK_MS: u64 = 5000;

/// A connection to Redis for a [`Hub`](super::Hub): see [`HubBuilder::redis`](super::HubBuilder::redis).
///
/// # How it works
///
/// - **Publishing** is `XADD <prefix><topic> MAXLEN ~ <history_events> * d <fields>`: the
///   event's fields without an id. The entry id is the event id, the same on every process
///   and across restarts of the processes. An id the publisher set is replaced.
///   [`Hub::publish_many`](super::Hub::publish_many) appends to every stream under one id
///   (a small Lua script), like the in-memory hub.
/// - **Reading**: each process has one reader connection that follows every topic with local
///   subscribers (`XREAD BLOCK`, interrupted with `CLIENT UNBLOCK` when a topic is added),
///   encodes each entry once (`id: <entry id>` last) and hands it to the local subscribers
///   through the hub's shared ring. Three connections per process in all: commands, reader,
///   pub/sub.
/// - **Replay**: from the process's cache when it holds everything after the
///   `Last-Event-ID`; otherwise `XRANGE` after it, then a hand-off to live under the topic's
///   lock, live events already in the backlog skipped by id: no gap, no duplicate. The id must
///   still be in the stream; trimmed, lost in a Redis restart without persistence, or never
///   issued, it is [`Replay::HistoryLost`].
/// - **Faults**: while Redis is down, publishing and subscribing fail within the
///   [`timeout`](Self::timeout) with `Unavailable` (an HTTP server answers `503`); the reader
///   and the pub/sub listener reconnect with backoff (100 ms doubling to 5 s, jittered) and go
///   on from the last entry they read, so subscribers lose nothing Redis kept.
/// - [`Hub::send_to`](super::Hub::send_to) and [`Hub::broadcast`](super::Hub::broadcast) reach
///   every process over pub/sub, live only; [`Hub::close_topic`](super::Hub::close_topic)
///   appends a closing entry: every process delivers the final event and ends the topic's
///   streams, and an id from before the close is history lost for the topic that follows.
/// - Streams are never deleted by the hub; each is bounded by `MAXLEN`. A topic exists as long
///   as its stream: after `close_topic` the stream stays (so with
///   [`auto_create(false)`](super::HubBuilder::auto_create) it can still be published to), and
///   each close appends a closing entry.
/// - The event [`Hub::publish`](super::Hub::publish) returns is encoded by the publisher: the
///   same bytes its subscribers get, but not the same buffer (each process encodes once).
/// - One Redis server (or a primary with replicas): Redis Cluster is not supported, as
///   `publish_many` and the reader use several keys in one command.
///
/// ```no_run
/// use tower_sse::hub::{Hub, RedisBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let redis = match RedisBackend::connect("redis://127.0.0.1:6379").await {
///     Ok(redis) => redis.key_prefix("chat:"),
///     Err(err) => {
///         eprintln!("error: {err}");
///         std::process::exit(1);
///     }
/// };
/// let hub = Hub::builder().redis(redis).build();
/// # drop(hub);
/// # }
/// ```
pub struct RedisBackend {
    client: Client,
    commands: ConnectionManager,
    prefix: Box<str>,
    timeout: Duration,
}

/// Why [`RedisBackend::connect`] failed: a bad URL, or Redis cannot be reached.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = tower_sse::hub::RedisBackend::connect("not a url").await.unwrap_err();
/// assert!(err.to_string().contains("not a url"));
/// # }
/// ```
#[derive(Debug)]
pub struct RedisError {
    url: String,
    source: redis::RedisError,
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use Redis at {:?}: {}", self.url, self.source)
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl RedisBackend {
    /// How long a command may take before the caller gets `Unavailable` (default 2 s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Connects to `url` (`redis://host:port/db`) and checks the server answers.
    ///
    /// # Errors
    ///
    /// [`RedisError`] when the URL is invalid or the server cannot be reached in
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sse::hub::RedisError> {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379").await?;
    /// # drop(redis); Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        let error = |source| RedisError {
            url: url.to_owned(),
            source,
        };
        let client = Client::open(url).map_err(error)?;
        let timeout = Self::DEFAULT_TIMEOUT;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let mut commands = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(error)?;
        redis::cmd("PING")
            .query_async::<()>(&mut commands)
            .await
            .map_err(error)?;
        Ok(Self {
            client,
            commands,
            prefix: "sse:".into(),
            timeout,
        })
    }

    /// The prefix of the stream keys and channels (default `"sse:"`): topic `t` is the stream
    /// `<prefix>t`. Hubs that should act as one use the same prefix.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .key_prefix("myapp:events:");
    /// # drop(redis);
    /// # }
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into_boxed_str();
        self
    }

    /// How long a publish or a replay read may wait for Redis before it fails with
    /// `Unavailable` (default [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .timeout(std::time::Duration::from_millis(500));
    /// # drop(redis);
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.client.get_connection_info().addr())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The hub's side of the backend.
pub(super) struct Shared {
    backend: RedisBackend,
    /// Topics for the reader to follow.
    follow: mpsc::UnboundedSender<Follow>,
    /// Taken by the reader task when it starts.
    follow_rx: Mutex<Option<mpsc::UnboundedReceiver<Follow>>>,
    /// How many follows were sent, and how many the reader has taken. `order` makes the
    /// ticket and the send one step, so tickets follow the queue's order.
    order: Mutex<()>,
    sent: AtomicU64,
    taken: Arc<AtomicU64>,
    /// The reader connection's `CLIENT ID` while it may be blocked, else 0.
    reader_id: Arc<AtomicI64>,
    started: OnceLock<()>,
}

struct Follow {
    topic: Arc<Topic>,
    key: Box<str>,
    /// The last stream id read (`"0-0"` for the start).
    last: String,
}

impl Shared {
    pub(super) fn new(backend: RedisBackend) -> Self {
        let (follow, follow_rx) = mpsc::unbounded_channel();
        Self {
            backend,
            follow,
            follow_rx: Mutex::new(Some(follow_rx)),
            order: Mutex::new(()),
            sent: AtomicU64::new(0),
            taken: Arc::new(AtomicU64::new(0)),
            reader_id: Arc::new(AtomicI64::new(0)),
            started: OnceLock::new(),
        }
    }

    fn key(&self, topic: &str) -> String {
        format!("{}{topic}", self.backend.prefix)
    }

    fn channel(&self, name: &str) -> String {
        format!("{}!{name}", self.backend.prefix)
    }

    /// Runs one command on the shared connection, within the timeout.
    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, redis::RedisError> {
        let mut conn = self.backend.commands.clone();
        match tokio::time::timeout(self.backend.timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }

    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<Value, redis::RedisError> {
        let mut conn = self.backend.commands.clone();
        match tokio::time::timeout(self.backend.timeout, pipe.query_async(&mut conn)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }

    /// Starts the reader and the pub/sub listener, once, on the current runtime.
    fn start(self: &Arc<Self>, hub: &Arc<Inner>) {
        self.started.get_or_init(|| {
            let rx = lock(&self.follow_rx).take();
            if let Some(rx) = rx {
                tokio::spawn(reader(
                    self.backend.client.clone(),
                    Arc::downgrade(hub),
                    rx,
                    Arc::clone(&self.taken),
                    Arc::clone(&self.reader_id),
                ));
            }
            tokio::spawn(listener(
                self.backend.client.clone(),
                Arc::downgrade(hub),
                [self.channel("send"), self.channel("broadcast")],
            ));
        });
    }

    /// Hands `topic` to the reader and wakes it if it is blocked on other topics.
    async fn follow(&self, topic: Arc<Topic>, key: String, last: String) {
        let ticket = {
            let _order = lock(&self.order);
            let ticket = self.sent.fetch_add(1, Ordering::AcqRel) + 1;
            let follow = Follow {
                topic,
                key: key.into(),
                last,
            };
            if self.follow.send(follow).is_err() {
                return;
            }
            ticket
        };
        // The reader may be blocked in XREAD on the other topics: interrupt it (it then reads
        // again with the new one). Retried for the moment between its check and its block;
        // bounded by the command timeout (after that the reader still takes the topic when its
        // block ends, within `BLOCK_MS`).
        let wake = async {
            loop {
                if self.taken.load(Ordering::Acquire) >= ticket {
                    return;
                }
                let id = self.reader_id.load(Ordering::Acquire);
                if id != 0 {
                    let unblocked = self
                        .query(redis::cmd("CLIENT").arg("UNBLOCK").arg(id))
                        .await;
                    if matches!(unblocked, Ok(Value::Int(1))) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        if tokio::time::timeout(self.backend.timeout, wake)
            .await
            .is_err()
        {
            tracing::debug!("redis reader not woken; it takes the new topic when its block ends");
        }
    }
}

fn unavailable(what: &str, err: &redis::RedisError) {
    tracing::warn!(error = %err, "redis {what} failed");
}

/// A stream id `ms-seq` as one ordered number, `ms << 64 | seq`.
pub(super) fn pack(id: &str) -> Option<u128> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some(u128::from(ms.parse::<u64>().ok()?) << 64 | u128::from(seq.parse::<u64>().ok()?))
}

/// The event as subscribers get it: the stored fields, then `id: <stream id>` last (so it is
/// the id the client keeps even if the fields held one).
fn encode(id: &str, fields: &[u8]) -> Option<EncodedEvent> {
    // One event: ends with the blank line, has no other, no CR. No field at all (an event that
    // only had an id) is fine: it becomes `id: ..` alone.
    let body = fields.strip_suffix(b"\n")?;
    if !body.is_empty()
        && (!body.ends_with(b"\n")
            || memchr::memmem::find(body, b"\n\n").is_some()
            || memchr::memchr(b'\r', fields).is_some()
            || body.starts_with(b"\n"))
    {
        return None;
    }
    let mut buf = BytesMut::with_capacity(body.len() + id.len() + 6);
    buf.extend_from_slice(body);
    buf.extend_from_slice(b"id: ");
    let start = buf.len();
    buf.extend_from_slice(id.as_bytes());
    buf.put_slice(b"\n\n");
    Some(EncodedEvent::from_parts(
        buf.freeze(),
        Some(start..start + id.len()),
    ))
}

/// An entry of an `XRANGE` / `XREAD` reply.
struct Entry {
    id: String,
    pos: u128,
    event: Option<EncodedEvent>,
    close: bool,
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// Parses `[[id, [field, value, ...]], ...]`; entries that are not ours are skipped with a
/// warning.
fn entries(value: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for raw in items(value) {
        let [id, fields] = items(raw) else { continue };
        let Some(id) = bulk(id).and_then(|id| std::str::from_utf8(id).ok()) else {
            continue;
        };
        let Some(pos) = pack(id) else { continue };
        let mut event = None;
        let mut close = false;
        for pair in items(fields).chunks(2) {
            let [name, value] = pair else { continue };
            match bulk(name) {
                Some(name) if name == DATA.as_bytes() => {
                    event = bulk(value).and_then(|fields| encode(id, fields));
                    if event.is_none() {
                        tracing::warn!(id, "redis stream entry is not one SSE event; skipped");
                    }
                }
                Some(name) if name == CLOSE.as_bytes() => close = true,
                _ => {}
            }
        }
        out.push(Entry {
            id: id.to_owned(),
            pos,
            event,
            close,
        });
    }
    out
}

impl Inner {
    fn redis(&self) -> Option<&Arc<Shared>> {
        match &self.backend {
            super::Backend::Redis(shared) => Some(shared),
            super::Backend::Memory => None,
        }
    }
}

/// `XADD`s `event` to every topic, atomically; returns the event as the first topic's
/// subscribers get it.
///
/// With `close`, the entry closes each topic (its `event` is the final one, if any) and a
/// topic that does not exist is left alone: the result is then `None`.
pub(super) async fn publish(
    hub: &Arc<Inner>,
    topics: &[&str],
    event: Option<Event>,
    close: bool,
) -> Result<Option<EncodedEvent>, PublishError> {
    let Some(shared) = hub.redis() else {
        return Err(PublishError::Unavailable);
    };
    shared.start(hub);
    let fields = event.map(|event| event.encode().without_id());
    let keys: Vec<String> = topics.iter().map(|topic| shared.key(topic)).collect();
    if !hub.config.auto_create && !close {
        let exists = shared.query(redis::cmd("EXISTS").arg(&keys)).await;
        match exists {
            Ok(Value::Int(n)) if usize::try_from(n).is_ok_and(|n| n == keys.len()) => {}
            Ok(_) => return Err(PublishError::UnknownTopic),
            Err(err) => {
                unavailable("publish", &err);
                return Err(PublishError::Unavailable);
            }
        }
    }
    let maxlen = hub.config.history.events.max(1);
    let mut pipe = redis::pipe();
    if keys.len() > 1 && !close {
        // One id in every stream, as the in-memory hub gives: see `PUBLISH_MANY`.
        let cmd = pipe.cmd("EVAL").arg(PUBLISH_MANY).arg(keys.len());
        for key in &keys {
            cmd.arg(key);
        }
        cmd.arg(maxlen)
            .arg(DATA)
            .arg(fields.as_deref().unwrap_or_default());
    } else {
        pipe.atomic();
    }
    for key in keys.iter().filter(|_| keys.len() == 1 || close) {
        let cmd = pipe.cmd("XADD").arg(key);
        if close {
            cmd.arg("NOMKSTREAM");
        }
        cmd.arg("MAXLEN").arg("~").arg(maxlen).arg("*");
        if let Some(fields) = &fields {
            cmd.arg(DATA).arg(&fields[..]);
        }
        if close {
            cmd.arg(CLOSE).arg("1");
        }
    }
    let ids = match shared.query_pipe(&pipe).await {
        Ok(ids) => ids,
        Err(err) => {
            unavailable("publish", &err);
            return Err(PublishError::Unavailable);
        }
    };
    hub.count_published();
    let Some(id) = items(&ids)
        .first()
        .and_then(bulk)
        .and_then(|id| std::str::from_utf8(id).ok())
    else {
        return Ok(None);
    };
    Ok(Some(match &fields {
        Some(fields) => encode(id, fields).ok_or(PublishError::Unavailable)?,
        None => Event::new().id(id).encode(),
    }))
}

/// Appends one entry to several streams under **one** id (so a client of any of them resumes
/// from it, as with the in-memory hub): the current time in ms, or later than every stream's
/// last generated id. Every key is checked before anything is written, so a key of another
/// type fails the call without a partial write. Lua's numbers are doubles: exact for ms
/// timestamps (13 digits) and the small sequence numbers used here.
const PUBLISH_MANY: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'stream' then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        lms, lseq = tonumber(lms), tonumber(lseq)
        if lms > ms or (lms == ms and lseq >= seq) then
          ms, seq = lms, lseq + 1
        end
      end
    end
  elseif kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is not a stream')
  end
end
local id = string.format('%d-%d', ms, seq)
for _, key in ipairs(KEYS) do
  redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], id, ARGV[2], ARGV[3])
end
return id
";

/// Sends to every process over pub/sub; returns how many processes listen.
pub(super) async fn fan_out(
    hub: &Arc<Inner>,
    channel: &str,
    head: &[u8],
    event: Event,
) -> Result<usize, PublishError> {
    let Some(shared) = hub.redis() else {
        return Err(PublishError::Unavailable);
    };
    shared.start(hub);
    let event = event.encode();
    let mut message = Vec::with_capacity(head.len() + event.len());
    message.extend_from_slice(head);
    message.extend_from_slice(event.as_bytes());
    let reached = shared
        .query(
            redis::cmd("PUBLISH")
                .arg(shared.channel(channel))
                .arg(message),
        )
        .await;
    hub.count_published();
    match reached {
        Ok(Value::Int(n)) => Ok(usize::try_from(n).unwrap_or(0)),
        Ok(_) => Ok(0),
        Err(err) => {
            unavailable("publish", &err);
            Err(PublishError::Unavailable)
        }
    }
}

/// Creates the (empty) stream unless it exists.
pub(super) async fn create_topic(hub: &Arc<Inner>, topic: &str) -> Result<bool, PublishError> {
    let Some(shared) = hub.redis() else {
        return Err(PublishError::Unavailable);
    };
    let key = shared.key(topic);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("EXISTS")
        .arg(&key)
        .cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("tower-sse-create")
        .arg("$")
        .arg("MKSTREAM")
        .ignore()
        .cmd("XGROUP")
        .arg("DESTROY")
        .arg(&key)
        .arg("tower-sse-create")
        .ignore();
    match shared.query_pipe(&pipe).await {
        Ok(reply) => Ok(matches!(items(&reply).first(), Some(Value::Int(0)))),
        Err(err) => {
            unavailable("create topic", &err);
            Err(PublishError::Unavailable)
        }
    }
}

/// Whether the stream exists.
async fn exists(shared: &Shared, key: &str) -> Result<bool, SubscribeError> {
    match shared.query(redis::cmd("EXISTS").arg(key)).await {
        Ok(Value::Int(n)) => Ok(n > 0),
        Ok(_) => Ok(false),
        Err(err) => {
            unavailable("subscribe", &err);
            Err(SubscribeError::Unavailable)
        }
    }
}

/// `XRANGE key from to COUNT count`, or `XREVRANGE` when `from` is `+` (newest first).
async fn range(
    shared: &Shared,
    key: &str,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Vec<Entry>, SubscribeError> {
    let command = if from == "+" { "XREVRANGE" } else { "XRANGE" };
    let reply = shared
        .query(
            redis::cmd(command)
                .arg(key)
                .arg(from)
                .arg(to)
                .arg("COUNT")
                .arg(count),
        )
        .await;
    reply.map(|reply| entries(&reply)).map_err(|err| {
        unavailable("replay", &err);
        SubscribeError::Unavailable
    })
}

/// The local topic for `name`, created if needed; a new one comes with the stream id the
/// reader must follow it from (the stream's current end).
async fn local_topic(
    hub: &Arc<Inner>,
    shared: &Shared,
    name: &str,
    key: &str,
) -> Result<(Arc<Topic>, Option<String>), SubscribeError> {
    if let Some(topic) = lock(&hub.topics).get(name)
        && topic.lock().is_open()
    {
        return Ok((Arc::clone(topic), None));
    }
    if !hub.config.auto_create && !exists(shared, key).await? {
        return Err(SubscribeError::UnknownTopic);
    }
    // Where the stream ends now: the reader goes on from there.
    let last = match shared
        .query(
            redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        )
        .await
    {
        Ok(reply) => entries(&reply).pop(),
        Err(err) => {
            unavailable("subscribe", &err);
            return Err(SubscribeError::Unavailable);
        }
    };
    let (last_id, last_pos) = last.map_or(("0-0".to_owned(), 0), |e| (e.id, e.pos));
    let topic = {
        let mut topics = lock(&hub.topics);
        match topics.get(name) {
            Some(topic) if topic.lock().is_open() => return Ok((Arc::clone(topic), None)),
            _ => {}
        }
        let topic = Arc::new(Topic::new(
            name,
            hub.config.subscriber_capacity,
            last_pos.saturating_add(1),
            true,
        ));
        topics.insert(name.into(), Arc::clone(&topic));
        topic
    };
    Ok((topic, Some(last_id)))
}

/// Removes a topic this subscribe created (or found) if it ends without a subscription
/// (an error, or the caller gave up on the future): a followed topic with no subscriber would
/// otherwise stay in every `XREAD`.
struct Pending<'a> {
    hub: &'a Arc<Inner>,
    topic: Option<Arc<Topic>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(topic) = self.topic.take() {
            self.hub.remove_if_idle(&topic);
        }
    }
}

/// Subscribes through Redis: see [`RedisBackend`] for the replay hand-off.
pub(super) async fn subscribe(
    hub: &Arc<Inner>,
    request: &SubscribeRequest<'_>,
    on_unknown_id: UnknownId,
) -> Result<Subscription, SubscribeError> {
    let Some(shared) = hub.redis() else {
        return Err(SubscribeError::Unavailable);
    };
    shared.start(hub);
    let key = shared.key(request.topic);
    let window = hub.config.history.events.max(1);
    // `MAXLEN ~` keeps somewhat more than the window; a client further behind than this has
    // lost history (as with the in-memory hub), and no request reads more than this at once.
    let cap = window.saturating_mul(2).saturating_add(128);
    let wanted = request.last_event_id.map(|id| (id, pack(id)));
    let mut pending = Pending { hub, topic: None };
    'topic: for _ in 0..4 {
        let (topic, follow_from) = local_topic(hub, shared, request.topic, &key).await?;
        pending.topic = Some(Arc::clone(&topic));
        if let Some(last) = follow_from {
            shared.follow(Arc::clone(&topic), key.clone(), last).await;
        }
        // Fast path: no replay, or the cache has everything after the id.
        {
            let mut state = topic.lock();
            if !state.is_open() {
                continue;
            }
            let joined = match wanted {
                None => state.join_with(Replay::NotRequested, Vec::new()),
                Some((_, Some(pos))) if pos < state.next() && state.covers_after(pos) => {
                    let backlog = state.after(pos).cloned().collect();
                    state.join_with(Replay::Complete, backlog)
                }
                _ => None,
            };
            if let Some(joined) = joined {
                drop(state);
                pending.topic = None;
                return Ok(finish(hub, request, topic, joined, 0));
            }
        }
        // Slow path: read the stream after the id (which must still be in it).
        let (mut replay, mut fetched) = match wanted {
            Some((id, Some(pos))) => {
                let mut found = range(shared, &key, id, "+", cap.saturating_add(2)).await?;
                if found.first().is_some_and(|e| e.pos == pos) && found.len() <= cap + 1 {
                    found.remove(0);
                    (Replay::Complete, found)
                } else {
                    (Replay::HistoryLost, Vec::new())
                }
            }
            _ => (Replay::HistoryLost, Vec::new()),
        };
        // A close after the id: the topic it belonged to is gone.
        if fetched.iter().any(|e| e.close) {
            replay = Replay::HistoryLost;
        }
        if replay.is_lost() {
            fetched = match on_unknown_id {
                UnknownId::LiveOnly => Vec::new(),
                UnknownId::SendHistory => recent(shared, &key, window).await?,
            };
        }
        let mut through = match (replay, fetched.last()) {
            (_, Some(last)) => last.pos,
            (Replay::Complete, None) => wanted.and_then(|(_, pos)| pos).unwrap_or(0),
            _ => 0,
        };
        // Hand over to live under the topic's lock. The reader has not gone past what was
        // fetched: live events up to it are skipped. It has, and its cache holds everything
        // after the fetch: the rest comes from there. Neither: read on from the stream.
        for _ in 0..8 {
            let joined = {
                let mut state = topic.lock();
                if !state.is_open() {
                    continue 'topic;
                }
                if through == 0 || through.saturating_add(1) >= state.next() {
                    let backlog = std::mem::take(&mut fetched)
                        .into_iter()
                        .filter_map(|e| e.event)
                        .collect();
                    Some(state.join_with(replay, backlog).map(|j| (j, through)))
                } else if state.covers_after(through) {
                    let mut backlog: Vec<EncodedEvent> = std::mem::take(&mut fetched)
                        .into_iter()
                        .filter_map(|e| e.event)
                        .collect();
                    backlog.extend(state.after(through).cloned());
                    Some(state.join_with(replay, backlog).map(|j| (j, 0)))
                } else {
                    None
                }
            };
            match joined {
                Some(Some((joined, skip))) => {
                    pending.topic = None;
                    return Ok(finish(hub, request, topic, joined, skip));
                }
                Some(None) => continue 'topic,
                None => {}
            }
            let after = format!("({}-{}", (through >> 64) as u64, through as u64);
            let more = range(shared, &key, &after, "+", cap).await?;
            if more.is_empty() || fetched.len() + more.len() > cap.saturating_mul(2) {
                // Published faster than read, or the stream is not what the reader saw.
                break;
            }
            if let Some(close) = more.iter().rposition(|e| e.close) {
                replay = Replay::HistoryLost;
                fetched.clear();
                fetched.extend(more.into_iter().skip(close + 1));
            } else {
                fetched.extend(more);
            }
            through = fetched.last().map_or(through, |e| e.pos);
        }
        break;
    }
    Err(SubscribeError::Unavailable)
}

/// The newest `window` entries after the last close, oldest first.
async fn recent(shared: &Shared, key: &str, window: usize) -> Result<Vec<Entry>, SubscribeError> {
    let mut entries = range(shared, key, "+", "-", window).await?;
    entries.reverse();
    if let Some(close) = entries.iter().rposition(|e| e.close) {
        entries.drain(..=close);
    }
    Ok(entries)
}

fn finish(
    hub: &Arc<Inner>,
    request: &SubscribeRequest<'_>,
    topic: Arc<Topic>,
    joined: super::topic::Joined,
    skip_through: u128,
) -> Subscription {
    hub.subscription(request, topic, joined)
        .skip_through(skip_through)
}

/// Reads every followed topic over one connection and feeds the local topics.
async fn reader(
    client: Client,
    hub: Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<Follow>,
    taken: Arc<AtomicU64>,
    reader_id: Arc<AtomicI64>,
) {
    let mut follows: Vec<Follow> = Vec::new();
    let mut backoff = Backoff::new();
    // A block returns within BLOCK_MS; a reply that takes much longer means the connection is
    // gone without a reset (it is then dropped and made again).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(
            Duration::from_millis(BLOCK_MS) + Duration::from_secs(5),
        ));
    'connect: loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "redis reader cannot connect; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let id: i64 = match redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(error = %err, "redis reader cannot connect; retrying");
                backoff.wait().await;
                continue;
            }
        };
        tracing::debug!(client_id = id, "redis reader connected");
        loop {
            // New topics, and forget the closed ones.
            let mut got = 0;
            while let Ok(follow) = rx.try_recv() {
                follows.push(follow);
                got += 1;
            }
            taken.fetch_add(got, Ordering::AcqRel);
            follows.retain(|f| f.topic.lock().is_open());
            if follows.is_empty() {
                reader_id.store(0, Ordering::Release);
                match rx.recv().await {
                    Some(follow) => {
                        follows.push(follow);
                        taken.fetch_add(1, Ordering::AcqRel);
                        continue;
                    }
                    None => return,
                }
            }
            if hub.strong_count() == 0 {
                return;
            }
            reader_id.store(id, Ordering::Release);
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS");
            for follow in &follows {
                cmd.arg(&*follow.key);
            }
            for follow in &follows {
                cmd.arg(&follow.last);
            }
            let reply: Value = match cmd.query_async(&mut conn).await {
                Ok(reply) => reply,
                Err(err) => {
                    reader_id.store(0, Ordering::Release);
                    tracing::warn!(error = %err, "redis reader lost its connection; reconnecting");
                    backoff.wait().await;
                    continue 'connect;
                }
            };
            backoff.reset();
            let Some(hub) = hub.upgrade() else { return };
            deliver(&hub, &mut follows, &reply);
        }
    }
}

/// Feeds an `XREAD` reply to the local topics, in stream order.
fn deliver(hub: &Arc<Inner>, follows: &mut [Follow], reply: &Value) {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        other => items(other)
            .iter()
            .filter_map(|pair| match items(pair) {
                [key, entries] => Some((key, entries)),
                _ => None,
            })
            .collect(),
    };
    let now = Instant::now();
    for (key, raw) in streams {
        let Some(key) = bulk(key) else { continue };
        let Some(follow) = follows.iter_mut().find(|f| f.key.as_bytes() == key) else {
            continue;
        };
        let mut state = follow.topic.lock();
        let mut closed = false;
        for entry in entries(raw) {
            follow.last = entry.id;
            if let Some(event) = &entry.event {
                state.push(entry.pos, event, &hub.config.history, now);
            }
            if entry.close {
                state.close();
                closed = true;
                break;
            }
        }
        drop(state);
        if closed {
            let mut topics = lock(&hub.topics);
            if topics
                .get(&follow.topic.name)
                .is_some_and(|current| Arc::ptr_eq(current, &follow.topic))
            {
                topics.remove(&follow.topic.name);
            }
        }
    }
}

/// Listens for `send_to` and `broadcast` from every process.
async fn listener(client: Client, hub: Weak<Inner>, channels: [String; 2]) {
    /// How often an idle pub/sub connection is checked with a PING (a connection that vanished
    /// without a reset would otherwise wait forever), and whether the hub is still there.
    const CHECK: Duration = Duration::from_secs(15);
    let mut backoff = Backoff::new();
    loop {
        let pubsub = match tokio::time::timeout(CHECK, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "redis pub/sub cannot connect; retrying");
                backoff.wait().await;
                continue;
            }
            Err(_) => {
                tracing::warn!("redis pub/sub connect timed out; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let (mut sink, mut messages) = pubsub.split();
        if let Err(err) = sink.subscribe(&channels[..]).await {
            tracing::warn!(error = %err, "redis pub/sub cannot subscribe; retrying");
            backoff.wait().await;
            continue;
        }
        backoff.reset();
        let mut check = tokio::time::interval(CHECK);
        check.reset();
        loop {
            let next = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
            });
            let message = tokio::select! {
                message = next => message,
                _ = check.tick() => {
                    if hub.strong_count() == 0 {
                        return;
                    }
                    match tokio::time::timeout(CHECK / 3, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => continue,
                        _ => None,
                    }
                }
            };
            let Some(message) = message else { break };
            let Some(hub) = hub.upgrade() else { return };
            let payload = message.get_payload_bytes();
            if message.get_channel_name() == channels[0] {
                // `<len>:<client id><event>`
                let Some((client_id, event)) = split_direct(payload) else {
                    continue;
                };
                if let Some(event) = raw_event(event) {
                    hub.deliver_to_client(client_id, event);
                }
            } else if let Some(event) = raw_event(payload) {
                hub.deliver_live_everywhere(&event);
            }
        }
        if hub.strong_count() == 0 {
            return;
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        backoff.wait().await;
    }
}

/// `<len>:<client id><event>` → (client id, event bytes).
fn split_direct(payload: &[u8]) -> Option<(&str, &[u8])> {
    let colon = memchr::memchr(b':', payload)?;
    let len: usize = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    let client_id = std::str::from_utf8(payload.get(start..end)?).ok()?;
    Some((client_id, &payload[end..]))
}

/// An event received over pub/sub: one complete event, no id (send_to and broadcast events
/// keep the client's id).
fn raw_event(bytes: &[u8]) -> Option<EncodedEvent> {
    let body = bytes.strip_suffix(b"\n")?;
    if !body.ends_with(b"\n")
        || memchr::memmem::find(body, b"\n\n").is_some()
        || memchr::memchr(b'\r', bytes).is_some()
    {
        return None;
    }
    Some(EncodedEvent::from_parts(
        Bytes::copy_from_slice(bytes),
        None,
    ))
}

/// Exponential backoff with jitter, 100 ms to 5 s.
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self(Self::MIN)
    }

    fn reset(&mut self) {
        self.0 = Self::MIN;
    }

    async fn wait(&mut self) {
        let jitter = super::new_epoch() % (self.0.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(self.0 / 2 + Duration::from_millis(jitter)).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::recv::{Item, Recv};

    #[test]
    fn pack_orders_like_stream_ids() {
        assert_eq!(pack("0-0"), Some(0));
        assert!(pack("1-0") > pack("0-18446744073709551615"));
        assert!(pack("1700000000000-2") > pack("1700000000000-1"));
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-+1",
            "1-2-3",
            "99999999999999999999999-0",
        ] {
            assert_eq!(pack(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_puts_the_stream_id_last_and_refuses_what_is_not_one_event() {
        let event = encode("5-1", b"event: x\ndata: y\n\n").unwrap();
        assert_eq!(&event.as_bytes()[..], b"event: x\ndata: y\nid: 5-1\n\n");
        assert_eq!(event.id(), Some("5-1"));
        let only_id = encode("5-2", b"\n").unwrap();
        assert_eq!(&only_id.as_bytes()[..], b"id: 5-2\n\n");
        for bad in [
            &b""[..],
            b"\n\n",
            b"data: y\n",
            b"data: y\n\ndata: z\n\n",
            b"data: y\r\n\n",
        ] {
            assert!(encode("5-1", bad).is_none(), "{bad:?}");
        }
    }

    /// A live event without a stream id (a broadcast) between a replay's backlog and the
    /// reader catching up must not stop the skipping of what the backlog already had.
    #[tokio::test]
    async fn an_id_less_live_event_does_not_end_the_skip() {
        use futures_util::StreamExt;

        let hub = super::super::Hub::new();
        let inner = Arc::clone(&hub.inner);
        let topic = Arc::new(Topic::new("t", 16, pack("1-0").unwrap() + 1, true));
        // Fetched with XRANGE: 2-0. The reader is still at 1-0.
        let backlog = vec![encode("2-0", b"data: two\n\n").unwrap()];
        let joined = topic.lock().join_with(Replay::Complete, backlog).unwrap();
        inner.subscribers.fetch_add(1, Ordering::Relaxed);
        let mut sub = Subscription::new(
            Arc::clone(&inner),
            Arc::clone(&topic),
            joined.replay,
            joined.backlog,
            Recv::live(joined.receiver),
            None,
        )
        .skip_through(pack("2-0").unwrap());
        topic
            .lock()
            .send_live(Item::unordered(raw_event(b"data: bc\n\n").unwrap()));
        let limits = inner.config.history;
        for id in ["2-0", "3-0"] {
            let event = encode(id, format!("data: {id}\n\n").as_bytes()).unwrap();
            topic
                .lock()
                .push(pack(id).unwrap(), &event, &limits, Instant::now());
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let event = sub.next().await.unwrap();
            got.push(
                String::from_utf8_lossy(event.as_bytes())
                    .lines()
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(got, ["data: two", "data: bc", "data: 3-0"]);
    }

    #[test]
    fn direct_messages_split_without_panicking() {
        assert_eq!(
            split_direct(b"3:bobdata: x\n\n"),
            Some(("bob", &b"data: x\n\n"[..]))
        );
        assert_eq!(
            split_direct(b"0:data: x\n\n"),
            Some(("", &b"data: x\n\n"[..]))
        );
        for bad in [
            &b""[..],
            b"3",
            b"x:bob",
            b"4:bob",
            b"18446744073709551615:a",
            b"99999999999999999999999:a",
        ] {
            assert_eq!(split_direct(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_id_strips_the_id_line() {
        let event = Event::new().event("e").id("abc").data("x").encode();
        assert_eq!(&event.without_id()[..], b"event: e\ndata: x\n\n");
        let event = Event::new().id("").data("x").encode();
        assert_eq!(&event.without_id()[..], b"data: x\n\n");
        let event = Event::new().data("x").encode();
        assert_eq!(&event.without_id()[..], b"data: x\n\n");
    }
}
