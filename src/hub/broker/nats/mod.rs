//! The NATS JetStream broker (feature `nats`): every hub on the same NATS (and stream) acts as
//! one.
//!
//! # Data path
//!
//! ```text
//!  publish ── JetStream publish (Nats-Msg-Id = idempotency key) ──► stream "<name>"
//!             subject <prefix>.t.<token> (one topic) or <prefix>.m (several, all, a close)
//!                                             │   body = broker entry (topics, flags, fields)
//!     one ordered consumer per process, from the stream's end when it started;
//!     the stream sequence must follow on, else the gap is signalled
//!                                             │  decode + encode once per process ("id: <seq>")
//!                                             ▼
//!                     broker::Feed ──► local topics and patterns ──► subscribers
//!
//!  send_to ── core NATS publish <prefix>.send ──► every process's subscription ──► Feed::send_to
//! ```
//!
//! Files: `subject.rs` (topic names as subject tokens), `reader.rs` (the consumer task),
//! `replay.rs` (reads for replays).

mod reader;
mod replay;
mod subject;

use std::{fmt, sync::Arc, time::Duration};

use async_nats::{HeaderMap, jetstream};
use tokio::sync::OnceCell;

use super::{BoxFuture, Feed, Publication, Read, Remote, entry};
use crate::{
    EncodedEvent,
    hub::{PublishError, SubscribeError},
};

/// A connection to NATS with JetStream for a [`Hub`](crate::hub::Hub): see
/// [`HubBuilder::nats`](crate::hub::HubBuilder::nats).
///
/// # How it works
///
/// - **One JetStream stream per hub** ([`stream_name`](Self::stream_name), default `SSE`, file
///   storage), on the subjects `<prefix>.t.>` and `<prefix>.m`
///   ([`subject_prefix`](Self::subject_prefix), default `sse`). An event of one topic goes to
///   `<prefix>.t.<token>`, where the token is the topic name with every byte outside
///   `[A-Za-z0-9_-]` escaped (`=2F` for `/`): `.`, `*`, `>`, spaces and non-ASCII can never
///   widen a subscription or split a subject. An event of several topics, a broadcast and a
///   close go to `<prefix>.m`. The topics themselves travel in the message body.
/// - **Ids are stream sequences**, offset by the time the stream was made in ms × 1024
///   (written in the stream's description, `tower-sse ids offset <n>`, by the process that
///   makes it: nats-server does not keep a stream's `created` time across restarts): hub-wide
///   ordered, the same on every process and across restarts, so one `Last-Event-ID` resumes
///   any set of topics and patterns; and an id from another stream (another hub, or this one
///   deleted and made again) falls outside this stream's range and is `history-lost`, never
///   misread as one of its own.
/// - **Reading**: each process has one ordered consumer from where the stream ended when it
///   started (not one per client), decodes and encodes each message once, and fans out
///   locally. It reads on as long as subscribers keep up (see `RedisBackend` for the rule).
/// - **No silent gap**: the stream sequence must follow on. A message removed by the
///   stream's limits before this process read it ends every live subscription of the process
///   ([`HubStats::gaps`](crate::hub::HubStats::gaps)); the clients come back with their
///   `Last-Event-ID` and are told `history-lost` if the stream no longer has what followed.
/// - **Replay**: from the process's cache when it covers the id, else from the stream after
///   it (filtered by topics, patterns and private-event access), then a hand-off to live with
///   no gap and no duplicate. The id's message must still be in the stream.
/// - **Publisher's ids** are kept as the events' ids, and indexed in a second stream
///   (`<name>_IDS`, subjects `<prefix>.id.<escaped id>`, one message per id holding its
///   position, bounded like the hub's stream), so that a `Last-Event-ID` with one finds where
///   to resume. The first use of an id is kept. The index is written right after the event: a
///   client that resumes from that id in between, or after an index write that failed, is told
///   `history-lost`. Unlike Redis's, the index is not written atomically with the event: two
///   processes publishing the *same* id at the same moment may index the later use, and a
///   client that saw only the earlier one would resume after the later (publishers' ids are
///   meant to be unique; Redis keeps the first use in every case).
/// - **Bounds**: the stream keeps at most [`max_events`](Self::max_events) messages,
///   [`max_bytes`](Self::max_bytes) bytes, none older than [`max_age`](Self::max_age), for the
///   whole hub, discarding the oldest. A limit per topic is there too
///   ([`max_events_per_topic`](Self::max_events_per_topic)) but off by default: it removes
///   messages from the middle of the log, after which one cursor over several topics cannot
///   tell whether what follows it is complete (such resumes say `history-lost`); stream-wide
///   limits keep "everything after a retained message is retained", which one cursor needs.
/// - **Retries**: JetStream's de-duplication: a publish with an
///   [`idempotency_key`](crate::hub::PublishBuilder::idempotency_key) (the `Nats-Msg-Id`)
///   retried within [`idempotency_window`](Self::idempotency_window) is stored once and
///   answers the first sequence.
/// - **Faults**: while NATS is down, publishing and subscribing fail within the
///   [`timeout`](Self::timeout) with `Unavailable`; the client reconnects by itself and the
///   consumer goes on from the last sequence it delivered. With file storage, a restart of
///   `nats-server` loses nothing it acknowledged. A NATS that comes back *without* what it had
///   acknowledged (a restored or unsynced store) is found when a reader reconnects: a stream
///   shorter than what was read is moved past it, a missing stream is made again with a new
///   offset, and either is a signalled gap. Events published in the moment between NATS coming
///   back and the first reader's check get sequences issued before, and are removed with the
///   move: the process that moved the stream signals the gap, another process that checks
///   after the move finds nothing missing in what it reads and may not.
/// - [`Hub::broadcast`](crate::hub::Hub::broadcast) and
///   [`Hub::close_topic`](crate::hub::Hub::close_topic) are messages of the stream (every
///   process, in order, replayable); [`Hub::send_to`](crate::hub::Hub::send_to) is a core
///   NATS message to every process, live only (its count is `0`: NATS does not say how many
///   processes listen). With [`auto_create(false)`](crate::hub::HubBuilder::auto_create), the
///   topics are keys of a key-value bucket `<stream name>_TOPICS`.
///
/// One NATS connection per process, whatever the number of clients or topics.
///
/// ```no_run
/// use tower_sse::hub::{Hub, NatsBroker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let nats = match NatsBroker::connect("nats://127.0.0.1:4222").await {
///     Ok(nats) => nats.stream_name("CHAT").subject_prefix("chat"),
///     Err(err) => {
///         eprintln!("error: {err}");
///         std::process::exit(1);
///     }
/// };
/// let hub = Hub::builder().nats(nats).build();
/// # drop(hub);
/// # }
/// ```
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream_name: String,
    prefix: String,
    timeout: Duration,
    max_events: usize,
    max_events_per_topic: Option<usize>,
    max_bytes: usize,
    max_age: Duration,
    idempotency_window: Duration,
    /// The stream, and the offset of its ids (see `offset`).
    /// Made (or found) on first use, and again after NATS lost it (see `forget_stream`).
    /// With the client's connection count when it was looked up: after a reconnect (NATS
    /// restarted, and may have lost it, or another process made it again with another offset)
    /// it is looked up again before use.
    stream: std::sync::Mutex<Option<(jetstream::stream::Stream, u64, u64)>>,
    /// Held while the stream is made, so that one process makes it once.
    making: tokio::sync::Mutex<()>,
    /// Whether this process has applied its settings to the stream (once).
    configured: std::sync::atomic::AtomicBool,
    topics: OnceCell<jetstream::kv::Store>,
    /// The index of publisher's ids (see `ids`), with the connection count when it was looked
    /// up (as `stream`).
    ids: std::sync::Mutex<Option<(jetstream::stream::Stream, u64)>>,
}

/// Why [`NatsBroker::connect`] failed: a bad URL, NATS cannot be reached, or it has no
/// JetStream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:1").await.unwrap_err();
/// assert!(err.to_string().contains("nats://127.0.0.1:1"));
/// # }
/// ```
#[derive(Debug)]
pub struct NatsError {
    url: String,
    message: String,
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use NATS at {:?}: {}", self.url, self.message)
    }
}

impl std::error::Error for NatsError {}

impl NatsBroker {
    /// How long a call may take before the caller gets `Unavailable` (default 2 s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default for [`max_events`](Self::max_events): 100,000 messages.
    pub const DEFAULT_MAX_EVENTS: usize = 100_000;
    /// Default for [`max_bytes`](Self::max_bytes): 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
    /// Default for [`max_age`](Self::max_age): one hour.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
    /// Default for [`idempotency_window`](Self::idempotency_window): five minutes.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

    /// Connects to `url` (`nats://host:port`) and checks that JetStream answers.
    ///
    /// # Errors
    ///
    /// [`NatsError`], naming the URL, when it is invalid, NATS cannot be reached within
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), or JetStream is not enabled.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sse::hub::NatsError> {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await?;
    /// # drop(nats); Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, NatsError> {
        let error = |message: String| NatsError {
            url: url.to_owned(),
            message,
        };
        let timeout = Self::DEFAULT_TIMEOUT;
        let client = tokio::time::timeout(
            timeout,
            async_nats::ConnectOptions::new()
                .connection_timeout(timeout)
                .request_timeout(Some(timeout))
                .connect(url),
        )
        .await
        .map_err(|_| error("timed out".into()))?
        .map_err(|err| error(err.to_string()))?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(timeout);
        // A lookup of a stream that does not exist: "not found" means JetStream answers.
        match tokio::time::timeout(timeout, jetstream.get_stream("TOWER_SSE_PROBE")).await {
            Err(_) => return Err(error("JetStream did not answer".into())),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => match err.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                _ => return Err(error(format!("JetStream: {err}"))),
            },
        }
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                jetstream,
                stream_name: "SSE".into(),
                prefix: "sse".into(),
                timeout,
                max_events: Self::DEFAULT_MAX_EVENTS,
                max_events_per_topic: None,
                max_bytes: Self::DEFAULT_MAX_BYTES,
                max_age: Self::DEFAULT_MAX_AGE,
                idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
                stream: std::sync::Mutex::new(None),
                making: tokio::sync::Mutex::new(()),
                configured: std::sync::atomic::AtomicBool::new(false),
                topics: OnceCell::new(),
                ids: std::sync::Mutex::new(None),
            }),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        // Only ever called before the broker is shared (builder methods).
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            change(inner);
        }
        self
    }

    /// The JetStream stream's name (default `SSE`). Hubs that should act as one use the same
    /// stream and subject prefix.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.stream_name("MYAPP_EVENTS");
    /// # drop(nats);
    /// # }
    /// ```
    pub fn stream_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|inner| inner.stream_name = name)
    }

    /// The prefix of the stream's subjects (default `sse`): a topic's events go to
    /// `<prefix>.t.<token>`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.subject_prefix("myapp.events");
    /// # drop(nats);
    /// # }
    /// ```
    pub fn subject_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|inner| inner.prefix = prefix)
    }

    /// How long a publish or a replay read may wait for NATS before it fails with
    /// `Unavailable` (default [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.timeout(std::time::Duration::from_millis(500));
    /// # drop(nats);
    /// # }
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|inner| inner.timeout = timeout)
    }

    /// Keep at most `n` messages in the stream, for the whole hub (default
    /// [`DEFAULT_MAX_EVENTS`](Self::DEFAULT_MAX_EVENTS)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.max_events(1_000_000);
    /// # drop(nats);
    /// # }
    /// ```
    pub fn max_events(self, n: usize) -> Self {
        self.with(|inner| inner.max_events = n.max(1))
    }

    /// Keep also at most `n` messages per topic (JetStream's limit per subject; off by
    /// default), so that a busy topic does not push a quiet one's history out. The cost: such
    /// a limit removes messages from the middle of the log, and a resume whose range has a
    /// removed message in it (of any topic) is `history-lost`, because one cursor cannot tell
    /// whose it was. (Events of several topics at once share one subject, and so one limit.)
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.max_events_per_topic(1_000);
    /// # drop(nats);
    /// # }
    /// ```
    pub fn max_events_per_topic(self, n: usize) -> Self {
        self.with(|inner| inner.max_events_per_topic = Some(n.max(1)))
    }

    /// Keep at most `n` bytes of messages in the stream (default
    /// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.max_bytes(256 << 20);
    /// # drop(nats);
    /// # }
    /// ```
    pub fn max_bytes(self, n: usize) -> Self {
        self.with(|inner| inner.max_bytes = n.max(1))
    }

    /// Drop messages older than `age` (default [`DEFAULT_MAX_AGE`](Self::DEFAULT_MAX_AGE)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.max_age(std::time::Duration::from_secs(600));
    /// # drop(nats);
    /// # }
    /// ```
    pub fn max_age(self, age: Duration) -> Self {
        self.with(|inner| inner.max_age = age.max(Duration::from_secs(1)))
    }

    /// How long JetStream remembers an
    /// [`idempotency_key`](crate::hub::PublishBuilder::idempotency_key) (the stream's
    /// duplicate window; default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`](Self::DEFAULT_IDEMPOTENCY_WINDOW)).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = tower_sse::hub::NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let nats = nats.idempotency_window(std::time::Duration::from_secs(60));
    /// # drop(nats);
    /// # }
    /// ```
    pub fn idempotency_window(self, window: Duration) -> Self {
        self.with(|inner| inner.idempotency_window = window.max(Duration::from_millis(100)))
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("NatsBroker")
            .field("url", &inner.url)
            .field("stream_name", &inner.stream_name)
            .field("prefix", &inner.prefix)
            .field("timeout", &inner.timeout)
            .field("max_events", &inner.max_events)
            .field("max_events_per_topic", &inner.max_events_per_topic)
            .field("max_bytes", &inner.max_bytes)
            .field("max_age", &inner.max_age)
            .finish_non_exhaustive()
    }
}

/// The offset of a stream's ids: the time it was made in ms × 1024, so that streams made at
/// different times give ids in ranges that do not meet unless one of them carries more than
/// 1,024 messages per millisecond of the time between them.
fn offset(unix_nanos: i128) -> u64 {
    let ms = unix_nanos / 1_000_000;
    u64::try_from(ms).unwrap_or(0).saturating_mul(1024)
}

/// The start of the stream's description that carries the offset of its ids, written by the
/// process that makes the stream. The offset must be the same for every process, for as long
/// as the stream lives; the stream's `created` time is not: nats-server (2.9) reports, after a
/// restart, the time of an earlier restart once the stream's configuration was updated in
/// between (every process updates it when it starts), so a process started then would number
/// the same messages differently from the others (found by `examples/chaos.rs`).
const OFFSET_TAG: &str = "tower-sse ids offset ";

/// The offset written in a stream's description, if there is one.
fn tagged_offset(config: &jetstream::stream::Config) -> Option<u64> {
    config
        .description
        .as_deref()?
        .strip_prefix(OFFSET_TAG)?
        .trim()
        .parse()
        .ok()
}

/// The offset of a stream's ids: the one in its description, else (a stream made before the
/// offset was written down) its creation time.
fn stream_offset(info: &jetstream::stream::Info) -> u64 {
    tagged_offset(&info.config).unwrap_or_else(|| offset(info.created.unix_timestamp_nanos()))
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(what: &str, err: &dyn fmt::Display) {
    tracing::warn!(error = %err, "nats {what} failed");
}

impl Inner {
    fn subject_one(&self, topic: &str) -> String {
        format!("{}.t.{}", self.prefix, subject::token(topic))
    }

    fn subject_many(&self) -> String {
        format!("{}.m", self.prefix)
    }

    fn subject_send(&self) -> String {
        format!("{}.send", self.prefix)
    }

    fn subject_id(&self, id: &str) -> String {
        format!("{}.id.{}", self.prefix, subject::token(id))
    }

    /// The index of publisher's ids: a stream with one message per id, its position.
    async fn ids(&self) -> Result<jetstream::stream::Stream, String> {
        let connects = self.connects();
        if let Some((stream, at)) = lock(&self.ids).clone() {
            if at == connects {
                return Ok(stream);
            }
        }
        let stream = async {
            let config = jetstream::stream::Config {
                name: format!("{}_IDS", self.stream_name),
                subjects: vec![format!("{}.id.*", self.prefix)],
                max_messages_per_subject: 1,
                max_messages: i64::try_from(self.max_events).unwrap_or(i64::MAX),
                max_age: self.max_age,
                storage: jetstream::stream::StorageType::File,
                discard: jetstream::stream::DiscardPolicy::Old,
                ..Default::default()
            };
            let work = async {
                if let Ok(stream) = self.jetstream.get_stream(&config.name).await {
                    return Ok(stream);
                }
                match self.jetstream.create_stream(config.clone()).await {
                    Ok(stream) => Ok(stream),
                    // Another process made it meanwhile.
                    Err(err) => self
                        .jetstream
                        .get_stream(&config.name)
                        .await
                        .map_err(|_| err.to_string()),
                }
            };
            tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| "timed out".to_owned())?
        }
        .await?;
        *lock(&self.ids) = Some((stream.clone(), connects));
        Ok(stream)
    }

    /// How many times the client has connected: a change means NATS may have restarted.
    fn connects(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes `id` → `pos` in the index, unless `id` is there already (its first use stays).
    async fn index(&self, id: &str, pos: u64) -> Result<(), String> {
        self.ids().await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let ack = self
            .jetstream
            .publish_with_headers(self.subject_id(id), headers, pos.to_string().into())
            .await
            .map_err(|e| e.to_string())?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.kind(),
                    jetstream::context::PublishErrorKind::WrongLastSequence
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// The position the index has for `id`.
    async fn find(&self, id: &str) -> Result<Option<u64>, String> {
        let stream = self.ids().await?;
        match stream
            .get_last_raw_message_by_subject(&self.subject_id(id))
            .await
        {
            Ok(message) => Ok(std::str::from_utf8(&message.payload)
                .ok()
                .and_then(entry::position)),
            Err(err)
                if matches!(
                    err.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// The hub's stream, made (or brought to this configuration) on first use, and the offset
    /// of its ids: position = offset + sequence.
    async fn stream(&self) -> Result<(jetstream::stream::Stream, u64), String> {
        let connects = self.connects();
        if let Some(made) = self.cached_stream(connects) {
            return Ok(made);
        }
        let _making = self.making.lock().await;
        if let Some(made) = self.cached_stream(connects) {
            return Ok(made);
        }
        let made = async {
            let config = jetstream::stream::Config {
                name: self.stream_name.clone(),
                subjects: vec![format!("{}.t.>", self.prefix), self.subject_many()],
                max_messages: i64::try_from(self.max_events).unwrap_or(i64::MAX),
                max_messages_per_subject: self
                    .max_events_per_topic
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
                max_age: self.max_age,
                duplicate_window: self.idempotency_window.min(self.max_age),
                storage: jetstream::stream::StorageType::File,
                discard: jetstream::stream::DiscardPolicy::Old,
                ..Default::default()
            };
            // The offset of the ids is written in the stream's description (see
            // `OFFSET_TAG`), kept by every update.
            let tagged = |offset: u64| jetstream::stream::Config {
                description: Some(format!("{OFFSET_TAG}{offset}")),
                ..config.clone()
            };
            let update = |existing: jetstream::stream::Stream| async move {
                // This process's settings are applied once, not at every reconnect (during a
                // rolling change of limits, a NATS restart would otherwise let whichever
                // process looks last set them).
                if self.configured.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(existing);
                }
                let offset = stream_offset(existing.cached_info());
                self.jetstream
                    .update_stream(&tagged(offset))
                    .await
                    .map_err(|e| e.to_string())?;
                self.jetstream
                    .get_stream(&self.stream_name)
                    .await
                    .map_err(|e| e.to_string())
            };
            let work = async {
                match self.jetstream.get_stream(&self.stream_name).await {
                    Ok(existing) => update(existing).await,
                    Err(_) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
                        match self.jetstream.create_stream(tagged(offset(now))).await {
                            Ok(made) => Ok(made),
                            // Another process made it meanwhile: its offset holds.
                            Err(err) => match self.jetstream.get_stream(&self.stream_name).await {
                                Ok(existing) => update(existing).await,
                                Err(_) => Err(err.to_string()),
                            },
                        }
                    }
                }
            };
            let stream = tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| "timed out".to_owned())??;
            let offset = stream_offset(stream.cached_info());
            Ok::<_, String>((stream, offset))
        }
        .await?;
        self.configured
            .store(true, std::sync::atomic::Ordering::Release);
        *lock(&self.stream) = Some((made.0.clone(), made.1, connects));
        Ok(made)
    }

    /// The stream as looked up since the client last connected.
    fn cached_stream(&self, connects: u64) -> Option<(jetstream::stream::Stream, u64)> {
        lock(&self.stream)
            .clone()
            .filter(|(_, _, at)| *at == connects)
            .map(|(stream, offset, _)| (stream, offset))
    }

    /// The next use looks the stream up again: NATS no longer has it (`gone`: it lost its
    /// store, or someone deleted it; it is then made again with a new offset, so its ids follow
    /// every id issued before), or another process made it again.
    fn forget_stream(&self, gone: bool) {
        if gone {
            tracing::warn!(stream = %self.stream_name, "nats stream gone; it will be made again");
        }
        *lock(&self.stream) = None;
        *lock(&self.ids) = None;
    }

    /// The topic registry (a key-value bucket), for hubs that do not create topics on demand.
    async fn topics(&self) -> Result<jetstream::kv::Store, String> {
        let store = self
            .topics
            .get_or_try_init(|| async {
                let bucket = format!("{}_TOPICS", self.stream_name);
                let work = async {
                    if let Ok(store) = self.jetstream.get_key_value(&bucket).await {
                        return Ok(store);
                    }
                    // The bucket's stream, made as the key-value convention has it
                    // (`create_key_value` first reads account limits in a form older servers
                    // do not answer in).
                    let config = jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        storage: jetstream::stream::StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        ..Default::default()
                    };
                    if let Err(err) = self.jetstream.create_stream(config).await {
                        tracing::debug!(error = %err, "nats topic registry: create");
                    }
                    self.jetstream
                        .get_key_value(&bucket)
                        .await
                        .map_err(|e| e.to_string())
                };
                tokio::time::timeout(self.timeout, work)
                    .await
                    .map_err(|_| "timed out".to_owned())?
            })
            .await?;
        Ok(store.clone())
    }

    async fn registered(&self, topic: &str) -> Result<bool, String> {
        let store = self.topics().await?;
        let key = subject::token(topic);
        match tokio::time::timeout(self.timeout, store.get(key)).await {
            Ok(Ok(value)) => Ok(value.is_some()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<u64, PublishError> {
        let Publication {
            targets,
            fields,
            private,
            close,
            id,
            must_exist,
            idempotency_key,
        } = publication;
        let names = match &targets {
            entry::Targets::Topics(names) => &names[..],
            entry::Targets::All => &[],
        };
        if must_exist {
            for name in names {
                match self.registered(name).await {
                    Ok(true) => {}
                    Ok(false) => return Err(PublishError::UnknownTopic),
                    Err(err) => {
                        unavailable("publish", &err);
                        return Err(PublishError::Unavailable);
                    }
                }
            }
        }
        let subject = match names {
            [one] if !close => self.subject_one(one),
            _ => self.subject_many(),
        };
        let body = entry::encode(&targets, private, close, id, fields);
        let mut headers = HeaderMap::new();
        if let Some(key) = idempotency_key {
            headers.insert("Nats-Msg-Id", key);
        }
        let send = async {
            let connects = self.connects();
            let (_, mut offset) = self.stream().await?;
            let ack = self
                .jetstream
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| e.to_string())?;
            let ack = ack.await.map_err(|e| {
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    self.forget_stream(true);
                }
                e.to_string()
            })?;
            if self.connects() != connects {
                // Reconnected meanwhile: the ack is from the stream as it is now, which
                // another process may have made again with another offset.
                offset = self.stream().await?.1;
            }
            Ok::<_, String>(ack.sequence + offset)
        };
        let pos = match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(pos)) => pos,
            Ok(Err(err)) => {
                unavailable("publish", &err);
                return Err(PublishError::Unavailable);
            }
            Err(_) => {
                unavailable("publish", &"timed out");
                return Err(PublishError::Unavailable);
            }
        };
        if let Some(id) = id {
            // The event is stored: failing now would make a retry store it twice. A client
            // resuming from an id the index lacks is told `history-lost`.
            match tokio::time::timeout(self.timeout, self.index(id, pos)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => unavailable("id index", &err),
                Err(_) => unavailable("id index", &"timed out"),
            }
        }
        if close && must_exist {
            if let Ok(store) = self.topics().await {
                for name in names {
                    let _ =
                        tokio::time::timeout(self.timeout, store.purge(subject::token(name))).await;
                }
            }
        }
        Ok(pos)
    }
}

impl Remote for NatsBroker {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn start(&self, feed: Feed) {
        tokio::spawn(reader::run(Arc::clone(&self.inner), feed.clone()));
        tokio::spawn(reader::listen(Arc::clone(&self.inner), feed));
    }

    fn publish<'a>(
        &'a self,
        publication: Publication<'a>,
    ) -> BoxFuture<'a, Result<u64, PublishError>> {
        Box::pin(self.inner.publish(publication))
    }

    fn send_to<'a>(
        &'a self,
        client_id: &'a str,
        event: Option<&'a EncodedEvent>,
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let message = entry::direct(client_id, event);
            let send = async {
                inner
                    .client
                    .publish(inner.subject_send(), message.into())
                    .await
                    .map_err(|e| e.to_string())?;
                inner.client.flush().await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(inner.timeout, send).await {
                Ok(Ok(())) => Ok(0),
                Ok(Err(err)) => {
                    unavailable("send_to", &err);
                    Err(PublishError::Unavailable)
                }
                Err(_) => {
                    unavailable("send_to", &"timed out");
                    Err(PublishError::Unavailable)
                }
            }
        })
    }

    fn presence<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let payload = entry::presence(message);
            let send = inner.client.publish(inner.subject_send(), payload.into());
            match tokio::time::timeout(inner.timeout, send).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => {
                    unavailable("presence", &err);
                    Err(PublishError::Unavailable)
                }
                Err(_) => {
                    unavailable("presence", &"timed out");
                    Err(PublishError::Unavailable)
                }
            }
        })
    }

    fn create_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, PublishError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let made = async {
                let store = inner.topics().await?;
                match store
                    .create(subject::token(topic), bytes::Bytes::new())
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(err) if err.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                        Ok(false)
                    }
                    Err(err) => Err(err.to_string()),
                }
            };
            match tokio::time::timeout(inner.timeout, made).await {
                Ok(Ok(made)) => Ok(made),
                Ok(Err(err)) => {
                    unavailable("create topic", &err);
                    Err(PublishError::Unavailable)
                }
                Err(_) => Err(PublishError::Unavailable),
            }
        })
    }

    fn topics_exist<'a>(
        &'a self,
        topics: &'a [&'a str],
    ) -> BoxFuture<'a, Result<bool, SubscribeError>> {
        Box::pin(async move {
            for topic in topics {
                match self.inner.registered(topic).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(err) => {
                        unavailable("subscribe", &err);
                        return Err(SubscribeError::Unavailable);
                    }
                }
            }
            Ok(true)
        })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<u64>, SubscribeError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.inner.timeout, self.inner.find(id)).await {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(err)) => {
                    unavailable("subscribe", &err);
                    Err(SubscribeError::Unavailable)
                }
                Err(_) => {
                    unavailable("subscribe", &"timed out");
                    Err(SubscribeError::Unavailable)
                }
            }
        })
    }

    fn read(&self, after: Option<u64>, max: usize) -> BoxFuture<'_, Result<Read, SubscribeError>> {
        Box::pin(replay::read(&self.inner, after, max))
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout
    }
}
