//! One topic: its history and its live ring, behind one lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::{
    PrivateAccess,
    auth::visible,
    recv::{Item, LiveReceiver, Ring},
};
use crate::{
    EncodedEvent,
    replay::{History, Limits, Replay, Stored, UnknownId, keep_newest},
};

pub(super) struct Topic {
    pub(super) name: Box<str>,
    state: Mutex<TopicState>,
}

impl Topic {
    /// A new open topic. Every id this hub issued before `floor` is unknown to it.
    ///
    /// Positions are the in-memory hub's sequence numbers, or a broker's positions.
    pub(super) fn new(name: &str, capacity: usize, floor: u128, remote: bool) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new(TopicState {
                ring: Some(Ring::new(capacity)),
                history: History::new(floor),
                remote,
                subscribers: 0,
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, TopicState> {
        // No code that can panic runs under this lock, but never turn a poisoned lock into a
        // panic reachable from a request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct TopicState {
    /// The live ring; `None` once the topic is closed or removed (its receivers then drain
    /// and end).
    ring: Option<Ring>,
    history: History,
    /// Fed by a broker reader: the history is only a cache of the broker's, and the topic is
    /// idle as soon as it has no subscriber.
    remote: bool,
    pub(super) subscribers: usize,
}

/// What a subscriber gets when it joins a topic.
pub(super) struct Joined {
    pub(super) receiver: LiveReceiver,
    pub(super) replay: Replay,
    pub(super) backlog: Vec<EncodedEvent>,
}

impl TopicState {
    pub(super) fn is_open(&self) -> bool {
        self.ring.is_some()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.subscribers == 0 && (self.remote || self.history.is_empty())
    }

    /// One past the newest position appended, if anything ever was.
    pub(super) fn next_if_used(&self) -> Option<u128> {
        self.history.next_if_used()
    }

    /// Whether every entry after position `pos` that was appended is still here.
    pub(super) fn covers_after(&self, pos: u128) -> bool {
        self.history.covers_after(pos)
    }

    /// The retained entries after position `pos`, oldest first.
    pub(super) fn entries_after(&self, pos: u128) -> impl Iterator<Item = Stored<'_>> {
        self.history.entries_after(pos)
    }

    /// The position of the oldest retained event whose id is `id`.
    pub(super) fn position_of(&self, id: &str) -> Option<u128> {
        self.history.position_of(id)
    }

    /// Hands `item` to the live subscribers only, without keeping it for replay (what
    /// [`push`](Self::push) does after appending it); how many receivers it reached.
    pub(super) fn send_live(&self, item: Item) -> usize {
        self.ring.as_ref().map_or(0, |ring| ring.send(item))
    }

    /// A new receiver of the live ring (`None` once the topic is closed).
    fn receiver(&self) -> Option<LiveReceiver> {
        Some(self.ring.as_ref()?.receiver())
    }

    /// Registers a live cursor with `backlog` as its replay (taken by the caller, under this
    /// lock, so nothing appended from now on is missed).
    pub(super) fn join_with(
        &mut self,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
    ) -> Option<Joined> {
        let receiver = self.receiver()?;
        self.subscribers += 1;
        Some(Joined {
            receiver,
            replay,
            backlog,
        })
    }

    #[cfg(test)]
    pub(super) fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Appends `event` (taking `seq`) to the history and sends it to the live ring: both under
    /// the caller's lock, so a joining subscriber sees it in exactly one of the two.
    #[cfg(test)]
    pub(super) fn push(&mut self, seq: u128, event: &EncodedEvent, limits: &Limits, now: Instant) {
        self.push_item(&Item::new(seq, event.clone()), limits, now);
    }

    /// [`push`](Self::push) for an item that may be private.
    pub(super) fn push_item(&mut self, item: &Item, limits: &Limits, now: Instant) {
        self.history
            .push_for(item.pos(), &item.event, item.audience.as_ref(), limits, now);
        self.send_live(item.clone());
    }

    /// Drops the oldest entries until the history is within `limits`.
    pub(super) fn evict(&mut self, limits: &Limits, now: Instant) {
        self.history.evict(limits, now);
    }

    /// Events before `floor` were missed (a broker's gap): a new ring (the subscribers of the
    /// old one end after what it holds), and nothing before `floor` is covered.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn restart(&mut self, floor: u128, capacity: usize) {
        if self.ring.is_some() {
            self.ring = Some(Ring::new(capacity));
        }
        self.history.raise_floor(floor);
    }

    /// How many events the ring holds that its slowest subscriber has not read.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn queued(&self) -> usize {
        self.ring.as_ref().map_or(0, Ring::queued)
    }

    /// Closes the topic: its subscribers get what is already in the ring, then their streams end.
    pub(super) fn close(&mut self) {
        self.ring = None;
        self.history.clear();
    }

    /// Registers a live cursor and takes the replay backlog, both under the caller's lock.
    ///
    /// `own_seq` is `Some(seq)` when `last_event_id` is in this hub's id format (epoch matches);
    /// `issued` is the next sequence number the hub would hand out.
    pub(super) fn join(
        &mut self,
        last_event_id: Option<&str>,
        own_seq: Option<u128>,
        issued: u128,
        on_unknown_id: UnknownId,
        access: Option<&dyn PrivateAccess>,
    ) -> Option<Joined> {
        let receiver = self.receiver()?;
        let visible =
            |stored: Stored<'_>| visible(access, stored.audience).then(|| stored.event.clone());
        let (replay, backlog) = match last_event_id {
            None => (Replay::NotRequested, Vec::new()),
            Some(id) => match self.resume_after(id, own_seq, issued) {
                Some(after) => (Replay::Complete, after.filter_map(visible).collect()),
                None => {
                    let mut backlog: Vec<_> = match on_unknown_id.newest() {
                        0 => Vec::new(),
                        _ => self.history.entries().filter_map(visible).collect(),
                    };
                    keep_newest(&mut backlog, on_unknown_id.newest());
                    (Replay::HistoryLost, backlog)
                }
            },
        };
        self.subscribers += 1;
        Some(Joined {
            receiver,
            replay,
            backlog,
        })
    }

    /// The retained entries after `id`, or `None` when `id` is unknown.
    fn resume_after(
        &self,
        id: &str,
        own_seq: Option<u128>,
        issued: u128,
    ) -> Option<Box<dyn Iterator<Item = Stored<'_>> + '_>> {
        match own_seq {
            // One of ours: everything after it is retained when it is at most one behind the
            // oldest retained entry (the floor covers ids from a removed topic of this name).
            Some(seq) => (seq < issued && self.history.covers_after(seq))
                .then(|| Box::new(self.history.entries_after(seq)) as Box<dyn Iterator<Item = _>>),
            // A publisher's own id: exact match, its first retained use.
            None => Some(Box::new(self.history.entries_after_id(id)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Event;

    const LIMITS: Limits = Limits {
        events: 3,
        bytes: 1 << 20,
        age: Duration::from_secs(60),
    };

    fn ev(id: &str) -> EncodedEvent {
        Event::new().id(id).data("x").encode()
    }

    fn ids(joined: &Joined) -> Vec<&str> {
        joined.backlog.iter().map(|e| e.id().unwrap()).collect()
    }

    #[test]
    fn resume_by_seq_and_floor() {
        let topic = Topic::new("t", 8, 10, false);
        let mut state = topic.lock();
        let now = Instant::now();
        for seq in 10..15 {
            state.push(seq, &ev(&format!("e-{seq}")), &LIMITS, now);
        }
        // Retained: 12, 13, 14; floor is 12.
        assert_eq!(state.history_len(), 3);
        let j = state
            .join(Some("e-11"), Some(11), 15, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(j.replay, Replay::Complete);
        assert_eq!(ids(&j), ["e-12", "e-13", "e-14"]);
        let j = state
            .join(Some("e-14"), Some(14), 15, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(j.replay, Replay::Complete);
        assert!(j.backlog.is_empty());
        for (seq, replay) in [(10, Replay::HistoryLost), (15, Replay::HistoryLost)] {
            let j = state
                .join(Some("x"), Some(seq), 15, UnknownId::SendHistory, None)
                .unwrap();
            assert_eq!(j.replay, replay, "{seq}");
            assert_eq!(ids(&j), ["e-12", "e-13", "e-14"]);
        }
        let j = state
            .join(None, None, 15, UnknownId::SendHistory, None)
            .unwrap();
        assert_eq!(j.replay, Replay::NotRequested);
        assert!(j.backlog.is_empty());
        assert_eq!(state.subscribers, 5);
    }

    #[test]
    fn resume_by_exact_publisher_id() {
        let topic = Topic::new("t", 8, 0, false);
        let mut state = topic.lock();
        let now = Instant::now();
        for (seq, id) in ["a", "b", "a", "c"].into_iter().enumerate() {
            state.push(seq as u128, &ev(id), &LIMITS, now);
        }
        // Retained b, a, c; the newest "a" wins.
        let j = state
            .join(Some("a"), None, 4, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(ids(&j), ["c"]);
        let j = state
            .join(Some("b"), None, 4, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(ids(&j), ["a", "c"]);
        let j = state
            .join(Some("zz"), None, 4, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(j.replay, Replay::HistoryLost);
        assert!(j.backlog.is_empty());
    }

    #[test]
    fn empty_history_keeps_latest_recoverable() {
        let limits = Limits {
            events: 0,
            ..LIMITS
        };
        let topic = Topic::new("t", 8, 0, false);
        let mut state = topic.lock();
        state.push(0, &ev("e-0"), &limits, Instant::now());
        state.push(1, &ev("e-1"), &limits, Instant::now());
        assert_eq!(state.history_len(), 0);
        let j = state
            .join(Some("e-1"), Some(1), 2, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(j.replay, Replay::Complete);
        let j = state
            .join(Some("e-0"), Some(0), 2, UnknownId::LiveOnly, None)
            .unwrap();
        assert_eq!(j.replay, Replay::HistoryLost);
    }

    #[test]
    fn closed_topic_refuses_join() {
        let topic = Topic::new("t", 8, 0, false);
        let mut state = topic.lock();
        state.close();
        assert!(!state.is_open());
        assert!(
            state
                .join(None, None, 0, UnknownId::LiveOnly, None)
                .is_none()
        );
    }
}
