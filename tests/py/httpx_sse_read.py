#!/usr/bin/env python3
"""Read events with httpx + httpx-sse and print them.

    python3 tests/py/httpx_sse_read.py URL [--count N] [--event TYPE]
            [--last-event-id ID] [--timeout SECONDS]

Reads N (default 1) events from one connection (of type TYPE only, when given;
every event otherwise) and prints one JSON line per event:
{"id": ..., "event": ..., "data": ...}; exits 0. Exits 1 when the stream ends
early, on an HTTP/content-type error or on timeout.
"""

import argparse
import json
import sys
import time

import httpx
from httpx_sse import connect_sse


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--event", default=None)
    p.add_argument("--last-event-id", default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()

    headers = {}
    if a.last_event_id is not None:
        headers["Last-Event-ID"] = a.last_event_id
    deadline = time.monotonic() + a.timeout
    received = 0
    try:
        with httpx.Client(timeout=httpx.Timeout(a.timeout)) as client:
            with connect_sse(client, "GET", a.url, headers=headers) as source:
                source.response.raise_for_status()
                for sse in source.iter_sse():
                    if a.event is not None and sse.event != a.event:
                        continue
                    print(json.dumps({"id": sse.id, "event": sse.event, "data": sse.data}), flush=True)
                    received += 1
                    if received >= a.count:
                        return 0
                    if time.monotonic() > deadline:
                        print(f"httpx_sse_read: timeout after {received}/{a.count} events", file=sys.stderr)
                        return 1
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        print(f"httpx_sse_read: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"httpx_sse_read: stream ended after {received}/{a.count} events", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
