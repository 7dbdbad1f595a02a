use std::{
    any::Any,
    fmt,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use futures_core::{FusedStream, Stream};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::ReusableBoxFuture;

use super::{
    Hub, Inner, SubscribeError, SubscribeRequest,
    topic::{LiveReceiver, Topic},
};
use crate::{
    EncodedEvent, Event,
    replay::{Handoff, Overlap, Replay, UnknownId},
};

/// Builds a [`Subscription`]. Made by [`Hub::subscriber`].
///
/// ```
/// use tower_sse::{hub::Hub, replay::UnknownId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let sub = hub
///     .subscriber("room/1")
///     .last_event_id(None)
///     .client_id("user-7")
///     .on_unknown_id(UnknownId::LiveOnly)
///     .subscribe()
///     .await
///     .unwrap();
/// assert_eq!(sub.topic(), "room/1");
/// # }
/// ```
#[must_use]
pub struct SubscribeBuilder<'a> {
    hub: &'a Hub,
    request: SubscribeRequest<'a>,
    on_unknown_id: Option<UnknownId>,
}

impl<'a> SubscribeBuilder<'a> {
    pub(super) fn new(hub: &'a Hub, topic: &'a str) -> Self {
        Self {
            hub,
            request: SubscribeRequest {
                topic,
                client_id: None,
                last_event_id: None,
                claims: None,
            },
            on_unknown_id: None,
        }
    }

    /// Resume after this id (the request's `Last-Event-ID`). `None` and the empty string mean
    /// live events only.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub, replay::Replay};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let first = hub.publish("t", Event::new().data("1")).await.unwrap();
    /// hub.publish("t", Event::new().data("2")).await.unwrap();
    /// let sub = hub.subscriber("t").last_event_id(first.id()).subscribe().await.unwrap();
    /// assert_eq!(sub.replay(), Replay::Complete);
    /// assert_eq!(sub.backlog_len(), 1);
    /// # }
    /// ```
    pub fn last_event_id(mut self, id: Option<&'a str>) -> Self {
        self.request.last_event_id = id.filter(|id| !id.is_empty());
        self
    }

    /// Address this connection as `client_id` too, for [`Hub::send_to`]. A client id may have
    /// several connections; each gets the event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let _sub = hub.subscriber("t").client_id("c1").subscribe().await.unwrap();
    /// assert_eq!(hub.send_to("c1", tower_sse::Event::new().data("hi")).await.unwrap(), 1);
    /// # }
    /// ```
    pub fn client_id(mut self, client_id: &'a str) -> Self {
        self.request.client_id = Some(client_id);
        self
    }

    /// Claims for the [`Authorizer`](super::Authorizer), read back with
    /// [`SubscribeRequest::claims`].
    ///
    /// ```
    /// use tower_sse::hub::{Hub, SubscribeRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::builder()
    ///     .authorizer(|req: &SubscribeRequest<'_>| req.claims::<&str>() == Some(&"admin"))
    ///     .build();
    /// assert!(hub.subscriber("t").claims(&"admin").subscribe().await.is_ok());
    /// # }
    /// ```
    pub fn claims<T: Any + Send + Sync>(mut self, claims: &'a T) -> Self {
        self.request.claims = Some(claims);
        self
    }

    /// Overrides [`HubBuilder::on_unknown_id`](super::HubBuilder::on_unknown_id) for this
    /// subscription.
    ///
    /// ```
    /// use tower_sse::{Event, hub::Hub, replay::UnknownId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// hub.publish("t", Event::new().data("x")).await.unwrap();
    /// let sub = hub
    ///     .subscriber("t")
    ///     .last_event_id(Some("nope"))
    ///     .on_unknown_id(UnknownId::SendHistory)
    ///     .subscribe()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(sub.backlog_len(), 1);
    /// # }
    /// ```
    pub fn on_unknown_id(mut self, on_unknown_id: UnknownId) -> Self {
        self.on_unknown_id = Some(on_unknown_id);
        self
    }

    /// Checks the [`Authorizer`](super::Authorizer), then atomically takes the replay backlog
    /// and starts receiving live events.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Forbidden`] when the authorizer refuses,
    /// [`SubscribeError::UnknownTopic`] when the topic does not exist and the hub does not
    /// create topics on demand.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let sub = tower_sse::hub::Hub::new().subscriber("t").subscribe().await.unwrap();
    /// # drop(sub);
    /// # }
    /// ```
    pub async fn subscribe(self) -> Result<Subscription, SubscribeError> {
        self.hub
            .inner
            .subscribe_any(&self.request, self.on_unknown_id)
            .await
    }
}

impl fmt::Debug for SubscribeBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeBuilder")
            .field("request", &self.request)
            .field("on_unknown_id", &self.on_unknown_id)
            .finish()
    }
}

type Received = (
    Result<EncodedEvent, RecvError>,
    broadcast::Receiver<EncodedEvent>,
);

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
/// Both ways spend tokio's co-operative budget, as tokio's own receive does.
pub(super) struct Recv {
    /// The receiver while no receive is parked.
    idle: Option<broadcast::Receiver<EncodedEvent>>,
    parked: Option<ReusableBoxFuture<'static, Received>>,
    gate: Option<Gate>,
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
        }
    }

    /// A receiver without a send count: it always waits through the future.
    pub(super) fn new(receiver: broadcast::Receiver<EncodedEvent>) -> Self {
        Self {
            idle: Some(receiver),
            parked: None,
            gate: None,
        }
    }

    #[inline]
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<EncodedEvent, RecvError>> {
        if let Some(receiver) = &mut self.idle {
            let waiting = self
                .gate
                .as_ref()
                .is_some_and(|gate| gate.sent.load(Ordering::Acquire) != gate.seen);
            if waiting {
                // As tokio's own receive does: spend the task's co-operative budget, so that a
                // consumer of a ring that never runs dry still yields to other tasks.
                let coop = ready!(tokio::task::coop::poll_proceed(cx));
                match receiver.try_recv() {
                    Ok(event) => {
                        coop.made_progress();
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
        let (result, receiver) = ready!(parked.poll(cx));
        self.idle = Some(receiver);
        Poll::Ready(result.map(|event| self.read(event)))
    }

    #[inline]
    fn read(&mut self, event: EncodedEvent) -> EncodedEvent {
        if let Some(gate) = &mut self.gate {
            gate.seen = gate.seen.wrapping_add(1);
        }
        event
    }

    /// Moves the receiver into the (reused) boxed receive future.
    fn park(&mut self) {
        if let Some(receiver) = self.idle.take() {
            match &mut self.parked {
                Some(parked) => parked.set(recv(receiver)),
                None => self.parked = Some(ReusableBoxFuture::new(recv(receiver))),
            }
        }
    }
}

async fn recv(mut receiver: broadcast::Receiver<EncodedEvent>) -> Received {
    let result = receiver.recv().await;
    (result, receiver)
}

/// A stream of one topic's events (and, with a client id, the events sent to that client).
///
/// First the replay backlog, then live events, with no gap and no duplicate between the two.
/// Every item is a handle to bytes encoded once for all subscribers.
///
/// The stream ends when:
/// - the topic is closed with [`Hub::close_topic`] (after the final event, if any);
/// - the subscriber falls more than the ring capacity behind
///   ([`HubBuilder::subscriber_capacity`](super::HubBuilder::subscriber_capacity)); this is
///   counted in [`HubStats::slow_disconnects`](super::HubStats::slow_disconnects), and the client
///   is expected to reconnect with its `Last-Event-ID`.
///
/// Dropping it (or reaching its end) releases its place in the hub at once.
///
/// # Example
///
/// ```
/// use futures_util::StreamExt;
/// use tower_sse::{Event, hub::Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let mut sub = hub.subscribe("t").await.unwrap();
/// hub.publish("t", Event::new().data("hi")).await.unwrap();
/// hub.close_topic("t", None).await.unwrap();
/// let event = sub.next().await.unwrap();
/// assert!(event.as_bytes().starts_with(b"data: hi\nid: "));
/// assert!(sub.next().await.is_none());
/// # }
/// ```
pub struct Subscription {
    replay: Replay,
    /// The replay backlog, and (with a broker) which live events it already held.
    handoff: Handoff,
    /// `None` once the stream has ended.
    live: Option<Recv>,
    /// Boxed: most subscriptions have no client id, and every byte here is per connection.
    client: Option<Box<ClientRecv>>,
    hub: Arc<Inner>,
    topic: Arc<Topic>,
    /// Whether this subscription still counts as a subscriber of `topic`.
    registered: bool,
}

/// The events sent to a subscription's client id.
struct ClientRecv {
    id: Box<str>,
    /// `None` once the client's channel is gone.
    recv: Option<Recv>,
    /// Whether the client's events come first on the next poll (they take turns with the
    /// topic's).
    first: bool,
}

enum Polled {
    Event(EncodedEvent),
    End,
    Idle,
}

impl Subscription {
    pub(super) fn new(
        hub: Arc<Inner>,
        topic: Arc<Topic>,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        live: Recv,
        client: Option<(Box<str>, Recv)>,
    ) -> Self {
        Self {
            replay,
            handoff: Handoff::new(backlog, Overlap::None),
            live: Some(live),
            client: client.map(|(id, recv)| {
                Box::new(ClientRecv {
                    id,
                    recv: Some(recv),
                    first: false,
                })
            }),
            hub,
            topic,
            registered: true,
        }
    }

    /// Skips live events at or before broker position `pos` (as `position` reads it from an
    /// id), which the backlog holds.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn skip_through(mut self, pos: u128, position: fn(&str) -> Option<u128>) -> Self {
        if pos != 0 {
            self.handoff.set_overlap(Overlap::Through(pos, position));
        }
        self
    }

    /// How the `Last-Event-ID` was honoured.
    ///
    /// ```
    /// use tower_sse::{hub::Hub, replay::Replay};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// assert_eq!(hub.subscribe("t").await.unwrap().replay(), Replay::NotRequested);
    /// let sub = hub.subscriber("t").last_event_id(Some("bogus")).subscribe().await.unwrap();
    /// assert_eq!(sub.replay(), Replay::HistoryLost);
    /// # }
    /// ```
    pub fn replay(&self) -> Replay {
        self.replay
    }

    /// Sends `event` first, before any replayed event, when [`replay`](Self::replay) is
    /// [`Replay::HistoryLost`]; does nothing otherwise. The in-band twin of the
    /// [`REPLAY_HEADER`](crate::replay::REPLAY_HEADER) response header, for clients that cannot read
    /// response headers (a browser's `EventSource`).
    ///
    /// Give `event` an `event:` type and **no id**: an id would replace the id the client
    /// tracks. It is encoded here, once per subscription that lost its history.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// hub.publish("t", Event::new().data("kept")).await.unwrap();
    /// let mut sub = hub
    ///     .subscriber("t")
    ///     .last_event_id(Some("evicted-long-ago"))
    ///     .subscribe()
    ///     .await
    ///     .unwrap()
    ///     .notify_history_lost(Event::new().event("history-lost").data("reload"));
    /// assert_eq!(sub.backlog_len(), 1); // the notice is not a replayed event
    /// assert_eq!(&sub.next().await.unwrap().as_bytes()[..], b"event: history-lost\ndata: reload\n\n");
    /// assert_eq!(sub.backlog_len(), 1);
    /// assert!(sub.next().await.unwrap().as_bytes().starts_with(b"data: kept\n"));
    ///
    /// // A subscription that lost nothing is left alone.
    /// let mut live = hub.subscribe("t").await.unwrap().notify_history_lost(Event::new().event("x"));
    /// hub.publish("t", Event::new().data("new")).await.unwrap();
    /// assert!(live.next().await.unwrap().as_bytes().starts_with(b"data: new\n"));
    /// # }
    /// ```
    pub fn notify_history_lost(mut self, event: Event) -> Self {
        if self.replay.is_lost() && self.live.is_some() {
            self.handoff.notify(event);
        }
        self
    }

    /// How many replayed events are still to come before the live ones.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert_eq!(tower_sse::hub::Hub::new().subscribe("t").await.unwrap().backlog_len(), 0);
    /// # }
    /// ```
    pub fn backlog_len(&self) -> usize {
        self.handoff.backlog_len()
    }

    /// The topic.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert_eq!(tower_sse::hub::Hub::new().subscribe("t").await.unwrap().topic(), "t");
    /// # }
    /// ```
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The client id, if one was given.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let sub = hub.subscriber("t").client_id("c").subscribe().await.unwrap();
    /// assert_eq!(sub.client_id(), Some("c"));
    /// # }
    /// ```
    pub fn client_id(&self) -> Option<&str> {
        self.client.as_ref().map(|client| &*client.id)
    }

    /// Ends the stream and gives back everything it held in the hub.
    fn release(&mut self) {
        self.live = None;
        self.handoff.clear();
        if std::mem::take(&mut self.registered) {
            self.hub.leave_topic(&self.topic);
        }
        if let Some(client) = self.client.take() {
            self.hub.leave_client(&client.id);
        }
    }

    fn slow(&mut self, skipped: u64) -> Polled {
        self.hub.count_slow_disconnect();
        tracing::debug!(
            topic = %self.topic.name,
            skipped,
            "hub subscriber fell behind; disconnecting it"
        );
        self.release();
        Polled::End
    }

    fn poll_live(&mut self, cx: &mut Context<'_>) -> Polled {
        let Some(live) = &mut self.live else {
            return Polled::End;
        };
        let mut polled = live.poll(cx);
        // Drop the live events that the backlog already held (a broker's replay).
        while let Poll::Ready(Ok(event)) = &polled {
            if self.handoff.admit(event) {
                break;
            }
            polled = live.poll(cx);
        }
        match polled {
            Poll::Pending => Polled::Idle,
            Poll::Ready(Ok(event)) => Polled::Event(event),
            Poll::Ready(Err(RecvError::Closed)) => {
                self.release();
                Polled::End
            }
            Poll::Ready(Err(RecvError::Lagged(skipped))) => self.slow(skipped),
        }
    }

    fn poll_client(&mut self, cx: &mut Context<'_>) -> Polled {
        let Some(client) = self.client.as_mut() else {
            return Polled::Idle;
        };
        let Some(recv) = &mut client.recv else {
            return Polled::Idle;
        };
        match recv.poll(cx) {
            Poll::Pending => Polled::Idle,
            Poll::Ready(Ok(event)) => Polled::Event(event),
            Poll::Ready(Err(RecvError::Closed)) => {
                client.recv = None;
                Polled::Idle
            }
            Poll::Ready(Err(RecvError::Lagged(skipped))) => self.slow(skipped),
        }
    }
}

impl Stream for Subscription {
    type Item = EncodedEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        let this = self.get_mut();
        if let Some(event) = this.handoff.next() {
            return Poll::Ready(Some(event));
        }
        if this.live.is_none() {
            return Poll::Ready(None);
        }
        let Some(client) = &this.client else {
            return match this.poll_live(cx) {
                Polled::Event(event) => Poll::Ready(Some(event)),
                Polled::End => Poll::Ready(None),
                Polled::Idle => Poll::Pending,
            };
        };
        // Take turns, so a busy topic cannot starve events sent to the client (or back).
        let client_first = client.first;
        for from_client in [client_first, !client_first] {
            let polled = if from_client {
                this.poll_client(cx)
            } else {
                this.poll_live(cx)
            };
            match polled {
                Polled::Event(event) => {
                    if let Some(client) = &mut this.client {
                        client.first = !from_client;
                    }
                    return Poll::Ready(Some(event));
                }
                Polled::End => return Poll::Ready(None),
                Polled::Idle => {}
            }
        }
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.live {
            Some(_) => (self.handoff.backlog_len(), None),
            None => (0, Some(0)),
        }
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.live.is_none()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic.name)
            .field("client_id", &self.client_id())
            .field("replay", &self.replay)
            .field("backlog", &self.backlog_len())
            .field("ended", &self.live.is_none())
            .finish()
    }
}
