//! The peer's address in every request's extensions, on either path.

use std::{
    net::SocketAddr,
    task::{Context, Poll},
};

use http::Request;
use tower_service::Service;

use super::body::RequestBody;

/// Puts the peer's address into a request's extensions.
pub(super) fn insert_peer<B>(request: &mut Request<B>, peer: SocketAddr) {
    request.extensions_mut().insert(peer);
    #[cfg(feature = "axum")]
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
}

/// The service as hyper calls it: its requests get the peer's address.
#[derive(Clone)]
pub(super) struct WithPeer<S> {
    pub(super) inner: S,
    pub(super) peer: SocketAddr,
}

impl<S> Service<Request<RequestBody>> for WithPeer<S>
where
    S: Service<Request<RequestBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        insert_peer(&mut request, self.peer);
        self.inner.call(request)
    }
}
