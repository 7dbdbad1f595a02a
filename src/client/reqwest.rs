//! The client over `reqwest` (feature `reqwest`), for apps that are already on it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::BoxError;

/// A tower HTTP service over a [`reqwest::Client`], for
/// [`EventSource::new`](super::EventSource::new): the client's connection pool, TLS and proxy
/// settings, with this crate's reconnection, `Last-Event-ID` and `retry:` handling on top.
///
/// reqwest follows redirects itself (its own `redirect::Policy`, ten by default, dropping
/// sensitive headers across hosts), so the event source sees only the final answer; set
/// `redirect::Policy::none()` on the client to have the event source's rules apply instead
/// (at most [`max_redirects`](super::EventSource::max_redirects), no `https` to `http`).
/// Give the client no overall timeout: it would cut the stream; use
/// [`EventSource::read_timeout`](super::EventSource::read_timeout).
///
/// ```
/// use tower_sse::client::{EventSource, Reqwest};
///
/// let client = reqwest::Client::builder()
///     .redirect(reqwest::redirect::Policy::none())
///     .build()
///     .unwrap();
/// let request = http::Request::get("https://example.com/events")
///     .body(http_body_util::Full::default())
///     .unwrap();
/// let events = EventSource::new(Reqwest::new(client), request);
/// # drop(events);
/// ```
#[derive(Debug, Clone)]
pub struct Reqwest {
    client: reqwest::Client,
}

impl Reqwest {
    /// Wraps `client`.
    ///
    /// ```
    /// let _service = tower_sse::client::Reqwest::new(reqwest::Client::new());
    /// ```
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The wrapped client.
    ///
    /// ```
    /// let service = tower_sse::client::Reqwest::new(reqwest::Client::new());
    /// let _client: &reqwest::Client = service.get_ref();
    /// ```
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.client
    }
}

impl<B> Service<Request<B>> for Reqwest
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let client = self.client.clone();
        let request = request.map(reqwest::Body::wrap);
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok(response.into())
        })
    }
}
