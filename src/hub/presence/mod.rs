//! Presence: who is here, across every process of a hub.
//!
//! A [`Presence`] ([`Hub::presence`](super::Hub::presence)) is a registry of live members, each in a *space* (a
//! room, a document, a set of subscriptions) with a *key* (a user, a subscriber) and opaque
//! *metadata* (JSON, say). [`Presence::join`] adds a member for as long as the returned
//! [`Member`] lives (hold it in the connection's task: when the stream ends, it leaves).
//! [`Presence::members`] lists a space, [`Presence::events`] follows the joins and leaves.
//!
//! On Redis or NATS, presence is the union of every process's members:
//!
//! ```text
//!  process A                         broker (live channel)              process B
//!  join/leave ── numbered change ──► J / L ─────────────────────────► applied if next, else
//!  every interval ─────────────────► H (count of changes) ──────────► a snapshot is asked (Q)
//!  asked (Q) ──────────────────────► S (members, in parts) ─────────► replaces what B knew
//!                                    silent for 3 intervals ────────► A's members expire
//! ```
//!
//! - **Live only**: presence messages travel on the broker's live channel (the one
//!   [`Hub::send_to`](super::Hub::send_to) uses), never in the event log, and never reach event subscribers.
//! - **Nothing lost for long**: a lost message shows as a gap in a process's change count, at
//!   the latest at its next heartbeat, and a snapshot repairs it.
//! - **Crashes**: a process not heard from for three heartbeat intervals
//!   ([`HubBuilder::presence_interval`](super::HubBuilder::presence_interval), default 5 s) is gone; its members leave with
//!   [`PresenceChange::Expired`]. One process is named to act on each change
//!   ([`PresenceEvent::handled_here`]), so "announce that they left" happens once, not once
//!   per process.
//! - **Consistency**: eventual. A member is listed on another process after one broker round
//!   trip; two processes that cannot hear each other for a while each see the other's members
//!   expire, and see them again (as joins) once they can.
//! - **Cost**: one message per join or leave, one small message per process per interval, and
//!   snapshots only when a process starts or missed something.
//!
//! ```
//! use futures_util::StreamExt;
//! use tower_sse::hub::{Hub, PresenceChange};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new();
//! let presence = hub.presence();
//! let mut changes = presence.events();
//!
//! let alice = presence.join("room/1", "alice", r#"{"name":"Alice"}"#).unwrap();
//! let keys = |space| presence.members(space).iter().map(|m| m.key().to_owned()).collect::<Vec<_>>();
//! assert_eq!(keys("room/1"), ["alice"]);
//!
//! drop(alice); // the connection ended
//! assert!(keys("room/1").is_empty());
//!
//! let joined = changes.next().await.unwrap();
//! assert_eq!((joined.change(), joined.member().key()), (PresenceChange::Joined, "alice"));
//! assert_eq!(joined.member().meta(), r#"{"name":"Alice"}"#);
//! assert_eq!(changes.next().await.unwrap().change(), PresenceChange::Left);
//! # }
//! ```

mod registry;
mod wire;

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_core::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::ReusableBoxFuture;

use self::{registry::Registry, wire::Envelope};

/// The largest member [`Presence::join`] accepts: its space, key and metadata together, in
/// bytes (64 KiB). Every member travels in snapshots between processes, in parts that must fit a
/// broker's message (NATS: 1 MiB by default).
pub const MAX_MEMBER_BYTES: usize = 64 * 1024;

/// Why [`Presence::join`] refused a member.
///
/// ```
/// use tower_sse::hub::presence::{MAX_MEMBER_BYTES, PresenceError};
///
/// let presence = tower_sse::hub::Hub::new().presence();
/// let huge = "x".repeat(MAX_MEMBER_BYTES);
/// assert_eq!(presence.join("s", "k", huge).unwrap_err(), PresenceError::TooLarge);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// Space, key and metadata are larger than [`MAX_MEMBER_BYTES`] together.
    TooLarge,
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "presence member larger than {MAX_MEMBER_BYTES} bytes (space, key and metadata)"
            ),
        }
    }
}

impl std::error::Error for PresenceError {}

/// How many presence messages may wait for the broker (more are dropped, then repaired).
#[cfg_attr(not(feature = "_broker"), allow(dead_code))]
const OUT_CAPACITY: usize = 1024;

/// How many presence events a slow [`PresenceEvents`] may fall behind before it ends (a
/// snapshot or an expiry tells one event per member at once).
const EVENTS_CAPACITY: usize = 4096;

/// The presence registry of a [`Hub`](super::Hub): see [the module](self). A cheap [`Clone`]
/// handle; every clone (and every [`Hub::presence`](super::Hub::presence) call on clones of one
/// hub) is the same registry.
#[derive(Clone)]
pub struct Presence {
    shared: Arc<Shared>,
}

/// What a [`Presence`] and its members share.
pub(crate) struct Shared {
    /// This process's id (also in the registry).
    id: Arc<str>,
    registry: Mutex<Registry>,
    events: broadcast::Sender<PresenceEvent>,
    /// The messages for other processes (`None`: in memory, no other process). Bounded: while
    /// the broker is down, what does not fit is dropped, and the other processes repair it
    /// from the next heartbeat (its change count) with a snapshot.
    out: Option<mpsc::Sender<Vec<u8>>>,
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.shared.lock();
        f.debug_struct("Presence")
            .field("process", registry.me())
            .field("members", &registry.members(None).len())
            .finish()
    }
}

/// A member, as [`Presence::members`] lists it and [`PresenceEvent`]s tell of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    process: Arc<str>,
    member: u64,
    space: Arc<str>,
    key: Arc<str>,
    meta: Arc<str>,
    here: bool,
}

impl MemberInfo {
    /// The space it joined.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let m = hub.presence().join("room/1", "alice", "").unwrap();
    /// assert_eq!(m.info().space(), "room/1");
    /// ```
    pub fn space(&self) -> &str {
        &self.space
    }

    /// Its key (a user, a subscriber): not unique, the same key may join several times.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let m = hub.presence().join("room/1", "alice", "").unwrap();
    /// assert_eq!(m.info().key(), "alice");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its metadata, as given to [`Presence::join`].
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let m = hub.presence().join("room/1", "alice", "{}").unwrap();
    /// assert_eq!(m.info().meta(), "{}");
    /// ```
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// The id of the process it joined on ([`Presence::process_id`] there).
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let m = hub.presence().join("room/1", "alice", "").unwrap();
    /// assert_eq!(m.info().process(), hub.presence().process_id());
    /// ```
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Whether it joined on this process.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// assert!(hub.presence().join("room/1", "alice", "").unwrap().info().is_here());
    /// ```
    pub fn is_here(&self) -> bool {
        self.here
    }

    /// A unique id: the process's id and the member's number there.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let a = hub.presence().join("s", "k", "").unwrap();
    /// let b = hub.presence().join("s", "k", "").unwrap();
    /// assert_ne!(a.info().id(), b.info().id());
    /// ```
    pub fn id(&self) -> String {
        format!("{}/{}", self.process, self.member)
    }
}

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PresenceChange {
    /// It joined (or became known: a process that starts learns the members already there).
    Joined,
    /// It left: its [`Member`] was dropped.
    Left,
    /// Its process was not heard from for three heartbeat intervals (crashed, cut off).
    Expired,
}

/// A join or a leave, from [`Presence::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    change: PresenceChange,
    member: MemberInfo,
    handled_here: bool,
}

impl PresenceEvent {
    /// What happened.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use futures_util::StreamExt;
    /// use tower_sse::hub::{Hub, PresenceChange};
    ///
    /// let presence = Hub::new().presence();
    /// let mut events = presence.events();
    /// let _m = presence.join("s", "k", "").unwrap();
    /// assert_eq!(events.next().await.unwrap().change(), PresenceChange::Joined);
    /// # }
    /// ```
    pub fn change(&self) -> PresenceChange {
        self.change
    }

    /// Who.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use futures_util::StreamExt;
    ///
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// let mut events = presence.events();
    /// let _m = presence.join("s", "k", "").unwrap();
    /// assert_eq!(events.next().await.unwrap().member().key(), "k");
    /// # }
    /// ```
    pub fn member(&self) -> &MemberInfo {
        &self.member
    }

    /// Whether this process is the one to act on the change (announce it, write it down), so
    /// that it is acted on once, not once per process: the member's own process for a join or
    /// a leave, and for an expiry the oldest process alive (the lowest id), leaving out one
    /// not heard from for most of the time to live. Exactly one in the usual cases. More than
    /// one while processes disagree on who is alive (a partition, heartbeats late by more than
    /// half an interval); none when the one it falls to crashes too, a little later (it is
    /// then still counted alive, but will not act).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use futures_util::StreamExt;
    ///
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// let mut events = presence.events();
    /// let _m = presence.join("s", "k", "").unwrap();
    /// assert!(events.next().await.unwrap().handled_here());
    /// # }
    /// ```
    pub fn handled_here(&self) -> bool {
        self.handled_here
    }
}

/// A member of a space, from [`Presence::join`]: it leaves when dropped.
#[must_use = "the member leaves when this is dropped"]
pub struct Member {
    shared: Arc<Shared>,
    member: u64,
    info: MemberInfo,
}

impl Member {
    /// The member, as others see it.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let m = hub.presence().join("room/1", "alice", "{}").unwrap();
    /// assert_eq!((m.info().space(), m.info().key()), ("room/1", "alice"));
    /// ```
    pub fn info(&self) -> &MemberInfo {
        &self.info
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Member").field(&self.info).finish()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Queued and told under the registry's lock: messages leave in change-count order.
        let mut registry = self.shared.lock();
        if let Some((message, event)) = registry.leave(self.member) {
            self.shared.send(&message);
            let _ = self.shared.events.send(event);
        }
    }
}

/// The [`Stream`] of [`Presence::events`]. It ends if it falls more than 4,096 events behind
/// (one snapshot or expiry of more members than that at once does it too): list the members
/// again, and follow a new one.
pub struct PresenceEvents {
    next: ReusableBoxFuture<'static, Received>,
    done: bool,
}

type Received = (
    Result<PresenceEvent, broadcast::error::RecvError>,
    broadcast::Receiver<PresenceEvent>,
);

async fn receive(mut events: broadcast::Receiver<PresenceEvent>) -> Received {
    let event = events.recv().await;
    (event, events)
}

impl fmt::Debug for PresenceEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresenceEvents")
    }
}

impl Stream for PresenceEvents {
    type Item = PresenceEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PresenceEvent>> {
        if self.done {
            return Poll::Ready(None);
        }
        let (event, events) = std::task::ready!(self.next.poll(cx));
        match event {
            Ok(event) => {
                self.next.set(receive(events));
                Poll::Ready(Some(event))
            }
            // Lagged: the follower no longer knows the state; end rather than skip silently.
            Err(_) => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg_attr(not(feature = "_broker"), allow(dead_code))]
impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, message: &Envelope) {
        if let Some(out) = &self.out {
            let _ = out.try_send(message.encode());
        }
    }

    fn emit(&self, events: Vec<PresenceEvent>) {
        for event in events {
            let _ = self.events.send(event);
        }
    }

    /// A message from another process (its bytes as the broker delivered them).
    pub(crate) fn receive(&self, bytes: &[u8]) {
        let Some(envelope) = Envelope::decode(bytes) else {
            tracing::warn!("presence message unreadable; dropped");
            return;
        };
        // Replies are queued under the lock, in order with this process's own changes.
        let mut registry = self.lock();
        let (events, replies) = registry.receive(envelope, Instant::now());
        for reply in &replies {
            self.send(reply);
        }
        self.emit(events);
    }
}

/// A new process id: 32 hex digits, unique (not secret): the time in ms (12 digits), then
/// std's randomly keyed hashers over the time, the process id and a counter. Ids compare as
/// strings, so a lower id is an older process: the lowest alive handles expiries, and a
/// process that replaces a crashed one (younger than the others) does not take that over
/// from processes that knew the crashed one's members.
fn process_id() -> Arc<str> {
    use std::{
        hash::{BuildHasher, Hasher},
        sync::atomic::{AtomicU64, Ordering},
    };
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    };
    let millis = u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX) & 0xffff_ffff_ffff;
    format!("{millis:012x}{:016x}{:04x}", half(), half() & 0xffff).into()
}

/// The checks behind the `presence_message` fuzz target (see
/// `crate::hub::__fuzz_presence_message`): any bytes from the broker's live channel are refused
/// or read, never a panic; a read message encodes back to exactly its bytes; applying it (twice,
/// then expiring) to a registry never panics, and every reply it makes reads back.
#[cfg(feature = "_fuzz")]
pub(crate) fn fuzz_one(data: &[u8]) {
    let Some(envelope) = Envelope::decode(data) else {
        return;
    };
    assert_eq!(envelope.encode(), data, "one spelling per message");
    let mut registry = Registry::new("fuzz".into(), Duration::from_secs(15));
    let _member = registry.join("s".into(), "k".into(), "".into());
    let now = Instant::now();
    for at in [now, now + Duration::from_secs(10)] {
        let (_, replies) = registry.receive(envelope.clone(), at);
        for reply in replies {
            assert_eq!(Envelope::decode(&reply.encode()), Some(reply));
        }
    }
    let _ = registry.expire(now + Duration::from_secs(60));
    let _ = registry.members(None);
}

impl Presence {
    /// The registry of an in-memory hub: this process only.
    pub(crate) fn memory(interval: Duration) -> Self {
        Self::with_out(None, interval)
    }

    fn with_out(out: Option<mpsc::Sender<Vec<u8>>>, interval: Duration) -> Self {
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let id = process_id();
        Self {
            shared: Arc::new(Shared {
                id: id.clone(),
                registry: Mutex::new(Registry::new(id, interval * 3)),
                events,
                out,
            }),
        }
    }

    /// The registry of a hub on a broker: `send` carries one message to every process (this one
    /// included, which ignores its own). A task sends, beats every `interval` and expires the
    /// silent processes, for as long as the registry is in use.
    #[cfg(feature = "_broker")]
    pub(crate) fn remote<F>(send: F, interval: Duration) -> Self
    where
        F: Fn(Vec<u8>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            + Send
            + Sync
            + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_CAPACITY);
        let presence = Self::with_out(Some(tx), interval);
        let weak = Arc::downgrade(&presence.shared);
        {
            let registry = presence.shared.lock();
            presence.shared.send(&registry.query_all());
        }
        let task = async move {
            let mut beat = tokio::time::interval(interval);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    message = rx.recv() => match message {
                        // In order, one at a time: the change counts arrive as numbered.
                        Some(message) => send(message).await,
                        None => return,
                    },
                    _ = beat.tick() => {
                        let Some(shared) = weak.upgrade() else { return };
                        let heartbeat = {
                            let mut registry = shared.lock();
                            let expired = registry.expire(Instant::now());
                            shared.emit(expired);
                            // Read with the queue under the lock: when it is empty, nothing
                            // numbered after this count can go out before it. When it is not,
                            // the queued messages tell the others this process is alive.
                            rx.is_empty().then(|| registry.heartbeat())
                        };
                        drop(shared);
                        if let Some(heartbeat) = heartbeat {
                            send(heartbeat.encode()).await;
                        }
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task);
            }
            Err(_) => tracing::warn!(
                "Hub::presence called outside a Tokio runtime: other processes will not be told"
            ),
        }
        presence
    }

    #[cfg(feature = "_broker")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Adds a member to `space` with `key` and `meta` (opaque: JSON, say), on every process,
    /// until the returned [`Member`] is dropped.
    ///
    /// # Errors
    ///
    /// [`PresenceError::TooLarge`] when space, key and metadata exceed [`MAX_MEMBER_BYTES`]
    /// together; nothing is added.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let presence = hub.presence();
    /// let member = presence.join("doc/7", "alice", r#"{"cursor":12}"#).unwrap();
    /// assert_eq!(presence.members("doc/7").len(), 1);
    /// drop(member);
    /// assert!(presence.members("doc/7").is_empty());
    /// ```
    pub fn join(
        &self,
        space: impl Into<Arc<str>>,
        key: impl Into<Arc<str>>,
        meta: impl Into<Arc<str>>,
    ) -> Result<Member, PresenceError> {
        let (space, key, meta) = (space.into(), key.into(), meta.into());
        if space.len() + key.len() + meta.len() > MAX_MEMBER_BYTES {
            return Err(PresenceError::TooLarge);
        }
        // Queued and told under the registry's lock: messages leave in change-count order.
        let mut registry = self.shared.lock();
        let (member, message, event) = registry.join(space, key, meta);
        self.shared.send(&message);
        let info = event.member.clone();
        let _ = self.shared.events.send(event);
        drop(registry);
        Ok(Member {
            shared: self.shared.clone(),
            member,
            info,
        })
    }

    /// The members of `space` on every process, as far as this process knows now (its own
    /// first).
    ///
    /// ```
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// let _a = presence.join("s", "a", "").unwrap();
    /// let _b = presence.join("other", "b", "").unwrap();
    /// assert_eq!(presence.members("s").len(), 1);
    /// ```
    pub fn members(&self, space: &str) -> Vec<MemberInfo> {
        self.shared.lock().members(Some(space))
    }

    /// Every member of every space.
    ///
    /// ```
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// let _a = presence.join("s", "a", "").unwrap();
    /// let _b = presence.join("other", "b", "").unwrap();
    /// assert_eq!(presence.all_members().len(), 2);
    /// ```
    pub fn all_members(&self) -> Vec<MemberInfo> {
        self.shared.lock().members(None)
    }

    /// The joins and leaves from now on, of every space and every process.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use futures_util::StreamExt;
    ///
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// let mut events = presence.events();
    /// let _m = presence.join("s", "k", "").unwrap();
    /// assert_eq!(events.next().await.unwrap().member().space(), "s");
    /// # }
    /// ```
    pub fn events(&self) -> PresenceEvents {
        PresenceEvents {
            next: ReusableBoxFuture::new(receive(self.shared.events.subscribe())),
            done: false,
        }
    }

    /// This process's id: new for each hub, its start time then random digits (a lower id is
    /// an older process).
    ///
    /// ```
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// assert_eq!(presence.process_id().len(), 32);
    /// ```
    pub fn process_id(&self) -> &str {
        &self.shared.id
    }

    /// The processes known to be alive, this one included, by id.
    ///
    /// ```
    /// let presence = tower_sse::hub::Hub::new().presence();
    /// assert_eq!(presence.processes(), [presence.process_id()]);
    /// ```
    pub fn processes(&self) -> Vec<String> {
        self.shared
            .lock()
            .processes()
            .iter()
            .map(|id| id.to_string())
            .collect()
    }
}
