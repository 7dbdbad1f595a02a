#!/usr/bin/env bash
# Loopback load benchmarks of issue 6: tower-sse (examples/bench_server.rs) against the idiomatic
# axum + tokio broadcast server (examples/bench_peer_axum.rs), driven by examples/loadgen.rs.
#
#   benches/run.sh                 # full run (10 s per publishing scenario), about 2 minutes
#   REPEAT=3 benches/run.sh        # medians of three runs, about 5 minutes
#   DURATION=3 benches/run.sh      # short run
#
# Scenarios, each against a freshly started server:
#   S1     1,000 clients, 200 msg/s of 128 B, DURATION s
#   S1nd   S1 with TCP_NODELAY set on the servers' connections (unless NODELAY=1 already)
#   S1wi   S1 against tower-sse only, with SseLayer::min_write_interval(WRITE_INTERVAL_MS); the
#          table compares it with the peer's plain S1 (the peer has no such setting)
#   S1b    1,000 clients, 20 msg/s of 128 B, DURATION s
#   S2     IDLE_CLIENTS (10,000) idle connections: server RSS growth / connections
#   S2base the same on bench_server's non-SSE GET /hold: what hyper + axum cost alone
#   S2h    S2 and S2base again, tower-sse served by a hand-written HTTP/1.1 accept loop on hyper
#          (bench_server's SERVE=http1) instead of axum::serve
#   S2t    S2 and S2base again on tower_sse::serve (SERVE=tower), the crate's server loop
#   S3     100 clients, S3_PUBLISHERS keep-alive publishers flat out (each with S3_PIPELINE
#          requests in flight, HTTP/1.1 pipelining), DURATION s
# Each server is pinned to core SERVER_CORE (0) with taskset, the load generator to LOAD_CORE (1).
# Servers are started and stopped by PID. Everything is on 127.0.0.1; each run is bounded by
# the load generator's own hard time limit, and by `timeout` around it.
#
# Environment: DURATION (10), REPEAT (1: how many times S1, S1nd, S1b and S3 run; the table shows
# medians), IDLE_CLIENTS (10000), S1_CLIENTS (1000), S3_CLIENTS (100), S3_PUBLISHERS (4),
# S3_PIPELINE (16), SIZE (128), WRITE_INTERVAL_MS (10; 0 skips S1wi), SERVER_CORE (0), LOAD_CORE
# (1), NODELAY (0; 1 sets TCP_NODELAY on both servers' connections everywhere), CARGO_TARGET_DIR
# (target), OUT (a directory for the JSON results and server logs; default a fresh temporary one),
# SERVERS ("tower-sse axum"), TOWER_SERVE (axum: the tower-sse server runs on `axum::serve`, as
# the peer does; tower: on `tower_sse::serve`, the crate's own loop, whose lean HTTP/1.1 writer
# serves the event streams, LEAN=0 hands them to hyper instead; S2h/S2t always use their own), NICE (0; e.g. -10, as root, runs servers and load generator at that
# niceness, so that other work on a shared machine disturbs the measurement less).
#
# Needs: cargo, taskset (util-linux), timeout (coreutils), python3 (the table), Linux /proc.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
S1_CLIENTS=${S1_CLIENTS:-1000}
S3_CLIENTS=${S3_CLIENTS:-100}
S3_PUBLISHERS=${S3_PUBLISHERS:-4}
S3_PIPELINE=${S3_PIPELINE:-16}
SIZE=${SIZE:-128}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
NODELAY=${NODELAY:-0}
SERVERS=${SERVERS:-"tower-sse axum"}
NICE=${NICE:-0}
TOWER_SERVE=${TOWER_SERVE:-axum}
WRITE_INTERVAL_MS=${WRITE_INTERVAL_MS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d -t tower-sse-load.XXXXXX)}
mkdir -p "$OUT"

# One descriptor per connection, in the load generator and in the server.
hard=$(ulimit -Hn)
want=$((IDLE_CLIENTS + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    echo "warning: hard open-file limit $hard < $want; S2 may fail to connect every client" >&2
    ulimit -n "$hard"
else
    ulimit -n "$want"
fi

echo "building release examples (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..." >&2
cargo build --release --quiet --example bench_server --example bench_peer_axum --example loadgen
BIN=$CARGO_TARGET_DIR/release/examples

binary() {
    case $1 in
        tower-sse) echo "$BIN/bench_server" ;;
        axum) echo "$BIN/bench_peer_axum" ;;
        *)
            echo "unknown server $1" >&2
            exit 2
            ;;
    esac
}

# shellcheck source=benches/lib.sh
. benches/lib.sh
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# start_server NAME LOG: a fresh server, pinned, on a port the kernel picks (PORT=0: never one
# in use, and no TIME_WAIT from the last run in the way); waits for its "listening on" line and
# sets URL from it. (nice and taskset exec the server: $! is its PID.)
start_server() {
    : >"$2"
    PORT=0 NODELAY=${RUN_NODELAY:-$NODELAY} WRITE_INTERVAL_MS=${RUN_WRITE_INTERVAL:-0} \
        SERVE=${RUN_SERVE:-$TOWER_SERVE} nice -n "$NICE" taskset -c "$SERVER_CORE" \
        "$(binary "$1")" >"$2" 2>&1 &
    SERVER_PID=$!
    wait_listening "$1" "$2" 5
}

# run SERVER SCENARIO REP LOADGEN-ARGS...: one scenario against a fresh server; the JSON result
# goes to $OUT/SCENARIO.SERVER.REP.json.
run() {
    local server=$1 scenario=$2 rep=$3
    shift 3
    local name=$scenario.$server.$rep
    start_server "$server" "$OUT/$name.log"
    echo "  $scenario $server #$rep (pid $SERVER_PID, $URL)" >&2
    local limit=$((${DURATION%.*} + 150))
    if ! timeout "$limit" nice -n "$NICE" taskset -c "$LOAD_CORE" "$BIN/loadgen" \
        --url "$URL" --server-pid "$SERVER_PID" --json --label "$name" "$@" \
        >"$OUT/$name.json" 2>>"$OUT/$name.log"; then
        echo "    loadgen failed; see $OUT/$name.log" >&2
    fi
    stop_server
}

echo "load benchmark: DURATION=${DURATION}s, REPEAT=$REPEAT, results in $OUT" >&2
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min); niceness $NICE" >&2
start=$(date +%s)
# Each repetition runs every scenario against both servers back to back (interleaved), so that
# drifting background load affects both alike; the table shows medians over the repetitions.
for rep in $(seq "$REPEAT"); do
    for server in $SERVERS; do
        run "$server" S1 "$rep" --clients "$S1_CLIENTS" --rate 200 --size "$SIZE" \
            --duration "$DURATION"
    done
    # The same with TCP_NODELAY on the servers' connections: a small SSE write then leaves at
    # once instead of waiting for the client's ACK of the previous one (Nagle).
    if [ "$NODELAY" != 1 ]; then
        for server in $SERVERS; do
            RUN_NODELAY=1 run "$server" S1nd "$rep" --clients "$S1_CLIENTS" --rate 200 \
                --size "$SIZE" --duration "$DURATION"
        done
    fi
    case " $SERVERS " in
        *" tower-sse "*)
            if [ "$WRITE_INTERVAL_MS" != 0 ]; then
                RUN_WRITE_INTERVAL=$WRITE_INTERVAL_MS run tower-sse S1wi "$rep" \
                    --clients "$S1_CLIENTS" --rate 200 --size "$SIZE" --duration "$DURATION"
            fi
            ;;
    esac
    for server in $SERVERS; do
        run "$server" S1b "$rep" --clients "$S1_CLIENTS" --rate 20 --size "$SIZE" \
            --duration "$DURATION"
    done
    for server in $SERVERS; do
        run "$server" S3 "$rep" --clients "$S3_CLIENTS" --rate 0 --publishers "$S3_PUBLISHERS" \
            --pipeline "$S3_PIPELINE" --size "$SIZE" --duration "$DURATION"
    done
done
# Memory is not noisy: once.
for server in $SERVERS; do
    run "$server" S2 1 --clients "$IDLE_CLIENTS" --idle --settle 2
done
# Baseline for S2: as many idle connections on a plain (non-SSE) chunked response of the same
# axum server, to separate what hyper + axum cost per connection from what SSE adds.
run tower-sse S2base 1 --clients "$IDLE_CLIENTS" --idle --settle 2 --path /hold
# The same two on hyper's HTTP/1.1 connection builder directly, one Router shared by all.
RUN_SERVE=http1 run tower-sse S2h 1 --clients "$IDLE_CLIENTS" --idle --settle 2
RUN_SERVE=http1 run tower-sse S2hbase 1 --clients "$IDLE_CLIENTS" --idle --settle 2 --path /hold
# And on the crate's recommended server loop, `tower_sse::serve` (HTTP/1.1 + h2c, timeouts).
RUN_SERVE=tower run tower-sse S2t 1 --clients "$IDLE_CLIENTS" --idle --settle 2
RUN_SERVE=tower run tower-sse S2tbase 1 --clients "$IDLE_CLIENTS" --idle --settle 2 --path /hold
end=$(date +%s)
echo "done in $((end - start)) s; load after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$OUT" "$DURATION" "$NODELAY" "$S3_PUBLISHERS" "$S3_PIPELINE" "$IDLE_CLIENTS" \
    "$S1_CLIENTS" "$S3_CLIENTS" "$SIZE" "$REPEAT" "$NICE" "$WRITE_INTERVAL_MS" <<'PY'
import glob, json, os, platform, statistics, sys

out, duration, nodelay, publishers, pipeline, idle, s1, s3, size, repeat, nice, wi = sys.argv[1:13]


def runs(scenario, server):
    """Every repetition's result."""
    found = []
    for path in sorted(glob.glob(os.path.join(out, f"{scenario}.{server}.*.json"))):
        try:
            with open(path) as f:
                r = json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            continue
        if r.get("rss_per_conn_bytes") is not None:
            r["rss_per_conn_kib"] = r["rss_per_conn_bytes"] / 1024
        found.append(r)
    return found


def numbers(rs, key):
    return [r[key] for r in rs if isinstance(r.get(key), (int, float))]


def median(rs, key):
    values = numbers(rs, key)
    return statistics.median(values) if values else None


def total(rs, key):
    values = numbers(rs, key)
    return sum(values) if values else None


def fmt(v, digits):
    if v is None:
        return "n/a"
    if digits is None:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


publishing = [
    ("events_per_sec", "delivered events/s", 0, True),
    ("cpu_us_per_event", "server CPU µs / delivered event", 2, False),
    ("server_cpu_share", "server CPU (share of its core)", 2, None),
    ("p50_ms", "latency p50 (ms)", 2, False),
    ("p99_ms", "latency p99 (ms)", 2, False),
    ("max_ms", "latency max (ms)", 2, False),
    ("other_cpu_cores", "rest of the machine meanwhile (cores)", 2, None),
]
rows = [
    ("S1", f"S1: {int(s1):,} clients, 200 msg/s of {size} B, {duration} s", publishing),
    ("S1nd", "S1, TCP_NODELAY on both servers", publishing),
    ("S1wi", f"S1, tower-sse with `min_write_interval` {wi} ms (axum column: its plain S1)",
     publishing),
    ("S1b", f"S1b: {int(s1):,} clients, 20 msg/s of {size} B, {duration} s", publishing),
    ("S2", f"S2: {int(idle):,} idle connections", [
        ("connected", "connected", None, None),
        ("rss_per_conn_kib", "server RSS / connection (KiB)", 2, False),
    ]),
    ("S3", f"S3: {int(s3):,} clients, {publishers} publishers × {pipeline} in flight, "
           f"{size} B, {duration} s", [
        ("publish_rate", "publishes/s", 0, True),
        ("events_per_sec", "delivered events/s", 0, True),
        ("cpu_us_per_event", "server CPU µs / delivered event", 3, False),
        ("server_cpu_share", "server CPU (share of its core)", 2, None),
        ("loadgen_cpu_share", "load generator CPU (share of its core)", 2, None),
        ("p99_ms", "latency p99 (ms)", 2, False),
        ("other_cpu_cores", "rest of the machine meanwhile (cores)", 2, None),
    ]),
]

print()
print(f"Loopback load, {platform.node()}, {os.cpu_count()} CPUs; server pinned to one core, load "
      f"generator to the other; TCP_NODELAY {'on' if nodelay == '1' else 'off'} unless said; "
      f"niceness {nice}; median of {repeat} run(s) (S2: one run).")
print()
print("| scenario | metric | tower-sse | axum + broadcast | tower-sse advantage |")
print("|---|---|---|---|---|")
base = runs("S2base", "tower-sse")
for scenario, title, metrics in rows:
    ours = runs(scenario, "tower-sse")
    peer = runs("S1" if scenario == "S1wi" else scenario, "axum")
    if not ours:
        continue
    first = True
    for key, label, digits, higher in metrics:
        a, b = median(ours, key), median(peer, key)
        ratio = ""
        if higher is not None and a and b and a > 0 and b > 0:
            ratio = f"{(a / b if higher else b / a):.2f}×"
        print(f"| {title if first else ''} | {label} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio} |")
        first = False
    if scenario == "S2" and median(base, "rss_per_conn_kib") is not None:
        kib = median(base, "rss_per_conn_kib")
        print(f"| | of which hyper + axum alone (non-SSE `GET /hold`) | {kib:,.2f} | {kib:,.2f} | |")
    if scenario == "S2" and median(runs("S2h", "tower-sse"), "rss_per_conn_kib") is not None:
        kib = median(runs("S2h", "tower-sse"), "rss_per_conn_kib")
        base_h = median(runs("S2hbase", "tower-sse"), "rss_per_conn_kib")
        print(f"| | tower-sse on a hand-written HTTP/1.1 accept loop (`SERVE=http1`) | {kib:,.2f} | | |")
        print(f"| | of which hyper alone there (`GET /hold`) | {fmt(base_h, 2)} | | |")
    if scenario == "S2" and median(runs("S2t", "tower-sse"), "rss_per_conn_kib") is not None:
        kib = median(runs("S2t", "tower-sse"), "rss_per_conn_kib")
        base_t = median(runs("S2tbase", "tower-sse"), "rss_per_conn_kib")
        print(f"| | tower-sse on `tower_sse::serve` (`SERVE=tower`) | {kib:,.2f} | | |")
        print(f"| | of which hyper + axum alone there (`GET /hold`) | {fmt(base_t, 2)} | | |")
print()
print("Correctness, all runs together (events never received, duplicate ids, streams the server "
      "closed early):")
print()
print("| scenario | tower-sse lost | dups | closed early | axum lost | dups | closed early |")
print("|---|---|---|---|---|---|---|")
for scenario in ("S1", "S1nd", "S1wi", "S1b", "S3"):
    if not runs(scenario, "tower-sse") and not runs(scenario, "axum"):
        continue
    cells = []
    for server in ("tower-sse", "axum"):
        rs = runs(scenario, server)
        if not rs:
            cells += ["—", "—", "—"]
            continue
        exp, lost = total(rs, "expected"), total(rs, "lost")
        pct = f" ({100 * lost / exp:.2f} %)" if exp and lost else ""
        cells += [f"{fmt(lost, None)} of {fmt(exp, None)}{pct}", fmt(total(rs, "duplicates"), None),
                  fmt(total(rs, "closed_early"), None)]
    print(f"| {scenario} | " + " | ".join(cells) + " |")
print()
print("'advantage': how many times better tower-sse is (throughput: ours / axum; costs: axum / "
      "ours); below 1× means behind. A server CPU share near 1.00 means the server was "
      "saturated (it then batches more, which lowers its CPU per event).")
print(f"Raw JSON results and server logs: {out}")
PY
