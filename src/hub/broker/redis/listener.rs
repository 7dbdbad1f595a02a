//! Pub/sub for [`Hub::send_to`](crate::hub::Hub::send_to): live only, every process.

use std::time::Duration;

use bytes::Bytes;
use redis::{Client, Value};

use crate::{EncodedEvent, backoff::Backoff, hub::broker::Feed};

/// The message for `client_id`: `<len>:<client id><event>`.
pub(super) fn direct(client_id: &str, event: &EncodedEvent) -> Vec<u8> {
    let head = format!("{}:{client_id}", client_id.len());
    let mut message = Vec::with_capacity(head.len() + event.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(event.as_bytes());
    message
}

/// `<len>:<client id><event>` → (client id, event bytes).
fn split_direct(payload: &[u8]) -> Option<(&str, &[u8])> {
    let colon = memchr::memchr(b':', payload)?;
    let len: usize = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    let client_id = std::str::from_utf8(payload.get(start..end)?).ok()?;
    Some((client_id, &payload[end..]))
}

/// One complete event, no id (events sent to a client keep the client's id), or `None`.
fn raw_event(bytes: &[u8]) -> Option<EncodedEvent> {
    let body = bytes.strip_suffix(b"\n")?;
    if !body.ends_with(b"\n")
        || memchr::memmem::find(body, b"\n\n").is_some()
        || memchr::memchr(b'\r', bytes).is_some()
        || memchr::memmem::find(bytes, b"\nid:").is_some()
        || bytes.starts_with(b"id:")
    {
        return None;
    }
    Some(EncodedEvent::from_parts(
        Bytes::copy_from_slice(bytes),
        None,
    ))
}

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
            let Some((client_id, event)) = split_direct(message.get_payload_bytes()) else {
                continue;
            };
            match raw_event(event) {
                Some(event) => feed.send_to(client_id, event),
                None => {
                    tracing::warn!("redis pub/sub message is not one event without an id; dropped")
                }
            }
        }
        if !feed.is_alive() {
            return;
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn direct_messages_round_trip_and_split_without_panicking() {
        let event = Event::new().data("x").encode();
        let message = direct("bob", &event);
        assert_eq!(split_direct(&message), Some(("bob", &b"data: x\n\n"[..])));
        assert_eq!(
            split_direct(b"0:data: x\n\n"),
            Some(("", &b"data: x\n\n"[..]))
        );
        for bad in [
            &b""[..],
            b"3",
            b"x:bob",
            b"4:bob",
            b"18446744073709551615:a",
            b"99999999999999999999999:a",
        ] {
            assert_eq!(split_direct(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_one_id_less_event_is_accepted() {
        assert!(raw_event(b"data: x\n\n").is_some());
        for bad in [
            &b"data: x\n"[..],
            b"data: x\n\ndata: y\n\n",
            b"data: x\r\n\n",
            b"id: 5\ndata: x\n\n",
            b"data: x\nid: 5\n\n",
        ] {
            assert!(raw_event(bad).is_none(), "{bad:?}");
        }
    }
}
