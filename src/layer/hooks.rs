//! Hooks for the life of each event stream, in the tower-http style: small traits implemented
//! for `()` and for closures.

use std::{fmt, sync::Arc, time::Duration};

use http::Uri;
use tokio::time::Instant;

use crate::{BoxError, stall::Watch};

/// Why an event stream ended, as [`OnClose`] and the stream's `tracing` span see it.
///
/// ```
/// use tower_sse::layer::CloseReason;
///
/// assert_eq!(CloseReason::ClientGone.as_str(), "client_gone");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The connection went away before the stream ended: the client left, or it stopped
    /// reading and the write-stall timeout ([`io::WriteTimeout`](crate::io::WriteTimeout))
    /// dropped it.
    ClientGone,
    /// [`Shutdown`](crate::Shutdown) ended it.
    Shutdown,
    /// The event stream ended.
    StreamEnded,
    /// The event stream failed (see [`OnError`]).
    Error,
    /// The client granted no HTTP/2 flow-control credit for the stall timeout, so the stream
    /// was reset ([`SseLayer::stall_timeout`](super::SseLayer::stall_timeout)).
    Stalled,
}

impl CloseReason {
    /// `"client_gone"`, `"shutdown"`, `"stream_ended"`, `"error"` or `"stalled"`: for logs
    /// and metrics.
    ///
    /// ```
    /// assert_eq!(tower_sse::layer::CloseReason::Shutdown.as_str(), "shutdown");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Shutdown => "shutdown",
            Self::StreamEnded => "stream_ended",
            Self::Error => "error",
            Self::Stalled => "stalled",
        }
    }
}

/// One event stream, as the hooks see it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    uri: Uri,
    opened: Instant,
}

impl StreamInfo {
    /// The request's URI.
    ///
    /// ```
    /// # fn f(info: &tower_sse::layer::StreamInfo) {
    /// let path = info.uri().path();
    /// # let _ = path; }
    /// ```
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// How long the stream has been open.
    ///
    /// ```
    /// # fn f(info: &tower_sse::layer::StreamInfo) {
    /// let open_for = info.elapsed();
    /// # let _ = open_for; }
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.opened.elapsed()
    }
}

/// Called when an event stream's response is made. See [`SseLayer::on_open`](super::SseLayer::on_open).
pub trait OnOpen: Send + Sync + 'static {
    /// The stream is open.
    fn on_open(&self, info: &StreamInfo);
}

/// Called once when an event stream ends, whatever the reason. See
/// [`SseLayer::on_close`](super::SseLayer::on_close).
pub trait OnClose: Send + Sync + 'static {
    /// The stream has ended.
    fn on_close(&self, info: &StreamInfo, reason: CloseReason);
}

/// Called when an event stream fails (it then ends with [`CloseReason::Error`]). See
/// [`SseLayer::on_error`](super::SseLayer::on_error).
pub trait OnError: Send + Sync + 'static {
    /// The stream yielded `error`.
    fn on_error(&self, info: &StreamInfo, error: &BoxError);
}

impl OnOpen for () {
    fn on_open(&self, _: &StreamInfo) {}
}

impl OnClose for () {
    fn on_close(&self, _: &StreamInfo, _: CloseReason) {}
}

impl OnError for () {
    fn on_error(&self, _: &StreamInfo, _: &BoxError) {}
}

impl<F: Fn(&StreamInfo) + Send + Sync + 'static> OnOpen for F {
    fn on_open(&self, info: &StreamInfo) {
        self(info)
    }
}

impl<F: Fn(&StreamInfo, CloseReason) + Send + Sync + 'static> OnClose for F {
    fn on_close(&self, info: &StreamInfo, reason: CloseReason) {
        self(info, reason)
    }
}

impl<F: Fn(&StreamInfo, &BoxError) + Send + Sync + 'static> OnError for F {
    fn on_error(&self, info: &StreamInfo, error: &BoxError) {
        self(info, error)
    }
}

/// The hooks a layer was given.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_open: Option<Arc<dyn OnOpen>>,
    pub(crate) on_close: Option<Arc<dyn OnClose>>,
    pub(crate) on_error: Option<Arc<dyn OnError>>,
}

impl Hooks {
    pub(crate) fn is_empty(&self) -> bool {
        self.on_open.is_none() && self.on_close.is_none() && self.on_error.is_none()
    }
}

/// One stream's life: its hooks and its `tracing` span, made only when there are hooks or the
/// span is enabled (so a plain stream pays nothing), and closed when the body is dropped.
pub(crate) struct Lifecycle {
    info: StreamInfo,
    hooks: Hooks,
    span: tracing::Span,
    reason: Option<CloseReason>,
    // The stall watch of the task serving the stream, if any: a stream dropped for a stall
    // closes as `Stalled`, not `ClientGone`.
    stall: Option<Arc<Watch>>,
}

impl Lifecycle {
    /// The stream is open: `None` when nothing listens.
    pub(crate) fn open(hooks: &Hooks, uri: &Uri) -> Option<Box<Self>> {
        let span = tracing::debug_span!("sse_stream", path = %uri.path());
        if hooks.is_empty() && span.is_disabled() {
            return None;
        }
        let info = StreamInfo {
            uri: uri.clone(),
            opened: Instant::now(),
        };
        if let Some(on_open) = &hooks.on_open {
            on_open.on_open(&info);
        }
        span.in_scope(|| tracing::debug!("sse stream open"));
        Some(Box::new(Self {
            info,
            hooks: hooks.clone(),
            span,
            reason: None,
            stall: None,
        }))
    }

    /// The stream ends for `reason` (the first reason given counts).
    pub(crate) fn end(&mut self, reason: CloseReason) {
        self.reason.get_or_insert(reason);
    }

    /// The task serving the stream is watched for stalls by `watch`.
    pub(crate) fn watch(&mut self, watch: Arc<Watch>) {
        self.stall = Some(watch);
    }

    pub(crate) fn error(&mut self, error: &BoxError) {
        if let Some(on_error) = &self.hooks.on_error {
            on_error.on_error(&self.info, error);
        }
        self.end(CloseReason::Error);
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        let stalled = self.stall.as_ref().is_some_and(|watch| watch.fired());
        let reason = self.reason.unwrap_or(if stalled {
            CloseReason::Stalled
        } else {
            CloseReason::ClientGone
        });
        self.span.in_scope(|| {
            tracing::debug!(
                reason = reason.as_str(),
                duration_ms = self.info.elapsed().as_millis() as u64,
                "sse stream closed"
            );
        });
        if let Some(on_close) = &self.hooks.on_close {
            on_close.on_close(&self.info, reason);
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_open", &self.on_open.is_some())
            .field("on_close", &self.on_close.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}
