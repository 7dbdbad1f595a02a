//! The hub's local core: topics (history + live ring), the patterns' rings, the order lock,
//! ids, client addressing, counts and subscriptions. It knows no broker: the in-memory broker
//! publishes into it directly (positions from its own sequence), a remote broker's reader
//! delivers into it through a `broker::Feed` (positions from the broker's log).

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    io::Write as _,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::{sync::watch, time::Instant};

#[cfg(feature = "_broker")]
use super::broker::entry::Targets;
use super::{
    Authorizer, HubStats, Matcher, PrivateAccess, PublishError, SubscribeError, SubscribeRequest,
    Subscription, auth,
    builder::Config,
    merge::{Merge, Owner, Source},
    recv::{Item, Recv, Ring},
    select::Selection,
    topic::{self, Topic},
};
use crate::{
    EncodedEvent, Event,
    replay::{Replay, UnknownId, keep_newest},
};

/// The local core of a hub (see the module docs).
pub(super) struct Local {
    pub(super) config: Config,
    pub(super) authorizer: Arc<dyn Authorizer>,
    /// The epoch part of the ids an in-memory hub issues.
    epoch: Box<str>,
    /// Fed by a remote broker: positions are the broker's, topics are caches of its log.
    remote: bool,
    /// The next position: the next sequence number (in memory), or one past the newest
    /// position delivered (remote).
    seq: AtomicU64,
    /// In memory: one past the newest event of every topic removed so far (0: none with
    /// events), the floor of topics made from now on.
    lost_below: AtomicU64,
    pub(super) topics: Mutex<HashMap<Box<str>, Arc<Topic>>>,
    /// Taken around every ordered push (assigning a position and handing the event to its
    /// topics and patterns) and every subscription to several rings: the order lock (see
    /// `merge.rs`). Lock order: this, then the topic map, then a topic.
    order: Mutex<Patterns>,
    clients: Mutex<HashMap<Box<str>, Client>>,
    /// The next [`Client::generation`].
    client_generation: AtomicU64,
    subscribers: AtomicUsize,
    published: AtomicU64,
    slow_disconnects: AtomicU64,
    forbidden: AtomicU64,
    gaps: AtomicU64,
    /// Remote: events read from the broker for replays, encoded once and shared by every
    /// replay that needs them (bounded by `history.bytes`).
    #[cfg(feature = "_broker")]
    replayed: Mutex<Replayed>,
    /// Remote: whether the reader knows where the log starts (subscriptions wait for it).
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    ready: watch::Sender<bool>,
    /// Remote: the broker's background tasks were started.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    started: OnceLock<()>,
    /// The presence registry, made on first use ([`Hub::presence`](super::Hub::presence)).
    pub(super) presence: OnceLock<super::presence::Presence>,
}

/// Events read from a broker for replays, by position, oldest dropped first.
#[cfg(feature = "_broker")]
#[derive(Default)]
struct Replayed {
    events: std::collections::BTreeMap<u64, EncodedEvent>,
    bytes: usize,
}

/// How a pushed event gets its position.
pub(super) enum Stamp {
    /// The next of this hub's sequence, with an `<epoch>-<seq>` id unless it has one.
    Next(Event),
    /// A broker's position, already encoded with its id.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    At(u64, EncodedEvent),
}

/// The connections of one client id.
struct Client {
    sender: Ring,
    connections: usize,
    /// Which registration of the id this is: a subscription of an earlier one (cut by
    /// [`Local::disconnect_client`]) must not count itself out of a later one.
    generation: u64,
}

/// The live rings of the patterns that have subscribers, by key.
#[derive(Default)]
struct Patterns {
    rings: HashMap<Box<str>, PatternRing>,
    /// The number of the next ring made.
    made: u64,
}

struct PatternRing {
    /// Which ring this is (its subscribers leave this one, not one made later under its key).
    id: u64,
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A hard-to-guess number, different for every hub (no extra dependency: `RandomState` is
/// seeded from the OS, mixed with the time and a counter).
pub(crate) fn new_epoch() -> u64 {
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
pub(super) struct IdBuf {
    buf: [u8; 64],
    len: usize,
}

impl IdBuf {
    pub(super) fn new(epoch: &str, seq: u64) -> Self {
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

/// A backlog of replayed events with their positions.
#[cfg(feature = "_broker")]
pub(super) type Backlog = Vec<(u64, EncodedEvent)>;

impl Local {
    pub(super) fn new(config: Config, authorizer: Arc<dyn Authorizer>, remote: bool) -> Self {
        Self {
            config,
            authorizer,
            epoch: format!("{:x}", new_epoch()).into(),
            remote,
            // From 1: position 0 means "not ordered" (see `recv::Item`).
            seq: AtomicU64::new(1),
            lost_below: AtomicU64::new(0),
            topics: Mutex::new(HashMap::new()),
            order: Mutex::default(),
            clients: Mutex::new(HashMap::new()),
            client_generation: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            slow_disconnects: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            #[cfg(feature = "_broker")]
            replayed: Mutex::default(),
            ready: watch::Sender::new(!remote),
            started: OnceLock::new(),
            presence: OnceLock::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn epoch(&self) -> &str {
        &self.epoch
    }

    pub(super) fn stats(&self) -> HubStats {
        HubStats {
            topics: self.topic_count(),
            subscribers: self.subscribers.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            slow_disconnects: self.slow_disconnects.load(Ordering::Relaxed),
            forbidden: self.forbidden.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
        }
    }

    pub(super) fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }

    pub(super) fn total_subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub(super) fn count_forbidden(&self) {
        self.forbidden.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn subscriber_count(&self, topic: &str) -> usize {
        let topic = lock(&self.topics).get(topic).cloned();
        topic.map_or(0, |topic| topic.lock().subscribers)
    }

    pub(super) fn client_connections(&self, client_id: &str) -> usize {
        lock(&self.clients)
            .get(client_id)
            .map_or(0, |client| client.connections)
    }

    pub(super) fn topic_names(&self) -> Vec<String> {
        lock(&self.topics)
            .keys()
            .map(|name| name.to_string())
            .collect()
    }

    /// Whether a topic that does not exist here is made on demand: always with a broker (the
    /// local topics are caches of its log; the broker checks existence).
    fn creates(&self) -> bool {
        self.config.auto_create || self.remote
    }

    fn stamp(&self, stamp: Stamp) -> (u64, EncodedEvent) {
        match stamp {
            Stamp::Next(event) => {
                let seq = self.next_seq();
                (seq, self.encode(event, seq))
            }
            Stamp::At(pos, event) => {
                // Under the order lock, before any topic is looked up: a topic made from now
                // on starts after this position (see `new_topic`).
                self.seq.fetch_max(pos.saturating_add(1), Ordering::AcqRel);
                (pos, event)
            }
        }
    }

    // ----- publishing (the in-memory broker) and delivering (a remote broker's reader) -----

    /// Pushes into one topic (created on demand).
    pub(super) fn publish_one(
        &self,
        topic: &str,
        stamp: Stamp,
    ) -> Result<EncodedEvent, PublishError> {
        let now = Instant::now();
        let order = lock(&self.order);
        let item = self
            .with_open_topic(topic, self.creates(), |_, state| {
                let (pos, encoded) = self.stamp(stamp);
                let item = Item::new(u128::from(pos), encoded);
                state.push_item(&item, &self.config.history, now);
                item
            })
            .ok_or(PublishError::UnknownTopic)?;
        order.send(&[topic], &item);
        drop(order);
        self.count_published();
        Ok(item.event)
    }

    /// Pushes into several topics under one position (created on demand).
    pub(super) fn publish_many(
        &self,
        topics: &[&str],
        stamp: Stamp,
        private: bool,
    ) -> Result<EncodedEvent, PublishError> {
        let mut names = topics.to_vec();
        names.sort_unstable();
        names.dedup();
        let now = Instant::now();
        let order = lock(&self.order);
        let mut stamp = Some(stamp);
        loop {
            let found: Option<Vec<Arc<Topic>>> = {
                let mut map = lock(&self.topics);
                names
                    .iter()
                    .map(|name| match map.get(*name) {
                        Some(topic) => Some(Arc::clone(topic)),
                        None if self.creates() => {
                            let topic = self.new_topic(name);
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
                let Some(stamp) = stamp.take() else {
                    return Err(PublishError::Unavailable);
                };
                let (pos, encoded) = self.stamp(stamp);
                let mut item = Item::new(u128::from(pos), encoded);
                if private {
                    let topics = names.iter().map(|&name| name.into()).collect();
                    item.audience = Some(Arc::new(topics));
                }
                for state in &mut states {
                    state.push_item(&item, &self.config.history, now);
                }
                drop(states);
                order.send(&names, &item);
                drop(order);
                self.count_published();
                return Ok(item.event);
            }
            // One was closed between the lookup and the lock: look them up again.
        }
    }

    /// Pushes into every topic under one position; how many topics it went to.
    pub(super) fn broadcast(&self, stamp: Stamp) -> usize {
        let now = Instant::now();
        let order = lock(&self.order);
        // One position, and so one id, in every topic: a subscription to several sees it once,
        // and a client that saw it resumes after it (without an id it would come again on
        // every resume from the id before it).
        let (pos, encoded) = self.stamp(stamp);
        let item = Item::new(u128::from(pos), encoded);
        let topics: Vec<Arc<Topic>> = lock(&self.topics).values().cloned().collect();
        let mut reached = Vec::with_capacity(topics.len());
        for topic in &topics {
            let mut state = topic.lock();
            if state.is_open() {
                state.push_item(&item, &self.config.history, now);
                reached.push(&*topic.name);
            }
        }
        if self.remote {
            // A broker's replay gives a broadcast to every selection: so do live patterns.
            for pattern in order.rings.values() {
                pattern.ring.send(item.clone());
            }
        } else {
            // To the patterns that match a topic it went into, as a replay would find it.
            order.send(&reached, &item);
        }
        let reached = reached.len();
        drop(order);
        if !self.remote {
            self.count_published();
        }
        reached
    }

    /// Sends to this process's connections of `client_id` (live only, no id); how many.
    pub(super) fn send_to(&self, client_id: &str, event: EncodedEvent) -> usize {
        let reached = self.deliver_to_client(client_id, event);
        self.count_published();
        reached
    }

    pub(super) fn create_topic(&self, topic: &str) -> bool {
        let mut topics = lock(&self.topics);
        if topics.contains_key(topic) {
            return false;
        }
        topics.insert(topic.into(), self.new_topic(topic));
        true
    }

    /// Closes `topic` after `final_event`; `false` if there was no such topic here.
    pub(super) fn close_topic(&self, topic: &str, final_event: Option<Stamp>) -> bool {
        let now = Instant::now();
        let order = lock(&self.order);
        let mut topics = lock(&self.topics);
        let Some(removed) = topics.remove(topic) else {
            // A broker's close still moves the position on.
            if let Some(Stamp::At(pos, _)) = final_event {
                self.seq.fetch_max(pos.saturating_add(1), Ordering::AcqRel);
            }
            return false;
        };
        let mut state = removed.lock();
        drop(topics);
        if let Some(stamp) = final_event {
            let counted = matches!(stamp, Stamp::Next(_));
            let (pos, encoded) = self.stamp(stamp);
            let item = Item::new(u128::from(pos), encoded);
            state.push_item(&item, &self.config.history, now);
            order.send(&[topic], &item);
            if counted {
                self.count_published();
            }
        }
        self.close_state(&mut state);
        true
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A new topic; ids issued before it are unknown to it.
    fn new_topic(&self, name: &str) -> Arc<Topic> {
        // A new topic holds every event of its name after the last one a removed topic may
        // have taken with it; ids before that are not covered (an earlier topic of the same
        // name, closed with events, may have had more after them).
        //
        // With a broker, a topic is a cache of the log from the next position on (the reader
        // moves `seq` on before it looks topics up, under the order lock).
        let floor = if self.remote {
            self.seq.load(Ordering::Acquire)
        } else {
            self.lost_below.load(Ordering::Acquire)
        };
        Arc::new(Topic::new(
            name,
            self.config.subscriber_capacity,
            u128::from(floor),
            self.remote,
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
    pub(super) fn own_seq(&self, id: &str) -> Option<u64> {
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

    /// A subscription to several topics and patterns, in memory: under the order lock, so no
    /// event is pushed while the backlogs are taken and the rings joined.
    pub(super) fn subscribe_many(
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
            let take_all = cursor.is_none() && on_unknown_id.newest() > 0;
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
        self.join_patterns(&mut order, selection, &mut sources);
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
        if replay.is_lost() {
            keep_newest(&mut entries, on_unknown_id.newest());
        }
        let through = entries.last().map_or(0, |(pos, _)| *pos);
        let backlog = entries.into_iter().map(|(_, event)| event).collect();
        Ok(self.merged(
            selection, request, sources, through, replay, backlog, access,
        ))
    }

    fn join_patterns(
        &self,
        order: &mut Patterns,
        selection: &Selection<'_>,
        sources: &mut Vec<Source>,
    ) {
        for pattern in &selection.patterns {
            let Patterns { rings, made } = order;
            let ring = rings.entry(pattern.key().into()).or_insert_with(|| {
                *made += 1;
                PatternRing {
                    id: *made,
                    matcher: Arc::clone(pattern),
                    ring: Ring::new(self.config.subscriber_capacity),
                    subscribers: 0,
                }
            });
            ring.subscribers += 1;
            sources.push(Source::new(
                Recv::unbudgeted(ring.ring.receiver()),
                Owner::Pattern(pattern.key().into(), ring.id),
            ));
        }
    }

    /// Gives back the places of `sources` (a subscription that was not made after all).
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    fn give_back(&self, sources: Vec<Source>) {
        for source in sources {
            match source.owner {
                Owner::Topic(topic) => self.leave_topic(&topic),
                Owner::Pattern(key, ring) => self.leave_pattern(&key, ring),
            }
        }
    }

    /// The subscription over several rings: counted, and addressable by its client id.
    #[allow(clippy::too_many_arguments)]
    fn merged(
        self: &Arc<Self>,
        selection: &Selection<'_>,
        request: &SubscribeRequest<'_>,
        sources: Vec<Source>,
        through: u128,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Subscription {
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
        Subscription::merged(
            Arc::clone(self),
            label,
            Merge::new(sources, through),
            replay,
            backlog,
            client,
        )
        .with_access(access)
    }

    pub(super) fn subscribe_one(
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
            .subscription(
                request,
                topic,
                joined.replay,
                joined.backlog,
                joined.receiver,
            )
            .with_access(access))
    }

    /// The subscription for a cursor `joined` to `topic`: counted, and addressable by its
    /// client id.
    fn subscription(
        self: &Arc<Self>,
        request: &SubscribeRequest<'_>,
        topic: Arc<Topic>,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        receiver: crate::hub::recv::LiveReceiver,
    ) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let client = request
            .client_id
            .map(|id| (Box::<str>::from(id), self.join_client(id)));
        Subscription::new(
            Arc::clone(self),
            topic,
            replay,
            backlog,
            Recv::live(receiver),
            client,
        )
    }

    /// Counts a connection of `client_id`: its receiver of the id's events, and the
    /// registration it joined.
    pub(super) fn join_client(&self, client_id: &str) -> (Recv, u64) {
        let mut clients = lock(&self.clients);
        let client = clients.entry(client_id.into()).or_insert_with(|| Client {
            sender: Ring::new(self.config.client_capacity),
            connections: 0,
            generation: self.client_generation.fetch_add(1, Ordering::Relaxed),
        });
        client.connections += 1;
        (Recv::live(client.sender.receiver()), client.generation)
    }

    pub(super) fn leave_client(&self, client_id: &str, generation: u64) {
        let mut clients = lock(&self.clients);
        if let Some(client) = clients.get_mut(client_id) {
            if client.generation != generation {
                return;
            }
            client.connections = client.connections.saturating_sub(1);
            if client.connections == 0 {
                clients.remove(client_id);
            }
        }
    }

    /// Ends this process's subscriptions of `client_id` (their client channel closes, and a
    /// subscription whose client channel closes ends); how many there were.
    pub(super) fn disconnect_client(&self, client_id: &str) -> usize {
        lock(&self.clients)
            .remove(client_id)
            .map_or(0, |client| client.connections)
    }

    /// A subscription has ended.
    pub(super) fn count_leave(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }

    /// A subscriber of ring `id` of the pattern with this key is gone; the ring goes with its
    /// last one.
    pub(super) fn leave_pattern(&self, key: &str, id: u64) {
        let mut order = lock(&self.order);
        if let Some(ring) = order.rings.get_mut(key).filter(|ring| ring.id == id) {
            ring.subscribers = ring.subscribers.saturating_sub(1);
            if ring.subscribers == 0 {
                order.rings.remove(key);
            }
        }
    }

    /// A subscriber of `topic` is gone; removes the topic when it is left with neither
    /// subscribers nor history.
    pub(super) fn leave_topic(&self, topic: &Arc<Topic>) {
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
    pub(super) fn remove_if_idle(&self, topic: &Arc<Topic>) {
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

    pub(super) fn count_slow_disconnect(&self) {
        self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        crate::metrics::slow_disconnect();
    }

    pub(super) fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        crate::metrics::published();
    }

    /// Delivers `event` to this process's connections of `client_id`.
    pub(super) fn deliver_to_client(&self, client_id: &str, event: EncodedEvent) -> usize {
        lock(&self.clients)
            .get(client_id)
            .map_or(0, |client| client.sender.send(Item::unordered(event)))
    }

    /// Closes every topic and pattern; how many topics there were.
    pub(super) fn close_all(&self) -> usize {
        // Lock order: the order lock, then the topic map. Dropping the patterns' rings ends
        // their subscriptions too.
        let mut order = lock(&self.order);
        order.rings.clear();
        let topics = std::mem::take(&mut *lock(&self.topics));
        drop(order);
        for topic in topics.values() {
            self.close_state(&mut topic.lock());
        }
        topics.len()
    }

    /// Applies the age bound and removes idle topics; how many were removed.
    pub(super) fn purge(&self) -> usize {
        let now = Instant::now();
        let mut topics = lock(&self.topics);
        let before = topics.len();
        topics.retain(|_, topic| {
            let mut state = topic.lock();
            state.evict(&self.config.history, now);
            if state.is_idle() {
                self.close_state(&mut state);
                false
            } else {
                true
            }
        });
        before - topics.len()
    }
}

/// What a remote broker's reader and subscriptions need.
#[cfg(feature = "_broker")]
impl Local {
    /// A broker's entry at `pos` for `targets`: into the local topics that exist (they are
    /// caches of the log: a topic made later reads what it missed from the broker) and to
    /// the patterns.
    pub(super) fn deliver(&self, pos: u64, targets: &Targets, event: EncodedEvent, private: bool) {
        let names = match targets {
            Targets::All => {
                self.broadcast(Stamp::At(pos, event));
                return;
            }
            Targets::Topics(names) => names,
        };
        let now = Instant::now();
        let order = lock(&self.order);
        let (pos, event) = self.stamp(Stamp::At(pos, event));
        let mut item = Item::new(u128::from(pos), event);
        if private {
            item.audience = Some(Arc::new(names.clone()));
        }
        let found: Vec<Arc<Topic>> = {
            let map = lock(&self.topics);
            names
                .iter()
                .filter_map(|name| map.get(name).cloned())
                .collect()
        };
        for topic in &found {
            let mut state = topic.lock();
            if state.is_open() {
                state.push_item(&item, &self.config.history, now);
            }
        }
        if !order.rings.is_empty() {
            let names: Vec<&str> = names.iter().map(|name| &**name).collect();
            order.send(&names, &item);
        }
    }

    /// A broker's closing entry at `pos`: the final event (if any), then the topics close.
    pub(super) fn deliver_close(&self, pos: u64, targets: &Targets, event: Option<EncodedEvent>) {
        let Targets::Topics(names) = targets else {
            return;
        };
        {
            let _order = lock(&self.order);
            self.seq.fetch_max(pos.saturating_add(1), Ordering::AcqRel);
        }
        for name in names {
            let stamp = event.as_ref().map(|event| Stamp::At(pos, event.clone()));
            self.close_topic(name, stamp);
        }
    }

    /// Events before `next` were missed: every live ring is replaced (their subscriptions end
    /// after what they hold, and come back with their last id), and no local history covers
    /// anything before `next`.
    pub(super) fn lost(&self, next: u64) {
        let mut order = lock(&self.order);
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.seq.fetch_max(next, Ordering::AcqRel);
        let capacity = self.config.subscriber_capacity;
        for pattern in order.rings.values_mut() {
            pattern.ring = Ring::new(capacity);
        }
        // Under the order lock (lock order: this, the topic map, a topic), so that no resume
        // from the cache can join an old ring between the two steps.
        let topics: Vec<Arc<Topic>> = lock(&self.topics).values().cloned().collect();
        for topic in topics {
            topic.lock().restart(u128::from(next), capacity);
        }
        drop(order);
        tracing::warn!(
            next,
            "hub missed events from its broker; live subscriptions end and resume as history-lost"
        );
    }

    /// Remote: one past the newest position delivered.
    pub(super) fn delivered_next(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Remote: the reader starts after `last`.
    pub(super) fn start_at(&self, last: u64) {
        {
            let _order = lock(&self.order);
            self.seq.fetch_max(last.saturating_add(1), Ordering::AcqRel);
        }
        self.ready.send_replace(true);
    }

    /// The event at broker position `pos` with `fields`, as every replay shares it: encoded
    /// once per process while it is among the last `history.bytes` bytes replayed, so clients
    /// resuming from the broker together hold one copy, not one each.
    pub(super) fn replayed(
        &self,
        pos: u64,
        fields: &[u8],
        id: Option<&str>,
    ) -> Option<EncodedEvent> {
        let mut cache = lock(&self.replayed);
        if let Some(event) = cache.events.get(&pos) {
            return Some(event.clone());
        }
        let event = super::broker::entry::stamp(fields, pos, id)?;
        cache.bytes += event.len();
        cache.events.insert(pos, event.clone());
        while cache.bytes > self.config.history.bytes {
            let Some((_, oldest)) = cache.events.pop_first() else {
                break;
            };
            cache.bytes -= oldest.len();
        }
        Some(event)
    }

    /// Remote: whether the reader is connected (see `Feed::connected`).
    pub(super) fn set_ready(&self, up: bool) {
        self.ready
            .send_if_modified(|ready| std::mem::replace(ready, up) != up);
    }

    /// Remote: runs `start` once (the broker's background tasks).
    pub(super) fn start_remote(&self, start: impl FnOnce()) {
        self.started.get_or_init(start);
    }

    /// Waits until the reader knows where the log starts (remote), at most `timeout`.
    pub(super) async fn ready(&self, timeout: std::time::Duration) -> Result<(), ()> {
        let mut ready = self.ready.subscribe();
        match tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(()),
        }
    }

    /// The most events waiting in any local ring for its slowest subscriber.
    /// A full ring is left out: its slowest subscriber is stalled and will be cut, and waiting
    /// for it would hold up everyone.
    pub(super) fn queued(&self) -> usize {
        let full = self.config.subscriber_capacity.next_power_of_two();
        let order = lock(&self.order);
        let patterns = order
            .rings
            .values()
            .map(|p| p.ring.queued())
            .filter(|&queued| queued < full)
            .max()
            .unwrap_or(0);
        let topics: Vec<Arc<Topic>> = lock(&self.topics).values().cloned().collect();
        drop(order);
        topics
            .iter()
            .map(|topic| topic.lock().queued())
            .filter(|&queued| queued < full)
            .max()
            .unwrap_or(0)
            .max(patterns)
    }

    /// With a broker: joins the live rings of `selection` after `backlog` (read from the
    /// broker, through position `through`), under the order lock. When the reader has
    /// delivered past `through`, the local topics must cover what came after it (then it is
    /// added to the backlog); when they do not (or patterns are followed, which have no local
    /// history), nothing is joined and the backlog is given back: the caller reads on.
    /// `through: None`: live only. `through` must be a position the broker has (this process
    /// may not have delivered it yet: what it delivers up to `through` is skipped).
    pub(super) fn join_after(
        self: &Arc<Self>,
        selection: &Selection<'_>,
        request: &SubscribeRequest<'_>,
        replay: Replay,
        mut backlog: Backlog,
        through: Option<u64>,
        access: Option<Arc<dyn PrivateAccess>>,
    ) -> Result<Subscription, Backlog> {
        let now = Instant::now();
        let mut order = lock(&self.order);
        let next = self.seq.load(Ordering::Acquire);
        let bridge = through.filter(|&through| next > through.saturating_add(1));
        if bridge.is_some() && !selection.patterns.is_empty() {
            return Err(backlog);
        }
        let given = backlog.len();
        let mut sources = Vec::with_capacity(selection.len());
        let mut single = None;
        for name in &selection.topics {
            let joined = self.with_open_topic(name, true, |topic, state| {
                state.evict(&self.config.history, now);
                if let Some(through) = bridge {
                    if !state.covers_after(u128::from(through)) {
                        return Err(Arc::clone(topic));
                    }
                    backlog.extend(
                        state
                            .entries_after(u128::from(through))
                            .filter(|stored| auth::visible(access.as_deref(), stored.audience))
                            .map(|stored| (stored.pos as u64, stored.event.clone())),
                    );
                }
                let joined = state
                    .join_with(Replay::NotRequested, Vec::new())
                    .ok_or_else(|| Arc::clone(topic))?;
                Ok((Arc::clone(topic), joined))
            });
            let Some(Ok((topic, joined))) = joined else {
                drop(order);
                if let Some(Err(made)) = joined {
                    // Made for this subscription, perhaps: not kept without a subscriber.
                    self.remove_if_idle(&made);
                }
                self.give_back(sources);
                if let Some((topic, _)) = single.take() {
                    self.leave_topic(&topic);
                }
                backlog.truncate(given);
                return Err(backlog);
            };
            if selection.single().is_some() {
                single = Some((topic, joined));
            } else {
                sources.push(Source::new(
                    Recv::unbudgeted(joined.receiver),
                    Owner::Topic(topic),
                ));
            }
        }
        self.join_patterns(&mut order, selection, &mut sources);
        drop(order);
        if backlog.len() > given {
            // Two topics of one `publish_many` hold one event: once, in order.
            backlog.sort_by_key(|(pos, _)| *pos);
            backlog.dedup_by_key(|(pos, _)| *pos);
        }
        let last = backlog
            .last()
            .map_or(0, |(pos, _)| *pos)
            .max(through.unwrap_or(0));
        let events = backlog.into_iter().map(|(_, event)| event).collect();
        Ok(match single {
            Some((topic, joined)) => self
                .subscription(request, topic, replay, events, joined.receiver)
                .skip_through(u128::from(last))
                .with_access(access),
            None => self.merged(
                selection,
                request,
                sources,
                u128::from(last),
                replay,
                events,
                access,
            ),
        })
    }
}
