//! The client's error type.

use std::{error::Error as StdError, fmt};

use http::{HeaderValue, StatusCode};

use super::DecodeError;
use crate::BoxError;

/// Why an [`EventSource`](super::EventSource) stopped, or why it is reconnecting.
///
/// An `Err` from the stream is always its last item. Failures the client recovers from
/// (a refused connection, a dropped connection, a read timeout) are not yielded as `Err`: they
/// ride along in [`Reconnect::error`](super::Reconnect::error), and only become an `Err` of kind
/// [`ErrorKind::RetriesExhausted`] when the retry budget runs out.
///
/// ```
/// use tower_sse::client::ErrorKind;
///
/// fn explain(err: &tower_sse::client::Error) -> String {
///     match err.kind() {
///         ErrorKind::Status => format!("the server refused: {}", err.status().unwrap()),
///         _ => err.to_string(),
///     }
/// }
/// # let _ = explain;
/// ```
pub struct Error {
    repr: Repr,
}

enum Repr {
    Status(StatusCode),
    ContentType(Option<HeaderValue>),
    Transport(BoxError),
    Tls(BoxError),
    Hook(BoxError),
    Service(BoxError),
    Decode(DecodeError),
    Timeout,
    Redirect(Option<HeaderValue>),
    Downgrade(Option<HeaderValue>),
    TooManyRedirects(usize),
    Request(std::borrow::Cow<'static, str>),
    RetriesExhausted(u32, Option<Box<Error>>),
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server answered with a status other than 2xx (and other than a followed redirect);
    /// see [`Error::status`]. The client does not reconnect.
    Status,
    /// A 2xx answer whose `Content-Type` is not `text/event-stream`. The client does not
    /// reconnect.
    ContentType,
    /// The request could not be sent, or the response body failed while it was read. The client
    /// reconnects; this kind is seen in [`Reconnect::error`](super::Reconnect::error).
    Transport,
    /// The server's certificate was refused (untrusted, expired, for another name) or the TLS
    /// handshake failed on it; the [`source`](std::error::Error::source) says why. Final: the
    /// client does not reconnect to a server it cannot trust.
    Tls,
    /// The [`on_connect`](super::EventSource::on_connect) hook gave up; the
    /// [`source`](std::error::Error::source) is its error. Final.
    Hook,
    /// The HTTP service reported that it cannot take requests any more (`poll_ready` failed).
    Service,
    /// A line or an event was over the decoder's limits. The client reconnects (unless
    /// [`reconnect_on_decode_error`](super::EventSource::reconnect_on_decode_error) is off).
    Decode,
    /// Nothing arrived within the read timeout. The client reconnects.
    Timeout,
    /// A redirect without a usable `Location` header, or from `https` to plain `http`
    /// (refused: the request would travel in the clear).
    Redirect,
    /// More redirects in a row than the limit allows.
    TooManyRedirects,
    /// The request itself is unusable (for example an `https` URI given to the plain-HTTP
    /// default client).
    Request,
    /// The connection was lost, and the retry budget
    /// ([`EventSource::max_retries`](super::EventSource::max_retries)) is spent; the last
    /// failure is the [`source`](std::error::Error::source).
    RetriesExhausted,
}

impl Error {
    pub(crate) fn status_code(status: StatusCode) -> Self {
        Self::new(Repr::Status(status))
    }

    pub(crate) fn content_type(value: Option<HeaderValue>) -> Self {
        Self::new(Repr::ContentType(value))
    }

    pub(crate) fn transport(err: impl Into<BoxError>) -> Self {
        Self::new(Repr::Transport(err.into()))
    }

    pub(crate) fn hook(err: impl Into<BoxError>) -> Self {
        Self::new(Repr::Hook(err.into()))
    }

    pub(crate) fn tls(err: impl Into<BoxError>) -> Self {
        Self::new(Repr::Tls(err.into()))
    }

    pub(crate) fn service(err: impl Into<BoxError>) -> Self {
        Self::new(Repr::Service(err.into()))
    }

    pub(crate) fn decode(err: DecodeError) -> Self {
        Self::new(Repr::Decode(err))
    }

    pub(crate) fn timeout() -> Self {
        Self::new(Repr::Timeout)
    }

    pub(crate) fn downgrade(location: Option<HeaderValue>) -> Self {
        Self::new(Repr::Downgrade(location))
    }

    pub(crate) fn redirect(location: Option<HeaderValue>) -> Self {
        Self::new(Repr::Redirect(location))
    }

    pub(crate) fn too_many_redirects(limit: usize) -> Self {
        Self::new(Repr::TooManyRedirects(limit))
    }

    pub(crate) fn request(what: &'static str) -> Self {
        Self::new(Repr::Request(what.into()))
    }

    #[cfg(feature = "client")]
    pub(crate) fn request_owned(what: String) -> Self {
        Self::new(Repr::Request(what.into()))
    }

    pub(crate) fn retries_exhausted(attempts: u32, last: Option<Error>) -> Self {
        Self::new(Repr::RetriesExhausted(attempts, last.map(Box::new)))
    }

    fn new(repr: Repr) -> Self {
        Self { repr }
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// # use tower_sse::client::{Error, ErrorKind};
    /// fn is_fatal_answer(err: &Error) -> bool {
    ///     matches!(err.kind(), ErrorKind::Status | ErrorKind::ContentType)
    /// }
    /// # let _ = is_fatal_answer;
    /// ```
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self.repr {
            Repr::Status(_) => ErrorKind::Status,
            Repr::ContentType(_) => ErrorKind::ContentType,
            Repr::Transport(_) => ErrorKind::Transport,
            Repr::Tls(_) => ErrorKind::Tls,
            Repr::Hook(_) => ErrorKind::Hook,
            Repr::Service(_) => ErrorKind::Service,
            Repr::Decode(_) => ErrorKind::Decode,
            Repr::Timeout => ErrorKind::Timeout,
            Repr::Redirect(_) | Repr::Downgrade(_) => ErrorKind::Redirect,
            Repr::TooManyRedirects(_) => ErrorKind::TooManyRedirects,
            Repr::Request(_) => ErrorKind::Request,
            Repr::RetriesExhausted(..) => ErrorKind::RetriesExhausted,
        }
    }

    /// The status the server answered with, for [`ErrorKind::Status`].
    ///
    /// ```
    /// # fn check(err: &tower_sse::client::Error) {
    /// if err.status() == Some(http::StatusCode::UNAUTHORIZED) {
    ///     // refresh the token, then build a new EventSource
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self.repr {
            Repr::Status(status) => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Status(status) => write!(f, "server answered with status {status}"),
            Repr::ContentType(Some(value)) => write!(
                f,
                "server answered with content type {value:?}, not text/event-stream"
            ),
            Repr::ContentType(None) => {
                f.write_str("server answered without a content type, not text/event-stream")
            }
            Repr::Transport(_) => f.write_str("connection failed"),
            Repr::Tls(_) => f.write_str("the server's TLS certificate was refused"),
            Repr::Hook(_) => f.write_str("the connect hook gave up"),
            Repr::Service(_) => f.write_str("http service failed"),
            Repr::Decode(_) => f.write_str("invalid event stream"),
            Repr::Timeout => f.write_str("no data within the read timeout"),
            Repr::Redirect(Some(value)) => write!(f, "redirect to an invalid location {value:?}"),
            Repr::Redirect(None) => f.write_str("redirect without a location"),
            Repr::Downgrade(value) => write!(
                f,
                "redirect from https to plain http refused ({:?})",
                value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
            ),
            Repr::TooManyRedirects(limit) => write!(f, "more than {limit} redirects"),
            Repr::Request(what) => write!(f, "invalid request: {what}"),
            Repr::RetriesExhausted(attempts, _) => {
                write!(
                    f,
                    "connection lost, gave up after {attempts} reconnection attempts"
                )
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind());
        match &self.repr {
            Repr::Status(status) => d.field("status", status),
            Repr::ContentType(value) => d.field("content_type", value),
            Repr::Transport(err) | Repr::Tls(err) | Repr::Hook(err) | Repr::Service(err) => {
                d.field("source", err)
            }
            Repr::Decode(err) => d.field("source", err),
            Repr::Redirect(value) | Repr::Downgrade(value) => d.field("location", value),
            Repr::TooManyRedirects(limit) => d.field("limit", limit),
            Repr::Request(what) => d.field("reason", what),
            Repr::RetriesExhausted(attempts, last) => {
                d.field("attempts", attempts).field("last", last)
            }
            Repr::Timeout => &mut d,
        };
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.repr {
            Repr::Transport(err) | Repr::Tls(err) | Repr::Hook(err) | Repr::Service(err) => {
                Some(&**err)
            }
            Repr::Decode(err) => Some(err),
            Repr::RetriesExhausted(_, Some(last)) => Some(&**last),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_chains_sources() {
        let err = Error::retries_exhausted(3, Some(Error::transport("connection refused")));
        assert_eq!(
            err.to_string(),
            "connection lost, gave up after 3 reconnection attempts"
        );
        let source = err.source().unwrap();
        assert_eq!(source.to_string(), "connection failed");
        assert_eq!(source.source().unwrap().to_string(), "connection refused");

        let err = Error::status_code(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.kind(), ErrorKind::Status);
        assert_eq!(
            err.to_string(),
            "server answered with status 500 Internal Server Error"
        );
        let err = Error::content_type(Some(HeaderValue::from_static("text/plain")));
        assert_eq!(
            err.to_string(),
            "server answered with content type \"text/plain\", not text/event-stream"
        );
    }
}
