//! A chat: rooms, a public feed of every room, direct messages, all over SSE from one
//! [`Hub`]: in-process by default, or shared through Redis or NATS by several processes.
//!
//! Run it with
//!
//! ```text
//! cargo run --example chat
//! ```
//!
//! and open <http://127.0.0.1:3000/> in two windows: create a room in one, open its link in the
//! other. Environment: `ADDR` (default `127.0.0.1:3000`), `KEEP_ALIVE_SECS` (default 15),
//! `HISTORY` (events kept per room for replay, default 1000), `HISTORY_BYTES` (and at most this
//! many bytes, default 1 MiB), `SUBSCRIBER_CAPACITY` (how far, in events, a stream may fall
//! behind before it is disconnected, default 256), `MAX_STREAMS` (open event streams in all,
//! default 10000) and `MAX_STREAMS_PER_CLIENT` (from one IP address, default 16; `0` turns
//! either off), `CLAIM_IDLE_SECS` (a claimed name is freed after this long unused, default
//! 86400) and `ROOM_IDLE_SECS` (a room without messages or streams is removed after this long,
//! default 3600), `COMPRESSION` (event streams compressed per event as the browser asks:
//! zstd, br, gzip or deflate; default `true`), `PRESENCE_INTERVAL_SECS` (default 5, see
//! `GET /rooms/{room}/online`), `REDIS_URL` or `NATS_URL` (see below).
//!
//! # Several processes: `REDIS_URL`
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 ADDR=127.0.0.1:3010 cargo run --example chat
//! REDIS_URL=redis://127.0.0.1:6379 ADDR=127.0.0.1:3011 cargo run --example chat
//! ```
//!
//! With `REDIS_URL` set, the hub runs on Redis Streams and the rooms and logins live in Redis
//! hashes (`chat:rooms`, `chat:tokens`), so the processes share rooms, direct messages and
//! replay: a page can post on one and listen, or resume with its `Last-Event-ID`, on the other.
//! Redis down at start-up: the process says so and exits with status 1. Redis down later:
//! requests that need it answer `503` until it is back; open streams resume by themselves.
//!
//! # Several processes: `NATS_URL`
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 ADDR=127.0.0.1:3010 cargo run --example chat
//! NATS_URL=nats://127.0.0.1:4222 ADDR=127.0.0.1:3011 cargo run --example chat
//! ```
//!
//! The same on NATS JetStream (`nats-server -js`): the hub on the stream `CHAT` (subjects
//! `chat.>`), rooms and logins in the key-value buckets `CHAT_ROOMS` and `CHAT_TOKENS`.
//!
//! Errors are JSON: `{"error": "..."}`.
//!
//! - `GET /`: the chat page. It reconnects on its own and catches up from the server's history
//!   (no duplicates: the server replays exactly what follows the page's last event id).
//! - `POST /rooms`, optional JSON `{"name": ".."}` → `201 {"room": "<id>", "name": ..}`.
//! - `GET /rooms/{room}/events`: the room's messages, `event: message`, an `id`, `data`
//!   `{"room", "user", "text", "ts"}` (`ts` in unix ms). `404` for an unknown room. Honours
//!   `Last-Event-ID` (header, or `lastEventId` query parameter).
//! - `POST /rooms/{room}/messages`, JSON `{"user": "..", "text": ".."}` → `202 {"id": "<event
//!   id>"}`; `404` unknown room; `400` malformed JSON or an empty user; `413` when `text` is
//!   over 16 KiB. An `Idempotency-Key` header (up to 128 bytes) makes a retry safe: with
//!   `REDIS_URL`, a message posted again with the same key (after a `503`, say) is stored once
//!   and answers the first id.
//! - `GET /rooms/events?room=R1&room=R2…`: one stream of every listed room (up to 32), in the
//!   hub's order, resumable with one `Last-Event-ID`; `400` with no room or more than 32, `404`
//!   when one is unknown. With `user=U` and U's token (cookie or bearer; else `401`), U's
//!   direct messages come on the same stream: the page uses one connection for its room and
//!   its direct messages. In memory and with `REDIS_URL` alike. While such a stream is open, the
//!   user is *online* in its rooms (the crate's presence, `Hub::presence`: on every process).
//! - `GET /rooms/{room}/online` → `200 {"room", "users"}`: who has a stream of the room open
//!   with their login (sorted, each once), on every process; `404` unknown room. A process that
//!   crashes takes its users offline after three `PRESENCE_INTERVAL_SECS` (default 5).
//! - `GET /events`: the public stream, every room's messages under their rooms' ids: a pattern
//!   subscription (`room/*`), not a second publish.
//! - `POST /login`, JSON `{"user": ".."}` → `200 {"user", "token"}`, the token also set as the
//!   `chat_token` HttpOnly cookie. The first login claims the name; logging in again as that
//!   user needs its token (cookie or bearer), else `409`. There are no passwords: this shows
//!   token plumbing, not authentication.
//! - `GET /users/{user}/events`: that user's direct messages, `event: direct`, `data`
//!   `{"from", "to", "text", "ts"}`; only with that user's token (the cookie, or
//!   `Authorization: Bearer <token>`), else `401`. Replayed like rooms.
//! - `POST /users/{user}/messages`, JSON `{"from": "..", "text": ".."}` → `202 {"id"}`, or `404`
//!   when no one ever logged in as that user. Kept in the user's history: a user who is away
//!   gets it on reconnecting with their last id.
//! - A name someone logged in as can only be used (as a room message's `user`, a direct
//!   message's `from`) with that login's token; otherwise `403`. Names nobody claimed are free.
//!   `SECURE_COOKIE=1` marks the login cookie `Secure` (behind TLS).
//! - `GET /metrics`: the crate's metrics (`tower_sse_connections`, `tower_sse_events_total`,
//!   …) in Prometheus' text format, through `metrics-exporter-prometheus`.
//! - `GET /stats`: `{"connections", "rooms", "users", "subscribers", "topics", "published",
//!   "slow_disconnects"}`; `connections` counts open SSE responses.
//! - SIGINT or SIGTERM: every stream gets a final `shutdown` event and ends; the process exits
//!   within 5 s even with clients connected.
//!
//! # Limits and expiry
//!
//! A stream over `MAX_STREAMS`, or over `MAX_STREAMS_PER_CLIENT` from one address, is answered
//! `429` with `Retry-After` (`SseLayer::max_streams`; `tower_sse::serve` gives the layer each
//! request's address). Behind a reverse proxy every client has the proxy's address: raise
//! `MAX_STREAMS_PER_CLIENT` or set it to `0`.
//!
//! A claimed name whose token was not used (to post, to stream, to log in again) for
//! `CLAIM_IDLE_SECS`, with no open stream of its direct messages, is freed, and its direct
//! messages' history goes with it (a new owner of the name never reads the old one's); a room
//! without a message or a stream for `ROOM_IDLE_SECS` is removed with its history (`404`
//! after). A task sweeps every quarter of the shorter time (1 s to 1 min). With `REDIS_URL` or
//! `NATS_URL` (names and rooms also capped at 10,000 each) the uses are recorded in the store
//! (the sorted set `chat:active`; the bucket `CHAT_ACTIVE`), at most once per eighth of the idle
//! time per name or room, and each sweep also records the streams its process has open; any
//! process that finds a record idle removes it, checked in the store against a use meanwhile (a
//! Lua script; a revision-checked delete), and closes its topic on every process. The
//! processes' clocks must agree to well within the idle times.
//!
//! # Replay and "history lost"
//!
//! Every stream answers with an `Sse-Replay` header (`none`, `complete` or `history-lost`, see
//! `tower_sse::replay::REPLAY_HEADER`). When the page's last id is unknown (evicted from the
//! `HISTORY` window, or from before a restart) the stream starts with an
//! `event: history-lost` (no id), then sends the newest 100 retained messages and live ones.
//!
//! # Slow clients
//!
//! A stream that falls more than `SUBSCRIBER_CAPACITY` events behind its room is ended and
//! counted in `slow_disconnects`; the page reconnects with its last id and replays. Neither the
//! publisher nor other clients ever wait for it. Memory per stream is a cursor into the room's
//! shared ring, plus what the connection itself buffers.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, RawQuery, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use futures_core::Stream;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tower_sse::{
    Compression, EncodedEvent, Event, EventStream, LastEventId, Shutdown, SseLayer,
    hub::{
        Hub, HubBuilder, Member, NatsBroker, Pattern, PublishError, RedisBackend, SubscribeError,
        SubscribeRequest, Subscription,
    },
    replay::REPLAY_HEADER,
};

/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 16 * 1024;
/// Longest user or room name, in characters.
pub const MAX_NAME: usize = 64;
/// Most rooms and logged-in users kept; more are refused with `503`.
pub const MAX_ROOMS: usize = 10_000;
/// See [`MAX_ROOMS`].
pub const MAX_USERS: usize = 10_000;
/// Largest request body accepted (JSON escapes can make 16 KiB of text much longer).
const MAX_BODY: usize = 8 * MAX_TEXT;
/// The cookie that carries the login token.
pub const COOKIE: &str = "chat_token";
/// The longest `Idempotency-Key` header accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// How the application is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keep-alive comment interval.
    pub keep_alive: Duration,
    /// Events kept per room (and per user's direct messages, and for the public stream).
    pub history: usize,
    /// Bytes kept per room (and so on), whatever the event count.
    pub history_bytes: usize,
    /// How far a stream may fall behind before it is disconnected.
    pub subscriber_capacity: usize,
    /// Mark the login cookie `Secure` (only sent over HTTPS), for a chat behind TLS.
    pub secure_cookie: bool,
    /// Most open event streams in all (`429` beyond), `None`: no cap.
    pub max_streams: Option<usize>,
    /// Most open event streams from one client address (`429` beyond), `None`: no cap.
    pub max_streams_per_client: Option<usize>,
    /// A claimed name is freed after this long without its token being used (and without an
    /// open stream of its direct messages).
    pub claim_idle: Duration,
    /// A room is removed after this long without a message, a stream opened to it or an open
    /// stream.
    pub room_idle: Duration,
    /// Compress event streams per event (gzip, deflate, br, zstd, as the browser asks).
    pub compression: bool,
    /// How often each process tells the others it is alive (presence: who is online); a
    /// process silent for three is gone.
    pub presence_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
            history: 1000,
            history_bytes: 1024 * 1024,
            subscriber_capacity: 256,
            secure_cookie: false,
            max_streams: Some(10_000),
            max_streams_per_client: Some(16),
            claim_idle: Duration::from_secs(24 * 60 * 60),
            room_idle: Duration::from_secs(60 * 60),
            presence_interval: HubBuilder::DEFAULT_PRESENCE_INTERVAL,
            compression: true,
        }
    }
}

/// The application's state; a cheap handle. Tests use it to look inside.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<ChatInner>,
}

struct ChatInner {
    hub: Hub,
    store: Store,
    /// The login cookie gets `Secure`.
    secure_cookie: bool,
    /// Open SSE responses.
    connections: AtomicUsize,
    /// See [`Config::claim_idle`].
    claim_idle: Duration,
    /// See [`Config::room_idle`].
    room_idle: Duration,
    /// With a shared store: when this process last recorded a use of a room or a claim there
    /// (so a busy room costs one write per eighth of its idle time, not one per message).
    touched: Mutex<HashMap<(Kind, String), Instant>>,
}

/// Where rooms and logins live: this process, or Redis (shared by every process).
enum Store {
    Memory {
        /// Room id → name, last activity.
        rooms: Mutex<HashMap<String, MemoryRoom>>,
        /// User → token, last use.
        tokens: Mutex<HashMap<String, MemoryClaim>>,
    },
    Redis(redis::aio::ConnectionManager),
    /// Key-value buckets on NATS JetStream: room id → name (JSON), user → token.
    /// Boxed: the handles are large, and a store is made once.
    Nats(Box<NatsStore>),
}

/// Key-value buckets on NATS JetStream: room id → name (JSON), user → token.
struct NatsStore {
    rooms: async_nats::jetstream::kv::Store,
    tokens: async_nats::jetstream::kv::Store,
    /// `r<key>` / `u<key>` → `"<last use, Unix ms> <name>"`, for expiry.
    active: async_nats::jetstream::kv::Store,
    jetstream: async_nats::jetstream::Context,
}

/// Redis could not answer: the request gets `503`.
struct StoreDown;

impl From<redis::RedisError> for StoreDown {
    fn from(err: redis::RedisError) -> Self {
        tracing::warn!(error = %err, "redis store unavailable");
        Self
    }
}

impl StoreDown {
    fn nats(err: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %err, "nats store unavailable");
        Self
    }
}

/// A name as a NATS key-value key: every byte outside `[A-Za-z0-9_-]` as `=XX`, after `_`.
fn nats_key(name: &str) -> String {
    let mut key = String::from("_");
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

/// Runs a NATS store call within 2 s.
async fn nats_call<T, E: std::fmt::Display>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StoreDown> {
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(StoreDown::nats(err)),
        Err(_) => Err(StoreDown::nats("timed out")),
    }
}

/// Removes every message of `key` from `bucket`'s stream: the value, and the marker that a
/// key-value delete or purge leaves (which would otherwise count in [`nats_len`] forever).
async fn nats_forget(
    jetstream: &async_nats::jetstream::Context,
    bucket: &str,
    key: &str,
) -> Result<(), StoreDown> {
    let stream = nats_call(jetstream.get_stream(format!("KV_{bucket}"))).await?;
    nats_call(std::future::IntoFuture::into_future(
        stream.purge().filter(format!("$KV.{bucket}.{key}")),
    ))
    .await?;
    Ok(())
}

/// How many keys a bucket holds (its stream's messages, read fresh: one per key; a removed
/// key leaves none, see [`nats_forget`]).
async fn nats_len(
    jetstream: &async_nats::jetstream::Context,
    bucket: &str,
) -> Result<usize, StoreDown> {
    let mut stream = nats_call(jetstream.get_stream(format!("KV_{bucket}"))).await?;
    let info = nats_call(stream.info()).await?;
    Ok(usize::try_from(info.state.messages).unwrap_or(usize::MAX))
}

/// A room in memory.
struct MemoryRoom {
    #[allow(dead_code)] // kept as the other stores keep it
    name: Option<String>,
    /// The last message, or stream opened to it; see [`Chat::expire_idle`].
    active: Instant,
}

/// A claimed name in memory.
struct MemoryClaim {
    token: String,
    /// The last use of the token; see [`Chat::expire_idle`].
    used: Instant,
}

const ROOMS_KEY: &str = "chat:rooms";
const TOKENS_KEY: &str = "chat:tokens";
/// Sorted set: `r:<room>` / `u:<user>` → last use (Unix ms), for expiry.
const ACTIVE_KEY: &str = "chat:active";

/// Removes a room or a claim if its last use is not after the cutoff, atomically (a process
/// that used it meanwhile wins): `KEYS` = the activity set and the room or token hash, `ARGV`
/// = the member, the cutoff (Unix ms), the hash field. Returns 1 when it removed it.
const EXPIRE_SCRIPT: &str = r"
local used = redis.call('ZSCORE', KEYS[1], ARGV[1])
if used and tonumber(used) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[3])
  return 1
end
return 0
";

/// What an activity record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Room,
    User,
}

impl Kind {
    fn tag(self) -> char {
        match self {
            Self::Room => 'r',
            Self::User => 'u',
        }
    }

    fn of(tag: char) -> Option<Self> {
        match tag {
            'r' => Some(Self::Room),
            'u' => Some(Self::User),
            _ => None,
        }
    }
}

/// The outcome of a login.
enum Claim {
    /// The name was free and is now this token's.
    New,
    /// The name is taken, by this token.
    Taken(String),
    Full,
}

impl Store {
    async fn query<T: redis::FromRedisValue>(
        conn: &redis::aio::ConnectionManager,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreDown> {
        let mut conn = conn.clone();
        match tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut conn)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreDown),
        }
    }

    /// Adds a room; `false` when there are too many.
    async fn add_room(&self, id: &str, name: Option<&str>) -> Result<bool, StoreDown> {
        match self {
            Self::Memory { rooms, .. } => {
                let mut rooms = lock(rooms);
                if rooms.len() >= MAX_ROOMS {
                    return Ok(false);
                }
                let room = MemoryRoom {
                    name: name.map(str::to_owned),
                    active: Instant::now(),
                };
                rooms.insert(id.to_owned(), room);
                Ok(true)
            }
            Self::Redis(conn) => {
                if Self::query::<usize>(conn, redis::cmd("HLEN").arg(ROOMS_KEY)).await? >= MAX_ROOMS
                {
                    return Ok(false);
                }
                let value = serde_json::to_string(&name).unwrap_or_default();
                // The activity record first: a room never exists without one (it would never
                // expire); a record without its room is swept like any other.
                self.touch(Kind::Room, id).await?;
                Self::query::<()>(conn, redis::cmd("HSET").arg(ROOMS_KEY).arg(id).arg(value))
                    .await?;
                Ok(true)
            }
            Self::Nats(nats) => {
                let NatsStore {
                    rooms, jetstream, ..
                } = &**nats;
                if nats_len(jetstream, "CHAT_ROOMS").await? >= MAX_ROOMS {
                    return Ok(false);
                }
                let value = serde_json::to_string(&name).unwrap_or_default();
                self.touch(Kind::Room, id).await?;
                nats_call(rooms.put(nats_key(id), value.into())).await?;
                Ok(true)
            }
        }
    }

    async fn remove_room(&self, id: &str) {
        match self {
            Self::Memory { rooms, .. } => {
                lock(rooms).remove(id);
            }
            Self::Redis(conn) => {
                let _ = Self::query::<()>(conn, redis::cmd("HDEL").arg(ROOMS_KEY).arg(id)).await;
            }
            Self::Nats(nats) => {
                let _ = nats_call(nats.rooms.purge(nats_key(id))).await;
                let _ = nats_forget(&nats.jetstream, "CHAT_ROOMS", &nats_key(id)).await;
            }
        }
    }

    /// Whether the room exists; in memory, a room asked for (to post or to stream) is active.
    async fn room_exists(&self, id: &str) -> Result<bool, StoreDown> {
        match self {
            Self::Memory { rooms, .. } => Ok(lock(rooms)
                .get_mut(id)
                .map(|room| room.active = Instant::now())
                .is_some()),
            Self::Redis(conn) => {
                Self::query(conn, redis::cmd("HEXISTS").arg(ROOMS_KEY).arg(id)).await
            }
            Self::Nats(nats) => Ok(nats_call(nats.rooms.get(nats_key(id))).await?.is_some()),
        }
    }

    /// Claims `user` for `token` unless someone has it.
    async fn claim(&self, user: &str, token: &str) -> Result<Claim, StoreDown> {
        match self {
            Self::Memory { tokens, .. } => {
                let mut tokens = lock(tokens);
                Ok(match tokens.get(user) {
                    Some(existing) => Claim::Taken(existing.token.clone()),
                    None if tokens.len() >= MAX_USERS => Claim::Full,
                    None => {
                        let claim = MemoryClaim {
                            token: token.to_owned(),
                            used: Instant::now(),
                        };
                        tokens.insert(user.to_owned(), claim);
                        Claim::New
                    }
                })
            }
            Self::Redis(conn) => {
                if let Some(existing) = self.token_of(user).await? {
                    return Ok(Claim::Taken(existing));
                }
                if Self::query::<usize>(conn, redis::cmd("HLEN").arg(TOKENS_KEY)).await?
                    >= MAX_USERS
                {
                    return Ok(Claim::Full);
                }
                // The activity record first (see `add_room`).
                self.touch(Kind::User, user).await?;
                let set: bool = Self::query(
                    conn,
                    redis::cmd("HSETNX").arg(TOKENS_KEY).arg(user).arg(token),
                )
                .await?;
                if set {
                    return Ok(Claim::New);
                }
                // Someone else got there first.
                Ok(Claim::Taken(self.token_of(user).await?.unwrap_or_default()))
            }
            Self::Nats(nats) => {
                let NatsStore {
                    tokens, jetstream, ..
                } = &**nats;
                if let Some(existing) = self.token_of(user).await? {
                    return Ok(Claim::Taken(existing));
                }
                if nats_len(jetstream, "CHAT_TOKENS").await? >= MAX_USERS {
                    return Ok(Claim::Full);
                }
                // The activity record first (see `add_room`).
                self.touch(Kind::User, user).await?;
                // `create` only writes a key that does not exist: the first login wins.
                let created = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokens.create(nats_key(user), token.to_owned().into()),
                )
                .await
                .map_err(|_| StoreDown::nats("timed out"))?;
                match created {
                    Ok(_) => Ok(Claim::New),
                    Err(err)
                        if err.kind()
                            == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
                    {
                        Ok(Claim::Taken(self.token_of(user).await?.unwrap_or_default()))
                    }
                    Err(err) => Err(StoreDown::nats(err)),
                }
            }
        }
    }

    async fn token_of(&self, user: &str) -> Result<Option<String>, StoreDown> {
        match self {
            Self::Memory { tokens, .. } => Ok(lock(tokens).get(user).map(|c| c.token.clone())),
            Self::Redis(conn) => {
                Self::query(conn, redis::cmd("HGET").arg(TOKENS_KEY).arg(user)).await
            }
            Self::Nats(nats) => Ok(nats_call(nats.tokens.get(nats_key(user)))
                .await?
                .map(|value| String::from_utf8_lossy(&value).into_owned())),
        }
    }

    /// `user`'s token was used: in memory, the claim is not idle.
    fn touch_claim(&self, user: &str) {
        if let Self::Memory { tokens, .. } = self {
            if let Some(claim) = lock(tokens).get_mut(user) {
                claim.used = Instant::now();
            }
        }
    }

    /// Records a use of a room or a claim now (shared stores; in memory the records are
    /// touched where they live).
    async fn touch(&self, kind: Kind, name: &str) -> Result<(), StoreDown> {
        match self {
            Self::Memory { .. } => Ok(()),
            Self::Redis(conn) => {
                let member = format!("{}:{name}", kind.tag());
                Self::query(
                    conn,
                    redis::cmd("ZADD").arg(ACTIVE_KEY).arg(now_ms()).arg(member),
                )
                .await
            }
            Self::Nats(nats) => {
                let key = format!("{}{}", kind.tag(), nats_key(name));
                let value = format!("{} {name}", now_ms());
                nats_call(nats.active.put(key, value.into())).await?;
                Ok(())
            }
        }
    }

    /// Every activity record of a shared store: what, its name, its last use (Unix ms).
    async fn activity(&self) -> Result<Vec<(Kind, String, u64)>, StoreDown> {
        match self {
            Self::Memory { .. } => Ok(Vec::new()),
            Self::Redis(conn) => {
                let records: Vec<(String, u64)> = Self::query(
                    conn,
                    redis::cmd("ZRANGE")
                        .arg(ACTIVE_KEY)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES"),
                )
                .await?;
                Ok(records
                    .into_iter()
                    .filter_map(|(member, used)| {
                        let (tag, name) = member.split_once(':')?;
                        let kind = Kind::of(tag.chars().next()?)?;
                        Some((kind, name.to_owned(), used))
                    })
                    .collect())
            }
            Self::Nats(nats) => {
                use futures_util::TryStreamExt as _;
                let keys: Vec<String> = nats_call(async {
                    nats.active
                        .keys()
                        .await
                        .map_err(|err| err.to_string())?
                        .try_collect()
                        .await
                        .map_err(|err| err.to_string())
                })
                .await?;
                let mut records = Vec::with_capacity(keys.len());
                for key in keys {
                    let Some(value) = nats_call(nats.active.get(&key)).await? else {
                        continue;
                    };
                    let value = String::from_utf8_lossy(&value);
                    let (Some(kind), Some((used, name))) =
                        (key.chars().next().and_then(Kind::of), value.split_once(' '))
                    else {
                        continue;
                    };
                    if let Ok(used) = used.parse() {
                        records.push((kind, name.to_owned(), used));
                    }
                }
                Ok(records)
            }
        }
    }

    /// Removes a room or a claim, with its activity record, if it was not used after `cutoff`
    /// (Unix ms), atomically against a use on another process. `true` when it went.
    async fn remove_if_idle(&self, kind: Kind, name: &str, cutoff: u64) -> Result<bool, StoreDown> {
        match self {
            Self::Memory { .. } => Ok(false),
            Self::Redis(conn) => {
                let hash = match kind {
                    Kind::Room => ROOMS_KEY,
                    Kind::User => TOKENS_KEY,
                };
                let mut conn = conn.clone();
                let script = redis::Script::new(EXPIRE_SCRIPT);
                let mut invocation = script.key(ACTIVE_KEY);
                invocation
                    .key(hash)
                    .arg(format!("{}:{name}", kind.tag()))
                    .arg(cutoff)
                    .arg(name);
                let call = invocation.invoke_async::<i64>(&mut conn);
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(result) => Ok(result? == 1),
                    Err(_) => Err(StoreDown),
                }
            }
            Self::Nats(nats) => {
                let key = format!("{}{}", kind.tag(), nats_key(name));
                let Some(entry) = nats_call(nats.active.entry(key.clone())).await? else {
                    return Ok(false);
                };
                let used = String::from_utf8_lossy(&entry.value)
                    .split_once(' ')
                    .and_then(|(used, _)| used.parse::<u64>().ok());
                if entry.operation != async_nats::jetstream::kv::Operation::Put
                    || used.is_none_or(|used| used > cutoff)
                {
                    return Ok(false);
                }
                // Only if nobody wrote it since: another process's use keeps it.
                let deleted = tokio::time::timeout(
                    Duration::from_secs(2),
                    nats.active
                        .delete_expect_revision(&key, Some(entry.revision)),
                )
                .await
                .map_err(|_| StoreDown::nats("timed out"))?;
                if deleted.is_err() {
                    return Ok(false);
                }
                let (bucket, bucket_name) = match kind {
                    Kind::Room => (&nats.rooms, "CHAT_ROOMS"),
                    Kind::User => (&nats.tokens, "CHAT_TOKENS"),
                };
                nats_call(bucket.purge(nats_key(name))).await?;
                nats_forget(&nats.jetstream, bucket_name, &nats_key(name)).await?;
                nats_forget(&nats.jetstream, "CHAT_ACTIVE", &key).await?;
                Ok(true)
            }
        }
    }

    /// How many rooms and users there are.
    async fn counts(&self) -> Result<(usize, usize), StoreDown> {
        match self {
            Self::Memory { rooms, tokens } => Ok((lock(rooms).len(), lock(tokens).len())),
            Self::Redis(conn) => Ok((
                Self::query(conn, redis::cmd("HLEN").arg(ROOMS_KEY)).await?,
                Self::query(conn, redis::cmd("HLEN").arg(TOKENS_KEY)).await?,
            )),
            Self::Nats(nats) => Ok((
                nats_len(&nats.jetstream, "CHAT_ROOMS").await?,
                nats_len(&nats.jetstream, "CHAT_TOKENS").await?,
            )),
        }
    }
}

/// The claims of a stream opened with a valid token, checked by the hub's authorizer too.
struct LoggedIn(String);

impl Chat {
    /// The hub behind the application.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// How many SSE responses are open.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Frees the claimed names whose token was not used for [`Config::claim_idle`] and removes
    /// the rooms without a message or a stream opened for [`Config::room_idle`], with their
    /// topics (so a new owner of a name never reads the old owner's direct messages). A name
    /// with an open stream of its direct messages, and a room with an open stream, count as
    /// in use. Returns how many names and rooms went. A task calls it every so often (see
    /// [`app`]); tests call it after moving a paused clock.
    ///
    /// With `REDIS_URL` or `NATS_URL` the names and rooms are shared: each process records
    /// the uses it sees (posts, logins, streams opened; and, at every run of this, the streams
    /// it has open) in the store, and whichever process finds a record idle removes it, with
    /// a check in the store that nobody used it meanwhile (a Lua script on Redis, a
    /// revision-checked delete on NATS). The processes' clocks must agree to well within the
    /// idle times.
    pub async fn expire_idle(&self) -> (usize, usize) {
        let Store::Memory { rooms, tokens } = &self.inner.store else {
            return self.expire_shared().await;
        };
        let hub = &self.inner.hub;
        let now = Instant::now();
        let mut gone_users = Vec::new();
        lock(tokens).retain(|user, claim| {
            if hub.client_connections(user) > 0 || hub.subscriber_count(&user_topic(user)) > 0 {
                claim.used = now;
            }
            let keep = now.duration_since(claim.used) < self.inner.claim_idle;
            if !keep {
                gone_users.push(user_topic(user));
            }
            keep
        });
        let mut gone_rooms = Vec::new();
        lock(rooms).retain(|id, room| {
            if hub.subscriber_count(&room_topic(id)) > 0 {
                room.active = now;
            }
            let keep = now.duration_since(room.active) < self.inner.room_idle;
            if !keep {
                gone_rooms.push(room_topic(id));
            }
            keep
        });
        for topic in gone_users.iter().chain(&gone_rooms) {
            let _ = hub.close_topic(topic, None).await;
        }
        if !gone_users.is_empty() || !gone_rooms.is_empty() {
            tracing::info!(
                names = gone_users.len(),
                rooms = gone_rooms.len(),
                "idle names and rooms expired"
            );
        }
        (gone_users.len(), gone_rooms.len())
    }

    /// [`expire_idle`](Self::expire_idle) on a shared store.
    async fn expire_shared(&self) -> (usize, usize) {
        let hub = &self.inner.hub;
        let store = &self.inner.store;
        {
            // Forget old throttle marks (the map stays as small as what was used lately).
            let now = Instant::now();
            let longest = self.inner.claim_idle.max(self.inner.room_idle);
            lock(&self.inner.touched).retain(|_, at| now.duration_since(*at) < longest);
        }
        let records = match store.activity().await {
            Ok(records) => records,
            Err(StoreDown) => return (0, 0),
        };
        let now = now_ms();
        let (mut gone_users, mut gone_rooms) = (0, 0);
        for (kind, name, used) in records {
            let open_here = match kind {
                Kind::User => {
                    hub.client_connections(&name) > 0
                        || hub.subscriber_count(&user_topic(&name)) > 0
                }
                Kind::Room => hub.subscriber_count(&room_topic(&name)) > 0,
            };
            if open_here {
                // In use on this process: tell the others (this runs at least four times per
                // idle time, so a record with an open stream anywhere never looks idle).
                let _ = store.touch(kind, &name).await;
                continue;
            }
            let idle = u64::try_from(self.idle(kind).as_millis()).unwrap_or(u64::MAX);
            let Some(cutoff) = now.checked_sub(idle) else {
                continue;
            };
            if used > cutoff {
                continue;
            }
            match store.remove_if_idle(kind, &name, cutoff).await {
                Ok(true) => {
                    // Its topic goes too, on every process: a new owner of the name never
                    // reads the old owner's direct messages.
                    let topic = match kind {
                        Kind::User => {
                            gone_users += 1;
                            user_topic(&name)
                        }
                        Kind::Room => {
                            gone_rooms += 1;
                            room_topic(&name)
                        }
                    };
                    let _ = hub.close_topic(&topic, None).await;
                }
                Ok(false) => {}
                Err(StoreDown) => break,
            }
        }
        if gone_users + gone_rooms > 0 {
            tracing::info!(
                names = gone_users,
                rooms = gone_rooms,
                "idle names and rooms expired"
            );
        }
        (gone_users, gone_rooms)
    }

    /// `words` × 64 bits from the operating system's CSPRNG (`getrandom`), as hex: tokens and
    /// room ids nobody can guess from earlier ones.
    fn random_hex(&self, words: usize) -> String {
        let mut bytes = vec![0u8; words * 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the request may speak as `name`: a name someone logged in as needs that login's
    /// token (cookie or bearer); a name nobody claimed is free. `Err` is the answer (`403`,
    /// or `503` while the store is down).
    async fn may_speak_as(&self, headers: &HeaderMap, name: &str) -> Result<(), Response> {
        match self.inner.store.token_of(name).await {
            Ok(None) => Ok(()),
            Ok(Some(known)) if token(headers).is_some_and(|given| same_token(&known, given)) => {
                self.used(Kind::User, name).await;
                Ok(())
            }
            Ok(Some(_)) => Err(error(
                StatusCode::FORBIDDEN,
                "that user name is claimed: send its token (cookie or bearer)",
            )),
            Err(StoreDown) => Err(unavailable()),
        }
    }

    /// Whether the room exists (and so is in use), or the store's `503`.
    async fn room_exists(&self, room: &str) -> Result<bool, Response> {
        let exists = self
            .inner
            .store
            .room_exists(room)
            .await
            .map_err(|StoreDown| unavailable())?;
        if exists {
            self.used(Kind::Room, room).await;
        }
        Ok(exists)
    }

    /// How long a room or a claim may go unused.
    fn idle(&self, kind: Kind) -> Duration {
        match kind {
            Kind::Room => self.inner.room_idle,
            Kind::User => self.inner.claim_idle,
        }
    }

    /// A room or a claim was used. In memory its record notes it; a shared store gets the use
    /// written, at most once per eighth of the idle time (a failed write is retried by the
    /// next use, or by the expiry task while a stream is open).
    async fn used(&self, kind: Kind, name: &str) {
        if kind == Kind::User {
            self.inner.store.touch_claim(name);
        }
        if matches!(self.inner.store, Store::Memory { .. }) {
            return;
        }
        let every = self.idle(kind) / 8;
        {
            let now = Instant::now();
            let mut touched = lock(&self.inner.touched);
            let key = (kind, name.to_owned());
            if touched
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < every)
            {
                return;
            }
            touched.insert(key, now);
        }
        if self.inner.store.touch(kind, name).await.is_err() {
            lock(&self.inner.touched).remove(&(kind, name.to_owned()));
        }
    }

    /// Publishes a message to its room (the public stream follows every room with a pattern).
    /// A retry with the same `idempotency_key` (with Redis) is stored once.
    pub async fn post_message(
        &self,
        room: &str,
        user: &str,
        text: &str,
        idempotency_key: Option<&str>,
    ) -> Result<EncodedEvent, PublishError> {
        match self.inner.store.room_exists(room).await {
            Ok(true) => self.used(Kind::Room, room).await,
            Ok(false) => return Err(PublishError::UnknownTopic),
            Err(StoreDown) => return Err(PublishError::Unavailable),
        }
        let event = Event::new()
            .event("message")
            .json_data(&json!({ "room": room, "user": user, "text": text, "ts": now_ms() }))
            .expect("a json! value always serializes");
        let topic = room_topic(room);
        let topics = [topic.as_str()];
        let publisher = self.inner.hub.publisher(&topics);
        match idempotency_key {
            Some(key) => publisher.idempotency_key(key).publish(event).await,
            None => publisher.publish(event).await,
        }
    }

    /// The open-connection guard and the stream of one SSE response.
    fn respond(&self, subscription: Subscription) -> Response {
        self.respond_as(subscription, Vec::new())
    }

    /// As [`respond`](Self::respond), with the presence `online` keeps while the stream is
    /// open.
    fn respond_as(&self, subscription: Subscription, online: Vec<Member>) -> Response {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        let replay = subscription.replay();
        let stream = Counted {
            subscription: subscription.notify_history_lost(
                Event::new()
                    .event("history-lost")
                    .data("some messages may be missing"),
            ),
            chat: self.clone(),
            _online: online,
        };
        (
            [(REPLAY_HEADER, replay.header_value())],
            EventStream::new(stream),
        )
            .into_response()
    }
}

/// A subscription that counts as an open connection until it is dropped: when the stream
/// ends, or the client goes away.
struct Counted {
    subscription: Subscription,
    chat: Chat,
    /// The user's presence in the stream's rooms (leaves when the stream goes).
    _online: Vec<Member>,
}

impl Stream for Counted {
    type Item = EncodedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        Pin::new(&mut self.subscription).poll_next(cx)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.chat.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn room_topic(room: &str) -> String {
    format!("room/{room}")
}

fn user_topic(user: &str) -> String {
    format!("user/{user}")
}

/// An error answer: `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: &str) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    ApiError(status, message.into()).into_response()
}

/// `503` when the hub's broker cannot be reached (never with the in-memory hub).
fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "event broker unavailable")
}

/// A failed publish: `503` when the broker is unavailable, `404` with `not_found` otherwise.
fn publish_error(err: PublishError, not_found: &str) -> Response {
    match err {
        PublishError::Unavailable => unavailable(),
        _ => error(StatusCode::NOT_FOUND, not_found),
    }
}

/// The JSON body, or the error response: `413` for a body over [`MAX_BODY`], `400` otherwise.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body too large")
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "cannot read the request body")
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, &format!("malformed JSON: {err}")))
}

/// A user name: trimmed, 1 to [`MAX_NAME`] characters, no control characters.
fn valid_user(user: &str) -> Result<&str, ApiError> {
    let user = user.trim();
    if user.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty user"));
    }
    if user.chars().count() > MAX_NAME || user.chars().any(char::is_control) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid user name"));
    }
    Ok(user)
}

fn valid_text(text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_TEXT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text is longer than 16 KiB",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewRoom {
    name: Option<String>,
}

async fn create_room(State(chat): State<Chat>, body: Result<Bytes, BytesRejection>) -> Response {
    let name = match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => None,
        _ => match parse::<NewRoom>(body) {
            Ok(room) => room.name.map(|name| name.trim().to_owned()),
            Err(err) => return err.into_response(),
        },
    };
    if name
        .as_deref()
        .is_some_and(|name| name.chars().count() > MAX_NAME || name.chars().any(char::is_control))
    {
        return error(StatusCode::BAD_REQUEST, "invalid room name");
    }
    let id = chat.random_hex(1);
    match chat.inner.store.add_room(&id, name.as_deref()).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::SERVICE_UNAVAILABLE, "too many rooms"),
        Err(StoreDown) => return unavailable(),
    }
    if let Err(err) = chat.inner.hub.create_topic(&room_topic(&id)).await {
        chat.inner.store.remove_room(&id).await;
        return publish_error(err, "no such room");
    }
    (
        StatusCode::CREATED,
        Json(json!({ "room": id, "name": name })),
    )
        .into_response()
}

async fn room_events(
    State(chat): State<Chat>,
    Path(room): Path<String>,
    last: Option<LastEventId>,
) -> Response {
    match chat.room_exists(&room).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such room"),
        Err(response) => return response,
    }
    let last = last.as_ref().map(LastEventId::as_str);
    match chat
        .inner
        .hub
        .subscriber(&room_topic(&room))
        .last_event_id(last)
        .subscribe()
        .await
    {
        Ok(subscription) => chat.respond(subscription),
        Err(SubscribeError::Unavailable) => unavailable(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such room"),
    }
}

/// The most rooms one `GET /rooms/events` may follow.
pub const MAX_STREAM_ROOMS: usize = 32;

/// The values of `name` in a query string (`a=1&a=2`), percent-decoded (`+` is a space).
fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| {
            let value = value.replace('+', " ");
            percent_encoding::percent_decode_str(&value)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// `GET /rooms/events?room=R1&room=R2`: one stream of every listed room, resumable with one
/// `Last-Event-ID`.
async fn rooms_events(
    State(chat): State<Chat>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    last: Option<LastEventId>,
) -> Response {
    // With `user=<name>` (and that user's token), the user's direct messages come on the same
    // stream: one connection for the page.
    let users = query_values(query.as_deref(), "user");
    let user = match users.as_slice() {
        [] => None,
        [user] => Some(user.clone()),
        _ => return error(StatusCode::BAD_REQUEST, "at most one user"),
    };
    if let Some(user) = &user
        && let Err(response) = chat.check_token(&headers, user).await
    {
        return response;
    }
    let mut rooms = query_values(query.as_deref(), "room");
    rooms.sort_unstable();
    rooms.dedup();
    if rooms.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "no room: add room=<id> to the query",
        );
    }
    if rooms.len() > MAX_STREAM_ROOMS {
        let message = format!("more than {MAX_STREAM_ROOMS} rooms");
        return error(StatusCode::BAD_REQUEST, &message);
    }
    for room in &rooms {
        match chat.room_exists(room).await {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::NOT_FOUND, &format!("no such room: {room}")),
            Err(response) => return response,
        }
    }
    let mut topics: Vec<String> = rooms.iter().map(|room| room_topic(room)).collect();
    if let Some(user) = &user {
        topics.push(user_topic(user));
    }
    let claims = LoggedIn(user.clone().unwrap_or_default());
    let mut subscription = chat.inner.hub.subscription().claims(&claims);
    for topic in &topics {
        subscription = subscription.topic(topic);
    }
    if let Some(user) = &user {
        subscription = subscription.client_id(user);
    }
    let last = last.as_ref().map(LastEventId::as_str);
    match subscription.last_event_id(last).subscribe().await {
        Ok(subscription) => {
            let presence = chat.inner.hub.presence();
            // Names and room ids are short (MAX_NAME): far under the presence limit.
            let online = user
                .iter()
                .flat_map(|user| rooms.iter().map(move |room| (user, room)))
                .filter_map(|(user, room)| presence.join(room_topic(room), user.as_str(), "").ok())
                .collect();
            chat.respond_as(subscription, online)
        }
        Err(SubscribeError::Unavailable) => unavailable(),
        Err(SubscribeError::Selection(err)) => error(StatusCode::BAD_REQUEST, &err.to_string()),
        Err(SubscribeError::Forbidden) => error(StatusCode::UNAUTHORIZED, "forbidden"),
        Err(_) => error(StatusCode::NOT_FOUND, "no such room"),
    }
}

/// `GET /rooms/{room}/online`: the users with a stream of the room open, on every process.
async fn online(State(chat): State<Chat>, Path(room): Path<String>) -> Response {
    match chat.room_exists(&room).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such room"),
        Err(response) => return response,
    }
    let mut users: Vec<String> = chat
        .inner
        .hub
        .presence()
        .members(&room_topic(&room))
        .iter()
        .map(|member| member.key().to_owned())
        .collect();
    users.sort_unstable();
    users.dedup();
    Json(json!({ "room": room, "users": users })).into_response()
}

#[derive(Deserialize)]
struct NewMessage {
    user: String,
    text: String,
}

async fn post_message(
    State(chat): State<Chat>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat.room_exists(&room).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such room"),
        Err(response) => return response,
    }
    let message: NewMessage = match parse(body) {
        Ok(message) => message,
        Err(err) => return err.into_response(),
    };
    let user = match valid_user(&message.user) {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = valid_text(&message.text) {
        return err.into_response();
    }
    if let Err(response) = chat.may_speak_as(&headers, user).await {
        return response;
    }
    // A retry after a `503` (the message may have been stored) carries the same key, and is
    // stored once.
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => Some(key),
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad Idempotency-Key"),
    };
    let key = key.map(|key| format!("room/{room}/{user}/{key}"));
    match chat
        .post_message(&room, user, &message.text, key.as_deref())
        .await
    {
        Ok(event) => (StatusCode::ACCEPTED, Json(json!({ "id": event.id() }))).into_response(),
        Err(err) => publish_error(err, "no such room"),
    }
}

async fn public_events(State(chat): State<Chat>, last: Option<LastEventId>) -> Response {
    let last = last.as_ref().map(LastEventId::as_str);
    let hub = &chat.inner.hub;
    let rooms = Pattern::glob("room/*").expect("a valid pattern");
    let every_room = hub.subscription().pattern(rooms);
    match every_room.last_event_id(last).subscribe().await {
        Ok(subscription) => chat.respond(subscription),
        Err(SubscribeError::Unavailable) => unavailable(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "public stream unavailable"),
    }
}

/// The process's metrics recorder, installed once (tests build the app several times).
fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding app's): keep it, and serve
        // what this one sees (nothing, then).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /metrics`: the crate's counters (`tower_sse_*`) in Prometheus' text format.
async fn prometheus() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(
    State(chat): State<Chat>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let login: Login = match parse(body) {
        Ok(login) => login,
        Err(err) => return err.into_response(),
    };
    let user = match valid_user(&login.user) {
        Ok(user) => user.to_owned(),
        Err(err) => return err.into_response(),
    };
    let fresh = chat.random_hex(2);
    let token = match chat.inner.store.claim(&user, &fresh).await {
        Ok(Claim::New) => fresh,
        // Logging in again (another tab, another process) with the token the name has.
        Ok(Claim::Taken(existing))
            if token(&headers).is_some_and(|given| same_token(&existing, given)) =>
        {
            chat.used(Kind::User, &user).await;
            existing
        }
        Ok(Claim::Taken(_)) => return error(StatusCode::CONFLICT, "that user name is taken"),
        Ok(Claim::Full) => return error(StatusCode::SERVICE_UNAVAILABLE, "too many users"),
        Err(StoreDown) => return unavailable(),
    };
    let secure = if chat.inner.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "user": user, "token": token })),
    )
        .into_response()
}

/// The token from `Authorization: Bearer` or the cookie.
fn token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

/// Compares without stopping at the first difference.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Chat {
    /// The request carries `user`'s token (cookie or bearer): else a `401` (or a `503` when the
    /// store is down). Using the token keeps the claim from expiring.
    async fn check_token(&self, headers: &HeaderMap, user: &str) -> Result<(), Response> {
        let known = match self.inner.store.token_of(user).await {
            Ok(known) => known,
            Err(StoreDown) => return Err(unavailable()),
        };
        let authorized = token(headers)
            .zip(known)
            .is_some_and(|(given, token)| same_token(&token, given));
        if !authorized {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "a valid token for this user is needed",
            ));
        }
        self.used(Kind::User, user).await;
        Ok(())
    }
}

async fn user_events(
    State(chat): State<Chat>,
    Path(user): Path<String>,
    headers: HeaderMap,
    last: Option<LastEventId>,
) -> Response {
    if let Err(response) = chat.check_token(&headers, &user).await {
        return response;
    }
    let claims = LoggedIn(user.clone());
    let last = last.as_ref().map(LastEventId::as_str);
    match chat
        .inner
        .hub
        .subscriber(&user_topic(&user))
        .client_id(&user)
        .claims(&claims)
        .last_event_id(last)
        .subscribe()
        .await
    {
        Ok(subscription) => chat.respond(subscription),
        Err(SubscribeError::Forbidden) => error(StatusCode::UNAUTHORIZED, "forbidden"),
        Err(SubscribeError::Unavailable) => unavailable(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such user"),
    }
}

#[derive(Deserialize)]
struct Direct {
    from: String,
    text: String,
}

async fn post_direct(
    State(chat): State<Chat>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let message: Direct = match parse(body) {
        Ok(message) => message,
        Err(err) => return err.into_response(),
    };
    let from = match valid_user(&message.from) {
        Ok(from) => from,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = valid_text(&message.text) {
        return err.into_response();
    }
    if let Err(response) = chat.may_speak_as(&headers, from).await {
        return response;
    }
    let hub = &chat.inner.hub;
    match chat.inner.store.token_of(&user).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such user"),
        Err(StoreDown) => return unavailable(),
    }
    let event = Event::new()
        .event("direct")
        .json_data(&json!({ "from": from, "to": user, "text": message.text, "ts": now_ms() }))
        .expect("a json! value always serializes");
    // Kept in the user's own topic, so a dropped connection catches up like a room does.
    match hub.publish(&user_topic(&user), event).await {
        Ok(event) => (StatusCode::ACCEPTED, Json(json!({ "id": event.id() }))).into_response(),
        Err(err) => publish_error(err, "no such user"),
    }
}

async fn stats(State(chat): State<Chat>) -> Response {
    let hub = chat.inner.hub.stats();
    let Ok((rooms, users)) = chat.inner.store.counts().await else {
        return unavailable();
    };
    Json(json!({
        "connections": chat.connections(),
        "rooms": rooms,
        "users": users,
        "subscribers": hub.subscribers,
        "topics": hub.topics,
        "published": hub.published,
        "slow_disconnects": hub.slow_disconnects,
    }))
    .into_response()
}

/// The whole application on the in-process hub, for `main` and for tests.
pub fn app(config: &Config, shutdown: &Shutdown) -> (Router, Chat) {
    let store = Store::Memory {
        rooms: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
    };
    build(config, shutdown, Hub::builder(), store)
}

/// The whole application on Redis (`redis://host:port`): hub, rooms and logins shared with
/// every process using the same Redis.
///
/// # Errors
///
/// A message naming the URL when Redis cannot be reached.
pub async fn app_on_redis(
    config: &Config,
    shutdown: &Shutdown,
    url: &str,
) -> Result<(Router, Chat), String> {
    let backend = RedisBackend::connect(url)
        .await
        .map_err(|err| err.to_string())?
        .key_prefix("chat:topic:");
    let store = redis::Client::open(url)
        .map_err(|err| format!("cannot use Redis at {url:?}: {err}"))?
        .get_connection_manager()
        .await
        .map_err(|err| format!("cannot use Redis at {url:?}: {err}"))?;
    Ok(build(
        config,
        shutdown,
        Hub::builder().redis(backend),
        Store::Redis(store),
    ))
}

/// The whole application on NATS JetStream (`nats://host:port`): the hub on a stream
/// (`CHAT`), rooms and logins in key-value buckets (`CHAT_ROOMS`, `CHAT_TOKENS`), shared with
/// every process using the same NATS.
///
/// # Errors
///
/// A message naming the URL when NATS (or its JetStream) cannot be reached.
pub async fn app_on_nats(
    config: &Config,
    shutdown: &Shutdown,
    url: &str,
) -> Result<(Router, Chat), String> {
    let broker = NatsBroker::connect(url)
        .await
        .map_err(|err| err.to_string())?
        .stream_name("CHAT")
        .subject_prefix("chat");
    let fail = |err: &dyn std::fmt::Display| format!("cannot use NATS at {url:?}: {err}");
    let client = async_nats::connect(url).await.map_err(|e| fail(&e))?;
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(2));
    let mut buckets = Vec::new();
    for bucket in ["CHAT_ROOMS", "CHAT_TOKENS", "CHAT_ACTIVE"] {
        if let Ok(store) = jetstream.get_key_value(bucket).await {
            buckets.push(store);
            continue;
        }
        // The bucket's stream, as the key-value convention has it (`create_key_value` asks
        // for account details in a form older servers do not give).
        let made = jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: async_nats::jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await;
        if let Err(err) = made {
            tracing::debug!(error = %err, bucket, "creating the bucket (another process may have)");
        }
        buckets.push(
            jetstream
                .get_key_value(bucket)
                .await
                .map_err(|e| fail(&e))?,
        );
    }
    let active = buckets.pop().ok_or("no bucket")?;
    let tokens = buckets.pop().ok_or("no bucket")?;
    let rooms = buckets.pop().ok_or("no bucket")?;
    Ok(build(
        config,
        shutdown,
        Hub::builder().nats(broker),
        Store::Nats(Box::new(NatsStore {
            rooms,
            tokens,
            active,
            jetstream,
        })),
    ))
}

fn build(config: &Config, shutdown: &Shutdown, hub: HubBuilder, store: Store) -> (Router, Chat) {
    metrics_handle();
    let hub = hub
        .history_events(config.history)
        .history_bytes(config.history_bytes)
        .subscriber_capacity(config.subscriber_capacity)
        .presence_interval(config.presence_interval)
        // Direct messages only for the user the handler checked the token of.
        .authorizer(
            |req: &SubscribeRequest<'_>| match req.topic().strip_prefix("user/") {
                Some(user) => req.claims::<LoggedIn>().is_some_and(|c| c.0 == user),
                None => true,
            },
        )
        .build();
    let chat = Chat {
        inner: Arc::new(ChatInner {
            hub,
            secure_cookie: config.secure_cookie,
            store,
            connections: AtomicUsize::new(0),
            claim_idle: config.claim_idle,
            room_idle: config.room_idle,
            touched: Mutex::default(),
        }),
    };
    {
        tokio::spawn(expire_every(
            Arc::downgrade(&chat.inner),
            config.claim_idle.min(config.room_idle),
            shutdown.clone(),
        ));
    }
    let mut sse = SseLayer::new()
        .keep_alive(config.keep_alive)
        .retry(Duration::from_secs(1))
        .shutdown(shutdown)
        .shutdown_event(Event::new().event("shutdown").data("server stopping"));
    if config.compression {
        sse = sse.compression(Compression::new());
    }
    if let Some(max) = config.max_streams {
        sse = sse.max_streams(max);
    }
    // `serve` gives the layer each request's address.
    if let Some(max) = config.max_streams_per_client {
        sse = sse.max_streams_per_client(max);
    }
    let router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/rooms", post(create_room))
        .route("/rooms/events", get(rooms_events))
        .route("/rooms/{room}/events", get(room_events))
        .route("/rooms/{room}/messages", post(post_message))
        .route("/rooms/{room}/online", get(online))
        .route("/events", get(public_events))
        .route("/login", post(login))
        .route("/users/{user}/events", get(user_events))
        .route("/users/{user}/messages", post(post_direct))
        .route("/stats", get(stats))
        .route("/metrics", get(prometheus))
        .with_state(chat.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(sse);
    (router, chat)
}

/// Runs [`Chat::expire_idle`] every quarter of `idle` (between 1 s and 1 min) until the
/// shutdown, or until the application is dropped.
async fn expire_every(chat: std::sync::Weak<ChatInner>, idle: Duration, shutdown: Shutdown) {
    let period = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop => return,
        }
        let Some(inner) = chat.upgrade() else { return };
        Chat { inner }.expire_idle().await;
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("error: {name}={value:?} is not valid");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = env_or("ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)));
    let defaults = Config::default();
    let config = Config {
        keep_alive: Duration::from_secs(env_or("KEEP_ALIVE_SECS", 15)),
        history: env_or("HISTORY", defaults.history),
        history_bytes: env_or("HISTORY_BYTES", defaults.history_bytes),
        subscriber_capacity: env_or("SUBSCRIBER_CAPACITY", defaults.subscriber_capacity),
        secure_cookie: env_or("SECURE_COOKIE", false),
        // 0 turns a cap off.
        max_streams: Some(env_or("MAX_STREAMS", defaults.max_streams.unwrap_or(0)))
            .filter(|&max| max > 0),
        max_streams_per_client: Some(env_or(
            "MAX_STREAMS_PER_CLIENT",
            defaults.max_streams_per_client.unwrap_or(0),
        ))
        .filter(|&max| max > 0),
        claim_idle: Duration::from_secs(env_or("CLAIM_IDLE_SECS", defaults.claim_idle.as_secs())),
        room_idle: Duration::from_secs(env_or("ROOM_IDLE_SECS", defaults.room_idle.as_secs())),
        presence_interval: Duration::from_secs(env_or(
            "PRESENCE_INTERVAL_SECS",
            defaults.presence_interval.as_secs(),
        )),
        compression: env_or("COMPRESSION", defaults.compression),
    };

    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    let shutdown = Shutdown::new();
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let nats = std::env::var("NATS_URL").ok().filter(|url| !url.is_empty());
    let made = match (redis, nats) {
        (Some(_), Some(_)) => Err("set REDIS_URL or NATS_URL, not both".to_owned()),
        (Some(url), None) => app_on_redis(&config, &shutdown, &url).await.inspect(|_| {
            println!("hub, rooms and logins on Redis at {url}");
        }),
        (None, Some(url)) => app_on_nats(&config, &shutdown, &url).await.inspect(|_| {
            println!("hub, rooms and logins on NATS JetStream at {url}");
        }),
        (None, None) => Ok(app(&config, &shutdown)),
    };
    let (app, _chat) = match made {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on http://{}",
        listener.local_addr().unwrap_or(addr)
    );

    // SIGINT or SIGTERM ends every open stream, so the server's shutdown can return.
    shutdown.trigger_on_signal();
    // `tower_sse::serve`: a client that stops reading for 30 s is disconnected (it reconnects
    // and replays), one that sends no request head within 10 s is closed, and a shutdown waits
    // at most 4 s for the open connections.
    let server = tower_sse::serve(listener, app)
        .write_timeout(Duration::from_secs(30))
        .header_read_timeout(Duration::from_secs(10))
        .shutdown(&shutdown)
        .grace(Duration::from_secs(4));
    if let Err(err) = server.await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
    println!("stopped");
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tower-sse chat</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  fieldset { margin-bottom: 1rem; }
  #status, #dm-status { font-weight: bold; }
  #notice { color: #a40; }
  ul { list-style: none; padding: 0; }
  li { padding: .15rem 0; border-bottom: 1px solid #eee; }
  .who { font-weight: bold; }
  .error { color: #c00; }
</style>
</head>
<body>
<h1>tower-sse chat</h1>
<fieldset>
  <legend>You</legend>
  <input id="user" placeholder="your name" maxlength="64">
  <button id="login">Log in for direct messages</button>
  direct messages: <span id="dm-status">off</span>
</fieldset>
<fieldset>
  <legend>Room</legend>
  <button id="create">Create a room</button>
  or join <input id="join-id" placeholder="room id"> <button id="join">Join</button>
  <p>Room: <a id="room-link" href="#"><span id="room"></span></a>, status: <span id="status">no room</span>
     <span id="notice"></span></p>
  <form id="send-form"><input id="text" placeholder="message" size="50"> <button id="send">Send</button></form>
  <ul id="messages"></ul>
</fieldset>
<fieldset>
  <legend>Direct messages</legend>
  <form id="dm-form"><input id="dm-to" placeholder="to user"> <input id="dm-text" placeholder="message" size="30">
    <button id="dm-send">Send</button></form>
  <ul id="dms"></ul>
</fieldset>
<p id="error" class="error"></p>
<script>
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$('user').value = params.get('user') || localStorage.getItem('chat-user') || '';

function showError(text) { $('error').textContent = text; }

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(json.error || `HTTP ${res.status}`);
  return json;
}

// One EventSource that survives dropped connections. While the browser retries on its own
// (readyState CONNECTING) it sends Last-Event-ID itself. If it gives up (CLOSED), a new
// EventSource is made that carries the last id in the `lastEventId` query parameter, so the
// server replays exactly what was missed: no gap, no duplicate, nothing to dedupe here.
function follow(url, statuses, handlers, from = '') {
  let source, lastId = from, stopped = false;
  const say = (text) => { for (const s of statuses) s.textContent = text; };
  function connect() {
    if (stopped) return;
    say('connecting');
    const sep = url.includes('?') ? '&' : '?';
    const u = lastId ? `${url}${sep}lastEventId=${encodeURIComponent(lastId)}` : url;
    source = new EventSource(u);
    source.onopen = () => {
      say('open');
      for (const s of statuses) s.dataset.opens = Number(s.dataset.opens || 0) + 1;
    };
    for (const [type, handle] of Object.entries(handlers)) {
      source.addEventListener(type, (e) => {
        if (e.lastEventId) lastId = e.lastEventId;
        handle(e);
      });
    }
    source.addEventListener('shutdown', () => say('server stopping'));
    source.onerror = async () => {
      say('reconnecting');
      if (source.readyState !== EventSource.CLOSED) return;
      source.close();
      // EventSource cannot tell why it failed: ask once. A 4xx (no such room, not logged in)
      // is final, but a 429 (too many streams from here) is retried after its Retry-After;
      // anything else (server restarting, 503) is retried.
      try {
        const ctl = new AbortController();
        const res = await fetch(u, { headers: { Accept: 'text/event-stream' }, signal: ctl.signal });
        ctl.abort();
        if (res.status === 429) {
          say('too many streams: waiting');
          const wait = Number(res.headers.get('retry-after')) || 5;
          setTimeout(connect, wait * 1000);
          return;
        }
        if (res.status >= 400 && res.status < 500) {
          say(res.status === 404 ? 'not found' : `refused (${res.status})`);
          stopped = true;
          return;
        }
      } catch (_) { /* unreachable: retry */ }
      setTimeout(connect, 1000);
    };
  }
  connect();
  return { stop() { stopped = true; source.close(); return lastId; } };
}

function addLine(list, cls, id, who, text, ts) {
  const li = document.createElement('li');
  li.className = cls;
  li.dataset.id = id;
  li.dataset.text = text;
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = who;
  li.append(name, `: ${text}`);
  li.title = new Date(ts).toISOString();
  list.append(li);
  while (list.children.length > 500) list.firstChild.remove();
}

// One stream for the page: its room and, once logged in, its direct messages
// (`/rooms/events?room=R&user=U`, one cursor for both). Changing either makes the stream again
// from the last id it saw, so nothing is missed or repeated.
let room = null, me = null, stream = null;
function reconnect() {
  const from = stream ? stream.stop() : '';
  stream = null;
  const handlers = {
    message: (e) => {
      const m = JSON.parse(e.data);
      addLine($('messages'), 'msg', e.lastEventId, m.user, m.text, m.ts);
    },
    direct: (e) => {
      const m = JSON.parse(e.data);
      addLine($('dms'), 'dm', e.lastEventId, m.from, m.text, m.ts);
    },
    'history-lost': (e) => { $('notice').textContent = `(${e.data})`; },
  };
  if (room) {
    const q = new URLSearchParams({ room });
    if (me) q.set('user', me);
    const statuses = me ? [$('status'), $('dm-status')] : [$('status')];
    stream = follow(`/rooms/events?${q}`, statuses, handlers, from);
  } else if (me) {
    stream = follow(`/users/${encodeURIComponent(me)}/events`, [$('dm-status')], handlers, from);
  }
}

function openRoom(id) {
  room = id;
  $('room').textContent = id;
  $('room-link').href = `/?room=${encodeURIComponent(id)}`;
  $('messages').replaceChildren();
  $('notice').textContent = '';
  const p = new URLSearchParams(location.search);
  p.set('room', id);
  history.replaceState(null, '', `?${p}`);
  // Another room: its own history, not the last one's cursor.
  stream?.stop();
  stream = null;
  reconnect();
}

$('login').onclick = async () => {
  try {
    const user = $('user').value.trim();
    const login = await post('/login', { user });
    localStorage.setItem('chat-user', login.user);
    me = login.user;
    reconnect();
    showError('');
  } catch (err) { showError(`login: ${err.message}`); }
};

$('create').onclick = async () => {
  try { openRoom((await post('/rooms', {})).room); showError(''); }
  catch (err) { showError(`create: ${err.message}`); }
};
$('join').onclick = () => { const id = $('join-id').value.trim(); if (id) openRoom(id); };

$('send-form').onsubmit = async (e) => {
  e.preventDefault();
  if (!room) return showError('join a room first');
  try {
    await post(`/rooms/${encodeURIComponent(room)}/messages`, { user: $('user').value, text: $('text').value });
    $('text').value = '';
    showError('');
  } catch (err) { showError(`send: ${err.message}`); }
};

$('dm-form').onsubmit = async (e) => {
  e.preventDefault();
  const to = $('dm-to').value.trim();
  try {
    await post(`/users/${encodeURIComponent(to)}/messages`, { from: $('user').value, text: $('dm-text').value });
    $('dm-text').value = '';
    addLine($('dms'), 'dm-sent', '', `to ${to}`, '(sent)', Date.now());
    showError('');
  } catch (err) { showError(`direct message: ${err.message}`); }
};

if (params.get('room')) openRoom(params.get('room'));
</script>
</body>
</html>
"##;
