//! Future types.

use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderValue, Response, Version, header};
use pin_project_lite::pin_project;

use super::{
    hooks::Lifecycle,
    limit::{Permit, Refusal},
};
use crate::{SseBody, SseSource, body::Config, extension::DisconnectGuard, stream::Source};

pin_project! {
    /// Response future of [`Sse`](crate::Sse).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Call {
            #[pin]
            inner: F,
            config: Arc<Config>,
            version: Version,
            guard: Option<DisconnectGuard>,
            // The request's URI, kept only when hooks or the stream's span need it.
            uri: Option<http::Uri>,
            // Taken before the call for a request that asked for an event stream.
            permit: Option<Permit>,
            client: Option<IpAddr>,
            // The compression negotiated from the request (feature `compression`).
            chosen: crate::compress::Chosen,
        },
        // Over a cap before the inner service was called: `429`.
        Refused { refusal: Refusal },
    }
}

/// What the service took from the request, for when the response comes.
pub(crate) struct FromRequest {
    pub(crate) version: Version,
    pub(crate) guard: DisconnectGuard,
    /// The request's URI, kept only when hooks or the stream's span need it.
    pub(crate) uri: Option<http::Uri>,
    /// Taken before the call for a request that asked for an event stream.
    pub(crate) permit: Option<Permit>,
    pub(crate) client: Option<IpAddr>,
    /// The compression negotiated from the request's headers.
    pub(crate) chosen: crate::compress::Chosen,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, config: Arc<Config>, request: FromRequest) -> Self {
        let FromRequest {
            version,
            guard,
            uri,
            permit,
            client,
            chosen,
        } = request;
        Self {
            state: State::Call {
                inner,
                config,
                version,
                guard: Some(guard),
                uri,
                permit,
                client,
                chosen,
            },
        }
    }

    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self {
            state: State::Refused { refusal },
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
        let (inner, config, version, guard, uri, permit, client, chosen) =
            match self.project().state.project() {
                StateProj::Refused { refusal } => {
                    return Poll::Ready(Ok(refusal.response(SseBody::refused)));
                }
                StateProj::Call {
                    inner,
                    config,
                    version,
                    guard,
                    uri,
                    permit,
                    client,
                    chosen,
                } => (inner, config, version, guard, uri, permit, client, *chosen),
            };
        let response = ready!(inner.poll(cx))?;
        let (mut parts, body) = response.into_parts();
        let body = match body.into_source(&mut parts) {
            Source::Events(stream) => {
                // Not counted yet (the request did not say it wanted a stream): count it now,
                // or drop the stream and refuse.
                let permit = match (config.limits.as_ref(), permit.take()) {
                    (Some(limits), None) => match limits.acquire(*client) {
                        Ok(permit) => Some(permit),
                        Err(refusal) => {
                            drop(stream);
                            if let Some(guard) = guard.take() {
                                guard.finish();
                            }
                            return Poll::Ready(Ok(refusal.response(SseBody::refused)));
                        }
                    },
                    (_, permit) => permit,
                };
                set_headers(&mut parts.headers, *version);
                let life = uri
                    .take()
                    .and_then(|uri| Lifecycle::open(&config.hooks, &uri));
                let compress = crate::compress::Slot::start(chosen, &mut parts.headers);
                SseBody::events(stream, config.clone(), guard.take(), life, permit, compress)
            }
            Source::Passthrough(body) => {
                // Not a stream after all: a permit taken for it is released here.
                drop(permit.take());
                if let Some(guard) = guard.take() {
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
