//! The Redis broker (feature `redis`): every hub on the same Redis and key prefix acts as one.
//!
//! # Data path
//!
//! ```text
//!  publish ── EVALSHA publish.lua ──► one stream "<prefix>log", entry id 0-<n>, field e = entry
//!             (n: the hub-wide counter; trims by count, bytes and age; idempotency keys)
//!                                             │
//!     one reader task per process, one connection: XREAD BLOCK from the last id it read,
//!     in batches of at most half a ring; n must follow n-1, else the gap is signalled
//!                                             │  decode + encode once per process ("id: <n>")
//!                                             ▼
//!                     broker::Feed ──► local topics and patterns ──► subscribers
//!
//!  send_to ── PUBLISH "<prefix>!send" ──► every process's listener ──► Feed::send_to
//! ```
//!
//! Files: `publish.rs` (the script and its call), `reader.rs` (the reader task),
//! `replay.rs` (`XRANGE` reads for replays), `listener.rs` (pub/sub for `send_to`),
//! `codec.rs` (Redis replies to entries).

mod codec;
mod listener;
mod publish;
mod reader;
mod replay;

use std::{fmt, time::Duration};

use redis::{Client, aio::ConnectionManager};

use super::{BoxFuture, Feed, Publication, Read, Remote, entry};
use crate::{
    EncodedEvent,
    hub::{PublishError, SubscribeError},
};

/// A connection to Redis for a [`Hub`](crate::hub::Hub): see
/// [`HubBuilder::redis`](crate::hub::HubBuilder::redis).
///
/// # How it works
///
/// - **One stream per hub** (`<prefix>log`): every event of every topic is one entry, with
///   the hub-wide counter as its id (`0-<n>`). The event id clients see is `n`: it means the
///   same on every process and across restarts, and orders every topic of the hub, so one
///   `Last-Event-ID` resumes a subscription to any set of topics and patterns.
/// - **Publisher's ids**: an id the publisher set is the event's id, and goes into an index
///   (`<prefix>ids`, a sorted set: id → counter) in the same script as the entry, so a
///   `Last-Event-ID` with it resumes on any process like a counter id does. An id used twice
///   resumes after its first use (duplicates rather than a gap) while that is retained; the
///   index is trimmed with the stream, so once the first use is trimmed the id is unknown
///   (`history-lost`), even if a later use is still there. Ids that are decimal digits alone (a counter's spelling) or longer than 1,024 bytes
///   are refused ([`PublishError::InvalidId`](crate::hub::PublishError::InvalidId)).
/// - **Reading**: each process has one reader connection (`XREAD BLOCK` on the one stream),
///   decodes and encodes each entry once, and hands it to the local subscribers through the
///   hub's shared rings. It reads in batches of at most half a ring and waits (briefly) while
///   subscribers drain, so a reader catching up never cuts a subscriber that reads at full
///   speed. Nothing depends on `CLIENT` (often renamed or denied on managed Redis).
/// - **No silent gap**: entry `n` must follow `n - 1`. An entry trimmed before this process
///   read it (it stalled while others published), or one it cannot decode, ends every live
///   subscription of the process ([`HubStats::gaps`](crate::hub::HubStats::gaps)); the
///   clients come back with their `Last-Event-ID` and are told `history-lost` if the stream no
///   longer has what followed it. A Redis that comes back without entries it had
///   acknowledged (RDB, AOF `everysec`, a failover to a lagging replica) would issue their
///   ids again: a reader that reconnects and finds the counter below what it read, or its
///   last entry holding another event, moves the counter past both and drops the stream up to
///   there (ids issued before are `history-lost`, never replayed as another event), and the
///   gap is signalled as above.
/// - **Replay**: from the process's cache (the local topics' histories) when it covers the
///   `Last-Event-ID`; otherwise `XRANGE` on the stream after it (filtered by the
///   subscription's topics, patterns and private-event access), then a hand-off to live
///   events under the hub's order lock: no gap, no duplicate. The id must still be in the
///   stream; trimmed, lost in a Redis restart without persistence, or never issued, it is
///   [`Replay::HistoryLost`](crate::replay::Replay::HistoryLost).
/// - **Bounds**: the stream keeps at most [`max_events`](Self::max_events) entries (trimmed
///   approximately, `MAXLEN ~`), about [`max_bytes`](Self::max_bytes) bytes (within 1/16) and
///   nothing much older than [`max_age`](Self::max_age): for the whole hub, not per topic.
///   The hub's `history_*` settings bound each process's cache, per topic.
/// - **Retries**: a publish that times out may have been stored. Publish with an
///   [`idempotency_key`](crate::hub::PublishBuilder::idempotency_key) and retry with the same
///   key: within [`idempotency_window`](Self::idempotency_window) the retry stores nothing and
///   answers the first id.
/// - **Faults**: while Redis is down, publishing and subscribing fail within the
///   [`timeout`](Self::timeout) with `Unavailable` (an HTTP server answers `503`); the reader
///   and the pub/sub listener reconnect with backoff and go on from the last entry read.
///   A key of the wrong type under the prefix makes every publish fail with `Unavailable`
///   (and logs why), never "accepted and never delivered".
/// - [`Hub::broadcast`](crate::hub::Hub::broadcast) and
///   [`Hub::close_topic`](crate::hub::Hub::close_topic) are entries of the stream too (every
///   process, in order, replayable); [`Hub::send_to`](crate::hub::Hub::send_to) goes to
///   every process over pub/sub, live only.
/// - One Redis server (or a primary with replicas); Redis Cluster is not supported.
///
/// Three connections per process, whatever the number of clients or topics: commands, the
/// blocking reader, and pub/sub.
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
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
    idempotency_window: Duration,
    script: redis::Script,
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
    /// Default for [`max_events`](Self::max_events): 10,000 entries.
    pub const DEFAULT_MAX_EVENTS: usize = 10_000;
    /// Default for [`max_bytes`](Self::max_bytes): 16 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 16 << 20;
    /// Default for [`max_age`](Self::max_age): one hour.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
    /// Default for [`idempotency_window`](Self::idempotency_window): five minutes.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

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
            max_events: Self::DEFAULT_MAX_EVENTS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_age: Self::DEFAULT_MAX_AGE,
            idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
            script: redis::Script::new(publish::SCRIPT),
        })
    }

    /// The prefix of the hub's keys and channel (default `"sse:"`): the stream is
    /// `<prefix>log`. Hubs that should act as one use the same prefix.
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

    /// Keep at most about `n` entries in the stream, for the whole hub (default
    /// [`DEFAULT_MAX_EVENTS`](Self::DEFAULT_MAX_EVENTS); trimmed with `MAXLEN ~`, so somewhat
    /// more may stay). At least 1.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .max_events(100_000);
    /// # drop(redis);
    /// # }
    /// ```
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    /// Keep about `n` bytes of events in the stream (default
    /// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES); the oldest go first, in steps of
    /// `n / 16`).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .max_bytes(64 << 20);
    /// # drop(redis);
    /// # }
    /// ```
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// Drop entries older than `age` (default [`DEFAULT_MAX_AGE`](Self::DEFAULT_MAX_AGE); in
    /// steps of `age / 16`, at a publish).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .max_age(std::time::Duration::from_secs(600));
    /// # drop(redis);
    /// # }
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age.max(Duration::from_millis(16));
        self
    }

    /// How long Redis remembers an [`idempotency_key`](crate::hub::PublishBuilder::idempotency_key)
    /// (default [`DEFAULT_IDEMPOTENCY_WINDOW`](Self::DEFAULT_IDEMPOTENCY_WINDOW); at most 100
    /// years).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = tower_sse::hub::RedisBackend::connect("redis://127.0.0.1:6379")
    ///     .await
    ///     .unwrap()
    ///     .idempotency_window(std::time::Duration::from_secs(60));
    /// # drop(redis);
    /// # }
    /// ```
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs one command on the shared connection, within the timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut conn = self.commands.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.client.get_connection_info().addr())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("max_events", &self.max_events)
            .field("max_bytes", &self.max_bytes)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, err: &redis::RedisError) {
    tracing::warn!(error = %err, "redis {what} failed");
}

impl Remote for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn start(&self, feed: Feed) {
        tokio::spawn(reader::run(
            self.client.clone(),
            self.key("log"),
            self.key("meta"),
            feed.clone(),
        ));
        tokio::spawn(listener::run(self.client.clone(), self.key("!send"), feed));
    }

    fn publish<'a>(
        &'a self,
        publication: Publication<'a>,
    ) -> BoxFuture<'a, Result<u64, PublishError>> {
        Box::pin(publish::publish(self, publication))
    }

    fn send_to<'a>(
        &'a self,
        client_id: &'a str,
        event: Option<&'a EncodedEvent>,
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move {
            let message = crate::hub::broker::entry::direct(client_id, event);
            match self
                .query::<i64>(redis::cmd("PUBLISH").arg(self.key("!send")).arg(message))
                .await
            {
                Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
                Err(err) => {
                    unavailable("send_to", &err);
                    Err(PublishError::Unavailable)
                }
            }
        })
    }

    fn presence<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let payload = entry::presence(message);
            match self
                .query::<i64>(redis::cmd("PUBLISH").arg(self.key("!send")).arg(payload))
                .await
            {
                Ok(_) => Ok(()),
                Err(err) => {
                    unavailable("presence", &err);
                    Err(PublishError::Unavailable)
                }
            }
        })
    }

    fn create_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, PublishError>> {
        Box::pin(async move {
            match self
                .query::<i64>(redis::cmd("SADD").arg(self.key("topics")).arg(topic))
                .await
            {
                Ok(added) => Ok(added == 1),
                Err(err) => {
                    unavailable("create topic", &err);
                    Err(PublishError::Unavailable)
                }
            }
        })
    }

    fn topics_exist<'a>(
        &'a self,
        topics: &'a [&'a str],
    ) -> BoxFuture<'a, Result<bool, SubscribeError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SMISMEMBER");
            cmd.arg(self.key("topics")).arg(topics);
            match self.query::<Vec<i64>>(&cmd).await {
                Ok(found) => Ok(found.iter().all(|&f| f == 1)),
                Err(err) => {
                    unavailable("subscribe", &err);
                    Err(SubscribeError::Unavailable)
                }
            }
        })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<u64>, SubscribeError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("ZSCORE");
            cmd.arg(self.key("ids")).arg(id);
            match self.query::<Option<String>>(&cmd).await {
                // Scores are written from the counter's decimal digits.
                Ok(score) => Ok(score.and_then(|s| entry::position(&s))),
                Err(err) => {
                    unavailable("subscribe", &err);
                    Err(SubscribeError::Unavailable)
                }
            }
        })
    }

    fn read(&self, after: Option<u64>, max: usize) -> BoxFuture<'_, Result<Read, SubscribeError>> {
        Box::pin(replay::read(self, after, max))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}
