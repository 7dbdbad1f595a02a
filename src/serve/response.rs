//! Writing a response head on the lean path, and choosing how its body is framed.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode, header, response::Parts};
use http_body::SizeHint;

use super::head::has_token;

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body at all (`204`, `304`, and the `500` a `1xx` becomes): the body is not polled.
    None,
    /// `Content-Length`: exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: each frame one chunk (event streams).
    Chunked,
}

/// The head of `parts`, as bytes, with the headers HTTP/1.1 needs (framing, `Date`,
/// `Connection: close`), how its body is framed, and whether the connection can be kept for
/// another request afterwards. `close` is the client's `Connection: close`.
pub(super) fn head(parts: &mut Parts, hint: &SizeHint, close: bool) -> (Vec<u8>, Framing, bool) {
    if parts.status.is_informational() {
        // Not a final status (and no request here asked to upgrade): as hyper does, a 500
        // without a body, and the connection closes.
        tracing::error!(status = %parts.status, "a service answered with a 1xx status; sending 500");
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
        return (
            write(parts.status, &mut parts.headers, Some(0), false),
            Framing::None,
            false,
        );
    }
    let status = parts.status;
    let headers = &mut parts.headers;
    let keep = !close
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| has_token(value.as_bytes(), b"close"));
    // The framing is this writer's to choose: a service's own `Transfer-Encoding` would
    // contradict it.
    headers.remove(header::TRANSFER_ENCODING);
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        if status == StatusCode::NO_CONTENT {
            headers.remove(header::CONTENT_LENGTH);
        }
        Framing::None
    } else if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
    {
        Framing::Length(length)
    } else if let Some(length) = hint.exact() {
        Framing::Length(length)
    } else {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Framing::Chunked
    };
    let length = match framing {
        Framing::Length(length) => Some(length),
        Framing::None | Framing::Chunked => None,
    };
    (write(status, headers, length, keep), framing, keep)
}

/// The head's bytes: the status line, `headers` with `Content-Length` (when `length` is
/// set), `Connection: close` (unless `keep`) and `Date` added, and the blank line.
fn write(status: StatusCode, headers: &mut HeaderMap, length: Option<u64>, keep: bool) -> Vec<u8> {
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if !keep {
        // Replaces a `keep-alive` the service may have set (the SSE layer does).
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !headers.contains_key(header::DATE) {
        // Not a `let` chain (Rust 1.88), for the crate's MSRV of 1.85.
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
            headers.insert(header::DATE, date);
        }
    }
    let mut out = Vec::with_capacity(
        64 + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunk's size line, `{len:X}\r\n`, in `buf`; returns its length.
pub(super) fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xF];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn parts(response: Response<()>) -> Parts {
        response.into_parts().0
    }

    fn text(head: &[u8]) -> String {
        String::from_utf8(head.to_vec()).unwrap()
    }

    #[test]
    fn an_open_ended_body_is_chunked_and_the_connection_kept() {
        let mut p = parts(
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("transfer-encoding", "gzip")
                .body(())
                .unwrap(),
        );
        let (head, framing, keep) = head(&mut p, &SizeHint::new(), false);
        let head = text(&head);
        assert_eq!(framing, Framing::Chunked);
        assert!(keep);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/event-stream\r\n"));
        assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"));
        assert!(!head.contains("gzip"));
        assert!(head.contains("\r\ndate: "));
        assert!(!head.contains("connection"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_known_length_is_sent_and_a_close_is_announced() {
        let mut p = parts(
            Response::builder()
                .status(401)
                .header("connection", "keep-alive")
                .body(())
                .unwrap(),
        );
        let (head, framing, keep) = head(&mut p, &SizeHint::with_exact(12), true);
        let head = text(&head);
        assert_eq!(framing, Framing::Length(12));
        assert!(!keep);
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(head.contains("\r\ncontent-length: 12\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(!head.contains("keep-alive"));
        assert!(!head.contains("transfer-encoding"));
    }

    #[test]
    fn a_services_content_length_wins_and_no_content_has_none() {
        let mut p = parts(
            Response::builder()
                .header("content-length", " 5 ")
                .body(())
                .unwrap(),
        );
        assert_eq!(head(&mut p, &SizeHint::new(), false).1, Framing::Length(5));
        let mut p = parts(
            Response::builder()
                .status(204)
                .header("content-length", "5")
                .header("connection", "Close")
                .body(())
                .unwrap(),
        );
        let (head, framing, keep) = head(&mut p, &SizeHint::new(), false);
        assert_eq!(framing, Framing::None);
        assert!(!keep);
        assert!(!text(&head).contains("content-length"));
    }

    #[test]
    fn a_1xx_from_the_service_becomes_a_500_without_a_body() {
        for status in [100, 101, 103] {
            let mut p = parts(
                Response::builder()
                    .status(status)
                    .header("link", "</style.css>; rel=preload")
                    .body(())
                    .unwrap(),
            );
            let (head, framing, keep) = head(&mut p, &SizeHint::new(), false);
            let head = text(&head);
            assert!(
                head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\ncontent-length: 0\r\n"));
            assert!(head.contains("\r\nconnection: close\r\n"));
            assert!(!head.contains("link"));
            assert_eq!(framing, Framing::None);
            assert!(!keep);
        }
    }

    #[test]
    fn chunk_size_lines_are_uppercase_hex() {
        let mut buf = [0; 18];
        for (len, want) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (10, "A\r\n"),
            (255, "FF\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "FFFFFFFFFFFFFFFF\r\n"),
        ] {
            let n = chunk_size_line(len, &mut buf);
            assert_eq!(&buf[..n], want.as_bytes());
        }
    }
}
