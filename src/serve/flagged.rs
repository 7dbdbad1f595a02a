//! A connection's read side, polled so that it is not asked again while it has nothing to
//! say.
//!
//! Why: the lean path watches the client's side of the socket while the body waits, and it
//! waits after every frame. Asking tokio for read readiness again takes the socket's waiter
//! lock each time (about 165 instructions per event, `BENCHMARKS.md`), although the
//! registration from the last wait is still in place. So the read side is polled with its
//! own waker, a [`ReadSide`] from the connection's driver: a wake-up through it sets the
//! connection's "read side woken" mark and wakes the connection. Until that mark is set, the
//! read side is known to be where it was and is not polled.
//!
//! The mark is a bit in a word of the driver's that 64 connections share (its `Chunk`), read
//! next to their `queued` bits and timer stamps (session 10 had it in an allocation of its
//! own, session 11 in each connection's waker: one more cold cache line per event,
//! `BENCHMARKS.md`, sessions 11 and 14).

use std::task::{Context, Poll};

use super::driver::{ReadMark, ReadSide};

/// The read side of a lean connection (`repr(C)`: what [`is_quiet`](Self::is_quiet) reads
/// first, the waker after it; 32 bytes).
#[repr(C)]
pub(super) struct Flagged {
    /// The source's last poll returned `Pending` with the read side's waker registered.
    armed: bool,
    /// The connection's bit in the mark.
    bit: u32,
    mark: ReadMark,
}

impl Flagged {
    /// A read side that wakes its connection through `side`.
    pub(super) fn new(side: ReadSide) -> Self {
        let (mark, bit) = side.into_parts();
        Self {
            armed: false,
            bit,
            mark,
        }
    }

    /// Whether the source has nothing new: its last poll registered the read side's waker and
    /// that waker has not been woken since.
    #[inline]
    pub(super) fn is_quiet(&self) -> bool {
        self.armed && !self.mark.woken(self.bit)
    }

    /// Forgets the registration: the source was polled another way since (its registration
    /// may now be someone else's waker), so the next poll goes through.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Polls the source with the read side's waker. `poll` returns what it has and whether it
    /// left that waker registered (a `Pending` that the source will wake).
    pub(super) fn poll<T>(
        &mut self,
        poll: impl FnOnce(&mut Context<'_>) -> (Poll<T>, bool),
    ) -> Poll<T> {
        // Before the poll: a wake-up from here on is a new one.
        self.mark.clear(self.bit);
        let (polled, registered) = poll(&mut Context::from_waker(self.mark.waker()));
        self.armed = registered;
        polled
    }
}
