//! Graceful shutdown for open event streams.
//!
//! An SSE response never ends by itself, so a server that waits for its connections to finish
//! (`axum::serve(..).with_graceful_shutdown(..)`, hyper-util's `GracefulShutdown`) waits forever
//! while a browser is connected. Give the same [`Shutdown`] handle to
//! [`SseLayer::shutdown`](crate::SseLayer::shutdown) and to the server: when it is triggered every
//! open stream sends the optional final event and ends, and the server can stop.
//!
//! # Example
//!
//! ```
//! use tower_sse::Shutdown;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shutdown = Shutdown::new();
//! let signal = shutdown.triggered(); // e.g. for `with_graceful_shutdown(signal)`
//! assert!(!shutdown.is_triggered());
//! shutdown.trigger();
//! signal.await;
//! assert!(shutdown.is_triggered());
//! # }
//! ```

use std::future::Future;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A handle that tells every stream served through a layer that the server is stopping.
///
/// Cheap to clone; all clones share one state. Triggering is permanent.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that has not been triggered.
    ///
    /// ```
    /// assert!(!tower_sse::Shutdown::new().is_triggered());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: every open stream, and every stream opened from now on, ends.
    ///
    /// ```
    /// let shutdown = tower_sse::Shutdown::new();
    /// shutdown.clone().trigger();
    /// assert!(shutdown.is_triggered());
    /// ```
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether [`Shutdown::trigger`] was called.
    ///
    /// ```
    /// assert!(!tower_sse::Shutdown::default().is_triggered());
    /// ```
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A future that completes once the shutdown is triggered. It owns its handle, so it can be
    /// handed to a server's graceful-shutdown method.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let shutdown = tower_sse::Shutdown::new();
    /// shutdown.trigger();
    /// shutdown.triggered().await;
    /// # }
    /// ```
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Triggers the shutdown when the process gets SIGINT (Ctrl-C) or, on Unix, SIGTERM
    /// (feature `server`): what a server's `main` wires up so that a stop ends every open
    /// stream and the server's graceful shutdown can return. Spawns a task on the current
    /// tokio runtime (so call it inside one). If a signal handler cannot be installed, the
    /// error is logged and only the other signal triggers.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// let shutdown = tower_sse::Shutdown::new();
    /// shutdown.trigger_on_signal();
    /// shutdown.triggered().await; // after Ctrl-C or SIGTERM
    /// # }
    /// ```
    #[cfg(feature = "server")]
    #[cfg_attr(docsrs, doc(cfg(feature = "server")))]
    pub fn trigger_on_signal(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            stop_signal().await;
            shutdown.trigger();
        });
    }

    pub(crate) fn wait(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}

/// SIGINT, or SIGTERM on Unix; a handler that cannot be installed is logged and left out.
#[cfg(feature = "server")]
async fn stop_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
