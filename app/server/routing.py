"""Routes: which function serves a path, with which methods, and whether it needs the key.

Kept apart from http.py so that the endpoint modules (kobold.py, openai_api.py, llamacpp.py)
can declare their routes without importing the HTTP machinery that imports them.
"""
from __future__ import annotations


class Route:
    """An endpoint: its path, methods, whether it needs the key, and the function serving it."""

    def __init__(self, path: str, methods, func, secured: bool, allow_unauthorized=None,
                 openai_errors: bool | None = None):
        """`openai_errors`: errors in OpenAI's (and llama.cpp's) `{"error": ...}` shape rather than
        KoboldCpp's `{"detail": ...}`; by default for the /v1/ paths."""
        self.path = path
        self.methods = tuple(methods)
        self.func = func
        self.secured = secured
        self._allow_unauthorized = allow_unauthorized
        self.openai_errors = path.startswith("/v1/") if openai_errors is None else openai_errors

    def func_allows_unauthorized(self, exchange) -> bool:
        return bool(self._allow_unauthorized and self._allow_unauthorized(exchange))


class Router:
    """Finds the route of a path. KoboldCpp matches on the path's end, so any prefix works
    (clients that double a `/v1` or put the server behind a sub-path rely on it); we do the
    same, longest route first, and accept `/api/latest/` as an alias of `/api/v1/`."""

    def __init__(self, routes):
        self.routes = sorted(routes, key=lambda r: -len(r.path))

    def find(self, path: str):
        path = path.replace("/api/latest/", "/api/v1/")
        for route in self.routes:
            if path.endswith(route.path):
                return route
        return None
