//! Read events back from a response body in tests (feature `test-util`).
//!
//! [`EventReader`] decodes any `http_body::Body` with the spec-exact
//! [`Decoder`], so a test checks what a browser would see rather than
//! comparing raw bytes.
//!
//! # Example
//!
//! ```
//! use tower_sse::{Event, SseBody, test::EventReader};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let events = futures_util::stream::iter([
//!     Event::new().id("1").event("greeting").data("hello\nworld"),
//!     Event::new().data("second"),
//! ]);
//! let mut reader = EventReader::new(SseBody::new(events));
//!
//! let first = reader.next_event().await.unwrap().unwrap();
//! assert_eq!((first.id(), first.event(), first.data()), ("1", "greeting", "hello\nworld"));
//!
//! let rest = reader.collect().await.unwrap();
//! assert_eq!(rest.len(), 1);
//! assert_eq!((rest[0].id(), rest[0].event(), rest[0].data()), ("1", "message", "second"));
//! # }
//! ```

use std::{fmt, pin::Pin};

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;

use crate::{
    BoxError,
    client::{Decoder, Frame, MessageEvent},
};

/// Decodes the frames of a response body: events, `retry` fields and comments.
pub struct EventReader<B> {
    body: Pin<Box<B>>,
    decoder: Decoder,
    ended: bool,
}

impl<B> EventReader<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Reads `body` with a default [`Decoder`].
    ///
    /// ```
    /// let reader = tower_sse::test::EventReader::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// # let _ = reader;
    /// ```
    pub fn new(body: B) -> Self {
        Self {
            body: Box::pin(body),
            decoder: Decoder::new(),
            ended: false,
        }
    }

    /// The next frame (event, `retry`, or comment), or `None` at the end of the body.
    ///
    /// # Errors
    ///
    /// When the body fails or the decoder's limits are exceeded.
    ///
    /// ```
    /// use tower_sse::{client::Frame, test::EventReader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = http_body_util::Full::new(bytes::Bytes::from_static(b": hi\n\n"));
    /// let mut reader = EventReader::new(body);
    /// assert_eq!(reader.next_frame().await.unwrap().unwrap(), Frame::Comment("hi".into()));
    /// assert!(reader.next_frame().await.is_none());
    /// # }
    /// ```
    pub async fn next_frame(&mut self) -> Option<Result<Frame, BoxError>> {
        loop {
            let decoded = if self.ended {
                self.decoder.decode_eof()
            } else {
                self.decoder.decode()
            };
            match decoded {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Err(err) => return Some(Err(err.into())),
                Ok(None) if self.ended => return None,
                Ok(None) => {}
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.feed(data);
                    }
                }
                Some(Err(err)) => return Some(Err(err.into())),
                None => self.ended = true,
            }
        }
    }

    /// The next event, skipping `retry` fields and comments.
    ///
    /// # Errors
    ///
    /// As [`EventReader::next_frame`].
    ///
    /// ```
    /// use tower_sse::test::EventReader;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = http_body_util::Full::new(bytes::Bytes::from_static(b"retry: 5\n\ndata: x\n\n"));
    /// let event = EventReader::new(body).next_event().await.unwrap().unwrap();
    /// assert_eq!(event.data(), "x");
    /// # }
    /// ```
    pub async fn next_event(&mut self) -> Option<Result<MessageEvent, BoxError>> {
        loop {
            match self.next_frame().await? {
                Ok(Frame::Event(event)) => return Some(Ok(event)),
                Ok(_) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The next `n` events.
    ///
    /// # Errors
    ///
    /// As [`EventReader::next_frame`], or when the body ends before `n` events.
    ///
    /// ```
    /// use tower_sse::test::EventReader;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = http_body_util::Full::new(bytes::Bytes::from_static(b"data: a\n\ndata: b\n\n"));
    /// let mut reader = EventReader::new(body);
    /// assert_eq!(reader.take(2).await.unwrap().len(), 2);
    /// # }
    /// ```
    pub async fn take(&mut self, n: usize) -> Result<Vec<MessageEvent>, BoxError> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next_event().await {
                Some(event) => events.push(event?),
                None => {
                    return Err(format!("body ended after {} of {n} events", events.len()).into());
                }
            }
        }
        Ok(events)
    }

    /// Every remaining event, until the body ends.
    ///
    /// # Errors
    ///
    /// As [`EventReader::next_frame`].
    ///
    /// ```
    /// use tower_sse::test::EventReader;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = http_body_util::Full::new(bytes::Bytes::from_static(b"data: a\n\ndata: b"));
    /// // The unterminated last event is discarded, as a browser does.
    /// assert_eq!(EventReader::new(body).collect().await.unwrap().len(), 1);
    /// # }
    /// ```
    pub async fn collect(mut self) -> Result<Vec<MessageEvent>, BoxError> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event().await {
            events.push(event?);
        }
        Ok(events)
    }

    /// The id a reconnecting client would send as `Last-Event-ID` now.
    ///
    /// ```
    /// let reader = tower_sse::test::EventReader::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert_eq!(reader.last_event_id(), "");
    /// ```
    pub fn last_event_id(&self) -> &str {
        self.decoder.last_event_id()
    }
}

impl<B> fmt::Debug for EventReader<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader")
            .field("decoder", &self.decoder)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
