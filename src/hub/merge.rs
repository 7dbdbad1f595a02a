//! One subscription over several rings (topics and patterns), delivered in position order.
//!
//! Why this is exact: the hub pushes every ordered event into all of its rings under one lock
//! (the order lock), in position order. So once a receiver shows an event at position `p`,
//! every event before `p` is already visible in every other ring. The merge fills a head per
//! ring, then checks the empty rings once more before it hands out the smallest head: an event
//! with a smaller position would have been visible by then. An event reached through two rings
//! (a topic and a pattern, or two topics of one `publish_many`) has one position and is handed
//! out once.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::broadcast::error::RecvError;

use super::{
    recv::{Item, Recv},
    topic::Topic,
};

/// Whose ring a source reads, to give back its place when the subscription ends.
pub(super) enum Owner {
    Topic(Arc<Topic>),
    /// A pattern's ring, by the pattern's key and the ring's number (a ring made again under
    /// the same key, after `close_all`, is another one).
    Pattern(Box<str>, u64),
}

pub(super) struct Source {
    recv: Recv,
    head: Option<Item>,
    pub(super) owner: Owner,
}

impl Source {
    pub(super) fn new(recv: Recv, owner: Owner) -> Self {
        Self {
            recv,
            head: None,
            owner,
        }
    }
}

pub(super) struct Merge {
    pub(super) sources: Vec<Source>,
    /// The position of the last ordered event handed out (or of the last replayed one).
    last: u128,
}

pub(super) enum Merged {
    Item(Item),
    Pending,
    /// A ring closed (its topic was closed or removed, or the hub closed every pattern).
    Ended,
    /// One ring overwrote events this subscription had not read.
    Lagged(u64),
}

impl Merge {
    pub(super) fn new(sources: Vec<Source>, last: u128) -> Self {
        Self { sources, last }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Merged {
        // The rings' receivers do not spend the co-operative budget; the merge does, per event.
        let coop = match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(coop) => coop,
            Poll::Pending => return Merged::Pending,
        };
        let merged = self.poll_heads(cx);
        if let Poll::Ready(Merged::Item(_)) = &merged {
            coop.made_progress();
        }
        match merged {
            Poll::Ready(merged) => merged,
            Poll::Pending => Merged::Pending,
        }
    }

    fn poll_heads(&mut self, cx: &mut Context<'_>) -> Poll<Merged> {
        loop {
            let mut new = false;
            for source in &mut self.sources {
                while source.head.is_none() {
                    match source.recv.poll(cx) {
                        // Already handed out through another ring, or replayed.
                        Poll::Ready(Ok(item)) if item.pos() != 0 && item.pos() <= self.last => {}
                        Poll::Ready(Ok(item)) => {
                            source.head = Some(item);
                            new = true;
                        }
                        // A topic closed (or made again: its new ring is not this one), or every
                        // ring closed: the stream ends, and the client resumes from its last id.
                        // Going on without that topic would miss the topic made again under its
                        // name, silently.
                        Poll::Ready(Err(RecvError::Closed)) => return Poll::Ready(Merged::Ended),
                        Poll::Ready(Err(RecvError::Lagged(skipped))) => {
                            return Poll::Ready(Merged::Lagged(skipped));
                        }
                        Poll::Pending => break,
                    }
                }
            }
            // Events without a position are not ordered: out at once.
            if let Some(item) = self
                .sources
                .iter_mut()
                .find(|s| s.head.as_ref().is_some_and(|h| h.pos() == 0))
                .and_then(|s| s.head.take())
            {
                return Poll::Ready(Merged::Item(item));
            }
            if new {
                // Something came in: look at the empty rings once more before choosing.
                continue;
            }
            let Some(min) = self
                .sources
                .iter()
                .filter_map(|s| s.head.as_ref().map(|h| h.pos()))
                .min()
            else {
                return Poll::Pending;
            };
            let mut out = None;
            for source in &mut self.sources {
                if source.head.as_ref().is_some_and(|h| h.pos() == min) {
                    let head = source.head.take();
                    out = out.or(head);
                }
            }
            self.last = min;
            return match out {
                Some(item) => Poll::Ready(Merged::Item(item)),
                None => continue,
            };
        }
    }

    /// Gives back what the sources hold (the rings' places are released by the caller).
    pub(super) fn take_sources(&mut self) -> Vec<Source> {
        std::mem::take(&mut self.sources)
    }
}
