"""The ``asyncstate`` blueprint: progress, cancel and job-list routes, and the widget's assets.

Every answer under the prefix is JSON with ``Cache-Control: no-store`` and
``Vary: Cookie``, errors included, for every method; bad input never reaches a
500 or an HTML page. A job is visible only when its token verifies *and* the
job's owner is the requesting session (and user); both failures answer the
same 404 with the same headers, so tokens cannot be used to probe for jobs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from typing import Any

import xstatic.pkg.jquery
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from . import admin, appstate, csrf, guards, results, serialization
from .errors import InvalidToken, QueueFull, QuotaExceeded, StoreError
from .events import progress_stream
from .labels import DEFAULT_LABELS
from .status import FINAL, JobStatus
from .stores.base import request_path

log = logging.getLogger("flask_asyncstate")

#: Our static files: no guard stands before them (a login page may show a widget).
_ASSETS = {
    "asyncstate.script",
    "asyncstate.stylesheet",
    "asyncstate.jquery",
    "asyncstate.admin_script",
    "asyncstate.jquery_auto",
}
_ADMIN = {"asyncstate.admin", "asyncstate.admin_jobs", "asyncstate.admin_cancel"}
#: Methods routed to the JSON views, so that a wrong one gets a JSON 405, not Flask's HTML.
#: Any other method is answered by :func:`unrouted` before routing errors become HTML.
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_NOT_FOUND = "no such job in this session"
#: What each route accepts, for the ``Allow`` header of a method no route knows.
_ALLOWED = {
    "asyncstate.progress": ("GET", "POST"),
    "asyncstate.cancel": ("POST",),
    "asyncstate.dismiss": ("DELETE",),
    **admin.ALLOWED,
}


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
        serialization.dumps(payload),
        status=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


class AnyPathConverter(PathConverter):
    """Like ``path``, but also matches newlines, so the catch-all really catches all."""

    regex = "[\\s\\S]*?"
    part_isolating = False  # werkzeug infers True from a regex without "/"


def visible_job(token: str) -> tuple[str, dict[str, Any]]:
    """The job id and public document of ``token`` if it verifies and this session owns the job.

    Anything else raises :class:`InvalidToken` (the same 404 for every reason). The owner
    is compared before anything else is done with the job: another owner's job costs one
    read, as a job that does not exist does, and its expiry is not restarted.
    """
    found = appstate.get()
    job_id = found.signer.unsign(token)
    owner = found.request_owner(create=False)
    doc = found.records.status(job_id, internal=True, owner=owner) if owner is not None else None
    if doc is None:
        raise InvalidToken(_NOT_FOUND)
    doc.pop("owner")
    doc.pop("instance")
    return job_id, doc


def found_owner() -> str | None:
    return appstate.get().request_owner(create=False)


def _allowed(*methods: str) -> Response | None:
    """A JSON 405 unless the request uses one of ``methods`` (HEAD goes with GET)."""
    allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
    if request.method in allowed:
        return None
    if request.method == "OPTIONS":
        response = _json({"allow": allowed})
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return error(405, f"use {' or '.join(methods)}", Allow=", ".join(allowed))


#: The widget's assets, served by our own routes (no blueprint static route beside them).
STATIC_FOLDER = os.path.join(os.path.dirname(__file__), "static")


def statuses() -> dict[str, list[str]]:
    """The job statuses as the widget needs them (from :class:`JobStatus`, never a copy)."""
    return {
        "all": [s.value for s in JobStatus],
        "final": [s.value for s in JobStatus if s.is_final],
    }


@functools.lru_cache(maxsize=4)
def _script_text(folder: str) -> str:
    """The widget's script, told the job statuses and default labels first (it keeps no
    copy of them)."""
    with open(os.path.join(folder, "asyncstate.js"), encoding="utf-8") as script:
        return (
            f"window.asyncstateStatuses = {json.dumps(statuses())};\n"
            f"window.asyncstateLabels = {json.dumps(DEFAULT_LABELS)};\n{script.read()}"
        )


def create_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint(
        "asyncstate",
        __name__,
        url_prefix=url_prefix or None,
        template_folder="templates",
    )

    @bp.route("/progress/<token>", methods=_ANY_METHOD, provide_automatic_options=False)
    def progress(token: str) -> Response:
        refused = _allowed("GET", "POST")
        if refused:
            return refused
        return _json(visible_job(token)[1])

    @bp.route("/cancel/<token>", methods=_ANY_METHOD, provide_automatic_options=False)
    def cancel(token: str) -> Response:
        refused = _allowed("POST")
        if refused:
            return refused
        refused = csrf.refusal(error)
        if refused:
            return refused
        job_id, doc = visible_job(token)
        if doc["status"] in FINAL:
            return _json(doc, 202)  # nothing left to cancel: the document says how it ended
        found = appstate.get()
        if not found.cancel_job(job_id, queued=doc["status"] == "queued"):
            return error(404, _NOT_FOUND)
        if doc["status"] == "queued" and found.executor.remote:  # it may have ended just now
            doc = found.records.status(job_id) or doc
        doc["cancel_requested"] = True
        return _json(doc, 202)

    @bp.route("/events/<token>", methods=_ANY_METHOD, provide_automatic_options=False)
    def events(token: str) -> Response:
        refused = _allowed("GET")
        if refused:
            return refused
        job_id, _doc = visible_job(token)
        found = appstate.get()
        slot = found.streams.acquire(found.request_owner(create=False) or "")
        if slot is None:
            return error(
                429,
                "too many open progress streams; poll /progress instead",
                **{"Retry-After": "10"},
            )
        # The stream runs after the request ended: its reads still get request-path waits.
        stream = progress_stream(found, job_id)
        return Response(
            slot.wrap(stream, request_path),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @bp.route("/jobs/<token>", methods=_ANY_METHOD, provide_automatic_options=False)
    def dismiss(token: str) -> Response:
        refused = _allowed("DELETE") or csrf.refusal(error)
        if refused:
            return refused
        job_id, doc = visible_job(token)
        if doc["status"] not in FINAL:
            return error(409, "the job has not ended; cancel it first")
        appstate.get().records.forget(job_id, found_owner())
        return _json({"dismissed": True})

    @bp.route("/jobs", methods=_ANY_METHOD, provide_automatic_options=False)
    def jobs() -> Response:
        refused = _allowed("GET")
        if refused:
            return refused
        return _json(appstate.get().extension.jobs())

    def asset(directory: str, filename: str, max_age: int) -> Response:
        return _allowed("GET") or send_from_directory(directory, filename, max_age=max_age)

    @bp.route("/asyncstate.js", methods=_ANY_METHOD, provide_automatic_options=False)
    def script() -> Response:
        refused = _allowed("GET")
        if refused:
            return refused
        text = _script_text(STATIC_FOLDER)
        response = Response(text, mimetype="text/javascript")
        response.cache_control.public = True
        response.cache_control.max_age = 300
        response.set_etag(hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())
        response.make_conditional(request)  # 304 for a page that has it already
        return response

    @bp.route("/asyncstate.css", methods=_ANY_METHOD, provide_automatic_options=False)
    def stylesheet() -> Response:
        return asset(STATIC_FOLDER, "asyncstate.css", 300)

    @bp.route("/jquery-auto.js", methods=_ANY_METHOD, provide_automatic_options=False)
    def jquery_auto() -> Response:
        return asset(STATIC_FOLDER, "jquery-auto.js", 300)

    @bp.route("/asyncstate-admin.js", methods=_ANY_METHOD, provide_automatic_options=False)
    def admin_script() -> Response:
        return asset(STATIC_FOLDER, "asyncstate-admin.js", 300)

    @bp.route("/result/<token>", methods=_ANY_METHOD, provide_automatic_options=False)
    def result(token: str) -> Response:
        refused = _allowed("GET")
        if refused:
            return refused
        _job_id, doc = visible_job(token)
        html = results.render(doc)
        if html is None:
            return error(404, "no result to show")
        return _json({"html": str(html)})

    admin.register(bp, _allowed, _json, error, statuses)

    @bp.before_request
    def guarded() -> Response | None:
        if request.endpoint in _ASSETS:
            return None
        found = appstate.get()
        guard = found.extension.blueprint_guard
        if guard is None or request.endpoint in _ADMIN:  # the admin page has its own guard
            return None
        refused = guards.verdict(guard, background=True)
        return None if refused is None else guards.as_json(refused, error)

    @bp.route("/jquery.js", methods=_ANY_METHOD, provide_automatic_options=False)
    def jquery() -> Response:
        return asset(xstatic.pkg.jquery.BASE_DIR, "jquery.min.js", 3600)

    @bp.route(
        "/",
        defaults={"rest": ""},
        methods=_ANY_METHOD,
        strict_slashes=False,
        provide_automatic_options=False,
    )
    @bp.route("/<asyncstate_any:rest>", methods=_ANY_METHOD, provide_automatic_options=False)
    def not_found(rest: str) -> Response:
        return error(404, "not found")

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error(exc.code or 500, exc.description or exc.name)

    @bp.after_request
    def same_headers(response: Response) -> Response:
        return harden(response)

    return bp


def under_prefix(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def unrouted(prefix: str) -> Response | None:
    """App-wide, before routing errors turn into HTML: a method no route knows -> JSON 405.

    Werkzeug raises ``MethodNotAllowed`` for e.g. ``PROPFIND`` before any view
    of ours runs; this answers it (and any other routing error) under our prefix.
    """
    exc = request.routing_exception
    if exc is None or not under_prefix(request.path, prefix):
        return None
    if isinstance(exc, HTTPException) and exc.code == 405:
        try:
            adapter = current_app.create_url_adapter(request)
            endpoint = adapter.match(method="POST")[0] if adapter is not None else None
        except HTTPException:
            endpoint = None
        allowed = _ALLOWED.get(str(endpoint), ("GET",))
        allow = [*allowed, "HEAD"] if "GET" in allowed else list(allowed)
        response = error(405, f"use {' or '.join(allowed)}", Allow=", ".join(allow))
    elif isinstance(exc, HTTPException):
        response = error(exc.code or 404, exc.description or exc.name)
    else:  # a redirect for a missing slash, say: ours are never needed
        response = error(404, "not found")
    return harden(response)


def harden(response: Response) -> Response:
    """Headers of every answer under the prefix.

    ``Vary: Cookie`` whatever the token (a header that differs would tell a valid
    signature from a forged one); ``nosniff`` so no answer is ever read as a script or
    a page; and our HTML (the operator's page, with its Cancel buttons) is never framed
    by another site (clickjacking).
    """
    response.vary.add("Cookie")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["X-Frame-Options"] = "DENY"
        policy = response.headers.get("Content-Security-Policy")
        if not policy:
            response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        elif "frame-ancestors" not in policy:
            response.headers["Content-Security-Policy"] = f"{policy}; frame-ancestors 'none'"
    return response


def invalid_token(exc: InvalidToken) -> Response:
    """App-wide: ``asyncstate.status/cancel/handle`` with a bad token in a user's view -> 404."""
    return error(404, _NOT_FOUND)


def quota_exceeded(exc: QuotaExceeded) -> Response:
    """App-wide: a view whose ``start()`` hit the owner's quota answers 429 (in words for
    the user: ``exc.user_message``)."""
    return error(429, exc.user_message, **{"Retry-After": "5"})


def queue_full(exc: QueueFull) -> Response:
    """App-wide: this instance has too many jobs waiting; the client should come back later."""
    log.warning("asyncstate admission refused: %s", exc)
    return error(503, exc.user_message, **{"Retry-After": "5"})


def store_error(exc: StoreError) -> Response:
    """App-wide: the shared store is unreachable or failing; try again later."""
    log.warning("asyncstate store error: %s", exc)
    retry_after = str(appstate.get().retry_after) if _has_extension() else "2"
    return error(
        503, "the job store is unavailable, try again shortly", **{"Retry-After": retry_after}
    )


def _has_extension() -> bool:
    return appstate.EXTENSION_KEY in current_app.extensions
