"""Small helpers the example's views share."""

from __future__ import annotations

from flask import Response, make_response, request


def wants_json() -> bool:
    """The client asked for JSON (an API client or a script), not for a page."""
    return request.accept_mimetypes.best == "application/json"


def no_store(body: str) -> Response:
    """A page that must not be cached: it carries job tokens, the CSRF token or flashed messages."""
    response = make_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response
