//! Server-sent events and their wire encoding.
//!
//! An [`Event`] is a builder that writes each field straight into one buffer, following the
//! [WHATWG event-stream format][spec] (see also [MDN: Using server-sent events][mdn]).
//! [`Event::encode`] seals it into an [`EncodedEvent`]: a [`Bytes`] buffer that every subscriber
//! shares. Cloning an `EncodedEvent` bumps a reference count; it never copies the bytes.
//!
//! # Rules
//!
//! - `data` and comments are split on CRLF, CR and LF (a CRLF is one line break). Each piece
//!   becomes its own `data:` (or `:`) line, so a trailing newline gives an extra empty `data:`
//!   line, exactly as the receiver needs to reproduce it. Empty data still writes `data:`, so the
//!   event is dispatched.
//! - `event` and `id` values cannot hold CR or LF, and `id` cannot hold NUL: the `try_*` methods
//!   return an [`EventError`]; the plain methods panic, for values the program itself wrote.
//! - `retry` is written in whole milliseconds, digits only.
//!
//! Because every line break in user text is turned into a new line *of the same field*, no
//! string passed to these methods can create a field or an event the caller did not ask for.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_sse::Event;
//!
//! let event = Event::new()
//!     .event("tick")
//!     .id("42")
//!     .retry(Duration::from_secs(3))
//!     .data("line one\r\nline two")
//!     .encode();
//!
//! assert_eq!(
//!     &event.as_bytes()[..],
//!     b"event: tick\nid: 42\nretry: 3000\ndata: line one\ndata: line two\n\n"
//! );
//! assert_eq!(event.id(), Some("42"));
//! ```
//!
//! [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//! [mdn]: https://developer.mozilla.org/en-US/docs/Web/API/Server-sent_events/Using_server-sent_events

use std::{fmt, ops::Range, time::Duration};

use bytes::{Bytes, BytesMut};

/// One server-sent event under construction.
///
/// Fields are written in the order the methods are called. Calling a method twice writes the
/// field twice: for `data` and comments that adds lines; for `event`, `id` and `retry` the
/// receiver keeps the last value.
///
/// # Example
///
/// ```
/// use tower_sse::Event;
///
/// let bytes = Event::new().data("hello").encode().into_bytes();
/// assert_eq!(&bytes[..], b"data: hello\n\n");
/// ```
#[derive(Clone, Default)]
pub struct Event {
    /// The fields written so far. A `Vec` (not `BytesMut`): its writes inline, and when it is
    /// full to capacity, `encode` turns it into `Bytes` without allocating.
    buf: Vec<u8>,
    id: Option<Range<usize>>,
}

impl Event {
    /// An empty event. Encoded as is, it is a lone blank line, which receivers ignore.
    ///
    /// ```
    /// assert_eq!(&tower_sse::Event::new().encode().as_bytes()[..], b"\n");
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty event with room for `capacity` bytes before it allocates again.
    ///
    /// ```
    /// let event = tower_sse::Event::with_capacity(256).data("x");
    /// assert_eq!(&event.encode().as_bytes()[..], b"data: x\n\n");
    /// ```
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            id: None,
        }
    }

    /// Adds [`data`](https://developer.mozilla.org/en-US/docs/Web/API/MessageEvent/data):
    /// one `data:` line for each line of `data`, split on CRLF, CR and LF.
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// let event = Event::new().data("a\r\nb\rc\n").encode();
    /// assert_eq!(&event.as_bytes()[..], b"data: a\ndata: b\ndata: c\ndata:\n\n");
    /// ```
    #[must_use]
    pub fn data(mut self, data: impl AsRef<str>) -> Self {
        write_field_lines::<true>(&mut self.buf, data.as_ref().as_bytes());
        self
    }

    /// Adds `value`, serialized as JSON, as one `data:` line. The JSON is written straight into
    /// the event's buffer; compact JSON never contains a raw line break.
    ///
    /// A value can still write one: a [`RawValue`](https://docs.rs/serde_json/latest/serde_json/value/struct.RawValue.html)
    /// is written as it is (pretty-printed JSON has line breaks between tokens), and any
    /// `Serialize` impl can ask serde_json for the same raw output. Such text is split into
    /// `data:` lines, as [`data`](Self::data) splits text, so it cannot end the event early or
    /// add a field: the receiver joins the lines with LF, and for valid JSON that is the same
    /// JSON (a line break can only be whitespace between tokens; inside a JSON string it must be
    /// escaped). Splitting rather than refusing keeps every valid `RawValue` sendable.
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized; the partly built event is dropped with it.
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// let event = Event::new().json_data(&serde_json::json!({"n": 1})).unwrap().encode();
    /// assert_eq!(&event.as_bytes()[..], b"data: {\"n\":1}\n\n");
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json_data<T: serde::Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        let start = self.buf.len();
        // Room for a small object, its line end and the blank line, so the common case
        // allocates once.
        self.buf.reserve(JSON_RESERVE);
        self.buf.extend_from_slice(b"data: ");
        if let Err(err) = serde_json::to_writer(&mut self.buf, value) {
            self.buf.truncate(start);
            return Err(err);
        }
        let json = start + line_prefix(true).len();
        if memchr::memchr2(b'\r', b'\n', &self.buf[json..]).is_some() {
            // Raw output with line breaks (a `RawValue`): one `data:` line each.
            split_json_lines(&mut self.buf, start, json);
            return Ok(self);
        }
        self.buf.push(b'\n');
        Ok(self)
    }

    /// Sets the [event type](https://developer.mozilla.org/en-US/docs/Web/API/EventSource/message_event):
    /// receivers dispatch it to `addEventListener(type, ..)` instead of `onmessage`.
    ///
    /// # Panics
    ///
    /// When `event` contains CR or LF. Use [`Event::try_event`] for text you did not write.
    ///
    /// ```
    /// let event = tower_sse::Event::new().event("tick").data("1").encode();
    /// assert_eq!(&event.as_bytes()[..], b"event: tick\ndata: 1\n\n");
    /// ```
    #[must_use]
    #[track_caller]
    pub fn event(self, event: impl AsRef<str>) -> Self {
        match self.try_event(event) {
            Ok(this) => this,
            Err(err) => panic!("{err}"),
        }
    }

    /// Sets the event type, refusing a value with CR or LF.
    ///
    /// # Errors
    ///
    /// [`EventError`] when `event` contains CR or LF; the event is dropped.
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// assert!(Event::new().try_event("a\nb").is_err());
    /// assert!(Event::new().try_event("ok").is_ok());
    /// ```
    pub fn try_event(mut self, event: impl AsRef<str>) -> Result<Self, EventError> {
        let event = event.as_ref().as_bytes();
        if memchr::memchr2(b'\r', b'\n', event).is_some() {
            return Err(EventError(ErrorKind::EventLineBreak));
        }
        write_field(&mut self.buf, b"event", event);
        Ok(self)
    }

    /// Sets the [event id](https://developer.mozilla.org/en-US/docs/Web/API/MessageEvent/lastEventId),
    /// which the browser sends back as `Last-Event-ID` when it reconnects. An empty id resets it.
    ///
    /// # Panics
    ///
    /// When `id` contains CR, LF or NUL. Use [`Event::try_id`] for text you did not write.
    ///
    /// ```
    /// let event = tower_sse::Event::new().id("7").data("x").encode();
    /// assert_eq!(&event.as_bytes()[..], b"id: 7\ndata: x\n\n");
    /// ```
    #[must_use]
    #[track_caller]
    pub fn id(self, id: impl AsRef<str>) -> Self {
        match self.try_id(id) {
            Ok(this) => this,
            Err(err) => panic!("{err}"),
        }
    }

    /// Sets the event id, refusing a value with CR, LF or NUL.
    ///
    /// # Errors
    ///
    /// [`EventError`] when `id` contains CR, LF or NUL; the event is dropped.
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// assert!(Event::new().try_id("a\0b").is_err());
    /// assert!(Event::new().try_id("a\rb").is_err());
    /// ```
    pub fn try_id(mut self, id: impl AsRef<str>) -> Result<Self, EventError> {
        let id = id.as_ref().as_bytes();
        if memchr::memchr3(b'\r', b'\n', b'\0', id).is_some() {
            return Err(EventError(ErrorKind::IdInvalid));
        }
        let start = write_field(&mut self.buf, b"id", id);
        self.id = Some(start..start + id.len());
        Ok(self)
    }

    /// Sets the [reconnection time](https://developer.mozilla.org/en-US/docs/Web/API/Server-sent_events/Using_server-sent_events#retry),
    /// written in whole milliseconds (sub-millisecond parts are dropped).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let event = tower_sse::Event::new().retry(Duration::from_millis(2500)).encode();
    /// assert_eq!(&event.as_bytes()[..], b"retry: 2500\n\n");
    /// ```
    #[must_use]
    pub fn retry(mut self, retry: Duration) -> Self {
        let mut digits = itoa_buf();
        let digits = fmt_u128(retry.as_millis(), &mut digits);
        write_field(&mut self.buf, b"retry", digits);
        self
    }

    /// Adds a comment: one `:` line for each line of `comment`. Receivers ignore comments; they
    /// keep idle connections open through proxies.
    ///
    /// ```
    /// let event = tower_sse::Event::new().comment("a\nb").encode();
    /// assert_eq!(&event.as_bytes()[..], b": a\n: b\n\n");
    /// ```
    #[must_use]
    pub fn comment(mut self, comment: impl AsRef<str>) -> Self {
        write_field_lines::<false>(&mut self.buf, comment.as_ref().as_bytes());
        self
    }

    /// The id set with [`Event::id`], if any (the last one when set twice).
    ///
    /// ```
    /// assert_eq!(tower_sse::Event::new().id("a").id("b").id_str(), Some("b"));
    /// ```
    pub fn id_str(&self) -> Option<&str> {
        self.id
            .clone()
            .and_then(|range| std::str::from_utf8(&self.buf[range]).ok())
    }

    /// Whether the event has no fields yet.
    ///
    /// ```
    /// assert!(tower_sse::Event::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Seals the event: adds the blank line that dispatches it and freezes the buffer.
    ///
    /// ```
    /// let encoded = tower_sse::Event::new().data("x").encode();
    /// let shared = encoded.clone(); // no copy of the bytes
    /// assert_eq!(encoded.as_bytes().as_ptr(), shared.as_bytes().as_ptr());
    /// ```
    pub fn encode(mut self) -> EncodedEvent {
        // Every field reserved room for this byte, so this does not reallocate; a `Vec` that is
        // full to capacity becomes `Bytes` without another allocation.
        self.buf.push(b'\n');
        EncodedEvent {
            bytes: Bytes::from(self.buf),
            id: IdSpan::new(self.id),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("buf", &String::from_utf8_lossy(&self.buf))
            .finish()
    }
}

/// An event in its final wire form, shared by reference count.
///
/// # Example
///
/// ```
/// use tower_sse::{EncodedEvent, Event};
///
/// let event: EncodedEvent = Event::new().id("1").data("x").encode();
/// assert_eq!(event.id(), Some("1"));
/// assert_eq!(event.len(), b"id: 1\ndata: x\n\n".len());
/// ```
#[derive(Clone)]
pub struct EncodedEvent {
    bytes: Bytes,
    id: IdSpan,
}

/// Where an encoded event's id is, in 8 bytes (an `Option<Range<usize>>` takes 24, and every
/// ring slot and history entry holds one). An id that starts or ends past 4 GiB into its event
/// is not recorded: such an event is sent as it is, but reads as having no id.
#[derive(Clone, Copy)]
struct IdSpan {
    start: u32,
    end: u32,
}

impl IdSpan {
    const NONE: Self = Self {
        start: u32::MAX,
        end: 0,
    };

    fn new(range: Option<Range<usize>>) -> Self {
        let Some(range) = range else {
            return Self::NONE;
        };
        match (u32::try_from(range.start), u32::try_from(range.end)) {
            (Ok(start), Ok(end)) if start <= end => Self { start, end },
            _ => Self::NONE,
        }
    }

    fn range(self) -> Option<Range<usize>> {
        (self.start <= self.end).then_some(self.start as usize..self.end as usize)
    }
}

impl EncodedEvent {
    /// The encoded bytes, ending with the blank line that dispatches the event.
    ///
    /// ```
    /// let event = tower_sse::Event::new().data("x").encode();
    /// assert!(event.as_bytes().ends_with(b"\n\n"));
    /// ```
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoded bytes, by value.
    ///
    /// ```
    /// let bytes = tower_sse::Event::new().data("x").encode().into_bytes();
    /// assert_eq!(&bytes[..], b"data: x\n\n");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The event's id, if it has one.
    ///
    /// ```
    /// assert_eq!(tower_sse::Event::new().data("x").encode().id(), None);
    /// ```
    pub fn id(&self) -> Option<&str> {
        self.id
            .range()
            .and_then(|range| std::str::from_utf8(self.bytes.get(range)?).ok())
    }

    /// The length in bytes.
    ///
    /// ```
    /// assert_eq!(tower_sse::Event::new().data("x").encode().len(), 9);
    /// ```
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether this is the empty event (a lone blank line).
    ///
    /// ```
    /// assert!(!tower_sse::Event::new().data("").encode().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= 1
    }

    /// An event from bytes already in wire form. `bytes` must be one complete event (checked by
    /// the caller) and `id` the range of its id's value.
    #[cfg(feature = "_broker")]
    pub(crate) fn from_parts(bytes: Bytes, id: Option<Range<usize>>) -> Self {
        Self {
            bytes,
            id: IdSpan::new(id),
        }
    }

    /// The bytes without the `id:` line, if there is one (a broker gives its own ids).
    #[cfg(feature = "_broker")]
    pub(crate) fn without_id(&self) -> Bytes {
        let Some(range) = self.id.range() else {
            return self.bytes.clone();
        };
        // The line is `id: VALUE\n`, or `id:\n` for an empty value.
        let start = if range.is_empty() {
            range.start - 3
        } else {
            range.start - 4
        };
        let mut out = bytes::BytesMut::with_capacity(self.bytes.len() - (range.end + 1 - start));
        out.extend_from_slice(&self.bytes[..start]);
        out.extend_from_slice(&self.bytes[range.end + 1..]);
        out.freeze()
    }
}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .finish()
    }
}

impl From<Event> for EncodedEvent {
    fn from(event: Event) -> Self {
        event.encode()
    }
}

impl From<EncodedEvent> for Bytes {
    fn from(event: EncodedEvent) -> Self {
        event.bytes
    }
}

/// A value refused by [`Event::try_event`] or [`Event::try_id`].
///
/// ```
/// let err = tower_sse::Event::new().try_id("a\nb").unwrap_err();
/// assert_eq!(err.to_string(), "event id contains CR, LF or NUL");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError(ErrorKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    EventLineBreak,
    IdInvalid,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            ErrorKind::EventLineBreak => "event type contains CR or LF",
            ErrorKind::IdInvalid => "event id contains CR, LF or NUL",
        })
    }
}

impl std::error::Error for EventError {}

/// Rewrites the JSON written at `buf[json..]` (after a `data: ` at `start`) as one `data:` line
/// per line, split on CRLF, CR and LF.
#[cfg(feature = "json")]
#[cold]
fn split_json_lines(buf: &mut Vec<u8>, start: usize, json: usize) {
    let text = buf.split_off(json);
    buf.truncate(start);
    write_field_lines::<true>(buf, &text);
}

/// What [`Event::json_data`] reserves up front: most JSON payloads fit without regrowing.
#[cfg(feature = "json")]
const JSON_RESERVE: usize = 128;

/// How many lines [`write_field_lines`] locates per scan before it writes them.
const LINES: usize = 32;

/// Writes `name: value\n` (or `name:\n` for an empty value); returns where the value starts.
fn write_field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) -> usize {
    // The exact line, plus the blank line `encode` adds, so sealing never reallocates and a
    // one-field event ends exactly at capacity.
    reserve(buf, field_len(name, value.len()) + 1);
    put_field(buf, name, value)
}

/// Makes room for `additional` more bytes. The first field allocates exactly what it needs
/// (cheaper than growing an empty `Vec`).
#[inline(always)]
fn reserve(buf: &mut Vec<u8>, additional: usize) {
    if buf.capacity() == 0 {
        *buf = Vec::with_capacity(additional);
    } else {
        buf.reserve(additional);
    }
}

/// The length of `name: value\n` (`name:\n` when the value is empty).
#[inline]
fn field_len(name: &[u8], value_len: usize) -> usize {
    name.len() + 2 + value_len + usize::from(value_len != 0)
}

/// Appends `name: value\n` (`name:\n` for an empty value) to `buf`, which has room for it.
#[inline]
fn put_field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) -> usize {
    buf.extend_from_slice(name);
    if value.is_empty() {
        buf.push(b':');
    } else {
        buf.extend_from_slice(b": ");
    }
    let start = buf.len();
    buf.extend_from_slice(value);
    buf.push(b'\n');
    start
}

/// Writes one `name:` line for each line of `text`, split on CRLF, CR and LF, into a
/// `BytesMut` (the layer's keep-alive text). `name` is `b"data"` or `b""` (a comment).
pub(crate) fn write_lines(buf: &mut BytesMut, name: &[u8], text: &[u8]) {
    debug_assert!(name.is_empty() || name == b"data", "not a multi-line field");
    let mut lines = Vec::new();
    if name == b"data" {
        write_field_lines::<true>(&mut lines, text);
    } else {
        write_field_lines::<false>(&mut lines, text);
    }
    buf.extend_from_slice(&lines);
}

/// `data: ` or, for comments, `: `. An empty line drops the space.
const fn line_prefix(data: bool) -> &'static [u8] {
    if data { b"data: " } else { b": " }
}

/// Writes one line of the field (`data` when `DATA`, else a comment) for each line of `text`,
/// split on CRLF, CR and LF.
///
/// One scan: the ends of up to [`LINES`] lines are found and kept on the stack, the room they
/// need (plus the blank line `encode` adds) is reserved exactly, then the lines are copied.
/// Text with more lines repeats this for each group.
#[inline]
fn write_field_lines<const DATA: bool>(buf: &mut Vec<u8>, text: &[u8]) {
    // The common case: no line break at all.
    let Some(first) = memchr::memchr2(b'\r', b'\n', text) else {
        reserve(buf, line_len::<DATA>(text.len()) + 1);
        put_line::<DATA>(buf, text);
        return;
    };
    write_many_lines::<DATA>(buf, text, first);
}

/// The length of one written line holding `len` bytes of text.
#[inline(always)]
const fn line_len<const DATA: bool>(len: usize) -> usize {
    line_prefix(DATA).len() + len + 1 - if len == 0 { 1 } else { 0 }
}

/// Appends one line (prefix, text, LF) to `buf`, which has room for it.
#[inline(always)]
fn put_line<const DATA: bool>(buf: &mut Vec<u8>, line: &[u8]) {
    let prefix = line_prefix(DATA);
    if line.is_empty() {
        buf.extend_from_slice(&prefix[..prefix.len() - 1]);
    } else {
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(line);
    }
    buf.push(b'\n');
}

/// Finds the next CR or LF, for text with many lines: set up once, then called per line.
///
/// On x86-64 this is `memchr`'s SSE2 searcher, which inlines here: for the short haystacks
/// between line breaks it costs about 20 % fewer instructions than `memchr2`, whose CPU-feature
/// dispatch runs on every call. Elsewhere it is `memchr2`.
#[derive(Clone, Copy)]
struct LineBreaks {
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::Two>,
}

impl LineBreaks {
    #[inline(always)]
    fn new() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::Two::new(b'\r', b'\n'),
        }
    }

    #[inline(always)]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse2) = &self.sse2 {
            return sse2.find(haystack);
        }
        memchr::memchr2(b'\r', b'\n', haystack)
    }
}

/// [`write_field_lines`] for text with a line break at `first`.
fn write_many_lines<const DATA: bool>(buf: &mut Vec<u8>, text: &[u8], first: usize) {
    let breaks = LineBreaks::new();
    // Where each line of this group ends (the break, or the end of `text`).
    let mut ends = [0usize; LINES];
    let mut start = 0;
    let mut found = Some(first);
    loop {
        let group = start;
        let mut count = 0;
        let mut len = 0;
        let mut last = false;
        let mut at_line = start;
        while count < LINES {
            let end = found.unwrap_or(text.len());
            ends[count] = end;
            len += line_len::<DATA>(end - at_line);
            count += 1;
            if found.is_none() {
                last = true;
                break;
            }
            at_line = next_line(text, end);
            found = breaks.find(&text[at_line..]).map(|i| at_line + i);
        }
        reserve(buf, len + usize::from(last));
        let mut from = group;
        for &end in &ends[..count] {
            put_line::<DATA>(buf, &text[from..end]);
            from = next_line(text, end);
        }
        if last {
            return;
        }
        start = from;
    }
}

/// Where the line after the break at `at` starts (a CRLF is one break).
#[inline(always)]
fn next_line(text: &[u8], at: usize) -> usize {
    if text.get(at) == Some(&b'\r') && text.get(at + 1) == Some(&b'\n') {
        at + 2
    } else {
        at + 1
    }
}

fn itoa_buf() -> [u8; 40] {
    [0; 40]
}

fn fmt_u128(mut n: u128, buf: &mut [u8; 40]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_spans_are_compact_and_refuse_what_does_not_fit() {
        assert_eq!(std::mem::size_of::<super::IdSpan>(), 8);
        assert_eq!(super::IdSpan::new(Some(4..9)).range(), Some(4..9));
        assert_eq!(super::IdSpan::new(Some(4..4)).range(), Some(4..4));
        assert_eq!(super::IdSpan::new(None).range(), None);
        let far = u32::MAX as usize + 1;
        assert_eq!(super::IdSpan::new(Some(far..far + 2)).range(), None);
    }

    use super::*;

    fn enc(event: Event) -> Vec<u8> {
        event.encode().into_bytes().to_vec()
    }

    #[test]
    fn data_line_breaks() {
        assert_eq!(enc(Event::new().data("a")), b"data: a\n\n");
        assert_eq!(enc(Event::new().data("a\nb")), b"data: a\ndata: b\n\n");
        assert_eq!(enc(Event::new().data("a\rb")), b"data: a\ndata: b\n\n");
        // CRLF is one break, not two (axum 0.8 writes an empty line in between).
        assert_eq!(enc(Event::new().data("a\r\nb")), b"data: a\ndata: b\n\n");
        assert_eq!(
            enc(Event::new().data("a\n\rb")),
            b"data: a\ndata:\ndata: b\n\n"
        );
        assert_eq!(
            enc(Event::new().data("a\r\n\r\nb")),
            b"data: a\ndata:\ndata: b\n\n"
        );
        assert_eq!(enc(Event::new().data("a\n")), b"data: a\ndata:\n\n");
        assert_eq!(enc(Event::new().data("\n")), b"data:\ndata:\n\n");
        assert_eq!(enc(Event::new().data("")), b"data:\n\n");
        assert_eq!(enc(Event::new().data(" lead")), b"data:  lead\n\n");
        assert_eq!(
            enc(Event::new().data("a").data("b")),
            b"data: a\ndata: b\n\n"
        );
    }

    #[test]
    fn event_id_retry_comment() {
        assert_eq!(enc(Event::new().event("x")), b"event: x\n\n");
        assert_eq!(enc(Event::new().id("")), b"id:\n\n");
        assert_eq!(enc(Event::new().retry(Duration::ZERO)), b"retry: 0\n\n");
        assert_eq!(
            enc(Event::new().retry(Duration::from_micros(1_999))),
            b"retry: 1\n\n"
        );
        assert_eq!(
            enc(Event::new().retry(Duration::MAX)),
            format!("retry: {}\n\n", Duration::MAX.as_millis()).as_bytes()
        );
        assert_eq!(enc(Event::new().comment("")), b":\n\n");
        assert_eq!(enc(Event::new().comment("a\r\nb")), b": a\n: b\n\n");
    }

    #[test]
    fn refused_values() {
        for bad in ["\n", "a\r", "\r\n", "x\ny"] {
            assert_eq!(
                Event::new().try_event(bad).unwrap_err(),
                EventError(ErrorKind::EventLineBreak)
            );
            assert!(Event::new().try_id(bad).is_err());
        }
        assert!(Event::new().try_id("a\0").is_err());
        // NUL is allowed in the event type: the spec only ignores ids with NUL.
        assert!(Event::new().try_event("a\0").is_ok());
    }

    #[test]
    #[should_panic(expected = "event id contains CR, LF or NUL")]
    fn id_panics_in_infallible_builder() {
        let _ = Event::new().id("a\nb");
    }

    #[test]
    fn id_is_tracked() {
        let event = Event::new().data("x").id("abc").event("e");
        assert_eq!(event.id_str(), Some("abc"));
        let encoded = event.encode();
        assert_eq!(encoded.id(), Some("abc"));
        assert_eq!(Event::new().data("x").encode().id(), None);
    }

    #[test]
    fn clone_shares_bytes() {
        let a = Event::new().data("x".repeat(1000)).encode();
        let b = a.clone();
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    /// Splits an encoded stream into (field, value) lines and events the way a receiver does,
    /// for the injection test. Deliberately simple: LF-only line ends (what we emit).
    fn parse(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        let text = std::str::from_utf8(bytes).unwrap();
        let mut events = vec![];
        let mut cur = vec![];
        assert!(!text.contains('\r'), "encoder must never emit CR");
        for line in text.split_terminator('\n') {
            if line.is_empty() {
                events.push(std::mem::take(&mut cur));
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            cur.push((
                name.to_owned(),
                value.strip_prefix(' ').unwrap_or(value).to_owned(),
            ));
        }
        assert!(cur.is_empty(), "stream must end with a blank line");
        events
    }

    #[test]
    fn no_injection() {
        let nasty = [
            "\n\nevent: evil",
            "\r\rid: 666",
            "\r\n\r\ndata: x",
            "x\ndata: y\n\nretry: 1",
            ": comment\nevent: e",
            "\u{2028}\u{85}\u{0}",
            "",
            "\n",
        ];
        for a in nasty {
            for b in nasty {
                let mut event = Event::new().data(a).comment(b);
                if let Ok(e) = event.clone().try_event(b) {
                    event = e;
                }
                if let Ok(e) = event.clone().try_id(a) {
                    event = e;
                }
                let bytes = event.encode().into_bytes();
                let parsed = parse(&bytes);
                assert_eq!(parsed.len(), 1, "{a:?} {b:?} made {} events", parsed.len());
                for (name, _) in &parsed[0] {
                    assert!(
                        ["data", "", "event", "id"].contains(&name.as_str()),
                        "{a:?} {b:?} made field {name:?}"
                    );
                }
                // The data lines joined with LF give back `a` with its breaks normalised.
                let data: Vec<&str> = parsed[0]
                    .iter()
                    .filter(|(n, _)| n == "data")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let want = a.replace("\r\n", "\n").replace('\r', "\n");
                assert_eq!(data.join("\n"), want);
            }
        }
    }

    /// The rules, written the plain way: split on CRLF, CR, LF; one `name:` line each.
    fn reference(name: &str, text: &str) -> String {
        let mut out = String::new();
        for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
            out.push_str(name);
            out.push(':');
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn many_lines_match_the_plain_rules_and_fill_the_buffer_exactly() {
        let pieces = ["", "a", "bc", "\u{e9}t\u{e9}", &"x".repeat(70)];
        let breaks = ["\n", "\r", "\r\n", "\n\r", "\r\r\n"];
        for lines in [1, 2, LINES - 1, LINES, LINES + 1, 2 * LINES + 3, 200] {
            for shift in 0..breaks.len() {
                let mut text = String::new();
                for i in 0..lines {
                    if i > 0 {
                        text.push_str(breaks[(i + shift) % breaks.len()]);
                    }
                    text.push_str(pieces[(i * 7 + shift) % pieces.len()]);
                }
                for (name, event) in [
                    ("data", Event::new().data(&text)),
                    ("", Event::new().comment(&text)),
                ] {
                    let want = reference(name, &text);
                    // Room for the blank line `encode` adds, and not a byte more: the frozen
                    // bytes then need no second allocation.
                    if want.matches('\n').count() <= LINES {
                        assert_eq!(event.buf.capacity(), event.buf.len() + 1, "{text:?}");
                    }
                    assert_eq!(String::from_utf8(enc(event)).unwrap(), want + "\n");
                }
            }
        }
        // After another field, the lines still come out right.
        assert_eq!(
            enc(Event::new().event("e").data("a\nb").comment("c\r\nd")),
            b"event: e\ndata: a\ndata: b\n: c\n: d\n\n"
        );
        // The layer's keep-alive text goes through the same code.
        let mut buf = BytesMut::new();
        write_lines(&mut buf, b"", b"ping\r\npong");
        assert_eq!(&buf[..], b": ping\n: pong\n");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_data_is_one_line_and_rolls_back() {
        let value = serde_json::json!({"text": "a\nb\r\nc", "n": [1, 2]});
        let event = Event::new().json_data(&value).unwrap().encode();
        assert_eq!(
            &event.as_bytes()[..],
            b"data: {\"n\":[1,2],\"text\":\"a\\nb\\r\\nc\"}\n\n"
        );

        struct Fails;
        impl serde::Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        assert!(Event::new().event("e").json_data(&Fails).is_err());
    }

    /// Writes `0` as serde_json's raw output, as a `RawValue` does: no validation, no escaping.
    #[cfg(feature = "json")]
    struct Raw(&'static str);

    #[cfg(feature = "json")]
    impl serde::Serialize for Raw {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct as _;
            // What serde_json's `RawValue` serializes as (`serde_json::raw::TOKEN`).
            const TOKEN: &str = "$serde_json::private::RawValue";
            let mut raw = serializer.serialize_struct(TOKEN, 1)?;
            raw.serialize_field(TOKEN, self.0)?;
            raw.end()
        }
    }

    /// Raw JSON output with line breaks is split into `data:` lines: no blank line ends the
    /// event early, no line becomes a field (it wrote `data: \n\nevent: evil\ndata: x\n`: an
    /// empty event, then an `evil` one with data `x`).
    #[cfg(feature = "json")]
    #[test]
    fn raw_json_with_line_breaks_cannot_add_fields_or_events() {
        let evil = Raw("\n\nevent: evil\ndata: x");
        let event = Event::new().id("1").json_data(&evil).unwrap().encode();
        assert_eq!(
            &event.as_bytes()[..],
            b"id: 1\ndata:\ndata:\ndata: event: evil\ndata: data: x\n\n"
        );
        // A real `RawValue`: valid, pretty-printed JSON with blank lines and CRLF between tokens.
        let raw =
            serde_json::value::RawValue::from_string("{\"a\":\r\n\r\n[1,\r2]\n}".into()).unwrap();
        let event = Event::new().json_data(&raw).unwrap().event("e").encode();
        assert_eq!(
            &event.as_bytes()[..],
            b"data: {\"a\":\ndata:\ndata: [1,\ndata: 2]\ndata: }\nevent: e\n\n"
        );
        // Read back: one event, the same JSON.
        #[cfg(feature = "client-plain")]
        {
            use crate::client::{Decoder, Frame};
            let mut decoder = Decoder::new();
            decoder.feed(event.as_bytes());
            let Ok(Some(Frame::Event(got))) = decoder.decode() else {
                panic!("one event");
            };
            assert_eq!(decoder.decode().unwrap(), None);
            assert_eq!(got.event(), "e");
            let data: serde_json::Value = serde_json::from_str(got.data()).unwrap();
            assert_eq!(data, serde_json::json!({"a": [1, 2]}));
        }
    }
}
