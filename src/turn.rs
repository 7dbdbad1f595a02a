//! The poll of a lean connection running on this thread: a body polled twice within one
//! such poll knows that nothing it registered for was woken in between unnoticed.
//!
//! Why: after a frame the lean path polls the body again at once (the body contract: a frame
//! is not a registration). The event stream inside answered `Pending` a moment before, in the
//! same poll, and registered the task's waker; asking it again costs about 150 instructions
//! per delivered event for a known answer (`BENCHMARKS.md`, session 11).
//!
//! Why it is sound: `serve`'s driver clears a connection's "queued" flag before each poll of
//! it ([`Turn::start`] is called right after), and any wake-up from then on queues it again,
//! so it is polled again, in a new turn, where the stream is asked. Within a turn, a stream's
//! `Pending` stays true or a later turn follows. Outside a driver (hyper's connections, a
//! body polled anywhere else) there is no turn and nothing is skipped: there the second poll
//! may come in a later run of the task, after the wake-up an event caused.
//!
//! Turn numbers are unique across threads (each thread takes blocks of numbers from one
//! counter), because a driver may move to another thread between two polls of a body.

use std::cell::Cell;
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
}

#[cfg(feature = "server")]
thread_local! {
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// The current turn on this thread; `0` when none.
#[inline]
pub(crate) fn current() -> u64 {
    CURRENT.with(Cell::get)
}

/// While it lives, [`current`] is a turn number used by no other turn.
#[cfg(feature = "server")]
pub(crate) struct Turn(u64);

#[cfg(feature = "server")]
impl Turn {
    /// Starts a new turn (one poll of one connection).
    #[inline]
    pub(crate) fn start() -> Self {
        let mut next = NEXT.with(Cell::get);
        if next % BLOCK == 0 {
            next = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
        }
        NEXT.with(|n| n.set(next + 1));
        Self(CURRENT.with(|current| current.replace(next)))
    }
}

#[cfg(feature = "server")]
impl Drop for Turn {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn turns_differ_across_threads_and_end_with_their_guard() {
        assert_eq!(current(), 0);
        let mine: Vec<u64> = (0..3)
            .map(|_| {
                let turn = Turn::start();
                let n = current();
                drop(turn);
                n
            })
            .collect();
        assert_eq!(current(), 0, "no turn after the guard");
        let theirs = std::thread::spawn(|| {
            let _turn = Turn::start();
            current()
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
