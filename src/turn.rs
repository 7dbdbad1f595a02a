//! The poll of a lean connection running on this thread: a body polled twice within one
//! such poll knows that nothing it registered for was woken in between unnoticed.
//!
//! Why: after a frame the lean path polls the body again at once (the body contract: a frame
//! is not a registration). The event stream inside answered `Pending` a moment before, in the
//! same poll, and registered the task's waker; asking it again costs about 150 instructions
//! per delivered event for a known answer (`BENCHMARKS.md`, session 11).
//!
//! Why it is sound: `serve`'s driver clears a connection's "queued" flag before each poll of
//! it ([`Turn::start`] is called right after), and any wake-up of the connection's waker from
//! then on queues it again, so it is polled again, in a new turn, where the stream is asked.
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
//! A turn also lends the body the connection's *timer waker* ([`with_timer`]) and the count
//! of its wake-ups that the driver read at the turn's start ([`timer_fires`]). A keep-alive
//! timer registered with that waker bumps the count before it wakes the connection, so a
//! body that finds the count unchanged since it registered knows, without reading the timer
//! (a cold cache line per event), that it has not fired: the count is read after the
//! driver clears `queued`, which a fire's wake-up either finds cleared (and so queues another
//! turn) or is read by (and so the count's bump is seen), the argument of `read_woken`.

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
    /// The connection's timer waker, lent for the turn.
    static TIMER: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Its wake-ups counted by the start of the turn.
    static FIRES: Cell<u64> = const { Cell::new(0) };
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

/// The wake-ups of the current turn's timer waker counted by the turn's start; meaningful
/// only within a turn ([`current`] not `0`) and only to compare with another such count of
/// the same connection.
#[inline]
pub(crate) fn timer_fires() -> u64 {
    FIRES.with(Cell::get)
}

/// Calls `f` with the current turn's timer waker, if the turn lent one. A wake-up of it
/// bumps [`timer_fires`] for that connection's later turns, then wakes the connection.
#[inline]
pub(crate) fn with_timer<R>(f: impl FnOnce(Option<&Waker>) -> R) -> R {
    TIMER.with(|timer| {
        let waker = timer.take();
        let result = f(waker.as_ref());
        timer.set(waker);
        result
    })
}

/// While it lives, [`current`] is a turn number used by no other turn.
#[cfg(feature = "server")]
pub(crate) struct Turn<'a> {
    previous: u64,
    previous_waker: (usize, usize),
    previous_timer: Option<Waker>,
    previous_fires: u64,
    /// Where the lent timer waker goes back to when the turn ends.
    timer: Option<&'a mut Option<Waker>>,
}

#[cfg(all(test, feature = "server"))]
impl Turn<'static> {
    /// Starts a new turn (one poll of one connection) that lends no timer waker.
    #[inline]
    pub(crate) fn start(waker: &Waker) -> Self {
        Turn::lending(waker, None, 0)
    }
}

#[cfg(feature = "server")]
impl<'a> Turn<'a> {
    /// Starts a new turn (one poll of one connection), lending it the connection's timer
    /// waker (taken from `timer`, put back when the turn ends) and its wake-up count `fires`,
    /// read after the connection's `queued` flag was cleared.
    #[inline]
    pub(crate) fn lending(waker: &Waker, timer: Option<&'a mut Option<Waker>>, fires: u64) -> Self {
        let mut next = NEXT.with(Cell::get);
        if next % BLOCK == 0 {
            next = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
        }
        NEXT.with(|n| n.set(next + 1));
        let mut timer = timer;
        let lent = timer.as_mut().and_then(|home| home.take());
        Self {
            previous: CURRENT.with(|current| current.replace(next)),
            previous_waker: WAKER.with(|w| w.replace(key(waker))),
            previous_timer: TIMER.with(|t| t.replace(lent)),
            previous_fires: FIRES.with(|f| f.replace(fires)),
            timer,
        }
    }
}

#[cfg(feature = "server")]
impl Drop for Turn<'_> {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
        WAKER.with(|w| w.set(self.previous_waker));
        let lent = TIMER.with(|t| t.replace(self.previous_timer.take()));
        if let Some(home) = self.timer.take() {
            *home = lent;
        }
        FIRES.with(|f| f.set(self.previous_fires));
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
