"""A bounded load test of the API server: many clients at once, every request must get an answer.

    python tests/server_load.py --clients 64 --requests 2000 [--queue-depth 6]

Starts the server on 127.0.0.1 with the tiny fixture model and runs `--clients` threads that
send `--requests` requests in all, each on a new connection (the case the listen backlog and the
connection cap are about), a mix of generations (one token) and the model query clients poll.
Every request must end in an HTTP reply: 200, or 503 with Retry-After (the queue or the
connection cap is full). A reset, a connection closed without a reply, or no reply within
`--timeout` seconds is a failure. Prints a table and exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENERATE = json.dumps({"prompt": "Once upon a time", "max_length": 1, "temperature": 0}).encode()


def one_request(address, i: int, timeout: float) -> tuple[str, float]:
    """('200' | '503' | ... | a failure's name, seconds) of one request on its own connection."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        if i % 2:
            conn.request("POST", "/api/v1/generate", body=GENERATE, headers={"Content-Type": "application/json"})
        else:
            conn.request("GET", "/api/v1/model")
        resp = conn.getresponse()
        body = resp.read()
        status = str(resp.status)
        if resp.status == 503 and not resp.getheader("Retry-After"):
            status = "503 without Retry-After"
        elif resp.status == 200:
            json.loads(body)
    except Exception as e:       # noqa: BLE001 - every failure is counted by its kind
        status = type(e).__name__
    finally:
        conn.close()
    return status, time.perf_counter() - start


def load(address, clients: int, requests: int, timeout: float = 30.0) -> dict:
    """Run `requests` requests from `clients` threads at once; counts by outcome and latencies."""
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(requests))
    start_line = threading.Barrier(clients)

    def client():
        start_line.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            status, seconds = one_request(address, i, timeout)
            with lock:
                counts[status] += 1
                latencies.append(seconds)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return {"requests": requests, "clients": clients, "seconds": time.perf_counter() - began,
            "counts": dict(counts), "answered": counts["200"] + counts["503"],
            "p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99)],
            "max": latencies[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--queue-depth", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    from test_server_support import load_worker, serving
    with tempfile.TemporaryDirectory() as tmp:
        worker = load_worker(Path(tmp))
        with serving(worker, queue_depth=args.queue_depth) as server:
            r = load(server.address, args.clients, args.requests, args.timeout)
    print(f"{r['clients']} clients, {r['requests']} requests on new connections, {r['seconds']:.1f} s")
    print(f"{'outcome':<28} {'count':>7}")
    for outcome, count in sorted(r["counts"].items()):
        print(f"{outcome:<28} {count:>7}")
    print(f"latency p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms, max {r['max'] * 1000:.0f} ms")
    ok = r["answered"] == r["requests"]
    print("every request answered" if ok else f"{r['requests'] - r['answered']} requests NOT answered")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
