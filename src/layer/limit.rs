//! Caps on open event streams, per client address and in total
//! ([`SseLayer::max_streams`](super::SseLayer::max_streams),
//! [`SseLayer::max_streams_per_client`](super::SseLayer::max_streams_per_client)).
//!
//! A [`Permit`] is taken for every event stream the layer serves and lives in its body, so
//! the count is of streams (an HTTP/2 connection multiplexes many; an HTTP/1.1 connection
//! also carries requests that are not streams), and it is released when the body is dropped,
//! however the stream ended.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

/// The caps and the counts they are checked against (shared by a layer's clones and every
/// service it makes).
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) max_streams: Option<usize>,
    pub(crate) max_per_client: Option<usize>,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    // Only addresses with an open stream: the map is as large as the open streams at most.
    per_client: HashMap<IpAddr, usize>,
}

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    Client,
}

/// One open stream, counted until dropped.
pub(crate) struct Permit {
    counts: Arc<Mutex<Counts>>,
    client: Option<IpAddr>,
}

impl Limits {
    pub(crate) fn new(max_streams: Option<usize>, max_per_client: Option<usize>) -> Self {
        Self {
            max_streams,
            max_per_client,
            counts: Arc::default(),
        }
    }

    /// Counts one more stream from `client` (when known), unless a cap is reached.
    pub(crate) fn acquire(&self, client: Option<IpAddr>) -> Result<Permit, Refusal> {
        let mut counts = lock(&self.counts);
        if self.max_streams.is_some_and(|max| counts.total >= max) {
            return Err(Refusal::Total);
        }
        // Without an address only the total applies.
        let client = client.filter(|_| self.max_per_client.is_some());
        if let (Some(client), Some(max)) = (client, self.max_per_client) {
            let open = counts.per_client.entry(client).or_insert(0);
            if *open >= max {
                if *open == 0 {
                    counts.per_client.remove(&client);
                }
                return Err(Refusal::Client);
            }
            *open += 1;
        }
        counts.total += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            client,
        })
    }

    /// Open streams in total, and from `client`.
    #[cfg(test)]
    pub(crate) fn open(&self, client: IpAddr) -> (usize, usize) {
        let counts = lock(&self.counts);
        let from = counts.per_client.get(&client).copied().unwrap_or(0);
        (counts.total, from)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total -= 1;
        if let Some(client) = self.client {
            if let Some(open) = counts.per_client.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    counts.per_client.remove(&client);
                }
            }
        }
    }
}

// The counts are plain integers, consistent after every statement: a panic elsewhere while
// the lock was held leaves nothing half-done.
fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The client's address: a `SocketAddr` request extension (what [`serve`](crate::serve)
/// inserts, or what a middleware that knows better, behind a trusted proxy, puts there), else
/// axum's `ConnectInfo<SocketAddr>`. IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn client_addr<B>(req: &Request<B>) -> Option<IpAddr> {
    let addr = req.extensions().get::<SocketAddr>().copied();
    #[cfg(feature = "axum")]
    let addr = addr.or_else(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
    });
    addr.map(|addr| addr.ip().to_canonical())
}

/// Whether the request asks for an event stream (`Accept: text/event-stream`, which every
/// `EventSource` sends): such a request is counted before the inner service runs, so a refused
/// one costs no handler work (no subscription, no presence change).
pub(crate) fn wants_event_stream<B>(req: &Request<B>) -> bool {
    req.headers().get_all(header::ACCEPT).iter().any(|value| {
        value
            .as_bytes()
            .windows(b"text/event-stream".len())
            .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// The `Retry-After` of a refused stream.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Refusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Total => "too many open event streams\n",
            Self::Client => "too many open event streams from this address\n",
        }
    }

    /// The `429 Too Many Requests` response, with `Retry-After`.
    pub(crate) fn response<T>(self, body: impl FnOnce(Bytes) -> T) -> Response<T> {
        crate::metrics::refused(self.as_str());
        tracing::debug!(limit = self.as_str(), "event stream refused");
        let mut response = Response::new(body(Bytes::from_static(self.message().as_bytes())));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Client => "client",
        }
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("max_streams", &self.max_streams)
            .field("max_per_client", &self.max_per_client)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("client", &self.client)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_client_and_total_caps_count_until_the_permit_is_dropped() {
        let limits = Limits::new(Some(3), Some(2));
        let a1 = limits.acquire(Some(A)).unwrap();
        let _a2 = limits.acquire(Some(A)).unwrap();
        assert_eq!(limits.acquire(Some(A)).unwrap_err(), Refusal::Client);
        let _b1 = limits.acquire(Some(B)).unwrap();
        assert_eq!(limits.acquire(Some(B)).unwrap_err(), Refusal::Total);
        assert_eq!(limits.acquire(None).unwrap_err(), Refusal::Total);
        assert_eq!(limits.open(A), (3, 2));
        drop(a1);
        assert_eq!(limits.open(A), (2, 1));
        let _a3 = limits.acquire(Some(A)).unwrap();
        assert_eq!(limits.open(A), (3, 2));
    }

    #[test]
    fn addresses_without_streams_leave_the_map() {
        let limits = Limits::new(None, Some(1));
        let permit = limits.acquire(Some(A)).unwrap();
        assert_eq!(limits.acquire(Some(A)).unwrap_err(), Refusal::Client);
        drop(permit);
        assert!(lock(&limits.counts).per_client.is_empty());
        // No address: only the total counts.
        let _unknown = limits.acquire(None).unwrap();
        let _unknown2 = limits.acquire(None).unwrap();
        assert!(lock(&limits.counts).per_client.is_empty());
    }

    #[test]
    fn a_zero_cap_refuses_every_stream_and_leaves_no_entry() {
        let limits = Limits::new(None, Some(0));
        assert_eq!(limits.acquire(Some(A)).unwrap_err(), Refusal::Client);
        assert!(lock(&limits.counts).per_client.is_empty());
    }

    #[test]
    fn accept_header_is_matched_in_lists_and_any_case() {
        let req = |accept: &str| Request::get("/").header("accept", accept).body(()).unwrap();
        assert!(wants_event_stream(&req("text/event-stream")));
        assert!(wants_event_stream(&req(
            "text/html, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&req("application/json")));
        assert!(!wants_event_stream(&Request::new(())));
    }

    #[test]
    fn client_address_from_a_socket_addr_extension_mapped_v4_as_v4() {
        let mut req = Request::new(());
        assert_eq!(client_addr(&req), None);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
        req.extensions_mut().insert(mapped);
        assert_eq!(client_addr(&req), Some(A));
    }

    mod layer {
        use std::{
            convert::Infallible,
            sync::{
                Arc,
                atomic::{AtomicUsize, Ordering::SeqCst},
            },
        };

        use http::{Request, Response};
        use http_body_util::{BodyExt, Full};
        use tower::{Service, ServiceExt};

        use crate::{Event, EventStream, SseLayer, stream::SseSource};

        type Stream = futures_util::stream::Pending<Event>;

        /// `/events` answers a stream that stays open, any other path plain text; counts calls.
        fn service(
            layer: SseLayer,
            calls: Arc<AtomicUsize>,
        ) -> impl Service<
            Request<()>,
            Response = Response<crate::SseBody<Stream, Full<bytes::Bytes>>>,
            Error = Infallible,
        > + Clone {
            tower::ServiceBuilder::new()
                .layer(layer)
                .service_fn(move |req: Request<()>| {
                    calls.fetch_add(1, SeqCst);
                    async move {
                        Ok::<_, Infallible>(if req.uri().path() == "/events" {
                            Response::new(Body::Events(EventStream::new(
                                futures_util::stream::pending(),
                            )))
                        } else {
                            Response::new(Body::Text(Full::from("ok")))
                        })
                    }
                })
        }

        /// A test body: an event stream or plain text.
        enum Body {
            Events(EventStream<Stream>),
            Text(Full<bytes::Bytes>),
        }

        impl SseSource for Body {
            type Stream = Stream;
            type Passthrough = Full<bytes::Bytes>;

            fn into_source(
                self,
                parts: &mut http::response::Parts,
            ) -> crate::stream::Source<Stream, Full<bytes::Bytes>> {
                match self {
                    Self::Events(events) => match events.into_source(parts) {
                        crate::stream::Source::Events(events) => {
                            crate::stream::Source::Events(events)
                        }
                        crate::stream::Source::Passthrough(_) => unreachable!(),
                    },
                    Self::Text(text) => crate::stream::Source::Passthrough(text),
                }
            }
        }

        fn get(path: &str, accept: bool) -> Request<()> {
            let mut req = Request::get(path);
            if accept {
                req = req.header("accept", "text/event-stream");
            }
            let mut req = req.body(()).unwrap();
            req.extensions_mut()
                .insert("10.0.0.1:5000".parse::<std::net::SocketAddr>().unwrap());
            req
        }

        #[tokio::test]
        async fn over_the_cap_a_stream_request_gets_429_without_calling_the_handler() {
            let calls = Arc::new(AtomicUsize::new(0));
            let svc = service(SseLayer::new().max_streams_per_client(1), calls.clone());
            let first = svc.clone().oneshot(get("/events", true)).await.unwrap();
            assert_eq!(first.status(), 200);
            let refused = svc.clone().oneshot(get("/events", true)).await.unwrap();
            assert_eq!(refused.status(), 429);
            assert_eq!(refused.headers()["retry-after"], "5");
            assert_eq!(
                calls.load(SeqCst),
                1,
                "the handler did not run for the refused one"
            );
            let text = refused.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                &text[..],
                b"too many open event streams from this address\n"
            );
            // Requests that do not ask for a stream are neither counted nor refused; one that
            // asks is refused at the cap, whatever the handler would have answered.
            let other = svc.clone().oneshot(get("/other", false)).await.unwrap();
            assert_eq!(other.status(), 200);
            let other = svc.clone().oneshot(get("/other", true)).await.unwrap();
            assert_eq!(other.status(), 429);
            drop(first);
            let again = svc.clone().oneshot(get("/events", true)).await.unwrap();
            assert_eq!(again.status(), 200);
        }

        #[tokio::test]
        async fn a_stream_asked_for_without_accept_is_counted_when_it_is_made() {
            let calls = Arc::new(AtomicUsize::new(0));
            let svc = service(SseLayer::new().max_streams(1), calls.clone());
            let first = svc.clone().oneshot(get("/events", false)).await.unwrap();
            assert_eq!(first.status(), 200);
            assert_eq!(first.headers()["content-type"], "text/event-stream");
            let refused = svc.clone().oneshot(get("/events", false)).await.unwrap();
            assert_eq!(refused.status(), 429);
            assert_eq!(
                &refused.into_body().collect().await.unwrap().to_bytes()[..],
                b"too many open event streams\n"
            );
            drop(first);
            // A permit taken for an `Accept` request that got no stream is given back.
            assert_eq!(
                svc.clone()
                    .oneshot(get("/other", true))
                    .await
                    .unwrap()
                    .status(),
                200
            );
            assert_eq!(
                svc.clone()
                    .oneshot(get("/events", true))
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
    }
}
