//! A subscriber's place in a ring, and what rings carry.

use std::task::{Context, Poll};

use tokio::sync::broadcast::error::RecvError;

use crate::{EncodedEvent, replay::Audience};

/// What a ring carries: an event and its position in the hub's order (`0`: none, for events
/// that are not ordered, such as those sent to one client).
#[derive(Clone)]
pub(super) struct Item {
    /// The position as two halves (high, low): a `u128` would make every ring slot 16-byte
    /// aligned and 8 bytes larger. Read it with [`pos`](Self::pos).
    pos: [u64; 2],
    pub(super) event: EncodedEvent,
    /// For a private event: its topics, for the subscriber's `PrivateAccess`.
    pub(super) audience: Option<Audience>,
}

impl Item {
    pub(super) fn new(pos: u128, event: EncodedEvent) -> Self {
        Self {
            pos: [(pos >> 64) as u64, pos as u64],
            event,
            audience: None,
        }
    }

    #[inline]
    pub(super) fn pos(&self) -> u128 {
        (u128::from(self.pos[0]) << 64) | u128::from(self.pos[1])
    }

    pub(super) fn unordered(event: EncodedEvent) -> Self {
        Self::new(0, event)
    }
}

/// The hub's ring of items (see [`super::ring`]).
pub(super) type Ring = super::ring::Ring<Item>;

/// A receiver of a ring, made under the lock of what owns the ring, so that it has read
/// everything sent before it joined.
pub(super) type LiveReceiver = super::ring::Receiver<Item>;

/// One subscriber's place in a ring.
///
/// Reads spend tokio's co-operative budget, as tokio's own channels do, unless the receiver
/// is one of several merged by one subscription ([`Recv::unbudgeted`]): there a `Pending` must
/// mean "nothing waiting", never "budget spent", and the merge spends the budget once per
/// event instead.
pub(super) struct Recv {
    receiver: LiveReceiver,
    budgeted: bool,
}

impl Recv {
    /// A topic's (or a client id's) receiver.
    pub(super) fn live(receiver: LiveReceiver) -> Self {
        Self {
            receiver,
            budgeted: true,
        }
    }

    /// A topic's receiver that does not spend the co-operative budget (for a merge).
    pub(super) fn unbudgeted(receiver: LiveReceiver) -> Self {
        Self {
            receiver,
            budgeted: false,
        }
    }

    #[inline(always)]
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Item, RecvError>> {
        self.receiver.poll_recv(cx, self.budgeted)
    }

    /// The next item that `keep` accepts, as its event: the fast path of a single-ring
    /// subscription (the item's position and audience stay inside this call).
    #[inline(always)]
    pub(super) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        mut keep: impl FnMut(&Item) -> bool,
    ) -> Poll<Result<EncodedEvent, RecvError>> {
        loop {
            match self.poll(cx) {
                Poll::Ready(Ok(item)) => {
                    if keep(&item) {
                        return Poll::Ready(Ok(item.event));
                    }
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
