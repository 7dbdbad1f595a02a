//! What the crate reports through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`); without the feature every call here is empty and compiles away.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `tower_sse_connections` | gauge | open SSE response bodies |
//! | `tower_sse_events_total` | counter | events written to clients (each delivery counts) |
//! | `tower_sse_bytes_total` | counter | bytes of SSE frames written to clients, keep-alive comments included (compressed bytes, where [`SseLayer::compression`](crate::SseLayer::compression) compressed them) |
//! | `tower_sse_hub_published_total` | counter | events published into a hub |
//! | `tower_sse_slow_disconnects_total` | counter | hub subscriptions ended for falling behind |
//! | `tower_sse_stalled_total` | counter | HTTP/2 streams reset because their client took no frame for the stall timeout ([`SseLayer::stall_timeout`](crate::SseLayer::stall_timeout)) |
//! | `tower_sse_refused_total{limit}` | counter | event streams answered `429` for a cap ([`SseLayer::max_streams`](crate::SseLayer::max_streams)): `limit` is `total` or `client` |
//! | `tower_sse_broker_connected{broker}` | gauge | 1 while the hub's reader is connected to its broker (`broker`: `redis`, `nats`), 0 while it reconnects (subscriptions then answer `Unavailable`); several hubs on one kind of broker in a process share the series (the last change wins) |
//! | `tower_sse_broker_gaps_total{broker}` | counter | gaps the broker's reader signalled (entries it could not deliver: trimmed before it read them, unreadable, or a broker that lost them); each ends the affected streams with `history-lost` on resume |
//! | `tower_sse_replays_total{outcome}` | counter | hub subscriptions by how their `Last-Event-ID` was honoured: `outcome` is `none`, `complete` or `history-lost` |
//!
//! No label carries a topic, a client or a request path: their number is unbounded. A route
//! label is opt-in and fixed per layer: [`SseLayer::metrics_route`](crate::SseLayer::metrics_route)
//! gives `tower_sse_connections`, `tower_sse_events_total` and `tower_sse_bytes_total` of the
//! streams it serves a `route` label with a name you choose (one layer per route, so as many
//! values as you have layers). Counting is done once
//! per frame (not per byte) and once per publish, so it stays off the per-subscriber path
//! except for one counter update per frame.
//!
//! A stream's three series are looked up once, when its response body is made, and updated
//! through their handles: install the recorder before serving (as exporters ask anyway); a
//! stream opened before it was installed is not counted by it.

use crate::replay::Replay;

/// The `route` label a layer gives its streams' metrics
/// ([`SseLayer::metrics_route`](crate::SseLayer::metrics_route)), if any.
pub(crate) type Route = Option<&'static str>;

/// One open SSE body's metrics: counts it in `tower_sse_connections` for as long as it lives,
/// and its frames and events.
///
/// The series are looked up once, when the body is made, and the body keeps their handles:
/// a frame costs one counter update, not a lookup through the facade (a thread-local access
/// and a registry lookup, even with no recorder installed). So a recorder installed after a
/// body was made does not see that body.
///
/// `repr(C)`: the two handles a frame uses first (the body keeps them last among its hot
/// fields, `body.rs`).
#[repr(C)]
pub(crate) struct Open {
    #[cfg(feature = "metrics")]
    events: ::metrics::Counter,
    #[cfg(feature = "metrics")]
    bytes: ::metrics::Counter,
    #[cfg(feature = "metrics")]
    connections: ::metrics::Gauge,
}

impl Open {
    #[inline]
    pub(crate) fn new(route: Route) -> Self {
        #[cfg(feature = "metrics")]
        {
            let (connections, events, bytes) = match route {
                None => (
                    ::metrics::gauge!("tower_sse_connections"),
                    ::metrics::counter!("tower_sse_events_total"),
                    ::metrics::counter!("tower_sse_bytes_total"),
                ),
                Some(route) => (
                    ::metrics::gauge!("tower_sse_connections", "route" => route),
                    ::metrics::counter!("tower_sse_events_total", "route" => route),
                    ::metrics::counter!("tower_sse_bytes_total", "route" => route),
                ),
            };
            connections.increment(1.0);
            Self {
                connections,
                events,
                bytes,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = route;
            Self {}
        }
    }

    /// A frame of `bytes` bytes went to the client.
    #[inline]
    pub(crate) fn frame(&self, bytes: usize) {
        #[cfg(feature = "metrics")]
        self.bytes.increment(bytes as u64);
        #[cfg(not(feature = "metrics"))]
        let _ = bytes;
    }

    /// A frame with `events` events went to the client.
    #[inline]
    pub(crate) fn events(&self, events: usize) {
        #[cfg(feature = "metrics")]
        self.events.increment(events as u64);
        #[cfg(not(feature = "metrics"))]
        let _ = events;
    }
}

impl Drop for Open {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.connections.decrement(1.0);
    }
}

/// An event was published into a hub.
#[inline]
pub(crate) fn published() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_hub_published_total").increment(1);
}

/// A hub subscription was cut for falling behind.
#[inline]
pub(crate) fn slow_disconnect() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_slow_disconnects_total").increment(1);
}

/// The broker's reader connected (`true`) or lost its connection (`false`).
#[inline]
#[cfg_attr(not(feature = "_broker"), allow(dead_code))]
pub(crate) fn broker_connected(broker: &'static str, up: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!("tower_sse_broker_connected", "broker" => broker)
        .set(f64::from(u8::from(up)));
    #[cfg(not(feature = "metrics"))]
    let _ = (broker, up);
}

/// The broker's reader signalled a gap.
#[inline]
#[cfg_attr(not(feature = "_broker"), allow(dead_code))]
pub(crate) fn broker_gap(broker: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_broker_gaps_total", "broker" => broker).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = broker;
}

/// A stream was reset for a stall (its client took no frame for the stall timeout).
#[inline]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn stalled() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_stalled_total").increment(1);
}

/// An event stream was refused (`429`) for the cap named by `limit` (`total`, `client`).
#[inline]
pub(crate) fn refused(limit: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_refused_total", "limit" => limit).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

/// A hub subscription started, with this replay outcome.
#[inline]
pub(crate) fn replay(outcome: Replay) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_sse_replays_total", "outcome" => outcome.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}
