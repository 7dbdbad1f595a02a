//! Active subscriptions: a subscription event when a subscription starts and when it ends
//! (private updates of type `mercure` on
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`), and the registry
//! the subscription API reads.
//!
//! The registry is this process's: with `REDIS_URL` or `NATS_URL` the events reach every
//! process (they are updates like others), but the API lists the subscriptions of the process
//! that answers, and a crashed process's subscriptions are never announced as ended.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tower_sse::{
    Event,
    hub::{Hub, PrivateEvent},
};

use crate::topic::{Everything, MatchType};

/// RFC 6570 simple expansion: everything but the unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One matcher of one connection.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: MatchType,
    pub matcher: String,
    pub payload: Option<Value>,
}

/// The registry of this process's subscriptions, and the hub's last event id.
pub struct Presence {
    hub: Hub,
    /// The hub URL's path (`/.well-known/mercure`).
    base: String,
    /// Subscription documents by topic.
    live: Mutex<BTreeMap<String, Value>>,
    /// The id of the last event this process saw, any topic.
    last_id: Arc<Mutex<Option<String>>>,
}

impl Presence {
    /// A registry for `hub`, and a task that follows the hub's last event id.
    pub fn new(hub: Hub, base: &str) -> Arc<Self> {
        let last_id = Arc::new(Mutex::new(None));
        let presence = Arc::new(Self {
            hub: hub.clone(),
            base: base.to_owned(),
            live: Mutex::new(BTreeMap::new()),
            last_id: last_id.clone(),
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

    /// Registers a connection's matchers and announces them; the guard announces their end
    /// when dropped.
    pub async fn join(self: &Arc<Self>, entries: Vec<Entry>, subscriber: String) -> Guard {
        let mut docs = Vec::with_capacity(entries.len());
        {
            let mut live = lock(&self.live);
            for entry in &entries {
                let doc = self.document(entry, &subscriber, true);
                live.insert(
                    doc["id"].as_str().unwrap_or_default().to_owned(),
                    doc.clone(),
                );
                docs.push(doc);
            }
        }
        for doc in &docs {
            announce(&self.hub, doc).await;
        }
        Guard {
            presence: self.clone(),
            entries,
            subscriber,
        }
    }

    /// The live subscriptions whose `match_type` and `match` are the given ones (all when
    /// `None`), and the one of `subscriber` when given.
    pub fn list(&self, filter: Option<(&str, &str)>, subscriber: Option<&str>) -> Vec<Value> {
        lock(&self.live)
            .values()
            .filter(|doc| {
                filter.is_none_or(|(kind, matcher)| {
                    doc["match_type"] == kind && doc["match"] == matcher
                }) && subscriber.is_none_or(|s| doc["subscriber"] == s)
            })
            .cloned()
            .collect()
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

/// A connection's place in the registry: dropping it announces the end of its subscriptions.
pub struct Guard {
    presence: Arc<Presence>,
    entries: Vec<Entry>,
    subscriber: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let presence = &self.presence;
        let docs: Vec<Value> = {
            let mut live = lock(&presence.live);
            self.entries
                .iter()
                .map(|entry| {
                    let doc = presence.document(entry, &self.subscriber, false);
                    live.remove(doc["id"].as_str().unwrap_or_default());
                    doc
                })
                .collect()
        };
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
