"""Who may talk to the server: bind address, API key, Host header and CORS origins.

The defaults follow the spec's recommendations (shared/spec/server-api.md A3): bind to
loopback; any other interface needs an API key; a browser page may only call us from a
localhost origin or a `file://` page (Origin `null`) unless the user allows any origin; and a
request whose Host header names anything but a loopback name, an IP address or a name the
user listed is refused, because that is what a DNS-rebinding page would send.
"""
from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header ("[::1]:5001" -> "::1", "Example:80" -> "example")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class SecurityPolicy:
    """The server's access rules; `check_*` return an error message or None."""

    api_key: str | None = None
    allow_any_origin: bool = False
    allowed_origins: tuple = ()
    allowed_hosts: tuple = ()
    bind_host: str = "127.0.0.1"
    _hosts: frozenset = field(init=False, default=frozenset())

    def __post_init__(self):
        names = {h.lower() for h in self.allowed_hosts}
        if not is_loopback(self.bind_host) and self.bind_host not in ("", "0.0.0.0", "::"):
            names.add(self.bind_host.lower())
        if not is_loopback(self.bind_host):
            # On a LAN the machine is also reached by its own name.
            names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
        self._hosts = frozenset(names)

    def check_host(self, header: str | None) -> str | None:
        """Refuse Host names a rebinding page would use; IP literals and loopback names pass."""
        if header is None:
            return None            # HTTP/1.0 tools; every browser sends Host
        name = host_name(header)
        if is_loopback(name) or _is_ip(name) or name in self._hosts:
            return None
        return (f"Host {header!r} is not allowed: this server answers only to localhost, IP addresses "
                f"and the names it was told to allow (protection against DNS rebinding)")

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser page from `origin` may call us (no Origin header: not a browser page)."""
        if origin is None or self.allow_any_origin:
            return True
        if origin == "null":
            return True            # a file:// page such as mikupad opened from disk
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")

    def authorized(self, headers) -> bool:
        """`Authorization: Bearer KEY` or `X-Api-Key: KEY`; everything passes without a key."""
        if not self.api_key:
            return True
        offered = []
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        if headers.get("X-Api-Key"):
            offered.append(headers.get("X-Api-Key").strip())
        expected = self.api_key.encode("utf-8")
        return any(hmac.compare_digest(k.encode("utf-8"), expected) for k in offered)
