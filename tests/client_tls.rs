//! The default client over real TLS: a rustls server in the test with a certificate from a
//! throw-away CA (rcgen), HTTP/2 by ALPN, a resume after a cut, and an untrusted certificate.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::Request, http::Version, routing::get};
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, time::timeout};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};
use tower_sse::{
    Event, EventStream, LastEventId, SseLayer,
    client::{ErrorKind, EventSource, HttpClient, SseEvent},
};

/// A CA and a server certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tower-sse test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// What the server saw: each request's HTTP version, `Last-Event-ID` and `Authorization`.
type Seen = Arc<Mutex<Vec<(Version, Option<String>, Option<String>)>>>;

/// An HTTPS server (HTTP/2 and HTTP/1.1 by ALPN) whose `/events` sends two events after the
/// client's `Last-Event-ID` and then ends the stream, so the client reconnects.
async fn serve(pki: &Pki) -> (SocketAddr, Seen) {
    serve_alpn(pki, &[b"h2", b"http/1.1"]).await
}

/// [`serve`], offering `alpn` only.
async fn serve_alpn(pki: &Pki, alpn: &[&[u8]]) -> (SocketAddr, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/events",
            get({
                let seen = seen.clone();
                move |last: Option<LastEventId>, request: Request| {
                    let from = last
                        .as_ref()
                        .and_then(|id| id.as_str().parse::<u64>().ok())
                        .unwrap_or(0);
                    let authorization = request
                        .headers()
                        .get("authorization")
                        .map(|value| value.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push((
                        request.version(),
                        last.map(|id| id.as_str().to_owned()),
                        authorization,
                    ));
                    async move {
                        EventStream::new(futures_util::stream::iter(
                            (from + 1..=from + 2)
                                .map(|n| Event::new().id(n.to_string()).data(format!("n{n}"))),
                        ))
                    }
                }
            }),
        )
        // A redirect out of TLS, and one within it.
        .route(
            "/down",
            get(|| async {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "http://localhost:1/events")],
                )
            }),
        )
        .route(
            "/moved",
            get(|| async {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "/events")],
                )
            }),
        )
        .layer(SseLayer::new().retry(Duration::from_millis(10)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // An untrusting client hangs up in the handshake: nothing to serve then.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                    .await;
            });
        }
    });
    (addr, seen)
}

fn request(addr: SocketAddr) -> http::Request<Full<bytes::Bytes>> {
    let uri = format!("https://localhost:{}/events", addr.port());
    http::Request::get(uri).body(Full::default()).unwrap()
}

#[tokio::test]
async fn events_over_https_with_http2_and_a_resume_after_each_cut() {
    let pki = pki();
    let (addr, seen) = serve(&pki).await;
    let client: HttpClient =
        tower_sse::client::https_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let mut source = EventSource::new(client, request(addr));
    let mut ids = vec![];
    timeout(Duration::from_secs(20), async {
        while ids.len() < 6 {
            match source.next().await.unwrap().unwrap() {
                SseEvent::Message(message) => ids.push(message.id().to_owned()),
                SseEvent::Open(_) | SseEvent::Reconnect(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("six events over TLS");
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .map(|(_, last, _)| last.clone())
            .collect::<Vec<_>>()[..3],
        [None, Some("2".to_owned()), Some("4".to_owned())]
    );
    assert!(
        seen.iter()
            .all(|(version, _, _)| *version == Version::HTTP_2),
        "HTTP/2 by ALPN: {seen:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_clear_final_error() {
    let pki = pki();
    let (addr, seen) = serve(&pki).await;
    // The platform's roots only: the test CA is not among them.
    let mut source = EventSource::new(tower_sse::client::http_client(), request(addr));
    let first = timeout(Duration::from_secs(10), source.next())
        .await
        .unwrap()
        .unwrap();
    let err = first.expect_err("the certificate must be refused");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    let cause = format!("{:?}", err);
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    // Final: no reconnection, the stream is over.
    assert!(source.next().await.is_none());
    assert!(seen.lock().unwrap().is_empty());

    // Unless asked: then it is retried like any lost connection.
    let mut retrying = EventSource::new(tower_sse::client::http_client(), request(addr))
        .reconnect_on_tls_error(true)
        .max_retries(Some(1));
    let first = timeout(Duration::from_secs(10), retrying.next())
        .await
        .unwrap()
        .unwrap();
    let Ok(SseEvent::Reconnect(reconnect)) = first else {
        panic!("expected a reconnect, got {first:?}")
    };
    assert_eq!(reconnect.error().unwrap().kind(), ErrorKind::Transport);
}

#[tokio::test]
async fn get_takes_https_urls_and_a_bad_ca_file_is_an_error() {
    let err = tower_sse::client::https_client_with_roots(b"-----BEGIN CERTIFICATE-----\nnope\n")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Request);
    // `get` with an https URL goes out (and here meets an unknown CA: Tls, not Request).
    let pki = pki();
    let (addr, _) = serve(&pki).await;
    let uri = format!("https://localhost:{}/events", addr.port())
        .parse()
        .unwrap();
    let mut source = EventSource::get(uri);
    let err = first_error(&mut source).await;
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
}

/// The example client reads an `https://` stream with `--ca`, and says so when the certificate
/// is refused without it.
#[tokio::test]
async fn the_example_client_speaks_https() {
    let pki = pki();
    let (addr, _) = serve(&pki).await;
    let dir = std::env::temp_dir().join(format!("tower-sse-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = format!("https://localhost:{}/events", addr.port());
    let client = support::example_path("client");
    let run = |args: Vec<String>| {
        let client = client.clone();
        async move {
            let output = tokio::process::Command::new(client)
                .args(args)
                .kill_on_drop(true)
                .output();
            timeout(Duration::from_secs(30), output)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let ok = run(vec![
        url.clone(),
        "--max-events".into(),
        "2".into(),
        "--ca".into(),
        ca.display().to_string(),
    ])
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(ok.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], "2");
    let refused = run(vec![url, "--max-events".into(), "1".into()]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The connect hook runs before every attempt: here it rotates a bearer token, and the server
/// sees the new one on each reconnection (with the `Last-Event-ID` the client had).
#[tokio::test]
async fn a_connect_hook_rotates_a_token_between_reconnects() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_sse::client::Attempt;

    let pki = pki();
    let (addr, seen) = serve(&pki).await;
    let client = tower_sse::client::https_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let mut source = EventSource::new(client, request(addr)).on_connect({
        let issued = issued.clone();
        move |mut head: http::request::Parts, attempt: Attempt| {
            let token = issued.fetch_add(1, Ordering::Relaxed);
            async move {
                // A real hook would fetch a fresh token here.
                tokio::task::yield_now().await;
                assert_eq!(
                    head.headers.contains_key("last-event-id"),
                    !attempt.last_event_id().is_empty()
                );
                let value = format!("Bearer t{token}").parse().unwrap();
                head.headers.insert("authorization", value);
                Ok::<_, std::convert::Infallible>(head)
            }
        }
    });
    let mut messages = 0;
    timeout(Duration::from_secs(20), async {
        while messages < 6 {
            if let SseEvent::Message(_) = source.next().await.unwrap().unwrap() {
                messages += 1;
            }
        }
    })
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let tokens: Vec<_> = seen
        .iter()
        .map(|(_, _, token)| token.clone().unwrap())
        .collect();
    assert_eq!(tokens[..3], ["Bearer t0", "Bearer t1", "Bearer t2"]);
}

/// A hook that gives up ends the stream with a final `Hook` error.
#[tokio::test]
async fn a_connect_hook_that_gives_up_ends_the_stream() {
    use tower_sse::client::Attempt;

    let pki = pki();
    let (addr, seen) = serve(&pki).await;
    let client = tower_sse::client::https_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let mut source = EventSource::new(client, request(addr)).on_connect(
        |_: http::request::Parts, _: Attempt| async {
            Err::<http::request::Parts, _>("logged out")
        },
    );
    let err = first_error(&mut source).await;
    assert_eq!(err.kind(), ErrorKind::Hook);
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "logged out"
    );
    assert!(source.next().await.is_none());
    assert!(seen.lock().unwrap().is_empty());
}

/// Redirects within `https` are followed; one to plain `http` is refused (the request, its
/// headers and `Last-Event-ID` would travel in the clear), with a clear error.
#[tokio::test]
async fn a_redirect_from_https_to_http_is_refused() {
    let pki = pki();
    let (addr, _) = serve(&pki).await;
    let client = tower_sse::client::https_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let at = |path: &str| {
        let uri = format!("https://localhost:{}{path}", addr.port());
        http::Request::get(uri)
            .header("authorization", "Bearer secret")
            .body(Full::default())
            .unwrap()
    };
    let mut moved = EventSource::new(client.clone(), at("/moved"));
    let first = timeout(Duration::from_secs(10), moved.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Ok(SseEvent::Open(_))), "{first:?}");
    let mut down = EventSource::new(client, at("/down"));
    let err = first_error(&mut down).await;
    assert_eq!(err.kind(), ErrorKind::Redirect);
    assert!(
        err.to_string().contains("https to plain http refused"),
        "{err}"
    );
    assert!(down.next().await.is_none());
}

/// The reqwest transport, against the same TLS server: events across resumes over HTTP/2, and
/// an untrusted certificate as the same final `Tls` error.
#[tokio::test]
async fn the_reqwest_transport_behaves_the_same() {
    use tower_sse::client::Reqwest;

    let pki = pki();
    let (addr, seen) = serve(&pki).await;
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut source = EventSource::new(Reqwest::new(client), request(addr));
    let mut ids = vec![];
    timeout(Duration::from_secs(20), async {
        while ids.len() < 4 {
            if let SseEvent::Message(message) = source.next().await.unwrap().unwrap() {
                ids.push(message.id().to_owned());
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[1].1.as_deref(),
        Some("2"),
        "resumed with Last-Event-ID"
    );
    assert!(
        seen.iter()
            .all(|(version, _, _)| *version == Version::HTTP_2),
        "{seen:?}"
    );

    // No roots at all: the certificate is refused, finally.
    let untrusting = reqwest::Client::builder().build().unwrap();
    let mut source = EventSource::new(Reqwest::new(untrusting), request(addr));
    let err = first_error(&mut source).await;
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(source.next().await.is_none());
}

/// A server that offers only HTTP/1.1 by ALPN gets HTTP/1.1.
#[tokio::test]
async fn http1_when_the_server_offers_no_h2() {
    let pki = pki();
    let (addr, seen) = serve_alpn(&pki, &[b"http/1.1"]).await;
    let client = tower_sse::client::https_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let mut source = EventSource::new(client, request(addr));
    loop {
        let item = timeout(Duration::from_secs(10), source.next())
            .await
            .unwrap()
            .unwrap();
        if let SseEvent::Message(_) = item.unwrap() {
            break;
        }
    }
    assert_eq!(seen.lock().unwrap()[0].0, Version::HTTP_11);
}

/// The first item of `source`, which must be an error (bounded in time).
async fn first_error<S>(source: &mut S) -> tower_sse::client::Error
where
    S: futures_util::Stream<Item = Result<SseEvent, tower_sse::client::Error>> + Unpin,
{
    let first = timeout(Duration::from_secs(10), source.next()).await;
    first
        .expect("an item in time")
        .expect("an item")
        .expect_err("an error")
}
