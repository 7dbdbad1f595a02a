//! A subscriber's place in a ring, and what rings carry.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::ReusableBoxFuture;

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

/// A receiver of a ring, with the ring's send count as of when it joined.
pub(super) struct LiveReceiver {
    pub(super) receiver: broadcast::Receiver<Item>,
    /// The topic's count of events sent into the ring.
    pub(super) sent: Arc<AtomicU64>,
    /// `sent` when the receiver joined: it has read every event sent before.
    pub(super) seen: u64,
}

/// The sending half of a shared ring, with a count of what it sent, so that receivers can
/// tell without a lock whether anything waits for them.
pub(super) struct Ring {
    sender: broadcast::Sender<Item>,
    /// How many items went into the ring (changed only by the ring's owner, under its lock).
    sent: Arc<AtomicU64>,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            sent: Arc::default(),
        }
    }

    /// Sends `item` to every receiver; how many it reached.
    pub(super) fn send(&self, item: Item) -> usize {
        // Before the send, so that a receiver woken by it sees the new count (a parked
        // receiver that sees no new count does not poll its parked receive again, see
        // `Recv::poll`). A receiver that sees the count before the item is in the ring finds
        // the ring empty and parks, and the send wakes it. (A count with no receiver is
        // harmless: receivers start from the count as of when they join, under the same lock.)
        self.sent.fetch_add(1, Ordering::Release);
        // An error only means there is no receiver right now.
        self.sender.send(item).unwrap_or(0)
    }

    /// How many items the ring holds that its slowest receiver has not read.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn queued(&self) -> usize {
        self.sender.len()
    }

    /// A new receiver, which has read everything sent before.
    pub(super) fn receiver(&self) -> LiveReceiver {
        LiveReceiver {
            receiver: self.sender.subscribe(),
            sent: Arc::clone(&self.sent),
            seen: self.sent.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Before the sender goes (fields drop after this): the receivers its going wakes see
        // a new count, poll their parked receive and find the ring closed.
        self.sent.fetch_add(1, Ordering::Release);
    }
}

type Received = (Result<Item, RecvError>, broadcast::Receiver<Item>);

/// One subscriber's place in a ring.
///
/// A parked receiver lives in a boxed receive future, which registers the task to be woken; the
/// box is allocated at the first park and reused for every later one (same future type, same
/// layout).
///
/// A topic's receiver also knows how many events the topic has sent into its ring and how many
/// it has read (`gate`). While that says events are waiting, they are read straight from the
/// ring (`try_recv`: a slot read and a reference-count increment), not through the future; when
/// it says none are, the receiver parks at once, without `try_recv`'s own locked check first.
/// Both ways spend tokio's co-operative budget, as tokio's own receive does, unless the
/// receiver is one of several merged by one subscription ([`Recv::unbudgeted`]): there a
/// `Pending` must mean "nothing waiting", never "budget spent", and the merge spends the budget
/// once per event instead.
pub(super) struct Recv {
    /// The receiver while no receive is parked.
    idle: Option<broadcast::Receiver<Item>>,
    parked: Option<ReusableBoxFuture<'static, Received>>,
    gate: Option<Gate>,
    budgeted: bool,
    /// The waker the parked receive registered when it last returned `Pending` (with a
    /// gate): polled again by the same task while the ring's count has not moved, the parked
    /// receive is still registered and has nothing, so it is not polled (a lock saved on the
    /// poll after every frame).
    parked_waker: Option<std::task::Waker>,
}

struct Gate {
    sent: Arc<AtomicU64>,
    seen: u64,
}

impl Recv {
    /// A topic's receiver.
    pub(super) fn live(live: LiveReceiver) -> Self {
        Self {
            idle: Some(live.receiver),
            parked: None,
            gate: Some(Gate {
                sent: live.sent,
                seen: live.seen,
            }),
            budgeted: true,
            parked_waker: None,
        }
    }

    /// A topic's receiver that does not spend the co-operative budget (for a merge).
    pub(super) fn unbudgeted(live: LiveReceiver) -> Self {
        Self {
            budgeted: false,
            ..Self::live(live)
        }
    }

    /// A receiver without a send count: it always waits through the future.
    pub(super) fn new(receiver: broadcast::Receiver<Item>) -> Self {
        Self {
            idle: Some(receiver),
            parked: None,
            gate: None,
            budgeted: true,
            parked_waker: None,
        }
    }

    #[inline(always)]
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Item, RecvError>> {
        if let Some(receiver) = &mut self.idle {
            let waiting = self
                .gate
                .as_ref()
                .is_some_and(|gate| gate.sent.load(Ordering::Acquire) != gate.seen);
            if waiting {
                // As tokio's own receive does: spend the task's co-operative budget, so that a
                // consumer of a ring that never runs dry still yields to other tasks.
                let coop = if self.budgeted {
                    Some(ready!(tokio::task::coop::poll_proceed(cx)))
                } else {
                    None
                };
                match receiver.try_recv() {
                    Ok(event) => {
                        if let Some(coop) = coop {
                            coop.made_progress();
                        }
                        return Poll::Ready(Ok(self.read(event)));
                    }
                    Err(TryRecvError::Lagged(skipped)) => {
                        return Poll::Ready(Err(RecvError::Lagged(skipped)));
                    }
                    Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError::Closed)),
                    Err(TryRecvError::Empty) => {}
                }
            }
            self.park();
        }
        let Some(parked) = &mut self.parked else {
            // `park` always leaves a parked receive when it takes the receiver.
            return Poll::Ready(Err(RecvError::Closed));
        };
        if let (Some(gate), Some(waker)) = (&self.gate, &self.parked_waker) {
            if gate.sent.load(Ordering::Acquire) == gate.seen && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        // tokio's receive returns `Pending` registered with the waker, except when the task's
        // co-operative budget is spent: then it returns `Pending` unregistered and the task is
        // woken to come back (found by `subscribers_racing_a_publisher_miss_no_wake_up`: such
        // a `Pending` taken for a registration left a subscriber waiting for a wake-up that
        // never came). An unbudgeted receive runs unconstrained, so it always registers.
        let registers = !self.budgeted || tokio::task::coop::has_budget_remaining();
        let Poll::Ready((result, receiver)) = parked.poll(cx) else {
            if self.gate.is_none() || !registers {
                self.parked_waker = None;
            } else if !self
                .parked_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                self.parked_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        self.parked_waker = None;
        self.idle = Some(receiver);
        Poll::Ready(result.map(|event| self.read(event)))
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

    #[inline]
    fn read(&mut self, event: Item) -> Item {
        if let Some(gate) = &mut self.gate {
            gate.seen = gate.seen.wrapping_add(1);
        }
        event
    }

    /// Moves the receiver into the (reused) boxed receive future.
    fn park(&mut self) {
        if let Some(receiver) = self.idle.take() {
            match (&mut self.parked, self.budgeted) {
                (Some(parked), true) => parked.set(recv(receiver)),
                (Some(parked), false) => parked.set(tokio::task::unconstrained(recv(receiver))),
                (None, true) => self.parked = Some(ReusableBoxFuture::new(recv(receiver))),
                (None, false) => {
                    let unconstrained = tokio::task::unconstrained(recv(receiver));
                    self.parked = Some(ReusableBoxFuture::new(unconstrained));
                }
            }
        }
    }
}

async fn recv(mut receiver: broadcast::Receiver<Item>) -> Received {
    let result = receiver.recv().await;
    (result, receiver)
}
