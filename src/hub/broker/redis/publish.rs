//! Publishing: one script call appends one entry, atomically.

use super::{RedisBackend, unavailable};
use crate::hub::{
    PublishError,
    broker::{
        Publication,
        entry::{self, Targets},
    },
};

/// The publish script.
///
/// `KEYS`: the stream, the meta hash (`n`: the last counter value used; `bytes`: bytes ever
/// appended), the marks list, the topic registry set, the idempotency key (or the meta hash
/// again when there is none), the id index (a sorted set: publisher's id → position).
///
/// `ARGV`: the entry, `max_events`, `max_bytes`, `max_age` in ms, the idempotency window in
/// ms (`0`: no key), the registry mode (`0`: none; `1`: every topic must be registered; `2`:
/// the same, and they are unregistered: a close), the publisher's id (empty: none), then the
/// topics to check.
///
/// Answers `{n, 0}` (stored as entry `0-n`), `{n, 1}` (a retry of `n`: nothing stored) or
/// `{0, 2}` (a topic is not registered: nothing stored).
///
/// - **Ids**: `n` is the last counter value plus one; a missing counter (a new or wiped
///   Redis) starts from the time in ms × 1024, so ids go on increasing after a wipe (readers
///   then see a gap, and say so). Lua numbers are doubles: exact up to 2^53, which ms × 1024
///   stays under until the year 2248.
/// - **Everything that can refuse runs before anything is written**, so a refusal (a key of
///   the wrong type, unknown topic) writes nothing and never skips a counter value: Redis does
///   not roll a script back, and an error after the append would answer "failed" for an event
///   that is stored and delivered (and a retry would store it twice).
/// - **Publisher's ids** go into the index with their position (`ZADD NX`: an id used twice
///   keeps its first position, so a client resuming from it gets duplicates rather than a
///   gap), and every index entry older than the stream's first entry is dropped after the
///   append: the index never outgrows the stream.
/// - **Bounds**: `MAXLEN ~` for the count; a mark `n:ms:bytes` is appended every 1/16 of
///   `max_bytes` or `max_age`, and the marks that are too old (or too many bytes back) are
///   dropped with the stream up to them (`XTRIM MINID`): bytes and age stay within 1/16 of
///   their bounds, with O(1) work per publish. Numbers are written with `%d`: Lua's `..`
///   writes `%.14g` (`1e+14` for 10^14 bytes ever appended, which no mark would match).
pub(super) const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[5])
if window > 0 then
  local seen = redis.call('GET', KEYS[5])
  if seen then return {tonumber(seen), 1} end
end
if ARGV[6] ~= '0' then
  for i = 8, #ARGV do
    if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 0 then return {0, 2} end
  end
end
for i, want in pairs({[1] = 'stream', [2] = 'hash', [3] = 'list', [6] = 'zset'}) do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= want and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is not a ' .. want)
  end
end
local total = redis.call('HGET', KEYS[2], 'bytes')
if total and not string.match(total, '^%d+$') then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' bytes is not a count')
end
local stored = redis.call('HGET', KEYS[2], 'n')
if stored then stored = tonumber(stored) else stored = now * 1024 end
local n = stored + 1
local nid = string.format('%d', n)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. nid, 'e', ARGV[1])
redis.call('HSET', KEYS[2], 'n', nid)
if window > 0 then redis.call('SET', KEYS[5], nid, 'PX', ARGV[5]) end
if ARGV[6] == '2' then
  for i = 8, #ARGV do redis.call('SREM', KEYS[4], ARGV[i]) end
end
local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', string.len(ARGV[1]))
local max_bytes = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local last = redis.call('LINDEX', KEYS[3], -1)
local mark = true
if last then
  local _, lms, lb = string.match(last, '^(%d+):(%d+):(%d+)$')
  if lms and bytes - tonumber(lb) < max_bytes / 16 and now - tonumber(lms) < max_age / 16 then
    mark = false
  end
end
if mark then
  redis.call('RPUSH', KEYS[3], nid .. ':' .. string.format('%d', now) .. ':' .. string.format('%d', bytes))
end
local cut = nil
while true do
  local head = redis.call('LINDEX', KEYS[3], 0)
  if not head then break end
  local hn, hms, hb = string.match(head, '^(%d+):(%d+):(%d+)$')
  if not hn then
    redis.call('LPOP', KEYS[3])
  elseif now - tonumber(hms) > max_age or bytes - tonumber(hb) > max_bytes then
    cut = hn
    redis.call('LPOP', KEYS[3])
  else
    break
  end
end
if cut then
  redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. string.format('%d', tonumber(cut) + 1))
end
if ARGV[7] ~= '' or redis.call('EXISTS', KEYS[6]) == 1 then
  if ARGV[7] ~= '' then redis.call('ZADD', KEYS[6], 'NX', nid, ARGV[7]) end
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local fseq = first and string.match(first[1], '^0%-(%d+)$')
  if fseq then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. fseq)
  end
end
return {n, 0}
";

/// The longest idempotency window Redis is asked for: 100 years, in ms.
const MAX_WINDOW_MS: u64 = 100 * 366 * 24 * 3600 * 1000;

/// Appends `publication`; its position.
pub(super) async fn publish(
    redis: &RedisBackend,
    publication: Publication<'_>,
) -> Result<u64, PublishError> {
    let Publication {
        targets,
        fields,
        private,
        close,
        id,
        must_exist,
        idempotency_key,
    } = publication;
    let body = entry::encode(&targets, private, close, id, fields);
    let meta = redis.key("meta");
    let idempotency = idempotency_key.map(|key| redis.key(&format!("idem:{key}")));
    let mode = match (must_exist, close) {
        (false, _) => "0",
        (true, false) => "1",
        (true, true) => "2",
    };
    let mut invocation = redis.script.prepare_invoke();
    invocation
        .key(redis.key("log"))
        .key(&meta)
        .key(redis.key("marks"))
        .key(redis.key("topics"))
        .key(idempotency.as_deref().unwrap_or(&meta))
        .key(redis.key("ids"))
        .arg(&body[..])
        .arg(redis.max_events)
        .arg(redis.max_bytes)
        .arg(u64::try_from(redis.max_age.as_millis()).unwrap_or(u64::MAX))
        .arg(if idempotency.is_some() {
            // Redis refuses an expiry past its clock's range (after the append: the publish
            // would be stored and answered as failed).
            u64::try_from(redis.idempotency_window.as_millis())
                .unwrap_or(u64::MAX)
                .min(MAX_WINDOW_MS)
        } else {
            0
        })
        .arg(mode)
        .arg(id.unwrap_or(""));
    if let (true, Targets::Topics(names)) = (must_exist, &targets) {
        for name in names {
            invocation.arg(&**name);
        }
    }
    let mut conn = redis.commands.clone();
    let answer: Result<(u64, u8), _> =
        match tokio::time::timeout(redis.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(answer) => answer,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        };
    match answer {
        Ok((n, 0 | 1)) if n > 0 => Ok(n),
        Ok((_, 2)) => Err(PublishError::UnknownTopic),
        Ok(other) => {
            tracing::warn!(?other, "redis publish script answered something unexpected");
            Err(PublishError::Unavailable)
        }
        Err(err) => {
            unavailable("publish", &err);
            Err(PublishError::Unavailable)
        }
    }
}
