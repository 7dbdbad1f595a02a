#!/usr/bin/env bash
# User-space instructions per delivered event (callgrind), the S1 measure the noisy loopback
# timings cannot give: each server runs under `valgrind --tool=callgrind`, examples/loadgen.rs
# connects CLIENTS SSE clients and publishes at RATE msg/s for DURATION s; the counters are
# zeroed once the clients are connected and dumped when the load generator is done, so the
# count is the publishing and delivering only. Instructions (not time) do not move with the
# machine's load; kernel work (the writes themselves) is not counted.
#
#   benches/instructions.sh                 # tower-sse lean, tower-sse through hyper, axum peer
#   CLIENTS=200 RATE=50 DURATION=10 benches/instructions.sh
#   ONLY=lean benches/instructions.sh      # some of them (lean, hyper, axum)
#   BASE=/tmp/old/bench_server benches/instructions.sh  # also another build (lean), as "base"
#   CACHE=1 CLIENTS=1000 RATE=10 benches/instructions.sh   # with simulated cache misses
#
# CACHE=1 adds callgrind's cache simulation (`--cache-sim=yes`; D1 48 KiB 12-way, LL 2 MiB
# 16-way: this machine's L1d and its L2 per core) and prints first-level data misses (reads and
# writes) and last-level misses per delivered event beside the instructions. A model, not
# the machine: the kernel's own use of the caches is not in it.
#
# Names are written out whole (`--compress-strings=no`), so `callgrind_annotate` reads the
# dumped part alone: `callgrind_annotate --inclusive=yes $OUT/tower-sse-lean.callgrind.1`.
#
# Servers: `bench_server` with SERVE=tower (LEAN=1: the lean HTTP/1.1 writer; LEAN=0: hyper)
# and `bench_peer_axum`. RATE is kept low enough that each event is one write per client (no
# batching), so the figure is per event and per write alike. Everything on 127.0.0.1; servers
# are stopped by PID. Needs valgrind (callgrind_control, callgrind_annotate), taskset, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-200}
RATE=${RATE:-50}
DURATION=${DURATION:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d -t tower-sse-instr.XXXXXX)}
mkdir -p "$OUT"

cargo build --release --quiet --example bench_server --example bench_peer_axum --example loadgen
BIN=$CARGO_TARGET_DIR/release/examples

# shellcheck source=benches/lib.sh
. benches/lib.sh
trap stop_server EXIT

# measure NAME BINARY LEAN: prints "NAME instructions/event"
measure() {
    local name=$1 bin=$2 lean=$3 log=$OUT/$1.server.log out=$OUT/$1.callgrind
    local cache=()
    [ "${CACHE:-0}" = 1 ] && cache=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64)
    case $bin in /*) ;; *) bin=$BIN/$bin ;; esac
    PORT=0 SERVE=tower LEAN=$lean taskset -c 0 valgrind --tool=callgrind --compress-strings=no \
        "${cache[@]}" --callgrind-out-file="$out" "$bin" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$name" "$log" 30
    # --delay 6: the clients connect, then 6 s pass before the first publish; the counters
    # are zeroed 4 s in. (Until session 11 this was `--settle 6`, which the load generator only
    # honours with `--idle`: publishing started at once, the counters were zeroed 4 s into it,
    # and every figure counted about the last 60 % of the instructions against all the
    # deliveries. Ratios between servers were not affected, absolute figures were.)
    timeout $((DURATION + 66)) taskset -c 1 "$BIN/loadgen" --url "$URL" --clients "$CLIENTS" \
        --rate "$RATE" --size 128 --duration "$DURATION" --delay 6 >"$OUT/$name.loadgen.log" 2>&1 &
    local lg=$!
    sleep 4
    callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
    wait "$lg"
    callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
    sleep 1
    stop_server
    local ir delivered lost misses=
    ir=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    delivered=$(sed -n 's/^delivered: \([0-9]*\) of.*/\1/p' "$OUT/$name.loadgen.log")
    lost=$(sed -n 's/^lost: \([0-9]*\) events.*/\1/p' "$OUT/$name.loadgen.log")
    if [ "${CACHE:-0}" = 1 ]; then
        # The totals line of the dump: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
        misses=$(awk -v n="$delivered" '/^(summary|totals):/ {
            printf ", D1 misses %.1f, LL misses %.1f", ($6 + $7) / n, ($9 + $10) / n; exit }' "$out.1")
    fi
    python3 -c "print(f'{\"$name\":<28} {$ir / $delivered:>8.0f} instructions / delivered event$misses ({$delivered} delivered, $lost lost)')"
}

echo "$CLIENTS clients, $RATE msg/s, $DURATION s; results in $OUT"
ONLY=${ONLY:-lean,hyper,axum}
case ",$ONLY," in *,lean,*) measure tower-sse-lean bench_server 1 ;; esac
if [ -n "${BASE:-}" ]; then measure base-lean "$(realpath "$BASE")" 1; fi
case ",$ONLY," in *,hyper,*) measure tower-sse-hyper bench_server 0 ;; esac
case ",$ONLY," in *,axum,*) measure axum-broadcast bench_peer_axum 1 ;; esac
