//! `SseLayer::compression` over real TCP through `tower_sse::serve`: each encoding is
//! negotiated from `Accept-Encoding`, and every event decodes on the client the moment its
//! frame arrives (the server sends the next event only after the client has read the last one,
//! so an event held in a compressor would stall the test).

use std::{io::Write, net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, sync::mpsc, time::timeout};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower_sse::{Compression, Event, EventStream, Shutdown, SseLayer};

type Senders = std::sync::Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<Event>>>>;

/// A server whose `/events` stream sends what the test pushes into the returned slot, and a
/// plain `/text` route.
async fn server(compression: Compression) -> (SocketAddr, Senders, Shutdown) {
    let shutdown = Shutdown::new();
    let slot: Senders = Default::default();
    let handler_slot = slot.clone();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let slot = handler_slot.clone();
                async move {
                    let (tx, rx) = mpsc::unbounded_channel();
                    *slot.lock().unwrap() = Some(tx);
                    EventStream::new(UnboundedReceiverStream::new(rx))
                }
            }),
        )
        .route(
            "/text",
            get(|| async { "plain text, never compressed here" }),
        )
        .layer(
            SseLayer::new()
                .shutdown(&shutdown)
                .keep_alive(Duration::from_secs(3600))
                .compression(compression),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tower_sse::serve(listener, app)
            .shutdown(&shutdown)
            .into_future(),
    );
    (addr, slot, shutdown)
}

async fn get_with(addr: SocketAddr, path: &str, accept: Option<&str>) -> Response<Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT_ENCODING, accept);
    }
    timeout(
        Duration::from_secs(10),
        client.request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("response head in time")
    .unwrap()
}

/// An incremental decoder for one encoding: compressed bytes in, the plain bytes they
/// complete out.
type Decode = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

fn decoder(encoding: &str) -> Decode {
    fn boxed<W: Write + 'static>(mut w: W, take: fn(&mut W) -> Vec<u8>) -> Decode {
        Box::new(move |bytes| {
            w.write_all(bytes).unwrap();
            w.flush().unwrap();
            take(&mut w)
        })
    }
    match encoding {
        "gzip" => boxed(flate2::write::GzDecoder::new(Vec::new()), |w| {
            std::mem::take(w.get_mut())
        }),
        "deflate" => boxed(flate2::write::ZlibDecoder::new(Vec::new()), |w| {
            std::mem::take(w.get_mut())
        }),
        "br" => boxed(brotli::DecompressorWriter::new(Vec::new(), 4096), |w| {
            std::mem::take(w.get_mut())
        }),
        "zstd" => boxed(
            zstd::stream::write::Decoder::new(Vec::new()).unwrap(),
            |w| std::mem::take(w.get_mut()),
        ),
        other => panic!("no decoder for {other}"),
    }
}

#[tokio::test]
async fn every_encoding_delivers_each_event_at_once() {
    let (addr, slot, shutdown) = server(Compression::new()).await;
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let response = get_with(
            addr,
            "/events",
            Some(&format!("{encoding}, identity;q=0.5")),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], encoding);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let vary: Vec<_> = response.headers().get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding"], "{encoding}: Vary names it once");
        let tx = slot.lock().unwrap().take().expect("the handler ran");
        let mut body = response.into_body();
        let mut decode = decoder(encoding);
        let (mut plain, mut wire) = (0usize, 0usize);
        for n in 0..30 {
            let event = Event::new()
                .id(n.to_string())
                .event("message")
                .data(format!(
                    r#"{{"room":"lobby","user":"ann","text":"hello number {n}"}}"#
                ));
            let expected = Bytes::from(event.clone().encode());
            tx.send(event).unwrap();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                let frame = timeout(Duration::from_secs(10), body.frame())
                    .await
                    .unwrap_or_else(|_| panic!("{encoding}: event {n} was held back"))
                    .expect("the body goes on")
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    wire += data.len();
                    got.extend(decode(&data));
                }
            }
            assert_eq!(got, expected.as_ref(), "{encoding}: event {n} whole, alone");
            plain += expected.len();
        }
        assert!(
            wire * 2 < plain,
            "{encoding}: {wire} bytes on the wire for {plain} of events"
        );
    }
    shutdown.trigger();
}

#[tokio::test]
async fn unasked_refused_or_not_a_stream_is_left_alone() {
    let (addr, slot, shutdown) = server(Compression::new().zstd(false).br(false)).await;
    for accept in [None, Some("identity"), Some("zstd, br"), Some("gzip;q=0")] {
        let response = get_with(addr, "/events", accept).await;
        assert!(
            response.headers().get(header::CONTENT_ENCODING).is_none(),
            "{accept:?}: {:?}",
            response.headers()
        );
        // Caches must still know the stream depends on `Accept-Encoding`.
        let vary: Vec<_> = response.headers().get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding"], "{accept:?}");
        let tx = slot.lock().unwrap().take().unwrap();
        tx.send(Event::new().data("plain")).unwrap();
        let frame = timeout(Duration::from_secs(10), response.into_body().frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: plain\n\n");
    }
    // Allowed and asked for, but not an event stream: untouched.
    let response = get_with(addr, "/text", Some("gzip")).await;
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "plain text, never compressed here");
    // gzip is allowed: chosen over the disallowed ones.
    let response = get_with(addr, "/events", Some("zstd, br, gzip;q=0.1")).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    shutdown.trigger();
}

/// Decodes a whole compressed body strictly: an error if it does not end as its format ends
/// (gzip's trailer, zlib's checksum, brotli's last block, zstd's frame end).
fn decode_to_end(encoding: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out)?,
        "deflate" => flate2::read::ZlibDecoder::new(body).read_to_end(&mut out)?,
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out)?,
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body)?;
            decoder.read_to_end(&mut out)?
        }
        other => panic!("no decoder for {other}"),
    };
    Ok(out)
}

/// A stream that ends (its handler's stream ends, or a shutdown sends the final event) ends
/// its compressed body too: strict decoders read it to the end without an error (found in
/// review: the trailer was never sent, and every strict client saw a truncated body).
#[tokio::test]
async fn a_stream_that_ends_ends_its_compression() {
    use tower::{ServiceBuilder, ServiceExt};
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        for shutdown_ends_it in [false, true] {
            let shutdown = Shutdown::new();
            let service = ServiceBuilder::new()
                .layer(
                    SseLayer::new()
                        .compression(Compression::new())
                        .shutdown(&shutdown)
                        .shutdown_event(Event::new().event("bye").data("")),
                )
                .service_fn(move |_: Request<()>| async move {
                    let events = futures_util::stream::iter(
                        (0..5).map(|n| Event::new().id(n.to_string()).data("hello")),
                    );
                    let events: std::pin::Pin<Box<dyn futures_core::Stream<Item = Event> + Send>> =
                        if shutdown_ends_it {
                            Box::pin(futures_util::StreamExt::chain(
                                events,
                                futures_util::stream::pending(),
                            ))
                        } else {
                            Box::pin(events)
                        };
                    Ok::<_, std::convert::Infallible>(Response::new(EventStream::new(events)))
                });
            let request = Request::get("/")
                .header(header::ACCEPT_ENCODING, encoding)
                .body(())
                .unwrap();
            let response = service.oneshot(request).await.unwrap();
            assert_eq!(response.headers()[header::CONTENT_ENCODING], encoding);
            let mut body = Box::pin(response.into_body());
            // The five events (one frame), then the shutdown, then whatever ends the body.
            let first = timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let mut bytes = first.into_data().unwrap().to_vec();
            if shutdown_ends_it {
                shutdown.trigger();
            }
            let rest = timeout(Duration::from_secs(10), body.collect())
                .await
                .unwrap()
                .unwrap()
                .to_bytes();
            bytes.extend_from_slice(&rest);
            let body = bytes;
            let plain = decode_to_end(encoding, &body)
                .unwrap_or_else(|err| panic!("{encoding} (shutdown: {shutdown_ends_it}): {err}"));
            let text = String::from_utf8(plain).unwrap();
            assert!(text.starts_with("id: 0\ndata: hello\n\n"), "{text}");
            assert_eq!(text.contains("event: bye\n"), shutdown_ends_it, "{text}");
        }
    }
}
