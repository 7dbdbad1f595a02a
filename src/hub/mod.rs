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
//! use tower_sse::{Event, hub::{Hub, Replay}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new();
//! let mut live = hub.subscribe("news").unwrap();
//!
//! // The hub gives events without an id one of its own.
//! let first = hub.publish("news", Event::new().data("one")).unwrap();
//! let got = live.next().await.unwrap();
//! assert_eq!(got.id(), first.id());
//! // Same bytes, not a copy.
//! assert_eq!(got.as_bytes().as_ptr(), first.as_bytes().as_ptr());
//!
//! // The client drops out; an event goes by; it comes back with its Last-Event-ID.
//! drop(live);
//! hub.publish("news", Event::new().data("two")).unwrap();
//! let mut back = hub.subscriber("news").last_event_id(first.id()).subscribe().unwrap();
//! assert_eq!(back.replay(), Replay::Complete);
//! hub.publish("news", Event::new().data("three")).unwrap();
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: two\n"));
//! assert!(back.next().await.unwrap().as_bytes().starts_with(b"data: three\n"));
//!
//! // An id the hub does not know is reported, not skipped silently.
//! let lost = hub.subscriber("news").last_event_id(Some("garbage")).subscribe().unwrap();
//! assert_eq!(lost.replay(), Replay::HistoryLost);
//! # }
//! ```
//!
//! # Over HTTP
//!
//! A [`Subscription`] goes into an SSE response as it is
//! ([`EventStream::new(subscription)`](crate::EventStream), or, with the `axum` feature,
//! returned from a handler). How the request's `Last-Event-ID` was honoured is told with the
//! [`REPLAY_HEADER`] response header (`Sse-Replay: none | complete | history-lost`) and, for
//! browsers, optionally with a first event ([`Subscription::notify_history_lost`]); see
//! [`REPLAY_HEADER`] for the reasoning. `examples/chat.rs` is a complete application.
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
//! # Ids
//!
//! An event published without an id gets `"<epoch>-<seq>"`: `epoch` is chosen at random when the
//! hub is built, `seq` is hub-wide and increasing (so increasing within each topic, with gaps).
//! An id from another hub, an earlier process or an evicted event is therefore recognised as
//! unknown rather than misread, and reported as [`Replay::HistoryLost`]. An id the publisher set
//! itself is kept, and found again by exact match within the history.
//!
//! Events sent with [`Hub::broadcast`] go into every topic's history under the id the publisher
//! gave them, or with no `id:` line at all (the id cannot differ per topic without encoding once
//! per topic). A browser then keeps its previous id, and a replay from it includes the broadcast
//! event. Events sent with [`Hub::send_to`] are live only: they are not kept for replay.
//!
//! # Topic lifetime
//!
//! Topics are created on demand by [`Hub::publish`] and [`Hub::subscribe`] (unless
//! [`HubBuilder::auto_create`] is off), or by [`Hub::create_topic`]. A topic that has neither
//! subscribers nor history is removed when its last subscriber leaves, and by [`Hub::purge`];
//! a topic that still has history is kept, so clients can replay it. [`Hub::close_topic`] ends
//! every subscriber's stream and removes the topic at once.

mod auth;
mod config;
mod error;
mod response;
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

pub use self::{
    auth::{Authorizer, SubscribeRequest},
    config::{HubBuilder, UnknownId},
    error::{PublishError, SubscribeError},
    response::REPLAY_HEADER,
    subscription::{Replay, SubscribeBuilder, Subscription},
};
use self::{config::Config, subscription::Recv, topic::Topic};
use crate::{EncodedEvent, Event};

/// An in-process pub/sub hub. Cheap to clone: clones share the same topics.
///
/// See the [module docs](self) for the design.
///
/// ```
/// use tower_sse::{Event, hub::Hub};
///
/// let hub = Hub::new();
/// let other = hub.clone();
/// let _sub = hub.subscribe("t").unwrap();
/// other.publish("t", Event::new().data("x")).unwrap();
/// assert_eq!(other.subscriber_count("t"), 1);
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

struct Inner {
    config: Config,
    authorizer: Arc<dyn Authorizer>,
    /// The epoch part of the ids this hub issues.
    epoch: Box<str>,
    /// The next sequence number, hub-wide.
    seq: AtomicU64,
    topics: Mutex<HashMap<Box<str>, Arc<Topic>>>,
    clients: Mutex<HashMap<Box<str>, Client>>,
    subscribers: AtomicUsize,
    published: AtomicU64,
    slow_disconnects: AtomicU64,
    forbidden: AtomicU64,
}

/// The connections of one client id.
struct Client {
    sender: broadcast::Sender<EncodedEvent>,
    connections: usize,
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
                authorizer: builder.authorizer,
                epoch: format!("{:x}", new_epoch()).into(),
                seq: AtomicU64::new(0),
                topics: Mutex::new(HashMap::new()),
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
    /// let hub = Hub::new();
    /// let mine = hub.publish("t", Event::new().id("order-1").data("x")).unwrap();
    /// assert_eq!(mine.id(), Some("order-1"));
    /// let assigned = hub.publish("t", Event::new().data("y")).unwrap();
    /// assert!(assigned.id().is_some());
    /// ```
    pub fn publish(&self, topic: &str, event: Event) -> Result<EncodedEvent, PublishError> {
        let inner = &*self.inner;
        let now = Instant::now();
        let encoded = inner
            .with_open_topic(topic, inner.config.auto_create, |_, state| {
                let seq = inner.next_seq();
                let encoded = inner.encode(event, seq);
                state.push(seq, &encoded, &inner.config.history, now);
                encoded
            })
            .ok_or(PublishError::UnknownTopic)?;
        inner.published.fetch_add(1, Ordering::Relaxed);
        Ok(encoded)
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
    /// let mut room = hub.subscribe("room/1").unwrap();
    /// let mut public = hub.subscribe("public").unwrap();
    /// let sent = hub.publish_many(&["room/1", "public"], Event::new().data("hi")).unwrap();
    /// let (a, b) = (room.next().await.unwrap(), public.next().await.unwrap());
    /// assert_eq!(a.as_bytes().as_ptr(), sent.as_bytes().as_ptr());
    /// assert_eq!(b.as_bytes().as_ptr(), sent.as_bytes().as_ptr());
    /// # }
    /// ```
    pub fn publish_many(
        &self,
        topics: &[&str],
        event: Event,
    ) -> Result<EncodedEvent, PublishError> {
        let inner = &*self.inner;
        let mut names = topics.to_vec();
        names.sort_unstable();
        names.dedup();
        let now = Instant::now();
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
                let encoded = inner.encode(event, seq);
                for state in &mut states {
                    state.push(seq, &encoded, &inner.config.history, now);
                }
                inner.published.fetch_add(1, Ordering::Relaxed);
                return Ok(encoded);
            }
            // One was closed between the lookup and the lock: look them up again.
        }
    }

    /// Publishes `event` to every topic that exists: into each history and to each subscriber.
    /// The event is encoded once, and keeps the id it has, or has none (see
    /// [Ids](self#ids)). Returns how many topics it went to.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// let hub = Hub::new();
    /// let _a = hub.subscribe("a").unwrap();
    /// let _b = hub.subscribe("b").unwrap();
    /// assert_eq!(hub.broadcast(Event::new().data("maintenance at noon")), 2);
    /// ```
    pub fn broadcast(&self, event: Event) -> usize {
        let inner = &*self.inner;
        let encoded = event.encode();
        let now = Instant::now();
        let topics: Vec<Arc<Topic>> = lock(&inner.topics).values().cloned().collect();
        let mut reached = 0;
        for topic in topics {
            let mut state = topic.lock();
            if state.is_open() {
                state.push(inner.next_seq(), &encoded, &inner.config.history, now);
                reached += 1;
            }
        }
        inner.published.fetch_add(1, Ordering::Relaxed);
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
    /// let hub = Hub::new();
    /// let _phone = hub.subscriber("inbox").client_id("alice").subscribe().unwrap();
    /// let _laptop = hub.subscriber("feed").client_id("alice").subscribe().unwrap();
    /// assert_eq!(hub.send_to("alice", Event::new().data("hi")), 2);
    /// assert_eq!(hub.send_to("bob", Event::new().data("hi")), 0);
    /// ```
    pub fn send_to(&self, client_id: &str, event: Event) -> usize {
        let inner = &*self.inner;
        let encoded = event.encode();
        let reached = lock(&inner.clients)
            .get(client_id)
            .map_or(0, |client| client.sender.send(encoded).unwrap_or(0));
        inner.published.fetch_add(1, Ordering::Relaxed);
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
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscribe("t").unwrap();
    /// assert_eq!(hub.subscriber_count("t"), 1);
    /// drop(sub);
    /// assert_eq!(hub.subscriber_count("t"), 0);
    /// ```
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, SubscribeError> {
        self.subscriber(topic).subscribe()
    }

    /// Starts a subscription with a `Last-Event-ID`, a client id or claims.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscriber("t").last_event_id(Some("42")).subscribe().unwrap();
    /// # drop(sub);
    /// ```
    pub fn subscriber<'a>(&'a self, topic: &'a str) -> SubscribeBuilder<'a> {
        SubscribeBuilder::new(self, topic)
    }

    /// Creates `topic` unless it exists; `true` if it was created. Needed when
    /// [`HubBuilder::auto_create`] is off.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// assert!(hub.create_topic("t"));
    /// assert!(!hub.create_topic("t"));
    /// ```
    pub fn create_topic(&self, topic: &str) -> bool {
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
    /// let mut sub = hub.subscribe("game/1").unwrap();
    /// assert!(hub.close_topic("game/1", Some(Event::new().event("over").data(""))));
    /// assert!(sub.next().await.unwrap().as_bytes().starts_with(b"event: over\n"));
    /// assert!(sub.next().await.is_none());
    /// assert_eq!(hub.topic_count(), 0);
    /// # }
    /// ```
    pub fn close_topic(&self, topic: &str, final_event: Option<Event>) -> bool {
        let inner = &*self.inner;
        let now = Instant::now();
        let mut topics = lock(&inner.topics);
        let Some(removed) = topics.remove(topic) else {
            return false;
        };
        let mut state = removed.lock();
        drop(topics);
        if let Some(event) = final_event {
            let seq = inner.next_seq();
            let encoded = inner.encode(event, seq);
            state.push(seq, &encoded, &inner.config.history, now);
            inner.published.fetch_add(1, Ordering::Relaxed);
        }
        state.close();
        true
    }

    /// Closes every topic (see [`close_topic`](Self::close_topic)), for example at shutdown.
    /// Returns how many there were.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// hub.create_topic("a");
    /// assert_eq!(hub.close_all(), 1);
    /// ```
    pub fn close_all(&self) -> usize {
        let topics = std::mem::take(&mut *lock(&self.inner.topics));
        for topic in topics.values() {
            topic.lock().close();
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
    /// let hub = Hub::builder().history_events(0).build();
    /// hub.publish("t", Event::new().data("x")).unwrap();
    /// assert_eq!(hub.purge(), 1);
    /// assert_eq!(hub.topic_count(), 0);
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
                state.close();
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
    /// let hub = tower_sse::hub::Hub::new();
    /// let _a = hub.subscribe("t").unwrap();
    /// let _b = hub.subscribe("t").unwrap();
    /// assert_eq!(hub.subscriber_count("t"), 2);
    /// assert_eq!(hub.subscriber_count("other"), 0);
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
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscriber("t").client_id("alice").subscribe().unwrap();
    /// assert_eq!(hub.client_connections("alice"), 1);
    /// drop(sub);
    /// assert_eq!(hub.client_connections("alice"), 0);
    /// ```
    pub fn client_connections(&self, client_id: &str) -> usize {
        lock(&self.inner.clients)
            .get(client_id)
            .map_or(0, |client| client.connections)
    }

    /// How many subscriptions the hub has, over all topics.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let _a = hub.subscribe("a").unwrap();
    /// let _b = hub.subscribe("b").unwrap();
    /// assert_eq!(hub.total_subscribers(), 2);
    /// ```
    pub fn total_subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// The names of the topics that exist now, in no particular order.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// hub.create_topic("a");
    /// assert_eq!(hub.topics(), ["a"]);
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
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscribe("a").unwrap();
    /// assert_eq!(hub.topic_count(), 1);
    /// drop(sub); // no subscribers and no history: removed
    /// assert_eq!(hub.topic_count(), 0);
    /// ```
    pub fn topic_count(&self) -> usize {
        lock(&self.inner.topics).len()
    }

    /// The hub's counters.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// let hub = Hub::new();
    /// hub.publish("t", Event::new().data("x")).unwrap();
    /// assert_eq!(hub.stats().published, 1);
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
        // Burn one number, so that even the last id of an earlier topic with this name is below
        // the new topic's floor.
        let floor = self.next_seq() + 1;
        Arc::new(Topic::new(name, self.config.subscriber_capacity, floor))
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

    fn subscribe(
        self: &Arc<Self>,
        request: &SubscribeRequest<'_>,
        on_unknown_id: Option<UnknownId>,
    ) -> Result<Subscription, SubscribeError> {
        if !self.authorizer.authorize(request) {
            self.forbidden.fetch_add(1, Ordering::Relaxed);
            return Err(SubscribeError::Forbidden);
        }
        let on_unknown_id = on_unknown_id.unwrap_or(self.config.on_unknown_id);
        let own_seq = request.last_event_id.and_then(|id| self.own_seq(id));
        let now = Instant::now();
        let (topic, joined) = self
            .with_open_topic(request.topic, self.config.auto_create, |topic, state| {
                state.evict(&self.config.history, now);
                let issued = self.seq.load(Ordering::Relaxed);
                let joined = state.join(request.last_event_id, own_seq, issued, on_unknown_id);
                (Arc::clone(topic), joined)
            })
            .ok_or(SubscribeError::UnknownTopic)?;
        // `with_open_topic` only runs the closure on an open topic, which always joins.
        let Some(joined) = joined else {
            return Err(SubscribeError::UnknownTopic);
        };
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let client = request
            .client_id
            .map(|id| (Box::<str>::from(id), self.join_client(id)));
        Ok(Subscription::new(
            Arc::clone(self),
            topic,
            joined.replay,
            joined.backlog,
            Recv::new(joined.receiver),
            client,
        ))
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

    /// A subscriber of `topic` is gone; removes the topic when it is left with neither
    /// subscribers nor history.
    fn leave_topic(&self, topic: &Arc<Topic>) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
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
        // Lock order: the topic map, then the topic.
        let mut topics = lock(&self.topics);
        let mut state = topic.lock();
        if state.is_open() && state.is_idle() {
            state.close();
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

    #[test]
    fn publish_many_is_one_event_in_each_topic_and_resumable_from_either() {
        use futures_util::{FutureExt, StreamExt};

        let hub = Hub::new();
        let before = hub.publish("room", Event::new().data("0")).unwrap();
        let shared = hub
            .publish_many(&["public", "room", "public"], Event::new().data("1"))
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
            .unwrap();
        assert_eq!(from_room.replay(), Replay::Complete);
        let got = from_room.next().now_or_never().unwrap().unwrap();
        assert_eq!(got.as_bytes().as_ptr(), shared.as_bytes().as_ptr());
        // The public topic knows the id as well (and has nothing after it).
        let public = hub
            .subscriber("public")
            .last_event_id(shared.id())
            .subscribe()
            .unwrap();
        assert_eq!(public.replay(), Replay::Complete);
        assert_eq!(public.backlog_len(), 0);

        let strict = Hub::builder().auto_create(false).build();
        strict.create_topic("a");
        assert_eq!(
            strict
                .publish_many(&["a", "b"], Event::new().data("x"))
                .unwrap_err(),
            PublishError::UnknownTopic
        );
        assert_eq!(strict.stats().published, 0);
    }

    #[test]
    fn publish_many_keeps_every_topic_in_id_order_under_contention() {
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
                        hub.publish_many(topics, Event::new().data("x")).unwrap();
                        hub.publish(if i % 2 == 0 { "a" } else { "c" }, Event::new().data("y"))
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
                .unwrap();
            let mut seqs = vec![];
            while let Some(Some(event)) =
                futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut sub))
            {
                seqs.push(hub.inner.own_seq(event.id().unwrap()).unwrap());
                if sub.backlog_len() == 0 {
                    break;
                }
            }
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic} out of order");
        }
    }

    #[test]
    fn client_connections_counts_open_subscriptions() {
        let hub = Hub::new();
        let a = hub.subscriber("x").client_id("u").subscribe().unwrap();
        let b = hub.subscriber("y").client_id("u").subscribe().unwrap();
        assert_eq!(hub.client_connections("u"), 2);
        assert_eq!(hub.client_connections("v"), 0);
        drop(a);
        assert_eq!(hub.client_connections("u"), 1);
        drop(b);
        assert_eq!(hub.client_connections("u"), 0);
    }

    #[test]
    fn topic_recreated_after_close_does_not_resume_old_ids() {
        let hub = Hub::new();
        let old = hub.publish("t", Event::new().data("a")).unwrap();
        assert!(hub.close_topic("t", None));
        hub.publish("t", Event::new().data("b")).unwrap();
        let sub = hub
            .subscriber("t")
            .last_event_id(old.id())
            .subscribe()
            .unwrap();
        assert_eq!(sub.replay(), Replay::HistoryLost);
        assert_eq!(sub.backlog_len(), 1);
    }
}
