use std::fmt;

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
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Forbidden => "subscription forbidden",
            Self::UnknownTopic => "unknown topic",
            Self::Unavailable => "event broker unavailable",
        })
    }
}

impl std::error::Error for SubscribeError {}

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
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownTopic => "unknown topic",
            Self::Unavailable => "event broker unavailable",
        })
    }
}

impl std::error::Error for PublishError {}
