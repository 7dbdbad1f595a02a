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
//! [`HubBuilder`]) and the sending half of a shared ring (the crate's own bounded broadcast
//! ring, with `tokio::sync::broadcast`'s semantics) in which each subscriber holds only a
//! cursor; a subscriber that has read everything waits in the ring's list of wakers, and a
//! publish wakes each once.
//!
//! - **Publishing** takes the lock, assigns the id, encodes, appends to the history and sends
//!   into the ring. The publisher never waits for subscribers.
//! - **Subscribing** takes the same lock, copies the handles of the history after the
//!   `Last-Event-ID` and registers a live cursor. Each event published concurrently is either in
//!   that backlog or after the cursor, never both and never neither: replay is exactly once and
//!   in order.
//! - **Per subscriber, per event**, what remains is one atomic increment (cloning the handle)
//!   and a wake-up. No queue per subscriber, no allocation.
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
//!   (evicted), the replay is [`Replay::HistoryLost`](crate::replay::Replay::HistoryLost). A topic made after the cursor lost
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
//! On a broker (Redis) all of this holds across processes: see [Brokers](self#brokers-in-memory-or-redis).
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
//! unknown rather than misread, and reported as [`Replay::HistoryLost`](crate::replay::Replay::HistoryLost). An id the publisher set
//! itself is kept, and found again by exact match within the history; an id used twice resumes
//! after its first retained use (duplicates rather than a gap).
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
//! # Brokers: in memory, or Redis
//!
//! By default a hub lives in its process (the in-memory broker). With the `redis` feature,
//! [`HubBuilder::redis`] puts it on Redis Streams, and every hub on the same Redis (and key
//! prefix) acts as one: a client gets every event whichever process it is connected to, and
//! resumes on any of them with its `Last-Event-ID`, for any set of topics and patterns. The API
//! is the same; what changes:
//!
//! | | in memory (default) | Redis |
//! |---|---|---|
//! | ids | `<epoch>-<seq>`, or the publisher's own | the hub-wide counter (`1839508001522689`), the same on every process, or the publisher's own (indexed in the broker; not all digits, at most 1 KiB: else [`PublishError::InvalidId`]) |
//! | history | per topic, by count, bytes, age | one stream for the hub, by count, bytes and age (`RedisBackend::max_*`); each process caches the recent part of the topics it serves (`history_*`) |
//! | replay | from the history | from the cache, else `XRANGE` on the stream, then a gap-free hand-off |
//! | `broadcast`, `close_topic` | this process | every process, in order, replayable |
//! | `send_to` | this process | every process, over pub/sub, live only |
//! | a retried publish | never needed | stored once with [`PublishBuilder::idempotency_key`] |
//! | counts, [`topics`](Hub::topics), [`purge`](Hub::purge), [`close_all`](Hub::close_all) | this process | this process |
//! | errors | never `Unavailable` | `Unavailable` while Redis is down (command timeout, default 2 s) |
//! | gaps | none | an event this process missed ends its live streams ([`HubStats::gaps`]); their resumes say `history-lost` |
//!
//! Each process reads the hub's stream once, over one connection, and fans out locally: three
//! Redis connections per process in all, whatever the number of clients. See `RedisBackend`
//! for the details, and `src/hub/broker/mod.rs` for the seam a broker plugs into.

mod auth;
mod broker;
mod builder;
#[cfg_attr(not(feature = "_broker"), allow(dead_code))]
mod counted;
mod error;
mod local;
mod merge;
pub mod presence;
mod recv;
#[cfg(feature = "axum")]
mod response;
mod ring;
mod select;
mod subscription;
mod topic;

use std::{fmt, sync::Arc};

/// (internal, feature `_fuzz`) Runs the broker entry codec's checks on any bytes, for the
/// `broker_entry` fuzz target: never a panic; a read entry encodes back to the same bytes;
/// its event, stamped with a position, decodes to exactly one event with that id.
#[cfg(feature = "_fuzz")]
#[doc(hidden)]
pub fn __fuzz_broker_entry(data: &[u8]) {
    broker::entry::fuzz_one(data);
}

/// (internal, feature `_fuzz`) Runs the presence message codec's checks on any bytes, for the
/// `presence_message` fuzz target: never a panic; a read message encodes back to the same
/// bytes; a registry that applies it never panics.
#[cfg(feature = "_fuzz")]
#[doc(hidden)]
pub fn __fuzz_presence_message(data: &[u8]) {
    presence::fuzz_one(data);
}

#[cfg(feature = "nats")]
pub use self::broker::nats::{NatsBroker, NatsError};
#[cfg(feature = "redis")]
pub use self::broker::redis::{RedisBackend, RedisError};
pub use self::{
    auth::{Authorizer, PrivateAccess, PrivateEvent, SubscribeRequest},
    builder::HubBuilder,
    error::{PublishError, SubscribeError},
    presence::{
        Member, MemberInfo, Presence, PresenceChange, PresenceError, PresenceEvent, PresenceEvents,
    },
    select::{Matcher, Pattern, SelectionError},
    subscription::{SubscribeBuilder, Subscription},
};
use self::{broker::Broker, local::Local, select::Selection};
use crate::{EncodedEvent, Event, replay::UnknownId};

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
    local: Arc<Local>,
    broker: Broker,
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
    /// Topics that exist now (with a broker: in this process).
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
    /// With a broker: how many times this process found it had missed events (trimmed from
    /// the broker's log before it read them, or unreadable). Each ended every live
    /// subscription, whose clients then resume with `history-lost`.
    pub gaps: u64,
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
        let broker = builder.broker.unwrap_or(Broker::Memory);
        Self {
            local: Arc::new(Local::new(
                builder.config,
                builder.authorizer,
                broker.is_remote(),
            )),
            broker,
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
        self.broker
            .publish(&self.local, &[topic], event, false, None)
            .await
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
        self.broker
            .publish(&self.local, topics, event, false, None)
            .await
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
            idempotency_key: None,
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
        self.broker.broadcast(&self.local, event).await
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
        self.broker.send_to(&self.local, client_id, event).await
    }

    /// Ends every stream subscribed with `client_id` ([`SubscribeBuilder::client_id`]), on
    /// every process of the hub (a user logged out, a token revoked, an account closed): each
    /// ends as if its topics were closed, and its client reconnects (and is authorized again)
    /// or not. A stream subscribed with the id afterwards is not affected. Returns how many
    /// streams this process ended; on a broker the others end theirs when its message arrives.
    ///
    /// # Errors
    ///
    /// [`PublishError::Unavailable`] when the broker cannot be reached (this process's streams
    /// are ended all the same).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::hub::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut phone = hub.subscriber("inbox").client_id("alice").subscribe().await.unwrap();
    /// let mut laptop = hub.subscriber("feed").client_id("alice").subscribe().await.unwrap();
    /// let _bob = hub.subscriber("feed").client_id("bob").subscribe().await.unwrap();
    /// assert_eq!(hub.disconnect("alice").await.unwrap(), 2);
    /// assert!(phone.next().await.is_none());
    /// assert!(laptop.next().await.is_none());
    /// assert_eq!(hub.client_connections("alice"), 0);
    /// assert_eq!(hub.client_connections("bob"), 1);
    /// # }
    /// ```
    pub async fn disconnect(&self, client_id: &str) -> Result<usize, PublishError> {
        self.broker.disconnect(&self.local, client_id).await
    }

    /// The hub's [presence] registry: who is here, in which space, on every process
    /// of the hub. Made on the first call (on a broker, call it inside a Tokio runtime: a task
    /// keeps the processes in touch); every later call, on any clone, returns the same one.
    /// On a broker, the members already on other processes are listed once they answer (one
    /// round trip, at most one presence interval).
    ///
    /// # Panics
    ///
    /// On a hub with a broker whose background tasks have not started yet, when called outside
    /// a Tokio runtime (as `tokio::spawn` would).
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let member = hub.presence().join("room/1", "alice", "{}").unwrap();
    /// assert_eq!(hub.clone().presence().members("room/1")[0].key(), "alice");
    /// # drop(member);
    /// ```
    pub fn presence(&self) -> Presence {
        self.local
            .presence
            .get_or_init(|| self.broker.presence(&self.local))
            .clone()
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
        self.broker.create_topic(&self.local, topic).await
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
        self.broker
            .close_topic(&self.local, topic, final_event)
            .await
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
        self.local.close_all()
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
        self.local.purge()
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
        self.local.subscriber_count(topic)
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
        self.local.client_connections(client_id)
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
        self.local.total_subscribers()
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
        self.local.topic_names()
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
        self.local.topic_count()
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
        self.local.stats()
    }

    /// Subscribes with what a [`SubscribeBuilder`] gathered.
    async fn subscribe_with(
        &self,
        selection: &mut Selection<'_>,
        request: SubscribeRequest<'_>,
        on_unknown_id: Option<UnknownId>,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, SubscribeError> {
        let local = &self.local;
        selection.normalize();
        selection.check(local.config.max_topics)?;
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
            if !local.authorizer.authorize(&check) {
                local.count_forbidden();
                return Err(SubscribeError::Forbidden);
            }
        }
        let on_unknown_id = on_unknown_id.unwrap_or(local.config.on_unknown_id);
        self.broker
            .subscribe(local, selection, &request, on_unknown_id, access)
            .await
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
    idempotency_key: Option<&'a str>,
}

impl<'a> PublishBuilder<'a> {
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

    /// With a broker: a retry of this publication with the same `key` (within the broker's
    /// window, `RedisBackend::idempotency_window` on Redis)
    /// stores nothing new and answers the first one's id. Use it when a publish failed with
    /// [`PublishError::Unavailable`], which may mean "stored, but the answer was lost": retried
    /// with the same key, the event is never stored twice. The in-memory hub never fails that
    /// way and ignores the key.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let key = "msg-7f3a";
    /// let sent = hub.publisher(&["t"]).idempotency_key(key).publish(Event::new().data("x")).await;
    /// assert!(sent.is_ok());
    /// # }
    /// ```
    pub fn idempotency_key(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// Publishes `event`: one id, encoded once, into every topic's history and to every
    /// subscriber that may see it.
    ///
    /// # Errors
    ///
    /// As [`Hub::publish_many`], and [`PublishError::Unsupported`] when a broker cannot carry
    /// it (more than 1,024 topics in one publication on Redis).
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
        let hub = self.hub;
        hub.broker
            .publish(
                &hub.local,
                self.topics,
                event,
                self.private,
                self.idempotency_key,
            )
            .await
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
            .field("config", &self.local.config)
            .field("broker", &self.broker)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{local::IdBuf, *};
    use crate::replay::Replay;

    #[test]
    fn ids_round_trip() {
        let hub = Hub::new();
        let inner = &hub.local;
        let id = IdBuf::new(inner.epoch(), u64::MAX);
        assert_eq!(inner.own_seq(id.as_ref()), Some(u64::MAX));
        assert_eq!(
            inner.own_seq(IdBuf::new(inner.epoch(), 0).as_ref()),
            Some(0)
        );
        for bad in [
            "",
            "-",
            "1",
            "x-1",
            &format!("{}-", inner.epoch()),
            &format!("{}-+1", inner.epoch()),
            &format!("{}-1-2", inner.epoch()),
            &format!("{}-99999999999999999999999", inner.epoch()),
        ] {
            assert_eq!(inner.own_seq(bad), None, "{bad:?}");
        }
        let other = Hub::new();
        assert_ne!(other.local.epoch(), inner.epoch());
        assert_eq!(other.local.own_seq(id.as_ref()), None);
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
            let topic_ref = hub.local.topics.lock().unwrap()[topic].clone();
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
                seqs.push(hub.local.own_seq(event.id().unwrap()).unwrap());
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
