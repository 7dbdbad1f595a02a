//! Reads for replays: `XRANGE` after a position, or the newest entries.

use redis::Value;

use super::{RedisBackend, codec, unavailable};
use crate::hub::{
    SubscribeError,
    broker::{Read, entry},
};

/// Entries after `after` (which must still be in the stream: `found`), at most `max`; or the
/// newest `max` when `after` is `None`. An entry of the hub that cannot be decoded makes the
/// read `found: false` (the replay then says `history-lost`: never a silent gap); entries that
/// are not the hub's are skipped.
pub(super) async fn read(
    redis: &RedisBackend,
    after: Option<u64>,
    max: usize,
) -> Result<Read, SubscribeError> {
    let key = redis.key("log");
    let cmd = match after {
        Some(after) => {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&key)
                .arg(format!("0-{after}"))
                .arg("+")
                .arg("COUNT")
                .arg(max.saturating_add(1));
            cmd
        }
        None => {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&key).arg("+").arg("-").arg("COUNT").arg(max);
            cmd
        }
    };
    let reply: Value = redis.query(&cmd).await.map_err(|err| {
        unavailable("replay", &err);
        SubscribeError::Unavailable
    })?;
    let mut raw = codec::entries(&reply);
    let mut found = true;
    if let Some(after) = after {
        found = raw.first().is_some_and(|first| first.n == Some(after));
        if found {
            raw.remove(0);
        }
    } else {
        raw.reverse();
    }
    let more = after.is_some() && raw.len() >= max;
    let mut entries = Vec::with_capacity(raw.len());
    for raw in raw {
        let Some(n) = raw.n else { continue };
        match raw.body.as_ref().map(entry::decode) {
            Some(Ok(decoded)) => entries.push((n, decoded)),
            _ => {
                tracing::warn!(id = %raw.id, "redis stream entry is not a hub event; replay reports history-lost");
                found = false;
            }
        }
    }
    Ok(Read {
        found,
        entries,
        more,
    })
}
