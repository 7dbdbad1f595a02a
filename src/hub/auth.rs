use std::{any::Any, fmt};

/// What a subscriber asks for, as the [`Authorizer`] sees it.
///
/// Everything here may come from the network: treat it as untrusted input.
///
/// ```
/// use tower_sse::hub::{Hub, SubscribeRequest};
///
/// struct User {
///     rooms: Vec<String>,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::builder()
///     .authorizer(|req: &SubscribeRequest<'_>| {
///         req.claims::<User>()
///             .is_some_and(|user| user.rooms.iter().any(|room| room == req.topic()))
///     })
///     .build();
///
/// let alice = User { rooms: vec!["lobby".into()] };
/// assert!(hub.subscriber("lobby").claims(&alice).subscribe().await.is_ok());
/// assert!(hub.subscriber("vault").claims(&alice).subscribe().await.is_err());
/// assert!(hub.subscribe("lobby").await.is_err()); // no claims at all
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct SubscribeRequest<'a> {
    pub(super) topic: &'a str,
    pub(super) pattern: Option<&'a str>,
    pub(super) client_id: Option<&'a str>,
    pub(super) last_event_id: Option<&'a str>,
    pub(super) claims: Option<&'a (dyn Any + Send + Sync)>,
}

impl<'a> SubscribeRequest<'a> {
    /// The topic asked for; for a pattern, the pattern's key (`"glob:rooms/*"`, see
    /// [`pattern`](Self::pattern)), so that a check written for topic names refuses it unless
    /// it is meant to allow it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = tower_sse::hub::Hub::builder()
    /// #     .authorizer(|req: &tower_sse::hub::SubscribeRequest<'_>| req.topic() == "a")
    /// #     .build();
    /// assert!(hub.subscribe("a").await.is_ok());
    /// assert!(hub.subscribe("b").await.is_err());
    /// # }
    /// ```
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The pattern's key ([`Matcher::key`](super::Matcher::key)) when this check is for a
    /// pattern rather than a topic name.
    ///
    /// ```
    /// use tower_sse::hub::{Hub, Pattern, SubscribeRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::builder()
    ///     .authorizer(|req: &SubscribeRequest<'_>| match req.pattern() {
    ///         Some(key) => key.starts_with("glob:public/"),
    ///         None => req.topic().starts_with("public/"),
    ///     })
    ///     .build();
    /// let public = Pattern::glob("public/*").unwrap();
    /// assert!(hub.subscription().pattern(public).subscribe().await.is_ok());
    /// let everything = Pattern::glob("**").unwrap();
    /// assert!(hub.subscription().pattern(everything).subscribe().await.is_err());
    /// # }
    /// ```
    pub fn pattern(&self) -> Option<&'a str> {
        self.pattern
    }

    /// The client id given with
    /// [`SubscribeBuilder::client_id`](super::SubscribeBuilder::client_id), if any.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = tower_sse::hub::Hub::builder()
    /// #     .authorizer(|req: &tower_sse::hub::SubscribeRequest<'_>| req.client_id().is_some())
    /// #     .build();
    /// assert!(hub.subscriber("a").client_id("c1").subscribe().await.is_ok());
    /// assert!(hub.subscribe("a").await.is_err());
    /// # }
    /// ```
    pub fn client_id(&self) -> Option<&'a str> {
        self.client_id
    }

    /// The `Last-Event-ID` given with
    /// [`SubscribeBuilder::last_event_id`](super::SubscribeBuilder::last_event_id), if any.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = tower_sse::hub::Hub::builder()
    /// #     .authorizer(|req: &tower_sse::hub::SubscribeRequest<'_>| req.last_event_id().is_none())
    /// #     .build();
    /// assert!(hub.subscriber("a").last_event_id(Some("1")).subscribe().await.is_err());
    /// # }
    /// ```
    pub fn last_event_id(&self) -> Option<&'a str> {
        self.last_event_id
    }

    /// The claims given with [`SubscribeBuilder::claims`](super::SubscribeBuilder::claims), if
    /// they are a `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = tower_sse::hub::Hub::builder()
    /// #     .authorizer(|req: &tower_sse::hub::SubscribeRequest<'_>| req.claims::<u32>() == Some(&7))
    /// #     .build();
    /// assert!(hub.subscriber("a").claims(&7_u32).subscribe().await.is_ok());
    /// assert!(hub.subscriber("a").claims(&7_u64).subscribe().await.is_err());
    /// # }
    /// ```
    pub fn claims<T: Any>(&self) -> Option<&'a T> {
        self.claims.and_then(|claims| claims.downcast_ref())
    }
}

impl fmt::Debug for SubscribeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeRequest")
            .field("topic", &self.topic)
            .field("pattern", &self.pattern)
            .field("client_id", &self.client_id)
            .field("last_event_id", &self.last_event_id)
            .field("claims", &self.claims.map(|_| "_"))
            .finish()
    }
}

/// Decides whether a subscription may go ahead.
///
/// Consulted in [`SubscribeBuilder::subscribe`](super::SubscribeBuilder::subscribe), once for
/// every topic and every pattern of the subscription (each must be allowed), before the history
/// is read: a refused request gets
/// [`SubscribeError::Forbidden`](super::SubscribeError::Forbidden) and no event, replayed or
/// live. Implemented for `()` (allows everything, the default) and for closures
/// `Fn(&SubscribeRequest<'_>) -> bool`. Closures need the argument type written out, as in
/// `|req: &SubscribeRequest<'_>| ...`.
///
/// The check runs on the subscriber's task, outside every hub lock; keep it quick and
/// non-blocking.
///
/// ```
/// use tower_sse::hub::{Authorizer, Hub, SubscribeError, SubscribeRequest};
///
/// /// Only topics under `public/`.
/// struct PublicOnly;
///
/// impl Authorizer for PublicOnly {
///     fn authorize(&self, request: &SubscribeRequest<'_>) -> bool {
///         request.topic().starts_with("public/")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::builder().authorizer(PublicOnly).build();
/// assert!(hub.subscribe("public/news").await.is_ok());
/// assert_eq!(hub.subscribe("admin").await.unwrap_err(), SubscribeError::Forbidden);
/// # }
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// `true` to let the subscription go ahead.
    fn authorize(&self, request: &SubscribeRequest<'_>) -> bool;
}

impl Authorizer for () {
    fn authorize(&self, _: &SubscribeRequest<'_>) -> bool {
        true
    }
}

impl<F> Authorizer for F
where
    F: Fn(&SubscribeRequest<'_>) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &SubscribeRequest<'_>) -> bool {
        self(request)
    }
}

/// A private event, as a [`PrivateAccess`] sees it.
///
/// ```
/// use tower_sse::hub::PrivateEvent;
///
/// fn for_alice(event: &PrivateEvent<'_>) -> bool {
///     event.topics().any(|topic| topic == "users/alice")
/// }
/// # let _ = for_alice;
/// ```
#[derive(Clone, Copy)]
pub struct PrivateEvent<'a> {
    pub(super) topics: &'a [Box<str>],
}

impl<'a> PrivateEvent<'a> {
    /// The topics it was published to.
    ///
    /// ```
    /// # use tower_sse::hub::PrivateEvent;
    /// fn first(event: &PrivateEvent<'_>) -> Option<String> {
    ///     event.topics().next().map(str::to_owned)
    /// }
    /// # let _ = first;
    /// ```
    pub fn topics(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.topics.iter().map(|topic| &**topic)
    }
}

impl fmt::Debug for PrivateEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateEvent")
            .field("topics", &self.topics)
            .finish()
    }
}

/// Decides, per private event, whether a subscription may receive it: the per-event half of
/// authorization (the [`Authorizer`] is the per-subscription half).
///
/// Events published with [`PublishBuilder::private`](super::PublishBuilder::private) reach only
/// the subscriptions given an access ([`SubscribeBuilder::private_access`]) that allows them;
/// a subscription without one gets only public events. The same check applies to live and to
/// replayed events, so a resume never leaks what the live stream would have hidden. Public
/// events are never checked, and no event is encoded again: a hidden event is skipped.
///
/// Implemented for closures `Fn(&PrivateEvent<'_>) -> bool` (write the argument type out).
/// It runs on the subscriber's task for each private event of its topics, and for the
/// replayed ones while the subscription is made (for a subscription to several topics, under
/// the hub's order lock, which publishers wait for): keep it quick and never block in it.
///
/// [`SubscribeBuilder::private_access`]: super::SubscribeBuilder::private_access
///
/// ```
/// use futures_util::StreamExt;
/// use tower_sse::{Event, hub::{Hub, PrivateEvent}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let alice = |event: &PrivateEvent<'_>| event.topics().any(|t| t == "inbox/alice");
/// let mut admin = hub.subscriber("inbox/alice").topic("inbox/bob").private_access(|_: &PrivateEvent<'_>| true).subscribe().await.unwrap();
/// let mut mine = hub.subscriber("inbox/alice").topic("inbox/bob").private_access(alice).subscribe().await.unwrap();
/// let mut anonymous = hub.subscriber("inbox/alice").topic("inbox/bob").subscribe().await.unwrap();
///
/// hub.publisher(&["inbox/bob"]).private().publish(Event::new().data("for bob")).await.unwrap();
/// hub.publisher(&["inbox/alice"]).private().publish(Event::new().data("for alice")).await.unwrap();
/// hub.publish("inbox/bob", Event::new().data("public")).await.unwrap();
///
/// assert!(admin.next().await.unwrap().as_bytes().starts_with(b"data: for bob\n"));
/// assert!(mine.next().await.unwrap().as_bytes().starts_with(b"data: for alice\n"));
/// assert!(anonymous.next().await.unwrap().as_bytes().starts_with(b"data: public\n"));
/// # }
/// ```
pub trait PrivateAccess: Send + Sync + 'static {
    /// `true` to deliver `event` to this subscription.
    fn allows(&self, event: &PrivateEvent<'_>) -> bool;
}

impl<F> PrivateAccess for F
where
    F: Fn(&PrivateEvent<'_>) -> bool + Send + Sync + 'static,
{
    fn allows(&self, event: &PrivateEvent<'_>) -> bool {
        self(event)
    }
}

/// Whether a subscription with `access` may see an event for `audience` (`None`: public).
pub(super) fn visible(
    access: Option<&dyn PrivateAccess>,
    audience: Option<&crate::replay::Audience>,
) -> bool {
    match audience {
        None => true,
        Some(topics) => access.is_some_and(|access| access.allows(&PrivateEvent { topics })),
    }
}
