"""Shared helpers for the server and remote-backend tests (no tests here): a converted fixture
model, a server on a free loopback port, and workers that slow down or hold a generation so
that queueing, abort and disconnect can be observed."""
from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from pathlib import Path

from app.server.http import ApiServer, ServerConfig
from app.server.worker import EngineWorker
from modelgen import converted_tiny_model


def make_model(folder: Path) -> Path:
    """tiny-parallel converted to ggml f32 with its tokenizer.json beside it."""
    return converted_tiny_model(folder)


def load_worker(folder: Path) -> EngineWorker:
    return EngineWorker.load(make_model(folder), backend="reference")


@contextlib.contextmanager
def serving(worker, **config):
    """An ApiServer on 127.0.0.1 and a free port for the duration of the block."""
    server = ApiServer(worker, ServerConfig(port=0, **config))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SlowWorker:
    """Wraps a worker: waits `delay` seconds before each event, and records how each candidate
    ended (so a test can see that a disconnect cancelled the generation)."""

    def __init__(self, inner, delay: float = 0.05):
        self.inner = inner
        self.delay = delay
        self.finished: list = []          # DoneEvents, in order
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, request, cancel):
        self.started.set()
        for event in self.inner.run(request, cancel):
            time.sleep(self.delay)
            done = getattr(event, "event", None)
            if done is not None and hasattr(done, "stop_reason"):
                self.finished.append(done)
            yield event


class GateWorker:
    """Wraps a worker: each run blocks at the start until `release()` (or its cancel flag)."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.running = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def release(self):
        self.gate.set()

    def run(self, request, cancel):
        self.running.set()
        while not self.gate.wait(0.02):
            if cancel.is_set():
                break
        yield from self.inner.run(request, cancel)


def wait_until(condition, timeout: float = 10.0) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.02)
    return bool(condition())


def request(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, headers, parsed JSON or text) of one HTTP request to the server."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = text
    return resp.status, resp.headers, payload


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """Split an event-stream body into (event name, data) pairs."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        out.append((name, "\n".join(data)))
    return out
