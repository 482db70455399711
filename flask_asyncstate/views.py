"""The ``asyncstate`` blueprint: progress, cancel and job-list routes, and the widget's assets.

Every answer of a JSON route is JSON with ``Cache-Control: no-store``, errors
included; bad input never reaches a 500 or an HTML page. A job is visible only
when its token verifies *and* its id is in the requesting session, and both
failures answer the same 404, so tokens cannot be used to probe for jobs.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import xstatic.pkg.jquery
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from . import serialization, tokens
from .errors import InvalidToken, QuotaExceeded, StoreError
from .events import progress_stream
from .records import FINAL

log = logging.getLogger("flask_asyncstate")

#: Methods routed to the JSON views, so that a wrong one gets a JSON 405, not Flask's HTML.
_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_NOT_FOUND = "no such job in this session"


def error(status: int, message: str, **headers: str) -> Response:
    """A JSON error answer, never cached."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(payload: Any, status: int = 200) -> Response:
    """Compact JSON in document order (no key sorting: these answers are polled every second)."""
    return Response(
        serialization.dumps(payload), status=status, mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


class AnyPathConverter(PathConverter):
    """Like ``path``, but also matches newlines, so the catch-all really catches all."""

    regex = "[\\s\\S]*?"
    part_isolating = False  # werkzeug infers True from a regex without "/"


def _extension() -> Any:
    return current_app.extensions["asyncstate"]


def session_job_id(token: str) -> str:
    """The job id of ``token`` if it verifies and belongs to this session; else InvalidToken."""
    job_id = _extension().runner().signer.unsign(token)
    if not tokens.owns(session, job_id):
        raise InvalidToken(_NOT_FOUND)
    return job_id


def _same_origin() -> bool:
    """The cancel request proves it comes from our own page (a header only same-origin JS can add)."""
    if request.headers.get("X-Requested-With"):
        return True
    origin = request.headers.get("Origin")
    if not origin:
        return False
    ours = urlsplit(request.host_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)


def _csrf_error() -> str | None:
    """Flask-WTF's CSRF check, when that extension is installed on the app."""
    if "csrf" not in current_app.extensions:
        return None
    from flask_wtf.csrf import ValidationError, validate_csrf

    token = request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
    try:
        validate_csrf(token)
    except ValidationError as exc:
        return f"CSRF check failed: {exc}"
    return None


def create_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint(
        "asyncstate", __name__, url_prefix=url_prefix or None,
        static_folder="static", template_folder="templates",
    )

    @bp.route("/progress/<token>", methods=_ANY_METHOD)
    def progress(token: str) -> Response:
        if request.method not in ("GET", "POST"):
            return error(405, "use GET or POST", Allow="GET, POST")
        job_id = session_job_id(token)
        doc = _extension().runner().records.status(job_id)
        if doc is None:
            return error(404, _NOT_FOUND)
        return _json(doc)

    @bp.route("/cancel/<token>", methods=_ANY_METHOD)
    def cancel(token: str) -> Response:
        if request.method != "POST":
            return error(405, "cancel needs POST", Allow="POST")
        if not _same_origin():
            return error(403, "cancel needs the X-Requested-With header or a same-origin Origin")
        csrf_problem = _csrf_error()
        if csrf_problem:
            return error(403, csrf_problem)
        job_id = session_job_id(token)
        runner = _extension().runner()
        doc = runner.records.status(job_id)
        if doc is None:
            return error(404, _NOT_FOUND)
        if doc["status"] in FINAL:
            return _json(doc, 202)  # nothing left to cancel: the document says how it ended
        if not runner.cancel(job_id):
            return error(404, _NOT_FOUND)
        doc["cancel_requested"] = True
        return _json(doc, 202)

    @bp.route("/events/<token>", methods=_ANY_METHOD)
    def events(token: str) -> Response:
        if request.method != "GET":
            return error(405, "use GET", Allow="GET")
        job_id = session_job_id(token)
        runner = _extension().runner()
        if runner.records.status(job_id) is None:
            return error(404, _NOT_FOUND)
        # The generator needs no request context: the session was checked above.
        return Response(
            progress_stream(runner, job_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @bp.route("/jobs", methods=_ANY_METHOD)
    def jobs() -> Response:
        if request.method != "GET":
            return error(405, "use GET", Allow="GET")
        return _json(_extension().jobs())

    @bp.get("/asyncstate.js")
    def script() -> Response:
        return send_from_directory(bp.static_folder or "", "asyncstate.js", max_age=300)

    @bp.get("/asyncstate.css")
    def stylesheet() -> Response:
        return send_from_directory(bp.static_folder or "", "asyncstate.css", max_age=300)

    @bp.get("/jquery.js")
    def jquery() -> Response:
        return send_from_directory(xstatic.pkg.jquery.BASE_DIR, "jquery.min.js", max_age=3600)

    @bp.route("/", defaults={"rest": ""}, methods=_ANY_METHOD, strict_slashes=False)
    @bp.route("/<asyncstate_any:rest>", methods=_ANY_METHOD)
    def not_found(rest: str) -> Response:
        return error(404, "not found")

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error(exc.code or 500, exc.description or exc.name)

    return bp


def invalid_token(exc: InvalidToken) -> Response:
    """App-wide: ``asyncstate.status/cancel/handle`` with a bad token in a user's view -> 404."""
    return error(404, _NOT_FOUND)


def quota_exceeded(exc: QuotaExceeded) -> Response:
    """App-wide: a view whose ``start()`` hit the session quota answers 429."""
    return error(429, str(exc), **{"Retry-After": "5"})


def store_error(exc: StoreError) -> Response:
    """App-wide: the shared store is unreachable or failing; try again later."""
    log.warning("asyncstate store error: %s", exc)
    return error(503, "the job store is unavailable, try again shortly", **{"Retry-After": "2"})


def exempt_from_csrf_protect(app: Any, blueprint: Blueprint) -> None:
    """Let our cancel route run its own CSRF check (JSON 403) instead of CSRFProtect's HTML 400."""
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(blueprint)
