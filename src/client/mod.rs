//! Client side: an incremental, spec-exact event-stream [`Decoder`].
//!
//! The decoder turns the bytes of a `text/event-stream` body into [`Frame`]s: events
//! ([`MessageEvent`]), reconnection times and comments. It implements the
//! [WHATWG event stream interpretation][spec] to the letter:
//!
//! - one leading UTF-8 byte order mark is stripped, only at the start of the stream;
//! - lines end with CRLF, LF or a lone CR, and a CRLF split across two chunks is one line end;
//! - a line is split at its first colon, and one space after the colon is removed; a line
//!   starting with a colon is a comment; a line without a colon is a field with an empty value;
//! - `data` lines are joined with LF; `event` sets the type (else `"message"`); `id` sets the
//!   last event ID unless it contains NUL, and it stays in force for later events; `retry`
//!   counts only when it is all ASCII digits; other fields are ignored;
//! - a blank line dispatches the event, unless its data is empty; at the end of the stream an
//!   event without its blank line is discarded;
//! - invalid UTF-8 becomes U+FFFD REPLACEMENT CHARACTER.
//!
//! Decoding takes time linear in the input however it is chunked, and memory is bounded by a
//! maximum line length and a maximum event size (see [Limits and
//! security](Decoder#limits-and-security)).
//!
//! # Example
//!
//! ```
//! use tower_sse::client::{Decoder, Frame, MessageEvent};
//! use tower_sse::Event;
//!
//! // What a server wrote, arriving in awkward pieces.
//! let mut wire = Vec::new();
//! wire.extend_from_slice(Event::new().id("1").data("line one\nline two").encode().as_bytes());
//! wire.extend_from_slice(Event::new().event("tick").data("2").encode().as_bytes());
//! wire.extend_from_slice(b": keep-alive\r\n");
//!
//! let mut decoder = Decoder::new();
//! let mut frames = Vec::new();
//! for chunk in wire.chunks(5) {
//!     decoder.feed(chunk);
//!     while let Some(frame) = decoder.decode()? {
//!         frames.push(frame);
//!     }
//! }
//!
//! assert_eq!(
//!     frames,
//!     [
//!         Frame::Event(MessageEvent::new("message", "line one\nline two", "1")),
//!         Frame::Event(MessageEvent::new("tick", "2", "1")),
//!         Frame::Comment("keep-alive".into()),
//!     ]
//! );
//! # Ok::<(), tower_sse::client::DecodeError>(())
//! ```
//!
//! [spec]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

mod decoder;

pub use decoder::{DecodeError, Decoder, Frame, MessageEvent};
