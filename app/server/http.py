"""The HTTP side of the local API server: listening, routing, security, bodies, replies.

Built on the standard library's ThreadingHTTPServer: one thread per connection, so a client
streaming server-sent events never blocks the version checks other clients poll, and the
whole server runs in a background thread beside Qt's event loop without a new dependency.
Generation itself is serialised by the GenerationQueue; the HTTP threads only parse requests,
wait for events and write them out.

Every request passes, in order: the Host check (DNS rebinding), the CORS origin check, route
lookup, the API key (on generating and counting endpoints), the body size cap and JSON
parsing. Errors are answered in KoboldCpp's shape under /api/ and OpenAI's under /v1/.

Every connection gets an answer (issue 16): the listen backlog is deep enough that a burst of
clients is queued rather than reset; at most `max_connections` are served at once, and one more
is answered 503 with Retry-After at once by the `ConnectionGuard` (which reads what the client
sent before closing, so the client reads the 503 rather than a reset); a client that has not
sent a whole request header within `header_timeout` seconds of connecting (or of its previous
reply) is dropped.
"""
from __future__ import annotations

import json
import logging
import selectors
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.server import kobold, llamacpp, openai_api
from app.server.errors import RETRY_AFTER_SECONDS, ApiError, unauthorized
from app.server.queue import GenerationQueue
from app.server.request import PromptWindow
from app.server.routing import Router
from app.server.security import SecurityPolicy, is_loopback
from app.server.sse import ClientGone, SSEWriter, peer_closed

log = logging.getLogger("neox.server")

VERSION = "0.1.0"


@dataclass
class ServerConfig:
    """What the user chose for the server (defaults are the safe ones)."""

    host: str = "127.0.0.1"
    port: int = 5001                 # KoboldCpp's port, which clients try first
    api_key: str | None = None
    allow_any_origin: bool = False
    allowed_origins: tuple = ()
    allowed_hosts: tuple = ()
    max_body_bytes: int = 4 * 1024 * 1024
    max_length: int = 1024           # cap on tokens generated per candidate
    max_n: int = 8                   # cap on OpenAI's n
    queue_depth: int = 6
    max_connections: int = 64        # served at once; one more is answered 503 at once
    header_timeout: float = 10.0     # seconds a client has to send a request's whole header

    def validate(self) -> None:
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"listening on {self.host or 'all interfaces'} makes the model reachable from "
                             f"other machines: an API key is required (--api-key)")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")


class Exchange:
    """One request and its reply, as the endpoint functions see it."""

    def __init__(self, handler: "Handler", route):
        self.handler = handler
        self.api: ApiServer = handler.server.api
        self.route = route
        self.path = handler.route_path
        self.body: dict = {}
        self.jobs: list = []
        self.prompt_window: PromptWindow | None = None
        self.authorized = self.api.security.authorized(handler.headers)

    @property
    def worker(self):
        return self.api.worker

    @property
    def queue(self) -> GenerationQueue:
        return self.api.queue

    @property
    def config(self) -> ServerConfig:
        return self.api.config

    @property
    def from_loopback(self) -> bool:
        return is_loopback(self.handler.client_address[0])

    def prompt_headers(self) -> dict:
        """`X-Prompt-Tokens-Dropped` (and the window's length) once the worker said how it cut the prompt."""
        w = self.prompt_window
        return {} if w is None else {"X-Prompt-Tokens": str(w.tokens), "X-Prompt-Tokens-Dropped": str(w.dropped)}

    def send_json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self.handler.send_json(obj, status, {**self.prompt_headers(), **(headers or {})})

    def start_sse(self) -> SSEWriter:
        """Send the headers of an event stream; the connection closes when the stream ends."""
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        for name, value in self.prompt_headers().items():
            h.send_header(name, value)
        h.send_cors_headers()
        h.end_headers()
        h.close_connection = True
        return SSEWriter(h.wfile)

    def events(self, job, poll: float = 0.1):
        """The job's events. The connection is checked whenever no event came for `poll` seconds
        and at least that often otherwise: when the client has gone, ClientGone is raised (and
        the dispatcher cancels the job, as it does for any reply that ends early)."""
        self.jobs.append(job)
        sock = self.handler.connection
        checked = time.monotonic()
        while True:
            try:
                event = job.next_event(timeout=poll)
            except StopIteration:
                return
            now = time.monotonic()
            if event is None or now - checked >= poll:
                checked = now
                if peer_closed(sock):
                    raise ClientGone("client disconnected")
            if isinstance(event, PromptWindow):
                self.prompt_window = event      # for the reply's headers and body, not an event
                if event.dropped:
                    log.warning("prompt of %d tokens cut to fit the context: the oldest %d were dropped "
                                "(the client's context size is larger than the model's %d)",
                                event.tokens + event.dropped, event.dropped, self.worker.n_ctx)
            elif event is not None:
                yield event

    def cancel_unfinished(self) -> None:
        """Cancel the jobs this exchange started and did not see to their end (the reply ended
        early: the client went away, or an error was found)."""
        for job in self.jobs:
            if job.state != "done":
                job.cancel()


class Handler(BaseHTTPRequestHandler):
    """Routes the requests of one connection through the security checks to endpoint functions.

    One Handler serves every request of a kept-open connection, so everything about a reply
    (whether its headers went out, the body read) is reset per request in `dispatch`. The
    request body is read whole before any check can refuse the request: a refusal that left
    it unread would have the next request parsed out of it. A body that cannot be read (too
    big, chunked, cut short) is refused and the connection closed after the reply.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"NeoXWriter/{VERSION}"
    # Socket timeout for reading a request and writing a reply: a client that stalls (or
    # keeps an idle connection) frees its thread after this long. Waiting for the queue or
    # for tokens is not affected: no socket operation is pending then.
    timeout = 120

    # -- entry points -------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    def do_HEAD(self):
        self.dispatch("HEAD")

    # Methods no endpoint takes still get a reply in the API's shape (405), their body consumed.
    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    # -- the pipeline -------------------------------------------------------------------------

    def handle_one_request(self):
        # the header must be complete within header_timeout of now: the guard drops the
        # connection otherwise (a per-read timeout would let a byte every few seconds through)
        self.server.guard.expect_header(self.connection, self.server.api.config.header_timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.guard.header_done(self.connection)

    def parse_request(self):
        ok = super().parse_request()      # the request line and the headers are read now
        self.server.guard.header_done(self.connection)
        return ok

    def dispatch(self, method: str) -> None:
        api: ApiServer = self.server.api
        self._headers_sent = False         # per request, not per connection
        self.route_path = self.path.split("?", 1)[0].rstrip("/") or "/"
        self.kobold_dialect = not (self.route_path.startswith("/v1/") or self.route_path == "/v1")
        self.origin = self.headers.get("Origin")
        self.origin_ok = api.security.origin_allowed(self.origin)
        try:
            raw = self.read_body()
            refused = api.security.check_host(self.headers.get("Host"))
            if refused:
                raise ApiError(403, refused)
            if not self.origin_ok:
                raise ApiError(403, f"Origin {self.origin!r} may not call this server; allow it in the "
                                    f"server settings (or allow any origin)")
            if method in ("OPTIONS", "HEAD"):
                # CORS preflight (and HEAD probes) are answered before any key check, as the
                # browser sends no credentials with them.
                self.send_response(204 if method == "OPTIONS" else 200)
                self.send_cors_headers()
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route = api.router.find(self.route_path)
            if route is None:
                raise ApiError(404, f"no endpoint {self.route_path}")
            self.kobold_dialect = not route.openai_errors
            if method not in route.methods:
                raise ApiError(405, f"{self.route_path} accepts {', '.join(route.methods)}, not {method}")
            exchange = Exchange(self, route)
            if method == "POST":
                # Parsed before the key check: an unauthenticated abort is judged by its body.
                exchange.body = parse_json(raw)
            if route.secured and not exchange.authorized and not route.func_allows_unauthorized(exchange):
                raise unauthorized()
            try:
                route.func(exchange)
            finally:
                exchange.cancel_unfinished()
            if not self._headers_sent:
                raise ApiError(500, f"internal server error: {self.route_path} produced no reply")
        except ApiError as e:
            self.send_error_body(e)
        except ClientGone as e:
            self.close_connection = True
            log.info("client %s disconnected during %s %s (%s); its generation, if any, was aborted",
                     self.client_address[0], method, self.route_path, e)
        except Exception as e:   # noqa: BLE001 - one bad request must not take the server down
            log.error("error serving %s %s: %s", method, self.route_path, traceback.format_exc())
            self.send_error_body(ApiError(500, f"internal server error: {type(e).__name__}: {e}"))

    def read_body(self) -> bytes:
        """The whole request body (b"" without one). Refuses, and closes the connection after
        the reply, a body it cannot read to its end: its bytes would be taken for the next request."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported: send Content-Length")
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header else 0
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise ApiError(400, f"Content-Length is not a byte count: {header!r}")
        limit = self.server.api.config.max_body_bytes
        if length > limit:
            self.close_connection = True
            raise ApiError(413, f"Payload is too big: {length} bytes, at most {limit} are accepted.")
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            self.close_connection = True
            raise ClientGone(f"the request body ended after {len(raw)} of {length} bytes")
        return raw

    # -- replies ------------------------------------------------------------------------------

    def send_cors_headers(self) -> None:
        if self.origin is not None and self.origin_ok:
            self.send_header("Access-Control-Allow-Origin", "*" if self.server.api.config.allow_any_origin
                             else self.origin)
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers",
                             "Authorization, Content-Type, X-Api-Key, apikey, genkey")
            self.send_header("Access-Control-Max-Age", "600")

    def send_json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_cors_headers()
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_error_body(self, error: ApiError) -> None:
        if self._headers_sent:
            # Too late for an error reply (a stream had started): ending the connection is the
            # only way left to tell the client the reply is incomplete.
            self.close_connection = True
            return
        body = error.kobold_body() if self.kobold_dialect else error.openai_body()
        self.send_json(body, error.status, error.headers)

    def send_response(self, code, message=None):
        self._headers_sent = True
        super().send_response(code, message)


def parse_json(raw: bytes) -> dict:
    """A request body as a JSON object; an empty body is {} (SillyTavern's abort has none)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"Error parsing input: the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Error parsing input: the body must be a JSON object")
    return body


BUSY_REPLY = json.dumps({
    "detail": {"msg": "Server is busy (too many connections); please try again later.", "type": "service_unavailable"},
    "error": {"message": "Server is busy (too many connections); please try again later.",
              "type": "unavailable_error", "param": None, "code": 503},
}).encode()


class ConnectionGuard:
    """One thread that answers the connections over the cap and drops slow headers.

    Over the cap, a connection is answered 503 (both APIs' error shapes, Retry-After) without
    waiting for its request; then what the client sends is read and discarded until it closes
    or `DRAIN_SECONDS` pass, because closing a socket with unread data sends a reset, which
    the client would see instead of the 503. Header deadlines are kept here too: a connection
    still reading its header at its deadline is shut down, which ends its handler's read.
    """

    DRAIN_SECONDS = 2.0
    TICK = 0.1

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._refused: list[socket.socket] = []          # handed over, not yet registered
        self._draining: dict[socket.socket, float] = {}  # socket -> when to give up reading
        self._deadlines: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neox-server-guard", daemon=True)
        self._thread.start()

    def refuse(self, sock: socket.socket) -> None:
        """Answer 503 at once and close after the client's request was read (from the accept loop)."""
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BUSY_REPLY)}\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\n"
                f"Connection: close\r\n\r\n").encode()
        try:
            sock.setblocking(False)
            sock.send(head + BUSY_REPLY)      # a few hundred bytes: the socket buffer takes them
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self._lock:
            self._refused.append(sock)

    def expect_header(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[sock] = time.monotonic() + seconds

    def header_done(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                refused, self._refused = self._refused, []
                now = time.monotonic()
                late = [s for s, t in self._deadlines.items() if t <= now]
                for s in late:
                    del self._deadlines[s]
            for sock in refused:
                self._draining[sock] = now + self.DRAIN_SECONDS
                self._selector.register(sock, selectors.EVENT_READ)
            for sock in late:
                log.info("dropped a connection that sent no whole request header in time")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if self._draining:
                for key, _ in self._selector.select(timeout=self.TICK):
                    try:
                        data = key.fileobj.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._close(key.fileobj)
            else:
                self._stop.wait(self.TICK)
            now = time.monotonic()
            for sock in [s for s, t in self._draining.items() if t <= now]:
                self._close(sock)
        for sock in list(self._draining):
            self._close(sock)

    def _close(self, sock) -> None:
        self._draining.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()


class QuietHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that serves at most `max_connections` at once (one more is refused
    by the guard), keeps a deep listen backlog, and logs a client dropping its connection as one
    line: a disconnect is ordinary for a browser, not a server fault worth a traceback."""

    daemon_threads = True
    # The standard library listens with a backlog of 5: a burst of clients overflowed it and
    # connections were reset unanswered. The kernel caps this at net.core.somaxconn.
    request_queue_size = 1024
    max_connections = 64

    def __init__(self, *args, **kwargs):
        self.guard = ConnectionGuard()
        self._active = 0
        self._active_lock = threading.Lock()
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self.guard.stop()        # the port was taken (or the address bad): no thread left behind
            raise

    def process_request(self, request, client_address):
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self.guard.refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.guard.header_done(request)
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1

    @property
    def active_connections(self) -> int:
        with self._active_lock:
            return self._active

    def server_close(self):
        super().server_close()
        self.guard.stop()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.info("client %s dropped the connection: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)


class ApiServer:
    """The local API server: a listening socket served by threads, in front of one worker.

    `start()` binds and serves in a background thread (returns at once); `stop()` closes the
    socket, cancels queued and running generations and joins the thread.
    """

    def __init__(self, worker, config: ServerConfig | None = None):
        self.config = config or ServerConfig()
        self.config.validate()
        self.worker = worker
        self.security = SecurityPolicy(api_key=self.config.api_key, allow_any_origin=self.config.allow_any_origin,
                                       allowed_origins=tuple(self.config.allowed_origins),
                                       allowed_hosts=tuple(self.config.allowed_hosts), bind_host=self.config.host)
        self.router = Router([*kobold.routes(), *openai_api.routes(), *llamacpp.routes()])
        self.queue: GenerationQueue | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> str:
        """Bind and serve in the background; returns the base URL."""
        server_class = QuietHTTPServer
        if ":" in self.config.host:
            import socket

            class V6Server(QuietHTTPServer):
                """The same server on an IPv6 address."""
                address_family = socket.AF_INET6
            server_class = V6Server
        self._httpd = server_class((self.config.host, int(self.config.port)), Handler)
        self._httpd.max_connections = self.config.max_connections
        self._httpd.api = self
        self.queue = GenerationQueue(self.worker, depth=self.config.queue_depth)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="neox-server-http", daemon=True)
        self._thread.start()
        log.info("serving %s on %s", self.worker.model_name, self.url)
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self.queue is not None:
            self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None
