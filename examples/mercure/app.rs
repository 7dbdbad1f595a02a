//! The hub's HTTP surface: `GET /.well-known/mercure` (subscribe), `POST /.well-known/mercure`
//! (publish) and `GET /` (the debugging page), over one [`Hub`].

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, OriginalUri, RawQuery, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use futures_core::Stream;
use tokio::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_sse::{
    EncodedEvent, Event, EventStream, Shutdown, SseLayer,
    hub::{Hub, PrivateEvent, PublishError, SubscribeError, Subscription},
    replay::{Replay, UnknownId},
};

use crate::{
    auth::{Auth, Grants, Role, TokenError, now_secs},
    presence::{Entry, Guard, Presence, urn_uuid},
    topic::{
        Everything, MAX_MATCHERS, MAX_TOPIC_LEN, MatchType, TopicMatcher, form_pairs,
        is_match_param, is_reserved, valid_text,
    },
};

/// The response header that tells where a resumed stream starts.
pub const LAST_EVENT_ID_HEADER: &str = "mercure-last-event-id";
/// The largest publication body, in bytes (more: `413`).
pub const MAX_BODY: usize = 1024 * 1024;
/// The most `topic` fields in one publication (more: `413`).
pub const MAX_PUBLISH_TOPICS: usize = 32;
/// The longest `id` and `type`, in bytes (more: `413`).
pub const MAX_FIELD_LEN: usize = 256;

const PAGE: &str = include_str!("page.html");

/// How the hub is set up (besides its broker).
#[derive(Debug)]
pub struct Config {
    pub auth: Auth,
    /// Keep-alive comment interval.
    pub keep_alive: Duration,
    /// The longest a subscription stays open, whatever its token's `exp`.
    pub max_lifetime: Duration,
    /// Origins allowed to use the hub from a browser, with credentials (none: same origin
    /// only).
    pub cors_origins: Vec<HeaderValue>,
    /// The most subscriptions open at once in this process (more: `429`).
    pub max_connections: usize,
}

/// The application's state; a cheap handle.
#[derive(Clone)]
pub struct Mercure {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    auth: Auth,
    max_lifetime: Duration,
    presence: Arc<Presence>,
    /// Subscriptions open now, and the most allowed.
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    /// Where the protected resource metadata is served (path) and its URL (RFC 9728: the
    /// well-known prefix inserted before the resource identifier's path).
    metadata: Option<(String, String)>,
}

/// The router: the hub's endpoints, under an [`SseLayer`] (keep-alive, shutdown).
pub fn app(config: Config, hub: Hub, shutdown: &Shutdown) -> Router {
    let keep_alive = config.keep_alive;
    let cors = cors(config.cors_origins);
    let presence = Presence::new(hub.clone(), config.auth.hub.path());
    let metadata = url::Url::parse(&config.auth.audience).ok().map(|resource| {
        let path = format!("/.well-known/oauth-protected-resource{}", resource.path());
        let mut url = resource.clone();
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        (path, url.to_string())
    });
    let metadata_path = metadata.as_ref().map(|(path, _)| path.clone());
    let mercure = Mercure {
        inner: Arc::new(Inner {
            hub,
            auth: config.auth,
            max_lifetime: config.max_lifetime,
            presence,
            metadata,
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: config.max_connections,
        }),
    };
    let mut router = Router::new();
    if let Some(path) = metadata_path {
        router = router.route(&path, get(resource_metadata));
    }
    router
        .route("/", get(|| async { Html(PAGE) }))
        .route("/.well-known/mercure", get(subscribe).post(publish))
        .route("/.well-known/mercure/subscriptions", get(subscriptions))
        .route(
            "/.well-known/mercure/subscriptions/{*rest}",
            get(subscriptions),
        )
        .with_state(mercure)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(SseLayer::new().keep_alive(keep_alive).shutdown(shutdown))
        .layer(cors)
}

/// CORS for an explicit list of origins, with credentials (the cookie): never `*`, never an
/// origin reflected from the request. The `Link` and `Mercure-Last-Event-ID` response headers
/// are exposed to those origins.
fn cors(origins: Vec<HeaderValue>) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let last_event_id = HeaderName::from_static("last-event-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            last_event_id,
        ])
        .expose_headers([header::LINK, HeaderName::from_static(LAST_EVENT_ID_HEADER)]);
    tower::util::Either::Left(cors)
}

/// A plain-text error.
fn error(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// A `401` / `403` / `400` with its `WWW-Authenticate: Bearer` challenge, pointing at the
/// protected resource metadata.
fn challenge(inner: &Inner, status: StatusCode, error: Option<&str>) -> Response {
    let mut params = Vec::new();
    if let Some(error) = error {
        params.push(format!("error=\"{error}\""));
    }
    if let Some((_, url)) = &inner.metadata {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    let value = if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    };
    let mut response = (status, format!("{}\n", error.unwrap_or("unauthorized"))).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn token_error(inner: &Inner, err: TokenError) -> Response {
    match err {
        TokenError::Malformed => challenge(inner, StatusCode::BAD_REQUEST, Some("invalid_request")),
        TokenError::Invalid => challenge(inner, StatusCode::UNAUTHORIZED, Some("invalid_token")),
    }
}

/// What a subscription request asks for.
struct Selection {
    /// Every matcher as given (type and value), duplicates once: the subscriptions announced.
    entries: Vec<(MatchType, String)>,
    topics: Vec<String>,
    patterns: Vec<crate::topic::UrlPatternMatcher>,
    everything: bool,
    last_event_id: Option<String>,
}

/// Reads the query: matchers (the reserved `match` namespace) and `last_event_id`; unknown
/// names outside the namespace are ignored.
fn selection(query: &[u8], hub: &url::Url) -> Result<Selection, String> {
    let pairs = form_pairs(query).map_err(|_| "query is not UTF-8".to_owned())?;
    let mut selection = Selection {
        entries: Vec::new(),
        topics: Vec::new(),
        patterns: Vec::new(),
        everything: false,
        last_event_id: None,
    };
    let mut count = 0;
    for (name, value) in pairs {
        if is_match_param(&name) {
            let kind = MatchType::from_param(&name)
                .ok_or_else(|| format!("unsupported matcher parameter {name:?}"))?;
            count += 1;
            if count > MAX_MATCHERS {
                return Err(format!("more than {MAX_MATCHERS} matchers"));
            }
            let matcher = TopicMatcher::parse(kind, &value, hub).map_err(|err| err.to_string())?;
            if !selection
                .entries
                .iter()
                .any(|(k, v)| *k == kind && *v == value)
            {
                selection.entries.push((kind, value));
            }
            match matcher {
                TopicMatcher::Any => selection.everything = true,
                TopicMatcher::Exact(topic) => selection.topics.push(topic),
                TopicMatcher::UrlPattern(pattern) => selection.patterns.push(pattern),
            }
        } else if name == "last_event_id" && selection.last_event_id.is_none() {
            selection.last_event_id = Some(value);
        }
    }
    if count == 0 {
        return Err("no topic matcher: add match=<topic> or match_urlpattern=<pattern>".into());
    }
    Ok(selection)
}

/// `GET /.well-known/mercure`.
async fn subscribe(
    State(mercure): State<Mercure>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let inner = &*mercure.inner;
    let grants = match inner.auth.token(&headers) {
        Err(err) => return token_error(inner, err),
        Ok(None) => None,
        Ok(Some(token)) => match inner.auth.verify(Role::Subscriber, token) {
            Ok(grants) => Some(grants),
            Err(err) => return token_error(inner, err),
        },
    };
    let mut selection = match selection(query.unwrap_or_default().as_bytes(), &inner.auth.hub) {
        Ok(selection) => selection,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    // The `Last-Event-ID` header wins over the query. Its bytes are UTF-8 (ids may be IRIs
    // with non-ASCII characters), not necessarily visible ASCII.
    let header = headers.get("last-event-id");
    let last = match header.map(|value| std::str::from_utf8(value.as_bytes())) {
        Some(Ok(id)) => Some(id.to_owned()),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "Last-Event-ID is not UTF-8"),
        None => selection.last_event_id.take(),
    }
    .filter(|id| !id.is_empty());

    // A place among the open subscriptions, given back when the stream goes.
    let Some(slot) = Slot::take(&inner.connections, inner.max_connections) else {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many subscriptions");
    };
    let hub = &inner.hub;
    let mut builder = hub.subscription();
    for topic in &selection.topics {
        builder = builder.topic(topic);
    }
    for pattern in selection.patterns {
        builder = builder.pattern(pattern);
    }
    if selection.everything {
        builder = builder.pattern(Everything);
    }
    if let Some(grants) = grants.clone() {
        // Private updates (live and replayed) only when the token grants `subscribe` on one
        // of their topics.
        builder = builder.private_access(move |event: &PrivateEvent<'_>| {
            event.topics().any(|topic| grants.may_subscribe(topic))
        });
    }
    // `earliest` is never an id (publishers cannot use it): as an unknown id, it replays the
    // whole retained history. The stream ends after the maximum lifetime, and no later than
    // the token's `exp`.
    let subscription = builder
        .until(mercure.deadline(grants.as_ref()))
        .last_event_id(last.as_deref())
        .on_unknown_id(UnknownId::SendHistory)
        .subscribe()
        .await;
    let subscription = match subscription {
        Ok(subscription) => subscription,
        Err(SubscribeError::Selection(err)) => {
            return error(StatusCode::BAD_REQUEST, &err.to_string());
        }
        Err(SubscribeError::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "hub unavailable");
        }
        Err(err) => return error(err.status(), &err.to_string()),
    };
    let resumed_from = last.map(|id| match subscription.replay() {
        Replay::Complete => id,
        _ => "earliest".to_owned(),
    });
    // Announced once the subscription is live, so a subscriber of its own subscription events
    // sees them.
    let entries = selection
        .entries
        .into_iter()
        .map(|(kind, matcher)| Entry {
            kind,
            payload: grants.as_ref().and_then(|g| g.payload_for(&matcher)),
            matcher,
        })
        .collect();
    let presence = inner.presence.join(entries, urn_uuid()).await;
    let stream = Open {
        subscription,
        _presence: presence,
        _slot: slot,
    };
    let mut response = EventStream::new(stream).into_response();
    if let Some(id) = resumed_from.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(LAST_EVENT_ID_HEADER, id);
    }
    response
}

impl Mercure {
    /// When a stream must end: after the maximum lifetime, and no later than the token's
    /// `exp`.
    fn deadline(&self, grants: Option<&Grants>) -> Instant {
        let now = Instant::now();
        let lifetime = self.inner.max_lifetime;
        let left = match grants {
            Some(grants) => {
                Duration::from_secs(grants.expires.saturating_sub(now_secs())).min(lifetime)
            }
            None => lifetime,
        };
        now.checked_add(left)
            .unwrap_or_else(|| now + Duration::from_secs(86400 * 365))
    }
}

/// A subscription, with what it holds while open.
struct Open {
    subscription: Subscription,
    /// Announces the end of the subscriptions when the stream goes.
    _presence: Guard,
    _slot: Slot,
}

/// One of the process's open subscriptions (see [`Config::max_connections`]).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Stream for Open {
    type Item = EncodedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        Pin::new(&mut self.subscription).poll_next(cx)
    }
}

/// The fields of a publication.
#[derive(Default)]
struct Update {
    topics: Vec<String>,
    data: Option<String>,
    private: bool,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<String>,
}

/// Reads and checks a publication body: `400` for what the specification forbids, `413` for
/// what is over a limit.
fn update(body: &[u8], hub: &url::Url) -> Result<Update, (StatusCode, String)> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let large = |message: &str| (StatusCode::PAYLOAD_TOO_LARGE, message.to_owned());
    let pairs = form_pairs(body).map_err(|_| bad("body is not UTF-8"))?;
    let mut update = Update::default();
    for (name, value) in pairs {
        // Single-valued fields: the first occurrence counts. Unknown fields are ignored.
        match name.as_str() {
            "topic" => update.topics.push(value),
            "data" if update.data.is_none() => update.data = Some(value),
            "private" => update.private = true,
            "id" if update.id.is_none() => update.id = Some(value),
            "type" if update.kind.is_none() => update.kind = Some(value),
            "retry" if update.retry.is_none() => update.retry = Some(value),
            _ => {}
        }
    }
    if update.topics.is_empty() {
        return Err(bad("missing topic"));
    }
    if update.topics.len() > MAX_PUBLISH_TOPICS {
        return Err(large(&format!("more than {MAX_PUBLISH_TOPICS} topics")));
    }
    for topic in &update.topics {
        if topic.is_empty() || !valid_text(topic) {
            return Err(bad(
                "empty topic, or a control or format character in a topic",
            ));
        }
        if topic.len() > MAX_TOPIC_LEN {
            return Err(large(&format!("topic longer than {MAX_TOPIC_LEN} bytes")));
        }
        if topic == "*" {
            return Err(bad("the topic `*` is reserved for the wildcard matcher"));
        }
        if is_reserved(topic, hub) {
            return Err(bad("topic in the hub's reserved namespace"));
        }
    }
    if let Some(id) = update.id.as_deref() {
        if id.starts_with('#') || id == "earliest" || !valid_text(id) {
            return Err(bad("invalid id"));
        }
        if id.len() > MAX_FIELD_LEN {
            return Err(large("id too long"));
        }
    }
    if let Some(kind) = update.kind.as_deref() {
        if kind == "mercure" || !valid_text(kind) {
            return Err(bad("invalid type"));
        }
        if kind.len() > MAX_FIELD_LEN {
            return Err(large("type too long"));
        }
    }
    if let Some(retry) = update.retry.as_deref() {
        if retry.is_empty() || !retry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("retry must be digits"));
        }
        if retry.parse::<u64>().is_err() {
            return Err(large("retry too large"));
        }
    }
    Ok(update)
}

/// `POST /.well-known/mercure`.
async fn publish(
    State(mercure): State<Mercure>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let inner = &*mercure.inner;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    // The body first: a topic in the reserved namespace is a `400` whatever the token.
    let update = match update(&body, &inner.auth.hub) {
        Ok(update) => update,
        Err((status, message)) => return error(status, &message),
    };
    let grants = match inner.auth.token(&headers) {
        Err(err) => return token_error(inner, err),
        Ok(None) => return challenge(inner, StatusCode::UNAUTHORIZED, None),
        Ok(Some(token)) => match inner.auth.verify(Role::Publisher, token) {
            Ok(grants) => grants,
            Err(err) => return token_error(inner, err),
        },
    };
    // Every topic, canonical and alternate, must be granted.
    if !update.topics.iter().all(|topic| grants.may_publish(topic)) {
        return challenge(inner, StatusCode::FORBIDDEN, Some("insufficient_scope"));
    }

    let mut event = Event::new();
    if let Some(kind) = update.kind.as_deref().filter(|kind| !kind.is_empty()) {
        event = event.event(kind);
    }
    if let Some(retry) = update.retry.as_deref().and_then(|r| r.parse::<u64>().ok()) {
        event = event.retry(Duration::from_millis(retry));
    }
    // The publisher's id is the event's, and without one the hub's is an IRI (a `urn:uuid:`,
    // as the specification asks), on every broker: Redis and NATS index them so that any
    // process resumes from them. (On a broker an id of digits alone is refused: `400`.)
    event = match update.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => event.id(id),
        None => event.id(crate::presence::urn_uuid()),
    };
    event = event.data(update.data.as_deref().unwrap_or_default());
    let topics: Vec<&str> = update.topics.iter().map(String::as_str).collect();
    let mut publisher = inner.hub.publisher(&topics);
    if update.private {
        publisher = publisher.private();
    }
    match publisher.publish(event).await {
        Ok(sent) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            sent.id().unwrap_or_default().to_owned(),
        )
            .into_response(),
        Err(PublishError::Unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, "hub unavailable"),
        Err(err) => error(err.status(), &err.to_string()),
    }
}

/// `GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]`: this
/// process's active subscriptions, for a token that grants `subscribe` on the requested path.
async fn subscriptions(
    State(mercure): State<Mercure>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let inner = &*mercure.inner;
    let path = uri.path();
    let grants = match inner.auth.token(&headers) {
        Err(err) => return token_error(inner, err),
        Ok(None) => return challenge(inner, StatusCode::UNAUTHORIZED, None),
        Ok(Some(token)) => match inner.auth.verify(Role::Subscriber, token) {
            Ok(grants) => grants,
            Err(err) => return token_error(inner, err),
        },
    };
    if !grants.may_subscribe(path) {
        return challenge(inner, StatusCode::FORBIDDEN, Some("insufficient_scope"));
    }
    let base = format!("{}/subscriptions", inner.auth.hub.path());
    let rest = path.strip_prefix(&base).unwrap_or_default();
    let segments: Option<Vec<String>> = rest
        .split('/')
        .skip(1)
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect();
    let Some(segments) = segments else {
        return error(StatusCode::NOT_FOUND, "no such subscription");
    };
    let presence = &inner.presence;
    let body = match segments.as_slice() {
        [] => collection(path, presence.list(None, None)),
        [kind, matcher] => collection(path, presence.list(Some((kind, matcher)), None)),
        [kind, matcher, subscriber] => {
            match presence.list(Some((kind, matcher)), Some(subscriber)).pop() {
                Some(doc) => doc,
                None => return error(StatusCode::NOT_FOUND, "no such subscription"),
            }
        }
        _ => return error(StatusCode::NOT_FOUND, "no such subscription"),
    };
    let link = format!(
        "<{}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"mercure\"; content-type=\"application/json\"",
        inner.auth.hub,
        presence.last_event_id().replace(['"', '\\'], ""),
    );
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Ok(link) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn collection(path: &str, subscriptions: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "id": path,
        "type": "subscriptions",
        "subscriptions": subscriptions,
    })
}

/// RFC 9728 protected resource metadata, as the specification profiles it.
async fn resource_metadata(State(mercure): State<Mercure>) -> Response {
    let auth = &mercure.inner.auth;
    axum::Json(serde_json::json!({
        "resource": auth.audience,
        "authorization_details_types_supported": [crate::auth::DETAIL_TYPE],
        "bearer_methods_supported": ["header"],
        "mercure_cookie": auth.cookie,
        "mercure_subscriptions": true,
    }))
    .into_response()
}
