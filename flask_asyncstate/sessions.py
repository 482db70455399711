"""Keep our routes answering JSON when the *session* store fails (Flask-Session on a down Redis).

Flask opens the session before any view or error handler of ours can run, so an
outage of the session's Redis would surface as an HTML 500 on our JSON routes.
The app's session interface is wrapped: under our URL prefix, a failure to open
the session gives an :class:`UnavailableSession`, which the views answer with a
503 JSON when Flask starts the request, and a failure to save one is logged. Everywhere
else the app behaves exactly as before, except that every session it saves
carries the base of its job owner id (see :func:`owners.stamp`).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import NullSession, SecureCookieSessionInterface

from . import owners

log = logging.getLogger("flask_asyncstate")


class UnavailableSession(NullSession):
    """Stands in for a session that could not be opened; it refuses writes like a NullSession."""


class GuardedSessionInterface:
    """Delegates to the app's own session interface; see the module docstring."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def _ours(self, request: Request) -> bool:
        path = request.path
        return path == self.prefix or path.startswith(self.prefix + "/")

    def open_session(self, app: Flask, request: Request) -> Any:
        try:
            return self.inner.open_session(app, request)
        except Exception as exc:
            if not self._ours(request):
                raise
            log.warning("flask-asyncstate: the session store failed (%r); answering 503", exc)
            return UnavailableSession()

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if isinstance(session, UnavailableSession):
            return
        if not self.inner.is_null_session(session):
            owners.stamp(session)  # the owner base, before the first start can race for it
        try:
            self.inner.save_session(app, session, response)
        except Exception as exc:
            if not self._ours(_request()):
                raise
            log.warning("flask-asyncstate: the session could not be saved (%r)", exc)

    def is_null_session(self, obj: object) -> bool:
        return isinstance(obj, UnavailableSession) or bool(self.inner.is_null_session(obj))

    def make_null_session(self, app: Flask) -> Any:
        return self.inner.make_null_session(app)

    def __getattr__(self, name: str) -> Any:  # regenerate(), serializer, ...: the app's own
        return getattr(self.inner, name)


def _request() -> Request:
    from flask import request

    return request._get_current_object()  # type: ignore[attr-defined]


def guard(app: Flask, prefix: str) -> None:
    """Wrap the app's session interface now and whenever another extension replaces it.

    Flask-Session may be set up after us; the check costs one ``isinstance`` per request.
    """
    inner_wsgi = app.wsgi_app

    def ensure_guarded() -> None:
        if not isinstance(app.session_interface, GuardedSessionInterface):
            app.session_interface = GuardedSessionInterface(  # type: ignore[assignment]
                app.session_interface, prefix
            )

    warned: list[bool] = []

    def wsgi_app(environ: Any, start_response: Any) -> Any:
        ensure_guarded()
        if not warned:
            warned.append(True)
            _warn_if_cookie_session(app)
        return inner_wsgi(environ, start_response)

    ensure_guarded()
    app.wsgi_app = wsgi_app  # type: ignore[method-assign]


def _warn_if_cookie_session(app: Flask) -> None:
    """Once, at the first request (Flask-Session may be set up after us): say what it costs."""
    inner = getattr(app.session_interface, "inner", app.session_interface)
    if isinstance(inner, SecureCookieSessionInterface):
        log.warning(
            "flask-asyncstate: %s uses Flask's cookie session, so each browser's job owner id"
            " travels in the cookie (signed, but readable) and a browser's very first"
            " simultaneous starts cannot agree on it; use Flask-Session (server-side sessions)",
            app.name,
        )
