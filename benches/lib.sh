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

# wait_for_line NAME LOG PATTERN PID SECONDS: waits until LOG has a line matching PATTERN
# (grep -E); exits with the log if process PID (NAME) exits first, or the line does not come
# within SECONDS.
wait_for_line() {
    local name=$1 log=$2 pattern=$3 pid=$4 tries=$(($5 * 20))
    for _ in $(seq "$tries"); do
        if grep -qE "$pattern" "$log" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "$name: no line matching \"$pattern\" in $5 s" >&2
    cat "$log" >&2
    exit 1
}

# wait_listening NAME LOG SECONDS: waits for the server's "listening on" line in LOG and sets
# URL from it; exits with the log if the server exits or does not start in time.
wait_listening() {
    wait_for_line "server $1" "$2" '^listening on http:' "$SERVER_PID" "$3"
    URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$2" | head -n 1)
}
