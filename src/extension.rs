//! Values the layer puts into the request extensions for the inner service.
//!
//! - [`LastEventId`]: the id the client last saw, from the `Last-Event-ID` header or the
//!   `lastEventId` query parameter (used by polyfills), when present and well formed.
//! - [`Disconnect`]: tells the inner service when the response is over, and whether the client
//!   went away before the stream ended.
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use tower_sse::LastEventId;
//!
//! let req = Request::get("/events?lastEventId=41").body(()).unwrap();
//! assert_eq!(LastEventId::from_request(&req).unwrap().as_str(), "41");
//!
//! let bad = Request::get("/events?lastEventId=a%0Ab").body(()).unwrap();
//! assert!(LastEventId::from_request(&bad).is_none());
//! ```

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use http::{HeaderName, Request};
use tokio::sync::Notify;

/// The longest `Last-Event-ID` accepted, in bytes. Longer values are treated as absent.
pub const MAX_LAST_EVENT_ID_LEN: usize = 1024;

static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The last event id a reconnecting client reports.
///
/// Read from the `Last-Event-ID` header, or else from a `lastEventId` query parameter. A value
/// that is empty, not UTF-8, longer than [`MAX_LAST_EVENT_ID_LEN`] bytes, or that contains NUL,
/// CR or LF is treated as absent (and logged at debug level): it is never an error.
///
/// ```
/// use tower_sse::LastEventId;
///
/// let req = http::Request::get("/").header("last-event-id", "7").body(()).unwrap();
/// assert_eq!(LastEventId::from_request(&req), Some(LastEventId::new("7").unwrap()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LastEventId(String);

impl LastEventId {
    /// Validates `id` by the rules above.
    ///
    /// ```
    /// assert!(tower_sse::LastEventId::new("").is_none());
    /// assert!(tower_sse::LastEventId::new("a\0").is_none());
    /// ```
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        valid(id.as_bytes()).then_some(Self(id))
    }

    /// Reads the id from a request's header or query, as the layer does.
    ///
    /// ```
    /// let req = http::Request::get("/?x=1&lastEventId=9").body(()).unwrap();
    /// assert_eq!(tower_sse::LastEventId::from_request(&req).unwrap().as_str(), "9");
    /// ```
    pub fn from_request<B>(req: &Request<B>) -> Option<Self> {
        Self::from_parts(req.headers(), req.uri())
    }

    pub(crate) fn from_parts(headers: &http::HeaderMap, uri: &http::Uri) -> Option<Self> {
        if let Some(value) = headers.get(&LAST_EVENT_ID) {
            return match std::str::from_utf8(value.as_bytes()) {
                Ok(id) if valid(id.as_bytes()) => Some(Self(id.to_owned())),
                _ => {
                    tracing::debug!(?value, "ignoring malformed Last-Event-ID header");
                    None
                }
            };
        }
        let query = uri.query()?;
        for pair in query.split('&') {
            let Some(raw) = pair.strip_prefix("lastEventId=") else {
                continue;
            };
            let raw = raw.replace('+', " ");
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(&raw).collect();
            return match String::from_utf8(bytes) {
                Ok(id) if valid(id.as_bytes()) => Some(Self(id)),
                _ => {
                    tracing::debug!(raw, "ignoring malformed lastEventId query parameter");
                    None
                }
            };
        }
        None
    }

    /// The id.
    ///
    /// ```
    /// assert_eq!(tower_sse::LastEventId::new("x").unwrap().as_str(), "x");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, by value.
    ///
    /// ```
    /// assert_eq!(tower_sse::LastEventId::new("x").unwrap().into_string(), "x");
    /// ```
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LAST_EVENT_ID_LEN
        && memchr::memchr3(b'\0', b'\r', b'\n', id).is_none()
}

const OPEN: u8 = 0;
const ENDED: u8 = 1;
const CLIENT_GONE: u8 = 2;

/// Tells the inner service when its event stream is over.
///
/// The layer puts one into every request's extensions (in axum, take it with
/// `Extension<Disconnect>`). [`Disconnect::closed`] completes when the response is over: the
/// client went away, the stream ended, or a shutdown ended it. [`Disconnect::client_gone`] says
/// whether it was the client that left.
///
/// The simplest way to notice a disconnect is the event stream's own `Drop`: the layer drops
/// the stream as soon as the connection is gone. This handle is for work that lives elsewhere.
///
/// ```
/// use tower_sse::Disconnect;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let disconnect = Disconnect::new();
/// let guard = disconnect.guard();
/// drop(guard); // what the body does when the client goes away
/// disconnect.closed().await;
/// assert!(disconnect.client_gone());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Disconnect {
    inner: Arc<DisconnectInner>,
}

#[derive(Default)]
struct DisconnectInner {
    state: AtomicU8,
    notify: Notify,
}

impl Disconnect {
    /// A handle for a response that is still open.
    ///
    /// ```
    /// assert!(!tower_sse::Disconnect::new().is_closed());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the response is over.
    ///
    /// ```
    /// let d = tower_sse::Disconnect::new();
    /// d.guard().finish();
    /// assert!(d.is_closed() && !d.client_gone());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) != OPEN
    }

    /// Whether the response ended because the client went away (the body was dropped before
    /// the stream ended).
    ///
    /// ```
    /// assert!(!tower_sse::Disconnect::new().client_gone());
    /// ```
    pub fn client_gone(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == CLIENT_GONE
    }

    /// Completes once the response is over.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let d = tower_sse::Disconnect::new();
    /// drop(d.guard());
    /// d.closed().await;
    /// # }
    /// ```
    pub async fn closed(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// A guard for whoever serves the response: [`DisconnectGuard::finish`] when the stream
    /// ends, or drop it when the client goes away.
    ///
    /// ```
    /// let d = tower_sse::Disconnect::new();
    /// let guard = d.guard();
    /// assert!(!d.is_closed());
    /// guard.finish();
    /// assert!(d.is_closed());
    /// ```
    pub fn guard(&self) -> DisconnectGuard {
        DisconnectGuard(Some(self.clone()))
    }

    fn close(&self, state: u8) {
        if self
            .inner
            .state
            .compare_exchange(OPEN, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.notify.notify_waiters();
        }
    }
}

impl fmt::Debug for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnect")
            .field("closed", &self.is_closed())
            .field("client_gone", &self.client_gone())
            .finish()
    }
}

/// Marks a [`Disconnect`] closed: normally with [`finish`](DisconnectGuard::finish), or as
/// "client gone" when dropped unfinished.
///
/// ```
/// let d = tower_sse::Disconnect::new();
/// drop(d.guard());
/// assert!(d.client_gone());
/// ```
#[derive(Debug)]
pub struct DisconnectGuard(Option<Disconnect>);

impl DisconnectGuard {
    /// The stream ended on the server's side.
    ///
    /// ```
    /// let d = tower_sse::Disconnect::new();
    /// d.guard().finish();
    /// assert!(!d.client_gone());
    /// ```
    pub fn finish(mut self) {
        if let Some(d) = self.0.take() {
            d.close(ENDED);
        }
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.close(CLIENT_GONE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(header: Option<&[u8]>, uri: &str) -> Option<String> {
        let mut req = Request::get(uri);
        if let Some(h) = header {
            req = req.header("last-event-id", http::HeaderValue::from_bytes(h).unwrap());
        }
        LastEventId::from_request(&req.body(()).unwrap()).map(LastEventId::into_string)
    }

    #[test]
    fn last_event_id_rules() {
        assert_eq!(from(Some(b"12"), "/"), Some("12".into()));
        assert_eq!(from(Some(b""), "/"), None);
        assert_eq!(from(Some(b"\xff\xfe"), "/"), None);
        assert_eq!(from(Some(&[b'a'; 1024]), "/").map(|s| s.len()), Some(1024));
        assert_eq!(from(Some(&[b'a'; 1025]), "/"), None);
        // The header wins over the query, even when malformed.
        assert_eq!(from(Some(b"\xff"), "/?lastEventId=3"), None);
        assert_eq!(from(None, "/?lastEventId=3"), Some("3".into()));
        assert_eq!(
            from(None, "/?a=b&lastEventId=x%20y+z"),
            Some("x y z".into())
        );
        assert_eq!(from(None, "/?lastEventId=%00"), None);
        assert_eq!(from(None, "/?lastEventId=%0D"), None);
        assert_eq!(from(None, "/?lastEventId=%FF"), None);
        assert_eq!(from(None, "/?lastEventId="), None);
        assert_eq!(from(None, "/?lasteventid=3"), None);
    }

    #[tokio::test]
    async fn disconnect_wakes_waiters() {
        let d = Disconnect::new();
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.closed().await }
        });
        tokio::task::yield_now().await;
        let guard = d.guard();
        guard.finish();
        waiter.await.unwrap();
        assert!(d.is_closed());
        assert!(!d.client_gone());
        // A second guard cannot change the outcome.
        drop(d.guard());
        assert!(!d.client_gone());
    }
}
