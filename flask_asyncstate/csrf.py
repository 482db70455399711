"""The cancel route's proofs: a same-origin request, and Flask-WTF's CSRF token as its
configuration asks (our views are exempt from ``CSRFProtect`` itself only so that a
refusal is a JSON 403 rather than its HTML 400)."""

from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, request


def same_origin() -> bool:
    """The cancel request proves it comes from our own page (a header only same-origin JS can add)."""
    if request.headers.get("X-Requested-With"):
        return True
    origin = request.headers.get("Origin")
    if not origin:
        return False
    return _same_site(origin, request.host_url)


def _same_site(url: str, ours: str) -> bool:
    """Whether ``url`` has our scheme and host; a malformed URL (``http://[``) is not ours."""
    try:
        theirs, mine = urlsplit(url), urlsplit(ours)
    except ValueError:
        return False
    return (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc)


def refusal(error: Any) -> Any:
    """The 403 answer (made by ``error(status, message)``) of a state-changing request that
    lacks its proofs, or None when it has them."""
    if not same_origin():
        return error(403, "this needs the X-Requested-With header or a same-origin Origin")
    problem = csrf_error()
    return None if problem is None else error(403, problem)


def csrf_error() -> str | None:
    """Flask-WTF's CSRF check, when ``CSRFProtect`` is on the app, as its configuration says.

    ``WTF_CSRF_ENABLED``, ``WTF_CSRF_CHECK_DEFAULT``, ``WTF_CSRF_METHODS``,
    ``WTF_CSRF_HEADERS``, ``WTF_CSRF_FIELD_NAME`` and ``WTF_CSRF_SSL_STRICT`` (the
    same-origin ``Referer`` over https) are honoured, and so is
    ``csrf.exempt(blueprint)`` of our blueprint: CSRFProtect itself skips our
    views only so that a refusal is a JSON 403, not its HTML 400.
    """
    csrf = current_app.extensions.get("csrf")
    if csrf is None:
        return None
    config = current_app.config
    if not config.get("WTF_CSRF_ENABLED", True) or not config.get("WTF_CSRF_CHECK_DEFAULT", True):
        return None
    if request.method not in config.get("WTF_CSRF_METHODS", {"POST", "PUT", "PATCH", "DELETE"}):
        return None
    exempt = getattr(csrf, "_exempt_blueprints", ())  # names, or Blueprint objects (1.2+)
    if any(getattr(bp, "name", bp) == request.blueprint for bp in exempt):
        return None
    from flask_wtf.csrf import ValidationError, validate_csrf

    token = None
    for header in config.get("WTF_CSRF_HEADERS", ["X-CSRFToken", "X-CSRF-Token"]):
        token = request.headers.get(header)
        if token:
            break
    else:
        token = request.form.get(config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))
    try:
        validate_csrf(token)
    except ValidationError as exc:
        return f"CSRF check failed: {exc}"
    if request.is_secure and config.get("WTF_CSRF_SSL_STRICT", True):  # as Flask-WTF does
        if not request.referrer:
            return "CSRF check failed: The referrer header is missing."
        if not _same_site(request.referrer, f"https://{request.host}/"):
            return "CSRF check failed: The referrer does not match the host."
    return None


def exempt_from_csrf_protect(app: Any, blueprint: Blueprint) -> None:
    """Let our views run their own CSRF check (JSON 403) instead of CSRFProtect's HTML 400.

    The views are exempted one by one, never the blueprint, so that an app's own
    ``csrf.exempt(blueprint)`` still tells :func:`csrf_error` to skip the check.
    """
    csrf = app.extensions.get("csrf")
    if csrf is None or app in _EXEMPTED.get(csrf, ()):
        return
    for endpoint, view in app.view_functions.items():
        if endpoint.startswith(f"{blueprint.name}."):
            csrf.exempt(view)
    _EXEMPTED.setdefault(csrf, weakref.WeakSet()).add(app)


#: CSRFProtect objects -> the apps whose views of ours they exempt already (checked per request).
_EXEMPTED: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
