"""Guards an app puts in front of our routes: ``AsyncState.guard`` before every route
of the blueprint, ``AsyncState.admin_guard`` before the operator's page.

A guard is either a view decorator such as Flask-Login's ``login_required`` (it
takes one argument) or a check of no arguments. A check returns ``True`` or
``None`` to allow, ``False`` to refuse with a 403, or anything a view may
return (a response, a string and a status...) to refuse with that; an
``abort()`` inside it refuses too. Nothing a guard returns gives a 500: a value
Flask cannot make a response of refuses with a 403 and an error in the log. Our
JSON routes answer a refusal as JSON.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Response, current_app, request, session

log = logging.getLogger("flask_asyncstate")

_ALLOWED = object()
_MISSING = object()
#: Session keys Flask-Login's refusal writes (its flashed "Please log in" message, and the
#: ``next`` page under ``USE_SESSION_FOR_NEXT``): a background request must not leave them.
_REFUSAL_KEYS = ("_flashes", "next", "_id")


def _allow() -> object:
    return _ALLOWED


def _is_decorator(guard: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(guard).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: take it for a check
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and p.default is p.empty for p in parameters)


def verdict(guard: Callable[..., Any], *, background: bool = False) -> Response | None:
    """Run ``guard``; None when it allows the request, else its refusal as a response.

    ``background``: the request is the widget's, not a page the user opened, so a
    refusal leaves the session as it was (no "Please log in" flashed for every poll).
    """
    before = _session_keys() if background else None
    result = guard(_allow)() if _is_decorator(guard) else guard()
    if result is None or result is True or result is _ALLOWED:
        return None
    if before is not None:
        _restore_session_keys(before)
    if result is False:
        return _forbidden()
    try:
        return current_app.make_response(result)
    except (TypeError, ValueError) as exc:
        log.error(
            "asyncstate guard %r returned %r, which is not a response (%s): refused;"
            " return True or None to allow, False or a response to refuse",
            guard,
            result,
            exc,
        )
        return _forbidden()


def _forbidden() -> Response:
    return current_app.make_response(({"error": "not allowed"}, 403))


def _session_keys() -> dict[str, Any]:
    return {
        k: (list(session[k]) if isinstance(session[k], list) else session[k])
        if k in session
        else _MISSING
        for k in _REFUSAL_KEYS
    }


def _restore_session_keys(before: dict[str, Any]) -> None:
    for key, value in before.items():
        if value is _MISSING:
            if key in session:
                session.pop(key)
        elif session.get(key) != value:
            session[key] = value


def as_json(refused: Response, error: Callable[..., Response]) -> Response:
    """A guard's refusal as our JSON error: a redirect (to a login page) becomes a 401 whose
    ``login_url`` sends the user back to the page they were on, not to our JSON route."""
    if 300 <= refused.status_code < 400:
        answer = error(401, "login required")
        location = refused.headers.get("Location")
        if location:
            answer.set_data(
                current_app.json.dumps(
                    {"error": "login required", "login_url": _back_to_page(location)}
                )
            )
        return answer
    body = refused.get_json(silent=True) if refused.is_json else None
    message = str(body.get("error", "not allowed")) if isinstance(body, dict) else "not allowed"
    # A refusal is never a success: a body returned with no status (Flask's 200) is a 403.
    return error(refused.status_code if refused.status_code >= 400 else 403, message)


def _back_to_page(location: str) -> str:
    """``location`` with any query value naming this (JSON) request replaced by the page
    that made it (its same-site ``Referer``), or dropped when there is none."""
    try:
        parts = urlsplit(location)
        here = request.script_root + request.path
        page = _referring_page()
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if urlsplit(value).path != here:
                query.append((key, value))
            elif page is not None:
                query.append((key, page))
        return urlunsplit(parts._replace(query=urlencode(query)))
    except ValueError:  # a malformed URL somewhere: the login page without a next
        return location.split("?", 1)[0]


def _referring_page() -> str | None:
    """The path and query of the ``Referer`` when it is one of this site's pages."""
    if not request.referrer:
        return None
    page, ours = urlsplit(request.referrer), urlsplit(request.host_url)
    if (page.scheme, page.netloc) != (ours.scheme, ours.netloc):
        return None
    return urlunsplit(("", "", page.path or "/", page.query, ""))
