//! The `chat` example over real TCP: every endpoint, replay and "history lost", slow clients,
//! a disconnect storm, SIGTERM, a third-party client (npm `eventsource`) and two pages in
//! headless chromium that lose their connections (cut by a TCP proxy this test controls) and
//! catch up exactly once.
//!
//! The application runs in process (`examples/chat.rs` is compiled in as a module), so tests
//! can configure it and look at the hub's counts; the SIGTERM test runs the built binary.

mod support;

#[path = "../examples/chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod chat;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, routing::post};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use support::eventually;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::timeout,
};
use tower_sse::Shutdown;

const WAIT: Duration = Duration::from_secs(10);

struct App {
    addr: SocketAddr,
    chat: chat::Chat,
    _server: support::ServerHandle,
    _shutdown: Shutdown,
}

async fn start(config: chat::Config) -> App {
    let shutdown = Shutdown::new();
    let (router, chat) = chat::app(&config, &shutdown);
    let (addr, server) = support::serve(router).await;
    App {
        addr,
        chat,
        _server: server,
        _shutdown: shutdown,
    }
}

async fn start_default() -> App {
    start(chat::Config::default()).await
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
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
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        json,
    }
}

async fn post_json(addr: SocketAddr, path: &str, body: Value) -> Reply {
    call(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.json);
    assert!(
        reply.json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error body should be {{\"error\": \"..\"}}: {}",
        reply.json
    );
}

async fn create_room(addr: SocketAddr) -> String {
    let reply = call(addr, Method::POST, "/rooms", &[], "").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    reply.json["room"].as_str().unwrap().to_owned()
}

async fn say(addr: SocketAddr, room: &str, user: &str, text: &str) -> String {
    let reply = post_json(
        addr,
        &format!("/rooms/{room}/messages"),
        json!({ "user": user, "text": text }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    reply.json["id"].as_str().unwrap().to_owned()
}

async fn login(addr: SocketAddr, user: &str) -> String {
    let reply = post_json(addr, "/login", json!({ "user": user })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    reply.json["token"].as_str().unwrap().to_owned()
}

async fn stats(addr: SocketAddr) -> Value {
    call(addr, Method::GET, "/stats", &[], "").await.json
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    event: String,
    id: String,
    data: String,
}

impl Ev {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open SSE response, read event by event.
struct Sse {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = Request::get(format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = timeout(
            WAIT,
            client().request(request.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("no response to GET {path}"))
        .unwrap();
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: vec![],
        }
    }

    async fn ok(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let sse = Self::open(addr, path, headers).await;
        assert_eq!(sse.status, StatusCode::OK, "GET {path}");
        assert_eq!(sse.headers["content-type"], "text/event-stream");
        sse
    }

    fn replay(&self) -> &str {
        self.headers["sse-replay"].to_str().unwrap()
    }

    /// The next event with data (comments and `retry:`-only blocks are skipped), or `None` at
    /// the end of the body.
    async fn next(&mut self) -> Option<Ev> {
        timeout(WAIT, async {
            loop {
                while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                    let text = String::from_utf8(block).unwrap();
                    let mut ev = Ev {
                        event: "message".into(),
                        id: String::new(),
                        data: String::new(),
                    };
                    let mut has_data = false;
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            ev.event = v.into();
                        } else if let Some(v) = line.strip_prefix("id: ") {
                            ev.id = v.into();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            if has_data {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(v);
                            has_data = true;
                        }
                    }
                    if has_data {
                        return Some(ev);
                    }
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("no event within the time limit")
    }

    async fn expect(&mut self) -> Ev {
        self.next().await.expect("the stream ended early")
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn page_and_room_creation() {
    let app = start_default().await;
    let page = client()
        .request(
            Request::get(format!("http://{}/", app.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("EventSource") && html.contains("id=\"messages\""));

    let a = create_room(app.addr).await;
    let named = post_json(app.addr, "/rooms", json!({ "name": "lobby" })).await;
    assert_eq!(named.status, StatusCode::CREATED);
    assert_eq!(named.json["name"], "lobby");
    let b = named.json["room"].as_str().unwrap();
    assert_ne!(a, b);
    assert!(!a.is_empty());
    let empty_object = post_json(app.addr, "/rooms", json!({})).await;
    assert_eq!(empty_object.status, StatusCode::CREATED);
    assert_error(
        &call(app.addr, Method::POST, "/rooms", &[], "{nope").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &post_json(app.addr, "/rooms", json!({ "name": 7 })).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(stats(app.addr).await["rooms"], 3);
}

#[tokio::test]
async fn posting_messages_validates_input() {
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let path = format!("/rooms/{room}/messages");

    assert_error(
        &post_json(
            app.addr,
            "/rooms/nope/messages",
            json!({ "user": "a", "text": "x" }),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &call(app.addr, Method::POST, &path, &[], "{\"user\": ").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &post_json(app.addr, &path, json!({ "text": "no user" })).await,
        StatusCode::BAD_REQUEST,
    );
    for user in ["", "   "] {
        assert_error(
            &post_json(app.addr, &path, json!({ "user": user, "text": "x" })).await,
            StatusCode::BAD_REQUEST,
        );
    }
    let limit = "x".repeat(16 * 1024);
    let ok = post_json(app.addr, &path, json!({ "user": "a", "text": limit })).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    assert!(ok.json["id"].as_str().is_some_and(|id| !id.is_empty()));
    let over = format!("{limit}x");
    assert_error(
        &post_json(app.addr, &path, json!({ "user": "a", "text": over })).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    // Far over the body limit: still a JSON 413.
    let huge = "y".repeat(1024 * 1024);
    assert_error(
        &post_json(app.addr, &path, json!({ "user": "a", "text": huge })).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert_error(
        &call(app.addr, Method::GET, "/rooms/nope/events", &[], "").await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn room_stream_delivers_and_resumes_after_last_event_id() {
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let events = format!("/rooms/{room}/events");

    let mut live = Sse::ok(app.addr, &events, &[]).await;
    assert_eq!(live.replay(), "none");
    let mut ids = vec![];
    for text in ["one", "two", "three"] {
        ids.push(say(app.addr, &room, "alice", text).await);
    }
    for (id, text) in ids.iter().zip(["one", "two", "three"]) {
        let ev = live.expect().await;
        assert_eq!(ev.event, "message");
        assert_eq!(&ev.id, id);
        let data = ev.json();
        assert_eq!(data["room"], room.as_str());
        assert_eq!(data["user"], "alice");
        assert_eq!(data["text"], text);
        assert!(data["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }

    // Back after the first event: exactly the two that followed, then live.
    let mut back = Sse::ok(app.addr, &events, &[("last-event-id", &ids[0])]).await;
    assert_eq!(back.replay(), "complete");
    assert_eq!(back.expect().await.id, ids[1]);
    assert_eq!(back.expect().await.id, ids[2]);
    let four = say(app.addr, &room, "bob", "four").await;
    assert_eq!(back.expect().await.id, four);
    assert_eq!(live.expect().await.id, four);

    // The query parameter polyfills use.
    let mut query = Sse::ok(app.addr, &format!("{events}?lastEventId={}", ids[2]), &[]).await;
    assert_eq!(query.replay(), "complete");
    assert_eq!(query.expect().await.id, four);
}

#[tokio::test]
async fn unknown_last_event_id_is_reported_then_history_follows() {
    let app = start(chat::Config {
        history: 2,
        ..Default::default()
    })
    .await;
    let room = create_room(app.addr).await;
    let mut ids = vec![];
    for text in ["a", "b", "c", "d"] {
        ids.push(say(app.addr, &room, "u", text).await);
    }
    let events = format!("/rooms/{room}/events");
    // Evicted (history 2: c and d are kept, so after a, b is missing), from another process,
    // garbage: all told the same way.
    for last in [ids[0].as_str(), "0123456789abcdef-5", "garbage"] {
        let mut sse = Sse::ok(app.addr, &events, &[("last-event-id", last)]).await;
        assert_eq!(sse.replay(), "history-lost", "{last}");
        let notice = sse.expect().await;
        assert_eq!(notice.event, "history-lost");
        assert_eq!(notice.id, "", "the notice must not move the client's id");
        // Then the retained history, then live.
        assert_eq!(sse.expect().await.id, ids[2]);
        assert_eq!(sse.expect().await.id, ids[3]);
    }
    // Just before the oldest retained event: nothing is missing, so the replay is complete.
    let mut sse = Sse::ok(app.addr, &events, &[("last-event-id", &ids[1])]).await;
    assert_eq!(sse.replay(), "complete");
    assert_eq!(sse.expect().await.id, ids[2]);
}

#[tokio::test]
async fn public_stream_gets_every_room_under_the_same_ids() {
    let app = start_default().await;
    let (a, b) = (create_room(app.addr).await, create_room(app.addr).await);
    let mut public = Sse::ok(app.addr, "/events", &[]).await;
    let mut room_a = Sse::ok(app.addr, &format!("/rooms/{a}/events"), &[]).await;
    let id_a = say(app.addr, &a, "x", "in a").await;
    let id_b = say(app.addr, &b, "y", "in b").await;
    let first = public.expect().await;
    let second = public.expect().await;
    assert_eq!(
        (first.id.as_str(), second.id.as_str()),
        (id_a.as_str(), id_b.as_str())
    );
    assert_eq!(first.json()["room"], a.as_str());
    assert_eq!(second.json()["room"], b.as_str());
    assert_eq!(
        room_a.expect().await,
        first,
        "the room and the public stream differ"
    );

    // The public stream resumes from its ids too.
    let mut back = Sse::ok(app.addr, "/events", &[("last-event-id", &id_a)]).await;
    assert_eq!(back.replay(), "complete");
    assert_eq!(back.expect().await.id, id_b);
}

#[tokio::test]
async fn one_stream_of_several_rooms_resumes_with_one_id() {
    let app = start_default().await;
    let (a, b, c) = (
        create_room(app.addr).await,
        create_room(app.addr).await,
        create_room(app.addr).await,
    );
    let path = format!("/rooms/events?room={a}&room={b}");
    let mut both = Sse::ok(app.addr, &path, &[]).await;
    assert_eq!(both.replay(), "none");
    let in_a = say(app.addr, &a, "x", "in a").await;
    say(app.addr, &c, "x", "in c").await;
    let in_b = say(app.addr, &b, "y", "in b").await;
    let first = both.expect().await;
    assert_eq!(
        (first.id.as_str(), first.json()["room"].as_str()),
        (in_a.as_str(), Some(a.as_str()))
    );
    let second = both.expect().await;
    assert_eq!(
        (second.id.as_str(), second.json()["room"].as_str()),
        (in_b.as_str(), Some(b.as_str()))
    );
    drop(both);

    // Away: one message in each room, then back with the last id seen, by header and query.
    let missed_a = say(app.addr, &a, "x", "missed a").await;
    let missed_b = say(app.addr, &b, "y", "missed b").await;
    for headers in [vec![("last-event-id", in_b.as_str())], vec![]] {
        let path = if headers.is_empty() {
            format!("{path}&lastEventId={in_b}")
        } else {
            path.clone()
        };
        let mut back = Sse::ok(app.addr, &path, &headers).await;
        assert_eq!(back.replay(), "complete");
        assert_eq!(back.expect().await.id, missed_a);
        assert_eq!(back.expect().await.id, missed_b);
    }
    // The set grows: room c's messages after the id come too.
    let grown = format!("{path}&room={c}");
    let mut back = Sse::ok(app.addr, &grown, &[("last-event-id", &in_a)]).await;
    assert_eq!(back.replay(), "complete");
    let ids: Vec<String> = [
        back.expect().await,
        back.expect().await,
        back.expect().await,
        back.expect().await,
    ]
    .into_iter()
    .map(|ev| ev.json()["text"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(ids, ["in c", "in b", "missed a", "missed b"]);

    // Bad requests, each with a clear error.
    let reply = call(app.addr, Method::GET, "/rooms/events", &[], "").await;
    assert_error(&reply, StatusCode::BAD_REQUEST);
    let reply = call(
        app.addr,
        Method::GET,
        &format!("/rooms/events?room={a}&room=nope"),
        &[],
        "",
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND);
    assert!(reply.json["error"].as_str().unwrap().contains("nope"));
    let many: String = (0..=chat::MAX_STREAM_ROOMS)
        .map(|i| format!("room=r{i}&"))
        .collect();
    let reply = call(
        app.addr,
        Method::GET,
        &format!("/rooms/events?{many}"),
        &[],
        "",
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST);
}

/// A claimed name cannot be spoken for without its token: with no token at all, a DM "from
/// alice" to bob and a room message as "alice" were accepted while alice was logged in.
#[tokio::test]
async fn a_claimed_name_needs_its_token_to_post() {
    let app = start_default().await;
    let alice = login(app.addr, "alice").await;
    let bob = login(app.addr, "bob").await;
    let room = create_room(app.addr).await;
    let dm = json!({ "from": "alice", "text": "from alice?" }).to_string();
    let in_room = json!({ "user": "alice", "text": "as alice?" }).to_string();
    let room_path = format!("/rooms/{room}/messages");
    for headers in [
        vec![],
        vec![("authorization", format!("Bearer {bob}"))],
        vec![("cookie", "chat_token=guess".to_owned())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = call(
            app.addr,
            Method::POST,
            "/users/bob/messages",
            &headers,
            dm.clone(),
        )
        .await;
        assert_error(&reply, StatusCode::FORBIDDEN);
        let reply = call(
            app.addr,
            Method::POST,
            &room_path,
            &headers,
            in_room.clone(),
        )
        .await;
        assert_error(&reply, StatusCode::FORBIDDEN);
    }
    // With alice's token, by bearer or cookie: accepted.
    let bearer = format!("Bearer {alice}");
    let reply = call(
        app.addr,
        Method::POST,
        "/users/bob/messages",
        &[("authorization", &bearer)],
        dm,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let cookie = format!("chat_token={alice}");
    let reply = call(
        app.addr,
        Method::POST,
        &room_path,
        &[("cookie", &cookie)],
        in_room,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    // A name nobody claimed is free (no passwords here: the first login claims a name).
    say(
        app.addr,
        &room,
        "carol",
        "anyone may be carol until someone logs in as carol",
    )
    .await;
    // Tokens are 32 hex digits from the OS's random source, different every time.
    assert_eq!(alice.len(), 32);
    assert!(alice.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(alice, bob);
}

#[tokio::test]
async fn metrics_in_prometheus_text() {
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let mut sse = Sse::ok(app.addr, &format!("/rooms/{room}/events"), &[]).await;
    say(app.addr, &room, "u", "counted").await;
    sse.expect().await;
    let request = Request::get(format!("http://{}/metrics", app.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = timeout(WAIT, client().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    // Several tests share this process's recorder: look for the names, and at least one event.
    for name in [
        "tower_sse_connections",
        "tower_sse_hub_published_total",
        "tower_sse_bytes_total",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    let events: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("tower_sse_events_total ")?.parse().ok())
        .unwrap_or_else(|| panic!("no tower_sse_events_total: {text}"));
    assert!(events >= 1.0, "{text}");
}

#[tokio::test]
async fn login_and_direct_messages() {
    let app = start_default().await;
    let reply = post_json(app.addr, "/login", json!({ "user": "alice" })).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["user"], "alice");
    let token = reply.json["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 16);
    let cookie = reply.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("chat_token={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let bob = login(app.addr, "bob").await;
    assert_ne!(bob, token);
    // The first login claimed the name: again only with its token.
    assert_error(
        &post_json(app.addr, "/login", json!({ "user": "alice" })).await,
        StatusCode::CONFLICT,
    );
    let again = call(
        app.addr,
        Method::POST,
        "/login",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"user": "alice"}"#,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["token"], token.as_str());
    assert_error(
        &call(
            app.addr,
            Method::POST,
            "/login",
            &[("authorization", &format!("Bearer {bob}"))],
            r#"{"user": "alice"}"#,
        )
        .await,
        StatusCode::CONFLICT,
    );
    assert_error(
        &post_json(app.addr, "/login", json!({ "user": "" })).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &call(app.addr, Method::POST, "/login", &[], "not json").await,
        StatusCode::BAD_REQUEST,
    );

    // No token, a wrong one, someone else's: 401.
    let path = "/users/alice/events";
    let bearer_bob = format!("Bearer {bob}");
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", bearer_bob.as_str())],
        vec![("cookie", "chat_token=nope")],
    ] {
        let sse = Sse::open(app.addr, path, &headers).await;
        assert_eq!(sse.status, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    // Bob speaks as bob with his token (a claimed name needs it; see the impersonation test).
    let dm = json!({ "from": "bob", "text": "psst" });
    let as_bob = |path: &'static str, body: Value| {
        let bearer = bearer_bob.clone();
        async move {
            call(
                app.addr,
                Method::POST,
                path,
                &[("authorization", &bearer)],
                body.to_string(),
            )
            .await
        }
    };
    // No one ever logged in as carol: 404.
    assert_error(
        &as_bob("/users/carol/messages", dm.clone()).await,
        StatusCode::NOT_FOUND,
    );

    // Bearer and cookie both work; each connection gets the message.
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; chat_token={token}");
    let mut by_bearer = Sse::ok(app.addr, path, &[("authorization", &bearer)]).await;
    let mut by_cookie = Sse::ok(app.addr, path, &[("cookie", &cookie)]).await;
    let sent = as_bob("/users/alice/messages", dm).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.json);
    let id = sent.json["id"].as_str().unwrap();
    for sse in [&mut by_bearer, &mut by_cookie] {
        let ev = sse.expect().await;
        assert_eq!(ev.event, "direct");
        assert_eq!(ev.id, id);
        let data = ev.json();
        assert_eq!(
            (&data["from"], &data["to"], &data["text"]),
            (&json!("bob"), &json!("alice"), &json!("psst"))
        );
    }
    assert_error(
        &post_json(
            app.addr,
            "/users/alice/messages",
            json!({ "from": "", "text": "x" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &post_json(
            app.addr,
            "/users/alice/messages",
            json!({ "from": "b", "text": "x".repeat(16 * 1024 + 1) }),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    // Bob's stream does not get alice's messages.
    let mut bobs = Sse::ok(
        app.addr,
        "/users/bob/events",
        &[("authorization", &bearer_bob)],
    )
    .await;
    call(
        app.addr,
        Method::POST,
        "/users/bob/messages",
        &[("authorization", &bearer)],
        json!({ "from": "alice", "text": "hi bob" }).to_string(),
    )
    .await;
    assert_eq!(bobs.expect().await.json()["text"], "hi bob");
    drop((by_bearer, by_cookie));
    eventually("alice's streams released", async || {
        match app.chat.hub().client_connections("alice") {
            0 => Ok(()),
            n => Err(format!("{n} connections")),
        }
    })
    .await;
    // Alice is away: the message waits in her history for her next connection.
    let away = as_bob(
        "/users/alice/messages",
        json!({ "from": "bob", "text": "while you were away" }),
    )
    .await;
    assert_eq!(away.status, StatusCode::ACCEPTED, "{}", away.json);
    let mut back = Sse::ok(
        app.addr,
        path,
        &[("authorization", &bearer), ("last-event-id", id)],
    )
    .await;
    assert_eq!(back.replay(), "complete");
    let ev = back.expect().await;
    assert_eq!(ev.json()["text"], "while you were away");
    assert_eq!(ev.id, away.json["id"].as_str().unwrap());
}

#[tokio::test]
async fn stats_count_open_streams() {
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let s = stats(app.addr).await;
    for key in [
        "connections",
        "rooms",
        "slow_disconnects",
        "subscribers",
        "topics",
    ] {
        assert!(s[key].is_u64(), "{key} missing in {s}");
    }
    assert_eq!(s["connections"], 0);
    let a = Sse::ok(app.addr, &format!("/rooms/{room}/events"), &[]).await;
    let b = Sse::ok(app.addr, "/events", &[]).await;
    let s = stats(app.addr).await;
    assert_eq!(
        (s["connections"].as_u64(), s["subscribers"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    drop((a, b));
    eventually("connections back to 0", async || {
        let s = stats(app.addr).await;
        (s["connections"] == 0 && s["subscribers"] == 0)
            .then_some(())
            .ok_or_else(|| s.to_string())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Slow clients and disconnect storms
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.1 GET; returns the socket once the response head has arrived.
async fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = vec![];
    timeout(WAIT, async {
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response head");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response head");
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    (stream, seen)
}

#[tokio::test]
async fn slow_client_is_disconnected_while_others_keep_receiving() {
    const CAPACITY: usize = 8;
    const EVENTS: usize = 800;
    let app = start(chat::Config {
        subscriber_capacity: CAPACITY,
        // Enough to replay everything the slow client missed.
        history_bytes: 32 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let room = create_room(app.addr).await;
    let path = format!("/rooms/{room}/events");

    // The slow client asks and then stops reading.
    let (mut slow, head) = raw_get(app.addr, &path, "").await;
    let mut fast = Sse::ok(app.addr, &path, &[]).await;
    assert_eq!(app.chat.hub().subscriber_count(&format!("room/{room}")), 2);

    // ~12 MB: more than the socket buffers, hyper's buffer and the ring together. The publisher
    // never waits for anyone; this loop waits for the fast client only to check it.
    let text = "z".repeat(15 * 1024);
    let mut ids = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let event = app
            .chat
            .post_message(&room, "pub", &format!("{i} {text}"), None)
            .await
            .unwrap();
        ids.push(event.id().unwrap().to_owned());
        let got = fast.expect().await;
        assert_eq!(
            got.id, ids[i],
            "the fast client missed or reordered an event"
        );
    }
    assert_eq!(
        app.chat.hub().stats().slow_disconnects,
        0,
        "counted too early?"
    );

    // The slow client reads again: it gets what was already on its way, then the end of the
    // stream (not a silent gap), and that is counted.
    let mut rest = head;
    timeout(WAIT, async {
        // The response ends; the HTTP/1.1 connection itself stays open.
        while !rest.ends_with(b"\r\n0\r\n\r\n") {
            let mut buf = vec![0; 64 * 1024];
            let n = slow.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed instead of ending the response");
            rest.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the slow client's stream did not end");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "no clean end of the chunked body"
    );
    let got: Vec<&str> = rest
        .split("\nid: ")
        .skip(1)
        .map(|s| s.split('\n').next().unwrap())
        .collect();
    assert!(got.len() < EVENTS, "the slow client was not cut off");
    assert_eq!(
        got,
        ids[..got.len()],
        "the slow client got a gap or a reorder"
    );
    assert_eq!(app.chat.hub().stats().slow_disconnects, 1);
    let s = stats(app.addr).await;
    assert_eq!(s["slow_disconnects"], 1, "{s}");
    assert_eq!(s["connections"], 1, "{s}");

    // It comes back with its last id and replays the rest exactly.
    let last = got.last().copied().unwrap_or("");
    let mut back = Sse::ok(app.addr, &path, &[("last-event-id", last)]).await;
    assert_eq!(back.replay(), "complete");
    for id in &ids[got.len()..] {
        assert_eq!(&back.expect().await.id, id);
    }
}

#[tokio::test]
async fn disconnect_storm_releases_everything() {
    const CLIENTS: usize = 300;
    let app = start_default().await;
    let rooms = [
        create_room(app.addr).await,
        create_room(app.addr).await,
        create_room(app.addr).await,
    ];
    let token = login(app.addr, "storm").await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut sockets = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (path, extra) = match i % 5 {
            0 => ("/events".to_owned(), ""),
            1 => ("/users/storm/events".to_owned(), auth.as_str()),
            n => (format!("/rooms/{}/events", rooms[n % 3]), ""),
        };
        sockets.push(raw_get(app.addr, &path, extra).await.0);
    }
    let s = stats(app.addr).await;
    assert_eq!(s["connections"], CLIENTS, "{s}");
    assert_eq!(s["subscribers"], CLIENTS, "{s}");
    say(app.addr, &rooms[0], "u", "before the storm").await;

    drop(sockets); // all at once

    let hub = app.chat.hub().clone();
    eventually("every count back to 0", async || {
        let s = stats(app.addr).await;
        let per_room: Vec<usize> = rooms
            .iter()
            .map(|r| hub.subscriber_count(&format!("room/{r}")))
            .collect();
        let counts = (
            app.chat.connections(),
            hub.total_subscribers(),
            hub.subscriber_count("public"),
            hub.subscriber_count("user/storm"),
            hub.client_connections("storm"),
        );
        if counts == (0, 0, 0, 0, 0) && per_room == [0, 0, 0] && s["connections"] == 0 {
            Ok(())
        } else {
            Err(format!("{counts:?} rooms {per_room:?} stats {s}"))
        }
    })
    .await;
    // The server still works.
    let mut sse = Sse::ok(app.addr, &format!("/rooms/{}/events", rooms[0]), &[]).await;
    let id = say(app.addr, &rooms[0], "u", "after the storm").await;
    assert_eq!(sse.expect().await.id, id);
}

// ---------------------------------------------------------------------------------------------
// The binary, third-party clients, a browser
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn binary_exits_on_sigterm_with_clients_connected() {
    let chat = support::Example::start("chat", &[]).await;
    let addr = chat.addr();
    let room = create_room(addr).await;
    let token = login(addr, "alice").await;
    let mut clients = vec![];
    for (path, extra) in [
        (format!("/rooms/{room}/events"), String::new()),
        ("/events".to_owned(), String::new()),
        (
            "/users/alice/events".to_owned(),
            format!("Authorization: Bearer {token}\r\n"),
        ),
    ] {
        clients.push(raw_get(addr, &path, &extra).await.0);
    }
    let status = chat.terminate_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
    for mut client in clients {
        let mut rest = vec![];
        timeout(WAIT, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains("event: shutdown\ndata: server stopping\n\n"),
            "{rest}"
        );
    }
}

#[tokio::test]
async fn npm_eventsource_reads_a_room_and_resumes_with_last_event_id() {
    if !support::require_node_package("eventsource") {
        return;
    }
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let mut ids = vec![];
    for text in ["one", "two", "three"] {
        ids.push(say(app.addr, &room, "carol", text).await);
    }
    let url = support::url(app.addr, &format!("/rooms/{room}/events"));
    let out = support::run_node(
        "eventsource_read.mjs",
        &[&url, "--count", "2", "--last-event-id", &ids[0]],
        support::SCRIPT_TIMEOUT,
    )
    .await;
    out.assert_success();
    let events = out.json_lines();
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, [&ids[1], &ids[2]], "{out}");
    let data: Value = serde_json::from_str(events[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["text"], "three");
    assert_eq!(data["user"], "carol");

    // Through a proxy that cuts the connection: the client reconnects on its own, sends the id
    // it tracked, and gets what was published meanwhile exactly once.
    let proxy = Proxy::start(app.addr).await;
    let url = format!("http://{}/rooms/{room}/events", proxy.addr);
    // It starts from the last id it saw above; whether or not "live 1" reaches it before the
    // cut, its reconnection asks for exactly what it lacks.
    let script = tokio::spawn({
        let last = ids[2].clone();
        async move {
            support::run_node(
                "eventsource_read.mjs",
                &[&url, "--count", "4", "--last-event-id", &last],
                support::SCRIPT_TIMEOUT,
            )
            .await
        }
    });
    eventually("the script connected", async || {
        match app.chat.hub().subscriber_count(&format!("room/{room}")) {
            1 => Ok(()),
            n => Err(format!("{n} subscribers")),
        }
    })
    .await;
    let first = say(app.addr, &room, "carol", "live 1").await;
    proxy.cut_and_hold();
    eventually("the cut connection released", async || {
        match app.chat.hub().subscriber_count(&format!("room/{room}")) {
            0 => Ok(()),
            n => Err(format!("{n} subscribers")),
        }
    })
    .await;
    let mut missed = vec![];
    for text in ["missed 1", "missed 2"] {
        missed.push(say(app.addr, &room, "carol", text).await);
    }
    proxy.resume();
    let after = say(app.addr, &room, "carol", "after").await;
    let out = script.await.unwrap();
    out.assert_success();
    let got: Vec<String> = out
        .json_lines()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        [first, missed[0].clone(), missed[1].clone(), after],
        "{out}"
    );
}

/// A TCP proxy the test controls: `cut_and_hold` closes every connection and holds new ones
/// (accepted, not forwarded) until `resume`. The server keeps running, with its history.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    held: watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0_u64);
        let (held, _) = watch::channel(false);
        let task = tokio::spawn({
            let (cut, held) = (cut.clone(), held.clone());
            async move {
                loop {
                    let Ok((mut downstream, _)) = listener.accept().await else {
                        return;
                    };
                    let mut cut = cut.subscribe();
                    let mut held = held.subscribe();
                    tokio::spawn(async move {
                        if held.wait_for(|held| !held).await.is_err() {
                            return;
                        }
                        cut.mark_unchanged();
                        let Ok(mut up) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut downstream, &mut up) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            cut,
            held,
            _task: task,
        }
    }

    fn cut_and_hold(&self) {
        self.held.send_replace(true);
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn resume(&self) {
        self.held.send_replace(false);
    }
}

/// Serves `/cut` and `/resume` for a script that drives a browser.
async fn proxy_control(proxy: Arc<Proxy>) -> (SocketAddr, support::ServerHandle) {
    let router = Router::new()
        .route(
            "/cut",
            post({
                let proxy = proxy.clone();
                async move || proxy.cut_and_hold()
            }),
        )
        .route(
            "/resume",
            post({
                let proxy = proxy.clone();
                async move || proxy.resume()
            }),
        );
    support::serve(router).await
}

#[tokio::test]
async fn chromium_two_pages_chat_and_catch_up_exactly_once() {
    if !support::require_chromium() {
        return;
    }
    let app = start_default().await;
    let proxy = Arc::new(Proxy::start(app.addr).await);
    let (control, _control) = proxy_control(proxy.clone()).await;
    let out = support::run_node(
        "chat_page.mjs",
        &[
            &format!("http://{}", proxy.addr),
            &format!("http://{}", app.addr),
            &format!("http://{control}"),
        ],
        support::BROWSER_TIMEOUT,
    )
    .await;
    out.assert_success();
    let seen = out.json();
    let expected = [
        "hello from alice",
        "missed 1",
        "missed 2",
        "missed 3",
        "after",
    ];
    for page in ["a", "b"] {
        let texts: Vec<&str> = seen[page]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            texts, expected,
            "page {page}: every message exactly once, in order\n{out}"
        );
        let opens = seen[format!("{page}_opens")].as_u64().unwrap();
        assert!(
            opens >= 2,
            "page {page} did not reconnect ({opens} opens)\n{out}"
        );
    }
    assert_eq!(seen["dm"], json!(["psst"]), "{out}");
    // An unknown room: the page stops with "not found" instead of retrying forever.
    assert_eq!(
        seen["unknown_room"],
        json!({ "status": "not found", "opens": 0 }),
        "{out}"
    );
    let counts: HashMap<String, u64> = serde_json::from_value(seen["ids"].clone()).unwrap();
    assert!(
        counts.values().all(|&n| n == 2),
        "each id once per page: {counts:?}"
    );
    // The chat compresses its streams: chromium asked for and decoded them, event by event
    // (the messages above arrived while the streams stayed open).
    let encodings: HashMap<String, u64> =
        serde_json::from_value(seen["encodings"].clone()).unwrap();
    assert!(
        !encodings.is_empty()
            && encodings
                .keys()
                .all(|e| ["zstd", "br", "gzip", "deflate"].contains(&e.as_str())),
        "every event stream compressed: {encodings:?}\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Two processes on Redis (`REDIS_URL`), each test with its own redis-server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_processes_on_redis_share_rooms_direct_messages_and_replay() {
    let Some(mut redis) = support::redis::RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let a = support::Example::start("chat", &[("REDIS_URL", &url)]).await;
    let b = support::Example::start("chat", &[("REDIS_URL", &url)]).await;
    let (a, b) = (a.addr(), b.addr());

    // A room made on A exists on B; a message posted on A reaches B's room and public streams
    // under one id.
    let room = create_room(a).await;
    let mut on_b = Sse::ok(b, &format!("/rooms/{room}/events"), &[]).await;
    let mut public_b = Sse::ok(b, "/events", &[]).await;
    let first = say(a, &room, "ann", "one").await;
    let got = on_b.expect().await;
    assert_eq!(
        (got.id.as_str(), got.json()["text"].as_str()),
        (first.as_str(), Some("one"))
    );
    assert_eq!(public_b.expect().await.id, first);

    // Posted on B while the client is away; it resumes on A with its Last-Event-ID.
    drop(on_b);
    let second = say(b, &room, "bo", "two").await;
    let third = say(b, &room, "bo", "three").await;
    let mut back = Sse::ok(
        a,
        &format!("/rooms/{room}/events"),
        &[("last-event-id", &first)],
    )
    .await;
    assert_eq!(back.replay(), "complete");
    assert_eq!(back.expect().await.id, second);
    assert_eq!(back.expect().await.id, third);

    // Logins are shared: alice logs in on A, reads her direct messages on B; a message sent on
    // A reaches her there. The name is taken on B too.
    let token = login(a, "alice").await;
    assert_error(
        &post_json(b, "/login", json!({ "user": "alice" })).await,
        StatusCode::CONFLICT,
    );
    let bearer = format!("Bearer {token}");
    let mut dms = Sse::ok(b, "/users/alice/events", &[("authorization", &bearer)]).await;
    let sent = post_json(
        a,
        "/users/alice/messages",
        json!({ "from": "bo", "text": "hi" }),
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.json);
    let dm = dms.expect().await;
    assert_eq!(dm.event, "direct");
    assert_eq!(dm.json()["text"], "hi");
    assert_eq!(stats(b).await["rooms"], 1);

    // Redis goes away: requests that need it get 503, quickly, not a hang.
    redis.kill().await;
    for addr in [a, b] {
        let started = std::time::Instant::now();
        let reply = post_json(
            addr,
            &format!("/rooms/{room}/messages"),
            json!({ "user": "x", "text": "y" }),
        )
        .await;
        assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
    // And back: the open streams go on by themselves.
    redis.restart().await;
    let mut posted = None;
    for _ in 0..100 {
        let reply = post_json(
            b,
            &format!("/rooms/{room}/messages"),
            json!({ "user": "bo", "text": "back" }),
        )
        .await;
        if reply.status == StatusCode::ACCEPTED {
            posted = reply.json["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = posted.expect("posting works again once Redis is back");
    assert_eq!(back.expect().await.id, posted);
}

/// Presence across processes: a user streaming on A is online on B; when A crashes, B lists
/// them offline after three presence intervals.
#[tokio::test]
async fn two_processes_on_redis_share_who_is_online_and_a_crash_takes_them_offline() {
    let Some(redis) = support::redis::RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("PRESENCE_INTERVAL_SECS", "1")];
    let a = support::Example::start("chat", &env).await;
    let b = support::Example::start("chat", &env).await;
    let room = create_room(a.addr()).await;
    let token = login(a.addr(), "alice").await;
    let _alice = Sse::ok(
        a.addr(),
        &format!("/rooms/events?room={room}&user=alice"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let path = format!("/rooms/{room}/online");
    let b_addr = b.addr();
    eventually("alice is online on B", async || {
        let now = call(b_addr, Method::GET, &path, &[], "").await.json["users"].clone();
        (now == json!(["alice"]))
            .then_some(())
            .ok_or(now.to_string())
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("alice is offline on B after A crashed", async || {
        let now = call(b_addr, Method::GET, &path, &[], "").await.json["users"].clone();
        (now == json!([])).then_some(()).ok_or(now.to_string())
    })
    .await;
}

#[tokio::test]
async fn redis_down_at_start_up_is_a_clear_error() {
    if !support::external(
        "redis-server",
        support::program_available("redis-server"),
        "apt-get install redis-server",
    ) {
        return;
    }
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(support::example_path("chat"))
            .env("ADDR", "127.0.0.1:0")
            .env("REDIS_URL", &url)
            .output(),
    )
    .await
    .expect("exits instead of hanging")
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&url) && stderr.starts_with("error: "),
        "{stderr}"
    );
}

#[tokio::test]
async fn two_processes_on_nats_share_rooms_direct_messages_multi_room_streams_and_replay() {
    let Some(mut nats) = support::nats::NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let a = support::Example::start("chat", &[("NATS_URL", &url)]).await;
    let b = support::Example::start("chat", &[("NATS_URL", &url)]).await;
    let (a, b) = (a.addr(), b.addr());

    // Rooms made on A exist on B; one stream of two rooms on B, and the public stream.
    let (r1, r2) = (create_room(a).await, create_room(a).await);
    let mut both = Sse::ok(b, &format!("/rooms/events?room={r1}&room={r2}"), &[]).await;
    let mut public_b = Sse::ok(b, "/events", &[]).await;
    let first = say(a, &r1, "ann", "one").await;
    let second = say(a, &r2, "ann", "two").await;
    for want in [&first, &second] {
        assert_eq!(&both.expect().await.id, want);
        assert_eq!(&public_b.expect().await.id, want);
    }

    // Posted on B while the client is away; it resumes on A with its Last-Event-ID, one cursor
    // for both rooms.
    drop(both);
    let third = say(b, &r2, "bo", "three").await;
    let fourth = say(b, &r1, "bo", "four").await;
    let mut back = Sse::ok(
        a,
        &format!("/rooms/events?room={r1}&room={r2}"),
        &[("last-event-id", &first)],
    )
    .await;
    assert_eq!(back.replay(), "complete");
    for want in [&second, &third, &fourth] {
        assert_eq!(&back.expect().await.id, want);
    }

    // A retried post with the same Idempotency-Key is stored once.
    let path = format!("/rooms/{r1}/messages");
    let retry = || {
        call(
            a,
            Method::POST,
            &path,
            &[
                ("content-type", "application/json"),
                ("idempotency-key", "msg-1"),
            ],
            json!({ "user": "ann", "text": "once" }).to_string(),
        )
    };
    let (one, two) = (retry().await, retry().await);
    assert_eq!(one.status, StatusCode::ACCEPTED, "{}", one.json);
    assert_eq!(one.json["id"], two.json["id"]);
    assert_eq!(back.expect().await.id, one.json["id"].as_str().unwrap());

    // Logins are shared: the name is taken on B too, and direct messages cross processes.
    let token = login(a, "alice").await;
    assert_error(
        &post_json(b, "/login", json!({ "user": "alice" })).await,
        StatusCode::CONFLICT,
    );
    let bearer = format!("Bearer {token}");
    let mut dms = Sse::ok(b, "/users/alice/events", &[("authorization", &bearer)]).await;
    let sent = post_json(
        a,
        "/users/alice/messages",
        json!({ "from": "bo", "text": "hi" }),
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.json);
    assert_eq!(dms.expect().await.json()["text"], "hi");
    assert_eq!(stats(b).await["rooms"], 2);

    // NATS goes away: posts get 503, quickly; back, and the open streams go on.
    nats.kill().await;
    let started = std::time::Instant::now();
    let reply = post_json(
        a,
        &format!("/rooms/{r1}/messages"),
        json!({ "user": "x", "text": "y" }),
    )
    .await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    nats.restart().await;
    let mut posted = None;
    for _ in 0..200 {
        let reply = post_json(
            b,
            &format!("/rooms/{r2}/messages"),
            json!({ "user": "bo", "text": "back" }),
        )
        .await;
        if reply.status == StatusCode::ACCEPTED {
            posted = reply.json["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = posted.expect("posting works again once NATS is back");
    assert_eq!(back.expect().await.id, posted);
}

#[tokio::test]
async fn nats_down_at_start_up_is_a_clear_error() {
    if !support::external(
        "nats-server",
        support::program_available("nats-server"),
        "apt-get install nats-server",
    ) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(support::example_path("chat"))
            .env("ADDR", "127.0.0.1:0")
            .env("NATS_URL", &url)
            .output(),
    )
    .await
    .expect("exits instead of hanging")
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&url) && stderr.starts_with("error: "),
        "{stderr}"
    );
}

/// The page's one connection: a room and the user's direct messages on one stream, one
/// cursor; the user part needs that user's token.
#[tokio::test]
async fn one_stream_carries_a_room_and_the_users_direct_messages() {
    let app = start_default().await;
    let room = create_room(app.addr).await;
    let token = login(app.addr, "alice").await;
    let path = format!("/rooms/events?room={room}&user=alice");
    // Without (or with another user's) token: 401, nothing streamed.
    let bob = login(app.addr, "bob").await;
    for headers in [vec![], vec![("authorization", format!("Bearer {bob}"))]] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = call(app.addr, Method::GET, &path, &headers, "").await;
        assert_error(&reply, StatusCode::UNAUTHORIZED);
    }
    let two_users = format!("/rooms/events?room={room}&user=alice&user=bob");
    let bearer = format!("Bearer {token}");
    let reply = call(
        app.addr,
        Method::GET,
        &two_users,
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST);

    let mut stream = Sse::ok(app.addr, &path, &[("authorization", &bearer)]).await;
    let first = say(app.addr, &room, "carol", "in the room").await;
    let sent = post_json(
        app.addr,
        "/users/alice/messages",
        json!({ "from": "carol", "text": "psst" }),
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.json);
    let got = stream.expect().await;
    assert_eq!(
        (got.event.as_str(), got.id.as_str()),
        ("message", first.as_str())
    );
    let dm = stream.expect().await;
    assert_eq!(dm.event, "direct");
    assert_eq!(dm.json()["text"], "psst");
    assert_eq!(stats(app.addr).await["connections"], 1);
    // One cursor resumes both.
    drop(stream);
    let later = say(app.addr, &room, "carol", "later").await;
    let mut back = Sse::ok(
        app.addr,
        &path,
        &[("authorization", &bearer), ("last-event-id", &first)],
    )
    .await;
    assert_eq!(back.replay(), "complete");
    assert_eq!(back.expect().await.id, dm.id);
    assert_eq!(back.expect().await.id, later);
}

/// Who is online in a room: users with a stream of it open with their login, each once, gone
/// when their streams close.
#[tokio::test]
async fn a_room_lists_who_is_online() {
    let app = start_default().await;
    let (room, other) = (create_room(app.addr).await, create_room(app.addr).await);
    let online = |room: String| async move {
        let reply = call(
            app.addr,
            Method::GET,
            &format!("/rooms/{room}/online"),
            &[],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert_eq!(reply.json["room"], room.as_str());
        reply.json["users"].clone()
    };
    assert_eq!(online(room.clone()).await, json!([]));
    let reply = call(app.addr, Method::GET, "/rooms/nope/online", &[], "").await;
    assert_error(&reply, StatusCode::NOT_FOUND);
    let bearer = |token: String| format!("Bearer {token}");
    let (alice, bob) = (
        bearer(login(app.addr, "alice").await),
        bearer(login(app.addr, "bob").await),
    );
    // Anonymous streams are nobody.
    let _anonymous = Sse::ok(app.addr, &format!("/rooms/{room}/events"), &[]).await;
    let both = format!("/rooms/events?room={room}&room={other}&user=alice");
    let alice_1 = Sse::ok(app.addr, &both, &[("authorization", &alice)]).await;
    let alice_2 = Sse::ok(app.addr, &both, &[("authorization", &alice)]).await;
    let bob_1 = Sse::ok(
        app.addr,
        &format!("/rooms/events?room={room}&user=bob"),
        &[("authorization", &bob)],
    )
    .await;
    assert_eq!(online(room.clone()).await, json!(["alice", "bob"]));
    assert_eq!(online(other.clone()).await, json!(["alice"]));
    drop(bob_1);
    drop(alice_1);
    eventually(
        "bob is gone, alice still there (her second stream)",
        async || {
            let now = online(room.clone()).await;
            (now == json!(["alice"]))
                .then_some(())
                .ok_or(now.to_string())
        },
    )
    .await;
    drop(alice_2);
    eventually("nobody is left", async || {
        let now = online(other.clone()).await;
        (now == json!([])).then_some(()).ok_or(now.to_string())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Limits and expiry
// ---------------------------------------------------------------------------------------------

/// Over `tower_sse::serve` (which gives the layer each request's address), with
/// `max_streams_per_client: 2`: the third stream from 127.0.0.1 gets `429` with `Retry-After`,
/// posting still works, and a closed stream frees its slot.
#[tokio::test]
async fn the_stream_over_the_per_client_cap_gets_429_until_one_closes() {
    let shutdown = Shutdown::new();
    let config = chat::Config {
        max_streams_per_client: Some(2),
        ..chat::Config::default()
    };
    let (router, chat) = chat::app(&config, &shutdown);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tower_sse::serve(listener, router)
            .shutdown(&shutdown)
            .into_future(),
    );
    let room = create_room(addr).await;
    let path = format!("/rooms/{room}/events");
    let accept = [("accept", "text/event-stream")];
    let first = Sse::ok(addr, &path, &accept).await;
    let mut second = Sse::ok(addr, "/events", &[]).await;
    for headers in [&accept[..], &[]] {
        let refused = Sse::open(addr, &path, headers).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers["retry-after"], "5");
    }
    let id = say(addr, &room, "u", "still posting").await;
    assert_eq!(second.expect().await.id, id);

    drop(first);
    eventually("the closed stream released", async || {
        match chat.connections() {
            1 => Ok(()),
            n => Err(format!("{n} open")),
        }
    })
    .await;
    let mut third = Sse::ok(addr, &path, &accept).await;
    let id = say(addr, &room, "u", "after the close").await;
    assert_eq!(third.expect().await.id, id);
    shutdown.trigger();
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}

/// The page, refused with `429` (its address already has the one stream allowed), waits for
/// `Retry-After` and connects once the other stream is gone, where it gives up on other 4xx.
#[tokio::test]
async fn chromium_page_waits_out_a_429_then_connects() {
    if !support::require_chromium() {
        return;
    }
    let shutdown = Shutdown::new();
    let config = chat::Config {
        max_streams_per_client: Some(1),
        ..chat::Config::default()
    };
    let (router, _chat) = chat::app(&config, &shutdown);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tower_sse::serve(listener, router)
            .shutdown(&shutdown)
            .into_future(),
    );
    let room = create_room(addr).await;
    let out = support::run_node(
        "chat_page_429.mjs",
        &[&format!("http://{addr}"), &room],
        support::BROWSER_TIMEOUT,
    )
    .await;
    out.assert_success();
    assert_eq!(
        out.json(),
        json!({ "waited": true, "opened": true }),
        "{out}"
    );
    shutdown.trigger();
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}

/// One request to the in-process router (no TCP, so a paused clock moves only when told).
async fn send(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    use tower::ServiceExt as _;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        axum::body::Body::empty()
    } else {
        axum::body::Body::from(body.to_string())
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    if response.headers()["content-type"] == "text/event-stream" {
        return (status, Value::Null);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// With a paused clock: a claimed name unused for `claim_idle` is freed (anyone may log in as
/// it, and its direct messages' history is gone), one whose token was used is kept; a room
/// without messages or streams for `room_idle` is removed (`404`), one with a recent message or
/// an open stream is kept, until the stream closes and the time passes.
#[tokio::test(start_paused = true)]
async fn idle_claims_and_empty_rooms_expire() {
    use axum::http::StatusCode as S;
    let shutdown = Shutdown::new();
    let config = chat::Config {
        claim_idle: Duration::from_secs(60),
        room_idle: Duration::from_secs(60),
        ..chat::Config::default()
    };
    let (router, chat) = chat::app(&config, &shutdown);
    let hub = chat.hub().clone();
    let post = Method::POST;
    let (_, alice) = send(
        &router,
        post.clone(),
        "/login",
        None,
        json!({"user": "alice"}),
    )
    .await;
    let alice = alice["token"].as_str().unwrap().to_owned();
    let (status, _) = send(
        &router,
        post.clone(),
        "/login",
        None,
        json!({"user": "bob"}),
    )
    .await;
    assert_eq!(status, S::OK);
    let mut rooms = vec![];
    for _ in 0..3 {
        let (status, room) = send(&router, post.clone(), "/rooms", None, Value::Null).await;
        assert_eq!(status, S::CREATED);
        rooms.push(room["room"].as_str().unwrap().to_owned());
    }
    let (talked, watched, empty) = (&rooms[0], &rooms[1], &rooms[2]);
    let dm = json!({"from": "alice", "text": "secret"});
    let (status, _) = send(
        &router,
        post.clone(),
        "/users/bob/messages",
        Some(&alice),
        dm,
    )
    .await;
    assert_eq!(status, S::ACCEPTED);
    // A stream open on `watched` (the response's body holds the subscription).
    let stream = {
        use tower::ServiceExt as _;
        let request = Request::get(format!("/rooms/{watched}/events"))
            .body(axum::body::Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap()
    };
    assert_eq!(stream.status(), S::OK);

    tokio::time::advance(Duration::from_secs(40)).await;
    let message = json!({"user": "alice", "text": "hi"});
    let path = format!("/rooms/{talked}/messages");
    let (status, _) = send(&router, post.clone(), &path, Some(&alice), message.clone()).await;
    assert_eq!(status, S::ACCEPTED);
    assert_eq!(
        chat.expire_idle().await,
        (0, 0),
        "nothing is idle for 60 s yet"
    );

    tokio::time::advance(Duration::from_secs(40)).await;
    chat.expire_idle().await;
    // bob (unused for 80 s) and the empty room went; alice and the other rooms stayed.
    let (status, _) = send(
        &router,
        post.clone(),
        &format!("/rooms/{empty}/messages"),
        None,
        message.clone(),
    )
    .await;
    assert_eq!(status, S::NOT_FOUND);
    assert!(!hub.topics().contains(&format!("room/{empty}")));
    assert!(
        !hub.topics().contains(&"user/bob".to_owned()),
        "bob's messages went too"
    );
    let (status, _) = send(
        &router,
        post.clone(),
        "/login",
        None,
        json!({"user": "bob"}),
    )
    .await;
    assert_eq!(status, S::OK, "bob's name is free again");
    let (status, _) = send(
        &router,
        post.clone(),
        "/login",
        None,
        json!({"user": "alice"}),
    )
    .await;
    assert_eq!(status, S::CONFLICT, "alice's name is still hers");
    for room in [talked, watched] {
        let path = format!("/rooms/{room}/messages");
        let (status, _) = send(&router, post.clone(), &path, Some(&alice), message.clone()).await;
        assert_eq!(status, S::ACCEPTED, "{room}");
    }

    // The stream closes; after another idle period everything unused goes.
    drop(stream);
    tokio::time::advance(Duration::from_secs(61)).await;
    chat.expire_idle().await;
    let (_, stats) = send(&router, Method::GET, "/stats", None, Value::Null).await;
    assert_eq!(
        (stats["rooms"].clone(), stats["users"].clone()),
        (json!(0), json!(0)),
        "{stats}"
    );
    let (status, _) = send(
        &router,
        post,
        &format!("/rooms/{watched}/messages"),
        None,
        message,
    )
    .await;
    assert_eq!(status, S::NOT_FOUND);
}

/// With a shared store (Redis, NATS) two processes expire idle names and rooms together: a use
/// on either keeps a record (a post, a login, a stream open on the other process), and once
/// nothing used it for the idle time, whichever process looks first removes it, with its
/// topic, for both. Wall-clock times with margins of over a second.
async fn shared_idle_claims_and_empty_rooms_expire(
    a: (Router, chat::Chat),
    b: (Router, chat::Chat),
) {
    use axum::http::StatusCode as S;
    let ((router_a, chat_a), (router_b, chat_b)) = (a, b);
    let post = Method::POST;
    let login = |router: Router, user: &'static str| async move {
        send(
            &router,
            Method::POST,
            "/login",
            None,
            json!({ "user": user }),
        )
        .await
    };
    let (status, alice) = login(router_a.clone(), "alice").await;
    assert_eq!(status, S::OK);
    let alice = alice["token"].as_str().unwrap().to_owned();
    assert_eq!(login(router_a.clone(), "bob").await.0, S::OK);
    let mut rooms = vec![];
    for _ in 0..3 {
        let (status, room) = send(&router_a, post.clone(), "/rooms", None, Value::Null).await;
        assert_eq!(status, S::CREATED);
        rooms.push(room["room"].as_str().unwrap().to_owned());
    }
    let (talked, watched, empty) = (&rooms[0], &rooms[1], &rooms[2]);
    // A stream open on `watched` on B only.
    let stream = {
        use tower::ServiceExt as _;
        let request = Request::get(format!("/rooms/{watched}/events"))
            .body(axum::body::Body::empty())
            .unwrap();
        router_b.clone().oneshot(request).await.unwrap()
    };
    assert_eq!(stream.status(), S::OK);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    // alice posts to `talked` on B: both records are used now.
    let message = json!({"user": "alice", "text": "hi"});
    let path = format!("/rooms/{talked}/messages");
    let (status, _) = send(
        &router_b,
        post.clone(),
        &path,
        Some(&alice),
        message.clone(),
    )
    .await;
    assert_eq!(status, S::ACCEPTED);
    assert_eq!(
        chat_a.expire_idle().await,
        (0, 0),
        "nothing is idle for 3 s yet"
    );
    assert_eq!(
        chat_b.expire_idle().await,
        (0, 0),
        "nothing is idle for 3 s yet"
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    // B looks first (and, with its stream open, marks `watched` used), then A. (The
    // processes' own expiry tasks run too, every second: they may have been first.)
    chat_b.expire_idle().await;
    chat_a.expire_idle().await;
    for router in [&router_a, &router_b] {
        let path = format!("/rooms/{empty}/messages");
        let (status, _) = send(router, post.clone(), &path, None, message.clone()).await;
        assert_eq!(status, S::NOT_FOUND, "the empty room is gone everywhere");
    }
    assert_eq!(
        login(router_b.clone(), "bob").await.0,
        S::OK,
        "bob is free again"
    );
    assert_eq!(
        login(router_b.clone(), "alice").await.0,
        S::CONFLICT,
        "alice's name is still hers"
    );
    for room in [talked, watched] {
        let path = format!("/rooms/{room}/messages");
        let (status, _) = send(
            &router_a,
            post.clone(),
            &path,
            Some(&alice),
            message.clone(),
        )
        .await;
        assert_eq!(status, S::ACCEPTED, "{room} is kept");
    }

    // The stream closes; after another idle time everything unused goes.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    chat_a.expire_idle().await;
    chat_b.expire_idle().await;
    for room in [talked, watched] {
        let path = format!("/rooms/{room}/messages");
        let (status, _) = send(&router_b, post.clone(), &path, None, message.clone()).await;
        assert_eq!(status, S::NOT_FOUND, "{room} is gone");
    }
    // Nothing is left counted (on NATS a removed key's marker counted against the caps
    // forever: found in review).
    chat_a.expire_idle().await;
    for router in [&router_a, &router_b] {
        let (_, stats) = send(router, Method::GET, "/stats", None, Value::Null).await;
        assert_eq!(
            (stats["rooms"].clone(), stats["users"].clone()),
            (json!(0), json!(0)),
            "{stats}"
        );
    }
    assert_eq!(
        login(router_a, "alice").await.0,
        S::OK,
        "alice is free again"
    );
}

fn short_idle() -> chat::Config {
    chat::Config {
        claim_idle: Duration::from_secs(3),
        room_idle: Duration::from_secs(3),
        ..chat::Config::default()
    }
}

#[tokio::test]
async fn on_redis_idle_claims_and_empty_rooms_expire() {
    let Some(redis) = support::redis::RedisServer::start().await else {
        return;
    };
    let shutdown = Shutdown::new();
    let config = short_idle();
    let a = chat::app_on_redis(&config, &shutdown, &redis.url())
        .await
        .unwrap();
    let b = chat::app_on_redis(&config, &shutdown, &redis.url())
        .await
        .unwrap();
    shared_idle_claims_and_empty_rooms_expire(a, b).await;
    shutdown.trigger();
}

#[tokio::test]
async fn on_nats_idle_claims_and_empty_rooms_expire() {
    let Some(nats) = support::nats::NatsServer::start().await else {
        return;
    };
    let shutdown = Shutdown::new();
    let config = short_idle();
    let a = chat::app_on_nats(&config, &shutdown, &nats.url())
        .await
        .unwrap();
    let b = chat::app_on_nats(&config, &shutdown, &nats.url())
        .await
        .unwrap();
    shared_idle_claims_and_empty_rooms_expire(a, b).await;
    shutdown.trigger();
}
