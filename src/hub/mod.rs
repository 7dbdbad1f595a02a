//! In-process pub/sub: named topics, per-client addressing, broadcast, bounded history and
//! gap-free replay.
//!
//! A [`Hub`] is a cheap [`Clone`] handle. Publishers call [`Hub::publish`] (one topic),
//! [`Hub::broadcast`] (every topic) or [`Hub::send_to`] (every connection of one client id);
//! each event is encoded **once** and every subscriber receives a handle to the same bytes.
//! Subscribers get a [`Subscription`], a [`Stream`](futures_core::Stream) of
//! [`EncodedEvent`]s that plugs straight into an SSE body.
//!
//! # Example
//!
//! ```
//! use futures_util::StreamExt;
//! use tower_sse::{Event, hub::Hub, replay::Replay};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new();
//! let mut live = hub.subscribe("news").await.unwrap();
//!
//! // The hub gives events without an id one of its own.
//! let first = hub.publish("news", Event::new().data("one")).await.unwrap();
//! let got = live.next().await.unwrap();
//! assert_eq!(got.id(), first.id());
//! // Same bytes, not a copy.
//! assert_eq!(got.as_bytes().as_ptr(), first.as_bytes().as_ptr());
//!
//! // The client drops out; an event goes by; it comes back with its Last-Event-ID.
//! drop(live);
//! hub.publish("news", Event::new().data("two")).await.unwrap();
//! let mut back = hub.subscriber("news").last_event_id(first.id()).subscribe().await.unwrap();
//! assert_eq!(back.replay(), Replay::Complete);
//! hub.publish("news", Event::new().data("three")).await.unwrap();
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: two\n"));
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: three\n"));
//!
//! // An id the hub does not know is reported, not skipped silently.
//! let lost = hub.subscriber("news").last_event_id(Some("garbage")).subscribe().await.unwrap();
//! assert_eq!(lost.replay(), Replay::HistoryLost);
//! # }
//! ```
//!
//! # Over HTTP
//!
//! A [`Subscription`] goes into an SSE response as it is
//! ([`EventStream::new(subscription)`](crate::EventStream), or, with the `axum` feature,
//! returned from a handler). How the request's `Last-Event-ID` was honoured is told with the
//! [`REPLAY_HEADER`](crate::replay::REPLAY_HEADER) response header (`Sse-Replay: none | complete | history-lost`) and, for
//! browsers, optionally with a first event ([`Subscription::notify_history_lost`]); see
//! [`REPLAY_HEADER`](crate::replay::REPLAY_HEADER) for the reasoning. `examples/chat.rs` is a complete application.
//!
//! # Design
//!
//! Each topic has one lock over its history (a `VecDeque` bounded by count, bytes and age, see
//! [`HubBuilder`]) and the sending half of a shared ring (`tokio::sync::broadcast`) in which
//! each subscriber holds only a cursor.
//!
//! - **Publishing** takes the lock, assigns the id, encodes, appends to the history and sends
//!   into the ring. The publisher never waits for subscribers.
//! - **Subscribing** takes the same lock, copies the handles of the history after the
//!   `Last-Event-ID` and registers a live cursor. Each event published concurrently is either in
//!   that backlog or after the cursor, never both and never neither: replay is exactly once and
//!   in order.
//! - **Per subscriber, per event**, what remains is one atomic increment (cloning the handle)
//!   and a wake-up. No queue per subscriber, no allocation (the receive future's box is
//!   allocated once per subscription and reused).
//! - **A slow subscriber** that falls further behind than the ring's capacity is disconnected:
//!   its stream ends, [`HubStats::slow_disconnects`] counts it, and the client comes back with
//!   its `Last-Event-ID`. Others are not affected.
//!
//! # Many topics, one stream
//!
//! A subscription may follow several topics ([`SubscribeBuilder::topic`]) and patterns
//! ([`SubscribeBuilder::pattern`] with a [`Matcher`]: [`Pattern::prefix`], [`Pattern::glob`],
//! or your own), up to [`HubBuilder::max_topics`] (32) in all. It is one stream, in the hub's
//! order, resumable with one `Last-Event-ID`:
//!
//! - **One order**: every event has a position, hub-wide. The hub hands an event to all its
//!   topics and patterns under one lock, in position order, and a subscription merges its
//!   rings by position, so it delivers in that order. An event that reaches a subscription
//!   through two of its topics (one [`Hub::publish_many`], a [`Hub::broadcast`], a topic that
//!   a pattern also matches) comes once.
//! - **One cursor**: the id of any event of the hub positions the whole subscription: the
//!   replay is every retained event after it in every followed topic (and every retained
//!   topic a pattern matches), in order, each once, then live events with no gap. The set may
//!   change between reconnects: a topic added later replays its events after the cursor.
//! - **Gaps are told**: when one of the topics no longer holds everything after the cursor
//!   (evicted), the replay is [`Replay::HistoryLost`]. A topic made after the cursor lost
//!   nothing; a topic that was removed and made again cannot replay what the old one took
//!   with it, and says so; so does a pattern's replay once any topic was removed after the
//!   cursor, and a publisher's id found at two places (the replay starts at the oldest). A
//!   replay holds at most `max_topics` full histories (the newest; more is `HistoryLost`).
//! - **Closing**: when one of the followed topics is closed (or [`Hub::close_all`]), the
//!   stream ends after what was already on its way; the client comes back with its last id.
//!   (Going on without the topic would miss a topic made again under its name.)
//! - **Authorization** is asked for each topic and each pattern on its own
//!   ([`SubscribeRequest::pattern`] tells a pattern's check apart), so an allowed topic never
//!   carries a forbidden one in.
//! - **Cost**: a single topic keeps the fast path (one ring, no merge). With several, a
//!   subscription checks each of its rings per event (an atomic load when it has nothing).
//!   A publish is matched once against each distinct pattern that has subscribers (equal
//!   patterns share one ring). Every publish, and every subscription to several topics (its
//!   replay included, with the [`PrivateAccess`] checks of replayed private events), runs
//!   under the hub's one order lock: keep matchers and accesses quick, and do not let clients
//!   choose unbounded numbers of distinct patterns.
//!
//! With the `redis` feature the Redis broker serves one topic per subscription for now;
//! several are refused with [`SelectionError::Unsupported`].
//!
//! ```
//! use futures_util::StreamExt;
//! use tower_sse::{Event, hub::{Hub, Pattern}, replay::Replay};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new();
//! let follow = || hub.subscriber("dm/alice").pattern(Pattern::glob("rooms/*").unwrap());
//! let mut sub = follow().subscribe().await.unwrap();
//! let seen = hub.publish("rooms/1", Event::new().data("hi")).await.unwrap();
//! assert_eq!(sub.next().await.unwrap().id(), seen.id());
//! drop(sub);
//! hub.publish("dm/alice", Event::new().data("psst")).await.unwrap();
//! hub.publish("rooms/2", Event::new().data("new room")).await.unwrap();
//! let mut back = follow().last_event_id(seen.id()).subscribe().await.unwrap();
//! assert_eq!(back.replay(), Replay::Complete);
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: psst\n"));
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: new room\n"));
//! # }
//! ```
//!
//! # Ids
//!
//! An event published without an id gets `"<epoch>-<seq>"`: `epoch` is chosen at random when the
//! hub is built, `seq` is hub-wide and increasing (so increasing within each topic, with gaps).
//! An id from another hub, an earlier process or an evicted event is therefore recognised as
//! unknown rather than misread, and reported as [`Replay::HistoryLost`]. An id the publisher set
//! itself is kept, and found again by exact match within the history.
//!
//! Events sent with [`Hub::broadcast`] go into every topic's history under one id (the
//! publisher's, or one the hub gives them, the same in every topic, since positions are
//! hub-wide), so a client that saw one resumes after it. Events sent with [`Hub::send_to`] are
//! live only: they are not kept for replay, and get no id.
//!
//! # Topic lifetime
//!
//! Topics are created on demand by [`Hub::publish`] and [`Hub::subscribe`] (unless
//! [`HubBuilder::auto_create`] is off), or by [`Hub::create_topic`]. A topic that has neither
//! subscribers nor history is removed when its last subscriber leaves, and by [`Hub::purge`];
//! a topic that still has history is kept, so clients can replay it. [`Hub::close_topic`] ends
//! every subscriber's stream and removes the topic at once.
//!
//! # Backends: in memory, or Redis
//!
//! By default a hub lives in its process. With the `redis` feature,
//! [`HubBuilder::redis`] puts it on Redis Streams, and every hub on the same Redis (and key
//! prefix) acts as one: a client gets every event whichever process it is connected to, and
//! resumes on any of them with its `Last-Event-ID`. The API is the same; what changes:
//!
//! | | in memory (default) | Redis |
//! |---|---|---|
//! | ids | `<epoch>-<seq>`, or the publisher's own | the stream entry id (`1700000000000-0`) |
//! | history | per topic, by count, bytes, age | the stream, `MAXLEN ~ history_events`; each process caches the recent part |
//! | replay | from the history | from the cache, else `XRANGE`, then a gap-free hand-off |
//! | `broadcast`, `send_to` | this process | every process, over pub/sub, live only |
//! | counts, [`topics`](Hub::topics), [`purge`](Hub::purge), [`close_all`](Hub::close_all) | this process | this process |
//! | errors | never `Unavailable` | `Unavailable` while Redis is down (command timeout, default 2 s) |
//!
//! Each process reads each topic that has local subscribers once, over one connection for all
//! topics, and fans out locally: three Redis connections per process in all, whatever the
//! number of clients. See `RedisBackend` for the details.

mod auth;
mod config;
mod error;
mod merge;
mod recv;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "axum")]
mod response;
mod select;
mod subscription;
mod topic;

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, Hasher},
    io::Write as _,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::{sync::broadcast, time::Instant};

#[cfg(feature = "redis")]
pub use self::redis::{RedisBackend, RedisError};
pub use self::{
    auth::{Authorizer, PrivateAccess, PrivateEvent, SubscribeRequest},
    config::HubBuilder,
    error::{PublishError, SubscribeError},
    select::{Matcher, Pattern, SelectionError},
    subscription::{SubscribeBuilder, Subscription},
};
use self::{
    config::Config,
    merge::{Merge, Owner, Source},
    recv::{Item, Recv, Ring},
    select::Selection,
    topic::Topic,
};
use crate::{
    EncodedEvent, Event,
    replay::{Replay, UnknownId},
};

/// An in-process pub/sub hub. Cheap to clone: clones share the same topics.
///
/// See the [module docs](self) for the design.
///
/// ```
/// use tower_sse::{Event, hub::Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let other = hub.clone();
/// let _sub = hub.subscribe("t").await.unwrap();
/// other.publish("t", Event::new().data("x")).await.unwrap();
/// assert_eq!(other.subscriber_count("t"), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Counters of a [`Hub`], from [`Hub::stats`].
///
/// ```
/// let stats = tower_sse::hub::Hub::new().stats();
/// assert_eq!(stats.subscribers, 0);
/// assert_eq!(stats.slow_disconnects, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Topics that exist now.
    pub topics: usize,
    /// Subscriptions open now.
    pub subscribers: usize,
    /// Events published (each [`Hub::publish`], [`Hub::broadcast`], [`Hub::send_to`] and final
    /// event counts once).
    pub published: u64,
    /// Subscriptions ended because they fell too far behind.
    pub slow_disconnects: u64,
    /// Subscriptions refused by the [`Authorizer`].
    pub forbidden: u64,
}

/// Where events go between publishers and subscribers.
enum Backend {
    /// This process only.
    Memory,
    /// Redis Streams, shared by every hub with the same Redis and prefix.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::Shared>),
}

struct Inner {
    config: Config,
    backend: Backend,
    authorizer: Arc<dyn Authorizer>,
    /// The epoch part of the ids this hub issues.
    epoch: Box<str>,
    /// The next sequence number, hub-wide.
    seq: AtomicU64,
    /// One past the newest event of every topic removed so far (0: none with events): the
    /// floor of topics made from now on.
    lost_below: AtomicU64,
    topics: Mutex<HashMap<Box<str>, Arc<Topic>>>,
    /// Taken around every ordered push (assigning a position and handing the event to its
    /// topics and patterns) and every subscription to several rings: the order lock (see
    /// `merge.rs`). Lock order: this, then the topic map, then a topic.
    order: Mutex<Patterns>,
    clients: Mutex<HashMap<Box<str>, Client>>,
    subscribers: AtomicUsize,
    published: AtomicU64,
    slow_disconnects: AtomicU64,
    forbidden: AtomicU64,
}

/// The connections of one client id.
struct Client {
    sender: broadcast::Sender<Item>,
    connections: usize,
}

/// The live rings of the patterns that have subscribers, by key.
#[derive(Default)]
struct Patterns {
    rings: HashMap<Box<str>, PatternRing>,
}

struct PatternRing {
    matcher: Arc<dyn Matcher>,
    ring: Ring,
    subscribers: usize,
}

impl Patterns {
    /// Hands an event of `topics` to every pattern that matches one of them (once each).
    fn send(&self, topics: &[&str], item: &Item) {
        for pattern in self.rings.values() {
            if topics.iter().any(|topic| pattern.matcher.matches(topic)) {
                pattern.ring.send(item.clone());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A hard-to-guess number, different for every hub (no extra dependency: `RandomState` is
/// seeded from the OS, mixed with the time and a counter).
fn new_epoch() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// An id `"<epoch>-<seq>"` formatted on the stack.
struct IdBuf {
    buf: [u8; 64],
    len: usize,
}

impl IdBuf {
    fn new(epoch: &str, seq: u64) -> Self {
        let mut buf = [0; 64];
        let mut rest = &mut buf[..];
        // The epoch is at most 16 hex digits and the sequence at most 20 digits: this fits.
        let _ = write!(rest, "{epoch}-{seq}");
        let len = 64 - rest.len();
        Self { buf, len }
    }
}

impl AsRef<str> for IdBuf {
    fn as_ref(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Hub {
    /// A hub with the default configuration (see [`HubBuilder`]).
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// assert_eq!(hub.topic_count(), 0);
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a hub.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::builder().history_events(100).build();
    /// # drop(hub);
    /// ```
    pub fn builder() -> HubBuilder {
        HubBuilder::new()
    }

    fn from_builder(builder: HubBuilder) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: builder.config,
                backend: match builder.backend {
                    #[cfg(feature = "redis")]
                    Some(backend) => Backend::Redis(Arc::new(redis::Shared::new(backend))),
                    #[cfg(not(feature = "redis"))]
                    Some(never) => match never {},
                    None => Backend::Memory,
                },
                authorizer: builder.authorizer,
                epoch: format!("{:x}", new_epoch()).into(),
                // From 1: position 0 means "not ordered" (see `recv::Item`).
                seq: AtomicU64::new(1),
                lost_below: AtomicU64::new(0),
                topics: Mutex::new(HashMap::new()),
                order: Mutex::default(),
                clients: Mutex::new(HashMap::new()),
                subscribers: AtomicUsize::new(0),
                published: AtomicU64::new(0),
                slow_disconnects: AtomicU64::new(0),
                forbidden: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes `event` to `topic`: appends it to the topic's history and hands it to every
    /// subscriber. When `event` has no id, the hub gives it one (see [Ids](self#ids)). Returns
    /// the encoded event, as every subscriber gets it.
    ///
    /// Never waits for subscribers.
    ///
    /// # Errors
    ///
    /// [`PublishError::UnknownTopic`] when the topic does not exist and the hub does not create
    /// topics on demand.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mine = hub.publish("t", Event::new().id("order-1").data("x")).await.unwrap();
    /// assert_eq!(mine.id(), Some("order-1"));
    /// let assigned = hub.publish("t", Event::new().data("y")).await.unwrap();
    /// assert!(assigned.id().is_some());
    /// # }
    /// ```
    pub async fn publish(&self, topic: &str, event: Event) -> Result<EncodedEvent, PublishError> {
        match &self.inner.backend {
            Backend::Memory => self.publish_local(topic, event),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => redis::publish(&self.inner, &[topic], Some(event), false)
                .await?
                .ok_or(PublishError::Unavailable),
        }
    }

    fn publish_local(&self, topic: &str, event: Event) -> Result<EncodedEvent, PublishError> {
        let inner = &*self.inner;
        let now = Instant::now();
        let order = lock(&inner.order);
        let item = inner
            .with_open_topic(topic, inner.config.auto_create, |_, state| {
                let seq = inner.next_seq();
                let encoded = inner.encode(event, seq);
                state.push(u128::from(seq), &encoded, &inner.config.history, now);
                Item::new(u128::from(seq), encoded)
            })
            .ok_or(PublishError::UnknownTopic)?;
        order.send(&[topic], &item);
        drop(order);
        inner.count_published();
        Ok(item.event)
    }

    /// Publishes `event` to several topics under **one** id, encoded **once**: for example a
    /// chat message to its room and to a public feed of every room. Each topic gets it into
    /// its history and to its subscribers, as with [`publish`](Self::publish), and a client
    /// of any of the topics can resume from that id. Duplicate names count once.
    ///
    /// The topics are locked together (in a fixed order) while the id is assigned, so the
    /// event takes the same place in every topic's order as its id says. With no topic at all
    /// the event is only encoded (with an id) and returned.
    ///
    /// # Errors
    ///
    /// [`PublishError::UnknownTopic`] when one of the topics does not exist and the hub does
    /// not create topics on demand; the event then goes nowhere.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut room = hub.subscribe("room/1").await.unwrap();
    /// let mut public = hub.subscribe("public").await.unwrap();
    /// let sent = hub.publish_many(&["room/1", "public"], Event::new().data("hi")).await.unwrap();
    /// let (a, b) = (room.next().await.unwrap(), public.next().await.unwrap());
    /// assert_eq!(a.as_bytes().as_ptr(), sent.as_bytes().as_ptr());
    /// assert_eq!(b.as_bytes().as_ptr(), sent.as_bytes().as_ptr());
    /// # }
    /// ```
    pub async fn publish_many(
        &self,
        topics: &[&str],
        event: Event,
    ) -> Result<EncodedEvent, PublishError> {
        match &self.inner.backend {
            Backend::Memory => self.publish_many_local(topics, event, false),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => {
                let mut names = topics.to_vec();
                names.sort_unstable();
                names.dedup();
                if names.is_empty() {
                    return Ok(event.encode());
                }
                redis::publish(&self.inner, &names, Some(event), false)
                    .await?
                    .ok_or(PublishError::Unavailable)
            }
        }
    }

    /// Starts a publication to `topics` (one id, encoded once, as
    /// [`publish_many`](Self::publish_many)) that can be made
    /// [`private`](PublishBuilder::private).
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let sent = hub.publisher(&["orders/7"]).private().publish(Event::new().data("paid")).await.unwrap();
    /// assert!(sent.id().is_some());
    /// # }
    /// ```
    pub fn publisher<'a>(&'a self, topics: &'a [&'a str]) -> PublishBuilder<'a> {
        PublishBuilder {
            hub: self,
            topics,
            private: false,
        }
    }

    fn publish_many_local(
        &self,
        topics: &[&str],
        event: Event,
        private: bool,
    ) -> Result<EncodedEvent, PublishError> {
        let inner = &*self.inner;
        let mut names = topics.to_vec();
        names.sort_unstable();
        names.dedup();
        let now = Instant::now();
        let order = lock(&inner.order);
        loop {
            let found: Option<Vec<Arc<Topic>>> = {
                let mut map = lock(&inner.topics);
                names
                    .iter()
                    .map(|name| match map.get(*name) {
                        Some(topic) => Some(Arc::clone(topic)),
                        None if inner.config.auto_create => {
                            let topic = inner.new_topic(name);
                            map.insert((*name).into(), Arc::clone(&topic));
                            Some(topic)
                        }
                        None => None,
                    })
                    .collect()
            };
            let found = found.ok_or(PublishError::UnknownTopic)?;
            // Sorted by name, and names are unique: every caller locks in the same order.
            let mut states: Vec<_> = found.iter().map(|topic| topic.lock()).collect();
            if states.iter().all(|state| state.is_open()) {
                let seq = inner.next_seq();
                let mut item = Item::new(u128::from(seq), inner.encode(event, seq));
                if private {
                    let topics = names.iter().map(|&name| name.into()).collect();
                    item.audience = Some(Arc::new(topics));
                }
                for state in &mut states {
                    state.push_item(&item, &inner.config.history, now);
                }
                drop(states);
                order.send(&names, &item);
                drop(order);
                inner.count_published();
                return Ok(item.event);
            }
            // One was closed between the lookup and the lock: look them up again.
        }
    }

    /// Publishes `event` to every topic that exists: into each history and to each subscriber.
    /// The event is encoded once, with the id it has or one the hub gives it, the same in every
    /// topic (see [Ids](self#ids)). Returns how many topics it went to.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let _a = hub.subscribe("a").await.unwrap();
    /// let _b = hub.subscribe("b").await.unwrap();
    /// assert_eq!(hub.broadcast(Event::new().data("maintenance at noon")).await.unwrap(), 2);
    /// # }
    /// ```
    pub async fn broadcast(&self, event: Event) -> Result<usize, PublishError> {
        match &self.inner.backend {
            Backend::Memory => Ok(self.broadcast_local(event)),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => redis::fan_out(&self.inner, "broadcast", b"", event).await,
        }
    }

    fn broadcast_local(&self, event: Event) -> usize {
        let inner = &*self.inner;
        let now = Instant::now();
        let order = lock(&inner.order);
        // One position, and so one id, in every topic: a subscription to several sees it once,
        // and a client that saw it resumes after it (without an id it would come again on
        // every resume from the id before it).
        let seq = inner.next_seq();
        let pos = u128::from(seq);
        let encoded = inner.encode(event, seq);
        let topics: Vec<Arc<Topic>> = lock(&inner.topics).values().cloned().collect();
        let mut reached = Vec::with_capacity(topics.len());
        for topic in &topics {
            let mut state = topic.lock();
            if state.is_open() {
                state.push(pos, &encoded, &inner.config.history, now);
                reached.push(&*topic.name);
            }
        }
        // To the patterns that match a topic it went into, as a replay would find it.
        order.send(&reached, &Item::new(pos, encoded));
        let reached = reached.len();
        drop(order);
        inner.count_published();
        reached
    }

    /// Sends `event` to every connection subscribed with
    /// [`client_id`](SubscribeBuilder::client_id) `client_id`, whatever their topic. Live only:
    /// not kept for replay, and no id is assigned (give it none, so the browser's
    /// `Last-Event-ID` keeps tracking the topic). Returns how many connections it went to.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let _phone = hub.subscriber("inbox").client_id("alice").subscribe().await.unwrap();
    /// let _laptop = hub.subscriber("feed").client_id("alice").subscribe().await.unwrap();
    /// assert_eq!(hub.send_to("alice", Event::new().data("hi")).await.unwrap(), 2);
    /// assert_eq!(hub.send_to("bob", Event::new().data("hi")).await.unwrap(), 0);
    /// # }
    /// ```
    pub async fn send_to(&self, client_id: &str, event: Event) -> Result<usize, PublishError> {
        match &self.inner.backend {
            Backend::Memory => Ok(self.send_to_local(client_id, event)),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => {
                let head = format!("{}:{client_id}", client_id.len());
                redis::fan_out(&self.inner, "send", head.as_bytes(), event).await
            }
        }
    }

    fn send_to_local(&self, client_id: &str, event: Event) -> usize {
        let inner = &*self.inner;
        let encoded = event.encode();
        let reached = lock(&inner.clients).get(client_id).map_or(0, |client| {
            client.sender.send(Item::unordered(encoded)).unwrap_or(0)
        });
        inner.count_published();
        reached
    }

    /// Subscribes to `topic` for live events only. Same as
    /// `hub.subscriber(topic).subscribe()`.
    ///
    /// # Errors
    ///
    /// See [`SubscribeBuilder::subscribe`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscribe("t").await.unwrap();
    /// assert_eq!(hub.subscriber_count("t"), 1);
    /// drop(sub);
    /// assert_eq!(hub.subscriber_count("t"), 0);
    /// # }
    /// ```
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, SubscribeError> {
        self.subscriber(topic).subscribe().await
    }

    /// Starts a subscription with a `Last-Event-ID`, a client id or claims.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscriber("t").last_event_id(Some("42")).subscribe().await.unwrap();
    /// # drop(sub);
    /// # }
    /// ```
    pub fn subscriber<'a>(&'a self, topic: &'a str) -> SubscribeBuilder<'a> {
        SubscribeBuilder::new(self).topic(topic)
    }

    /// Starts a subscription with no topic yet: add topics with
    /// [`topic`](SubscribeBuilder::topic) and patterns with
    /// [`pattern`](SubscribeBuilder::pattern). See [Many topics](self#many-topics-one-stream).
    ///
    /// ```
    /// use tower_sse::hub::{Hub, Pattern};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let sub = hub
    ///     .subscription()
    ///     .topic("dm/alice")
    ///     .pattern(Pattern::glob("rooms/*").unwrap())
    ///     .subscribe()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(sub.topic(), "dm/alice");
    /// # }
    /// ```
    pub fn subscription(&self) -> SubscribeBuilder<'_> {
        SubscribeBuilder::new(self)
    }

    /// Creates `topic` unless it exists; `true` if it was created. Needed when
    /// [`HubBuilder::auto_create`] is off.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// assert!(hub.create_topic("t").await.unwrap());
    /// assert!(!hub.create_topic("t").await.unwrap());
    /// # }
    /// ```
    pub async fn create_topic(&self, topic: &str) -> Result<bool, PublishError> {
        match &self.inner.backend {
            Backend::Memory => Ok(self.create_topic_local(topic)),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => redis::create_topic(&self.inner, topic).await,
        }
    }

    fn create_topic_local(&self, topic: &str) -> bool {
        let inner = &*self.inner;
        let mut topics = lock(&inner.topics);
        if topics.contains_key(topic) {
            return false;
        }
        topics.insert(topic.into(), inner.new_topic(topic));
        true
    }

    /// Closes `topic`: sends `final_event` (if any, with an id assigned as by
    /// [`publish`](Self::publish)), ends every subscriber's stream after the events already on
    /// their way, and removes the topic with its history. `false` if there was no such topic.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut sub = hub.subscribe("game/1").await.unwrap();
    /// assert!(hub.close_topic("game/1", Some(Event::new().event("over").data(""))).await.unwrap());
    /// assert!(sub.next().await.unwrap().as_bytes().starts_with(b"event: over\n"));
    /// assert!(sub.next().await.is_none());
    /// assert_eq!(hub.topic_count(), 0);
    /// # }
    /// ```
    pub async fn close_topic(
        &self,
        topic: &str,
        final_event: Option<Event>,
    ) -> Result<bool, PublishError> {
        match &self.inner.backend {
            Backend::Memory => Ok(self.close_topic_local(topic, final_event)),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Ok(redis::publish(&self.inner, &[topic], final_event, true)
                .await?
                .is_some()),
        }
    }

    fn close_topic_local(&self, topic: &str, final_event: Option<Event>) -> bool {
        let inner = &*self.inner;
        let now = Instant::now();
        let order = lock(&inner.order);
        let mut topics = lock(&inner.topics);
        let Some(removed) = topics.remove(topic) else {
            return false;
        };
        let mut state = removed.lock();
        drop(topics);
        if let Some(event) = final_event {
            let seq = inner.next_seq();
            let encoded = inner.encode(event, seq);
            state.push(u128::from(seq), &encoded, &inner.config.history, now);
            order.send(&[topic], &Item::new(u128::from(seq), encoded));
            inner.count_published();
        }
        inner.close_state(&mut state);
        true
    }

    /// Closes every topic (see [`close_topic`](Self::close_topic)), for example at shutdown.
    /// Returns how many there were.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// hub.create_topic("a").await.unwrap();
    /// assert_eq!(hub.close_all(), 1);
    /// # }
    /// ```
    pub fn close_all(&self) -> usize {
        // Lock order: the order lock, then the topic map. Dropping the patterns' rings ends
        // their subscriptions too.
        let mut order = lock(&self.inner.order);
        order.rings.clear();
        let topics = std::mem::take(&mut *lock(&self.inner.topics));
        drop(order);
        for topic in topics.values() {
            self.inner.close_state(&mut topic.lock());
        }
        topics.len()
    }

    /// Applies the age bound to every topic's history and removes the topics left with neither
    /// subscribers nor history. Returns how many were removed. Call it from time to time (say,
    /// once a minute) when topics come and go without subscribers.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::builder().history_events(0).build();
    /// hub.publish("t", Event::new().data("x")).await.unwrap();
    /// assert_eq!(hub.purge(), 1);
    /// assert_eq!(hub.topic_count(), 0);
    /// # }
    /// ```
    pub fn purge(&self) -> usize {
        let inner = &*self.inner;
        let now = Instant::now();
        let mut topics = lock(&inner.topics);
        let before = topics.len();
        topics.retain(|_, topic| {
            let mut state = topic.lock();
            state.evict(&inner.config.history, now);
            if state.is_idle() {
                inner.close_state(&mut state);
                false
            } else {
                true
            }
        });
        before - topics.len()
    }

    /// How many subscriptions `topic` has.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let _a = hub.subscribe("t").await.unwrap();
    /// let _b = hub.subscribe("t").await.unwrap();
    /// assert_eq!(hub.subscriber_count("t"), 2);
    /// assert_eq!(hub.subscriber_count("other"), 0);
    /// # }
    /// ```
    pub fn subscriber_count(&self, topic: &str) -> usize {
        let topic = lock(&self.inner.topics).get(topic).cloned();
        topic.map_or(0, |topic| topic.lock().subscribers)
    }

    /// How many open subscriptions were made with [`client_id`](SubscribeBuilder::client_id)
    /// `client_id`, over all topics: how many connections [`send_to`](Self::send_to) would
    /// reach now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscriber("t").client_id("alice").subscribe().await.unwrap();
    /// assert_eq!(hub.client_connections("alice"), 1);
    /// drop(sub);
    /// assert_eq!(hub.client_connections("alice"), 0);
    /// # }
    /// ```
    pub fn client_connections(&self, client_id: &str) -> usize {
        lock(&self.inner.clients)
            .get(client_id)
            .map_or(0, |client| client.connections)
    }

    /// How many subscriptions the hub has, over all topics.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let _a = hub.subscribe("a").await.unwrap();
    /// let _b = hub.subscribe("b").await.unwrap();
    /// assert_eq!(hub.total_subscribers(), 2);
    /// # }
    /// ```
    pub fn total_subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// The names of the topics that exist now, in no particular order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// hub.create_topic("a").await.unwrap();
    /// assert_eq!(hub.topics(), ["a"]);
    /// # }
    /// ```
    pub fn topics(&self) -> Vec<String> {
        lock(&self.inner.topics)
            .keys()
            .map(|name| name.to_string())
            .collect()
    }

    /// How many topics exist now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscribe("a").await.unwrap();
    /// assert_eq!(hub.topic_count(), 1);
    /// drop(sub); // no subscribers and no history: removed
    /// assert_eq!(hub.topic_count(), 0);
    /// # }
    /// ```
    pub fn topic_count(&self) -> usize {
        lock(&self.inner.topics).len()
    }

    /// The hub's counters.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// hub.publish("t", Event::new().data("x")).await.unwrap();
    /// assert_eq!(hub.stats().published, 1);
    /// # }
    /// ```
    pub fn stats(&self) -> HubStats {
        let inner = &*self.inner;
        HubStats {
            topics: self.topic_count(),
            subscribers: inner.subscribers.load(Ordering::Relaxed),
            published: inner.published.load(Ordering::Relaxed),
            slow_disconnects: inner.slow_disconnects.load(Ordering::Relaxed),
            forbidden: inner.forbidden.load(Ordering::Relaxed),
        }
    }
}

/// Builds a publication. Made by [`Hub::publisher`].
///
/// ```
/// use tower_sse::{Event, hub::Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// hub.publisher(&["a", "b"]).publish(Event::new().data("to both")).await.unwrap();
/// # }
/// ```
#[must_use]
#[derive(Debug)]
pub struct PublishBuilder<'a> {
    hub: &'a Hub,
    topics: &'a [&'a str],
    private: bool,
}

impl PublishBuilder<'_> {
    /// Only subscriptions whose [`PrivateAccess`] allows it receive the event, live or
    /// replayed; the others skip it (see [`PrivateAccess`]).
    ///
    /// ```
    /// use futures_util::FutureExt;
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut anonymous = hub.subscribe("t").await.unwrap();
    /// hub.publisher(&["t"]).private().publish(Event::new().data("secret")).await.unwrap();
    /// assert!(futures_util::StreamExt::next(&mut anonymous).now_or_never().is_none());
    /// # }
    /// ```
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// Publishes `event`: one id, encoded once, into every topic's history and to every
    /// subscriber that may see it.
    ///
    /// # Errors
    ///
    /// As [`Hub::publish_many`], and [`PublishError::Unsupported`] for a private event on a
    /// broker that cannot carry one (Redis, for now).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sent = hub.publisher(&["t"]).publish(tower_sse::Event::new().data("x")).await.unwrap();
    /// assert!(sent.id().is_some());
    /// # }
    /// ```
    pub async fn publish(self, event: Event) -> Result<EncodedEvent, PublishError> {
        match (&self.hub.inner.backend, self.private) {
            (Backend::Memory, private) => self.hub.publish_many_local(self.topics, event, private),
            #[cfg(feature = "redis")]
            (Backend::Redis(_), false) => self.hub.publish_many(self.topics, event).await,
            #[cfg(feature = "redis")]
            (Backend::Redis(_), true) => Err(PublishError::Unsupported),
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("epoch", &self.inner.epoch)
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A new topic; ids issued before it are unknown to it.
    fn new_topic(&self, name: &str) -> Arc<Topic> {
        // A new topic holds every event of its name after the last one a removed topic may
        // have taken with it; ids before that are not covered (an earlier topic of the same
        // name, closed with events, may have had more after them).
        let floor = self.lost_below.load(Ordering::Acquire);
        Arc::new(Topic::new(
            name,
            self.config.subscriber_capacity,
            u128::from(floor),
            false,
        ))
    }

    /// Closes a topic's state, remembering what a topic made later under its name cannot
    /// replay: everything up to its newest event, if it ever had one.
    fn close_state(&self, state: &mut topic::TopicState) {
        if let Some(next) = state.next_if_used() {
            let next = u64::try_from(next).unwrap_or(u64::MAX);
            self.lost_below.fetch_max(next, Ordering::AcqRel);
        }
        state.close();
    }

    /// Encodes `event`, giving it id `seq` unless it has one.
    fn encode(&self, event: Event, seq: u64) -> EncodedEvent {
        if event.id_str().is_some() {
            event.encode()
        } else {
            event.id(IdBuf::new(&self.epoch, seq)).encode()
        }
    }

    /// The sequence number in `id`, when it is an id this hub issued.
    fn own_seq(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.split_once('-')?;
        if epoch != &*self.epoch || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seq.parse().ok()
    }

    /// Runs `f` with the topic's state locked, once the topic is open (a topic removed
    /// concurrently is looked up or created again).
    fn with_open_topic<R>(
        &self,
        name: &str,
        create: bool,
        f: impl FnOnce(&Arc<Topic>, &mut topic::TopicState) -> R,
    ) -> Option<R> {
        loop {
            let topic = {
                let mut topics = lock(&self.topics);
                match topics.get(name) {
                    Some(topic) => Arc::clone(topic),
                    None if create => {
                        let topic = self.new_topic(name);
                        topics.insert(name.into(), Arc::clone(&topic));
                        topic
                    }
                    None => return None,
                }
            };
            let mut state = topic.lock();
            if state.is_open() {
                return Some(f(&topic, &mut state));
            }
        }
    }

    async fn subscribe_any(
        self: &Arc<Self>,
        selection: &mut Selection<'_>,
        request: SubscribeRequest<'_>,
        on_unknown_id: Option<UnknownId>,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, SubscribeError> {
        selection.normalize();
        selection.check(self.config.max_topics)?;
        // Each topic and each pattern is checked on its own, so that an authorizer written
        // for one topic cannot be passed by adding an allowed topic to a forbidden one.
        let checks = selection
            .topics
            .iter()
            .map(|topic| SubscribeRequest { topic, ..request })
            .chain(selection.patterns.iter().map(|pattern| SubscribeRequest {
                topic: pattern.key(),
                pattern: Some(pattern.key()),
                ..request
            }));
        for check in checks {
            if !self.authorizer.authorize(&check) {
                self.forbidden.fetch_add(1, Ordering::Relaxed);
                return Err(SubscribeError::Forbidden);
            }
        }
        let on_unknown_id = on_unknown_id.unwrap_or(self.config.on_unknown_id);
        let single = selection
            .single()
            .map(|topic| SubscribeRequest { topic, ..request });
        match (&self.backend, single) {
            (Backend::Memory, Some(request)) => self.subscribe(&request, on_unknown_id, access),
            (Backend::Memory, None) => {
                self.subscribe_many(selection, &request, on_unknown_id, access)
            }
            #[cfg(feature = "redis")]
            (Backend::Redis(_), Some(request)) => {
                // No private events go through Redis (publishing one is refused).
                let _ = access;
                redis::subscribe(self, &request, on_unknown_id).await
            }
            #[cfg(feature = "redis")]
            (Backend::Redis(_), None) => Err(SelectionError::Unsupported.into()),
        }
    }

    /// A subscription to several topics and patterns, in memory: under the order lock, so no
    /// event is pushed while the backlogs are taken and the rings joined.
    fn subscribe_many(
        self: &Arc<Self>,
        selection: &Selection<'_>,
        request: &SubscribeRequest<'_>,
        on_unknown_id: UnknownId,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, SubscribeError> {
        let now = Instant::now();
        let mut order = lock(&self.order);
        let issued = u128::from(self.seq.load(Ordering::Relaxed));
        let last = request.last_event_id;
        // Join the topics (each counts this subscription as a subscriber).
        let mut sources = Vec::with_capacity(selection.len());
        let mut joined_topics = Vec::with_capacity(selection.topics.len());
        for name in &selection.topics {
            let joined = self.with_open_topic(name, self.config.auto_create, |topic, state| {
                state.evict(&self.config.history, now);
                let joined = state.join_with(Replay::NotRequested, Vec::new());
                (Arc::clone(topic), joined)
            });
            let Some((topic, Some(joined))) = joined else {
                // Give back what was joined so far.
                drop(order);
                for source in sources {
                    if let Source {
                        owner: Owner::Topic(topic),
                        ..
                    } = source
                    {
                        self.leave_topic(&topic);
                    }
                }
                return Err(SubscribeError::UnknownTopic);
            };
            sources.push(Source::new(
                Recv::unbudgeted(joined.receiver),
                Owner::Topic(Arc::clone(&topic)),
            ));
            joined_topics.push(topic);
        }
        // The retained topics the patterns match, for the replay.
        let mut replayed = joined_topics.clone();
        if last.is_some() && !selection.patterns.is_empty() {
            replayed.extend(
                lock(&self.topics)
                    .values()
                    .filter(|topic| !selection.topics.contains(&&*topic.name))
                    .filter(|topic| selection.patterns.iter().any(|p| p.matches(&topic.name)))
                    .cloned(),
            );
        }
        // Where to resume: one of this hub's ids, or a publisher's id found in a history. A
        // publisher's id found at different places (per-topic counters, say) is ambiguous:
        // resume from the oldest, and say the history may be incomplete.
        let mut ambiguous = false;
        let cursor = last.and_then(|id| match self.own_seq(id) {
            Some(seq) => Some(u128::from(seq)).filter(|&pos| pos < issued),
            None => {
                let found: Vec<u128> = replayed
                    .iter()
                    .filter_map(|topic| topic.lock().position_of(id))
                    .collect();
                let oldest = found.iter().copied().min();
                ambiguous = oldest != found.iter().copied().max();
                oldest
            }
        });
        // A pattern may have matched a topic that was removed since (closed, or emptied and
        // purged), with events after the cursor: the hub remembers how far removed topics went.
        let mut covered = !ambiguous
            && (selection.patterns.is_empty()
                || cursor.is_none_or(|pos| {
                    pos.saturating_add(1) >= u128::from(self.lost_below.load(Ordering::Acquire))
                }));
        let mut entries: Vec<(u128, EncodedEvent)> = Vec::new();
        if last.is_some() {
            let from = cursor.unwrap_or(0);
            let take_all = cursor.is_none() && on_unknown_id == UnknownId::SendHistory;
            for topic in &replayed {
                let mut state = topic.lock();
                state.evict(&self.config.history, now);
                if let Some(pos) = cursor {
                    covered &= state.covers_after(pos);
                }
                if cursor.is_some() || take_all {
                    entries.extend(
                        state
                            .entries_after(from)
                            .filter(|stored| auth::visible(access.as_deref(), stored.audience))
                            .map(|stored| (stored.pos, stored.event.clone())),
                    );
                }
            }
        }
        // Join the patterns' rings.
        for pattern in &selection.patterns {
            let ring = order
                .rings
                .entry(pattern.key().into())
                .or_insert_with(|| PatternRing {
                    matcher: Arc::clone(pattern),
                    ring: Ring::new(self.config.subscriber_capacity),
                    subscribers: 0,
                });
            ring.subscribers += 1;
            sources.push(Source::new(
                Recv::unbudgeted(ring.ring.receiver()),
                Owner::Pattern(pattern.key().into()),
            ));
        }
        drop(order);

        // One event in two followed topics (one `publish_many`) is replayed once, in order.
        entries.sort_unstable_by_key(|(pos, _)| *pos);
        entries.dedup_by_key(|(pos, _)| *pos);
        // At most what `max_topics` full histories hold: a pattern over thousands of retained
        // topics keeps the newest, and says the rest is lost.
        let cap = self
            .config
            .max_topics
            .saturating_mul(self.config.history.events)
            .max(1);
        if entries.len() > cap {
            entries.drain(..entries.len() - cap);
            covered = false;
        }
        let replay = match (last, cursor) {
            (None, _) => Replay::NotRequested,
            (Some(_), Some(_)) if covered => Replay::Complete,
            _ => Replay::HistoryLost,
        };
        if replay.is_lost() && on_unknown_id == UnknownId::LiveOnly {
            entries.clear();
        }
        let through = entries.last().map_or(0, |(pos, _)| *pos);
        let backlog = entries.into_iter().map(|(_, event)| event).collect();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let client = request
            .client_id
            .map(|id| (Box::<str>::from(id), self.join_client(id)));
        let label = selection
            .topics
            .first()
            .copied()
            .or_else(|| selection.patterns.first().map(|p| p.key()))
            .unwrap_or_default();
        Ok(Subscription::merged(
            Arc::clone(self),
            label,
            Merge::new(sources, through),
            replay,
            backlog,
            client,
        )
        .with_access(access))
    }

    /// Delivers `event` to the live subscribers of every local topic (not kept for replay).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn deliver_live_everywhere(&self, event: &EncodedEvent) -> usize {
        let topics: Vec<Arc<Topic>> = lock(&self.topics).values().cloned().collect();
        topics
            .iter()
            .filter(|topic| topic.lock().send_live(Item::unordered(event.clone())) > 0)
            .count()
    }

    /// Delivers `event` to this process's connections of `client_id`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn deliver_to_client(&self, client_id: &str, event: EncodedEvent) -> usize {
        lock(&self.clients).get(client_id).map_or(0, |client| {
            client.sender.send(Item::unordered(event)).unwrap_or(0)
        })
    }

    fn subscribe(
        self: &Arc<Self>,
        request: &SubscribeRequest<'_>,
        on_unknown_id: UnknownId,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, SubscribeError> {
        let own_seq = request
            .last_event_id
            .and_then(|id| self.own_seq(id))
            .map(u128::from);
        let now = Instant::now();
        let (topic, joined) = self
            .with_open_topic(request.topic, self.config.auto_create, |topic, state| {
                state.evict(&self.config.history, now);
                let issued = u128::from(self.seq.load(Ordering::Relaxed));
                let joined = state.join(
                    request.last_event_id,
                    own_seq,
                    issued,
                    on_unknown_id,
                    access.as_deref(),
                );
                (Arc::clone(topic), joined)
            })
            .ok_or(SubscribeError::UnknownTopic)?;
        // `with_open_topic` only runs the closure on an open topic, which always joins.
        let Some(joined) = joined else {
            return Err(SubscribeError::UnknownTopic);
        };
        Ok(self
            .subscription(request, topic, joined)
            .with_access(access))
    }

    /// The subscription for a cursor `joined` to `topic`: counted, and addressable by its
    /// client id.
    fn subscription(
        self: &Arc<Self>,
        request: &SubscribeRequest<'_>,
        topic: Arc<Topic>,
        joined: topic::Joined,
    ) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let client = request
            .client_id
            .map(|id| (Box::<str>::from(id), self.join_client(id)));
        Subscription::new(
            Arc::clone(self),
            topic,
            joined.replay,
            joined.backlog,
            Recv::live(joined.receiver),
            client,
        )
    }

    fn join_client(&self, client_id: &str) -> Recv {
        let mut clients = lock(&self.clients);
        let client = clients.entry(client_id.into()).or_insert_with(|| Client {
            sender: broadcast::channel(self.config.client_capacity).0,
            connections: 0,
        });
        client.connections += 1;
        Recv::new(client.sender.subscribe())
    }

    fn leave_client(&self, client_id: &str) {
        let mut clients = lock(&self.clients);
        if let Some(client) = clients.get_mut(client_id) {
            client.connections = client.connections.saturating_sub(1);
            if client.connections == 0 {
                clients.remove(client_id);
            }
        }
    }

    /// A subscription has ended.
    fn count_leave(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }

    /// A subscriber of the pattern with this key is gone; its ring goes with its last one.
    fn leave_pattern(&self, key: &str) {
        let mut order = lock(&self.order);
        if let Some(ring) = order.rings.get_mut(key) {
            ring.subscribers = ring.subscribers.saturating_sub(1);
            if ring.subscribers == 0 {
                order.rings.remove(key);
            }
        }
    }

    /// A subscriber of `topic` is gone; removes the topic when it is left with neither
    /// subscribers nor history.
    fn leave_topic(&self, topic: &Arc<Topic>) {
        let now = Instant::now();
        {
            let mut state = topic.lock();
            state.subscribers = state.subscribers.saturating_sub(1);
            if !state.is_open() {
                return;
            }
            state.evict(&self.config.history, now);
            if !state.is_idle() {
                return;
            }
        }
        self.remove_if_idle(topic);
    }

    /// Closes and removes `topic` if it is idle (no subscriber, and no history to keep).
    fn remove_if_idle(&self, topic: &Arc<Topic>) {
        // Lock order: the topic map, then the topic.
        let mut topics = lock(&self.topics);
        let mut state = topic.lock();
        if state.is_open() && state.is_idle() {
            self.close_state(&mut state);
            if topics
                .get(&topic.name)
                .is_some_and(|current| Arc::ptr_eq(current, topic))
            {
                topics.remove(&topic.name);
            }
        }
    }

    fn count_slow_disconnect(&self) {
        self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        crate::metrics::slow_disconnect();
    }

    fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        crate::metrics::published();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let hub = Hub::new();
        let inner = &hub.inner;
        let id = IdBuf::new(&inner.epoch, u64::MAX);
        assert_eq!(inner.own_seq(id.as_ref()), Some(u64::MAX));
        assert_eq!(inner.own_seq(IdBuf::new(&inner.epoch, 0).as_ref()), Some(0));
        for bad in [
            "",
            "-",
            "1",
            "x-1",
            &format!("{}-", inner.epoch),
            &format!("{}-+1", inner.epoch),
            &format!("{}-1-2", inner.epoch),
            &format!("{}-99999999999999999999999", inner.epoch),
        ] {
            assert_eq!(inner.own_seq(bad), None, "{bad:?}");
        }
        let other = Hub::new();
        assert_ne!(other.inner.epoch, inner.epoch);
        assert_eq!(other.inner.own_seq(id.as_ref()), None);
    }

    #[test]
    fn hub_is_send_sync_and_subscription_is_send_sync_unpin() {
        fn check<T: Send + Sync + 'static>() {}
        fn unpin<T: Unpin>() {}
        check::<Hub>();
        check::<Subscription>();
        unpin::<Subscription>();
    }

    #[tokio::test]
    async fn publish_many_is_one_event_in_each_topic_and_resumable_from_either() {
        use futures_util::{FutureExt, StreamExt};

        let hub = Hub::new();
        let before = hub.publish("room", Event::new().data("0")).await.unwrap();
        let shared = hub
            .publish_many(&["public", "room", "public"], Event::new().data("1"))
            .await
            .unwrap();
        assert_eq!(hub.stats().published, 2);
        for topic in ["room", "public"] {
            let topic_ref = hub.inner.topics.lock().unwrap()[topic].clone();
            assert_eq!(
                topic_ref.lock().history_len(),
                1 + usize::from(topic == "room")
            );
        }
        let mut from_room = hub
            .subscriber("room")
            .last_event_id(before.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(from_room.replay(), Replay::Complete);
        let got = from_room.next().now_or_never().unwrap().unwrap();
        assert_eq!(got.as_bytes().as_ptr(), shared.as_bytes().as_ptr());
        // The public topic knows the id as well (and has nothing after it).
        let public = hub
            .subscriber("public")
            .last_event_id(shared.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(public.replay(), Replay::Complete);
        assert_eq!(public.backlog_len(), 0);

        let strict = Hub::builder().auto_create(false).build();
        strict.create_topic("a").await.unwrap();
        assert_eq!(
            strict
                .publish_many(&["a", "b"], Event::new().data("x"))
                .await
                .unwrap_err(),
            PublishError::UnknownTopic
        );
        assert_eq!(strict.stats().published, 0);
    }

    #[test]
    fn publish_many_keeps_every_topic_in_id_order_under_contention() {
        use futures_util::FutureExt;

        let hub = Hub::new();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let topics: &[&str] = if i % 2 == 0 {
                            &["a", "b"]
                        } else {
                            &["b", "a", "c"]
                        };
                        // The in-memory hub's futures are ready at the first poll.
                        hub.publish_many(topics, Event::new().data("x"))
                            .now_or_never()
                            .unwrap()
                            .unwrap();
                        hub.publish(if i % 2 == 0 { "a" } else { "c" }, Event::new().data("y"))
                            .now_or_never()
                            .unwrap()
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for topic in ["a", "b", "c"] {
            let mut sub = hub
                .subscriber(topic)
                .last_event_id(Some("unknown"))
                .subscribe()
                .now_or_never()
                .unwrap()
                .unwrap();
            let mut seqs = vec![];
            while let Some(Some(event)) = futures_util::StreamExt::next(&mut sub).now_or_never() {
                seqs.push(hub.inner.own_seq(event.id().unwrap()).unwrap());
                if sub.backlog_len() == 0 {
                    break;
                }
            }
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic} out of order");
        }
    }

    #[tokio::test]
    async fn client_connections_counts_open_subscriptions() {
        let hub = Hub::new();
        let a = hub
            .subscriber("x")
            .client_id("u")
            .subscribe()
            .await
            .unwrap();
        let b = hub
            .subscriber("y")
            .client_id("u")
            .subscribe()
            .await
            .unwrap();
        assert_eq!(hub.client_connections("u"), 2);
        assert_eq!(hub.client_connections("v"), 0);
        drop(a);
        assert_eq!(hub.client_connections("u"), 1);
        drop(b);
        assert_eq!(hub.client_connections("u"), 0);
    }

    #[tokio::test]
    async fn topic_recreated_after_close_does_not_resume_old_ids() {
        let hub = Hub::new();
        let old = hub.publish("t", Event::new().data("a")).await.unwrap();
        // The client saw "a", not the final event: the topic made later cannot replay it.
        let last = Event::new().data("closed");
        assert!(hub.close_topic("t", Some(last)).await.unwrap());
        hub.publish("t", Event::new().data("b")).await.unwrap();
        let sub = hub
            .subscriber("t")
            .last_event_id(old.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost);
        assert_eq!(sub.backlog_len(), 1);
    }

    #[tokio::test]
    async fn a_topic_made_after_a_cursor_covers_it() {
        let hub = Hub::new();
        let seen = hub.publish("a", Event::new().data("a1")).await.unwrap();
        hub.publish("b", Event::new().data("b1")).await.unwrap();
        // `b` did not exist when the client saw `a1`, and nothing was ever removed: complete.
        let sub = hub
            .subscriber("b")
            .last_event_id(seen.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::Complete);
        assert_eq!(sub.backlog_len(), 1);
        // A topic closed with its last event seen, then made again: complete as well.
        let last = hub.publish("c", Event::new().data("c1")).await.unwrap();
        hub.close_topic("c", None).await.unwrap();
        hub.publish("c", Event::new().data("c2")).await.unwrap();
        let sub = hub
            .subscriber("c")
            .last_event_id(last.id())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(sub.replay(), Replay::Complete);
        assert_eq!(sub.backlog_len(), 1);
    }
}
