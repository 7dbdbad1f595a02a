#!/usr/bin/env bash
# Item 5 of issue 16: CLIENTS (default 100,000) concurrent SSE connections on this machine, the
# server memory per connection, and the time one broadcast takes to reach all of them.
#
#   benches/c100k.sh                          # 100,000 clients, 10 broadcasts, one a second
#   CLIENTS=19000 benches/c100k.sh            # one server process, when the file limit allows
#   PER_PROCESS=15000 BROADCASTS=5 benches/c100k.sh
#
# One process can hold only as many connections as its open-file limit (`ulimit -Hn`, 20,000 on
# this machine, which cannot raise it: no CAP_SYS_RESOURCE). So the clients are split over
# ceil(CLIENTS / PER_PROCESS) `bench_server` processes (SERVE=tower, the lean writer), each on
# its own port, sharing the topic through the hub's Redis Streams broker (REDIS_URL) on a
# `redis-server` this script starts on a free loopback port: one publish to the first server
# reaches the streams of all, which is how a deployment goes past one process's limit. Each
# server gets its own subscribe-only load generator (`--publishers 0 --expect`); one server port
# takes about 28,000 connections from 127.0.0.1 (past that, `--sources`). When all are
# connected, one more load generator publishes BROADCASTS events, RATE a second, to the first
# server. Every time is in nanoseconds since the Unix epoch (`--wall-clock`), so the latencies
# of all load generators merge into one histogram.
#
# Prints: connections, server RSS growth per connection (summed over the servers, measured by
# each load generator after connecting), Redis's RSS, and the latency from the publisher's
# write to each client's read, p50 / p99 / max over every delivery, with lost events.
# Loopback only; every process is started here and stopped by PID; each step is bounded by
# `timeout` and the load generators' own limits.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100000}
BROADCASTS=${BROADCASTS:-10}
RATE=${RATE:-1}
SIZE=${SIZE:-128}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d -t tower-sse-c100k.XXXXXX)}
mkdir -p "$OUT"

ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)
PER_PROCESS=${PER_PROCESS:-$((LIMIT - 1000))}
if [ "$PER_PROCESS" -ge "$LIMIT" ]; then
    echo "PER_PROCESS=$PER_PROCESS does not fit the file limit $LIMIT" >&2
    exit 1
fi
PROCESSES=$(((CLIENTS + PER_PROCESS - 1) / PER_PROCESS))
# Each server has its own port, so the kernel's ephemeral range (about 28,000 ports) serves each
# load generator's connections without binding; past that, connect from several loopback
# addresses (binding each socket to a port is slow once tens of thousands are taken).
SOURCES=$(((PER_PROCESS + 24999) / 25000))
[ "$SOURCES" -gt 1 ] || SOURCES=0
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
[ -n "$REDIS_SERVER" ] || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }

cargo build --release --quiet --example bench_server --example loadgen
BIN=$CARGO_TARGET_DIR/release/examples

# shellcheck source=benches/lib.sh
. benches/lib.sh
PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_all EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Redis, on a free port, keeping nothing on disk.
REDIS_PORT=$(free_port)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT" --maxclients 1000 >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for_line redis-server "$OUT/redis.log" "Ready to accept" "$REDIS_PID" 10

echo "c100k: $CLIENTS clients over $PROCESSES servers (at most $PER_PROCESS each, file limit $LIMIT)," \
    "$SOURCES extra source addresses, $BROADCASTS broadcasts at $RATE/s; Redis on $REDIS_PORT; output in $OUT"

# The servers.
URLS=()
SERVER_PIDS=()
for i in $(seq "$PROCESSES"); do
    log=$OUT/server.$i.log
    REDIS_URL=redis://127.0.0.1:$REDIS_PORT PORT=0 SERVE=tower "$BIN/bench_server" >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_PIDS+=("$SERVER_PID")
    wait_listening "server $i" "$log" 10
    URLS+=("$URL")
done

# The subscribers: one load generator per server, one after another (connecting is the
# expensive part; doing it in turn keeps each server's RSS reading its own).
# Each subscriber waits for the others to connect, then for the broadcasts.
DRAIN=$(python3 -c "print(int($BROADCASTS / $RATE + 60 * $PROCESSES + 120))")
LEFT=$CLIENTS
for i in $(seq "$PROCESSES"); do
    n=$((LEFT < PER_PROCESS ? LEFT : PER_PROCESS))
    LEFT=$((LEFT - n))
    timeout $((DRAIN + 400)) "$BIN/loadgen" --url "${URLS[$((i - 1))]}" \
        --server-pid "${SERVER_PIDS[$((i - 1))]}" --clients "$n" --publishers 0 \
        --expect "$BROADCASTS" --wall-clock --sources "$SOURCES" --drain "$DRAIN" --quiet 10 \
        --settle 0 --json --label "subscribers.$i" >"$OUT/sub.$i.json" 2>"$OUT/sub.$i.log" &
    PIDS+=("$!")
    wait_for_line "load generator $i" "$OUT/sub.$i.log" "connected, expecting" "$!" 300
    echo "  $(grep "connected, expecting" "$OUT/sub.$i.log" | head -n 1) (server $i)"
done
SUB_PIDS=("${PIDS[@]:$((1 + PROCESSES))}")

# One publisher, to the first server.
sleep 2
timeout $((DRAIN + 60)) "$BIN/loadgen" --url "${URLS[0]}" --clients 0 --rate "$RATE" \
    --duration "$(python3 -c "print(($BROADCASTS - 0.5) / $RATE)")" --size "$SIZE" \
    --wall-clock --json --label publisher >"$OUT/pub.json" 2>"$OUT/pub.log"
for pid in "${SUB_PIDS[@]}"; do
    wait "$pid" || echo "a subscriber load generator failed: see $OUT/sub.*.log" >&2
done
REDIS_RSS=$(awk '/VmRSS/{print $2}' "/proc/$REDIS_PID/status")

python3 - "$OUT" "$PROCESSES" "$REDIS_RSS" <<'EOF'
import json, sys
out, processes, redis_rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pub = json.load(open(f"{out}/pub.json"))
subs = [json.load(open(f"{out}/sub.{i}.json")) for i in range(1, processes + 1)]
published = pub["published"]
connected = sum(s["connected"] for s in subs)
delivered = sum(s["delivered"] for s in subs)
grown = sum(s["rss_connected_kib"] - s["rss_before_kib"] for s in subs)
hist = {}
for s in subs:
    for value, count in s["latency_hist"]:
        hist[value] = hist.get(value, 0) + count
total = sum(hist.values())
def quantile(q):
    rank, seen = max(1, -(-int(q * total * 1000) // 1000)), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value / 1e6
    return float("nan")
worst = max(s["max_ms"] for s in subs)
print(f"connected: {connected} of {sum(s['clients'] for s in subs)} in {processes} servers "
      f"(connect failures {sum(s['connect_failures'] for s in subs)})")
print(f"server RSS: {grown / 1024:.1f} MiB grown for {connected} connections: "
      f"{grown * 1024 / max(connected, 1) / 1024:.2f} KiB per connection; Redis RSS {redis_rss / 1024:.1f} MiB")
print(f"broadcasts: {published} published; delivered {delivered} of {published * connected}, "
      f"lost {published * connected - delivered}, duplicates {sum(s['duplicates'] for s in subs)}, "
      f"closed early {sum(s['closed_early'] for s in subs)}")
if total:
    print(f"publish to client read: p50 {quantile(0.5):.1f} ms, p99 {quantile(0.99):.1f} ms, max {worst:.1f} ms")
print("per server: " + ", ".join(
    f"{s['connected']} conn {(s['rss_connected_kib'] - s['rss_before_kib']) * 1024 / max(s['connected'], 1) / 1024:.2f} KiB"
    f" p99 {s['p99_ms']:.1f} ms max {s['max_ms']:.1f} ms" for s in subs))
EOF
