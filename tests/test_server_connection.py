"""Kept-open connections: every request gets its own reply, errors included, and no request is
ever read out of another's body (issue 21: Kobold Lite, SillyTavern and mikupad reuse sockets).

These tests speak HTTP/1.1 on a raw socket, so that what the server writes (or fails to write)
is seen byte for byte, and several requests, some failing, share one connection."""
from __future__ import annotations

import json
import logging
import socket
import struct
import time

import pytest

from test_server_support import GateWorker, SlowWorker, load_worker, serving, wait_until

PROMPT = "Once upon a time"
GEN = {"prompt": PROMPT, "max_length": 4, "max_tokens": 4, "temperature": 0, "logit_bias": {"0": -100}}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("connection"))


@pytest.fixture(scope="module")
def server(worker):
    with serving(worker) as s:
        yield s


class Connection:
    """One client socket: send requests (raw or built), read replies one at a time."""

    def __init__(self, server):
        self.sock = socket.create_connection(server.address, timeout=30)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.file.close()
        self.sock.close()

    @staticmethod
    def build(method: str, path: str, body=None, headers: dict | None = None) -> bytes:
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if data or method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        return head.encode() + b"\r\n" + data

    def send(self, method: str, path: str, body=None, headers: dict | None = None) -> None:
        self.sock.sendall(self.build(method, path, body, headers))

    def reply(self):
        """(status, headers with lower-case names, body bytes) of the next reply; None when the
        server closed the connection instead."""
        line = self.file.readline()
        if not line:
            return None
        status = int(line.split()[1])
        headers = {}
        while True:
            line = self.file.readline().decode("latin-1").strip()
            if not line:
                break
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        else:                                   # an event stream: it ends when the connection closes
            body = self.file.read()
        return status, headers, body

    def ask(self, method: str, path: str, body=None, headers: dict | None = None):
        self.send(method, path, body, headers)
        return self.reply()

    def closed_by_server(self) -> bool:
        return self.file.read(1) == b""


def json_of(reply) -> dict:
    return json.loads(reply[2])


def test_errors_after_a_success_are_answered_kobold(server):
    c = Connection(server)
    try:
        status, _, body = c.ask("GET", "/api/v1/model")
        assert status == 200 and json.loads(body)["result"].startswith("koboldcpp/")
        status, _, body = c.ask("GET", "/nonexistent")                  # the first report
        assert status == 404 and json.loads(body)["detail"]["type"] == "not_found"
        assert c.ask("GET", "/api/v1/generate")[0] == 405
        reply = c.ask("POST", "/api/v1/generate", {**GEN, "top_p": "high"})
        assert reply[0] == 400 and "top_p" in json_of(reply)["detail"]["msg"]
        reply = c.ask("POST", "/api/extra/tokencount", b"{not json")
        assert reply[0] == 400 and json_of(reply)["detail"]["msg"].startswith("Error parsing input")
        assert c.ask("POST", "/api/v1/generate", GEN)[0] == 200
        assert c.ask("GET", "/api/extra/version")[0] == 200
    finally:
        c.close()


def test_errors_after_a_success_are_answered_openai(worker):
    with serving(worker, api_key="k") as server:
        c = Connection(server)
        auth = {"Authorization": "Bearer k"}
        try:
            assert c.ask("GET", "/v1/models")[0] == 200
            reply = c.ask("POST", "/v1/completions", {"prompt": PROMPT})       # no key
            assert reply[0] == 401 and json_of(reply)["error"]["type"] == "authentication_error"
            reply = c.ask("POST", "/v1/completions", {**GEN, "n": 99}, auth)
            assert reply[0] == 400 and json_of(reply)["error"]["param"] == "n"
            reply = c.ask("POST", "/v1/chat/completions", {"messages": "hi"}, auth)
            assert reply[0] == 400 and json_of(reply)["error"]["param"] == "messages"
            assert c.ask("DELETE", "/v1/models", {"x": 1})[0] == 405
            reply = c.ask("POST", "/v1/completions", GEN, auth)
            assert reply[0] == 200 and json_of(reply)["object"] == "text_completion"
        finally:
            c.close()


def test_unread_bodies_of_refused_requests_are_consumed(server):
    """`POST /nothing {"content":"hi"}` is refused before its body is looked at; the request
    after it must still be parsed from its own bytes (mikupad's probe then CORS preflight)."""
    c = Connection(server)
    try:
        for method, path, body in [("POST", "/nothing", {"content": "hi"}),
                                   ("GET", "/api/v1/model", {"a body": "on a GET"}),
                                   ("POST", "/api/v1/model", {"wrong": "method"}),
                                   ("OPTIONS", "/v1/completions", {"preflight": "with a body"})]:
            status, _, _ = c.ask(method, path, body, {"Origin": "null"})
            assert status in (200, 204, 404, 405)
            reply = c.ask("OPTIONS", "/v1/completions", headers={"Origin": "null"})
            assert reply[0] == 204 and reply[1]["access-control-allow-origin"] == "null"
    finally:
        c.close()


def test_refused_origins_and_hosts_keep_the_connection(server):
    c = Connection(server)
    try:
        reply = c.ask("POST", "/api/v1/generate", GEN, {"Origin": "https://evil.example"})
        assert reply[0] == 403 and "Origin" in json_of(reply)["detail"]["msg"]
        c.sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: rebind.example\r\n\r\n")
        reply = c.reply()
        assert reply[0] == 403 and "Host" in json_of(reply)["error"]["message"]
        assert c.ask("GET", "/api/v1/model")[0] == 200
    finally:
        c.close()


def test_pipelined_requests_each_get_their_reply_in_order(server):
    c = Connection(server)
    try:
        batch = b"".join([c.build("POST", "/nothing", {"content": "hi"}),
                          c.build("GET", "/api/extra/version"),
                          c.build("POST", "/api/extra/tokencount", {"prompt": 7}),
                          c.build("POST", "/api/extra/tokencount", {"prompt": PROMPT}),
                          c.build("GET", "/v1/nothing")])
        c.sock.sendall(batch)
        replies = [c.reply() for _ in range(5)]
        assert [r[0] for r in replies] == [404, 200, 400, 200, 404]
        assert json_of(replies[1])["result"] == "KoboldCpp"
        assert json_of(replies[3])["value"] > 0
        assert "error" in json_of(replies[4])                 # OpenAI's shape under /v1
    finally:
        c.close()


@pytest.mark.parametrize("headers, body, status", [
    ({"Content-Length": "5000"}, b"x" * 5000, 413),                          # over max_body_bytes
    ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n", 411),     # not supported
    ({"Content-Length": "-4"}, b"GET / HTTP/1.1\r\n\r\n", 400),              # not a byte count
])
def test_a_refused_body_closes_the_connection_after_the_reply(worker, headers, body, status):
    with serving(worker, max_body_bytes=1000) as server:
        c = Connection(server)
        try:
            head = "POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            # a request hidden in the body: it must never be answered
            c.sock.sendall(head.encode() + b"\r\n" + body + c.build("GET", "/api/v1/model"))
            reply = c.reply()
            assert reply[0] == status and reply[1].get("connection") == "close"
            assert "detail" in json_of(reply)
            assert c.closed_by_server()
        finally:
            c.close()


def test_stream_errors_then_a_stream_on_one_connection(server):
    """A refused stream request is an ordinary reply on the kept-open connection; the stream
    after it is served and ends by closing the connection (KoboldCpp's and OpenAI's streams)."""
    for path, body, done in [("/api/extra/generate/stream", GEN, b'"finish_reason": "length"'),
                             ("/v1/completions", {**GEN, "stream": True}, b"data: [DONE]"),
                             ("/v1/chat/completions", {**GEN, "stream": True,
                                                       "messages": [{"role": "user", "content": "hi"}]},
                              b"data: [DONE]")]:
        c = Connection(server)
        try:
            assert c.ask("POST", path, {**body, "temperature": -1})[0] == 400
            assert c.ask("POST", path, {**body, "max_length": 0, "max_tokens": 0})[0] == 400
            assert c.ask("GET", "/api/v1/model")[0] == 200
            status, headers, raw = c.ask("POST", path, body)
            assert status == 200 and headers["content-type"] == "text/event-stream"
            assert done in raw
            assert c.closed_by_server()
        finally:
            c.close()


def test_busy_503_on_a_kept_open_connection(worker):
    gated = GateWorker(worker)
    with serving(gated, queue_depth=0) as server:
        holder = Connection(server)
        c = Connection(server)
        try:
            holder.send("POST", "/api/v1/generate", GEN)
            assert gated.running.wait(10)
            assert c.ask("GET", "/api/v1/model")[0] == 200
            reply = c.ask("POST", "/api/v1/generate", GEN)
            assert reply[0] == 503 and json_of(reply)["detail"]["type"] == "service_unavailable"
            reply = c.ask("POST", "/v1/completions", GEN)
            assert reply[0] == 503 and json_of(reply)["error"]["type"] == "unavailable_error"
            gated.release()
            assert holder.reply()[0] == 200
            assert c.ask("POST", "/api/v1/generate", GEN)[0] == 200
        finally:
            gated.release()
            holder.close()
            c.close()


def test_a_disconnect_mid_stream_is_one_log_line(worker, caplog):
    slow = SlowWorker(worker, delay=0.05)
    with serving(slow) as server, caplog.at_level(logging.INFO, logger="neox.server"):
        c = Connection(server)
        c.send("POST", "/api/extra/generate/stream", {**GEN, "max_length": 200, "temperature": 1.0})
        received = b""
        while b"data: " not in received:
            chunk = c.sock.recv(4096)
            assert chunk
            received += chunk
        # a reset rather than a polite close: what a browser tab that is killed does
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        assert wait_until(lambda: slow.finished)
        assert slow.finished[0].stop_reason == "cancelled"
        # an idle kept-open connection reset between requests
        idle = Connection(server)
        assert idle.ask("GET", "/api/v1/model")[0] == 200
        idle.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        idle.close()
        time.sleep(0.3)
    records = [r for r in caplog.records if r.name == "neox.server"]
    assert not any(r.exc_info or "Traceback" in r.getMessage() for r in records)
    gone = [r.getMessage() for r in records if "disconnected" in r.getMessage()]
    assert len(gone) == 1 and "\n" not in gone[0] and "/api/extra/generate/stream" in gone[0]
