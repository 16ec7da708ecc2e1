"""The HTTP side of the local API server: listening, routing, security, bodies, replies.

Built on the standard library's ThreadingHTTPServer: one thread per connection, so a client
streaming server-sent events never blocks the version checks other clients poll, and the
whole server runs in a background thread beside Qt's event loop without a new dependency.
Generation itself is serialised by the GenerationQueue; the HTTP threads only parse requests,
wait for events and write them out.

Every request passes, in order: the Host check (DNS rebinding), the CORS origin check, route
lookup, the API key (on generating and counting endpoints), the body size cap and JSON
parsing. Errors are answered in KoboldCpp's shape under /api/ and OpenAI's under /v1/.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.server import kobold, llamacpp, openai_api
from app.server.errors import ApiError, unauthorized
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
        self.send_json(body, error.status)

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


class QuietHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that logs a client dropping its connection as one line: a
    disconnect is ordinary for a browser, not a server fault worth a traceback."""

    daemon_threads = True

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
