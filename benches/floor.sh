#!/usr/bin/env bash
# S1 beside the raw-socket floor, in one sitting: server CPU per delivered event for
# tower-sse on `tower_sse::serve` (the lean writer), tower-sse through hyper (LEAN=0) and the
# axum peer, interleaved, then the floor (`write_floor`, a C program that writes a 150-byte
# chunk to each of N loopback connections per event), each REPEAT times; prints every run and
# the medians, and each server's cost above the floor against axum's.
#
#   benches/floor.sh                           # 1,000 clients, 100 msg/s, 10 s, 3 runs
#   RATE=200 REPEAT=1 benches/floor.sh
#   FLOOR_C=path/to/write_floor.c benches/floor.sh
#   BASE=/tmp/old/bench_server benches/floor.sh   # also another build of bench_server (lean),
#                                                 # as "base", interleaved: an A/B in one sitting
#
# The floor's source is not part of this crate: FLOOR_C (default ../shared/bench/write_floor.c)
# is built with gcc -O2 into $OUT. Servers on core 0, load generator and floor reader on core 1,
# at niceness NICE (-10; needs root, else 0). Everything on 127.0.0.1; servers are stopped by
# PID; each run is bounded by the load generator's own time limit and by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
RATE=${RATE:-100}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
NICE=${NICE:--10}
FLOOR_C=${FLOOR_C:-../shared/bench/write_floor.c}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d -t tower-sse-floor.XXXXXX)}
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || NICE=0

cargo build --release --quiet --example bench_server --example bench_peer_axum --example loadgen
BIN=$CARGO_TARGET_DIR/release/examples
[ -f "$FLOOR_C" ] || { echo "no floor source at $FLOOR_C (set FLOOR_C)" >&2; exit 1; }
gcc -O2 -o "$OUT/write_floor" "$FLOOR_C"

# shellcheck source=benches/lib.sh
. benches/lib.sh
trap stop_server EXIT

# run NAME BINARY LEAN I: one S1 run; appends "NAME µs p99" to $OUT/results
run() {
    local name=$1 bin=$2 lean=$3 i=$4 log=$OUT/$1.$4.server.log
    case $bin in /*) ;; *) bin=$BIN/$bin ;; esac
    PORT=0 SERVE=tower LEAN=$lean nice -n "$NICE" taskset -c 0 "$bin" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$name" "$log" 10
    timeout $((DURATION + 60)) nice -n "$NICE" taskset -c 1 "$BIN/loadgen" --url "$URL" \
        --server-pid "$SERVER_PID" --clients "$CLIENTS" --rate "$RATE" --size 128 \
        --duration "$DURATION" --settle 3 >"$OUT/$name.$i.loadgen.log" 2>&1
    stop_server
    local us p99 lost
    us=$(sed -n 's/^server CPU: .*(\([0-9.]*\) us per event.*/\1/p' "$OUT/$name.$i.loadgen.log")
    # The clients' latency, the first p99 on the line (the second is the publishers' lateness).
    p99=$(sed -n 's/^latency: p50 [0-9.]* ms, p99 \([0-9.]*\) ms.*/\1/p' "$OUT/$name.$i.loadgen.log" | head -n 1)
    lost=$(sed -n 's/^lost: \([0-9]*\) events.*/\1/p' "$OUT/$name.$i.loadgen.log")
    echo "$name $us $p99 $lost" >>"$OUT/results"
    echo "  $name #$i: $us us/event, p99 $p99 ms, lost $lost"
}

echo "S1: $CLIENTS clients, $RATE msg/s, $DURATION s, $REPEAT runs; results in $OUT"
: >"$OUT/results"
for i in $(seq "$REPEAT"); do
    run lean bench_server 1 "$i"
    if [ -n "${BASE:-}" ]; then run base "$(realpath "$BASE")" 1 "$i"; fi
    run hyper bench_server 0 "$i"
    run axum bench_peer_axum 1 "$i"
    # The floor in the same round: the machine's state moves it too (1.87 to 2.14 µs between
    # sittings an hour apart, session 11).
    us=$(nice -n "$NICE" "$OUT/write_floor" "$CLIENTS" "$RATE" "$DURATION" 1 2>/dev/null |
        sed -n 's/.*us\/delivered_event=\([0-9.]*\).*/\1/p' | head -n 1)
    echo "floor $us - 0" >>"$OUT/results"
    echo "  floor #$i: $us us/event"
done
python3 - "$OUT/results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, us, p99, lost = line.split()
    runs.setdefault(name, []).append((float(us), p99, int(lost)))
med = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
floor = med.get("floor", 0.0)
axum_above = med["axum"] - floor
print(f"\n| | runs (µs / event) | median | above the floor | against axum's | p99 (ms) | lost |")
print("|---|---|---|---|---|---|---|")
for name in ["lean", "base", "hyper", "axum", "floor"]:
    rs = runs.get(name, [])
    if not rs:
        continue
    above = med[name] - floor
    ratio = f"{above / axum_above:.2f}" if name != "floor" and axum_above > 0 else ""
    p99 = ", ".join(r[1] for r in rs) if name != "floor" else ""
    lost = sum(r[2] for r in rs) if name != "floor" else ""
    print(f"| {name} | {', '.join(f'{r[0]:.2f}' for r in rs)} | {med[name]:.2f} | {above:.2f} | {ratio} | {p99} | {lost} |")
# Each round's own ratio (its server, axum and floor ran minutes apart, not an hour): the
# median of these moves less with the machine than the ratio of the medians above.
floors, axums = [r[0] for r in runs.get("floor", [])], [r[0] for r in runs["axum"]]
if len(floors) == len(axums):
    for name in ["lean", "base", "hyper"]:
        rs = runs.get(name, [])
        if len(rs) != len(axums):
            continue
        per = [(r[0] - f) / (a - f) for r, a, f in zip(rs, axums, floors) if a > f]
        if per:
            print(f"{name}: above the floor against axum's, round by round: "
                  f"{', '.join(f'{p:.2f}' for p in per)}; median {statistics.median(per):.2f}")
EOF
