//! [`RequestBody`]: the request body type of services run by [`serve`](crate::serve).

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The body of a request as [`serve`](crate::serve) hands it to the service: hyper's
/// [`Incoming`] body, or no body at all for the requests [`serve`](crate::serve) reads itself
/// (HTTP/1.1 event-stream `GET`s, which carry none).
///
/// An axum `Router` takes it as it is (a `Router` serves any body type); a service written by
/// hand names it:
///
/// ```no_run
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower_sse::RequestBody;
///
/// # async fn run(listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// let service = tower::service_fn(|request: Request<RequestBody>| async move {
///     Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from(request.uri().to_string()))))
/// });
/// tower_sse::serve(listener, service).await
/// # }
/// ```
pub struct RequestBody {
    /// `None`: a request without a body (the lean HTTP/1.1 path).
    incoming: Option<Incoming>,
    /// Keeps the connection from counting as idle while the body is read (hyper's path).
    _counted: Option<super::activity::Request>,
}

impl RequestBody {
    pub(super) fn empty() -> Self {
        Self {
            incoming: None,
            _counted: None,
        }
    }

    pub(super) fn incoming(incoming: Incoming, counted: super::activity::Request) -> Self {
        Self {
            incoming: Some(incoming),
            _counted: Some(counted),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.incoming {
            Some(incoming) => Pin::new(incoming).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming
            .as_ref()
            .is_none_or(|incoming| incoming.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.incoming {
            Some(incoming) => f.debug_tuple("RequestBody").field(incoming).finish(),
            None => f.write_str("RequestBody(empty)"),
        }
    }
}
