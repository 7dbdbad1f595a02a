//! The `mercure` example over real TCP: the built binary (`Example::start`), one test per
//! rule of the protocol it implements: matchers on one stream, `400` / `401` / `403` / `413`,
//! publication fields, tokens (`typ`, algorithms, `iss`, `aud`, `exp`, `nbf`, header and
//! cookie), private updates live and replayed, reconciliation (`Mercure-Last-Event-ID`),
//! streams closed at the token's `exp` and after the maximum lifetime, and two processes on
//! one `redis-server` acting as one hub.
//!
//! The tests run the built binary: `cargo test` builds it, a narrower `cargo test --test
//! mercure` does not rebuild it (run `cargo build --example mercure` first).
//!
//! "Not received" is always shown by a later public marker arriving first: the hub keeps one
//! order per stream, so nothing waits for an event that might come.

mod support;

// The example's pure parts, with their unit tests (reserved namespace, characters, URL
// patterns, form parsing).
#[path = "../examples/mercure/topic.rs"]
#[allow(dead_code, unreachable_pub)]
mod topic;

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::Example;
use tokio::time::timeout;
use tower_sse::{
    client::{Frame, MessageEvent},
    test::EventReader,
};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "test-key-for-the-mercure-example";
const ISSUER: &str = "https://localhost";
const AUDIENCE: &str = "https://localhost/.well-known/mercure";
const HUB: &str = "/.well-known/mercure";
const LAST_ID: &str = "mercure-last-event-id";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start(env: &[(&str, &str)]) -> Example {
    let mut all = vec![("MERCURE_JWT_KEY", KEY), ("RUST_LOG", "warn")];
    all.extend_from_slice(env);
    Example::start("mercure", &all).await
}

/// A grant: `(actions, [(match, match_type)])`.
fn detail(actions: &[&str], topics: &[(&str, &str)]) -> Value {
    json!({
        "type": "https://mercure.rocks/authorization-detail",
        "actions": actions,
        "topics": topics.iter().map(|(m, t)| json!({ "match": m, "match_type": t })).collect::<Vec<_>>(),
    })
}

/// Valid claims with `details`, expiring in an hour.
fn claims(details: Vec<Value>) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "test",
        "exp": now() + 3600,
        "authorization_details": details,
    })
}

fn sign_with(typ: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(Some("at+jwt"), KEY, claims)
}

/// A token that may publish and receive private updates of every topic.
fn admin() -> String {
    sign(&claims(vec![detail(
        &["publish", "subscribe"],
        &[("*", "exact")],
    )]))
}

fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = timeout(WAIT, client().request(request))
        .await
        .unwrap_or_else(|_| panic!("no response to {path}"))
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = timeout(WAIT, body.collect())
        .await
        .expect("body not complete")
        .unwrap()
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Form-encodes `fields`.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| {
            let value: String =
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn publish_as(addr: SocketAddr, token: Option<&str>, fields: &[(&str, &str)]) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(bearer) = bearer.as_deref() {
        headers.push(("authorization", bearer));
    }
    call(addr, Method::POST, HUB, &headers, form(fields)).await
}

/// Publishes with the admin token; returns the id.
async fn publish(addr: SocketAddr, fields: &[(&str, &str)]) -> String {
    let reply = publish_as(addr, Some(&admin()), fields).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// An open subscription, read event by event.
struct Sub {
    status: StatusCode,
    headers: HeaderMap,
    reader: EventReader<Incoming>,
}

impl Sub {
    /// `GET /.well-known/mercure?<query>`.
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = Request::get(format!("http://{addr}{HUB}?{query}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = timeout(
            WAIT,
            client().request(request.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .expect("no response to the subscription")
        .unwrap();
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            reader: EventReader::new(body),
        }
    }

    /// Opens and checks `200`.
    async fn ok(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Self {
        let sub = Self::open(addr, query, headers).await;
        assert_eq!(sub.status, StatusCode::OK, "GET ?{query}");
        sub
    }

    async fn next(&mut self) -> MessageEvent {
        timeout(WAIT, self.reader.next_event())
            .await
            .expect("no event in time")
            .expect("the stream ended")
            .unwrap()
    }

    async fn frame(&mut self) -> Frame {
        timeout(WAIT, self.reader.next_frame())
            .await
            .expect("no frame in time")
            .expect("the stream ended")
            .unwrap()
    }

    /// The data of the next events, up to and including `marker`.
    async fn until(&mut self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            seen.push(event.data().to_owned());
            if event.data() == marker {
                return seen;
            }
        }
    }

    /// Waits for the end of the stream (skipping keep-alives).
    async fn ended(&mut self) -> bool {
        let end = timeout(Duration::from_secs(30), async {
            loop {
                match self.reader.next_frame().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
        });
        end.await.is_ok()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

fn q(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn exact_and_url_pattern_matchers_on_one_stream() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let query = format!(
        "match={}&match_urlpattern={}&match_exact=c",
        q("a"),
        q("https://example.com/books/:id")
    );
    let mut sub = Sub::ok(addr, &query, &[]).await;
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    publish(addr, &[("topic", "b"), ("data", "not matched")]).await;
    publish(
        addr,
        &[("topic", "https://example.com/books/1/x"), ("data", "no")],
    )
    .await;
    let a = publish(addr, &[("topic", "a"), ("data", "exact")]).await;
    publish(
        addr,
        &[
            ("topic", "https://example.com/books/7"),
            ("data", "pattern"),
        ],
    )
    .await;
    publish(addr, &[("topic", "c"), ("data", "match_exact")]).await;
    // An alternate topic matches too, and an update that matches twice comes once.
    publish(
        addr,
        &[
            ("topic", "z"),
            ("topic", "a"),
            ("topic", "c"),
            ("data", "alternate"),
        ],
    )
    .await;
    let first = sub.next().await;
    assert_eq!((first.data(), first.id()), ("exact", a.as_str()));
    assert_eq!(
        sub.until("alternate").await,
        ["pattern", "match_exact", "alternate"]
    );
}

#[tokio::test]
async fn wildcard_and_relative_url_patterns() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let mut all = Sub::ok(addr, "match_urlpattern=*", &[]).await;
    // Relative patterns and topics are resolved against the hub's URL.
    let mut relative = Sub::ok(addr, &format!("match_urlpattern={}", q("/books/:id")), &[]).await;
    publish(addr, &[("topic", "anything"), ("data", "1")]).await;
    publish(
        addr,
        &[("topic", "https://localhost/books/9"), ("data", "2")],
    )
    .await;
    publish(addr, &[("topic", "/books/10"), ("data", "3")]).await;
    assert_eq!(all.until("3").await, ["1", "2", "3"]);
    assert_eq!(relative.until("3").await, ["2", "3"]);
}

#[tokio::test]
async fn malformed_subscriptions_are_400() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let too_many = (0..33)
        .map(|i| format!("match=t{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let long = format!("match={}", "x".repeat(1025));
    for query in [
        "",
        "topic=a",
        "matchx=a",
        "Match=a",
        "MATCH_EXACT=a",
        "match_regex=a",
        "match=a&match_=b",
        "match=",
        "match=a%00b",
        "match=a%0Ab",
        "match=a%C2%85",
        "match=a%E2%80%8Bb",
        "match=%FF",
        "match_urlpattern=https%3A%2F%2Fexample.com%2F(a",
        too_many.as_str(),
        long.as_str(),
    ] {
        let reply = call(addr, Method::GET, &format!("{HUB}?{query}"), &[], "").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "?{query}: {}",
            reply.body
        );
    }
    // 32 matchers are fine; names outside the `match` namespace are ignored.
    let most = (0..32)
        .map(|i| format!("match=t{i}"))
        .collect::<Vec<_>>()
        .join("&");
    Sub::ok(addr, &most, &[]).await;
    Sub::ok(addr, "match=a&other=1&topic=b", &[]).await;
}

#[tokio::test]
async fn publication_fields() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let mut sub = Sub::ok(addr, "match=t", &[]).await;
    let reply = publish_as(
        addr,
        Some(&admin()),
        &[
            ("topic", "t"),
            ("id", "urn:uuid:1"),
            ("type", "book"),
            ("retry", "2500"),
            ("data", "a\rb\r\nc\nd"),
            ("unknown", "ignored"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(reply.body, "urn:uuid:1");
    assert_eq!(sub.frame().await, Frame::Retry(Duration::from_millis(2500)));
    let event = sub.next().await;
    assert_eq!(
        (event.event(), event.id(), event.data()),
        ("book", "urn:uuid:1", "a\nb\nc\nd")
    );
    // Without an id, the hub gives one, an IRI (`urn:uuid:`, version 4), and says which.
    let id = publish(addr, &[("topic", "t"), ("data", "x")]).await;
    assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
    assert_eq!(id.as_bytes()[23], b'4', "version 4: {id}");
    assert_eq!(sub.next().await.id(), id);
    let again = publish(addr, &[("topic", "t"), ("data", "y")]).await;
    assert_ne!(again, id, "unique");
    // It resumes like any id.
    let mut resumed = Sub::ok(addr, &format!("match=t&last_event_id={}", q(&id)), &[]).await;
    assert_eq!(resumed.header(LAST_ID), Some(id.as_str()));
    assert_eq!(resumed.next().await.id(), again);
}

#[tokio::test]
async fn malformed_publications_are_400_and_limits_413() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let token = admin();
    let bad: &[&[(&str, &str)]] = &[
        &[("data", "no topic")],
        &[("topic", "")],
        &[("topic", "*")],
        &[("topic", "ok"), ("topic", "*")],
        &[("topic", "a\u{1}b")],
        &[("topic", "a\u{202e}b")],
        &[("topic", "/.well-known/mercure")],
        &[("topic", "/.well-known/mercure/subscriptions/x/y")],
        &[("topic", "https://other.example/.well-known/mercure/x")],
        &[("topic", "/.well-known/%6Dercure/x")],
        &[("topic", "/.well-known/mercure/../mercure/x")],
        &[("topic", "/x/%2e%2e/.well-known/mercure")],
        &[("topic", "t"), ("id", "#1")],
        &[("topic", "t"), ("id", "earliest")],
        &[("topic", "t"), ("id", "a\nb")],
        &[("topic", "t"), ("id", "a\u{feff}")],
        &[("topic", "t"), ("type", "mercure")],
        &[("topic", "t"), ("type", "a\u{7f}")],
        &[("topic", "t"), ("retry", "1s")],
        &[("topic", "t"), ("retry", "-1")],
    ];
    for fields in bad {
        let reply = publish_as(addr, Some(&token), fields).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{fields:?}");
    }
    // Reserved-namespace topics are refused whatever the token, even with none.
    let reply = publish_as(addr, None, &[("topic", "/.well-known/mercure/x")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Not UTF-8.
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Bearer {token}")),
        ],
        "topic=%FF",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let topics: Vec<(&str, &str)> = (0..33).map(|_| ("topic", "t")).collect();
    let long_topic = "t".repeat(1025);
    let long_id = "i".repeat(257);
    let big_data = "d".repeat(1024 * 1024);
    let large: &[&[(&str, &str)]] = &[
        &topics,
        &[("topic", &long_topic)],
        &[("topic", "t"), ("id", &long_id)],
        &[("topic", "t"), ("retry", "99999999999999999999999")],
        &[("topic", "t"), ("data", &big_data)],
    ];
    for fields in large {
        let reply = publish_as(addr, Some(&token), fields).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Nothing above was dispatched.
    let mut sub = Sub::ok(addr, "match=*&last_event_id=earliest", &[]).await;
    publish(addr, &[("topic", "t"), ("data", "only")]).await;
    assert_eq!(sub.next().await.data(), "only");
}

/// Where the protected resource metadata of the default audience is.
const METADATA: &str = "https://localhost/.well-known/oauth-protected-resource/.well-known/mercure";

/// The expected `WWW-Authenticate` challenge.
fn bearer(error: Option<&str>) -> String {
    match error {
        Some(error) => format!("Bearer error=\"{error}\", resource_metadata=\"{METADATA}\""),
        None => format!("Bearer resource_metadata=\"{METADATA}\""),
    }
}

/// The `WWW-Authenticate` header of a reply.
fn challenge(reply: &Reply) -> &str {
    reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap()
}

#[tokio::test]
async fn publishing_needs_a_valid_token() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let fields = [("topic", "t"), ("data", "x")];

    let reply = publish_as(addr, None, &fields).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&reply), bearer(None));

    let everything = || vec![detail(&["publish"], &[("*", "exact")])];
    let mut no_exp = claims(everything());
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_iss = claims(everything());
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut expired = claims(everything());
    expired["exp"] = json!(now() - 10);
    let mut not_yet = claims(everything());
    not_yet["nbf"] = json!(now() + 600);
    let mut other_issuer = claims(everything());
    other_issuer["iss"] = json!("https://evil.example");
    let mut other_audience = claims(everything());
    other_audience["aud"] = json!(["https://other.example/.well-known/mercure"]);
    let mut bad_details = claims(everything());
    bad_details["authorization_details"][0]["topics"][0]["match_type"] = json!("regex");
    let mut bad_actions = claims(everything());
    bad_actions["authorization_details"][0]["actions"] = json!([]);
    let unsigned = {
        let header = b64(br#"{"alg":"none","typ":"at+jwt"}"#);
        let payload = b64(claims(everything()).to_string().as_bytes());
        format!("{header}.{payload}.")
    };
    let good = claims(everything());
    let invalid = [
        sign_with(Some("at+jwt"), "another key", &good),
        sign_with(Some("JWT"), KEY, &good),
        sign_with(None, KEY, &good),
        unsigned,
        sign(&no_exp),
        sign(&no_iss),
        sign(&expired),
        sign(&not_yet),
        sign(&other_issuer),
        sign(&other_audience),
        sign(&bad_details),
        sign(&bad_actions),
        "not.a.token".to_owned(),
    ];
    for (i, token) in invalid.iter().enumerate() {
        let reply = publish_as(addr, Some(token), &fields).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "token {i}");
        assert_eq!(
            challenge(&reply),
            bearer(Some("invalid_token")),
            "token {i}"
        );
    }

    // `application/at+jwt`, in any case, and `aud` as an array holding the hub's.
    let mut listed = claims(everything());
    listed["aud"] = json!(["https://other.example", AUDIENCE]);
    let reply = publish_as(
        addr,
        Some(&sign_with(Some("application/AT+JWT"), KEY, &listed)),
        &fields,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    // A grant on other topics: 403, and nothing is dispatched even when one topic is granted.
    let mut sub = Sub::ok(addr, "match=t&match=u", &[]).await;
    let only_u = sign(&claims(vec![detail(&["publish"], &[("u", "exact")])]));
    let subscribe_only = sign(&claims(vec![detail(&["subscribe"], &[("*", "exact")])]));
    for token in [&only_u, &subscribe_only] {
        let reply = publish_as(
            addr,
            Some(token),
            &[("topic", "t"), ("topic", "u"), ("data", "no")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(challenge(&reply), bearer(Some("insufficient_scope")));
    }
    // A URL pattern grant, and an unknown action that grants nothing.
    let pattern = sign(&claims(vec![
        detail(
            &["publish", "fly"],
            &[("https://example.com/u/:id", "urlpattern")],
        ),
        detail(&["fly"], &[("*", "exact")]),
    ]));
    let reply = publish_as(addr, Some(&pattern), &[("topic", "t"), ("data", "no")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = publish_as(
        addr,
        Some(&pattern),
        &[("topic", "https://example.com/u/1"), ("data", "x")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = publish_as(addr, Some(&only_u), &[("topic", "u"), ("data", "yes")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sub.next().await.data(), "yes");

    // Not a Bearer header: 400 `invalid_request`.
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ],
        form(&fields),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(challenge(&reply), bearer(Some("invalid_request")));
}

#[tokio::test]
async fn token_from_the_header_else_the_cookie() {
    let hub = start(&[("MERCURE_COOKIE_NAME", "hub_token")]).await;
    let addr = hub.addr();
    let body = form(&[("topic", "t"), ("data", "x")]);
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let cookie = format!("other=1; hub_token={}", admin());
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[form_type, ("cookie", &cookie)],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // The scheme in any case.
    let bearer = format!("bEaReR {}", admin());
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[form_type, ("authorization", &bearer)],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // With a header, the cookie is ignored.
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[
            form_type,
            ("authorization", "Bearer nope"),
            ("cookie", &cookie),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Another cookie name is not read.
    let wrong = format!("__Secure-mercure_access_token={}", admin());
    let reply = call(
        addr,
        Method::POST,
        HUB,
        &[form_type, ("cookie", &wrong)],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn subscribing_with_a_bad_token_is_401() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let mut expired = claims(vec![]);
    expired["exp"] = json!(now() - 1);
    for token in [
        sign(&expired),
        sign_with(Some("at+jwt"), "wrong", &claims(vec![])),
    ] {
        let sub = Sub::open(
            addr,
            "match=t",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(sub.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            sub.header("www-authenticate"),
            Some(bearer(Some("invalid_token")).as_str())
        );
        let cookie = format!("__Secure-mercure_access_token={token}");
        let sub = Sub::open(addr, "match=t", &[("cookie", &cookie)]).await;
        assert_eq!(sub.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn private_updates_reach_only_granted_subscribers() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let bearer = |token: String| format!("Bearer {token}");
    let books = bearer(sign(&claims(vec![detail(
        &["subscribe"],
        &[("https://example.com/books/1", "exact")],
    )])));
    let user = bearer(sign(&claims(vec![detail(
        &["subscribe"],
        &[("https://example.com/users/42/*", "urlpattern")],
    )])));
    let other = bearer(sign(&claims(vec![detail(
        &["subscribe"],
        &[("https://example.com/books/2", "exact")],
    )])));
    let publisher_only = bearer(sign(&claims(vec![detail(&["publish"], &[("*", "exact")])])));
    let query = format!("match_urlpattern={}", q("https://example.com/books/:id"));
    let mut anonymous = Sub::ok(addr, &query, &[]).await;
    let mut granted = Sub::ok(addr, &query, &[("authorization", &books)]).await;
    let mut by_alternate = Sub::ok(addr, &query, &[("authorization", &user)]).await;
    let mut elsewhere = Sub::ok(addr, &query, &[("authorization", &other)]).await;
    let mut no_subscribe = Sub::ok(addr, &query, &[("authorization", &publisher_only)]).await;
    let cookie = format!("__Secure-mercure_access_token={}", &books[7..]);
    let mut by_cookie = Sub::ok(addr, &query, &[("cookie", &cookie)]).await;

    publish(
        addr,
        &[
            ("topic", "https://example.com/books/1"),
            ("private", ""),
            ("data", "secret"),
        ],
    )
    .await;
    publish(
        addr,
        &[
            ("topic", "https://example.com/books/3"),
            ("topic", "https://example.com/users/42/books/3"),
            ("private", "on"),
            ("data", "for 42"),
        ],
    )
    .await;
    publish(
        addr,
        &[("topic", "https://example.com/books/9"), ("data", "public")],
    )
    .await;

    assert_eq!(anonymous.until("public").await, ["public"]);
    assert_eq!(granted.until("public").await, ["secret", "public"]);
    assert_eq!(by_cookie.until("public").await, ["secret", "public"]);
    assert_eq!(by_alternate.until("public").await, ["for 42", "public"]);
    assert_eq!(elsewhere.until("public").await, ["public"]);
    assert_eq!(no_subscribe.until("public").await, ["public"]);
}

#[tokio::test]
async fn replayed_private_updates_are_authorized_again() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let before = publish(addr, &[("topic", "t"), ("data", "before")]).await;
    publish(
        addr,
        &[("topic", "t"), ("private", "on"), ("data", "secret")],
    )
    .await;
    publish(
        addr,
        &[("topic", "u"), ("private", "on"), ("data", "other secret")],
    )
    .await;
    publish(addr, &[("topic", "t"), ("data", "public")]).await;

    let granted = format!(
        "Bearer {}",
        sign(&claims(vec![detail(&["subscribe"], &[("t", "exact")])]))
    );
    let query = format!("match=t&match=u&last_event_id={}", q(&before));
    let mut anonymous = Sub::ok(addr, &query, &[]).await;
    let mut reader = Sub::ok(addr, &query, &[("authorization", &granted)]).await;
    let mut earliest = Sub::ok(
        addr,
        "match=t&match=u&last_event_id=earliest",
        &[("authorization", &granted)],
    )
    .await;
    assert_eq!(anonymous.until("public").await, ["public"]);
    assert_eq!(reader.until("public").await, ["secret", "public"]);
    assert_eq!(
        earliest.until("public").await,
        ["before", "secret", "public"]
    );
}

#[tokio::test]
async fn reconciliation_and_mercure_last_event_id() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    // No cursor asked for: no header.
    let live = Sub::ok(addr, "match=t", &[]).await;
    assert_eq!(live.header(LAST_ID), None);
    // An empty history: `earliest`.
    let empty = Sub::ok(addr, "match=t&last_event_id=nothing-yet", &[]).await;
    assert_eq!(empty.header(LAST_ID), Some("earliest"));

    let one = publish(addr, &[("topic", "t"), ("id", "one"), ("data", "1")]).await;
    let two = publish(addr, &[("topic", "t"), ("data", "2")]).await;
    publish(addr, &[("topic", "t"), ("data", "3")]).await;

    // A known id: the events after it, and the id in the header.
    let mut sub = Sub::ok(addr, &format!("match=t&last_event_id={}", q(&one)), &[]).await;
    assert_eq!(sub.header(LAST_ID), Some(one.as_str()));
    assert_eq!(sub.until("3").await, ["2", "3"]);
    // The header wins over the query.
    let mut sub = Sub::ok(
        addr,
        "match=t&last_event_id=one",
        &[("last-event-id", &two)],
    )
    .await;
    assert_eq!(sub.header(LAST_ID), Some(two.as_str()));
    assert_eq!(sub.until("3").await, ["3"]);
    // An unknown id: `earliest`, and everything retained.
    let mut sub = Sub::ok(addr, "match=t", &[("last-event-id", "gone")]).await;
    assert_eq!(sub.header(LAST_ID), Some("earliest"));
    assert_eq!(sub.until("3").await, ["1", "2", "3"]);
    // A non-ASCII id (an IRI), sent as UTF-8 bytes as browsers do.
    let iri = publish(
        addr,
        &[
            ("topic", "t"),
            ("id", "https://example.com/é/1"),
            ("data", "4"),
        ],
    )
    .await;
    publish(addr, &[("topic", "t"), ("data", "5")]).await;
    let request = Request::get(format!("http://{addr}{HUB}?match=t"))
        .header(
            "last-event-id",
            http::HeaderValue::from_bytes(iri.as_bytes()).unwrap(),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = timeout(WAIT, client().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[LAST_ID].as_bytes(), iri.as_bytes());
    let mut reader = EventReader::new(response.into_body());
    let next = timeout(WAIT, reader.next_event())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.data(), "5");
    // `earliest` itself.
    let mut sub = Sub::ok(addr, "match=t&last_event_id=earliest", &[]).await;
    assert_eq!(sub.header(LAST_ID), Some("earliest"));
    assert_eq!(sub.until("5").await, ["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_stream_closes_at_its_tokens_exp() {
    // The maximum lifetime is an hour: only `exp` can end this stream.
    let hub = start(&[("KEEP_ALIVE_SECS", "1")]).await;
    let addr = hub.addr();
    let mut short = claims(vec![detail(&["subscribe"], &[("*", "exact")])]);
    short["exp"] = json!(now() + 5);
    let bearer = format!("Bearer {}", sign(&short));
    let mut sub = Sub::ok(addr, "match=t", &[("authorization", &bearer)]).await;
    let mut anonymous = Sub::ok(addr, "match=t", &[]).await;
    publish(addr, &[("topic", "t"), ("data", "before exp")]).await;
    assert_eq!(sub.next().await.data(), "before exp");
    assert!(sub.ended().await, "the stream outlived its token");
    // The anonymous stream is still open.
    publish(addr, &[("topic", "t"), ("data", "after exp")]).await;
    assert_eq!(
        anonymous.until("after exp").await,
        ["before exp", "after exp"]
    );
}

#[tokio::test]
async fn a_stream_closes_after_the_maximum_lifetime() {
    let hub = start(&[("MAX_LIFETIME_SECS", "3"), ("KEEP_ALIVE_SECS", "1")]).await;
    let addr = hub.addr();
    let mut sub = Sub::ok(addr, "match=t", &[]).await;
    publish(addr, &[("topic", "t"), ("data", "x")]).await;
    assert_eq!(sub.next().await.data(), "x");
    assert!(sub.ended().await, "the stream outlived MAX_LIFETIME_SECS");
}

#[tokio::test]
async fn an_es256_public_key() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let hub = start(&[("MERCURE_PUBLISHER_JWT_KEY", &pair.public_key_pem())]).await;
    let addr = hub.addr();
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    let grants = claims(vec![detail(&["publish"], &[("*", "exact")])]);
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let es256 = jsonwebtoken::encode(&header, &grants, &key).unwrap();
    let reply = publish_as(addr, Some(&es256), &[("topic", "t"), ("data", "x")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // HS256 with the public key as the secret: algorithm confusion, refused.
    let confused = sign_with(Some("at+jwt"), &pair.public_key_pem(), &grants);
    let reply = publish_as(addr, Some(&confused), &[("topic", "t"), ("data", "x")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The subscriber key is still the HS256 one.
    let hs = format!("Bearer {}", sign(&claims(vec![])));
    let sub = Sub::open(addr, "match=t", &[("authorization", &hs)]).await;
    assert_eq!(sub.status, StatusCode::OK);
}

#[tokio::test]
async fn two_processes_on_one_redis_act_as_one() {
    let Some(redis) = support::redis::RedisServer::start().await else {
        return;
    };
    two_processes(&[("REDIS_URL", &redis.url())]).await;
}

/// Two hubs on one broker: publish on A, receive and resume on B, private updates private,
/// subscription events across, the publisher's ids (and the hub's `urn:uuid:` ones) honoured
/// and resumable on the other process.
async fn two_processes(broker: &[(&str, &str)]) {
    let mut env = broker.to_vec();
    env.push(("PRESENCE_INTERVAL_MS", "200"));
    let a = start(&env).await;
    let b = start(&env).await;
    let granted = format!(
        "Bearer {}",
        sign(&claims(vec![detail(&["subscribe"], &[("t", "exact")])]))
    );
    // Subscription events are updates too: a subscription on B is announced on A.
    let mut watching_a = Sub::ok(
        a.addr(),
        &format!(
            "match_urlpattern={}",
            q("/.well-known/mercure/subscriptions/*")
        ),
        &[("authorization", &watcher())],
    )
    .await;
    let mut on_b = Sub::ok(b.addr(), "match=t", &[]).await;
    assert_eq!(
        subscription_event(&mut watching_a, "t").await["active"],
        true
    );
    let mut private_on_b = Sub::ok(b.addr(), "match=t", &[("authorization", &granted)]).await;
    let first = publish(
        a.addr(),
        &[("topic", "t"), ("id", "urn:example:first"), ("data", "1")],
    )
    .await;
    // The publisher's id is the event's, the same on every process.
    assert_eq!(first, "urn:example:first");
    let secret = publish(
        a.addr(),
        &[("topic", "t"), ("private", "on"), ("data", "secret")],
    )
    .await;
    assert!(secret.starts_with("urn:uuid:"), "{secret}");
    publish(a.addr(), &[("topic", "t"), ("data", "2")]).await;
    let event = on_b.next().await;
    assert_eq!((event.data(), event.id()), ("1", first.as_str()));
    assert_eq!(on_b.until("2").await, ["2"]);
    assert_eq!(private_on_b.until("2").await, ["1", "secret", "2"]);
    // Resume on the other process from an id the first one gave.
    let mut resumed = Sub::ok(b.addr(), "match=t", &[("last-event-id", &first)]).await;
    assert_eq!(
        resumed.header("mercure-last-event-id"),
        Some(first.as_str())
    );
    assert_eq!(resumed.until("2").await, ["2"]);
    let mut resumed = Sub::ok(
        b.addr(),
        "match=t",
        &[("last-event-id", &first), ("authorization", &granted)],
    )
    .await;
    assert_eq!(resumed.until("2").await, ["secret", "2"]);
    // From the hub's own id, on the other process.
    let mut resumed = Sub::ok(
        b.addr(),
        "match=t",
        &[("last-event-id", &secret), ("authorization", &granted)],
    )
    .await;
    assert_eq!(
        resumed.header("mercure-last-event-id"),
        Some(secret.as_str())
    );
    assert_eq!(resumed.until("2").await, ["2"]);

    // Presence is the union of both processes: A's subscription API lists B's subscriptions
    // (five on `t`, all on B), as B's does.
    let on_t = format!("{HUB}/subscriptions/exact/t");
    let listed = |addr| {
        let on_t = on_t.clone();
        async move {
            let reply = call(
                addr,
                Method::GET,
                &on_t,
                &[("authorization", &watcher())],
                "",
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let all: Value = serde_json::from_str(&reply.body).unwrap();
            all["subscriptions"].as_array().unwrap().clone()
        }
    };
    support::eventually("A lists B's five subscriptions", async || {
        let now = listed(a.addr()).await;
        (now.len() == 5).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
    let on_a = listed(a.addr()).await;
    assert_eq!(on_a, listed(b.addr()).await);

    // B crashes: its subscriptions expire on A (three 200 ms intervals), and A announces
    // that they ended.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let ended = loop {
        let doc = subscription_event(&mut watching_a, "t").await;
        if doc["active"] == false {
            break doc;
        }
    };
    assert!(
        on_a.iter()
            .any(|doc| doc["subscriber"] == ended["subscriber"]),
        "{ended}"
    );
    support::eventually("B's subscriptions expired on A", async || {
        let now = listed(a.addr()).await;
        now.is_empty().then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
}

/// Two processes on one `nats-server -js`, as on Redis.
#[tokio::test]
async fn two_processes_on_one_nats_act_as_one() {
    let Some(nats) = support::nats::NatsServer::start().await else {
        return;
    };
    two_processes(&[("NATS_URL", &nats.url())]).await;
}

/// `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`, each part
/// percent-encoded once.
fn subscription_topic(kind: &str, matcher: &str, subscriber: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, SET).to_string();
    format!(
        "{HUB}/subscriptions/{kind}/{}/{}",
        enc(matcher),
        enc(subscriber)
    )
}

/// The next `mercure` event about `matcher`, as JSON.
async fn subscription_event(sub: &mut Sub, matcher: &str) -> Value {
    loop {
        let event = sub.next().await;
        if event.event() != "mercure" {
            continue;
        }
        let doc: Value = serde_json::from_str(event.data()).unwrap();
        assert!(!event.id().is_empty());
        if doc["match"] == matcher {
            return doc;
        }
    }
}

/// A token that may read subscription events and the subscription API.
fn watcher() -> String {
    format!(
        "Bearer {}",
        sign(&claims(vec![detail(
            &["subscribe"],
            &[("/.well-known/mercure/subscriptions{/*}?", "urlpattern")],
        )]))
    )
}

#[tokio::test]
async fn subscription_events_announce_start_and_end() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let query = format!(
        "match_urlpattern={}&match=marker",
        q("/.well-known/mercure/subscriptions/*")
    );
    let mut watching = Sub::ok(addr, &query, &[("authorization", &watcher())]).await;
    let mut anonymous = Sub::ok(addr, &query, &[]).await;

    let payload = json!({ "tenant": "t1" });
    let mut with_payload = claims(vec![
        json!({
            "type": "https://mercure.rocks/authorization-detail",
            "actions": ["subscribe"],
            "topics": [{ "match": "https://example.com/books/:id", "match_type": "urlpattern" }],
            "payload": { "specific": true },
        }),
        json!({
            "type": "https://mercure.rocks/authorization-detail",
            "actions": ["subscribe"],
            "topics": [{ "match": "*" }],
            "payload": payload,
        }),
    ]);
    with_payload["sub"] = json!("reader");
    let bearer = format!("Bearer {}", sign(&with_payload));
    let matcher = "https://example.com/a b?c=%41";
    let subscriber = Sub::ok(
        addr,
        &format!("match={}", q(matcher)),
        &[("authorization", &bearer)],
    )
    .await;

    let joined = subscription_event(&mut watching, matcher).await;
    let id = joined["subscriber"].as_str().unwrap().to_owned();
    assert!(id.starts_with("urn:uuid:"), "{id}");
    assert_eq!(
        joined,
        json!({
            "id": subscription_topic("exact", matcher, &id),
            "type": "subscription",
            "match_type": "exact",
            "match": matcher,
            "subscriber": id,
            "active": true,
            "payload": payload,
        })
    );
    drop(subscriber);
    let left = subscription_event(&mut watching, matcher).await;
    assert_eq!(left["active"], false);
    assert_eq!(left["id"], joined["id"]);

    // A URL pattern subscription gets the payload of the first detail that matches it.
    let books = "https://example.com/books/:id";
    let _books = Sub::ok(
        addr,
        &format!("match_urlpattern={}", q(books)),
        &[("authorization", &bearer)],
    )
    .await;
    let joined = subscription_event(&mut watching, books).await;
    assert_eq!(joined["match_type"], "urlpattern");
    assert_eq!(joined["payload"], json!({ "specific": true }));

    // Private: the anonymous watcher sees none of it.
    publish(addr, &[("topic", "marker"), ("data", "marker")]).await;
    assert_eq!(anonymous.until("marker").await, ["marker"]);
}

#[tokio::test]
async fn the_subscription_api_lists_active_subscriptions() {
    let hub = start(&[]).await;
    let addr = hub.addr();
    let base = format!("{HUB}/subscriptions");
    let reply = call(addr, Method::GET, &base, &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let elsewhere = format!(
        "Bearer {}",
        sign(&claims(vec![detail(&["subscribe"], &[("books", "exact")])]))
    );
    let reply = call(
        addr,
        Method::GET,
        &base,
        &[("authorization", &elsewhere)],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(challenge(&reply), bearer(Some("insufficient_scope")));

    let mut watching = Sub::ok(
        addr,
        &format!(
            "match_urlpattern={}",
            q("/.well-known/mercure/subscriptions/*")
        ),
        &[("authorization", &watcher())],
    )
    .await;
    let _books = Sub::ok(addr, "match=books", &[]).await;
    let joined = subscription_event(&mut watching, "books").await;
    let subscriber = joined["subscriber"].as_str().unwrap();

    let auth = watcher();
    let reply = call(addr, Method::GET, &base, &[("authorization", &auth)], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let link = reply.headers[header::LINK].to_str().unwrap();
    assert!(
        link.starts_with(
            "<https://localhost/.well-known/mercure>; rel=\"mercure\"; last-event-id=\""
        ),
        "{link}"
    );
    let all: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (&all["id"], &all["type"]),
        (&json!(base), &json!("subscriptions"))
    );
    let docs = all["subscriptions"].as_array().unwrap();
    assert!(docs.contains(&joined), "{all}");
    assert_eq!(docs.len(), 2, "the watcher's and books': {all}");

    let per_matcher = format!("{base}/exact/books");
    let reply = call(
        addr,
        Method::GET,
        &per_matcher,
        &[("authorization", &auth)],
        "",
    )
    .await;
    let some: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(some["subscriptions"], json!([joined]));

    let single = joined["id"].as_str().unwrap();
    let reply = call(addr, Method::GET, single, &[("authorization", &auth)], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&reply.body).unwrap(), joined);
    let unknown = subscription_topic("exact", "books", &format!("{subscriber}0"));
    let reply = call(addr, Method::GET, &unknown, &[("authorization", &auth)], "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_debugging_page_subscribes_and_publishes_in_chromium() {
    if !support::require_chromium() {
        return;
    }
    let hub = start(&[]).await;
    let token = sign(&claims(vec![detail(
        &["publish"],
        &[("https://example.com/books/1", "exact")],
    )]));
    let out = support::run_node(
        "mercure_page.mjs",
        &[&hub.url("/"), &token],
        support::BROWSER_TIMEOUT,
    )
    .await;
    out.assert_success();
    let seen = out.json();
    let published: Vec<&str> = seen["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(published.len(), 2, "{out}");
    assert!(published.iter().all(|p| p.starts_with("200 ")), "{out}");
    let public_id = published[1].trim_start_matches("200 ");
    // The page's EventSource has no token: the private update never shows, the public one
    // does (it came after the private one, on the same stream).
    assert_eq!(
        seen["events"],
        json!([format!("message id={public_id}\nhello\nworld")]),
        "{out}"
    );
    assert_eq!(seen["state"], "open");
}

#[tokio::test]
async fn cors_for_listed_origins_only() {
    let hub = start(&[(
        "MERCURE_CORS_ORIGINS",
        "https://app.example,https://other.example",
    )])
    .await;
    let addr = hub.addr();
    let sub = Sub::ok(
        addr,
        "match=t&last_event_id=x",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        sub.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(sub.header("access-control-allow-credentials"), Some("true"));
    let exposed = sub
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("link") && exposed.contains("mercure-last-event-id"),
        "{exposed}"
    );
    let evil = Sub::ok(addr, "match=t", &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.header("access-control-allow-origin"), None);
    // A preflight for a publication with a bearer token.
    let reply = call(
        addr,
        Method::OPTIONS,
        HUB,
        &[
            ("origin", "https://other.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ],
        "",
    )
    .await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://other.example"
    );
    let allowed = reply.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // Without the setting: no CORS at all.
    let plain = start(&[]).await;
    let sub = Sub::ok(
        plain.addr(),
        "match=t",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(sub.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn protected_resource_metadata() {
    let hub = start(&[]).await;
    let path = "/.well-known/oauth-protected-resource/.well-known/mercure";
    let reply = call(hub.addr(), Method::GET, path, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap(),
        json!({
            "resource": AUDIENCE,
            "authorization_details_types_supported": ["https://mercure.rocks/authorization-detail"],
            "bearer_methods_supported": ["header"],
            "mercure_cookie": "__Secure-mercure_access_token",
            "mercure_subscriptions": true,
        })
    );
    // Another resource identifier, another place.
    let other = start(&[("MERCURE_AUDIENCE", "https://hub.example/hub")]).await;
    let reply = call(
        other.addr(),
        Method::GET,
        "/.well-known/oauth-protected-resource/hub",
        &[],
        "",
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap()["resource"],
        "https://hub.example/hub"
    );
    let reply = publish_as(other.addr(), None, &[("topic", "t")]).await;
    assert_eq!(
        challenge(&reply),
        "Bearer resource_metadata=\"https://hub.example/.well-known/oauth-protected-resource/hub\""
    );
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits() {
    let hub = start(&[]).await;
    let mut sub = Sub::ok(hub.addr(), "match=t", &[]).await;
    let status = hub.terminate_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(sub.ended().await);
}

#[tokio::test]
async fn too_many_subscriptions_are_429() {
    let hub = start(&[("MAX_CONNECTIONS", "2")]).await;
    let addr = hub.addr();
    let first = Sub::ok(addr, "match=a", &[]).await;
    let _second = Sub::ok(addr, "match=b", &[]).await;
    let third = Sub::open(addr, "match=c", &[]).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    // A closed stream gives its place back (the server notices the closed connection, then the
    // next subscription fits).
    drop(first);
    let retry = async {
        loop {
            let sub = Sub::open(addr, "match=c", &[]).await;
            if sub.status == StatusCode::OK {
                return sub;
            }
            assert_eq!(sub.status, StatusCode::TOO_MANY_REQUESTS);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut watching = timeout(WAIT, retry)
        .await
        .expect("the place was never given back");
    publish(addr, &[("topic", "c"), ("data", "fits")]).await;
    assert_eq!(watching.next().await.data(), "fits");
}
