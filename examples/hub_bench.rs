//! Publish-to-deliver latency and delivered events/s through the hub: in memory, Redis and
//! NATS JetStream, same run, same machine (the numbers in `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release --example hub_bench       # starts its own redis-server and nats-server
//! REDIS_URL=redis://127.0.0.1:6379 NATS_URL=nats://127.0.0.1:4222 cargo run --release --example hub_bench
//! ```
//!
//! Environment: `SUBSCRIBERS` (default 100), `EVENTS` (per phase, default 20000), `RATE` (events
//! per second for the latency phase, default 2000).
//!
//! For each backend two phases run: **paced** (one publisher at `RATE`, latency measured from
//! a timestamp in each event to its arrival at every subscriber), then **flat out** (one
//! publisher as fast as the backend takes events, delivered events/s over all subscribers).
//! With a broker the publisher and the subscribers are on two different hubs, as two
//! processes would be (each with its own connections), so every event crosses the broker.
//! Bounded: the number of events is fixed and each phase gives up after 60 s.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use tower_sse::{
    Event,
    hub::{Hub, NatsBroker, RedisBackend},
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Phase {
    delivered: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs one phase: `subscribers` on `sub_hub`, `events` published on `pub_hub` at `rate` (0 =
/// flat out).
async fn phase(
    pub_hub: &Hub,
    sub_hub: &Hub,
    topic: &str,
    subscribers: usize,
    events: usize,
    rate: usize,
) -> Phase {
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut sub = sub_hub.subscribe(topic).await.expect("subscribe");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(events);
            let mut got = 0;
            while got < events {
                let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_secs(60), sub.next()).await
                else {
                    break;
                };
                got += 1;
                let text = std::str::from_utf8(event.as_bytes()).unwrap_or("");
                if let Some(sent) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .and_then(|d| d.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let now = epoch.elapsed().as_micros() as u64;
                    latencies.push(now.saturating_sub(sent));
                }
            }
            (got, latencies)
        }));
    }
    // Let the subscriptions settle (with Redis, the reader has to pick the topic up).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let pad = "x".repeat(100);
    for i in 0..events {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = epoch.elapsed().as_micros();
        pub_hub
            .publish(topic, Event::new().data(format!("{sent} {pad}")))
            .await
            .expect("publish");
    }
    let mut delivered = 0;
    let mut latencies_us = Vec::new();
    for task in tasks {
        let (got, latencies) = task.await.expect("subscriber task");
        delivered += got;
        latencies_us.extend(latencies);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    Phase {
        delivered,
        seconds,
        latencies_us,
    }
}

/// A throw-away redis-server on a free loopback port (no persistence).
fn spawn_redis() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    (child, format!("redis://127.0.0.1:{port}"))
}

/// A throw-away `nats-server -js` on a free loopback port, storing in a fresh directory.
fn spawn_nats() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("hub-bench-nats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    (child, format!("nats://127.0.0.1:{port}"))
}

#[tokio::main]
async fn main() {
    let subscribers = env_or("SUBSCRIBERS", 100);
    let events = env_or("EVENTS", 20_000);
    let rate = env_or("RATE", 2000);
    let mut children = Vec::new();
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            let (child, url) = spawn_redis();
            children.push(child);
            url
        }
    };
    let nats_url = match std::env::var("NATS_URL") {
        Ok(url) => url,
        Err(_) => {
            let (child, url) = spawn_nats();
            children.push(child);
            url
        }
    };
    let connect_nats = async || {
        for _ in 0..100 {
            if let Ok(broker) = NatsBroker::connect(&nats_url).await {
                let name = format!("HUB_BENCH_{}", std::process::id());
                return broker.subject_prefix(name.to_lowercase()).stream_name(name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("error: cannot reach NATS at {nats_url}");
        std::process::exit(1);
    };
    let connect = async || {
        for _ in 0..100 {
            if let Ok(backend) = RedisBackend::connect(&url).await {
                return backend.key_prefix(format!("hub_bench:{}:", std::process::id()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("error: cannot reach Redis at {url}");
        std::process::exit(1);
    };
    let capacity = events.next_power_of_two();
    let memory = Hub::builder()
        .subscriber_capacity(capacity)
        .history_events(events)
        .build();
    let publisher = Hub::builder()
        .history_events(events)
        .redis(connect().await)
        .build();
    let receiver = Hub::builder()
        .subscriber_capacity(capacity)
        .history_events(events)
        .redis(connect().await)
        .build();
    let nats_publisher = Hub::builder()
        .history_events(events)
        .nats(connect_nats().await)
        .build();
    let nats_receiver = Hub::builder()
        .subscriber_capacity(capacity)
        .history_events(events)
        .nats(connect_nats().await)
        .build();

    println!(
        "{subscribers} subscribers, {events} events of ~120 B per phase, paced at {rate}/s, then flat out"
    );
    println!();
    println!(
        "| backend | p50 latency | p99 latency | max | flat out: published/s | delivered events/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, pub_hub, sub_hub) in [
        ("in memory", &memory, &memory),
        ("Redis (2 hubs)", &publisher, &receiver),
        ("NATS JetStream (2 hubs)", &nats_publisher, &nats_receiver),
    ] {
        let paced = phase(pub_hub, sub_hub, "paced", subscribers, events, rate).await;
        let flat = phase(pub_hub, sub_hub, "flat", subscribers, events, 0).await;
        let complete =
            paced.delivered == subscribers * events && flat.delivered == subscribers * events;
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.0} |{}",
            paced.percentile(0.50),
            paced.percentile(0.99),
            paced.percentile(1.0),
            events as f64 / flat.seconds,
            flat.delivered as f64 / flat.seconds,
            if complete {
                ""
            } else {
                " (incomplete delivery!)"
            },
        );
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
