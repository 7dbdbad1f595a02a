//! The `metrics` feature, read back through a real exporter (Prometheus text format).

mod support;

use std::task::Context;

use futures_util::{FutureExt, StreamExt, task::noop_waker_ref};
use http_body::Body;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower_sse::{Event, SseBody, hub::Hub};

/// The value of a sample line `name value` (or `name{labels} value`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Runs `test` on a current-thread runtime (time and I/O) with a Prometheus recorder local to
/// it; `test` gets the recorder's handle to render what was recorded.
fn recorded<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(metrics_exporter_prometheus::PrometheusHandle) -> F,
) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test(handle)));
}

#[test]
fn connections_events_bytes_publishes_and_replays_are_counted() {
    recorded(|handle| async move {
        let hub = Hub::new();
        let sub = hub.subscribe("t").now_or_never().unwrap().unwrap();
        let mut body = Box::pin(SseBody::new(sub));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        let text = handle.render();
        assert_eq!(value(&text, "tower_sse_connections"), Some(1.0), "{text}");

        let sent = hub
            .publish("t", Event::new().data("x"))
            .now_or_never()
            .unwrap()
            .unwrap();
        hub.publish("t", Event::new().data("y"))
            .now_or_never()
            .unwrap()
            .unwrap();
        // Both are ready: one frame, two events.
        let frame = body.as_mut().poll_frame(&mut cx);
        let bytes = match frame {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap().len(),
            _ => panic!("no frame"),
        };
        let lost = hub
            .subscriber("t")
            .last_event_id(Some("from elsewhere"))
            .subscribe()
            .now_or_never()
            .unwrap()
            .unwrap();
        let complete = hub
            .subscriber("t")
            .last_event_id(sent.id())
            .subscribe()
            .now_or_never()
            .unwrap()
            .unwrap();
        drop((body, lost, complete));

        let text = handle.render();
        assert_eq!(value(&text, "tower_sse_connections"), Some(0.0), "{text}");
        assert_eq!(value(&text, "tower_sse_events_total"), Some(2.0), "{text}");
        assert_eq!(
            value(&text, "tower_sse_bytes_total"),
            Some(bytes as f64),
            "{text}"
        );
        assert_eq!(
            value(&text, "tower_sse_hub_published_total"),
            Some(2.0),
            "{text}"
        );
        let replays = |outcome: &str| {
            value(
                &text,
                &format!("tower_sse_replays_total{{outcome=\"{outcome}\"}}"),
            )
        };
        assert_eq!(replays("none"), Some(1.0), "{text}");
        assert_eq!(replays("history-lost"), Some(1.0), "{text}");
        assert_eq!(replays("complete"), Some(1.0), "{text}");
    });
}

#[test]
fn slow_disconnects_are_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let hub = Hub::builder().subscriber_capacity(2).build();
        let mut sub = hub.subscribe("t").now_or_never().unwrap().unwrap();
        for _ in 0..5 {
            hub.publish("t", Event::new().data("x"))
                .now_or_never()
                .unwrap()
                .unwrap();
        }
        let next = futures_util::StreamExt::next(&mut sub).now_or_never();
        assert!(matches!(next, Some(None)), "cut for falling behind");
    });
    let text = handle.render();
    assert_eq!(
        value(&text, "tower_sse_slow_disconnects_total"),
        Some(1.0),
        "{text}"
    );
}

/// The broker's health: `tower_sse_broker_connected{broker="redis"}` follows the reader (1,
/// 0 while its Redis is down, 1 again), and a Redis that comes back without the entries the
/// reader had read (wiped, then restarted) is a signalled gap,
/// `tower_sse_broker_gaps_total{broker="redis"}`.
#[test]
fn broker_connection_and_gaps_are_counted() {
    recorded(|handle| async move {
        let Some(mut redis) = support::redis::RedisServer::start().await else {
            return;
        };
        let connected = r#"tower_sse_broker_connected{broker="redis"}"#;
        let gaps = r#"tower_sse_broker_gaps_total{broker="redis"}"#;
        // Polls the exporter until `series` has `want` (at most 20 s).
        let until = |series: &'static str, want: f64| {
            let handle = handle.clone();
            async move {
                for _ in 0..200 {
                    if value(&handle.render(), series) == Some(want) {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                panic!("{series} never became {want}:\n{}", handle.render());
            }
        };
        let backend = tower_sse::hub::RedisBackend::connect(&redis.url())
            .await
            .unwrap();
        let hub = Hub::builder().redis(backend).build();
        let _sub = hub.subscribe("t").await.unwrap();
        until(connected, 1.0).await;
        for n in 0..3 {
            hub.publish("t", Event::new().data(n.to_string()))
                .await
                .unwrap();
        }
        assert_eq!(value(&handle.render(), gaps), None, "no gap yet");
        redis.command(&["FLUSHALL"]).await;
        redis.kill().await;
        until(connected, 0.0).await;
        redis.restart().await;
        until(connected, 1.0).await;
        until(gaps, 1.0).await;
    });
}

/// `SseLayer::metrics_route`: the layer's streams are counted under `route="rooms"`, apart from
/// the unlabelled series.
#[test]
fn a_layer_can_label_its_streams_with_a_route() {
    use tower::{ServiceBuilder, ServiceExt};
    recorded(|handle| async move {
        let service = ServiceBuilder::new()
            .layer(tower_sse::SseLayer::new().metrics_route("rooms"))
            .service_fn(|_: http::Request<()>| async {
                let events = futures_util::stream::iter([Event::new().data("x")])
                    .chain(futures_util::stream::pending());
                Ok::<_, std::convert::Infallible>(http::Response::new(tower_sse::EventStream::new(
                    events,
                )))
            });
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let mut body = Box::pin(response.into_body());
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: x\n\n");
        let text = handle.render();
        let labelled = |name: &str| value(&text, &format!("{name}{{route=\"rooms\"}}"));
        assert_eq!(labelled("tower_sse_connections"), Some(1.0), "{text}");
        assert_eq!(labelled("tower_sse_events_total"), Some(1.0), "{text}");
        assert_eq!(labelled("tower_sse_bytes_total"), Some(9.0), "{text}");
        assert_eq!(value(&text, "tower_sse_events_total "), None, "{text}");
        drop(body);
        let text = handle.render();
        assert_eq!(
            value(&text, "tower_sse_connections{route=\"rooms\"}"),
            Some(0.0),
            "{text}"
        );
    });
}
