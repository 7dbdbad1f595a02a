//! The seam between the hub's local core and where events travel.
//!
//! ```text
//!            Hub (mod.rs) ── every call goes through `Broker`, matched in this file only
//!                 │
//!      ┌──────────┴───────────────┐
//!  Memory (memory.rs)          Remote (trait): redis/ (feature `redis`), nats/ (later)
//!  ids: <epoch>-<seq>            ids: the broker's position (decimal), hub-wide ordered
//!  publish = local push          publish = append to the broker's one log
//!      │                            │ one reader per process ─► Feed::deliver (in order)
//!      ▼                            ▼                          Feed::lost (a gap: never silent)
//!              Local (local.rs): topics, patterns, rings, fan-out, subscriptions
//! ```
//!
//! A remote broker knows nothing of the core beyond [`Feed`] (deliveries in, gaps signalled,
//! client messages, back-pressure) and the entry format (`entry.rs`). The core knows nothing
//! of a broker beyond [`Remote`]. A subscription with a `Last-Event-ID` that the process's
//! caches do not cover is replayed from the broker's log ([`Remote::read`]) and handed over to
//! live events under the core's order lock (`subscribe_remote` below).

#[cfg(feature = "_broker")]
pub(crate) mod entry;
pub(super) mod memory;
#[cfg(feature = "nats")]
pub(super) mod nats;
#[cfg(feature = "redis")]
pub(super) mod redis;

use std::sync::Arc;
#[cfg(feature = "_broker")]
use std::{future::Future, pin::Pin, sync::Weak, time::Duration};

#[cfg(feature = "_broker")]
use self::entry::Targets;
#[cfg(feature = "_broker")]
use super::auth::visible;
use super::{
    PrivateAccess, PublishError, SubscribeError, SubscribeRequest, Subscription,
    local::{Local, Stamp},
    select::Selection,
};
#[cfg(feature = "_broker")]
use crate::replay::{Replay, keep_newest};
use crate::{EncodedEvent, Event, replay::UnknownId};

/// A boxed future, as the [`Remote`] methods return them.
#[cfg(feature = "_broker")]
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a hub's events travel.
#[derive(Clone)]
pub(super) enum Broker {
    /// This process only: the local core is the whole hub.
    Memory,
    /// A broker's log, shared by every process on it.
    #[cfg(feature = "_broker")]
    Remote(Arc<dyn Remote>),
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            #[cfg(feature = "_broker")]
            Self::Remote(_) => "remote",
        })
    }
}

#[cfg(feature = "_broker")]
/// What a remote broker does for a hub. Positions are the broker's, hub-wide ordered (a
/// counter, a stream sequence), and the ids are their decimal form ([`entry::position`]).
pub(crate) trait Remote: Send + Sync + 'static {
    /// The broker's name, for metrics labels (`redis`, `nats`).
    fn name(&self) -> &'static str;

    /// Starts the reader (and whatever else runs in the background), once; it delivers into
    /// `feed`. Called on the first use of the hub, inside a runtime.
    fn start(&self, feed: Feed);

    /// Appends one entry; its position. `must_exist`: refuse ([`PublishError::UnknownTopic`])
    /// when a topic was not made with [`create_topic`](Self::create_topic).
    fn publish<'a>(
        &'a self,
        publication: Publication<'a>,
    ) -> BoxFuture<'a, Result<u64, PublishError>>;

    /// Sends `event` to every process's connections of `client_id` (live only); how many
    /// processes listen.
    /// Sends `event` to every process's connections of `client_id`, or with `None` ends them
    /// ([`Feed::disconnect`]).
    fn send_to<'a>(
        &'a self,
        client_id: &'a str,
        event: Option<&'a EncodedEvent>,
    ) -> BoxFuture<'a, Result<usize, PublishError>>;

    /// Sends a presence message to every process (live only, like [`send_to`](Self::send_to);
    /// the listener hands it to [`Feed::direct`]).
    fn presence<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<(), PublishError>>;

    /// Registers `topic` (for hubs that do not create topics on demand); `true` if it was new.
    fn create_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<bool, PublishError>>;

    /// Whether every topic was registered with [`create_topic`](Self::create_topic).
    fn topics_exist<'a>(
        &'a self,
        topics: &'a [&'a str],
    ) -> BoxFuture<'a, Result<bool, SubscribeError>>;

    /// The position of the first retained event published with the publisher's id `id`
    /// ([`entry::publisher_id`]), if the broker's index still has it.
    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<u64>, SubscribeError>>;

    /// Entries after position `after` (at most `max`), or the newest `max` when `after` is
    /// `None`.
    fn read(&self, after: Option<u64>, max: usize) -> BoxFuture<'_, Result<Read, SubscribeError>>;

    /// How long a call may wait for the broker.
    fn timeout(&self) -> Duration;
}

#[cfg(feature = "_broker")]
/// A publication, as a broker stores it.
pub(crate) struct Publication<'a> {
    pub(crate) targets: Targets,
    /// The event's fields without an id (`None`: a close without a final event).
    pub(crate) fields: Option<&'a [u8]>,
    pub(crate) private: bool,
    pub(crate) close: bool,
    /// The publisher's id ([`entry::publisher_id`]): the event's id instead of its position,
    /// and indexed so that a `Last-Event-ID` with it finds the position.
    pub(crate) id: Option<&'a str>,
    pub(crate) must_exist: bool,
    /// Publishing again with the same key within the broker's window stores nothing new and
    /// answers the first position.
    pub(crate) idempotency_key: Option<&'a str>,
}

#[cfg(feature = "_broker")]
/// What [`Remote::read`] found.
pub(crate) struct Read {
    /// Whether the entry at `after` is still in the log (so everything after it is).
    pub(crate) found: bool,
    /// The entries, oldest first, with their positions.
    pub(crate) entries: Vec<(u64, entry::Entry)>,
    /// Whether the log has more after the last entry (the read was cut at `max`).
    pub(crate) more: bool,
}

#[cfg(feature = "_broker")]
/// The handle through which a broker's reader delivers into this process's hub.
#[derive(Clone)]
pub(crate) struct Feed {
    local: Weak<Local>,
    /// The broker's name ([`Remote::name`]), for metrics.
    broker: &'static str,
}

#[cfg(feature = "_broker")]
impl Feed {
    /// Whether the hub is still in use (readers stop when it is not).
    pub(crate) fn is_alive(&self) -> bool {
        self.local.strong_count() > 0
    }

    /// The reader starts after position `last` (the newest in the log when it started).
    pub(crate) fn started(&self, last: u64) {
        if let Some(local) = self.local.upgrade() {
            local.start_at(last);
        }
    }

    /// Whether the reader is connected: subscriptions wait for it (at most the broker's
    /// timeout, then `Unavailable`), so a client is told the broker is down rather than given
    /// a stream that stays silent.
    pub(crate) fn connected(&self, up: bool) {
        if let Some(local) = self.local.upgrade() {
            local.set_ready(up);
        }
        crate::metrics::broker_connected(self.broker, up);
    }

    /// Delivers the entry at `pos` (greater than every position delivered before).
    pub(crate) fn deliver(&self, pos: u64, entry: entry::Entry) {
        let Some(local) = self.local.upgrade() else {
            return;
        };
        let Some(fields) = entry.fields.as_deref() else {
            if entry.close {
                local.deliver_close(pos, &entry.targets, None);
            }
            return;
        };
        let Some(event) = entry::stamp(fields, pos, entry.id.as_deref()) else {
            // `decode` checked the fields.
            local.lost(pos.saturating_add(1));
            return;
        };
        if entry.close {
            local.deliver_close(pos, &entry.targets, Some(event));
        } else {
            local.deliver(pos, &entry.targets, event, entry.private);
        }
    }

    /// Events before position `next` were missed (trimmed before this process read them, or
    /// unreadable): every live subscription ends, and resumes from before `next` say
    /// `history-lost`.
    pub(crate) fn lost(&self, next: u64) {
        crate::metrics::broker_gap(self.broker);
        if let Some(local) = self.local.upgrade() {
            local.lost(next);
        }
    }

    /// A message of the live channel ([`Remote::send_to`], [`Remote::presence`]): an event
    /// for a client's connections, the end of them, or a presence message.
    pub(crate) fn direct(&self, payload: &[u8]) {
        let Some(local) = self.local.upgrade() else {
            return;
        };
        if let Some(message) = payload.strip_prefix(b"P") {
            // Only a process that uses presence listens to it.
            if let Some(presence) = local.presence.get() {
                presence.shared().receive(message);
            }
            return;
        }
        match entry::split_direct(payload) {
            Some((client_id, Some(event))) => {
                local.deliver_to_client(client_id, event);
            }
            Some((client_id, None)) => {
                local.disconnect_client(client_id);
            }
            None => tracing::warn!(
                broker = self.broker,
                "live message is neither one event without an id nor presence; dropped"
            ),
        }
    }

    /// A reader catching up lets subscribers read what it just delivered before the next
    /// batch: it yields, then waits (at most 20 ms) while the fullest ring that still drains is
    /// more than half full and getting emptier. A ring that does not drain (a stalled
    /// subscriber, cut when it overflows) never holds the reader up.
    pub(crate) async fn drain(&self) {
        tokio::task::yield_now().await;
        let mut before = usize::MAX;
        for _ in 0..20 {
            let (queued, capacity) = self.queued();
            if queued <= capacity / 2 || queued >= before {
                return;
            }
            before = queued;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The most events any local ring holds that one of its subscribers has not read yet, and
    /// the rings' capacity: a reader catching up waits while subscribers drain.
    pub(crate) fn queued(&self) -> (usize, usize) {
        self.local.upgrade().map_or((0, 1), |local| {
            (local.queued(), local.config.subscriber_capacity)
        })
    }
}

impl Broker {
    /// The hub's presence registry: this process's alone in memory; on a broker, its messages
    /// travel on the live channel (and the broker's listener is started to hear the others').
    pub(super) fn presence(&self, local: &Arc<Local>) -> super::presence::Presence {
        let interval = local.config.presence_interval;
        match self {
            Self::Memory => super::presence::Presence::memory(interval),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                let remote = Arc::clone(remote);
                super::presence::Presence::remote(
                    move |message| {
                        let remote = Arc::clone(&remote);
                        Box::pin(async move {
                            // A lost message is repaired by the next heartbeat's resync.
                            let _ = remote.presence(&message).await;
                        })
                    },
                    interval,
                )
            }
        }
    }

    /// Starts a remote broker's background tasks (once; cheap after that).
    #[cfg(feature = "_broker")]
    fn start(&self, local: &Arc<Local>) {
        if let Self::Remote(remote) = self {
            local.start_remote(|| {
                remote.start(Feed {
                    local: Arc::downgrade(local),
                    broker: remote.name(),
                });
            });
        }
    }

    pub(super) fn is_remote(&self) -> bool {
        match self {
            Self::Memory => false,
            #[cfg(feature = "_broker")]
            Self::Remote(_) => true,
        }
    }

    /// Publishes to `topics` (one id, encoded once).
    pub(super) async fn publish(
        &self,
        local: &Arc<Local>,
        topics: &[&str],
        event: Event,
        private: bool,
        idempotency_key: Option<&str>,
    ) -> Result<EncodedEvent, PublishError> {
        // The in-memory hub never answers "maybe stored": nothing to de-duplicate.
        let _ = idempotency_key;
        match self {
            Self::Memory => memory::publish(local, topics, event, private),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                let mut names: Vec<Box<str>> = topics.iter().map(|&t| t.into()).collect();
                names.sort_unstable();
                names.dedup();
                if names.is_empty() {
                    return Ok(event.encode());
                }
                if names.len() > entry::MAX_TOPICS {
                    return Err(PublishError::Unsupported);
                }
                let (fields, id) = fields_of(event)?;
                let pos = remote
                    .publish(Publication {
                        targets: Targets::Topics(names),
                        fields: Some(&fields),
                        private,
                        close: false,
                        id: id.as_deref(),
                        must_exist: !local.config.auto_create,
                        idempotency_key,
                    })
                    .await?;
                local.count_published();
                entry::stamp(&fields, pos, id.as_deref()).ok_or(PublishError::Unavailable)
            }
        }
    }

    /// Publishes to every topic; how many topics (memory) or `1` (remote: every process's).
    pub(super) async fn broadcast(
        &self,
        local: &Arc<Local>,
        event: Event,
    ) -> Result<usize, PublishError> {
        match self {
            Self::Memory => Ok(local.broadcast(Stamp::Next(event))),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                let (fields, id) = fields_of(event)?;
                remote
                    .publish(Publication {
                        targets: Targets::All,
                        fields: Some(&fields),
                        private: false,
                        close: false,
                        id: id.as_deref(),
                        must_exist: false,
                        idempotency_key: None,
                    })
                    .await?;
                local.count_published();
                Ok(local.topic_count())
            }
        }
    }

    pub(super) async fn send_to(
        &self,
        local: &Arc<Local>,
        client_id: &str,
        event: Event,
    ) -> Result<usize, PublishError> {
        let event = event.encode();
        match self {
            Self::Memory => Ok(local.send_to(client_id, event)),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                let reached = remote.send_to(client_id, Some(&event)).await;
                local.count_published();
                reached
            }
        }
    }

    /// Ends `client_id`'s subscriptions on every process; how many this process had.
    pub(super) async fn disconnect(
        &self,
        local: &Arc<Local>,
        client_id: &str,
    ) -> Result<usize, PublishError> {
        match self {
            Self::Memory => Ok(local.disconnect_client(client_id)),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                // Here at once (the broker's message comes back to this process too, and
                // finds nothing left).
                let here = local.disconnect_client(client_id);
                remote.send_to(client_id, None).await?;
                Ok(here)
            }
        }
    }

    pub(super) async fn create_topic(
        &self,
        local: &Arc<Local>,
        topic: &str,
    ) -> Result<bool, PublishError> {
        match self {
            Self::Memory => Ok(local.create_topic(topic)),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => remote.create_topic(topic).await,
        }
    }

    pub(super) async fn close_topic(
        &self,
        local: &Arc<Local>,
        topic: &str,
        final_event: Option<Event>,
    ) -> Result<bool, PublishError> {
        match self {
            Self::Memory => Ok(local.close_topic(topic, final_event.map(Stamp::Next))),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                let (fields, id) = match final_event.map(fields_of).transpose()? {
                    Some((fields, id)) => (Some(fields), id),
                    None => (None, None),
                };
                let result = remote
                    .publish(Publication {
                        targets: Targets::Topics(vec![topic.into()]),
                        fields: fields.as_deref(),
                        private: false,
                        close: true,
                        id: id.as_deref(),
                        must_exist: !local.config.auto_create,
                        idempotency_key: None,
                    })
                    .await;
                match result {
                    Ok(_) => {
                        if fields.is_some() {
                            local.count_published();
                        }
                        Ok(true)
                    }
                    Err(PublishError::UnknownTopic) => Ok(false),
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Subscribes: authorization and limits were checked by the caller.
    pub(super) async fn subscribe(
        &self,
        local: &Arc<Local>,
        selection: &Selection<'_>,
        request: &SubscribeRequest<'_>,
        on_unknown_id: UnknownId,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, SubscribeError> {
        match self {
            Self::Memory => memory::subscribe(local, selection, request, on_unknown_id, access),
            #[cfg(feature = "_broker")]
            Self::Remote(remote) => {
                self.start(local);
                subscribe_remote(&**remote, local, selection, request, on_unknown_id, access).await
            }
        }
    }
}

/// An event's fields as a broker stores them (without an id and without the blank line that
/// ends the event), and the publisher's id: `None` when the event has none or an empty one
/// (the position is then the id), [`PublishError::InvalidId`] when a broker cannot carry it.
#[cfg(feature = "_broker")]
fn fields_of(event: Event) -> Result<(bytes::Bytes, Option<Box<str>>), PublishError> {
    let event = event.encode();
    let id = match event.id().filter(|id| !id.is_empty()) {
        Some(id) if entry::publisher_id(id) => Some(id.into()),
        Some(_) => return Err(PublishError::InvalidId),
        None => None,
    };
    let mut fields = event.without_id();
    if fields.ends_with(b"\n") {
        fields.truncate(fields.len() - 1);
    }
    Ok((fields, id))
}

#[cfg(feature = "_broker")]
/// How many entries one replay may read from a broker, in pages of [`PAGE`]: past this, a
/// client is too far behind (or publishers too fast) and the replay is `history-lost`.
const MAX_SCAN: usize = 100_000;
#[cfg(feature = "_broker")]
const PAGE: usize = 1_000;

#[cfg(feature = "_broker")]
/// A subscription on a remote broker: from this process's caches when they cover the
/// `Last-Event-ID`, else from the broker's log, then handed over to live events under the
/// core's order lock with no gap and no duplicate.
async fn subscribe_remote(
    remote: &dyn Remote,
    local: &Arc<Local>,
    selection: &Selection<'_>,
    request: &SubscribeRequest<'_>,
    on_unknown_id: UnknownId,
    access: Option<Arc<dyn PrivateAccess>>,
) -> Result<Subscription, SubscribeError> {
    local
        .ready(remote.timeout())
        .await
        .map_err(|()| SubscribeError::Unavailable)?;
    if !local.config.auto_create
        && !selection.topics.is_empty()
        && !remote.topics_exist(&selection.topics).await?
    {
        return Err(SubscribeError::UnknownTopic);
    }
    let Some(id) = request.last_event_id else {
        let live = Replay::NotRequested;
        return local
            .join_after(selection, request, live, Vec::new(), None, access)
            .map_err(|_| SubscribeError::Unavailable);
    };
    // A position, or a publisher's id (never spelled as a position) the broker's index has.
    let cursor = match entry::position(id) {
        Some(pos) => Some(pos),
        None if entry::publisher_id(id) => remote.find(id).await?,
        None => None,
    };
    // This process's caches. A cursor this process has not delivered yet: only the broker can
    // tell whether it is real (another process may be ahead).
    if let Some(cursor) = cursor.filter(|&cursor| cursor < local.delivered_next()) {
        let cached = Replay::Complete;
        if let Ok(sub) = local.join_after(
            selection,
            request,
            cached,
            Vec::new(),
            Some(cursor),
            access.clone(),
        ) {
            return Ok(sub);
        }
    }
    // The broker's log.
    let keep = Keep {
        selection,
        access: access.as_deref(),
        local,
    };
    let mut backlog = Vec::new();
    // For each backlog entry, the followed topics it is in (see `Keep::extend`).
    let mut owners = Vec::new();
    let mut replay = Replay::Complete;
    let mut through = None;
    let mut more = false;
    if let Some(cursor) = cursor {
        let read = remote.read(Some(cursor), PAGE).await?;
        if read.found {
            through = Some(read.entries.last().map_or(cursor, |(pos, _)| *pos));
            more = read.more;
            if keep.extend(&mut backlog, &mut owners, read.entries) {
                replay = Replay::HistoryLost;
            }
        } else {
            replay = Replay::HistoryLost;
        }
    } else {
        replay = Replay::HistoryLost;
    }
    if through.is_none() && on_unknown_id.newest() > 0 {
        // An unknown id: the newest events (or none), then live.
        through = newest(remote, local, &keep, &mut backlog, &mut owners).await?;
    }
    let mut scanned = 0;
    let mut gave_up = false;
    loop {
        if replay.is_lost() {
            // `owners` runs beside `backlog`, one entry each.
            owners.resize(backlog.len(), None);
            let newest_n = on_unknown_id.newest();
            keep_newest(&mut backlog, newest_n);
            keep_newest(&mut owners, newest_n);
        }
        if !more {
            match local.join_after(selection, request, replay, backlog, through, access.clone()) {
                Ok(sub) => return Ok(sub),
                Err(given_back) => backlog = given_back,
            }
        }
        // The reader has delivered past what was read (or the read was cut): read on.
        let Some(after) = through else {
            return Err(SubscribeError::Unavailable);
        };
        scanned += PAGE;
        if scanned > MAX_SCAN {
            if gave_up {
                // Published faster than a replay can read even the newest: the client comes
                // back later.
                return Err(SubscribeError::Unavailable);
            }
            // Too far behind for one replay: history-lost, then as for an unknown id (the
            // client would be refused again on every retry, further behind each time).
            gave_up = true;
            scanned = 0;
            replay = Replay::HistoryLost;
            backlog.clear();
            owners.clear();
            more = false;
            through = None;
            if on_unknown_id.newest() > 0 {
                through = newest(remote, local, &keep, &mut backlog, &mut owners).await?;
            }
            continue;
        }
        let read = remote.read(Some(after), PAGE).await?;
        if !read.found {
            // Trimmed while this replay read it.
            replay = Replay::HistoryLost;
        }
        more = read.more;
        through = Some(read.entries.last().map_or(after, |(pos, _)| *pos));
        if keep.extend(&mut backlog, &mut owners, read.entries) {
            replay = Replay::HistoryLost;
        }
    }
}

#[cfg(feature = "_broker")]
/// Appends the newest events of the log that `keep` keeps (at most what the histories of the
/// selection's topics hold); the position read through.
async fn newest(
    remote: &dyn Remote,
    local: &Local,
    keep: &Keep<'_>,
    backlog: &mut Vec<(u64, EncodedEvent)>,
    owners: &mut Vec<Option<Vec<Box<str>>>>,
) -> Result<Option<u64>, SubscribeError> {
    let read = remote.read(None, PAGE).await?;
    let through = read.entries.last().map(|(pos, _)| *pos);
    keep.extend(backlog, owners, read.entries);
    let cap = local
        .config
        .history
        .events
        .saturating_mul(keep.selection.len())
        .max(1);
    if backlog.len() > cap {
        let over = backlog.len() - cap;
        backlog.drain(..over);
        owners.drain(..over);
    }
    Ok(through)
}

#[cfg(feature = "_broker")]
/// Which entries of a broker's log a subscription replays.
struct Keep<'a> {
    selection: &'a Selection<'a>,
    access: Option<&'a dyn PrivateAccess>,
    /// For the events shared by every replay (`Local::replayed`).
    local: &'a Local,
}

#[cfg(feature = "_broker")]
impl Keep<'_> {
    /// The followed topics an entry for `names` (`None`: every topic) is in, as far as closes
    /// go: the selected ones; `None` (never dropped by a close) when a pattern may have it
    /// from a topic that stays.
    fn owners(&self, names: Option<&Vec<Box<str>>>) -> Option<Vec<Box<str>>> {
        match names {
            Some(names) => Some(
                names
                    .iter()
                    .filter(|name| self.selection.selects(name))
                    .cloned()
                    .collect(),
            ),
            None if self.selection.patterns.is_empty() => Some(
                self.selection
                    .topics
                    .iter()
                    .map(|&name| name.into())
                    .collect(),
            ),
            None => None,
        }
    }

    /// Appends the entries this subscription gets, and in `owners` the followed topics each is
    /// in (`None`: kept whatever closes); `true` when a close of one of its topics took events
    /// with it (its final event, or events since the cursor). A close
    /// drops what came before in the closed topic (a topic made again cannot replay the old
    /// one's events, as in memory), but not an event also in a followed topic still open.
    fn extend(
        &self,
        backlog: &mut Vec<(u64, EncodedEvent)>,
        owners: &mut Vec<Option<Vec<Box<str>>>>,
        entries: Vec<(u64, entry::Entry)>,
    ) -> bool {
        let mut closed = false;
        for (pos, entry) in entries {
            let names = match &entry.targets {
                Targets::All => None,
                Targets::Topics(names) => Some(names),
            };
            let selected =
                names.is_none_or(|names| names.iter().any(|name| self.selection.selects(name)));
            if !selected {
                continue;
            }
            if entry.close {
                // What came before went with the topic (a topic made again cannot replay the
                // old one's events, as in memory), unless a followed topic still open has it;
                // the final event was for the old one's subscribers. Lost only if something
                // was dropped (a topic closed with nothing since the cursor loses nothing).
                let before = backlog.len();
                let gone = names.map_or(&[][..], |names| &names[..]);
                owners.resize(backlog.len(), None);
                let mut kept = 0;
                for i in 0..backlog.len() {
                    if let Some(in_topics) = &mut owners[i] {
                        in_topics.retain(|name| !gone.contains(name));
                        if in_topics.is_empty() {
                            continue;
                        }
                    }
                    backlog.swap(kept, i);
                    owners.swap(kept, i);
                    kept += 1;
                }
                backlog.truncate(kept);
                owners.truncate(kept);
                closed |= kept < before || entry.fields.is_some();
                continue;
            }
            let audience = entry
                .private
                .then(|| Arc::new(names.cloned().unwrap_or_default()));
            if !visible(self.access, audience.as_ref()) {
                continue;
            }
            let Some(event) = entry
                .fields
                .as_deref()
                .and_then(|f| self.local.replayed(pos, f, entry.id.as_deref()))
            else {
                continue;
            };
            backlog.push((pos, event));
            owners.push(self.owners(names));
        }
        closed
    }
}
