"""A small HTTP client for remote servers: JSON requests and server-sent event streams that
another thread can cut short.

Standard library only (http.client): the requests the remote backends make are few and
simple, and an event stream must be abortable from the GUI thread, which is done by shutting
the socket down under the reader.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from urllib.parse import urlsplit


class RemoteError(Exception):
    """A remote server could not be reached or refused a request; the message says which and why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def server_message(payload) -> str | None:
    """The human message in an error body: KoboldCpp's detail.msg, OpenAI's error.message, ..."""
    if isinstance(payload, dict):
        for key in ("detail", "error"):
            inner = payload.get(key)
            if isinstance(inner, dict):
                msg = inner.get("msg") or inner.get("message")
                if msg:
                    return str(msg)
            elif isinstance(inner, str) and inner:
                return inner
        if isinstance(payload.get("message"), str):
            return payload["message"]
    return None


def normalise_base_url(url: str) -> str:
    """`http://host:port` from what a user typed: scheme added, trailing `/`, `/v1`, `/api` dropped."""
    url = url.strip()
    if not url:
        raise RemoteError("no server address given")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"{url!r} is not an http:// or https:// address")
    path = parts.path.rstrip("/")
    for suffix in ("/v1", "/api"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    return f"{parts.scheme}://{parts.netloc}{path}"


class EventStream:
    """The `data:` payloads of one server-sent event stream; `close()` may be called from any thread."""

    def __init__(self, conn, sock, response):
        self._conn = conn
        self._sock = sock
        self._response = response
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self):
        data: list[str] = []
        try:
            while True:
                line = self._response.readline()
                if not line:
                    break                             # EOF: e.g. "[DONE]" without a trailing blank line
                line = line.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        yield "\n".join(data)
                        data = []
                    continue
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                # "event:", "id:" and ":" comment lines carry nothing we need
        except (OSError, http.client.HTTPException) as e:
            if not self.closed:
                raise RemoteError(f"the connection to the server broke: {e}") from None
        if data and not self.closed:
            yield "\n".join(data)

    def close(self) -> None:
        """End the stream now (the server sees the connection close, which aborts on ours and llama.cpp)."""
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()


class HttpClient:
    """JSON and event-stream requests to one base URL, with the API key on every request."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0,
                 stream_timeout: float = 600.0):
        self.base_url = normalise_base_url(base_url)
        self.api_key = api_key or None
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path

    def headers(self, body: bool) -> dict:
        h = {"Accept": "application/json, text/event-stream"}
        if body:
            h["Content-Type"] = "application/json"
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _connect(self, timeout: float):
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._netloc, timeout=timeout)
        try:
            conn.connect()
        except OSError as e:
            raise RemoteError(f"could not connect to {self.base_url}: {e.strerror or e}") from None
        return conn

    def _send(self, method: str, path: str, body, timeout: float):
        conn = self._connect(timeout)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            conn.request(method, self._prefix + path, body=data, headers=self.headers(data is not None))
            return conn, conn.sock, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise RemoteError(f"{method} {self.base_url}{path} failed: {e}") from None

    def request(self, method: str, path: str, body=None, timeout: float | None = None):
        """(status, parsed JSON or None) without raising for HTTP error statuses."""
        conn, _, resp = self._send(method, path, body, timeout or self.timeout)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(f"{method} {self.base_url}{path}: reading the reply failed: {e}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError):
            payload = raw.decode("utf-8", "replace")
        return resp.status, payload

    def call(self, method: str, path: str, body=None, timeout: float | None = None):
        """The parsed JSON reply; RemoteError naming the server's own message on an error status."""
        status, payload = self.request(method, path, body, timeout)
        if not 200 <= status < 300:
            raise self.error(method, path, status, payload)
        return payload

    def error(self, method, path, status, payload) -> RemoteError:
        message = server_message(payload) or (payload if isinstance(payload, str) and payload else "")
        if status == 401:
            hint = "the API key was refused" if self.api_key else "the server needs an API key"
            return RemoteError(f"{self.base_url}: {hint} ({message or 'HTTP 401'})", status)
        return RemoteError(f"{method} {self.base_url}{path}: HTTP {status}" + (f": {message}" if message else ""),
                           status)

    def stream(self, path: str, body) -> EventStream:
        """POST `body` and return its event stream (RemoteError if the server answers otherwise)."""
        conn, sock, resp = self._send("POST", path, body, self.stream_timeout)
        if resp.status != 200:
            try:
                raw = resp.read()
                payload = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (OSError, ValueError, http.client.HTTPException):
                payload = None
            conn.close()
            raise self.error("POST", path, resp.status, payload)
        return EventStream(conn, sock, resp)
