"""Guards an app puts in front of our routes: ``ASYNCSTATE_BLUEPRINT_GUARD`` (or
``AsyncState.guard``) before every route of the blueprint, ``ASYNCSTATE_ADMIN_GUARD``
before the operator's page.

A guard is either a view decorator such as Flask-Login's ``login_required`` (it
takes one argument) or a check of no arguments returning ``None`` to allow, or
anything a view may return (a response, a string and a status...) to refuse; an
``abort()`` inside it refuses too. Our JSON routes answer a refusal as JSON.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from flask import Response, current_app

_ALLOWED = object()


def _allow() -> object:
    return _ALLOWED


def _is_decorator(guard: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(guard).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: take it for a check
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and p.default is p.empty for p in parameters)


def verdict(guard: Callable[..., Any]) -> Response | None:
    """Run ``guard``; None when it allows the request, else its refusal as a response."""
    result = guard(_allow)() if _is_decorator(guard) else guard()
    if result is None or result is _ALLOWED:
        return None
    return current_app.make_response(result)


def as_json(refused: Response, error: Callable[..., Response]) -> Response:
    """A guard's refusal as our JSON error: a redirect (to a login page) becomes a 401."""
    if 300 <= refused.status_code < 400:
        answer = error(401, "login required")
        location = refused.headers.get("Location")
        if location:
            answer.set_data(
                current_app.json.dumps({"error": "login required", "login_url": location})
            )
        return answer
    body = refused.get_json(silent=True) if refused.is_json else None
    message = str(body.get("error", "not allowed")) if isinstance(body, dict) else "not allowed"
    return error(refused.status_code, message)
