//! The default client's connector: TCP, and TLS with rustls when the `client` feature is on
//! (`client-plain` builds without TLS). One type either way, so enabling TLS elsewhere in a
//! dependency graph changes no type.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tower_service::Service;

use crate::BoxError;

#[cfg(feature = "client")]
type Inner = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "client"))]
type Inner = HttpConnector;

#[cfg(feature = "client")]
type Stream = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
#[cfg(not(feature = "client"))]
type Stream = TokioIo<tokio::net::TcpStream>;

/// Connects [`HttpClient`](super::HttpClient): plain TCP for `http://`, and with the `client`
/// feature TLS for `https://` (rustls; HTTP/2 when the server offers it by ALPN, else
/// HTTP/1.1). Made by [`http_client`](super::http_client) and, with your own certificate
/// authorities, [`https_client_with_roots`](super::https_client_with_roots).
#[derive(Clone)]
pub struct Connector {
    inner: Inner,
}

/// A connection made by [`Connector`].
pub struct Conn {
    stream: Stream,
}

impl Connector {
    /// Plain TCP only (`client-plain`).
    #[cfg(not(feature = "client"))]
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(true);
        Self { inner: http }
    }

    /// TCP and TLS, trusting `roots`.
    #[cfg(feature = "client")]
    pub(crate) fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Self { inner }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    #[allow(clippy::useless_conversion)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::<BoxError>::into)
    }

    // The conversion is needed for `client-plain`'s connector error, not for the TLS one.
    #[allow(clippy::useless_conversion)]
    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let stream = connecting.await.map_err(Into::<BoxError>::into)?;
            Ok(Conn { stream })
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &cfg!(feature = "client"))
            .finish()
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// The platform's certificate authorities (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), and
/// `extra` (PEM).
#[cfg(feature = "client")]
pub(crate) fn roots(extra: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if !extra.is_empty() {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(extra) {
            let cert = cert.map_err(|err| format!("not a PEM certificate: {err}"))?;
            roots
                .add(cert)
                .map_err(|err| format!("not a usable CA certificate: {err}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no PEM certificate in it".into());
        }
    }
    Ok(roots)
}

/// Whether `err` (or what caused it) is a refused certificate: final, not worth a reconnect.
#[cfg(feature = "client")]
pub(crate) fn is_certificate_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            );
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_certificate_error(inner) {
                    return true;
                }
            }
        }
        next = err.source();
    }
    false
}

#[cfg(not(feature = "client"))]
pub(crate) fn is_certificate_error(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}
