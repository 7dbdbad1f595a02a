use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    SseLayer,
    future::{FromRequest, ResponseFuture},
    limit,
};
use crate::{Disconnect, LastEventId, SseBody, SseSource, body::Config};

/// The service made by [`SseLayer`]. See the [module docs](crate::layer).
///
/// ```
/// use tower_sse::Sse;
///
/// let service = Sse::new(tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(tower_sse::EventStream::new(
///         futures_util::stream::empty::<tower_sse::Event>(),
///     )))
/// }));
/// let _inner = service.get_ref();
/// ```
#[derive(Clone, Debug)]
pub struct Sse<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Sse<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        Self::with_config(inner, Arc::default())
    }

    pub(crate) fn with_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer with the default settings, to wrap other services.
    ///
    /// ```
    /// let _layer = tower_sse::Sse::<()>::layer();
    /// ```
    pub fn layer() -> SseLayer {
        SseLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Sse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: SseSource,
{
    type Response = Response<SseBody<ResBody::Stream, ResBody::Passthrough>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let version = req.version();
        // With caps: a request that asks for an event stream is counted before the handler
        // runs (refused, it costs no handler work); any other is counted if its response
        // turns out to be an event stream.
        let mut permit = None;
        let client = self
            .config
            .limits
            .as_ref()
            .and_then(|_| limit::client_addr(&req));
        if let Some(limits) = &self.config.limits {
            if limit::wants_event_stream(&req) {
                match limits.acquire(client) {
                    Ok(acquired) => permit = Some(acquired),
                    Err(refusal) => return ResponseFuture::refused(refusal),
                }
            }
        }
        // Only kept when a hook or the stream's `tracing` span will read it.
        let uri = (!self.config.hooks.is_empty() || tracing::enabled!(tracing::Level::DEBUG))
            .then(|| req.uri().clone());
        if let Some(id) = LastEventId::from_request(&req) {
            req.extensions_mut().insert(id);
        }
        let chosen = crate::compress::Chosen::negotiate(self.config.compression, req.headers());
        let disconnect = Disconnect::new();
        let guard = disconnect.guard();
        req.extensions_mut().insert(disconnect);
        ResponseFuture::new(
            self.inner.call(req),
            self.config.clone(),
            FromRequest {
                version,
                guard,
                uri,
                permit,
                client,
                chosen,
            },
        )
    }
}
