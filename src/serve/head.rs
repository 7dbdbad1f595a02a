//! Reading a request head on the lean path, and deciding which path serves it.
//!
//! The lean path takes only what it was made for: an HTTP/1.1 `GET` that asks for an event
//! stream (`Accept: text/event-stream`, as every `EventSource` sends) and carries no body and
//! no upgrade. Everything else (other methods, bodies, `Expect`, upgrades, HTTP/1.0, the
//! HTTP/2 preface, and every head httparse or `http` refuses) goes to hyper with the bytes
//! read so far put back in front of the connection, so hyper parses it from the first byte
//! and answers it as it would without this path (`400`, `431`, …).

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};

use crate::layer::limit::wants_event_stream;

/// At most this many header fields on the lean path (hyper's own limit); a head with more goes
/// to hyper.
const MAX_HEADERS: usize = 100;

/// HTTP/2's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a buffer holding the start of a connection's next request is.
#[derive(Debug)]
// A return value, moved once; boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Head {
    /// Not a complete head yet, and still within the limit: read more.
    Partial,
    /// Not one for the lean path (or not valid): hand the connection to hyper.
    Hyper,
    /// A request for the lean path; its head took the buffer's first `len` bytes.
    Lean {
        /// The request, without a body.
        request: Request<()>,
        /// The length of the head in the buffer.
        len: usize,
        /// The client asked for the connection to be closed after the response.
        close: bool,
    },
}

/// Reads the head at the start of `buf`, a buffer of at most `max_head` bytes.
pub(super) fn parse(buf: &[u8], max_head: usize) -> Head {
    // The start of HTTP/2's preface (h2c with prior knowledge): read on, under the same
    // header-read deadline, before hyper gets it (its version sniffing has no timer).
    if !buf.is_empty() && buf.len() < PREFACE.len() && PREFACE.starts_with(buf) {
        return Head::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        // A complete head over the limit: hyper answers 431.
        Ok(httparse::Status::Complete(_)) => return Head::Hyper,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Head::Partial,
        // Too large (hyper answers 431), or malformed (hyper answers 400).
        Ok(httparse::Status::Partial) | Err(_) => return Head::Hyper,
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Head::Hyper;
    }
    let Some(uri) = parsed.path.and_then(|path| path.parse::<Uri>().ok()) else {
        return Head::Hyper;
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = false;
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Head::Hyper;
        };
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return Head::Hyper;
        }
        if name == header::CONNECTION && has_token(field.value, b"close") {
            close = true;
        }
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    // The layer's own test, so that what it counts as a stream request is what comes here.
    if !wants_event_stream(&request) {
        return Head::Hyper;
    }
    Head::Lean {
        request,
        len,
        close,
    }
}

/// How far the bytes of a client's next request, read while the one before is answered, go.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// Not a complete head yet (or nothing).
    Partial,
    /// A complete request head: read no further.
    Complete,
    /// Not a request: read no further (hyper answers it, `400`).
    Invalid,
}

/// Scans the start of a client's next request.
pub(super) fn scan(buf: &[u8]) -> Scan {
    if buf.is_empty() {
        return Scan::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut fields).parse(buf) {
        Ok(httparse::Status::Complete(_)) => Scan::Complete,
        Ok(httparse::Status::Partial) => Scan::Partial,
        // Too many header fields is hyper's to answer (431), not garbage.
        Err(httparse::Error::TooManyHeaders) => Scan::Complete,
        Err(_) => Scan::Invalid,
    }
}

/// The checks behind the `serve_head` fuzz target (see `crate::__fuzz_serve_head`).
#[cfg(feature = "_fuzz")]
pub(super) fn fuzz(data: &[u8]) {
    for max_head in [16, 1024, 8 * 1024] {
        let Head::Lean { request, len, .. } = parse(data, max_head) else {
            continue;
        };
        assert!(len <= data.len());
        // The head alone reads the same, and what follows it is not part of it.
        let Head::Lean { len: again, .. } = parse(&data[..len], max_head) else {
            panic!("the head alone is not lean");
        };
        assert_eq!(again, len);
        assert_eq!(request.method(), http::Method::GET);
        for name in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::EXPECT,
        ] {
            assert!(!request.headers().contains_key(name));
        }
        let head = &data[..len];
        for (name, value) in request.headers() {
            assert!(
                head.windows(name.as_str().len())
                    .any(|w| w.eq_ignore_ascii_case(name.as_str().as_bytes()))
            );
            assert!(value.is_empty() || head.windows(value.len()).any(|w| w == value.as_bytes()));
        }
    }
}

/// Whether a comma-separated header value (`Connection`) lists `token`.
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8 * 1024;

    fn lean(buf: &[u8]) -> (Request<()>, usize, bool) {
        match parse(buf, MAX) {
            Head::Lean {
                request,
                len,
                close,
            } => (request, len, close),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn is_hyper(buf: &[u8]) -> bool {
        matches!(parse(buf, MAX), Head::Hyper)
    }

    #[test]
    fn an_event_stream_get_is_lean_and_the_rest_of_the_buffer_is_left() {
        let head = b"GET /events?room=a HTTP/1.1\r\nHost: x\r\nAccept: Text/Event-Stream\r\nLast-Event-ID: 7\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (request, len, close) = lean(&buf);
        assert_eq!(len, head.len());
        assert!(!close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/events");
        assert_eq!(request.uri().query(), Some("room=a"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.headers()["host"], "x");
    }

    #[test]
    fn connection_close_is_seen_among_other_tokens() {
        let (_, _, close) = lean(
            b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert!(close);
        let (_, _, close) =
            lean(b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\nConnection: closed\r\n\r\n");
        assert!(!close);
    }

    #[test]
    fn a_head_cut_short_is_partial_until_the_limit() {
        let head = b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\n";
        assert!(matches!(parse(head, MAX), Head::Partial));
        assert!(matches!(parse(b"", MAX), Head::Partial));
        assert!(matches!(parse(head, head.len()), Head::Hyper));
        // A complete head longer than the limit is hyper's (431).
        let head = b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";
        assert!(matches!(parse(head, head.len() - 1), Head::Hyper));
        assert!(matches!(parse(head, head.len()), Head::Lean { .. }));
        // The start of the HTTP/2 preface waits for the rest; all of it is hyper's.
        for n in 1..PREFACE.len() {
            assert!(matches!(parse(&PREFACE[..n], MAX), Head::Partial), "{n}");
        }
        assert!(is_hyper(PREFACE));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            // Not asking for an event stream.
            &b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /events HTTP/1.1\r\nAccept: text/html\r\n\r\n",
            // Other methods, versions, bodies, upgrades.
            b"POST /publish HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 0\r\n\r\n",
            b"HEAD /events HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n",
            // The HTTP/2 preface (h2c with prior knowledge).
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Malformed: hyper gives the error answer.
            b"GET /events HTTP/1.1\r\nAccept text/event-stream\r\n\r\n",
            b"GET /ev ents HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert!(is_hyper(head), "{:?}", String::from_utf8_lossy(head));
        }
        // More header fields than the lean path takes.
        let mut many = b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\n".to_vec();
        for n in 0..MAX_HEADERS {
            many.extend_from_slice(format!("x-{n}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(is_hyper(&many));
    }

    #[test]
    fn the_next_request_is_scanned_up_to_its_head() {
        assert_eq!(scan(b""), Scan::Partial);
        assert_eq!(scan(b"POST /echo HTTP/1.1\r\nContent-Len"), Scan::Partial);
        assert_eq!(
            scan(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            Scan::Complete
        );
        assert_eq!(scan(b"xxxxxxxxxxxxxxxx"), Scan::Partial);
        assert_eq!(scan(b"\x00\x01 / HTTP/1.1\r\n"), Scan::Invalid);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), Scan::Invalid);
    }

    proptest::proptest! {
        /// Any bytes at all: no panic, and a lean head is always a prefix of the input.
        #[test]
        fn any_bytes_are_routed_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Head::Lean { len, .. } = parse(&bytes, MAX) {
                proptest::prop_assert!(len <= bytes.len());
            }
        }

        /// A lean head followed by anything leaves exactly that anything.
        #[test]
        fn the_head_length_is_exact(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let head = b"GET /e HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";
            let mut buf = head.to_vec();
            buf.extend_from_slice(&tail);
            let Head::Lean { len, .. } = parse(&buf, MAX) else { panic!("not lean") };
            proptest::prop_assert_eq!(len, head.len());
        }
    }
}
