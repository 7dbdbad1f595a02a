//! The incremental event-stream decoder.

use std::{borrow::Cow, fmt, mem, time::Duration};

use bytes::{Buf, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes in, [`Frame`]s out: an incremental decoder for `text/event-stream`.
///
/// It follows the [WHATWG event stream interpretation][spec] exactly, whatever the chunking: a
/// CR at the end of one chunk and an LF at the start of the next are one line end, and a byte
/// order mark split across chunks is still stripped.
///
/// # Usage
///
/// [`feed`](Decoder::feed) each chunk of the response body, then call
/// [`decode`](Decoder::decode) until it returns `Ok(None)`. When the body ends, call
/// [`decode_eof`](Decoder::decode_eof) until it returns `Ok(None)`: the incomplete last event
/// (anything after the last blank line) is discarded, as the spec requires, and the decoder is
/// ready for the next connection.
///
/// The decoder owns its input buffer so that it can keep a scan offset into it: each byte is
/// searched for a line end once, so decoding takes time linear in the input however it is
/// chunked.
///
/// # Limits and security
///
/// An event stream comes from the network, so by default the decoder bounds what it buffers:
/// a line (field name, colon and value, without the line end) may be at most
/// [`DEFAULT_MAX_LINE_LENGTH`](Decoder::DEFAULT_MAX_LINE_LENGTH) bytes, and an event's data (as
/// it would be delivered, with the LFs that join its `data` lines) at most
/// [`DEFAULT_MAX_EVENT_SIZE`](Decoder::DEFAULT_MAX_EVENT_SIZE) bytes. Without such limits a
/// server (or anything between it and you) can make the decoder buffer without end, just by
/// never sending a line end or a blank line.
///
/// Going over a limit makes [`decode`](Decoder::decode) return a [`DecodeError`] once. The
/// decoder then drops the offending line without buffering it and discards the event it
/// belongs to, up to and including the next blank line: that event's `data`, `event` and `id`
/// fields are ignored, and so are the lines after the error up to that blank line (`retry`
/// fields and comments included; those before the error were already returned). Decoding then
/// continues normally, so the caller may choose between skipping the event and closing the
/// connection.
///
/// Apart from these limits the decoder holds only the bytes fed and not yet decoded: call
/// `decode` until it returns `Ok(None)` after each `feed`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sse::client::{Decoder, Frame};
///
/// let mut decoder = Decoder::new();
/// let mut frames = Vec::new();
/// for chunk in [&b"retry: 3000\r\nid: 1\r"[..], b"\ndata: hello\r\n\r", b"\ndata: cut"] {
///     decoder.feed(chunk);
///     while let Some(frame) = decoder.decode()? {
///         frames.push(frame);
///     }
/// }
/// while let Some(frame) = decoder.decode_eof()? {
///     frames.push(frame);
/// }
///
/// assert_eq!(frames.len(), 2);
/// assert_eq!(frames[0], Frame::Retry(Duration::from_secs(3)));
/// let Frame::Event(event) = &frames[1] else { panic!() };
/// assert_eq!((event.event(), event.data(), event.id()), ("message", "hello", "1"));
/// assert_eq!(decoder.last_event_id(), "1");
/// # Ok::<(), tower_sse::client::DecodeError>(())
/// ```
///
/// [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
pub struct Decoder {
    max_line: usize,
    max_event: usize,
    /// Bytes fed and not yet decoded. Always starts at the start of a line (or of the stream).
    buf: BytesMut,
    /// `buf[..scanned]` holds no CR or LF.
    scanned: usize,
    /// The stream has not started yet: a BOM may still come.
    at_start: bool,
    /// The last line ended with CR: an LF right after it belongs to that line end.
    skip_lf: bool,
    /// The current line went over the limit: drop it up to its end without buffering it.
    skip_line: bool,
    /// An error discarded the current event: ignore lines up to the next blank line.
    skip_event: bool,
    data: String,
    event_type: String,
    /// The spec's "last event ID buffer": set by `id` fields, committed on a blank line.
    id_buffer: String,
    /// The event source's "last event ID string".
    last_event_id: String,
}

impl Decoder {
    /// The default maximum line length: 1 MiB.
    ///
    /// ```
    /// use tower_sse::client::Decoder;
    ///
    /// assert_eq!(Decoder::new().max_line_length(), Decoder::DEFAULT_MAX_LINE_LENGTH);
    /// ```
    pub const DEFAULT_MAX_LINE_LENGTH: usize = 1024 * 1024;

    /// The default maximum event data size: 4 MiB.
    ///
    /// ```
    /// use tower_sse::client::Decoder;
    ///
    /// assert_eq!(Decoder::new().max_event_size(), Decoder::DEFAULT_MAX_EVENT_SIZE);
    /// ```
    pub const DEFAULT_MAX_EVENT_SIZE: usize = 4 * 1024 * 1024;

    /// A decoder with the default limits, at the start of a stream, with an empty last event ID.
    ///
    /// ```
    /// let decoder = tower_sse::client::Decoder::new();
    /// assert_eq!(decoder.last_event_id(), "");
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_line: Self::DEFAULT_MAX_LINE_LENGTH,
            max_event: Self::DEFAULT_MAX_EVENT_SIZE,
            buf: BytesMut::new(),
            scanned: 0,
            at_start: true,
            skip_lf: false,
            skip_line: false,
            skip_event: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
        }
    }

    /// Sets the maximum length of a line in bytes, not counting its line end (see
    /// [Limits and security](Decoder#limits-and-security)). `usize::MAX` means no limit, which
    /// is only safe for trusted input.
    ///
    /// ```
    /// use tower_sse::client::Decoder;
    ///
    /// let mut decoder = Decoder::new().with_max_line_length(8);
    /// decoder.feed(b"data: 123\n\n");
    /// let err = decoder.decode().unwrap_err();
    /// assert_eq!(err.to_string(), "line longer than 8 bytes");
    /// ```
    #[must_use]
    pub fn with_max_line_length(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// Sets the maximum size of an event's data in bytes (see
    /// [Limits and security](Decoder#limits-and-security)). The size counts the UTF-8 bytes of
    /// the data as delivered, including the LFs that join `data` lines. `usize::MAX` means no
    /// limit, which is only safe for trusted input.
    ///
    /// ```
    /// use tower_sse::client::Decoder;
    ///
    /// let mut decoder = Decoder::new().with_max_event_size(3);
    /// decoder.feed(b"data: a\ndata: b\n\ndata: abcd\n\n");
    /// assert!(decoder.decode().unwrap().is_some()); // "a\nb" is 3 bytes
    /// assert!(decoder.decode().unwrap_err().is_event_too_large());
    /// ```
    #[must_use]
    pub fn with_max_event_size(mut self, max: usize) -> Self {
        self.max_event = max;
        self
    }

    /// The maximum line length in bytes.
    ///
    /// ```
    /// let decoder = tower_sse::client::Decoder::new().with_max_line_length(80);
    /// assert_eq!(decoder.max_line_length(), 80);
    /// ```
    pub fn max_line_length(&self) -> usize {
        self.max_line
    }

    /// The maximum event data size in bytes.
    ///
    /// ```
    /// let decoder = tower_sse::client::Decoder::new().with_max_event_size(1 << 10);
    /// assert_eq!(decoder.max_event_size(), 1024);
    /// ```
    pub fn max_event_size(&self) -> usize {
        self.max_event
    }

    /// The event source's last event ID: the value to send as `Last-Event-ID` when reconnecting.
    ///
    /// An `id` field takes effect at the blank line that ends its event, even when that event
    /// has no data and so is not dispatched; an `id` in an event that is never ended (the stream
    /// stops first) does not count. An empty `id` field resets it to the empty string, which
    /// means "send no `Last-Event-ID`".
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new();
    /// decoder.feed(b"id: 7\n\nid: 8\n");
    /// assert_eq!(decoder.decode().unwrap(), None);
    /// assert_eq!(decoder.last_event_id(), "7");
    /// ```
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Sets the last event ID, as when resuming from an ID saved earlier. Meant for a new
    /// decoder or between connections: an `id` already read for a pending event is replaced.
    ///
    /// ```
    /// use tower_sse::client::{Decoder, Frame, MessageEvent};
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.set_last_event_id("41");
    /// decoder.feed(b"data: x\n\n");
    /// assert_eq!(
    ///     decoder.decode().unwrap(),
    ///     Some(Frame::Event(MessageEvent::new("message", "x", "41")))
    /// );
    /// ```
    pub fn set_last_event_id(&mut self, id: &str) {
        self.last_event_id.clear();
        self.last_event_id.push_str(id);
        self.id_buffer.clear();
        self.id_buffer.push_str(id);
    }

    /// Appends a chunk of the stream. Call [`decode`](Decoder::decode) next.
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new();
    /// decoder.feed(b"data: a");
    /// assert_eq!(decoder.decode().unwrap(), None);
    /// decoder.feed(b"\n\n");
    /// assert!(decoder.decode().unwrap().is_some());
    /// ```
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Decodes the next frame from the bytes fed so far.
    ///
    /// Returns `Ok(None)` when more input is needed.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when a line or an event goes over its limit. The error is returned
    /// once; the decoder skips the rest of that event and can be used again (see
    /// [Limits and security](Decoder#limits-and-security)).
    ///
    /// ```
    /// use tower_sse::client::{Decoder, Frame};
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.feed(b": keep-alive\n");
    /// assert_eq!(decoder.decode().unwrap(), Some(Frame::Comment("keep-alive".into())));
    /// assert_eq!(decoder.decode().unwrap(), None);
    /// ```
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        loop {
            if self.at_start {
                let n = self.buf.len().min(BOM.len());
                if self.buf[..n] != BOM[..n] {
                    self.at_start = false;
                } else if n < BOM.len() {
                    // Empty, or a partial BOM: wait for more.
                    return Ok(None);
                } else {
                    self.buf.advance(BOM.len());
                    self.at_start = false;
                }
            }
            if self.skip_lf {
                match self.buf.first() {
                    None => return Ok(None),
                    Some(&b) => {
                        if b == b'\n' {
                            self.buf.advance(1);
                        }
                        self.skip_lf = false;
                    }
                }
            }

            let Some(at) = memchr::memchr2(b'\r', b'\n', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.skip_line {
                    self.buf.clear();
                    self.scanned = 0;
                } else if self.scanned > self.max_line {
                    self.buf.clear();
                    self.scanned = 0;
                    self.skip_line = true;
                    if !self.skip_event {
                        return Err(self.fail(ErrorKind::LineTooLong, self.max_line));
                    }
                }
                return Ok(None);
            };
            let end = self.scanned + at;
            self.scanned = 0;
            self.skip_lf = self.buf[end] == b'\r';
            let mut line = self.buf.split_to(end + 1);
            line.truncate(end);

            if self.skip_line {
                self.skip_line = false;
                continue;
            }
            if line.len() > self.max_line {
                // Only reached when the whole line arrived at once; it is dropped with `line`.
                if self.skip_event {
                    continue;
                }
                return Err(self.fail(ErrorKind::LineTooLong, self.max_line));
            }
            if let Some(frame) = self.process_line(&line)? {
                return Ok(Some(frame));
            }
        }
    }

    /// Like [`decode`](Decoder::decode), for when the stream has ended.
    ///
    /// Returns the frames still complete in the buffer, one per call. Then, per the spec, it
    /// discards any pending data (the last, unterminated line and the event that was not ended
    /// by a blank line), resets the decoder for a new stream (a new connection: a BOM may come
    /// again) and returns `Ok(None)`. The [last event ID](Decoder::last_event_id) and the limits
    /// are kept, as an `EventSource` keeps them across reconnections.
    ///
    /// # Errors
    ///
    /// As [`decode`](Decoder::decode).
    ///
    /// ```
    /// use tower_sse::client::Decoder;
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.feed(b"id: 1\ndata: first\n\ndata: second");
    /// assert_eq!(decoder.decode_eof().unwrap().unwrap().as_event().unwrap().data(), "first");
    /// assert_eq!(decoder.decode_eof().unwrap(), None); // "second" is never dispatched
    /// assert_eq!(decoder.last_event_id(), "1");
    /// ```
    pub fn decode_eof(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(frame) = self.decode()? {
            return Ok(Some(frame));
        }
        self.reset();
        Ok(None)
    }

    /// Forgets the current stream: buffered bytes, the partial line and the partial event. Keeps
    /// the limits and the [last event ID](Decoder::last_event_id). Use it when a connection is
    /// dropped before its end and a new one starts.
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new();
    /// decoder.feed(b"id: 1\n\ndata: partial");
    /// assert_eq!(decoder.decode().unwrap(), None);
    /// decoder.reset();
    /// decoder.feed(b"\n\n");
    /// assert_eq!(decoder.decode().unwrap(), None);
    /// assert_eq!(decoder.last_event_id(), "1");
    /// ```
    pub fn reset(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.at_start = true;
        self.skip_lf = false;
        self.skip_line = false;
        self.skip_event = false;
        self.clear_event();
    }

    /// Discards the event under construction; `id` fields in it never take effect.
    fn clear_event(&mut self) {
        self.data.clear();
        self.event_type.clear();
        if self.id_buffer != self.last_event_id {
            self.id_buffer.clone_from(&self.last_event_id);
        }
    }

    fn fail(&mut self, kind: ErrorKind, limit: usize) -> DecodeError {
        self.clear_event();
        self.skip_event = true;
        DecodeError { kind, limit }
    }

    /// Processes one line, without its line end, as the spec says.
    fn process_line(&mut self, line: &[u8]) -> Result<Option<Frame>, DecodeError> {
        if line.is_empty() {
            if mem::take(&mut self.skip_event) {
                return Ok(None);
            }
            return Ok(self.dispatch());
        }
        if self.skip_event {
            return Ok(None);
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => {
                let comment = strip_space(&line[1..]);
                return Ok(Some(Frame::Comment(utf8(comment).into_owned())));
            }
            Some(at) => (&line[..at], strip_space(&line[at + 1..])),
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                let value = utf8(value);
                if self.data.len().saturating_add(value.len()) > self.max_event {
                    return Err(self.fail(ErrorKind::EventTooLarge, self.max_event));
                }
                self.data.reserve(value.len() + 1);
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&utf8(value));
            }
            // An id with NUL is ignored: it could not be sent back in a header.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&utf8(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |n, &d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                return Ok(Some(Frame::Retry(Duration::from_millis(millis))));
            }
            _ => {}
        }
        Ok(None)
    }

    /// The spec's "dispatch the event" steps, at a blank line.
    fn dispatch(&mut self) -> Option<Frame> {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            String::from("message")
        } else {
            mem::take(&mut self.event_type)
        };
        Some(Frame::Event(MessageEvent {
            event,
            data: mem::take(&mut self.data),
            id: self.last_event_id.clone(),
        }))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("max_line_length", &self.max_line)
            .field("max_event_size", &self.max_event)
            .field("buffered", &self.buf.len())
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

fn strip_space(value: &[u8]) -> &[u8] {
    value.strip_prefix(b" ").unwrap_or(value)
}

/// Lossy UTF-8, as the spec's decoding: line ends, colons and spaces are ASCII, so decoding each
/// value on its own gives the same characters as decoding the whole stream.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// One thing decoded from an event stream.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::client::{Decoder, Frame};
///
/// let mut decoder = Decoder::new();
/// decoder.feed(b":hi\nretry: 10\ndata: x\n\n");
/// let mut frames = Vec::new();
/// while let Some(frame) = decoder.decode().unwrap() {
///     frames.push(frame);
/// }
/// assert!(matches!(&frames[..], [
///     Frame::Comment(c),
///     Frame::Retry(r),
///     Frame::Event(e),
/// ] if c == "hi" && *r == Duration::from_millis(10) && e.data() == "x"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An event, dispatched at a blank line when its data is not empty.
    Event(MessageEvent),
    /// A `retry` field with a valid value (ASCII digits only, in milliseconds; values beyond
    /// `u64::MAX` milliseconds saturate): the new reconnection time. It takes effect at once, not
    /// at the end of its event, so it is its own frame, in stream order.
    Retry(Duration),
    /// A comment line (one starting with a colon), with the colon and one following space
    /// removed. Servers send them to keep idle connections open; browsers ignore them.
    Comment(String),
}

impl Frame {
    /// The event, if this is one.
    ///
    /// ```
    /// use tower_sse::client::Frame;
    ///
    /// assert!(Frame::Comment(String::new()).as_event().is_none());
    /// ```
    pub fn as_event(&self) -> Option<&MessageEvent> {
        match self {
            Frame::Event(event) => Some(event),
            _ => None,
        }
    }

    /// The event by value, if this is one.
    ///
    /// ```
    /// use tower_sse::client::{Frame, MessageEvent};
    ///
    /// let frame = Frame::Event(MessageEvent::new("message", "x", ""));
    /// assert_eq!(frame.into_event().unwrap().data(), "x");
    /// ```
    pub fn into_event(self) -> Option<MessageEvent> {
        match self {
            Frame::Event(event) => Some(event),
            _ => None,
        }
    }
}

/// A decoded event, as a browser's
/// [`MessageEvent`](https://developer.mozilla.org/en-US/docs/Web/API/MessageEvent) shows it.
///
/// ```
/// use tower_sse::client::{Decoder, Frame};
///
/// let mut decoder = Decoder::new();
/// decoder.feed(b"event: tick\nid: 9\ndata: a\ndata: b\n\n");
/// let Some(Frame::Event(event)) = decoder.decode().unwrap() else { panic!() };
/// assert_eq!(event.event(), "tick");
/// assert_eq!(event.data(), "a\nb");
/// assert_eq!(event.id(), "9");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageEvent {
    event: String,
    data: String,
    id: String,
}

impl MessageEvent {
    /// An event with the given type, data and last event ID, for comparisons in tests.
    ///
    /// ```
    /// let event = tower_sse::client::MessageEvent::new("message", "x", "1");
    /// assert_eq!(event.id(), "1");
    /// ```
    pub fn new(event: impl Into<String>, data: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    /// The [event type](https://developer.mozilla.org/en-US/docs/Web/API/Event/type): the last
    /// non-empty `event` field of the event, else `"message"`.
    ///
    /// ```
    /// let event = tower_sse::client::MessageEvent::new("message", "x", "");
    /// assert_eq!(event.event(), "message");
    /// ```
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The [data](https://developer.mozilla.org/en-US/docs/Web/API/MessageEvent/data): the
    /// `data` fields joined with LF. Line breaks sent as CRLF or CR arrive as LF.
    ///
    /// ```
    /// let event = tower_sse::client::MessageEvent::new("message", "a\nb", "");
    /// assert_eq!(event.data(), "a\nb");
    /// ```
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The data, by value.
    ///
    /// ```
    /// let event = tower_sse::client::MessageEvent::new("message", "x", "");
    /// let data: String = event.into_data();
    /// assert_eq!(data, "x");
    /// ```
    pub fn into_data(self) -> String {
        self.data
    }

    /// The [last event ID](https://developer.mozilla.org/en-US/docs/Web/API/MessageEvent/lastEventId)
    /// in force when the event was dispatched: the latest `id` field of this or an earlier
    /// event, possibly empty.
    ///
    /// ```
    /// let event = tower_sse::client::MessageEvent::new("message", "x", "41");
    /// assert_eq!(event.id(), "41");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A line or an event over the [`Decoder`]'s limits.
///
/// ```
/// use tower_sse::client::Decoder;
///
/// let mut decoder = Decoder::new().with_max_event_size(4);
/// decoder.feed(b"data: hello\n\n");
/// let err = decoder.decode().unwrap_err();
/// assert!(err.is_event_too_large());
/// assert_eq!(err.limit(), 4);
/// assert_eq!(err.to_string(), "event data larger than 4 bytes");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: ErrorKind,
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    LineTooLong,
    EventTooLarge,
}

impl DecodeError {
    /// Whether a line was longer than [`Decoder::max_line_length`].
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new().with_max_line_length(2);
    /// decoder.feed(b"abc");
    /// assert!(decoder.decode().unwrap_err().is_line_too_long());
    /// ```
    pub fn is_line_too_long(&self) -> bool {
        self.kind == ErrorKind::LineTooLong
    }

    /// Whether an event's data was larger than [`Decoder::max_event_size`].
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new().with_max_event_size(0);
    /// decoder.feed(b"data: x\n");
    /// assert!(decoder.decode().unwrap_err().is_event_too_large());
    /// ```
    pub fn is_event_too_large(&self) -> bool {
        self.kind == ErrorKind::EventTooLarge
    }

    /// The limit that was exceeded, in bytes.
    ///
    /// ```
    /// let mut decoder = tower_sse::client::Decoder::new().with_max_line_length(2);
    /// decoder.feed(b"abc");
    /// assert_eq!(decoder.decode().unwrap_err().limit(), 2);
    /// ```
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::LineTooLong => write!(f, "line longer than {} bytes", self.limit),
            ErrorKind::EventTooLarge => write!(f, "event data larger than {} bytes", self.limit),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut Decoder) -> Vec<Result<Frame, DecodeError>> {
        let mut out = Vec::new();
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => return out,
                Err(err) => out.push(Err(err)),
            }
        }
    }

    fn event(data: &str) -> Result<Frame, DecodeError> {
        Ok(Frame::Event(MessageEvent::new("message", data, "")))
    }

    #[test]
    fn scan_offset_is_kept_between_chunks() {
        let mut decoder = Decoder::new();
        decoder.feed(b"data: abc");
        assert!(drain(&mut decoder).is_empty());
        assert_eq!(decoder.scanned, 9);
        decoder.feed(b"def");
        assert!(drain(&mut decoder).is_empty());
        assert_eq!(decoder.scanned, 12);
        decoder.feed(b"\n\n");
        assert_eq!(drain(&mut decoder), vec![event("abcdef")]);
        assert_eq!(decoder.scanned, 0);
        assert!(decoder.buf.is_empty());
    }

    #[test]
    fn over_long_line_is_not_buffered() {
        let mut decoder = Decoder::new().with_max_line_length(16);
        decoder.feed(b"data: ok\n\ndata: ");
        assert_eq!(drain(&mut decoder), vec![event("ok")]);
        let mut errors = 0;
        for _ in 0..1000 {
            decoder.feed(&[b'x'; 100]);
            for item in drain(&mut decoder) {
                assert!(item.unwrap_err().is_line_too_long());
                errors += 1;
            }
            assert!(decoder.buf.len() <= 100);
        }
        assert_eq!(errors, 1);
        decoder.feed(b"\ndata: skipped\n\ndata: next\n\n");
        assert_eq!(drain(&mut decoder), vec![event("next")]);
        assert!(!decoder.skip_line && !decoder.skip_event);
    }

    #[test]
    fn error_discards_the_event_and_its_id() {
        let mut decoder = Decoder::new().with_max_event_size(3);
        decoder.feed(b"id: 1\n\nid: 2\nevent: e\ndata: abcd\nid: 3\ndata: x\n\ndata: y\n\n");
        let out = drain(&mut decoder);
        assert!(out[0].as_ref().unwrap_err().is_event_too_large());
        assert_eq!(
            out[1..],
            [Ok(Frame::Event(MessageEvent::new("message", "y", "1")))]
        );
        assert_eq!(decoder.last_event_id(), "1");
    }

    #[test]
    fn whole_long_line_and_lines_after_it() {
        let mut decoder = Decoder::new().with_max_line_length(6);
        decoder.feed(b"data:12345\r\ndata:9999\r\n\r\ndata:1\r\n\r\n");
        let out = drain(&mut decoder);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap_err().limit(), 6);
        assert_eq!(out[1], event("1"));
    }

    #[test]
    fn bom_only_at_start() {
        let mut decoder = Decoder::new();
        decoder.feed(b"\xEF\xBB");
        assert!(drain(&mut decoder).is_empty());
        assert!(decoder.at_start);
        decoder.feed(b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n");
        assert_eq!(drain(&mut decoder), vec![event("a"), event("c")]);
    }

    #[test]
    fn partial_bom_then_other_bytes() {
        let mut decoder = Decoder::new();
        decoder.feed(b"\xEF\xBB");
        assert!(drain(&mut decoder).is_empty());
        decoder.feed(b"data: a\n\n");
        // The two bytes belong to the field name, which is then not "data".
        assert!(drain(&mut decoder).is_empty());
        assert!(!decoder.at_start);
    }

    #[test]
    fn retry_saturates() {
        let mut decoder = Decoder::new();
        decoder.feed(b"retry: 99999999999999999999999999\n");
        assert_eq!(
            drain(&mut decoder),
            vec![Ok(Frame::Retry(Duration::from_millis(u64::MAX)))]
        );
    }

    #[test]
    fn eof_resets_for_a_new_stream() {
        let mut decoder = Decoder::new();
        decoder.feed(b"id: 5\n\nid: 6\nevent: e\ndata: lost\n");
        assert_eq!(decoder.decode_eof(), Ok(None));
        assert_eq!(decoder.last_event_id(), "5");
        assert!(decoder.at_start && decoder.buf.is_empty() && decoder.data.is_empty());
        decoder.feed(b"\xEF\xBB\xBFdata: x\n\n");
        assert_eq!(
            drain(&mut decoder),
            vec![Ok(Frame::Event(MessageEvent::new("message", "x", "5")))]
        );
    }

    #[test]
    fn cr_at_eof_then_lf_in_new_stream() {
        let mut decoder = Decoder::new();
        decoder.feed(b"data: a\n\r");
        assert_eq!(decoder.decode_eof(), Ok(Some(event("a").unwrap())));
        assert_eq!(decoder.decode_eof(), Ok(None));
        // The new stream's leading LF is a blank line of its own, not the end of the old CR.
        assert!(!decoder.skip_lf);
    }
}
