"""HTTP(S) requests with the model manager's redirect and TLS policy.

We use the standard library's ``http.client`` rather than urllib's opener because we need
three things urllib makes awkward: our own redirect policy (a redirect may only lead to
https, or stay on the configured endpoint's own host, which is how a plain-http mirror or
test server works), Range requests whose 200/206/416 answers we handle ourselves, and a
handle on the socket so that a pause from another thread can interrupt a blocked read.
TLS certificates are always verified through ``ssl.create_default_context()``.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
from urllib.parse import urljoin, urlsplit

USER_AGENT = "NeoXWriter-model-manager/0.1"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 8


class NetworkError(Exception):
    """A transport failure worth retrying: refused or dropped connection, timeout, 5xx."""


class StallError(NetworkError):
    """No bytes arrived for the configured stall timeout."""


class HttpStatusError(Exception):
    """The server answered with an error status; `retryable` for 5xx and 429."""

    def __init__(self, status: int, reason: str, url: str, headers=None):
        self.status = status
        self.url = url
        self.headers = headers if headers is not None else {}
        self.retryable = status >= 500 or status == 429
        super().__init__(f"HTTP {status} {reason} for {url}")


class RedirectRefused(Exception):
    """A redirect pointed somewhere the policy does not allow (e.g. plain http elsewhere)."""


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class Response:
    """An open HTTP response plus the URL it finally came from; close() releases the socket."""

    def __init__(self, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse, url: str):
        self._conn = conn
        self.raw = raw
        self.url = url
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers

    def header(self, name: str) -> str | None:
        return self.raw.getheader(name)

    def read_chunk(self, size: int) -> bytes:
        """Return the next bytes available (at most `size`); b"" at the end of the body."""
        try:
            return self.raw.read1(size)
        except socket.timeout as exc:
            raise StallError(f"no data received from {self.url}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(f"connection to {self.url} failed while reading: {exc}") from exc

    def read_all(self, limit: int) -> bytes:
        """Read a whole (small) body, refusing one larger than `limit` bytes."""
        out = bytearray()
        while True:
            chunk = self.read_chunk(65536)
            if not chunk:
                return bytes(out)
            out += chunk
            if len(out) > limit:
                raise NetworkError(f"response from {self.url} is larger than {limit} bytes")

    def abort(self) -> None:
        """Interrupt a read blocked in another thread (it then sees end-of-data or an error)."""
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.raw.close()
        self._conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HttpClient:
    """Opens requests below one configured endpoint and follows redirects by our policy.

    Allowed URLs (the first one and every redirect target): any https URL, or any URL on
    the endpoint's own scheme, host and port (so `HF_ENDPOINT=http://127.0.0.1:8000` works).
    """

    def __init__(self, endpoint: str, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).hostname:
            raise ValueError(f"hub endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._endpoint_origin = _origin(self.endpoint)

    def allowed(self, url: str) -> bool:
        scheme, host, _ = _origin(url)
        if not host:
            return False
        return scheme == "https" or _origin(url) == self._endpoint_origin

    def _connect(self, url: str) -> http.client.HTTPConnection:
        scheme, host, port = _origin(url)
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.ssl_context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def open(self, method: str, url: str, headers: dict[str, str] | None = None,
             follow_redirects: bool = True, on_open=None) -> Response:
        """Send one request (following redirects) and return the response; error statuses raise.

        `on_open(response)` is called as soon as a response exists so that the caller can
        keep a handle for abort(); 3xx answers are returned as-is when not following.
        """
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        hdrs.update(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            if not self.allowed(url):
                raise RedirectRefused(
                    f"refusing {url}: only https or the configured endpoint {self.endpoint} is allowed")
            parts = urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            conn = self._connect(url)
            try:
                conn.request(method, target, headers=hdrs)
                raw = conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise NetworkError(f"TLS certificate of {parts.hostname} not trusted: {exc}") from exc
            except socket.timeout as exc:
                conn.close()
                raise StallError(f"no answer from {parts.hostname} within {self.timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise NetworkError(f"cannot reach {parts.hostname}: {exc}") from exc
            response = Response(conn, raw, url)
            if on_open is not None:
                on_open(response)
            if raw.status in REDIRECT_STATUSES and follow_redirects:
                location = raw.getheader("Location")
                response.close()
                if not location:
                    raise NetworkError(f"redirect without Location from {url}")
                url = urljoin(url, location)
                continue
            if raw.status >= 400:
                response.close()
                raise HttpStatusError(raw.status, raw.reason, url, raw.headers)
            return response
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects starting from {url}")


class AbortHandle:
    """Holds the response being read so that another thread can interrupt it.

    `stopped()` tells whether a stop was requested; a response attached after that is
    aborted at once, so a stop racing with a new request cannot be lost.
    """

    def __init__(self, stopped):
        self._lock = threading.Lock()
        self._response: Response | None = None
        self._stopped = stopped

    def attach(self, response: Response) -> None:
        with self._lock:
            self._response = response
            if self._stopped():
                response.abort()

    def detach(self) -> None:
        with self._lock:
            self._response = None

    def abort(self) -> None:
        with self._lock:
            if self._response is not None:
                self._response.abort()
