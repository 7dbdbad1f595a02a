//! Future types.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderValue, Response, Version, header};
use pin_project_lite::pin_project;

use super::hooks::Lifecycle;
use crate::{SseBody, SseSource, body::Config, extension::DisconnectGuard, stream::Source};

pin_project! {
    /// Response future of [`Sse`](crate::Sse).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        config: Arc<Config>,
        version: Version,
        guard: Option<DisconnectGuard>,
        // The request's URI, kept only when hooks or the stream's span need it.
        uri: Option<http::Uri>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        config: Arc<Config>,
        version: Version,
        guard: DisconnectGuard,
        uri: Option<http::Uri>,
    ) -> Self {
        Self {
            inner,
            config,
            version,
            guard: Some(guard),
            uri,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: SseSource,
{
    type Output = Result<Response<SseBody<B::Stream, B::Passthrough>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (mut parts, body) = response.into_parts();
        let body = match body.into_source(&mut parts) {
            Source::Events(stream) => {
                set_headers(&mut parts.headers, *this.version);
                let life = this
                    .uri
                    .take()
                    .and_then(|uri| Lifecycle::open(&this.config.hooks, &uri));
                SseBody::events(stream, this.config.clone(), this.guard.take(), life)
            }
            Source::Passthrough(body) => {
                if let Some(guard) = this.guard.take() {
                    guard.finish();
                }
                SseBody::passthrough(body)
            }
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

pub(crate) fn set_headers(headers: &mut HeaderMap, version: Version) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.remove(header::CONTENT_LENGTH);
    if version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    } else {
        headers.remove(header::CONNECTION);
    }
}
