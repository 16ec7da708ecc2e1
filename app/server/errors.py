"""Errors the server answers with, in the two shapes clients parse.

Under `/api/*` clients read KoboldAI's `{"detail": {"msg", "type"}}` (SillyTavern shows
`detail.msg`); under `/v1/*` they read OpenAI's `{"error": {"message", "type", "code"}}`
(the `openai` client raises APIError with `error.message`).
"""
from __future__ import annotations

KOBOLD_TYPES = {400: "bad_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "bad_input", 411: "bad_input", 413: "bad_input", 503: "service_unavailable"}
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 411: "invalid_request_error",
                413: "invalid_request_error", 503: "unavailable_error"}


class ApiError(Exception):
    """A refused request: HTTP status and a message that says what to change."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}     # extra reply headers (Retry-After on a busy 503)

    def kobold_body(self) -> dict:
        detail = {"msg": self.message, "type": KOBOLD_TYPES.get(self.status, "server_error")}
        if self.status == 401:
            detail["error"] = "Unauthorized"          # KoboldCpp's exact 401 body has this key too
        return {"detail": detail}

    def openai_body(self) -> dict:
        return {"error": {"message": self.message, "type": OPENAI_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.status}}


def unauthorized() -> ApiError:
    return ApiError(401, "Authentication key is missing or invalid.")


RETRY_AFTER_SECONDS = 1


def busy() -> ApiError:
    return ApiError(503, "Server is busy; please try again later.",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
