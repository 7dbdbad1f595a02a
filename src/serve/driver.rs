//! Lean connections driven many to a task.
//!
//! Why: an event stream's connection wakes up once per event to write one chunk, and a tokio
//! task's wake-up and poll (scheduling it, its state transitions, its poll harness) were about
//! 260 user-space instructions of the 1,522 a delivered event cost on the lean path
//! (`BENCHMARKS.md`, session 9). A driver is one task that owns many connection futures:
//! each has its own small waker, which puts the connection in the driver's ready list and
//! wakes the driver only if it is not already scheduled; the driver polls the connections in
//! that list. One publish to a topic wakes the driver once, not every connection's task.
//!
//! What it keeps of a task per connection:
//! - **Fairness**: tokio's co-operative budget is per task, and shared by a driver's
//!   connections it would cut each one's batches short under load (a first version lost a
//!   fifth of S3's throughput that way). So each connection is polled unconstrained by it,
//!   and the driver keeps its own: at most [`TURN`] connection polls, then it puts the rest
//!   back in its list, wakes itself and yields, so other tasks run; a connection, for its
//!   part, yields after `FRAMES_PER_TURN` (32) frames written (`lean.rs`).
//! - **Isolation**: a connection whose future panics (a handler that panics) is dropped alone,
//!   as its own task would be; the driver and its other connections go on.
//! - **Parallelism**: as many drivers as the runtime has worker threads; connections are
//!   dealt to them in turn, and tokio moves drivers between threads as it moves tasks.

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use tokio::{sync::mpsc, task::Unconstrained};

/// A connection's future.
pub(super) type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many connections a driver polls before it yields to other tasks.
const TURN: usize = 128;

/// The drivers of one `Serve`: started with the first connection, one per worker thread.
pub(super) struct Drivers {
    senders: Vec<mpsc::UnboundedSender<Connection>>,
    next: usize,
}

impl Drivers {
    pub(super) fn new() -> Self {
        Self {
            senders: Vec::new(),
            next: 0,
        }
    }

    /// Hands `connection` to a driver (in turn), starting the drivers on first use.
    pub(super) fn spawn(&mut self, connection: Connection) {
        if self.senders.is_empty() {
            let workers = tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .max(1);
            self.senders = (0..workers).map(|_| start()).collect();
        }
        let index = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        if let Err(mpsc::error::SendError(connection)) = self.senders[index].send(connection) {
            // The driver is gone (the runtime is shutting down): run it on its own.
            tokio::spawn(connection);
        }
    }
}

fn start() -> mpsc::UnboundedSender<Connection> {
    let (sender, incoming) = mpsc::unbounded_channel();
    tokio::spawn(Driver {
        incoming,
        connections: Vec::new(),
        free: Vec::new(),
        ready: Arc::new(Ready {
            list: Mutex::new(Vec::new()),
            driver: Mutex::new(None),
            scheduled: AtomicBool::new(false),
        }),
        driver_waker: None,
        batch: Vec::new(),
        closed: false,
    });
    sender
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the connections' wakers share with their driver.
struct Ready {
    /// The connections woken since the driver last took the list.
    list: Mutex<Vec<usize>>,
    /// The driver task's waker.
    driver: Mutex<Option<Waker>>,
    /// The driver was woken and has not taken the list since.
    scheduled: AtomicBool,
}

/// One connection's waker.
struct ConnectionWaker {
    index: usize,
    /// In the ready list (or being polled) already.
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for ConnectionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.ready.list).push(self.index);
        if !self.ready.scheduled.swap(true, Ordering::AcqRel) {
            if let Some(driver) = lock(&self.ready.driver).as_ref() {
                driver.wake_by_ref();
            }
        }
    }
}

struct Slot {
    future: Unconstrained<Connection>,
    state: Arc<ConnectionWaker>,
    waker: Waker,
}

struct Driver {
    incoming: mpsc::UnboundedReceiver<Connection>,
    connections: Vec<Option<Slot>>,
    free: Vec<usize>,
    ready: Arc<Ready>,
    /// The waker last given to `ready.driver` (a copy, to see when it changes).
    driver_waker: Option<Waker>,
    /// The list being worked through (kept for its allocation).
    batch: Vec<usize>,
    /// No more connections will come.
    closed: bool,
}

impl Driver {
    fn insert(&mut self, future: Connection) -> usize {
        let index = self.free.pop().unwrap_or(self.connections.len());
        let state = Arc::new(ConnectionWaker {
            index,
            // Polled right away, as if woken.
            queued: AtomicBool::new(true),
            ready: Arc::clone(&self.ready),
        });
        let slot = Slot {
            future: tokio::task::unconstrained(future),
            waker: Waker::from(Arc::clone(&state)),
            state,
        };
        if index == self.connections.len() {
            self.connections.push(Some(slot));
        } else {
            self.connections[index] = Some(slot);
        }
        index
    }

    /// Polls connection `index`; drops it when it ends or panics.
    fn poll_connection(&mut self, index: usize) {
        let Some(Some(slot)) = self.connections.get_mut(index) else {
            // A wake-up of a connection that ended (its waker outlived it).
            return;
        };
        // Before the poll: a wake-up from here on puts it back in the list.
        slot.state.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&slot.waker);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            Pin::new(&mut slot.future).poll(&mut cx)
        }));
        let done = match polled {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(_) => {
                tracing::error!("a connection's future panicked; the connection is dropped");
                true
            }
        };
        if done {
            self.connections[index] = None;
            self.free.push(index);
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this
            .driver_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            *lock(&this.ready.driver) = Some(cx.waker().clone());
            this.driver_waker = Some(cx.waker().clone());
        }
        let mut polled = 0;
        loop {
            while !this.closed {
                match this.incoming.poll_recv(cx) {
                    Poll::Ready(Some(connection)) => {
                        let index = this.insert(connection);
                        lock(&this.ready.list).push(index);
                    }
                    Poll::Ready(None) => this.closed = true,
                    Poll::Pending => break,
                }
            }
            // Before taking the list: a wake-up from here on wakes the driver again.
            this.ready.scheduled.store(false, Ordering::SeqCst);
            let mut batch = std::mem::take(&mut this.batch);
            std::mem::swap(&mut batch, &mut *lock(&this.ready.list));
            if batch.is_empty() {
                this.batch = batch;
                if this.closed && this.connections.iter().all(Option::is_none) {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
            let turn = batch.len().min(TURN - polled);
            for &index in &batch[..turn] {
                this.poll_connection(index);
            }
            polled += turn;
            if turn < batch.len() || polled == TURN {
                // The turn is over: the rest waits for the next one, after other tasks.
                lock(&this.ready.list).extend_from_slice(&batch[turn..]);
                batch.clear();
                this.batch = batch;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            batch.clear();
            this.batch = batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::Duration};

    use super::*;

    #[tokio::test]
    async fn connections_run_to_their_end_and_a_panic_ends_only_its_own() {
        let mut drivers = Drivers::new();
        let done = Arc::new(AtomicUsize::new(0));
        for n in 0..50 {
            let done = Arc::clone(&done);
            drivers.spawn(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(n % 7)).await;
                if n == 13 {
                    panic!("a handler panicked");
                }
                tokio::task::yield_now().await;
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while done.load(Ordering::SeqCst) < 49 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every connection but the panicking one ended");
    }
}
