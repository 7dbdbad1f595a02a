use std::{fmt, sync::Arc, time::Duration};

use super::{Authorizer, Hub, broker::Broker};
use crate::replay::{Limits, UnknownId};

#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub(super) history: Limits,
    pub(super) subscriber_capacity: usize,
    pub(super) client_capacity: usize,
    pub(super) auto_create: bool,
    pub(super) on_unknown_id: UnknownId,
    pub(super) max_topics: usize,
    pub(super) presence_interval: std::time::Duration,
}

/// Largest ring capacity accepted; larger values are clamped.
const MAX_CAPACITY: usize = 1 << 20;

impl Default for Config {
    fn default() -> Self {
        Self {
            history: Limits {
                events: HubBuilder::DEFAULT_HISTORY_EVENTS,
                bytes: HubBuilder::DEFAULT_HISTORY_BYTES,
                age: HubBuilder::DEFAULT_HISTORY_AGE,
            },
            subscriber_capacity: HubBuilder::DEFAULT_SUBSCRIBER_CAPACITY,
            client_capacity: HubBuilder::DEFAULT_CLIENT_CAPACITY,
            auto_create: true,
            on_unknown_id: UnknownId::DEFAULT,
            max_topics: HubBuilder::DEFAULT_MAX_TOPICS,
            presence_interval: HubBuilder::DEFAULT_PRESENCE_INTERVAL,
        }
    }
}

/// Configures a [`Hub`]. Made by [`Hub::builder`].
///
/// # Memory bounds
///
/// - **History**, per topic: at most [`history_events`](Self::history_events) events,
///   [`history_bytes`](Self::history_bytes) encoded bytes, none older than
///   [`history_age`](Self::history_age). The oldest events go first. The age bound is applied
///   whenever the topic is touched (publish, subscribe, a subscriber leaving) and by
///   [`Hub::purge`].
/// - **Live ring**, per topic: [`subscriber_capacity`](Self::subscriber_capacity) events shared by
///   all subscribers of the topic. A subscriber holds only a cursor into it. One that falls
///   further behind is disconnected (its stream ends) and counted in
///   [`HubStats::slow_disconnects`](super::HubStats::slow_disconnects).
/// - **Per client id**: a ring of [`client_capacity`](Self::client_capacity) events for
///   [`Hub::send_to`], with the same rule.
/// - **Per subscription**: its replay backlog (at most the history, as shared handles, not copies
///   of the bytes).
///
/// Events are stored as [`EncodedEvent`](crate::EncodedEvent)s: the history and the rings hold
/// handles to the same bytes.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{hub::Hub, replay::UnknownId};
///
/// let hub = Hub::builder()
///     .history_events(500)
///     .history_bytes(256 * 1024)
///     .history_age(Duration::from_secs(600))
///     .subscriber_capacity(128)
///     .on_unknown_id(UnknownId::LiveOnly)
///     .build();
/// # drop(hub);
/// ```
#[must_use]
pub struct HubBuilder {
    pub(super) config: Config,
    pub(super) authorizer: Arc<dyn Authorizer>,
    pub(super) broker: Option<Broker>,
}

impl HubBuilder {
    /// Default for [`history_events`](Self::history_events): 1000.
    pub const DEFAULT_HISTORY_EVENTS: usize = Limits::DEFAULT.events;
    /// Default for [`history_bytes`](Self::history_bytes): 1 MiB.
    pub const DEFAULT_HISTORY_BYTES: usize = Limits::DEFAULT.bytes;
    /// Default for [`history_age`](Self::history_age): one hour.
    pub const DEFAULT_HISTORY_AGE: Duration = Limits::DEFAULT.age;
    /// Default for [`subscriber_capacity`](Self::subscriber_capacity): 256.
    pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 256;
    /// Default for [`client_capacity`](Self::client_capacity): 64.
    pub const DEFAULT_CLIENT_CAPACITY: usize = 64;
    /// Default for [`max_topics`](Self::max_topics): 32.
    pub const DEFAULT_MAX_TOPICS: usize = 32;
    /// Default for [`presence_interval`](Self::presence_interval): 5 s.
    pub const DEFAULT_PRESENCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self {
            config: Config::default(),
            authorizer: Arc::new(()),
            broker: None,
        }
    }

    /// Keep at most `events` events per topic for replay. `0` keeps no history: a reconnecting
    /// client then recovers only if it had seen the latest event.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().history_events(10).build();
    /// # drop(hub);
    /// ```
    pub fn history_events(mut self, events: usize) -> Self {
        self.config.history.events = events;
        self
    }

    /// Keep at most `bytes` encoded bytes per topic for replay. An event larger than this is
    /// delivered live but never kept.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().history_bytes(64 * 1024).build();
    /// # drop(hub);
    /// ```
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.config.history.bytes = bytes;
        self
    }

    /// Forget events older than `age`.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder()
    ///     .history_age(std::time::Duration::from_secs(60))
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn history_age(mut self, age: Duration) -> Self {
        self.config.history.age = age;
        self
    }

    /// How far (in events) a subscriber may fall behind a topic before it is disconnected.
    /// Clamped to `1..=1_048_576`, then rounded up to a power of two. This is the size of the
    /// topic's shared live ring, not a queue per subscriber.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().subscriber_capacity(1024).build();
    /// # drop(hub);
    /// ```
    pub fn subscriber_capacity(mut self, events: usize) -> Self {
        self.config.subscriber_capacity = events.clamp(1, MAX_CAPACITY);
        self
    }

    /// How far a client id's connections may fall behind events sent with [`Hub::send_to`]
    /// before they are disconnected. Clamped and rounded like
    /// [`subscriber_capacity`](Self::subscriber_capacity).
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().client_capacity(16).build();
    /// # drop(hub);
    /// ```
    pub fn client_capacity(mut self, events: usize) -> Self {
        self.config.client_capacity = events.clamp(1, MAX_CAPACITY);
        self
    }

    /// Whether publishing to or subscribing to a topic that does not exist creates it (default
    /// `true`). When `false`, topics are made with [`Hub::create_topic`] and the others are
    /// refused with a typed error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::builder().auto_create(false).build();
    /// assert!(hub.subscribe("t").await.is_err());
    /// hub.create_topic("t").await.unwrap();
    /// assert!(hub.subscribe("t").await.is_ok());
    /// # }
    /// ```
    pub fn auto_create(mut self, auto_create: bool) -> Self {
        self.config.auto_create = auto_create;
        self
    }

    /// What to send when a `Last-Event-ID` is not in the history (default
    /// [`UnknownId::SendRecent`]`(100)`: the newest 100 events the subscription selects, so a
    /// made-up id cannot fetch the whole history). Can be overridden per subscription.
    ///
    /// ```
    /// use tower_sse::{hub::Hub, replay::UnknownId};
    ///
    /// let hub = Hub::builder().on_unknown_id(UnknownId::LiveOnly).build();
    /// # drop(hub);
    /// ```
    pub fn on_unknown_id(mut self, on_unknown_id: UnknownId) -> Self {
        self.config.on_unknown_id = on_unknown_id;
        self
    }

    /// The most topics and patterns one subscription may follow (default 32); more is refused
    /// with [`SelectionError::TooManyTopics`](super::SelectionError::TooManyTopics).
    ///
    /// ```
    /// use tower_sse::hub::{Hub, SelectionError, SubscribeError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::builder().max_topics(2).build();
    /// let err = hub.subscriber("a").topic("b").topic("c").subscribe().await.unwrap_err();
    /// assert_eq!(err, SubscribeError::Selection(SelectionError::TooManyTopics { max: 2 }));
    /// # }
    /// ```
    pub fn max_topics(mut self, max: usize) -> Self {
        self.config.max_topics = max;
        self
    }

    /// How often each process tells the others it is alive, for [presence](super::presence)
    /// on a broker (default 5 s, at least 10 ms): a process not heard from for three intervals
    /// is gone and its members expire. Shorter finds crashes sooner, for one small message per
    /// process per interval.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let hub = tower_sse::hub::Hub::builder().presence_interval(Duration::from_secs(1)).build();
    /// # drop(hub);
    /// ```
    pub fn presence_interval(mut self, interval: std::time::Duration) -> Self {
        self.config.presence_interval = interval.max(std::time::Duration::from_millis(10));
        self
    }

    /// Checks every subscription (default `()`: allow all). See [`Authorizer`].
    ///
    /// ```
    /// use tower_sse::hub::{Hub, SubscribeRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::builder()
    ///     .authorizer(|req: &SubscribeRequest<'_>| !req.topic().starts_with("admin/"))
    ///     .build();
    /// assert!(hub.subscribe("admin/logs").await.is_err());
    /// # }
    /// ```
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Arc::new(authorizer);
        self
    }

    /// Runs the hub on Redis Streams, so every hub on the same Redis (and key prefix) acts as
    /// one: see [`RedisBackend`](super::RedisBackend) and the module `redis` docs for what
    /// changes. The history bound is then the stream's length
    /// ([`history_events`](Self::history_events), trimmed approximately); the byte and age bounds
    /// apply to each process's cache of it.
    ///
    /// Build the hub inside a tokio runtime: its reader tasks start on the first publish or
    /// subscribe.
    ///
    /// ```no_run
    /// use tower_sse::hub::{Hub, RedisBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await.unwrap();
    /// let hub = Hub::builder().history_events(10_000).redis(redis).build();
    /// # drop(hub);
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, backend: super::RedisBackend) -> Self {
        self.broker = Some(Broker::Remote(std::sync::Arc::new(backend)));
        self
    }

    /// Runs the hub on NATS JetStream, so every hub on the same NATS (stream and subject
    /// prefix) acts as one: see [`NatsBroker`](super::NatsBroker). The history bound is then
    /// the stream's ([`NatsBroker::max_events`](super::NatsBroker::max_events), bytes, age);
    /// the `history_*` bounds apply to each process's cache of the topics it serves.
    ///
    /// Build the hub inside a tokio runtime: its reader starts on the first publish or
    /// subscribe.
    ///
    /// ```no_run
    /// use tower_sse::hub::{Hub, NatsBroker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nats = NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    /// let hub = Hub::builder().nats(nats).build();
    /// # drop(hub);
    /// # }
    /// ```
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub fn nats(mut self, broker: super::NatsBroker) -> Self {
        self.broker = Some(Broker::Remote(std::sync::Arc::new(broker)));
        self
    }

    /// Builds the hub. Each hub picks a fresh id epoch, so ids from another hub are recognised as
    /// unknown.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().build();
    /// # drop(hub);
    /// ```
    pub fn build(self) -> Hub {
        Hub::from_builder(self)
    }
}

impl Default for HubBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .field("authorizer", &format_args!("_"))
            .finish()
    }
}
