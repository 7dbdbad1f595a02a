//! The reader: one connection per process, `XREAD BLOCK` on the hub's one stream, entries
//! delivered in order into the local core through the [`Feed`].

use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, Value};

use super::codec;
use crate::{
    backoff::Backoff,
    hub::broker::{Feed, entry},
};

/// How long one `XREAD` blocks before the reader looks at its hub again.
const BLOCK_MS: u64 = 5000;

/// Where the log ends now: the counter's last value (made from the time when there is none,
/// as the publish script does).
const START: &str = r"
local n = redis.call('HGET', KEYS[1], 'n')
if not n then
  local t = redis.call('TIME')
  n = string.format('%d', (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 1024)
  redis.call('HSET', KEYS[1], 'n', n)
end
return tonumber(n)
";

/// Reads the stream from where it ended when the reader started, for as long as the hub is
/// in use; reconnects with backoff and goes on from the last entry read.
pub(super) async fn run(client: Client, stream: String, meta: String, feed: Feed) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    let start = redis::Script::new(START);
    // A block returns within BLOCK_MS; a reply that takes much longer means the connection is
    // gone without a reset (it is then dropped and made again).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(
            Duration::from_millis(BLOCK_MS) + Duration::from_secs(5),
        ));
    // The id of the last entry read, and the counter value it had.
    let mut last: Option<(String, u64)> = None;
    'connect: loop {
        if !feed.is_alive() {
            return;
        }
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "redis reader cannot connect; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if last.is_some() {
            feed.connected(true);
        } else {
            match start.key(&meta).invoke_async::<u64>(&mut conn).await {
                Ok(n) => {
                    last = Some((format!("0-{n}"), n));
                    feed.started(n);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "redis reader cannot start; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        loop {
            if !feed.is_alive() {
                return;
            }
            let Some((last_id, last_n)) = &mut last else {
                continue 'connect;
            };
            // At most half a ring per read: a burst never overruns a subscriber that reads.
            let (_, capacity) = feed.queued();
            let batch = (capacity / 2).max(1);
            let reply: Value = match redis::cmd("XREAD")
                .arg("COUNT")
                .arg(batch)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&*last_id)
                .query_async(&mut conn)
                .await
            {
                Ok(reply) => reply,
                Err(err) => {
                    feed.connected(false);
                    tracing::warn!(error = %err, "redis reader failed; reconnecting");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue 'connect;
                }
            };
            backoff.reset();
            feed.connected(true);
            let entries = codec::read_reply(&reply);
            let read = entries.len();
            for raw in entries {
                last_id.clone_from(&raw.id);
                let Some(n) = raw.n else {
                    tracing::warn!(id = %raw.id, "redis stream entry is not a hub event; skipped");
                    continue;
                };
                if n != last_n.saturating_add(1) {
                    // Trimmed before this process read it, or a wiped Redis: never silent.
                    tracing::warn!(
                        expected = *last_n + 1,
                        got = n,
                        "redis reader missed entries"
                    );
                    feed.lost(n);
                }
                *last_n = n;
                match raw.body.as_ref().map(entry::decode) {
                    Some(Ok(decoded)) => feed.deliver(n, decoded),
                    _ => {
                        tracing::warn!(id = %raw.id, "redis stream entry cannot be read; signalled as a gap");
                        feed.lost(n.saturating_add(1));
                    }
                }
            }
            if read >= batch.max(2) / 2 {
                feed.drain().await;
            }
        }
    }
}
