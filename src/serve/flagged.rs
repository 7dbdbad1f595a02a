//! A waker that remembers it was woken, so that a connection does not poll a source again
//! while that source has nothing to say.
//!
//! Why: the lean path watches the client's side of the socket while the body waits, and it
//! waits after every frame. Asking tokio for read readiness again takes the socket's waiter
//! lock each time (about 165 instructions per event, `BENCHMARKS.md`), although the
//! registration from the last wait is still in place. Polled with a [`Flagged`] waker instead,
//! the source wakes the flag, the flag wakes the task; until the flag is woken the source is
//! known to be where it was and is not polled.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

/// A source's flag: made at its first poll.
#[derive(Default)]
pub(super) struct Flagged {
    flag: Option<(Arc<Flag>, Waker)>,
    /// The task's waker the flag passes wake-ups to (a copy, to see when it changes without
    /// the lock).
    task: Option<Waker>,
    /// The source's last poll returned `Pending` with the flag's waker registered.
    armed: bool,
}

struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Before the task is woken: the poll that follows sees it.
        self.woken.store(true, Ordering::SeqCst);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Flagged {
    /// Whether the source has nothing new for this task: its last poll registered the flag
    /// for this same task and the flag has not been woken since.
    #[inline]
    pub(super) fn is_quiet(&self, cx: &Context<'_>) -> bool {
        self.armed
            && self
                .task
                .as_ref()
                .is_some_and(|task| task.will_wake(cx.waker()))
            && self
                .flag
                .as_ref()
                .is_some_and(|(flag, _)| !flag.woken.load(Ordering::SeqCst))
    }

    /// Forgets the registration: the source was polled another way since (its registration
    /// may now be someone else's waker), so the next poll goes through.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Polls the source with the flag's waker. `poll` returns what it has and whether it
    /// left the flag's waker registered (a `Pending` that the source will wake).
    pub(super) fn poll<T>(
        &mut self,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> (Poll<T>, bool),
    ) -> Poll<T> {
        let (flag, waker) = self.flag.get_or_insert_with(|| {
            let flag = Arc::new(Flag {
                woken: AtomicBool::new(false),
                task: Mutex::new(None),
            });
            let waker = Waker::from(Arc::clone(&flag));
            (flag, waker)
        });
        if !self
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            let task = cx.waker().clone();
            *flag.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            self.task = Some(task);
        }
        // Before the poll: a wake-up from here on is a new one. A swap, so that a wake-up
        // that came first is read, with what its thread did before it (see the driver's
        // `queued`).
        flag.woken.swap(false, Ordering::SeqCst);
        let (polled, registered) = poll(&mut Context::from_waker(waker));
        self.armed = registered;
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn quiet_until_the_source_wakes_it_and_the_wake_up_reaches_the_task() {
        let count = Arc::new(Count::default());
        let task = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&task);
        let mut flagged = Flagged::default();
        assert!(!flagged.is_quiet(&cx), "never polled");
        let mut source = None;
        let polled = flagged.poll(&cx, |cx| {
            source = Some(cx.waker().clone());
            (Poll::<()>::Pending, true)
        });
        assert!(polled.is_pending());
        assert!(flagged.is_quiet(&cx));
        let other = Waker::from(Arc::new(Count::default()));
        assert!(
            !flagged.is_quiet(&Context::from_waker(&other)),
            "another task"
        );
        source.take().unwrap().wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!flagged.is_quiet(&cx), "woken");
        let _ = flagged.poll(&cx, |_| (Poll::Ready(()), false));
        assert!(!flagged.is_quiet(&cx), "ready: nothing registered");
    }
}
