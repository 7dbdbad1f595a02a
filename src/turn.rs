//! The poll of a lean connection running on this thread: a body polled twice within one
//! such poll knows that nothing it registered for was woken in between unnoticed.
//!
//! Why: after a frame the lean path polls the body again at once (the body contract: a frame
//! is not a registration). The event stream inside answered `Pending` a moment before, in the
//! same poll, and registered the task's waker; asking it again costs about 150 instructions
//! per delivered event for a known answer (`BENCHMARKS.md`, session 11).
//!
//! Why it is sound: `serve`'s driver takes a connection's "queued" bit before each poll of
//! it (with the rest of its chunk's, possibly a cut turn earlier; [`Turn::with_timer`] comes
//! later, at the poll), and any wake-up of the connection's waker from then on queues it
//! again, so it is polled again, in a new turn, where the stream is asked.
//! Within a turn, a stream's `Pending` to that waker stays true or a later turn follows. So a
//! turn counts only for that waker ([`current`] compares it): a body polled with a waker of
//! its own (a `FuturesUnordered` of bodies in a handler, a `block_on` inside a poll) is
//! asked every time, because a wake-up of that waker may be taken by whoever owns it without
//! a new turn (a review found both losing events; `driver.rs`'s tests). Outside a driver
//! (hyper's connections, a body polled anywhere else) there is no turn and nothing is
//! skipped: there the second poll may come in a later run of the task, after the wake-up an
//! event caused.
//!
//! Turn numbers are unique across threads (each thread takes blocks of numbers from one
//! counter), because a driver may move to another thread between two polls of a body.
//!
//! A turn also lends the body its connection's *timer* ([`timer`], [`timer_stamp`]): a waker
//! for the keep-alive timer whose wake-up gives the connection a new *stamp* (unique across
//! connections) before it wakes the connection. A body whose keep-alive timer is registered
//! with such a waker, and which finds the stamp unchanged since it registered, knows without
//! reading the timer (a cold cache line per event) that it has not fired: a turn starts after
//! the driver clears `queued`, which a fire's wake-up either finds cleared (and so queues
//! another turn) or is read by (and so its new stamp is seen), the argument of `read_woken`.

use std::{cell::Cell, task::Waker};

#[cfg(feature = "server")]
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers a thread takes at once.
#[cfg(feature = "server")]
const BLOCK: u64 = 1 << 32;

/// The next block's start (0 is "no turn").
#[cfg(feature = "server")]
static BLOCKS: AtomicU64 = AtomicU64::new(BLOCK);

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
    /// The connection's waker of the current turn (data and vtable addresses).
    static WAKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

#[cfg(feature = "server")]
thread_local! {
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

fn key(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

/// The current turn on this thread when `waker` is the waker of the connection it polls
/// (only a wake-up of that waker is sure to bring another turn); `0` otherwise.
#[inline]
pub(crate) fn current(waker: &Waker) -> u64 {
    let turn = CURRENT.with(Cell::get);
    if turn != 0 && WAKER.with(Cell::get) == key(waker) {
        turn
    } else {
        0
    }
}

/// Where [`timer`] gets a waker for the current turn's connection's keep-alive timer, and
/// its stamp read before (given by whoever runs the turn: `serve`'s driver).
pub(crate) type TimerSource = fn() -> Option<(Waker, u64)>;

thread_local! {
    /// The connection's timer stamp, read after its `queued` bit was taken; `0` outside
    /// a turn.
    static STAMP: Cell<u64> = const { Cell::new(0) };
    /// Where [`timer`] gets its waker within the turn.
    static TIMER: Cell<Option<TimerSource>> = const { Cell::new(None) };
}

/// The current turn's connection's timer stamp; `0` outside a turn. It changes with each
/// wake-up of a waker from [`timer`], and no two connections ever have the same one.
#[inline]
pub(crate) fn timer_stamp() -> u64 {
    STAMP.with(Cell::get)
}

/// A waker for the current turn's connection's keep-alive timer, with its stamp read before
/// (so a wake-up after this shows as a new stamp); `None` outside a turn. Made when a body
/// registers its timer, not per event.
pub(crate) fn timer() -> Option<(Waker, u64)> {
    TIMER.with(Cell::get).and_then(|source| source())
}

/// While it lives, [`current`] is a turn number used by no other turn, and [`timer_stamp`]
/// and [`timer`] are its connection's.
#[cfg(feature = "server")]
pub(crate) struct Turn {
    previous: u64,
    previous_waker: (usize, usize),
    previous_stamp: u64,
    previous_timer: Option<TimerSource>,
}

#[cfg(feature = "server")]
impl Turn {
    /// Starts a new turn (one poll of one connection) without a timer.
    #[cfg(test)]
    pub(crate) fn start(waker: &Waker) -> Self {
        Self::with_timer(waker, 0, None)
    }

    /// Starts a new turn (one poll of the connection whose waker is `waker`), whose timer
    /// stamp is `stamp` (read after the connection's `queued` bit was taken) and whose
    /// timer wakers come from `timer`.
    #[inline]
    pub(crate) fn with_timer(waker: &Waker, stamp: u64, timer: Option<TimerSource>) -> Self {
        let mut next = NEXT.with(Cell::get);
        if next % BLOCK == 0 {
            next = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
        }
        NEXT.with(|n| n.set(next + 1));
        Self {
            previous: CURRENT.with(|current| current.replace(next)),
            previous_waker: WAKER.with(|w| w.replace(key(waker))),
            previous_stamp: STAMP.with(|s| s.replace(stamp)),
            previous_timer: TIMER.with(|t| t.replace(timer)),
        }
    }
}

#[cfg(feature = "server")]
impl Drop for Turn {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
        WAKER.with(|w| w.set(self.previous_waker));
        STAMP.with(|s| s.set(self.previous_stamp));
        TIMER.with(|t| t.set(self.previous_timer));
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn turns_differ_across_threads_and_end_with_their_guard() {
        let w = futures_util::task::noop_waker();
        assert_eq!(current(&w), 0);
        let mine: Vec<u64> = (0..3)
            .map(|_| {
                let turn = Turn::start(&w);
                let n = current(&w);
                drop(turn);
                n
            })
            .collect();
        assert_eq!(current(&w), 0, "no turn after the guard");
        let theirs = std::thread::spawn(|| {
            let w = futures_util::task::noop_waker();
            let _turn = Turn::start(&w);
            current(&w)
        })
        .join()
        .unwrap();
        assert!(
            mine.iter().all(|&n| n != 0 && n != theirs),
            "{mine:?} {theirs}"
        );
        assert!(mine[0] != mine[1] && mine[1] != mine[2]);
    }
}
