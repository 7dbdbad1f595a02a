//! A [Mercure](https://mercure.rocks) hub on `tower_sse::hub::Hub`: subscriptions with
//! `exact` and URL Pattern matchers on one stream, publication, JWT access tokens, private
//! updates (re-authorized on replay), `Last-Event-ID` reconciliation, and, with `REDIS_URL` or
//! `NATS_URL`, several processes that act as one hub; subscription events, the subscription
//! API, CORS for listed origins and a debugging page.
//!
//! Run it with
//!
//! ```text
//! MERCURE_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!' cargo run --example mercure
//! ```
//!
//! and open <http://127.0.0.1:3080/> (a page that subscribes and publishes), or subscribe with
//! `curl -N 'http://127.0.0.1:3080/.well-known/mercure?match=https://example.com/books/1'`.
//!
//! # Environment
//!
//! - `ADDR`: where to listen (default `127.0.0.1:3080`).
//! - `MERCURE_JWT_KEY`: the key of both roles' tokens; or `MERCURE_PUBLISHER_JWT_KEY` and
//!   `MERCURE_SUBSCRIBER_JWT_KEY` (each falls back on `MERCURE_JWT_KEY`). A secret means
//!   `HS256`; a PEM public key means `RS256`/`PS256` (RSA), `ES256`/`ES384` (EC) or `EdDSA`
//!   (Ed25519). One of them must be set.
//! - `MERCURE_ISSUER`: the trusted issuer, `iss` must equal it (default `https://localhost`).
//! - `MERCURE_AUDIENCE`: the hub's resource identifier, `aud` must hold it (default
//!   `https://localhost/.well-known/mercure`).
//! - `MERCURE_HUB_URL`: the hub's URL, the base of relative topics and URL patterns and of the
//!   reserved namespace (default: `MERCURE_AUDIENCE`).
//! - `MERCURE_COOKIE_NAME`: the cookie that carries a token when there is no `Authorization`
//!   header (default `__Secure-mercure_access_token`).
//! - `MERCURE_CORS_ORIGINS`: origins (comma-separated, exact) allowed to subscribe, publish
//!   and read the subscription API from a browser, with credentials; none by default (same
//!   origin only). `*` is not accepted: the cookie makes every request credentialed.
//! - `KEEP_ALIVE_SECS`: keep-alive comment interval (default 15).
//! - `PRESENCE_INTERVAL_MS`: with a broker, how often each process tells the others it is
//!   alive (default 5000); a process silent for three intervals is gone, and its subscriptions
//!   expire (announced as ended by one live process).
//! - `MAX_LIFETIME_SECS`: the longest a subscription stays open, whatever its token (default
//!   3600); a stream with a token also ends at the token's `exp`.
//! - `MAX_CONNECTIONS`: the most subscriptions open at once in the process; more are answered
//!   `429` (default 10,000). This also bounds the distinct URL patterns every publication is
//!   matched against.
//! - `REDIS_URL` or `NATS_URL`: the hub on Redis Streams (keys `mercure:*`) or NATS JetStream
//!   (stream `MERCURE`, subjects `mercure.>`), so several processes act as one.
//!
//! # Protocol
//!
//! - `GET /.well-known/mercure?match=<topic>&match_urlpattern=<pattern>&match=*…`: one SSE
//!   stream of every update whose topics (canonical or alternate) match one of the matchers,
//!   as one hub subscription (up to 32 matchers). `400` for another name in the `match…`
//!   namespace, a control or format character, a malformed URL pattern, no matcher, or more
//!   than 32. Without a token: public updates only. With one (`Authorization: Bearer`, else the
//!   cookie): also the private updates whose topics it grants `subscribe` on, live and
//!   replayed. `Last-Event-ID` (header, else the `last_event_id` query parameter; `earliest`
//!   for the whole history) resumes; the response then has `Mercure-Last-Event-ID`: the id
//!   resumed after, or `earliest` when it is unknown.
//! - `POST /.well-known/mercure`, form-encoded `topic` (repeatable), `data`, `private`, `id`,
//!   `type`, `retry`: `200 text/plain` with the update's id. `400` for a missing topic, `*`,
//!   a topic in the reserved namespace (`/.well-known/mercure…`), an `id` starting with `#` or
//!   equal to `earliest`, the type `mercure`, a non-digit `retry`, control or format
//!   characters; `413` over a limit (1 MiB body, 32 topics, 1024-byte topics, 256-byte `id`
//!   and `type`); `401` without a valid token, `403` when it does not grant `publish` on every
//!   topic.
//!
//! - Active subscriptions: each matcher of each connection is announced when the stream opens
//!   and when it ends, as a private update of type `mercure` on
//!   `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` (JSON `id`, `type`,
//!   `match_type`, `match`, `subscriber`: a random `urn:uuid` per connection, `active`, and the
//!   `payload` of the token's first `subscribe` detail that matches the matcher).
//!   `GET /.well-known/mercure/subscriptions`, `…/{match_type}/{match}` and
//!   `…/{match_type}/{match}/{subscriber}` list them (`application/json`, a `Link` header with
//!   `last-event-id`) for a token that grants `subscribe` on the requested path. With a broker
//!   the events reach every process and the API lists every process's subscriptions (the
//!   crate's presence, `Hub::presence`); a crashed process's subscriptions expire after three
//!   `PRESENCE_INTERVAL_MS` and one live process announces that they ended.
//! - `GET /.well-known/oauth-protected-resource/.well-known/mercure` (the path follows
//!   `MERCURE_AUDIENCE`): RFC 9728 protected resource metadata; every `401` / `403` challenge
//!   names it in `resource_metadata`.
//! - `GET /`: a debugging page that subscribes (anonymously, or with the cookie) and publishes
//!   (with a token pasted in).
//!
//! Ids: the publisher's `id`, else a random `urn:uuid:` (an IRI, as the specification asks), on
//! every broker: Redis and NATS index them, so any process resumes from them. The response body
//! is the update's id.
//!
//! # Where it departs from the specification
//!
//! - On Redis and NATS a publisher's `id` of decimal digits alone is refused (`400`): those
//!   spell the brokers' positions.
//! - A `Last-Event-ID` that several updates share resumes after the first of them (duplicates
//!   rather than a gap).
//! - With a broker, the subscription API is eventually consistent: a subscription made on
//!   another process is listed one broker round trip later.

mod app;
mod auth;
mod presence;
mod topic;

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tower_sse::{
    Shutdown,
    hub::{Hub, NatsBroker, RedisBackend},
};
use url::Url;

use crate::{
    app::Config,
    auth::{Auth, Verifier},
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| fail(&format!("{name}={value:?} is not valid"))),
        Err(_) => default,
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

fn verifier(role: &str) -> Verifier {
    let value = env(role)
        .or_else(|| env("MERCURE_JWT_KEY"))
        .unwrap_or_else(|| fail(&format!("set MERCURE_JWT_KEY (or {role})")));
    Verifier::from_config(&value).unwrap_or_else(|err| fail(&format!("{role}: {err}")))
}

fn config() -> Config {
    let audience =
        env("MERCURE_AUDIENCE").unwrap_or_else(|| "https://localhost/.well-known/mercure".into());
    let hub_url = env("MERCURE_HUB_URL").unwrap_or_else(|| audience.clone());
    let hub = Url::parse(&hub_url)
        .unwrap_or_else(|err| fail(&format!("MERCURE_HUB_URL={hub_url:?}: {err}")));
    Config {
        auth: Auth {
            publisher: verifier("MERCURE_PUBLISHER_JWT_KEY"),
            subscriber: verifier("MERCURE_SUBSCRIBER_JWT_KEY"),
            issuer: env("MERCURE_ISSUER").unwrap_or_else(|| "https://localhost".into()),
            audience,
            hub,
            cookie: env("MERCURE_COOKIE_NAME")
                .unwrap_or_else(|| "__Secure-mercure_access_token".into()),
        },
        keep_alive: Duration::from_secs(env_or("KEEP_ALIVE_SECS", 15)),
        max_lifetime: Duration::from_secs(env_or("MAX_LIFETIME_SECS", 3600)),
        max_connections: env_or("MAX_CONNECTIONS", 10_000),
        cors_origins: env("MERCURE_CORS_ORIGINS")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                if origin == "*" {
                    fail("MERCURE_CORS_ORIGINS: list origins, not `*`");
                }
                origin.parse().unwrap_or_else(|_| {
                    fail(&format!("MERCURE_CORS_ORIGINS: bad origin {origin:?}"))
                })
            })
            .collect(),
    }
}

async fn hub() -> Result<Hub, String> {
    let builder = || {
        Hub::builder()
            .presence_interval(Duration::from_millis(env_or("PRESENCE_INTERVAL_MS", 5000)))
    };
    match (env("REDIS_URL"), env("NATS_URL")) {
        (Some(_), Some(_)) => Err("set REDIS_URL or NATS_URL, not both".into()),
        (Some(url), None) => {
            let backend = RedisBackend::connect(&url)
                .await
                .map_err(|err| format!("cannot use Redis at {url:?}: {err}"))?
                .key_prefix("mercure:");
            println!("hub on Redis at {url}");
            Ok(builder().redis(backend).build())
        }
        (None, Some(url)) => {
            let broker = NatsBroker::connect(&url)
                .await
                .map_err(|err| format!("cannot use NATS at {url:?}: {err}"))?
                .stream_name("MERCURE")
                .subject_prefix("mercure");
            println!("hub on NATS JetStream at {url}");
            Ok(builder().nats(broker).build())
        }
        (None, None) => Ok(builder().build()),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = env_or("ADDR", SocketAddr::from(([127, 0, 0, 1], 3080)));
    let config = config();
    let hub = hub().await.unwrap_or_else(|err| {
        eprintln!("error: {err}");
        std::process::exit(1);
    });
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|err| {
        eprintln!("error: cannot listen on {addr}: {err}");
        std::process::exit(1);
    });
    let shutdown = Shutdown::new();
    // Topics come and go (one per subscription event): drop those left with neither
    // subscribers nor history (kept an hour by default).
    tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                hub.purge();
            }
        }
    });
    let app = app::app(config, hub, &shutdown);
    println!(
        "listening on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    // SIGINT or SIGTERM ends every open stream, so the server's shutdown can return.
    shutdown.trigger_on_signal();
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
