//! Pub/sub for [`Hub::send_to`](crate::hub::Hub::send_to), [`Hub::disconnect`](crate::hub::Hub::disconnect)
//! and presence: live only, every process.

use std::time::Duration;

use redis::{Client, Value};

use crate::{backoff::Backoff, hub::broker::Feed};

/// Listens on `channel` for as long as the hub is in use; reconnects with backoff.
pub(super) async fn run(client: Client, channel: String, feed: Feed) {
    /// How often an idle pub/sub connection is checked with a PING (a connection that vanished
    /// without a reset would otherwise wait forever), and whether the hub is still there.
    const CHECK: Duration = Duration::from_secs(15);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    loop {
        if !feed.is_alive() {
            return;
        }
        let pubsub = match tokio::time::timeout(CHECK, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "redis pub/sub cannot connect; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("redis pub/sub connect timed out; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let (mut sink, mut messages) = pubsub.split();
        if let Err(err) = sink.subscribe(&channel).await {
            tracing::warn!(error = %err, "redis pub/sub cannot subscribe; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        backoff.reset();
        let mut check = tokio::time::interval(CHECK);
        check.reset();
        loop {
            let next = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
            });
            let message = tokio::select! {
                message = next => message,
                _ = check.tick() => {
                    if !feed.is_alive() {
                        return;
                    }
                    match tokio::time::timeout(CHECK / 3, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => continue,
                        _ => None,
                    }
                }
            };
            let Some(message) = message else { break };
            if !feed.is_alive() {
                return;
            }
            feed.direct(message.get_payload_bytes());
        }
        if !feed.is_alive() {
            return;
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
