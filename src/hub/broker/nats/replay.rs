//! Reads for replays: the stream's messages after a sequence, or the newest.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy},
    stream::LastRawMessageErrorKind,
};

use super::{Inner, unavailable};
use crate::hub::{
    SubscribeError,
    broker::{Read, entry},
};

/// Messages after `after` (whose message must still be in the stream: `found`), at most
/// `max`; or the newest `max` when `after` is `None`. A missing sequence in between (removed
/// while this read ran) or a message that is not the hub's makes the read `found: false`
/// (the replay says `history-lost`).
pub(super) async fn read(
    inner: &Inner,
    after: Option<u64>,
    max: usize,
) -> Result<Read, SubscribeError> {
    match tokio::time::timeout(inner.timeout, read_inner(inner, after, max)).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(err)) => {
            unavailable("replay", &err);
            Err(SubscribeError::Unavailable)
        }
        Err(_) => {
            unavailable("replay", &"timed out");
            Err(SubscribeError::Unavailable)
        }
    }
}

async fn read_inner(inner: &Inner, after: Option<u64>, max: usize) -> Result<Read, String> {
    let (stream, offset) = inner.stream().await?;
    // Positions are the offset plus the sequence; one at or below the offset is not ours.
    let after = match after {
        Some(pos) if pos <= offset => {
            return Ok(Read {
                found: false,
                entries: Vec::new(),
                more: false,
            });
        }
        other => other.map(|pos| pos - offset),
    };
    let mut info_handle = stream.clone();
    let state = info_handle
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .clone();
    let (first, last) = (state.first_sequence, state.last_sequence);
    let max = u64::try_from(max.max(1)).unwrap_or(u64::MAX);
    let (from, to, found) = match after {
        Some(after) => {
            let found = match stream.get_raw_message(after).await {
                Ok(_) => true,
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => false,
                Err(err) => return Err(err.to_string()),
            };
            if !found {
                return Ok(Read {
                    found: false,
                    entries: Vec::new(),
                    more: false,
                });
            }
            (after + 1, last.min(after.saturating_add(max)), true)
        }
        None => (last.saturating_sub(max - 1).max(first).max(1), last, true),
    };
    let mut read = Read {
        found,
        entries: Vec::new(),
        more: after.is_some() && to < last,
    };
    if last == 0 || from > to {
        return Ok(read);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let want = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
    let mut batch = consumer
        .batch()
        .max_messages(want)
        .expires(inner.timeout / 2)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    let mut expected = from;
    while let Some(message) = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut batch), cx)
    })
    .await
    {
        let message = message.map_err(|e| e.to_string())?;
        let Ok(info) = message.info() else { continue };
        let seq = info.stream_sequence;
        if seq != expected && !(after.is_none() && read.entries.is_empty()) {
            read.found = false;
        }
        expected = seq + 1;
        match entry::decode(&message.payload) {
            Ok(decoded) => read.entries.push((offset + seq, decoded)),
            Err(_) => read.found = false,
        }
        if seq >= to {
            break;
        }
    }
    if expected <= to {
        // Cut short (removed meanwhile, or the batch expired): what follows is unknown.
        read.found = false;
    }
    let _ = stream.delete_consumer(&consumer_name(&consumer)).await;
    Ok(read)
}

fn consumer_name<C>(consumer: &jetstream::consumer::Consumer<C>) -> String
where
    C: jetstream::consumer::IntoConsumerConfig,
{
    consumer.cached_info().name.clone()
}
