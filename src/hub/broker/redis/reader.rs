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

/// Whether the log went back behind this reader (a Redis restarted without entries it had
/// acknowledged: RDB, AOF `everysec`, a failover to a lagging replica): the counter is below
/// the last entry read, or that entry now holds another event (its id was issued again). Then
/// ids are ambiguous: the counter moves past both, and every entry up to it goes (a resume
/// from an old id is `history-lost`, never a replay of another event under its id). Answers
/// the new counter value, or 0.
///
/// `ARGV`: the last counter value read, its entry's body (empty: not known).
const REWOUND: &str = r"
local c = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local last = tonumber(ARGV[1])
local rewound = c < last
if not rewound and ARGV[2] ~= '' then
  local at = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[1], '0-' .. ARGV[1])
  if at[1] then
    local body = nil
    local fields = at[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then body = fields[i + 1] end
    end
    rewound = body ~= ARGV[2]
  end
end
if not rewound then return 0 end
local n = math.max(c, last) + 1
local nid = string.format('%d', n)
redis.call('HSET', KEYS[2], 'n', nid)
redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. string.format('%d', n + 1))
return n
";

/// Reads the stream from where it ended when the reader started, for as long as the hub is
/// in use; reconnects with backoff and goes on from the last entry read.
pub(super) async fn run(client: Client, stream: String, meta: String, feed: Feed) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), true);
    let start = redis::Script::new(START);
    let rewound = redis::Script::new(REWOUND);
    // A block returns within BLOCK_MS; a reply that takes much longer means the connection is
    // gone without a reset (it is then dropped and made again).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(
            Duration::from_millis(BLOCK_MS) + Duration::from_secs(5),
        ));
    // The id of the last entry read, and the counter value it had.
    let mut last: Option<(String, u64)> = None;
    // The body of the entry at that counter value (`None`: not known).
    let mut last_body: Option<bytes::Bytes> = None;
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
        if let Some((last_id, last_n)) = &mut last {
            let answer = rewound
                .key(&stream)
                .key(&meta)
                .arg(*last_n)
                .arg(last_body.as_deref().unwrap_or_default())
                .invoke_async::<u64>(&mut conn)
                .await;
            match answer {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(
                        last = *last_n,
                        "redis lost entries this process had read (a restart without them); \
                         the stream starts over after {n}"
                    );
                    feed.lost(n.saturating_add(1));
                    *last_id = format!("0-{n}");
                    *last_n = n;
                    last_body = None;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "redis reader cannot check the stream; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
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
                last_body.clone_from(&raw.body);
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
