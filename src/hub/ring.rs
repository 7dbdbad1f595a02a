//! The hub's live ring: a bounded queue that every receiver reads in full, in order.
//!
//! It replaces `tokio::sync::broadcast` on the hub's hot path, for cost: the hub's receive
//! path was about 940 user-space instructions per delivered event, most of it broadcast's
//! receive (a boxed receive future set up and polled per event, an intrusive waiter node
//! linked and unlinked under the tail lock, a slot lock per read); this ring took about 280
//! off (`BENCHMARKS.md`, session 9). Here a receiver that has caught up leaves its task's waker in the
//! ring's list once; a send takes the whole list and wakes each waker once; a read is one
//! lock, a reference-count increment (or a move, for the last reader) and a counter. Safe
//! code only: one `Mutex` per ring guards slots, counts and the list.
//!
//! A send wakes the list's wakers by reference and gives the list back (`returned`): a
//! receiver that registers again takes its own waker from there, where it would clone it.
//! A clone per event and its drop in the send were two atomic operations on the waker's
//! memory, the one in the receiver's poll a cache miss per event by then (`BENCHMARKS.md`,
//! session 14).
//!
//! Semantics are broadcast's, which the hub was built on: capacity rounded up to a power of
//! two; a send with no receiver is dropped; a receiver starts at the ring's tail; a receiver
//! that falls a whole ring behind gets `Lagged(missed)` and goes on from the oldest event
//! still held; an item is released once every receiver that was there when it was sent has
//! read it (or left); after the ring is closed, receivers read what is left, then `Closed`.

use std::{
    num::NonZeroU32,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use tokio::sync::broadcast::error::RecvError;

/// The sending half: closes the ring when dropped.
pub(super) struct Ring<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// `State::round`, readable without the lock (written under it).
    round: AtomicU64,
    mask: u64,
}

struct State<T> {
    slots: Box<[Slot<T>]>,
    /// The position the next send writes.
    tail: u64,
    receivers: usize,
    closed: bool,
    /// The wakers of receivers that found nothing to read, each at most once per round (a
    /// receiver knows its index); `None`: a receiver that left.
    waiters: Vec<Option<Waker>>,
    /// Indices of `waiters` given back by receivers that left this round.
    free: Vec<usize>,
    /// Bumped each time the waiters are taken (a send or the close): a receiver registered in
    /// an earlier round is no longer in the list.
    round: u64,
    /// The list of round `returned_round`, given back by the send that woke it: a receiver
    /// registered there at index `i` takes its waker from `returned[i]` when it registers
    /// again (the rest are dropped by the next send, after its lock).
    returned: Vec<Option<Waker>>,
    returned_round: u64,
    /// Places in the list a send is waking (taken, not given back yet) whose receivers moved
    /// on (registered again with a clone) or left meanwhile: that send drops their wakers
    /// when it gives the list back, instead of keeping them until the next send (a topic that
    /// goes quiet would hold them as long as it lives; found by a review).
    orphans: Vec<(u64, usize)>,
    /// The round whose list a send is waking (taken, not given back yet).
    out: Option<u64>,
    /// An empty list, kept for its capacity.
    spare: Vec<Option<Waker>>,
}

struct Slot<T> {
    /// Receivers that were there when it was written and have not read it yet.
    rem: usize,
    item: Option<T>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under the lock; never turn poison into a panic anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Clone> Ring<T> {
    /// A ring of `capacity` events (rounded up to a power of two, at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        let slots = (0..capacity).map(|_| Slot { rem: 0, item: None }).collect();
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots,
                    tail: 0,
                    receivers: 0,
                    closed: false,
                    waiters: Vec::new(),
                    free: Vec::new(),
                    round: 0,
                    returned: Vec::new(),
                    returned_round: 0,
                    orphans: Vec::new(),
                    out: None,
                    spare: Vec::new(),
                }),
                round: AtomicU64::new(0),
                mask: capacity as u64 - 1,
            }),
        }
    }

    /// Sends `item` to every receiver; how many there are (`0`: dropped, nobody to read it).
    pub(super) fn send(&self, item: T) -> usize {
        let mut state = lock(&self.shared.state);
        let receivers = state.receivers;
        if receivers == 0 {
            return 0;
        }
        let index = (state.tail & self.shared.mask) as usize;
        let slot = &mut state.slots[index];
        slot.rem = receivers;
        // The event it replaces is dropped after the lock (its memory freed, if it was the
        // last reference, without holding up the receivers).
        let replaced = slot.item.replace(item);
        state.tail = state.tail.wrapping_add(1);
        let (round, mut waiters) = self.shared.take_waiters(&mut state);
        state.out = Some(round);
        // The wakers of two rounds ago that nobody took back: dropped after the lock.
        let mut leftover = std::mem::take(&mut state.returned);
        drop(state);
        drop(replaced);
        for waker in waiters.iter().flatten() {
            waker.wake_by_ref();
        }
        leftover.clear();
        // Give the list back (its wakers for their receivers, and its allocation), unless a
        // later send gave back a newer one meanwhile; without the wakers of receivers that
        // moved on or left while it was out.
        let mut state = lock(&self.shared.state);
        if state.out == Some(round) {
            state.out = None;
        }
        let mut orphaned = Vec::new();
        for (at, index) in std::mem::take(&mut state.orphans) {
            if at == round {
                orphaned.extend(waiters.get_mut(index).and_then(Option::take));
            }
        }
        let stale = if state.returned_round < round || state.returned.is_empty() {
            state.returned_round = round;
            std::mem::replace(&mut state.returned, waiters)
        } else {
            waiters
        };
        if state.spare.capacity() < leftover.capacity() {
            state.spare = leftover;
        }
        drop(state);
        drop(stale);
        drop(orphaned);
        receivers
    }

    /// How many events the ring holds that its slowest receiver has not read.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn queued(&self) -> usize {
        let state = lock(&self.shared.state);
        let held = state.tail.min(self.shared.mask + 1);
        // Unread counts only grow from older to newer events (receivers read in order), so
        // the oldest unread one is found by bisection.
        let (mut low, mut high) = (0, held);
        while low < high {
            let mid = low + (high - low) / 2;
            let pos = state.tail - held + mid;
            if state.slots[(pos & self.shared.mask) as usize].rem == 0 {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        (held - low) as usize
    }

    /// A new receiver, which reads what is sent from now on.
    pub(super) fn receiver(&self) -> Receiver<T> {
        let mut state = lock(&self.shared.state);
        state.receivers += 1;
        Receiver {
            shared: Arc::clone(&self.shared),
            next: state.tail,
            registered: None,
            waker: None,
        }
    }
}

impl<T> Shared<T> {
    /// Takes the list of waiters (to be woken once the lock is released) and starts a round;
    /// returns the round they registered in, and the list.
    fn take_waiters(&self, state: &mut State<T>) -> (u64, Vec<Option<Waker>>) {
        let spare = std::mem::take(&mut state.spare);
        let waiters = std::mem::replace(&mut state.waiters, spare);
        state.free.clear();
        let round = state.round;
        state.round = state.round.wrapping_add(1);
        self.round.store(state.round, Ordering::Release);
        (round, waiters)
    }
}

impl<T> State<T> {
    /// What becomes of the waker a receiver left in the list of round `at.round`, now that it
    /// registers again in a later round or leaves: taken back from the list a send gave back,
    /// or, while that send still holds the list, marked for it to drop (`orphans`).
    fn take_back(&mut self, at: Registration) -> Option<Waker> {
        if self.out == Some(at.round) {
            self.orphans.push((at.round, at.index()));
            None
        } else if at.round == self.returned_round {
            self.returned.get_mut(at.index()).and_then(Option::take)
        } else {
            None
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        let (_, waiters) = self.shared.take_waiters(&mut state);
        // Nobody registers again after the close.
        let returned = std::mem::take(&mut state.returned);
        drop(state);
        drop(returned);
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// Where a receiver's waker is in the list: the round it was put there, and its index + 1,
/// so that `Option<Registration>` is two words, not three (a receiver is read on every poll,
/// and its subscription's hot fields then fit one cache line: `BENCHMARKS.md`, session 13).
#[derive(Clone, Copy)]
struct Registration {
    round: u64,
    slot: NonZeroU32,
}

impl Registration {
    /// `None` past 2^32 - 2 waiters in one list (each is a receiver: not on any machine).
    fn new(round: u64, index: usize) -> Option<Self> {
        let slot = u32::try_from(index + 1).ok().and_then(NonZeroU32::new)?;
        Some(Self { round, slot })
    }

    fn index(self) -> usize {
        self.slot.get() as usize - 1
    }
}

/// A receiver: reads every event sent after it was made, in order.
pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The position it reads next.
    next: u64,
    /// Where its waker is in the list, and in which round it was put there.
    registered: Option<Registration>,
    /// The waker it put there last: polled again by the same task in the same round, it
    /// knows it has nothing without taking the lock.
    waker: Option<Waker>,
}

impl<T: Clone> Receiver<T> {
    /// The next event; `Pending` (with the task's waker in the ring's list) when it has read
    /// everything sent. With `budget`, an event read spends a unit of tokio's co-operative
    /// budget, as tokio's own channels do (none left: `Pending`, and the task is woken again).
    #[inline]
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        budget: bool,
    ) -> Poll<Result<T, RecvError>> {
        if let (Some(registered), Some(waker)) = (self.registered, &self.waker) {
            // Still in the list since it last found nothing: no send (nor the close) since.
            if registered.round == self.shared.round.load(Ordering::Acquire)
                && waker.will_wake(cx.waker())
            {
                return Poll::Pending;
            }
        }
        self.poll_locked(cx, budget)
    }

    /// [`poll_recv`](Self::poll_recv) under the lock (kept out of line: the lock-free answer
    /// above is the common one, twice per event, and stays small).
    #[inline(never)]
    fn poll_locked(&mut self, cx: &mut Context<'_>, budget: bool) -> Poll<Result<T, RecvError>> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if self.next == state.tail {
            if state.closed {
                return Poll::Ready(Err(RecvError::Closed));
            }
            let replaced = register(
                &mut self.registered,
                &mut self.waker,
                &mut state,
                cx.waker(),
            );
            drop(state);
            drop(replaced);
            return Poll::Pending;
        }
        // In a lean connection's turn (`crate::turn`) the budget is unconstrained (`serve`'s
        // driver polls each connection so), and asking it would only cost its thread-local
        // bookkeeping, about 30 instructions per event.
        let coop = if budget && crate::turn::current(cx.waker()) == 0 {
            match tokio::task::coop::poll_proceed(cx) {
                Poll::Ready(coop) => Some(coop),
                Poll::Pending => return Poll::Pending,
            }
        } else {
            None
        };
        let capacity = shared.mask + 1;
        let behind = state.tail.wrapping_sub(self.next);
        if behind > capacity {
            let oldest = state.tail.wrapping_sub(capacity);
            let missed = oldest.wrapping_sub(self.next);
            self.next = oldest;
            return Poll::Ready(Err(RecvError::Lagged(missed)));
        }
        let slot = &mut state.slots[(self.next & shared.mask) as usize];
        slot.rem = slot.rem.saturating_sub(1);
        // The last reader takes the event; the others share it.
        let item = if slot.rem == 0 {
            slot.item.take()
        } else {
            slot.item.clone()
        };
        self.next = self.next.wrapping_add(1);
        let mut replaced = [None, None];
        if self.next == state.tail && !state.closed {
            // Caught up: in the list now, under the same lock, so the poll that finds nothing
            // (the next, as a rule) does not take it again.
            replaced = register(
                &mut self.registered,
                &mut self.waker,
                &mut state,
                cx.waker(),
            );
        }
        drop(state);
        drop(replaced);
        if let Some(coop) = coop {
            coop.made_progress();
        }
        match item {
            Some(item) => Poll::Ready(Ok(item)),
            // Unreachable: an unread slot within the ring holds its item until every receiver
            // counted in it has read it. Should a count ever be off, end this receiver rather
            // than panic.
            None => Poll::Ready(Err(RecvError::Closed)),
        }
    }

    /// Whether its waker is in the list (no send since it found nothing to read).
    #[cfg(test)]
    fn registered_and_idle(&self) -> bool {
        self.registered
            .is_some_and(|at| at.round == self.shared.round.load(Ordering::Acquire))
    }
}

/// Puts the task's waker in the list, once per round: a receiver already there is only
/// updated; one that was in the list a send gave back takes its waker from there, where it
/// would clone it. `stored`: the receiver's copy, for its lock-free check. Returns the wakers
/// it replaced, for the caller to drop once the lock is released (a waker's drop is its
/// owner's code, which must not run under the ring's lock).
#[must_use]
fn register<T>(
    registered: &mut Option<Registration>,
    stored: &mut Option<Waker>,
    state: &mut State<T>,
    waker: &Waker,
) -> [Option<Waker>; 2] {
    let mut replaced = [None, None];
    if !stored.as_ref().is_some_and(|old| old.will_wake(waker)) {
        replaced[0] = stored.replace(waker.clone());
    }
    if let Some(at) = *registered {
        if at.round == state.round {
            let entry = &mut state.waiters[at.index()];
            if !entry.as_ref().is_some_and(|old| old.will_wake(waker)) {
                replaced[1] = entry.replace(waker.clone());
            }
            return replaced;
        }
    }
    // Its waker from the list the last send gave back, if it is there and the same.
    let returned = registered.and_then(|at| state.take_back(at));
    let owned = match returned {
        Some(returned) if returned.will_wake(waker) => returned,
        other => {
            replaced[1] = other;
            waker.clone()
        }
    };
    let index = match state.free.pop() {
        Some(index) => {
            state.waiters[index] = Some(owned);
            index
        }
        None => {
            state.waiters.push(Some(owned));
            state.waiters.len() - 1
        }
    };
    *registered = Registration::new(state.round, index);
    replaced
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.receivers -= 1;
        let (mut entry, mut returned) = (None, None);
        if let Some(at) = self.registered {
            if at.round == state.round {
                entry = state.waiters[at.index()].take();
                state.free.push(at.index());
            } else {
                returned = state.take_back(at);
            }
        }
        // It counts in every unread event still held: release them (dropped after the lock).
        let mut released = Vec::new();
        let capacity = self.shared.mask + 1;
        let start = self.next.max(state.tail.saturating_sub(capacity));
        for pos in start..state.tail {
            let slot = &mut state.slots[(pos & self.shared.mask) as usize];
            slot.rem = slot.rem.saturating_sub(1);
            if slot.rem == 0 {
                released.extend(slot.item.take());
            }
        }
        drop(state);
        drop(entry);
        drop(returned);
        drop(released);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
    };

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }

    fn waker_pair() -> (Arc<Count>, Waker) {
        waker()
    }

    fn poll(receiver: &mut Receiver<u32>, waker: &Waker) -> Poll<Result<u32, RecvError>> {
        receiver.poll_recv(&mut Context::from_waker(waker), false)
    }

    #[test]
    fn every_receiver_reads_every_event_in_order_and_is_woken_once_per_send() {
        let ring = Ring::new(4);
        let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| waker()).unzip();
        let mut receivers: Vec<_> = (0..3).map(|_| ring.receiver()).collect();
        for (receiver, waker) in receivers.iter_mut().zip(&wakers) {
            assert!(poll(receiver, waker).is_pending());
            // Polled again while idle: still one entry in the list.
            assert!(poll(receiver, waker).is_pending());
            assert!(receiver.registered_and_idle());
        }
        assert_eq!(ring.send(1), 3);
        assert_eq!(ring.send(2), 3);
        for ((receiver, waker), count) in receivers.iter_mut().zip(&wakers).zip(&counts) {
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "woken once, by the first send"
            );
            assert!(!receiver.registered_and_idle());
            assert!(matches!(poll(receiver, waker), Poll::Ready(Ok(1))));
            assert!(matches!(poll(receiver, waker), Poll::Ready(Ok(2))));
            assert!(poll(receiver, waker).is_pending());
        }
        assert_eq!(ring.queued(), 0);
        ring.send(3);
        for count in &counts {
            assert_eq!(count.0.load(Ordering::SeqCst), 2);
        }
    }

    /// Inside a lean connection's turn a budgeted read does not ask tokio's co-operative
    /// budget (the driver polls each connection unconstrained, so it would always say yes);
    /// elsewhere it spends it, and a task's poll runs out after 128.
    #[cfg(feature = "server")]
    #[tokio::test]
    async fn within_a_turn_reads_do_not_spend_the_budget() {
        let ring = Ring::new(512);
        let mut receiver = ring.receiver();
        std::future::poll_fn(|cx| {
            for n in 0..300 {
                ring.send(n);
            }
            let turn = crate::turn::Turn::start(cx.waker());
            let read = (0..300)
                .take_while(|_| receiver.poll_recv(cx, true).is_ready())
                .count();
            drop(turn);
            assert_eq!(read, 300, "within a turn, every ready event is read");
            for n in 0..300 {
                ring.send(n);
            }
            let read = (0..300)
                .take_while(|_| receiver.poll_recv(cx, true).is_ready())
                .count();
            assert_eq!(read, 128, "outside a turn, the task's budget runs out");
            Poll::Ready(())
        })
        .await;
    }

    #[test]
    fn a_send_without_receivers_is_dropped_and_a_receiver_starts_at_the_tail() {
        let ring = Ring::new(2);
        assert_eq!(ring.send(1), 0);
        let mut receiver = ring.receiver();
        let (_, waker) = waker();
        assert!(poll(&mut receiver, &waker).is_pending());
        ring.send(2);
        assert!(matches!(poll(&mut receiver, &waker), Poll::Ready(Ok(2))));
    }

    #[test]
    fn a_receiver_a_whole_ring_behind_lags_then_reads_the_oldest_held() {
        let ring = Ring::new(3); // rounded up to 4
        let mut slow = ring.receiver();
        let mut fast = ring.receiver();
        let (_, waker) = waker();
        for n in 0..6 {
            ring.send(n);
            assert!(matches!(poll(&mut fast, &waker), Poll::Ready(Ok(m)) if m == n));
        }
        assert_eq!(
            ring.queued(),
            4,
            "the slowest has read none of the four held"
        );
        assert!(matches!(
            poll(&mut slow, &waker),
            Poll::Ready(Err(RecvError::Lagged(2)))
        ));
        for n in 2..6 {
            assert!(matches!(poll(&mut slow, &waker), Poll::Ready(Ok(m)) if m == n));
        }
        assert_eq!(ring.queued(), 0);
    }

    #[test]
    fn events_are_released_once_read_by_all_or_left_unread_by_a_receiver_that_goes() {
        let ring = Ring::new(8);
        let event = Arc::new(());
        let mut reader = ring.receiver();
        let leaver = ring.receiver();
        ring.send(Arc::clone(&event));
        let (_, waker) = waker();
        let read = reader.poll_recv(&mut Context::from_waker(&waker), false);
        assert!(matches!(read, Poll::Ready(Ok(_))));
        drop(read);
        assert_eq!(Arc::strong_count(&event), 2, "the leaver has not read it");
        assert_eq!(ring.queued(), 1);
        drop(leaver);
        assert_eq!(
            Arc::strong_count(&event),
            1,
            "released when the last one left"
        );
        assert_eq!(ring.queued(), 0);
    }

    #[test]
    fn closing_wakes_the_waiters_who_read_what_is_left_then_closed() {
        let ring = Ring::new(4);
        let mut receiver = ring.receiver();
        let (count, waker) = waker();
        assert!(poll(&mut receiver, &waker).is_pending());
        ring.send(7);
        assert!(matches!(poll(&mut receiver, &waker), Poll::Ready(Ok(7))));
        assert!(poll(&mut receiver, &waker).is_pending());
        ring.send(8);
        drop(ring);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(poll(&mut receiver, &waker), Poll::Ready(Ok(8))));
        assert!(matches!(
            poll(&mut receiver, &waker),
            Poll::Ready(Err(RecvError::Closed))
        ));
    }

    /// An item whose drop asks the ring something (any code of the item's owner may).
    #[derive(Clone)]
    struct Touching(Arc<std::sync::OnceLock<std::sync::Weak<Ring<Touching>>>>);

    impl Drop for Touching {
        fn drop(&mut self) {
            if let Some(ring) = self.0.get().and_then(std::sync::Weak::upgrade) {
                let _ = ring.queued();
            }
        }
    }

    /// Events replaced by a send and events released by a receiver that leaves are dropped
    /// after the ring's lock (under it, the drop above deadlocked: found by a review).
    #[test]
    fn events_are_dropped_after_the_lock() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cell = Arc::new(std::sync::OnceLock::new());
            let ring = Arc::new(Ring::new(1));
            cell.set(Arc::downgrade(&ring)).unwrap();
            let (_, waker) = waker();
            let mut reader = ring.receiver();
            let leaver = ring.receiver();
            ring.send(Touching(Arc::clone(&cell)));
            let read = reader.poll_recv(&mut Context::from_waker(&waker), false);
            drop(read);
            // Replaces the first event, which the leaver has not read.
            ring.send(Touching(Arc::clone(&cell)));
            // Releases the second, which only the leaver had left to read... after the reader.
            let read = reader.poll_recv(&mut Context::from_waker(&waker), false);
            drop(read);
            ring.send(Touching(Arc::clone(&cell)));
            drop(leaver);
            done.send(()).unwrap();
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok(),
            "deadlocked: an event was dropped under the ring's lock"
        );
    }

    /// A send wakes the list by reference and gives it back; the receiver that registers
    /// again takes its own waker from there (no clone per event, and none left over): the
    /// waker's count stays at four (the test's two, the receiver's copy, the list's), and a
    /// receiver that leaves takes its returned waker with it.
    #[test]
    fn a_receiver_registering_again_takes_its_waker_back_from_the_send() {
        let ring = Ring::new(4);
        let (count, waker) = waker();
        let mut receiver = ring.receiver();
        assert!(poll(&mut receiver, &waker).is_pending());
        assert_eq!(Arc::strong_count(&count), 4);
        for n in 0..10u32 {
            ring.send(n);
            assert_eq!(count.0.load(Ordering::SeqCst), n as usize + 1, "woken");
            assert_eq!(Arc::strong_count(&count), 4, "kept for the receiver");
            assert!(matches!(poll(&mut receiver, &waker), Poll::Ready(Ok(v)) if v == n));
            assert!(poll(&mut receiver, &waker).is_pending());
            assert_eq!(Arc::strong_count(&count), 4, "taken back, not cloned");
            assert!(
                lock(&ring.shared.state)
                    .returned
                    .iter()
                    .all(Option::is_none)
            );
        }
        // Polled by another task after a send: the returned waker is dropped, the new one
        // registered.
        ring.send(10);
        let (other_count, other) = self::waker();
        assert!(poll(&mut receiver, &other).is_ready());
        assert!(poll(&mut receiver, &other).is_pending());
        assert_eq!(Arc::strong_count(&count), 2, "the old task's waker is gone");
        assert_eq!(Arc::strong_count(&other_count), 4);
        // Leaves after a send: its returned waker goes with it.
        ring.send(11);
        drop(receiver);
        assert_eq!(Arc::strong_count(&other_count), 2, "nothing left behind");
    }

    /// A receiver that registers again, or leaves, while the send that woke it still holds
    /// its list (here: from inside its own waker, which the send calls after unlocking) does
    /// not leave its old waker in the list the send gives back: with a topic that then goes
    /// quiet it would be held as long as the ring lives (found by a review).
    #[test]
    fn wakers_of_receivers_that_moved_on_while_their_list_was_out_are_not_kept() {
        use std::sync::OnceLock;

        /// A waker that polls (or drops) its receiver when woken.
        struct Hook {
            receiver: Mutex<Option<Receiver<u32>>>,
            leave: bool,
            me: OnceLock<Waker>,
        }
        impl Wake for Hook {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                let mut receiver = lock(&self.receiver);
                if self.leave {
                    drop(receiver.take());
                } else if let Some(receiver) = receiver.as_mut() {
                    let waker = self.me.get().unwrap();
                    while poll(receiver, waker).is_ready() {}
                }
            }
        }

        for leave in [false, true] {
            let ring = Ring::new(4);
            let hook = Arc::new(Hook {
                receiver: Mutex::new(None),
                leave,
                me: OnceLock::new(),
            });
            let waker = Waker::from(Arc::clone(&hook));
            hook.me.set(waker.clone()).ok();
            // Another receiver stays, so the ring is not left without any.
            let (_, other_waker) = waker_pair();
            let mut other = ring.receiver();
            assert!(poll(&mut other, &other_waker).is_pending());
            let mut receiver = ring.receiver();
            assert!(poll(&mut receiver, &waker).is_pending());
            *lock(&hook.receiver) = Some(receiver);
            // The hook reads and registers again (or leaves) before the list comes back.
            ring.send(1);
            // Then it leaves (if it had not), and the topic goes quiet.
            drop(lock(&hook.receiver).take());
            // Ours, the test's copy and the hook's own (`me`): nothing in the ring.
            assert_eq!(
                Arc::strong_count(&hook),
                3,
                "leave: {leave}: a waker of a receiver that is gone is still held"
            );
        }
    }

    #[test]
    fn receivers_that_leave_give_their_place_in_the_list_back() {
        let ring = Ring::new(4);
        let (_, waker) = waker();
        for _ in 0..100 {
            let mut receiver = ring.receiver();
            assert!(poll(&mut receiver, &waker).is_pending());
        }
        assert_eq!(
            lock(&ring.shared.state).waiters.len(),
            1,
            "one place, reused"
        );
        let (other_count, other) = self::waker();
        let mut receiver = ring.receiver();
        assert!(poll(&mut receiver, &waker).is_pending());
        // Polled by another task: the entry is replaced, not added.
        assert!(poll(&mut receiver, &other).is_pending());
        assert_eq!(lock(&ring.shared.state).waiters.len(), 1);
        ring.send(1);
        assert_eq!(
            other_count.0.load(Ordering::SeqCst),
            1,
            "the task that polled last"
        );
    }
}

#[cfg(test)]
mod stress_tests {
    use std::{
        future::poll_fn,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// Randomized model check: sends, receivers made and dropped, polls with several wakers;
    /// every read checked against a model (order, lag counts, values, `queued()`).
    #[test]
    fn random_operations_match_a_model() {
        use std::task::Wake;
        struct W;
        impl Wake for W {
            fn wake(self: Arc<Self>) {}
        }
        let wakers: Vec<Waker> = (0..3).map(|_| Waker::from(Arc::new(W))).collect();
        let mut rng: u64 = 0xDEAD_BEEF_1234_5678;
        let mut next_rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for cap in [1usize, 2, 4, 8] {
            for _case in 0..300 {
                let ring: Ring<u64> = Ring::new(cap);
                let capacity = cap.next_power_of_two() as u64;
                // (receiver, model next, created at)
                let mut receivers: Vec<(Receiver<u64>, u64)> = Vec::new();
                let mut tail = 0u64;
                for _op in 0..200 {
                    match next_rand() % 10 {
                        0 | 1 => receivers.push((ring.receiver(), tail)),
                        2 if !receivers.is_empty() => {
                            let i = (next_rand() as usize) % receivers.len();
                            receivers.swap_remove(i);
                        }
                        3..=5 => {
                            let n = ring.send(tail);
                            assert_eq!(n, receivers.len());
                            if n > 0 {
                                tail += 1;
                            }
                        }
                        _ if !receivers.is_empty() => {
                            let i = (next_rand() as usize) % receivers.len();
                            let w = &wakers[(next_rand() as usize) % wakers.len()];
                            let (r, next) = &mut receivers[i];
                            let got = r.poll_recv(&mut Context::from_waker(w), false);
                            if *next == tail {
                                assert!(got.is_pending(), "nothing to read: {got:?}");
                            } else if tail - *next > capacity {
                                let oldest = tail - capacity;
                                match got {
                                    Poll::Ready(Err(RecvError::Lagged(n))) => {
                                        assert_eq!(n, oldest - *next)
                                    }
                                    other => panic!("expected lag, got {other:?}"),
                                }
                                *next = oldest;
                            } else {
                                match got {
                                    Poll::Ready(Ok(v)) => assert_eq!(v, *next),
                                    other => panic!("expected {}, got {other:?}", *next),
                                }
                                *next += 1;
                            }
                        }
                        _ => {}
                    }
                    // queued(): positions in the window some receiver has not read.
                    let held = tail.min(capacity);
                    let mut first_unread = held;
                    for m in 0..held {
                        let pos = tail - held + m;
                        if receivers.iter().any(|(_, next)| *next <= pos) {
                            first_unread = m;
                            break;
                        }
                    }
                    assert_eq!(ring.queued() as u64, held - first_unread);
                }
            }
        }
    }

    /// Multi-thread stress: receivers in tasks on a 2-worker runtime, a sender thread; every
    /// receiver must see every item in order (or a lag that accounts exactly for the gap),
    /// then `Closed`; no hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_receivers_on_two_threads_read_in_order_or_lag_exactly() {
        for round in 0..40 {
            let cap = [1usize, 2, 16, 64][round % 4];
            let ring = Ring::new(cap);
            let receivers: Vec<_> = (0..8).map(|_| ring.receiver()).collect();
            const N: u64 = 20_000;
            let lagged = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for (n, mut receiver) in receivers.into_iter().enumerate() {
                let lagged = Arc::clone(&lagged);
                tasks.push(tokio::spawn(async move {
                    let mut expect = 0u64;
                    let budget = n % 2 == 0;
                    loop {
                        let got = poll_fn(|cx| receiver.poll_recv(cx, budget)).await;
                        match got {
                            Ok(v) => {
                                assert_eq!(v, expect, "out of order or duplicated");
                                expect += 1;
                            }
                            Err(RecvError::Lagged(missed)) => {
                                lagged.fetch_add(1, Ordering::Relaxed);
                                expect += missed;
                            }
                            Err(RecvError::Closed) => break,
                        }
                        if n % 3 == 0 && expect % 97 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    assert_eq!(expect, N, "receiver {n} ended early");
                }));
            }
            let sender = std::thread::spawn(move || {
                for v in 0..N {
                    ring.send(v);
                    if v % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
                drop(ring);
            });
            let all = async {
                for task in tasks {
                    task.await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(20), all)
                .await
                .unwrap_or_else(|_| panic!("hang in round {round} (cap {cap})"));
            sender.join().unwrap();
        }
    }

    /// Ping-pong across threads: one item at a time, the sender waits for the receiver to
    /// read it; a lost wake-up shows as a timeout. The receiver is moved between two tasks
    /// every few items (polled by another task's waker), and idles between items (fast path).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_moving_between_tasks_misses_no_wake_up() {
        let ring = Arc::new(Ring::new(4));
        let mut receiver = ring.receiver();
        let acked = Arc::new(tokio::sync::Notify::new());
        let count = Arc::new(AtomicUsize::new(0));
        const N: usize = 50_000;
        let sender = {
            let (ring, acked, count) = (Arc::clone(&ring), Arc::clone(&acked), Arc::clone(&count));
            tokio::spawn(async move {
                for v in 0..N {
                    ring.send(v as u64);
                    loop {
                        let notified = acked.notified();
                        if count.load(Ordering::SeqCst) > v {
                            break;
                        }
                        if tokio::time::timeout(Duration::from_secs(5), notified)
                            .await
                            .is_err()
                        {
                            panic!("item {v} not read within 5 s: lost wake-up");
                        }
                    }
                }
            })
        };
        let mut v = 0u64;
        while (v as usize) < N {
            // Read up to 7 items in this task, then move the receiver to a new task.
            let (acked2, count2) = (Arc::clone(&acked), Arc::clone(&count));
            let (r, nv) = tokio::spawn(async move {
                let mut receiver = receiver;
                let mut v = v;
                for _ in 0..7 {
                    if v as usize >= N {
                        break;
                    }
                    let got = poll_fn(|cx| receiver.poll_recv(cx, true)).await.unwrap();
                    assert_eq!(got, v);
                    v += 1;
                    count2.fetch_add(1, Ordering::SeqCst);
                    acked2.notify_one();
                }
                (receiver, v)
            })
            .await
            .unwrap();
            receiver = r;
            v = nv;
        }
        tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .unwrap()
            .unwrap();
    }

    /// Subscribers join and leave (while registered) concurrently with sends and polls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receivers_joining_and_leaving_while_registered_leave_nothing_behind() {
        let ring = Arc::new(Ring::new(8));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let (ring, stop) = (Arc::clone(&ring), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut v = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ring.send(v);
                    v += 1;
                    if v % 16 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut tasks = Vec::new();
        for t in 0..4 {
            let ring = Arc::clone(&ring);
            tasks.push(tokio::spawn(async move {
                for i in 0..3_000 {
                    let mut receiver = ring.receiver();
                    let mut last: Option<u64> = None;
                    for _ in 0..(i % 5 + 1) {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            poll_fn(|cx| receiver.poll_recv(cx, t % 2 == 0)),
                        )
                        .await
                        {
                            Ok(Ok(v)) => {
                                if let Some(l) = last {
                                    assert!(v > l);
                                }
                                last = Some(v);
                            }
                            Ok(Err(RecvError::Lagged(_))) => last = None,
                            Ok(Err(RecvError::Closed)) => panic!("closed"),
                            Err(_) => panic!("hang"),
                        }
                    }
                    // Sometimes leave while registered in the current round.
                    let _ = poll_fn(|cx| Poll::Ready(receiver.poll_recv(cx, false))).await;
                    drop(receiver);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        let state = lock(&ring.shared.state);
        assert_eq!(state.receivers, 0);
        assert!(
            state.waiters.len() <= 4,
            "waiters list grew: {}",
            state.waiters.len()
        );
    }

    /// A receiver whose reads are cut short by tokio's co-operative budget (a task that reads
    /// a full ring in one go): it must still reach every item.
    #[tokio::test(flavor = "current_thread")]
    async fn a_spent_budget_does_not_strand_a_receiver() {
        let ring = Arc::new(Ring::new(1024));
        let mut receiver = ring.receiver();
        for round in 0..20u64 {
            for v in 0..1000 {
                ring.send(round * 1000 + v);
            }
            for v in 0..1000 {
                let got = tokio::time::timeout(
                    Duration::from_secs(2),
                    poll_fn(|cx| receiver.poll_recv(cx, true)),
                )
                .await
                .expect("stranded")
                .unwrap();
                assert_eq!(got, round * 1000 + v);
            }
            // Idle, registered; then a send from another thread.
            let ring2 = Arc::clone(&ring);
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1));
                ring2.send(u64::MAX);
            });
            let got = tokio::time::timeout(
                Duration::from_secs(2),
                poll_fn(|cx| receiver.poll_recv(cx, true)),
            )
            .await
            .expect("stranded after idle")
            .unwrap();
            assert_eq!(got, u64::MAX);
            t.join().unwrap();
        }
    }
}
