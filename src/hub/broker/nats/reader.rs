//! The reader (one ordered consumer per process) and the `send_to` listener.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures_core::Stream;

use super::Inner;
use crate::{
    backoff::Backoff,
    hub::broker::{Feed, entry},
};

/// How often the reader looks at the connection and at its hub while no message comes.
const CHECK: Duration = Duration::from_millis(250);

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

fn connected(inner: &Inner) -> bool {
    inner.client.connection_state() == async_nats::connection::State::Connected
}

/// Reads the stream from where it ended when the reader started, for as long as the hub is
/// in use; the ordered consumer is made again (from the next sequence) after an error or a
/// reconnect. Each time, the stream is checked against what was read: a NATS that came back
/// without messages it had acknowledged, or without the stream, would issue their sequences
/// again; the reader moves the stream past them and signals the gap.
pub(super) async fn run(inner: Arc<Inner>, feed: Feed) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    // The offset of the stream read, and the last sequence delivered.
    let mut at: Option<(u64, u64)> = None;
    loop {
        if !feed.is_alive() {
            return;
        }
        let (stream, offset) = match inner.stream().await {
            Ok(made) => made,
            Err(err) => {
                feed.connected(false);
                tracing::warn!(error = %err, "nats reader cannot reach its stream; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let mut info = stream.clone();
        let end = match tokio::time::timeout(inner.timeout, info.info()).await {
            // Made again by another process since it was looked up: look it up again.
            Ok(Ok(info)) if super::stream_offset(info) != offset => {
                tracing::debug!("nats stream made again elsewhere; looking it up again");
                inner.forget_stream(false);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(Ok(info)) => info.state.last_sequence,
            Ok(Err(err)) => {
                feed.connected(false);
                if stream_not_found(&err) {
                    inner.forget_stream(true);
                }
                tracing::warn!(error = %err, "nats reader cannot read the stream's end; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(_) => {
                feed.connected(false);
                tracing::warn!("nats reader cannot read the stream's end; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let start = match at {
            None => {
                feed.started(offset + end);
                end
            }
            Some((read, last)) if read != offset => {
                // Another stream (NATS lost it, and it was made again): everything of the old
                // one that was not read is gone; the new one's ids follow the old ones'.
                tracing::warn!(
                    stream = %inner.stream_name,
                    "nats stream made again; signalled as a gap"
                );
                feed.lost(offset + 1);
                let _ = (read, last);
                0
            }
            Some((_, last)) if end < last => {
                // Back without messages it had acknowledged: the next sequences would be
                // issued again, as other events. Move the stream past what was read (a purge
                // up to a sequence beyond its end makes that the next one), and tell the gap.
                tracing::warn!(
                    stream = %inner.stream_name,
                    end,
                    read = last,
                    "nats stream went back; moved past what was read, signalled as a gap"
                );
                let purge = stream.purge().sequence(last + 1);
                match tokio::time::timeout(inner.timeout, purge).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "nats reader cannot move the stream; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
                feed.lost(offset + last + 1);
                last
            }
            Some((_, last)) => last,
        };
        at = Some((offset, start));
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start + 1,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(err) => {
                    feed.connected(false);
                    tracing::warn!(error = %err, "nats reader cannot consume; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
            Err(err) => {
                feed.connected(false);
                tracing::warn!(error = %err, "nats reader cannot make its consumer; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // A consumer that outlived a reconnect (a server restart, however quick) may wait
        // forever: made again once the client has connected again.
        let connects = inner.client.statistics().connects.load(Ordering::Relaxed);
        feed.connected(true);
        backoff.reset();
        let (_, capacity) = feed.queued();
        let batch = (capacity / 2).max(1);
        let mut in_batch = 0;
        loop {
            let message = match tokio::time::timeout(CHECK, next(&mut messages)).await {
                Ok(message) => message,
                Err(_) => {
                    if !feed.is_alive() {
                        return;
                    }
                    let up = connected(&inner);
                    feed.connected(up);
                    in_batch = 0;
                    let now = inner.client.statistics().connects.load(Ordering::Relaxed);
                    if up && now != connects {
                        tracing::debug!("nats reader reconnected; making its consumer again");
                        break;
                    }
                    continue;
                }
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "nats reader lost its consumer; making it again");
                    feed.connected(connected(&inner));
                    tokio::time::sleep(backoff.next_delay()).await;
                    break;
                }
                None => break,
            };
            let Ok(info) = message.info() else {
                continue;
            };
            let seq = info.stream_sequence;
            let previous = at.map_or(0, |(_, last)| last);
            match step(previous, seq) {
                Step::Old => continue,
                Step::Gap => {
                    // Removed by the stream's limits before this process read it: never silent.
                    tracing::warn!(
                        expected = previous + 1,
                        got = seq,
                        "nats reader missed messages"
                    );
                    feed.lost(offset + seq);
                }
                Step::Next => {}
            }
            at = Some((offset, seq));
            let pos = offset + seq;
            match entry::decode(&message.payload) {
                Ok(decoded) => feed.deliver(pos, decoded),
                Err(_) => {
                    tracing::warn!(seq, "nats message is not a hub event; signalled as a gap");
                    feed.lost(pos.saturating_add(1));
                }
            }
            in_batch += 1;
            if in_batch >= batch {
                in_batch = 0;
                feed.drain().await;
            }
        }
    }
}

/// Listens for [`Hub::send_to`](crate::hub::Hub::send_to) from every process.
pub(super) async fn listen(inner: Arc<Inner>, feed: Feed) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    loop {
        if !feed.is_alive() {
            return;
        }
        let mut subscription = match inner.client.subscribe(inner.subject_send()).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::warn!(error = %err, "nats listener cannot subscribe; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            match tokio::time::timeout(CHECK * 20, next(&mut subscription)).await {
                Ok(Some(message)) => feed.direct(&message.payload),
                Ok(None) => break,
                Err(_) => {
                    if !feed.is_alive() {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether JetStream answered "stream not found".
fn stream_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|js| js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// What a message with stream sequence `seq` is, after `previous`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Already delivered (a consumer made again may repeat some).
    Old,
    /// The next one.
    Next,
    /// Messages between were removed before they were read.
    Gap,
}

fn step(previous: u64, seq: u64) -> Step {
    if seq <= previous {
        Step::Old
    } else if seq == previous + 1 {
        Step::Next
    } else {
        Step::Gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_must_follow_on() {
        assert_eq!(step(0, 1), Step::Next);
        assert_eq!(step(41, 42), Step::Next);
        assert_eq!(step(41, 41), Step::Old);
        assert_eq!(step(41, 7), Step::Old);
        assert_eq!(step(41, 43), Step::Gap);
        assert_eq!(step(u64::MAX - 1, u64::MAX), Step::Next);
    }
}
