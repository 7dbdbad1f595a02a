use std::{
    any::Any,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_core::{FusedStream, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::{
    Hub, Matcher, PrivateAccess, SubscribeError, SubscribeRequest,
    auth::visible,
    local::Local,
    merge::{Merge, Merged, Owner},
    recv::Recv,
    select::Selection,
    topic::Topic,
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
    selection: Selection<'a>,
    request: SubscribeRequest<'a>,
    on_unknown_id: Option<UnknownId>,
    access: Option<Arc<dyn PrivateAccess>>,
    until: Option<tokio::time::Instant>,
}

impl<'a> SubscribeBuilder<'a> {
    pub(super) fn new(hub: &'a Hub) -> Self {
        Self {
            hub,
            selection: Selection::default(),
            request: SubscribeRequest {
                topic: "",
                pattern: None,
                client_id: None,
                last_event_id: None,
                claims: None,
            },
            on_unknown_id: None,
            access: None,
            until: None,
        }
    }

    /// Ends the stream at `deadline` (a token's expiry, a maximum lifetime): the client comes
    /// back with its `Last-Event-ID`, and whatever credentials it has then. The stream ends
    /// cleanly (what was on its way is delivered first only if it was already read); a
    /// deadline already past gives a stream that ends at once. A `std` or a `tokio` `Instant`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// use futures_util::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = tower_sse::hub::Hub::new();
    /// let mut sub = hub
    ///     .subscriber("t")
    ///     .until(Instant::now() + Duration::from_millis(10))
    ///     .subscribe()
    ///     .await
    ///     .unwrap();
    /// assert!(sub.next().await.is_none(), "ended at the deadline");
    /// assert_eq!(hub.subscriber_count("t"), 0, "its place given back");
    /// # }
    /// ```
    pub fn until(mut self, deadline: impl Into<tokio::time::Instant>) -> Self {
        self.until = Some(deadline.into());
        self
    }

    /// Which private events this subscription may receive, live and replayed (none by
    /// default). See [`PrivateAccess`].
    ///
    /// ```
    /// use tower_sse::hub::{Hub, PrivateEvent};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let user = String::from("alice");
    /// let inbox = format!("inbox/{user}");
    /// let sub = hub
    ///     .subscriber(&inbox)
    ///     .private_access(move |event: &PrivateEvent<'_>| {
    ///         event.topics().any(|topic| topic == format!("inbox/{user}"))
    ///     })
    ///     .subscribe()
    ///     .await
    ///     .unwrap();
    /// # drop(sub);
    /// # }
    /// ```
    pub fn private_access(mut self, access: impl PrivateAccess) -> Self {
        self.access = Some(Arc::new(access));
        self
    }

    /// Follow `topic` too: one stream of every followed topic's events, in the hub's order,
    /// resumable with one `Last-Event-ID` (see [Many topics](super#many-topics-one-stream)).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, hub::Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut sub = hub.subscriber("room/1").topic("dm/alice").subscribe().await.unwrap();
    /// hub.publish("dm/alice", Event::new().data("psst")).await.unwrap();
    /// hub.publish("room/1", Event::new().data("hi all")).await.unwrap();
    /// assert!(sub.next().await.unwrap().as_bytes().starts_with(b"data: psst\n"));
    /// assert!(sub.next().await.unwrap().as_bytes().starts_with(b"data: hi all\n"));
    /// # }
    /// ```
    pub fn topic(mut self, topic: &'a str) -> Self {
        self.selection.topics.push(topic);
        self
    }

    /// Follow every topic that `matcher` matches, those that exist now and those made later
    /// (see [`Pattern`](super::Pattern) for the built-in ones).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tower_sse::{Event, hub::{Hub, Pattern}};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let mut rooms = hub.subscription().pattern(Pattern::glob("rooms/*").unwrap()).subscribe().await.unwrap();
    /// hub.publish("rooms/7", Event::new().data("new room")).await.unwrap();
    /// hub.publish("users/bob", Event::new().data("not a room")).await.unwrap();
    /// hub.publish("rooms/1", Event::new().data("hi")).await.unwrap();
    /// assert!(rooms.next().await.unwrap().as_bytes().starts_with(b"data: new room\n"));
    /// assert!(rooms.next().await.unwrap().as_bytes().starts_with(b"data: hi\n"));
    /// # }
    /// ```
    pub fn pattern(mut self, matcher: impl Matcher) -> Self {
        self.selection.patterns.push(Arc::new(matcher));
        self
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
        let Self {
            hub,
            mut selection,
            request,
            on_unknown_id,
            access,
            until,
        } = self;
        let mut subscription = hub
            .subscribe_with(&mut selection, request, on_unknown_id, access)
            .await?;
        if let Some(deadline) = until {
            subscription.rare().deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
        }
        Ok(subscription)
    }
}

impl fmt::Debug for SubscribeBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeBuilder")
            .field("selection", &self.selection)
            .field("request", &self.request)
            .field("on_unknown_id", &self.on_unknown_id)
            .field("until", &self.until)
            .finish()
    }
}

/// A stream of one topic's events (and, with a client id, the events sent to that client).
///
/// First the replay backlog, then live events, with no gap and no duplicate between the two.
/// Every item is a handle to bytes encoded once for all subscribers.
///
/// The stream ends when:
/// - the topic is closed with [`Hub::close_topic`] (after the final event, if any);
/// - its deadline ([`SubscribeBuilder::until`]) passes;
/// - its client id is disconnected ([`Hub::disconnect`]);
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
// `repr(C)`: what every poll reads comes first, in declaration order; each connection's copy
// is cold when its next event comes (`BENCHMARKS.md`, session 10). Aligned to a cache line,
// as it is boxed as a response's stream, and the two fields a poll reads (`live`, 56 bytes
// with one ring, and `rare`) fill that one line (session 13; two lines before, three at an
// allocator's 16-byte alignment).
#[repr(C, align(64))]
pub struct Subscription {
    /// `None` once the stream has ended and its places in the hub are given back.
    live: Option<Live>,
    /// What most subscriptions never have or soon give up; `None` then, so that a poll reads
    /// one pointer for all of it.
    rare: Option<Box<Rare>>,
    replay: Replay,
    hub: Arc<Local>,
    target: Target,
}

/// What most subscriptions do not have (see [`Subscription`]).
#[derive(Default)]
struct Rare {
    /// When it ends ([`SubscribeBuilder::until`]).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Its client id and the id's events.
    client: Option<Box<ClientRecv>>,
    /// Which private events it may receive (none without).
    access: Option<Arc<dyn PrivateAccess>>,
    /// The replay backlog, and (with a broker) which live events it already held; dropped once
    /// both are done.
    handoff: Option<Box<Handoff>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.deadline.is_none()
            && self.client.is_none()
            && self.access.is_none()
            && self.handoff.is_none()
    }
}

/// Where live events come from.
enum Live {
    /// One topic's ring (the fast path).
    One(Recv),
    /// Several rings, merged in position order.
    /// Boxed: a merge is 64 bytes, and the one-ring case fits a cache line with the
    /// subscription's other per-poll field without it (session 13).
    Many(Box<Merge>),
}

/// What the subscription is of, for [`Subscription::topic`] and for leaving.
enum Target {
    One(Arc<Topic>),
    /// Several topics and patterns: the first one's name (or pattern key).
    Many(Box<str>),
}

/// A subscription's client id, its receiver of the id's events and the registration it
/// joined (from `Local::join_client`).
pub(super) type ClientJoin = (Box<str>, (Recv, u64));

/// The events sent to a subscription's client id.
struct ClientRecv {
    id: Box<str>,
    /// The registration of the id this subscription counts in.
    generation: u64,
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

impl Polled {
    /// As the stream's answer.
    #[inline]
    fn into_poll(self) -> Poll<Option<EncodedEvent>> {
        match self {
            Self::Event(event) => Poll::Ready(Some(event)),
            Self::End => Poll::Ready(None),
            Self::Idle => Poll::Pending,
        }
    }
}

impl Subscription {
    pub(super) fn new(
        hub: Arc<Local>,
        topic: Arc<Topic>,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        live: Recv,
        client: Option<ClientJoin>,
    ) -> Self {
        Self::with_feed(
            hub,
            Target::One(topic),
            Live::One(live),
            replay,
            backlog,
            client,
        )
    }

    /// A subscription over several rings; `label` is its first topic or pattern.
    pub(super) fn merged(
        hub: Arc<Local>,
        label: &str,
        merge: Merge,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        client: Option<ClientJoin>,
    ) -> Self {
        Self::with_feed(
            hub,
            Target::Many(label.into()),
            Live::Many(Box::new(merge)),
            replay,
            backlog,
            client,
        )
    }

    fn with_feed(
        hub: Arc<Local>,
        target: Target,
        live: Live,
        replay: Replay,
        backlog: Vec<EncodedEvent>,
        client: Option<ClientJoin>,
    ) -> Self {
        crate::metrics::replay(replay);
        let rare = Rare {
            handoff: (!backlog.is_empty()).then(|| Box::new(Handoff::new(backlog, Overlap::None))),
            client: client.map(|(id, (recv, generation))| {
                Box::new(ClientRecv {
                    id,
                    generation,
                    recv: Some(recv),
                    first: false,
                })
            }),
            ..Rare::default()
        };
        Self {
            replay,
            live: Some(live),
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
            hub,
            target,
        }
    }

    /// The rare part, made when something in it is first set.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the rare part once nothing is left in it (its handoff done, its client gone), so
    /// that polls go back to reading one cache line.
    fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|rare| rare.is_empty()) {
            self.rare = None;
        }
    }

    /// Sets which private events the live stream may deliver (the backlog was filtered by
    /// the same access when it was taken).
    pub(super) fn with_access(mut self, access: Option<Arc<dyn PrivateAccess>>) -> Self {
        if access.is_some() {
            self.rare().access = access;
        }
        self
    }

    /// Skips live events at or before broker position `pos`, which the backlog holds.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    pub(super) fn skip_through(mut self, pos: u128) -> Self {
        if pos != 0 {
            self.handoff().set_overlap(Overlap::Through(pos));
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
            self.handoff().notify(event);
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
        self.rare
            .as_ref()
            .and_then(|rare| rare.handoff.as_ref())
            .map_or(0, |handoff| handoff.backlog_len())
    }

    /// The handoff, made empty if there was none.
    #[cfg_attr(not(feature = "_broker"), allow(dead_code))]
    fn handoff(&mut self) -> &mut Handoff {
        self.rare()
            .handoff
            .get_or_insert_with(|| Box::new(Handoff::new(Vec::new(), Overlap::None)))
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
        match &self.target {
            Target::One(topic) => &topic.name,
            Target::Many(label) => label,
        }
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
        self.rare
            .as_ref()
            .and_then(|rare| rare.client.as_ref())
            .map(|client| &*client.id)
    }

    /// Ends the stream and gives back everything it held in the hub.
    fn release(&mut self) {
        // The backlog, deadline and access go now; the client id is left below.
        let client = self.rare.take().and_then(|rare| rare.client);
        match self.live.take() {
            None => {}
            Some(Live::One(_)) => {
                if let Target::One(topic) = &self.target {
                    self.hub.leave_topic(topic);
                }
                self.hub.count_leave();
            }
            Some(Live::Many(mut merge)) => {
                for source in merge.take_sources() {
                    match source.owner {
                        Owner::Topic(topic) => self.hub.leave_topic(&topic),
                        Owner::Pattern(key, ring) => self.hub.leave_pattern(&key, ring),
                    }
                }
                self.hub.count_leave();
            }
        }
        if let Some(client) = client {
            self.hub.leave_client(&client.id, client.generation);
        }
    }

    fn slow(&mut self, skipped: u64) -> Polled {
        self.hub.count_slow_disconnect();
        tracing::debug!(
            topic = %self.topic(),
            skipped,
            "hub subscriber fell behind; disconnecting it"
        );
        self.release();
        Polled::End
    }

    /// [`Stream::poll_next`] with the rare part: the deadline, the backlog, the client id's
    /// events.
    #[inline(never)]
    fn poll_rare(&mut self, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        let polled = self.poll_rare_parts(cx);
        self.tidy();
        polled
    }

    fn poll_rare_parts(&mut self, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        if let Some(deadline) = self.rare.as_mut().and_then(|rare| rare.deadline.as_mut()) {
            if deadline.as_mut().poll(cx).is_ready() {
                self.release();
                return Poll::Ready(None);
            }
        }
        if let Some(rare) = &mut self.rare {
            if let Some(event) = rare.handoff.as_mut().and_then(|handoff| handoff.next()) {
                return Poll::Ready(Some(event));
            }
            forget_if_done(&mut rare.handoff);
        }
        if self.live.is_none() {
            return Poll::Ready(None);
        }
        let Some(client_first) = self
            .rare
            .as_ref()
            .and_then(|rare| rare.client.as_ref())
            .map(|client| client.first)
        else {
            return self.poll_live(cx).into_poll();
        };
        // Take turns, so a busy topic cannot starve events sent to the client (or back).
        for from_client in [client_first, !client_first] {
            let polled = if from_client {
                self.poll_client(cx)
            } else {
                self.poll_live(cx)
            };
            match polled {
                Polled::Event(event) => {
                    if let Some(client) = self.rare.as_mut().and_then(|rare| rare.client.as_mut()) {
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

    #[inline]
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Polled {
        let (access, mut handoff) = match &mut self.rare {
            Some(rare) => (rare.access.as_deref(), Some(&mut rare.handoff)),
            None => (None, None),
        };
        let polled = match &mut self.live {
            None => return Polled::End,
            // Skip private events it may not see, and the live events that the backlog already
            // held (a broker's replay).
            Some(Live::One(live)) => live.poll_event(cx, |item| {
                visible(access, item.audience.as_ref())
                    && handoff
                        .as_mut()
                        .is_none_or(|handoff| admit(handoff, &item.event, item.pos()))
            }),
            Some(Live::Many(merge)) => loop {
                match merge.poll(cx) {
                    Merged::Item(item) if !visible(access, item.audience.as_ref()) => {}
                    Merged::Item(item) => break Poll::Ready(Ok(item.event)),
                    Merged::Pending => break Poll::Pending,
                    Merged::Ended => break Poll::Ready(Err(RecvError::Closed)),
                    Merged::Lagged(skipped) => break Poll::Ready(Err(RecvError::Lagged(skipped))),
                }
            },
        };
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
        let Some(client) = self.rare.as_mut().and_then(|rare| rare.client.as_mut()) else {
            return Polled::Idle;
        };
        let Some(recv) = &mut client.recv else {
            return Polled::Idle;
        };
        match recv.poll(cx) {
            Poll::Pending => Polled::Idle,
            Poll::Ready(Ok(item)) => Polled::Event(item.event),
            Poll::Ready(Err(RecvError::Closed)) => {
                // The id was disconnected (`Hub::disconnect`): the stream ends.
                self.release();
                Polled::End
            }
            Poll::Ready(Err(RecvError::Lagged(skipped))) => self.slow(skipped),
        }
    }
}

/// Whether a live event is new (not one the backlog held); the handoff goes once it is done.
#[inline]
fn admit(handoff: &mut Option<Box<Handoff>>, event: &EncodedEvent, pos: u128) -> bool {
    let Some(overlap) = handoff else {
        return true;
    };
    let admitted = overlap.admit(event, pos);
    forget_if_done(handoff);
    admitted
}

/// Drops the handoff once its backlog is out and no live event is to be dropped.
#[inline]
fn forget_if_done(handoff: &mut Option<Box<Handoff>>) {
    if handoff.as_ref().is_some_and(|handoff| handoff.is_done()) {
        *handoff = None;
    }
}

impl Stream for Subscription {
    type Item = EncodedEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        let this = self.get_mut();
        if this.rare.is_some() {
            return this.poll_rare(cx);
        }
        // The common case: one line read, the live events only.
        this.poll_live(cx).into_poll()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.live {
            Some(_) => (self.backlog_len(), None),
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
            .field("topic", &self.topic())
            .field("client_id", &self.client_id())
            .field("replay", &self.replay)
            .field("backlog", &self.backlog_len())
            .field("ended", &self.live.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a poll of a subscription reads (`live` with one ring, `rare`) fits its first cache
    /// line: a subscription is cold when its next event comes, so each line is a miss per
    /// delivered event (`BENCHMARKS.md`, session 13). A field that grows `Recv` or moves
    /// these shows here first.
    #[test]
    fn a_polls_fields_fit_one_cache_line() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Subscription>(), 64);
        assert_eq!(offset_of!(Subscription, live), 0);
        assert!(
            offset_of!(Subscription, rare) + size_of::<Option<Box<Rare>>>() <= 64,
            "live: {} bytes",
            size_of::<Option<Live>>()
        );
    }
}
