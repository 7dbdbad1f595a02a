//! One bounded history of encoded events, by position: a hub topic's and a [`ReplayLog`]'s.
//!
//! [`ReplayLog`]: super::ReplayLog

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::EncodedEvent;

/// The bounds of a history: events, encoded bytes, age. The oldest entries go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
    pub(crate) age: Duration,
}

impl Limits {
    /// 1000 events, 1 MiB, one hour: the defaults of the hub's topics and of replay logs.
    pub(crate) const DEFAULT: Self = Self {
        events: 1000,
        bytes: 1024 * 1024,
        age: Duration::from_secs(3600),
    };
}

/// The topics of a private event: only subscriptions allowed to see one of them receive it
/// (see the hub's `PrivateAccess`). Public events have none.
/// (A thin `Arc` of a `Vec`: every ring slot holds one, so 8 bytes rather than 16.)
pub(crate) type Audience = Arc<Vec<Box<str>>>;

/// One retained event, as a history hands it out.
pub(crate) struct Stored<'a> {
    pub(crate) pos: u128,
    pub(crate) event: &'a EncodedEvent,
    pub(crate) audience: Option<&'a Audience>,
}

/// Encoded events in increasing position order, bounded by [`Limits`].
///
/// Positions are `u128`: the in-memory hub's sequence numbers, a broker's packed ids, or a
/// log's record count, so every user orders the same way. The history knows the oldest
/// position it still covers (`floor`): every entry at or after it that was pushed is still here.
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Every entry with `pos >= floor` that was ever pushed is still in `entries`.
    floor: u128,
    /// One past the position of the newest entry pushed (`floor` while there is none).
    next: u128,
    /// Whether anything was ever pushed.
    used: bool,
}

struct Entry {
    pos: u128,
    at: Instant,
    event: EncodedEvent,
    audience: Option<Audience>,
}

impl History {
    /// An empty history; positions before `floor` are not covered.
    pub(crate) fn new(floor: u128) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            floor,
            next: floor,
            used: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One past the newest position pushed.
    #[cfg(test)]
    pub(crate) fn next(&self) -> u128 {
        self.next
    }

    /// One past the newest position pushed, if anything ever was.
    pub(crate) fn next_if_used(&self) -> Option<u128> {
        self.used.then_some(self.next)
    }

    /// Whether every entry after position `pos` that was pushed is still here.
    pub(crate) fn covers_after(&self, pos: u128) -> bool {
        pos.saturating_add(1) >= self.floor
    }

    /// Appends `event` at `pos` (greater than every position before) and applies `limits`.
    pub(crate) fn push(&mut self, pos: u128, event: &EncodedEvent, limits: &Limits, now: Instant) {
        self.push_for(pos, event, None, limits, now);
    }

    /// [`push`](Self::push) for an event that only `audience` may see (`None`: public).
    pub(crate) fn push_for(
        &mut self,
        pos: u128,
        event: &EncodedEvent,
        audience: Option<&Audience>,
        limits: &Limits,
        now: Instant,
    ) {
        self.next = pos.saturating_add(1);
        self.used = true;
        self.entries.push_back(Entry {
            pos,
            at: now,
            event: event.clone(),
            audience: audience.cloned(),
        });
        self.bytes += event.len();
        self.evict(limits, now);
    }

    /// Drops the oldest entries until the history is within `limits`.
    pub(crate) fn evict(&mut self, limits: &Limits, now: Instant) {
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > limits.events
                || self.bytes > limits.bytes
                || now.saturating_duration_since(front.at) > limits.age;
            if !over {
                break;
            }
            self.floor = front.pos.saturating_add(1);
            self.bytes -= front.event.len();
            self.entries.pop_front();
        }
    }

    /// Positions before `floor` are no longer covered (events were missed): the entries
    /// before it go.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(crate) fn raise_floor(&mut self, floor: u128) {
        while let Some(front) = self.entries.front() {
            if front.pos >= floor {
                break;
            }
            self.bytes -= front.event.len();
            self.entries.pop_front();
        }
        self.floor = self.floor.max(floor);
        self.next = self.next.max(floor);
    }

    /// Forgets every entry (positions before the next one are no longer covered).
    pub(crate) fn clear(&mut self) {
        self.entries = VecDeque::new();
        self.bytes = 0;
        self.floor = self.next;
    }

    /// The retained events after position `pos`, oldest first.
    #[cfg(test)]
    pub(crate) fn after(&self, pos: u128) -> impl Iterator<Item = &EncodedEvent> {
        let from = self.entries.partition_point(|e| e.pos <= pos);
        self.starting_at(from)
    }

    /// The retained entries after position `pos`, oldest first.
    pub(crate) fn entries_after(&self, pos: u128) -> impl Iterator<Item = Stored<'_>> {
        let from = self.entries.partition_point(|e| e.pos <= pos);
        self.stored_from(from)
    }

    /// The retained entries after the oldest one whose id is `id` (an id used twice resumes
    /// after its first use: duplicates rather than a gap, as on the brokers), or `None` when
    /// none has it.
    pub(crate) fn entries_after_id<'a>(
        &'a self,
        id: &str,
    ) -> Option<impl Iterator<Item = Stored<'a>> + use<'a>> {
        let at = self.entries.iter().position(|e| e.event.id() == Some(id))?;
        Some(self.stored_from(at + 1))
    }

    /// Every retained entry, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Stored<'_>> {
        self.stored_from(0)
    }

    fn stored_from(&self, from: usize) -> impl Iterator<Item = Stored<'_>> {
        self.entries.range(from..).map(|e| Stored {
            pos: e.pos,
            event: &e.event,
            audience: e.audience.as_ref(),
        })
    }

    /// The position of the oldest retained event whose id is `id`.
    pub(crate) fn position_of(&self, id: &str) -> Option<u128> {
        self.entries
            .iter()
            .find(|e| e.event.id() == Some(id))
            .map(|e| e.pos)
    }

    /// The retained events after the oldest one whose id is `id`, or `None` when none has it.
    pub(crate) fn after_id(&self, id: &str) -> Option<impl Iterator<Item = &EncodedEvent>> {
        let at = self.entries.iter().position(|e| e.event.id() == Some(id))?;
        Some(self.starting_at(at + 1))
    }

    /// Every retained event, oldest first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &EncodedEvent> {
        self.starting_at(0)
    }

    fn starting_at(&self, from: usize) -> impl Iterator<Item = &EncodedEvent> {
        self.entries.range(from..).map(|e| &e.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    const LIMITS: Limits = Limits {
        events: 3,
        ..Limits::DEFAULT
    };

    fn ev(id: &str) -> EncodedEvent {
        Event::new().id(id).data("x").encode()
    }

    fn ids<'a>(events: impl Iterator<Item = &'a EncodedEvent>) -> Vec<&'a str> {
        events.map(|e| e.id().unwrap()).collect()
    }

    #[test]
    fn positions_floor_and_ids() {
        let mut history = History::new(10);
        let now = Instant::now();
        assert!(!history.covers_after(8));
        assert!(history.covers_after(9));
        for pos in 10..15 {
            history.push(pos, &ev(&format!("e-{pos}")), &LIMITS, now);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.next(), 15);
        assert!(history.covers_after(11) && !history.covers_after(10));
        assert_eq!(ids(history.after(11)), ["e-12", "e-13", "e-14"]);
        assert_eq!(ids(history.after(13)), ["e-14"]);
        assert_eq!(ids(history.after_id("e-12").unwrap()), ["e-13", "e-14"]);
        assert!(history.after_id("e-11").is_none());
        assert_eq!(ids(history.all()), ["e-12", "e-13", "e-14"]);
        history.clear();
        assert!(history.is_empty() && !history.covers_after(13) && history.covers_after(14));
    }

    #[test]
    fn an_id_used_twice_resumes_after_its_first_use() {
        let mut history = History::new(0);
        for (pos, id) in ["a", "b", "a", "c"].into_iter().enumerate() {
            history.push(pos as u128, &ev(id), &Limits::DEFAULT, Instant::now());
        }
        // Duplicates rather than a gap (it was the newest use, which skipped "b").
        assert_eq!(ids(history.after_id("a").unwrap()), ["b", "a", "c"]);
        assert_eq!(ids(history.after_id("b").unwrap()), ["a", "c"]);
    }

    #[test]
    fn byte_bound() {
        let limits = Limits {
            bytes: 40,
            ..Limits::DEFAULT
        };
        let mut history = History::new(0);
        for pos in 0..10 {
            let event = Event::new().id(pos.to_string()).data("0123456789"); // 24 bytes
            history.push(pos, &event.encode(), &limits, Instant::now());
        }
        assert_eq!(history.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn age_bound() {
        let limits = Limits {
            age: Duration::from_secs(10),
            ..Limits::DEFAULT
        };
        let mut history = History::new(0);
        history.push(0, &ev("old"), &limits, Instant::now());
        tokio::time::advance(Duration::from_secs(11)).await;
        history.push(1, &ev("new"), &limits, Instant::now());
        assert_eq!(ids(history.all()), ["new"]);
    }
}
