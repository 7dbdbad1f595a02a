# Shared by the benchmark scripts (sourced, not run): one server at a time, started in the
# background by the caller with its PID in SERVER_PID, and stopped by PID.

SERVER_PID=
URL=

# stop_server: stops the server this script started, if any.
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# wait_listening NAME LOG SECONDS: waits for the server's "listening on" line in LOG and sets
# URL from it; exits with the log if the server exits or does not start in time.
wait_listening() {
    local name=$1 log=$2 tries=$(($3 * 20))
    for _ in $(seq "$tries"); do
        URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$log" | head -n 1) || URL=
        if [ -n "$URL" ]; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server $name exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "server $name did not start in $3 s" >&2
    cat "$log" >&2
    exit 1
}
