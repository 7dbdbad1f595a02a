//! Active subscriptions: a subscription event when a subscription starts and when it ends
//! (private updates of type `mercure` on
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`), and the registry
//! the subscription API reads.
//!
//! The registry is the crate's presence ([`tower_sse::hub::Presence`]): on Redis or NATS it is
//! the union of every process's subscriptions, and when a process crashes its subscriptions
//! expire; one live process (the one the crate names, `handled_here`) announces that they
//! ended.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tower_sse::{
    Event,
    hub::{self, Hub, PresenceChange, PrivateEvent},
};

use crate::topic::{Everything, MatchType};

/// RFC 6570 simple expansion: everything but the unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The presence space of the hub's subscriptions.
const SPACE: &str = "mercure/subscriptions";

/// One matcher of one connection.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: MatchType,
    pub matcher: String,
    pub payload: Option<Value>,
}

/// The registry of the hub's subscriptions, and the hub's last event id.
pub struct Presence {
    hub: Hub,
    presence: hub::Presence,
    /// The hub URL's path (`/.well-known/mercure`).
    base: String,
    /// The id of the last event this process saw, any topic.
    last_id: Arc<Mutex<Option<String>>>,
}

impl Presence {
    /// A registry for `hub`, a task that follows the hub's last event id, and one that
    /// announces the end of a crashed process's subscriptions.
    pub fn new(hub: Hub, base: &str) -> Arc<Self> {
        let last_id = Arc::new(Mutex::new(None));
        let presence = Arc::new(Self {
            hub: hub.clone(),
            presence: hub.presence(),
            base: base.to_owned(),
            last_id: last_id.clone(),
        });
        let registry = presence.presence.clone();
        let announcer = hub.clone();
        let mut changes = registry.events();
        tokio::spawn(async move {
            // Joins and leaves of live connections are announced by their own process (in
            // `join` and `Guard`); an expiry by the one process named to handle it.
            loop {
                while let Some(change) = changes.next().await {
                    tracing::debug!(?change, "presence");
                    if change.change() == PresenceChange::Expired && change.handled_here() {
                        if let Ok(mut doc) = serde_json::from_str::<Value>(change.member().meta()) {
                            doc["active"] = Value::Bool(false);
                            announce(&announcer, &doc).await;
                        }
                    }
                }
                // Fell more than the crate's buffer behind (a burst larger than it): follow
                // again, from now. The expiries of that burst go unannounced.
                tracing::warn!("presence events fell behind; following them again");
                changes = registry.events();
            }
        });
        tokio::spawn(async move {
            // Every event of the hub, private ones included, only to note its id.
            loop {
                let all = hub
                    .subscription()
                    .pattern(Everything)
                    .private_access(|_: &PrivateEvent<'_>| true)
                    .subscribe()
                    .await;
                let Ok(mut all) = all else {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                };
                while let Some(event) = all.next().await {
                    if let Some(id) = event.id() {
                        *lock(&last_id) = Some(id.to_owned());
                    }
                }
            }
        });
        presence
    }

    /// The id of the last event dispatched (as this process saw it), or `earliest`.
    pub fn last_event_id(&self) -> String {
        lock(&self.last_id)
            .clone()
            .unwrap_or_else(|| "earliest".into())
    }

    /// The topic (and document id) of one subscription.
    pub fn topic(&self, kind: MatchType, matcher: &str, subscriber: &str) -> String {
        format!(
            "{}/subscriptions/{}/{}/{}",
            self.base,
            kind.as_str(),
            utf8_percent_encode(matcher, COMPONENT),
            utf8_percent_encode(subscriber, COMPONENT)
        )
    }

    fn document(&self, entry: &Entry, subscriber: &str, active: bool) -> Value {
        let id = self.topic(entry.kind, &entry.matcher, subscriber);
        let mut doc = json!({
            "id": id,
            "type": "subscription",
            "match_type": entry.kind.as_str(),
            "match": entry.matcher,
            "subscriber": subscriber,
            "active": active,
        });
        if let Some(payload) = &entry.payload {
            doc["payload"] = payload.clone();
        }
        doc
    }

    /// Registers a connection's matchers (on every process) and announces them; the guard
    /// ends them and announces their end when dropped.
    pub async fn join(self: &Arc<Self>, entries: Vec<Entry>, subscriber: String) -> Guard {
        let mut members = Vec::with_capacity(entries.len());
        for entry in &entries {
            let doc = self.document(entry, &subscriber, true);
            let key = doc["id"].as_str().unwrap_or_default().to_owned();
            // A document is far under the limit: the token's payload came in a bounded header.
            match self.presence.join(SPACE, key, doc.to_string()) {
                Ok(member) => members.push(member),
                Err(err) => tracing::warn!(error = %err, "subscription not registered"),
            }
            announce(&self.hub, &doc).await;
        }
        Guard {
            presence: self.clone(),
            entries,
            subscriber,
            members,
        }
    }

    /// The live subscriptions of every process whose `match_type` and `match` are the given
    /// ones (all when `None`), and the one of `subscriber` when given; sorted by id.
    pub fn list(&self, filter: Option<(&str, &str)>, subscriber: Option<&str>) -> Vec<Value> {
        let mut docs: Vec<Value> = self
            .presence
            .members(SPACE)
            .iter()
            .filter_map(|member| serde_json::from_str::<Value>(member.meta()).ok())
            .filter(|doc| {
                filter.is_none_or(|(kind, matcher)| {
                    doc["match_type"] == kind && doc["match"] == matcher
                }) && subscriber.is_none_or(|s| doc["subscriber"] == s)
            })
            .collect();
        docs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        docs.dedup_by(|a, b| a["id"] == b["id"]);
        docs
    }
}

/// Publishes a subscription document as a private `mercure` update on its own topic.
async fn announce(hub: &Hub, doc: &Value) {
    let topic = doc["id"].as_str().unwrap_or_default();
    let event = Event::new().event("mercure").data(doc.to_string());
    if let Err(err) = hub.publisher(&[topic]).private().publish(event).await {
        tracing::warn!(error = %err, topic, "subscription event not published");
    }
}

/// A connection's place in the registry: dropping it ends its subscriptions there (on every
/// process) and announces their end.
pub struct Guard {
    presence: Arc<Presence>,
    entries: Vec<Entry>,
    subscriber: String,
    members: Vec<hub::Member>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.members.clear();
        let presence = &self.presence;
        let docs: Vec<Value> = self
            .entries
            .iter()
            .map(|entry| presence.document(entry, &self.subscriber, false))
            .collect();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = presence.hub.clone();
        runtime.spawn(async move {
            for doc in &docs {
                announce(&hub, doc).await;
            }
        });
    }
}

/// A random `urn:uuid:` (version 4): a connection's subscriber id, an update's id.
pub fn urn_uuid() -> String {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
