use std::fmt;

use super::SelectionError;

/// Why [`Hub::subscribe`](super::Hub::subscribe) refused a subscription.
///
/// Nothing has been delivered when this is returned: the [`Authorizer`](super::Authorizer) runs
/// before the history is read.
///
/// ```
/// use tower_sse::hub::{Hub, SubscribeError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::builder().auto_create(false).build();
/// let err = hub.subscribe("nope").await.unwrap_err();
/// assert_eq!(err, SubscribeError::UnknownTopic);
/// assert_eq!(err.to_string(), "unknown topic");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The [`Authorizer`](super::Authorizer) refused the request.
    Forbidden,
    /// The topic does not exist and the hub does not create topics on demand
    /// ([`HubBuilder::auto_create`](super::HubBuilder::auto_create)).
    UnknownTopic,
    /// The hub's broker (for example Redis) could not be reached, or did not answer in time.
    /// Nothing was delivered; the client may retry (an HTTP server answers `503`).
    Unavailable,
    /// The set of topics and patterns was refused: empty, over the limit, or a pattern this
    /// hub cannot serve (an HTTP server answers `400`).
    Selection(SelectionError),
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Forbidden => "subscription forbidden",
            Self::UnknownTopic => "unknown topic",
            Self::Unavailable => "event broker unavailable",
            Self::Selection(err) => return write!(f, "bad subscription: {err}"),
        })
    }
}

impl std::error::Error for SubscribeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Selection(err) => Some(err),
            _ => None,
        }
    }
}

impl From<SelectionError> for SubscribeError {
    fn from(err: SelectionError) -> Self {
        Self::Selection(err)
    }
}

/// Why [`Hub::publish`](super::Hub::publish) did not publish.
///
/// ```
/// use tower_sse::{Event, hub::{Hub, PublishError}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::builder().auto_create(false).build();
/// let err = hub.publish("nope", Event::new().data("x")).await.unwrap_err();
/// assert_eq!(err, PublishError::UnknownTopic);
/// assert_eq!(err.to_string(), "unknown topic");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic does not exist and the hub does not create topics on demand
    /// ([`HubBuilder::auto_create`](super::HubBuilder::auto_create)).
    UnknownTopic,
    /// The hub's broker (for example Redis) could not be reached, or did not answer in time.
    /// The event may or may not have been stored; an HTTP server answers `503`.
    Unavailable,
    /// This hub's broker cannot carry this kind of event (a private event on Redis, for now);
    /// nothing was published. An HTTP server answers `501`.
    Unsupported,
    /// The event's id cannot be carried by this hub's broker: on Redis and NATS a publisher's
    /// id must not be decimal digits alone (those spell the broker's positions) and must be at
    /// most 1,024 bytes. Nothing was published. An HTTP server answers `400`.
    InvalidId,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownTopic => "unknown topic",
            Self::Unavailable => "event broker unavailable",
            Self::Unsupported => "not supported by this hub's broker",
            Self::InvalidId => "event id not allowed by this hub's broker",
        })
    }
}

impl std::error::Error for PublishError {}

impl SubscribeError {
    /// The HTTP status a server answers with: `403 Forbidden`, `404 Not Found`,
    /// `503 Service Unavailable` or `400 Bad Request` (a refused selection). With the `axum` feature the error is itself a response
    /// with this status and its [`Display`](fmt::Display) text as a `text/plain` body.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sse::hub::SubscribeError;
    ///
    /// assert_eq!(SubscribeError::Forbidden.status(), StatusCode::FORBIDDEN);
    /// assert_eq!(SubscribeError::UnknownTopic.status(), StatusCode::NOT_FOUND);
    /// assert_eq!(SubscribeError::Unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Forbidden => http::StatusCode::FORBIDDEN,
            Self::UnknownTopic => http::StatusCode::NOT_FOUND,
            Self::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Selection(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

impl PublishError {
    /// The HTTP status a server answers with: `404 Not Found`, `503 Service Unavailable`,
    /// `501 Not Implemented` or `400 Bad Request`.
    /// With the `axum` feature the error is itself a response with this status and its
    /// [`Display`](fmt::Display) text as a `text/plain` body.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sse::hub::PublishError;
    ///
    /// assert_eq!(PublishError::UnknownTopic.status(), StatusCode::NOT_FOUND);
    /// assert_eq!(PublishError::Unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(PublishError::InvalidId.status(), StatusCode::BAD_REQUEST);
    /// ```
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::UnknownTopic => http::StatusCode::NOT_FOUND,
            Self::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Unsupported => http::StatusCode::NOT_IMPLEMENTED,
            Self::InvalidId => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// `403`, `404` or `503` ([`SubscribeError::status`]) with the error's text as the body, so a
/// handler can return `Result<Subscription, SubscribeError>` and use `?`.
///
/// ```
/// use axum::{Router, extract::State, routing::get};
/// use tower::ServiceExt;
/// use tower_sse::hub::{Hub, SubscribeError, Subscription};
///
/// async fn news(State(hub): State<Hub>) -> Result<Subscription, SubscribeError> {
///     let sub = hub.subscribe("news").await?;
///     Ok(sub)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let hub = Hub::builder().auto_create(false).build();
/// let app = Router::new().route("/news", get(news)).with_state(hub);
/// let request = http::Request::get("/news").body(axum::body::Body::empty()).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
/// # }
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for SubscribeError {
    fn into_response(self) -> axum_core::response::Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// `404` or `503` ([`PublishError::status`]) with the error's text as the body, so a handler
/// can use `?` on [`Hub::publish`](super::Hub::publish).
///
/// ```
/// use axum::{Router, extract::State, routing::post};
/// use tower::ServiceExt;
/// use tower_sse::{Event, hub::{Hub, PublishError}};
///
/// async fn post_news(State(hub): State<Hub>, body: String) -> Result<(), PublishError> {
///     hub.publish("news", Event::new().data(body)).await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let hub = Hub::builder().auto_create(false).build();
/// let app = Router::new().route("/news", post(post_news)).with_state(hub);
/// let request = http::Request::post("/news").body(axum::body::Body::from("hi")).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
/// # }
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for PublishError {
    fn into_response(self) -> axum_core::response::Response {
        (self.status(), self.to_string()).into_response()
    }
}
