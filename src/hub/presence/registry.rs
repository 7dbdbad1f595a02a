//! The presence state of one process: its own members, and what it knows of every other
//! process's. No I/O and no clock of its own (the caller passes `now`), so every rule is a
//! unit test away.
//!
//! - **Own members** change by [`join`](Registry::join) and [`leave`](Registry::leave); each
//!   change is numbered (`seq`) and announced.
//! - **Other processes** are learnt from their messages. A change that follows the last one
//!   known (`seq + 1`) is applied; anything else (a message lost on the live channel, a process
//!   never heard of) is applied as far as it goes and a snapshot is asked for, which replaces
//!   what was known (the differences become join and leave events). A heartbeat that names a
//!   different count asks for a snapshot too: a lost message is found within one interval.
//! - **Expiry**: a process not heard from within the time to live is gone (crashed, cut off):
//!   its members leave, as [`PresenceChange::Expired`].
// Without a broker there is no other process: only the own members' part is used.
#![cfg_attr(not(feature = "_broker"), allow(dead_code))]

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    MemberInfo, PresenceChange, PresenceEvent,
    wire::{Envelope, Message, PART_BYTES, Wired},
};

/// Another process, as this one knows it.
struct Node {
    /// The changes applied so far (meaningful when `synced`).
    seq: u64,
    /// Whether `members` is that process's state at `seq` (else a snapshot is awaited).
    synced: bool,
    /// When a message of it last came.
    seen: Instant,
    members: BTreeMap<u64, Wired>,
    /// A snapshot being received: its seq, the next part expected, the members so far.
    pending: Option<(u64, u64, Vec<Wired>)>,
    /// When a snapshot was last asked of it: at most one request per interval (a process
    /// whose messages keep arriving out of order would otherwise be asked on every one).
    asked: Option<Instant>,
}

/// One process's presence state.
pub(super) struct Registry {
    me: Arc<str>,
    seq: u64,
    next_member: u64,
    own: BTreeMap<u64, Wired>,
    nodes: HashMap<Arc<str>, Node>,
    ttl: Duration,
}

impl Registry {
    /// An empty registry for the process `me`; other processes expire after `ttl` of silence.
    pub(super) fn new(me: Arc<str>, ttl: Duration) -> Self {
        Self {
            me,
            seq: 0,
            next_member: 0,
            own: BTreeMap::new(),
            nodes: HashMap::new(),
            ttl,
        }
    }

    /// This process's id.
    pub(super) fn me(&self) -> &Arc<str> {
        &self.me
    }

    fn envelope(&self, message: Message) -> Envelope {
        Envelope {
            from: self.me.clone(),
            seq: self.seq,
            message,
        }
    }

    fn info(&self, process: &Arc<str>, wired: &Wired) -> MemberInfo {
        MemberInfo {
            process: process.clone(),
            member: wired.member,
            space: wired.space.clone(),
            key: wired.key.clone(),
            meta: wired.meta.clone(),
            here: Arc::ptr_eq(process, &self.me),
        }
    }

    fn event(
        &self,
        change: PresenceChange,
        member: MemberInfo,
        handled_here: bool,
    ) -> PresenceEvent {
        PresenceEvent {
            change,
            member,
            handled_here,
        }
    }

    /// Adds an own member: its number, the message announcing it, the event.
    pub(super) fn join(
        &mut self,
        space: Arc<str>,
        key: Arc<str>,
        meta: Arc<str>,
    ) -> (u64, Envelope, PresenceEvent) {
        let member = self.next_member;
        self.next_member += 1;
        self.seq += 1;
        let wired = Wired {
            member,
            space,
            key,
            meta,
        };
        let event = self.event(PresenceChange::Joined, self.info(&self.me, &wired), true);
        self.own.insert(member, wired.clone());
        (member, self.envelope(Message::Join(wired)), event)
    }

    /// Removes an own member: the message announcing it and the event (`None`: not a member).
    pub(super) fn leave(&mut self, member: u64) -> Option<(Envelope, PresenceEvent)> {
        let wired = self.own.remove(&member)?;
        self.seq += 1;
        let event = self.event(PresenceChange::Left, self.info(&self.me, &wired), true);
        Some((self.envelope(Message::Leave(member)), event))
    }

    /// "Alive, with `seq` changes."
    pub(super) fn heartbeat(&self) -> Envelope {
        self.envelope(Message::Heartbeat)
    }

    /// Asks every process for its snapshot (a process that starts, or comes back).
    pub(super) fn query_all(&self) -> Envelope {
        self.envelope(Message::Query("".into()))
    }

    /// This process's members, in parts of at most [`PART_BYTES`].
    pub(super) fn snapshot(&self) -> Vec<Envelope> {
        let mut parts = vec![Vec::new()];
        let mut bytes = 0;
        for wired in self.own.values() {
            let size = wired.space.len() + wired.key.len() + wired.meta.len() + 40;
            if bytes + size > PART_BYTES && !parts.last().is_some_and(Vec::is_empty) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(part) = parts.last_mut() {
                part.push(wired.clone());
            }
        }
        let count = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, members)| {
                self.envelope(Message::Snapshot {
                    part: i as u64,
                    last: i + 1 == count,
                    members,
                })
            })
            .collect()
    }

    /// Applies another process's message: the events it makes, and the messages to send back.
    pub(super) fn receive(
        &mut self,
        envelope: Envelope,
        now: Instant,
    ) -> (Vec<PresenceEvent>, Vec<Envelope>) {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        if envelope.from == self.me {
            return (events, replies);
        }
        let from = envelope.from;
        let node = self.nodes.entry(from.clone()).or_insert_with(|| Node {
            seq: 0,
            synced: false,
            seen: now,
            members: BTreeMap::new(),
            pending: None,
            asked: None,
        });
        node.seen = now;
        let mut resync = false;
        let mut changed = Vec::new();
        match envelope.message {
            Message::Heartbeat => {
                if envelope.seq == 0 && node.members.is_empty() {
                    // Never changed anything: nothing to learn.
                    node.synced = true;
                    node.seq = 0;
                } else if !(node.synced && node.seq == envelope.seq) {
                    resync = true;
                }
            }
            // Already in what is known (a snapshot overtook it).
            Message::Join(_) | Message::Leave(_) if node.synced && envelope.seq <= node.seq => {}
            Message::Join(wired) => {
                if !node.synced && node.seq == 0 && node.members.is_empty() && envelope.seq == 1 {
                    // Its first change ever: nothing came before.
                    node.synced = true;
                }
                follow(node, envelope.seq, &mut resync);
                if node.members.insert(wired.member, wired.clone()).is_none() {
                    changed.push((PresenceChange::Joined, wired));
                }
            }
            Message::Leave(member) => {
                follow(node, envelope.seq, &mut resync);
                if let Some(wired) = node.members.remove(&member) {
                    changed.push((PresenceChange::Left, wired));
                }
            }
            Message::Snapshot {
                part,
                last,
                members,
            } => {
                let pending = match node.pending.take() {
                    _ if part == 0 => Some((envelope.seq, 1, members)),
                    Some((seq, next, mut got)) if seq == envelope.seq && next == part => {
                        got.extend(members);
                        Some((seq, next + 1, got))
                    }
                    // A part went missing: the next heartbeat asks again.
                    _ => None,
                };
                match pending {
                    // Older than what was applied since (it was overtaken): dropped.
                    Some((seq, _, _)) if last && node.synced && seq < node.seq => {}
                    Some((seq, _, got)) if last => {
                        let new: BTreeMap<u64, Wired> =
                            got.into_iter().map(|w| (w.member, w)).collect();
                        for (member, wired) in &node.members {
                            if new.get(member) != Some(wired) {
                                changed.push((PresenceChange::Left, wired.clone()));
                            }
                        }
                        for (member, wired) in &new {
                            if node.members.get(member) != Some(wired) {
                                changed.push((PresenceChange::Joined, wired.clone()));
                            }
                        }
                        node.members = new;
                        node.seq = seq;
                        node.synced = true;
                    }
                    other => node.pending = other,
                }
            }
            Message::Query(target) => {
                if target.is_empty() || target == self.me {
                    replies.extend(self.snapshot());
                }
            }
        }
        // At most one request per half interval: heartbeats, an interval apart give or take,
        // each find the limiter open.
        let half = self.ttl / 6;
        let ask = resync
            && self.nodes.get_mut(&from).is_some_and(|node| {
                let due = node
                    .asked
                    .is_none_or(|at| now.saturating_duration_since(at) >= half);
                if due {
                    node.asked = Some(now);
                }
                due
            });
        if ask {
            replies.push(self.envelope(Message::Query(from.clone())));
        }
        for (change, wired) in changed {
            let member = self.info(&from, &wired);
            events.push(self.event(change, member, false));
        }
        (events, replies)
    }

    /// Removes the processes not heard from within the time to live: their members' events.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<PresenceEvent> {
        let ttl = self.ttl;
        let gone: Vec<Arc<str>> = self
            .nodes
            .iter()
            .filter(|(_, node)| now.saturating_duration_since(node.seen) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        let mut removed = Vec::new();
        for id in gone {
            if let Some(node) = self.nodes.remove(&id) {
                removed.push((id, node));
            }
        }
        // Decided after the removal: the lowest id among the processes still alive, leaving out
        // those silent for more than two and a half intervals (a leader that crashed with the
        // expired one would otherwise be deferred to, and expire later, having handled
        // nothing), which leaves half an interval of slack for late heartbeats.
        let interval = ttl / 3;
        let candidate = ttl.saturating_sub(interval / 2);
        let leader = self
            .nodes
            .iter()
            .filter(|(_, node)| now.saturating_duration_since(node.seen) <= candidate)
            .all(|(id, _)| *id > self.me);
        for (id, node) in removed {
            for wired in node.members.values() {
                let member = self.info(&id, wired);
                events.push(self.event(PresenceChange::Expired, member, leader));
            }
        }
        events
    }

    /// The live processes this one knows, itself included.
    pub(super) fn processes(&self) -> Vec<Arc<str>> {
        let mut all: Vec<Arc<str>> = self.nodes.keys().cloned().collect();
        all.push(self.me.clone());
        all.sort();
        all
    }

    /// The members of `space` (every space when `None`), this process's first.
    pub(super) fn members(&self, space: Option<&str>) -> Vec<MemberInfo> {
        let wanted = |wired: &&Wired| space.is_none_or(|s| &*wired.space == s);
        let mut out: Vec<MemberInfo> = self
            .own
            .values()
            .filter(wanted)
            .map(|w| self.info(&self.me, w))
            .collect();
        let mut nodes: Vec<_> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        for (id, node) in nodes {
            out.extend(
                node.members
                    .values()
                    .filter(wanted)
                    .map(|w| self.info(id, w)),
            );
        }
        out
    }
}

/// A change numbered `seq` of a process known up to `node.seq`: in order, or a resync.
fn follow(node: &mut Node, seq: u64, resync: &mut bool) {
    if node.synced && seq == node.seq + 1 {
        node.seq = seq;
    } else {
        node.synced = false;
        *resync = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn registry(me: &str) -> Registry {
        Registry::new(me.into(), TTL)
    }

    /// Delivers `messages` from one registry to another: the events at `to`, and `to`'s
    /// replies.
    fn deliver(
        to: &mut Registry,
        messages: Vec<Envelope>,
        now: Instant,
    ) -> (Vec<PresenceEvent>, Vec<Envelope>) {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        for message in messages {
            // Every message crosses the wire as bytes.
            let message = Envelope::decode(&message.encode()).unwrap();
            let (e, r) = to.receive(message, now);
            events.extend(e);
            replies.extend(r);
        }
        (events, replies)
    }

    fn keys(members: &[MemberInfo]) -> Vec<&str> {
        members.iter().map(MemberInfo::key).collect()
    }

    fn changes(events: &[PresenceEvent]) -> Vec<(PresenceChange, &str, bool)> {
        events
            .iter()
            .map(|e| (e.change(), e.member().key(), e.handled_here()))
            .collect()
    }

    #[test]
    fn joins_and_leaves_in_order_are_applied() {
        let now = Instant::now();
        let (mut a, mut b) = (registry("a"), registry("b"));
        let (alice, join, event) = a.join("room".into(), "alice".into(), "{}".into());
        assert_eq!(
            (event.change(), event.handled_here()),
            (PresenceChange::Joined, true)
        );
        let (events, replies) = deliver(&mut b, vec![a.heartbeat()], now);
        // Heard of `a` with one change it missed: asks for a snapshot.
        assert!(events.is_empty());
        assert_eq!(replies.len(), 1);
        let (_, snapshot) = deliver(&mut a, replies, now);
        let (events, replies) = deliver(&mut b, snapshot, now);
        assert_eq!(changes(&events), [(PresenceChange::Joined, "alice", false)]);
        assert!(replies.is_empty());
        let _ = join;
        let (bob, join, _) = a.join("room".into(), "bob".into(), "{}".into());
        let (events, replies) = deliver(&mut b, vec![join], now);
        assert_eq!(changes(&events), [(PresenceChange::Joined, "bob", false)]);
        assert!(replies.is_empty(), "in order: no resync");
        let (leave, _) = a.leave(alice).unwrap();
        let (events, _) = deliver(&mut b, vec![leave], now);
        assert_eq!(changes(&events), [(PresenceChange::Left, "alice", false)]);
        assert_eq!(keys(&b.members(Some("room"))), ["bob"]);
        assert!(a.leave(alice).is_none(), "once");
        let _ = bob;
        // A heartbeat with the count b knows asks nothing.
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], now);
        assert!(replies.is_empty());
    }

    #[test]
    fn a_lost_message_is_found_by_the_next_heartbeat() {
        let now = Instant::now();
        let (mut a, mut b) = (registry("a"), registry("b"));
        let (_, join, _) = a.join("s".into(), "x".into(), "".into());
        deliver(&mut b, vec![join], now);
        // Unknown process: applied, and a snapshot asked for.
        let (_, lost, _) = a.join("s".into(), "y".into(), "".into());
        drop(lost);
        let (_, z, _) = a.join("s".into(), "z".into(), "".into());
        let (events, replies) = deliver(&mut b, vec![z], now);
        assert_eq!(changes(&events), [(PresenceChange::Joined, "z", false)]);
        assert_eq!(replies.len(), 1, "out of order: resync");
        let (_, snapshot) = deliver(&mut a, replies, now);
        let (events, _) = deliver(&mut b, snapshot, now);
        assert_eq!(changes(&events), [(PresenceChange::Joined, "y", false)]);
        assert_eq!(keys(&b.members(None)), ["x", "y", "z"]);
        // A lost leave: the heartbeat's count differs.
        let members = a.members(None);
        let (lost, _) = a.leave(members[0].member).unwrap();
        drop(lost);
        // (At most one request per interval: the next heartbeat is an interval later.)
        let later = now + TTL / 3;
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], later);
        let (_, snapshot) = deliver(&mut a, replies, later);
        let (events, _) = deliver(&mut b, snapshot, later);
        assert_eq!(changes(&events), [(PresenceChange::Left, "x", false)]);
    }

    #[test]
    fn an_unsynced_process_is_asked_once_per_half_interval() {
        let now = Instant::now();
        let (mut a, mut b) = (registry("a"), registry("b"));
        let (_, first, _) = a.join("s".into(), "0".into(), "".into());
        drop(first);
        let mut joins = Vec::new();
        for i in 1..50 {
            let (_, join, _) = a.join("s".into(), i.to_string().into(), "".into());
            joins.push(join);
        }
        // Every one of them is out of order for `b`: one request, not 49.
        let (events, replies) = deliver(&mut b, joins, now);
        assert_eq!(events.len(), 49);
        assert_eq!(replies.len(), 1);
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], now + TTL / 9);
        assert!(replies.is_empty(), "not again within half an interval");
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], now + TTL / 3);
        assert_eq!(replies.len(), 1, "again after it");
    }

    #[test]
    fn a_snapshot_overtaken_by_a_later_change_is_dropped() {
        let now = Instant::now();
        let (mut a, mut b) = (registry("a"), registry("b"));
        let (_, x, _) = a.join("s".into(), "x".into(), "".into());
        deliver(&mut b, vec![x], now);
        let old = a.snapshot();
        let (_, y, _) = a.join("s".into(), "y".into(), "".into());
        deliver(&mut b, vec![y], now);
        // The snapshot made before `y` joined arrives after it: no false leave of `y`.
        let (events, _) = deliver(&mut b, old, now);
        assert!(events.is_empty(), "{:?}", changes(&events));
        assert_eq!(keys(&b.members(None)), ["x", "y"]);
    }

    #[test]
    fn a_leader_that_crashed_with_the_expired_one_is_not_deferred_to() {
        let t0 = Instant::now();
        // `a` (the lowest id) and `b` crash together; `c` survives. `b` had a member.
        let (a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        let (_, join, _) = b.join("s".into(), "gone".into(), "".into());
        deliver(&mut c, vec![join], t0);
        deliver(&mut c, vec![a.heartbeat()], t0 + TTL / 9);
        // `b` expires first; `a` is not expired yet but silent for more than two and a half
        // intervals: `c` handles `b`'s member (deferring to `a`, nobody would).
        let events = c.expire(t0 + TTL + Duration::from_millis(1));
        assert_eq!(changes(&events), [(PresenceChange::Expired, "gone", true)]);
        assert_eq!(c.processes().len(), 2, "a is not expired yet");
        // While `a` was heard recently, it is the one.
        let (a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        let (_, join, _) = b.join("s".into(), "gone".into(), "".into());
        deliver(&mut c, vec![join], t0);
        deliver(&mut c, vec![a.heartbeat()], t0 + TTL);
        let events = c.expire(t0 + TTL + Duration::from_millis(1));
        assert_eq!(changes(&events), [(PresenceChange::Expired, "gone", false)]);
    }

    #[test]
    fn a_silent_process_expires_and_one_process_handles_it() {
        let start = Instant::now();
        let (mut a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        let (_, join, _) = c.join("s".into(), "gone".into(), "".into());
        let (beat_a, beat_b) = (a.heartbeat(), b.heartbeat());
        deliver(&mut a, vec![beat_b], start);
        deliver(&mut b, vec![beat_a], start);
        let (_, replies) = deliver(&mut a, vec![join.clone()], start);
        assert!(replies.is_empty());
        deliver(&mut b, vec![join], start);
        // Before the time to live: nothing.
        assert!(a.expire(start + TTL).is_empty());
        let later = start + TTL + Duration::from_millis(1);
        let on_a = a.expire(later);
        let on_b = b.expire(later);
        // `a` and `b` both expire `c` (and each other: neither heard the other since).
        assert!(on_a.iter().all(|e| e.change() == PresenceChange::Expired));
        assert_eq!(
            keys(&on_a.iter().map(|e| e.member().clone()).collect::<Vec<_>>()),
            ["gone"]
        );
        assert_eq!(on_a.len(), 1);
        assert_eq!(on_b.len(), 1);
        assert!(
            on_a[0].handled_here() && on_b[0].handled_here(),
            "each alone now"
        );
        // With `b` alive for `a`, only `a` (the lowest id) handles an expiry.
        let (mut a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        let (_, join, _) = c.join("s".into(), "gone".into(), "".into());
        let later = start + TTL + Duration::from_millis(1);
        for registry in [&mut a, &mut b] {
            deliver(registry, vec![join.clone()], start);
        }
        let (beat_a, beat_b) = (a.heartbeat(), b.heartbeat());
        deliver(&mut a, vec![beat_b], later);
        deliver(&mut b, vec![beat_a], later);
        let handled: Vec<bool> = [a.expire(later), b.expire(later)]
            .iter()
            .map(|events| events[0].handled_here())
            .collect();
        assert_eq!(handled, [true, false]);
        assert_eq!(a.processes().len(), 2);
    }

    #[test]
    fn snapshots_come_in_parts_and_a_missing_part_is_asked_again() {
        let now = Instant::now();
        let (mut a, mut b) = (registry("a"), registry("b"));
        let meta: Arc<str> = "m".repeat(10_000).into();
        for i in 0..60 {
            a.join("s".into(), i.to_string().into(), meta.clone());
        }
        let parts = a.snapshot();
        assert!(parts.len() > 1, "{}", parts.len());
        assert!(
            parts
                .iter()
                .all(|p| p.encode().len() <= PART_BYTES + 11_000)
        );
        // The second part is lost: nothing is applied, the heartbeat asks again.
        let mut damaged = parts.clone();
        damaged.remove(1);
        let (events, _) = deliver(&mut b, damaged, now);
        assert!(events.is_empty());
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], now);
        assert_eq!(replies.len(), 1);
        let (events, _) = deliver(&mut b, parts, now);
        assert_eq!(events.len(), 60);
        assert_eq!(b.members(Some("s")).len(), 60);
        assert!(b.members(Some("other")).is_empty());
    }

    #[test]
    fn own_messages_and_stale_changes_are_ignored() {
        let now = Instant::now();
        let mut a = registry("a");
        let (_, join, _) = a.join("s".into(), "x".into(), "".into());
        let (events, replies) = a.receive(join.clone(), now);
        assert!(events.is_empty() && replies.is_empty());
        let mut b = registry("b");
        let (_, replies) = deliver(&mut b, vec![a.heartbeat()], now);
        let (_, snapshot) = deliver(&mut a, replies, now);
        deliver(&mut b, snapshot, now);
        // The join the snapshot already had arrives late: no second event.
        let (events, replies) = deliver(&mut b, vec![join], now);
        assert!(events.is_empty() && replies.is_empty());
        assert_eq!(b.members(None).len(), 1);
    }
}
