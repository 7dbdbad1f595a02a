//! The reader (one ordered consumer per process) and the `send_to` listener.

use std::{sync::Arc, time::Duration};

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
/// in use; the ordered consumer is made again (from the next sequence) after an error.
pub(super) async fn run(inner: Arc<Inner>, feed: Feed) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    // The last stream sequence delivered.
    let mut last: Option<u64> = None;
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
        let start = match last {
            Some(last) => last,
            None => {
                let mut info = stream.clone();
                match tokio::time::timeout(inner.timeout, info.info()).await {
                    Ok(Ok(info)) => {
                        let end = info.state.last_sequence;
                        last = Some(end);
                        feed.started(offset + end);
                        end
                    }
                    _ => {
                        tracing::warn!("nats reader cannot read the stream's end; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
        };
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
        feed.connected(true);
        backoff.reset();
        let (_, capacity) = feed.queued();
        let batch = (capacity / 2).max(1);
        let mut in_batch = 0;
        // Whether the connection went down since the consumer was made: once it is back, the
        // consumer is made again from the next sequence (a consumer that outlived a server
        // restart may wait forever).
        let mut dropped = false;
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
                    if !up {
                        dropped = true;
                    } else if dropped {
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
            let previous = last.unwrap_or(0);
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
            last = Some(seq);
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
