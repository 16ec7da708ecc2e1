"""Server-sent events on a plain socket file, and noticing that the client went away.

`SSEWriter` writes events and raises `ClientGone` when the peer has closed the connection, so
the caller can abort the generation that was feeding it. `peer_closed` answers the same
question without writing, for the stretches where nothing is sent (prompt processing, text
held back by a possible stop sequence, a non-streaming request).
"""
from __future__ import annotations

import json
import select
import socket


class ClientGone(Exception):
    """The client closed the connection."""


def peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed its end (readable with nothing to read) or reset it."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class SSEWriter:
    """Writes `text/event-stream` events to a response body and flushes each one."""

    def __init__(self, wfile):
        self.wfile = wfile

    def send(self, data, event: str | None = None) -> None:
        """One event; `data` is JSON-encoded unless it is already a string."""
        payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        lines = (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
        self.write(lines)

    def write(self, raw: str) -> None:
        try:
            self.wfile.write(raw.encode("utf-8"))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            raise ClientGone(str(e)) from None
