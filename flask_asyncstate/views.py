"""The HTTP layer: the ``asyncstate`` blueprint, :data:`bp`, and every answer under its prefix.

``init_app`` registers :data:`bp` under ``ASYNCSTATE_URL_PREFIX``. Its routes: the
progress document (``progress``), cancel, "Try again" (``retry``), the Server-Sent
Events stream (``events``), the owner's jobs (``jobs``) and dismissing one
(``dismiss``), the result slot (``result``), the widget for htmx (``fragment``), the
OpenAPI description of all of them (``openapi``), the widget's scripts and stylesheet, and
the operator's page (``admin``, ``admin_jobs``, ``admin_cancel``, ``admin_retry``), on
only while an admin guard is set. Each route declares its methods; Flask answers HEAD
where GET is taken, and OPTIONS.

Every answer under the prefix carries ``Vary: Cookie`` and ``nosniff``; every JSON answer
``Cache-Control: no-store``, errors included, for every method: bad input never reaches
a 500 or an HTML page. The answers are made where Flask expects them:

- in our views and hooks, by the blueprint's error handlers: any ``HTTPException`` as
  ``{"error": ...}``, Flask-WTF's ``CSRFError`` as a 403;
- a request under the prefix that no route of ours takes (werkzeug's ``NotFound``, its
  ``MethodNotAllowed``, whose ``valid_methods`` give the ``Allow`` header, or a redirect),
  that asks for the operator's page while it is off, or whose session store failed:
  Flask sends ``request_started`` before any ``before_request`` hook of the app, and
  :func:`answer_first`, connected to it, raises :exc:`NotRouted` or
  :exc:`SessionStoreDown` there, which our handlers answer. The app's own 404 and 405
  handlers are neither replaced nor asked: Flask looks them up only for werkzeug's
  exceptions, which never reach it for these requests;
- app-wide, where the app's own views raise them too: :exc:`InvalidToken` 404,
  :exc:`JobNotRetryable` 409, :exc:`QuotaExceeded` 429, :exc:`QueueFull` 503,
  :exc:`StoreError` 503.

A job is visible only when its token verifies *and* the job's owner is the requesting
session (and user): see :func:`~flask_asyncstate.security.visible_job`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import xstatic.pkg.jquery
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    request_started,
    send_from_directory,
    session,
    stream_with_context,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, NotFound

from . import appstate, openapi, serialization, templating
from .errors import InvalidToken, JobNotRetryable, QueueFull, QuotaExceeded, StoreError
from .records import ADMIN_FIELDS
from .security import NOT_FOUND, csrf_token, json_refusal, same_origin, verdict, visible_job
from .sessions import UnavailableSession
from .sse import handed_over, progress_stream
from .status import FINAL
from .stores.base import request_path

log = logging.getLogger("flask_asyncstate")

#: The blueprint; ``init_app`` registers it under ``ASYNCSTATE_URL_PREFIX``.
bp = Blueprint("asyncstate", __name__, template_folder="templates")

#: Our static files: no guard stands before them (a login page may show a widget).
_ASSETS = {
    "asyncstate.script",
    "asyncstate.module",
    "asyncstate.stylesheet",
    "asyncstate.jquery",
    "asyncstate.admin_script",
    "asyncstate.jquery_auto",
    "asyncstate.openapi",
}
#: The operator's page: its own guard, and no route at all while none is set.
_ADMIN = {
    "asyncstate.admin",
    "asyncstate.admin_jobs",
    "asyncstate.admin_cancel",
    "asyncstate.admin_retry",
}
#: The widget's assets, served by our own routes (no blueprint static route beside them).
STATIC_FOLDER = os.path.join(os.path.dirname(__file__), "static")
#: Most jobs the operator's page lists (the newest); the CLI lists them all.
MAX_LISTED = 500
_JOB_ID = re.compile(r"[0-9a-f]{32}")
#: The media type of our scripts (RFC 9239), whatever the platform's ``mimetypes`` say.
_JS = "text/javascript"
#: The order in which answers name methods (``Allow``, ``{"allow": [...]}``).
_METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


# -- answers ----------------------------------------------------------------------------


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


def _allow(methods: Iterable[str]) -> list[str]:
    """The methods a route takes, as our answers name them: HEAD last, OPTIONS left out
    (every route answers it)."""
    rank = {m: i for i, m in enumerate(_METHOD_ORDER)}
    return sorted(set(methods) - {"OPTIONS"}, key=lambda m: (rank.get(m, len(rank)), m))


def _html(markup: str, status: int = 200) -> Response:
    """An htmx fragment, never cached."""
    return Response(markup, status=status, headers={"Cache-Control": "no-store"})


def _as_html() -> bool:
    """``?format=html``: the answer is the htmx widget (:func:`templating.fragment`) rather
    than the JSON document (cancel, "Try again") or the JSON events (``/events``)."""
    return request.args.get("format") == "html"


def _fragment_of(token: str, doc: dict[str, Any] | None, status: int) -> Response:
    """The htmx widget as this request's query asks: ``interval``, ``details=1`` (the trail
    open), ``step`` (the names of the stages to list); ``live=sse``: on its stream."""
    found = appstate.get()
    options = _fragment_options()
    if request.args.get("live") == "sse":
        return _html(templating.streamed_fragment(found, token, doc, **options), status)
    return _html(templating.fragment(found, token, doc, **options), status)


def _fragment_options() -> dict[str, Any]:
    args = request.args
    return {
        "interval": args.get("interval"),
        "details": args.get("details") == "1",
        "steps": templating.step_names(args.getlist("step")),
    }


def _refused(refused: Response) -> Response:
    """A guard's refusal answered as our JSON error."""
    status, body = json_refusal(refused)
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _same_origin_only(view: Callable[..., Response]) -> Callable[..., Response]:
    """A state-changing view: a 403 unless the request proves it comes from our own pages
    (Flask-WTF's CSRF check, when it is set up, has run before any view)."""

    @functools.wraps(view)
    def checked(**kwargs: Any) -> Response:
        if not same_origin():
            return error(403, "this needs the X-Requested-With header or a same-origin Origin")
        return view(**kwargs)

    return checked


# -- the user's routes ------------------------------------------------------------------


@bp.route("/progress/<token>", methods=["GET", "POST"])
def progress(token: str) -> Response:
    return _json(visible_job(appstate.get(), token)[1])


@bp.post("/cancel/<token>")
@_same_origin_only
def cancel(token: str) -> Response:
    found = appstate.get()
    job_id, doc = visible_job(found, token)
    if doc["status"] not in FINAL:  # else nothing left to cancel: the document says how it ended
        if not found.cancel_job(
            job_id, queued=doc["status"] == "queued", family=doc.get("children") is not None
        ):
            return error(404, NOT_FOUND)
        if doc["status"] == "queued" and found.executor.remote:  # it may have ended just now
            doc = found.records.status(job_id) or doc
        doc["cancel_requested"] = True
    return _fragment_of(token, doc, 202) if _as_html() else _json(doc, 202)


@bp.post("/retry/<token>")
@_same_origin_only
def retry(token: str) -> Response:
    """ "Try again": a failed, cancelled or lost job of the caller's runs again, same token."""
    found = appstate.get()
    job_id, _doc = visible_job(found, token)
    return _run_again(found, job_id, token if _as_html() else None)


def _run_again(
    found: appstate.AppState, job_id: str, fragment_token: str | None = None
) -> Response:
    """Run the job again: 202 with its document (or, given ``fragment_token``, its htmx
    widget, polling again); JobNotRetryable answers 409 (``not_retryable`` below)."""
    found.lifecycle.rerun(job_id)
    doc = found.records.status(job_id)
    if fragment_token is not None:
        return _fragment_of(fragment_token, doc, 202)
    return _json(doc, 202)


@bp.get("/events/<token>")
def events(token: str) -> Response:
    found = appstate.get()
    job_id, _doc = visible_job(found, token)
    slot = found.streams.acquire(found.request_owner(create=False) or "")
    if slot is None and _as_html():
        # htmx's SSE extension cannot read a 429 (EventSource only sees a failure) and would
        # open the stream again and again: hand it the widget that polls by itself instead.
        polling = templating.fragment(found, token, _doc, **_fragment_options())
        return Response(
            handed_over(str(polling)),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "Retry-After": "10"},
        )
    if slot is None:
        return error(
            429,
            "too many open progress streams; poll /progress instead",
            **{"Retry-After": "10"},
        )
    # The stream runs after the request ended: its reads still get request-path waits.
    if _as_html():  # htmx's SSE extension: each event is the widget (rendered in the request)
        options = _fragment_options()

        def render(doc: dict[str, Any] | None) -> str:
            return str(templating.fragment(found, token, doc, live="sse", **options))

        stream = stream_with_context(progress_stream(found, job_id, render))
    else:
        stream = progress_stream(found, job_id)
    return Response(
        slot.wrap(stream, request_path),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@bp.delete("/jobs/<token>")
@_same_origin_only
def dismiss(token: str) -> Response:
    found = appstate.get()
    job_id, doc = visible_job(found, token)
    if doc["status"] not in FINAL:
        return error(409, "the job has not ended; cancel it first")
    found.records.forget(job_id, found.request_owner(create=False))
    return _json({"dismissed": True})


@bp.get("/jobs")
def jobs() -> Response:
    return _json(appstate.get().extension.jobs())


@bp.get("/result/<token>")
def result(token: str) -> Response:
    found = appstate.get()
    _job_id, doc = visible_job(found, token)
    html = templating.render_result(found, doc)
    if html is None:
        return error(404, "no result to show")
    return _json({"html": str(html)})


@bp.get("/fragment/<token>")
def fragment(token: str) -> Response:
    """The widget for htmx: 200 while the job is unfinished (the fragment polls itself),
    286 when it is final, and 286 with a "Not found" fragment for a token that shows no
    job (htmx swaps it and stops polling: that job will never show)."""
    try:
        _job_id, doc = visible_job(appstate.get(), token)
    except InvalidToken:
        return _fragment_of(token, None, templating.STOP_POLLING)
    final = doc["status"] in FINAL
    return _fragment_of(token, doc, templating.STOP_POLLING if final else 200)


@bp.get("/openapi.json", endpoint="openapi")
def openapi_document() -> Response:
    """The OpenAPI 3.1 description of this blueprint's routes, as this app serves them (made
    for each request, cheaply: a JSON answer like the others, never cached)."""
    return _json(openapi.describe(current_app))


# -- the widget's assets ----------------------------------------------------------------


#: The core module's one export statement, its last: the classic script returns those names.
_EXPORTS = re.compile(r"\nexport \{([^}]*)\};\s*\Z")


@functools.lru_cache(maxsize=8)
def _script_text(folder: str, name: str) -> str:
    """The widget's script ``name``, told the job statuses and default labels first (it
    keeps no copy of them): ``asyncstate.mjs``, the core as an ES module, or
    ``asyncstate.js``, the same core as a classic script (``window.asyncstate``) followed by
    the jQuery plugin, for pages without modules. Concatenation, no build step."""

    def read(file: str) -> str:
        with open(os.path.join(folder, file), encoding="utf-8") as script:
            return script.read()

    text = read("asyncstate.mjs")
    if name == "asyncstate.js":
        exports = _EXPORTS.search(text)
        if exports is None:
            raise RuntimeError("asyncstate.mjs must end with its one `export { ... };`")
        core = f"{text[: exports.start()]}\nreturn {{{exports[1]}}};"
        text = f"window.asyncstate = (function () {{\n'use strict';\n{core}\n}})();\n{read(name)}"
    return (
        f"window.asyncstateStatuses = {json.dumps(templating.statuses())};\n"
        f"window.asyncstateLabels = {json.dumps(templating.DEFAULT_LABELS)};\n"
        f"{text}"
    )


@bp.get("/asyncstate.js")
def script() -> Response:
    return _script_response("asyncstate.js")


@bp.get("/asyncstate.mjs")
def module() -> Response:
    return _script_response("asyncstate.mjs")


def _script_response(name: str) -> Response:
    text = _script_text(STATIC_FOLDER, name)
    response = Response(text, mimetype=_JS)
    response.cache_control.public = True
    response.cache_control.max_age = 300
    response.set_etag(hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())
    response.make_conditional(request)  # 304 for a page that has it already
    return response


@bp.get("/asyncstate.css")
def stylesheet() -> Response:
    return send_from_directory(STATIC_FOLDER, "asyncstate.css", max_age=300)


@bp.get("/jquery-auto.js")
def jquery_auto() -> Response:
    return send_from_directory(STATIC_FOLDER, "jquery-auto.js", max_age=300, mimetype=_JS)


@bp.get("/asyncstate-admin.js")
def admin_script() -> Response:
    return send_from_directory(STATIC_FOLDER, "asyncstate-admin.js", max_age=300, mimetype=_JS)


@bp.get("/jquery.js")
def jquery() -> Response:
    return send_from_directory(
        xstatic.pkg.jquery.BASE_DIR, "jquery.min.js", max_age=3600, mimetype=_JS
    )


# -- the operator's page ----------------------------------------------------------------
#
# ``<prefix>/admin`` shows every job of every instance and the instances' heartbeats,
# with cancel. It polls ``<prefix>/admin/jobs``: the newest jobs of the store (at most
# :data:`~flask_asyncstate.records.RECENT_JOBS`, read through a ranked list, never a scan
# of the store, so a poll costs the same however many jobs it holds), MAX_LISTED of them
# listed, newest first, with the count of each status over the jobs read (``counted`` of
# them; ``window`` is the most a poll reads), and the instances that beat lately.
# ``flask asyncstate list`` and ``instances`` still scan the whole store.


@bp.get("/admin")
def admin() -> Response:
    page = render_template(
        "asyncstate/admin.html",
        prefix=templating.prefix_url(),
        csrf_token=csrf_token(),
        statuses=templating.statuses(),
        labels=templating.translated(),
    )
    return Response(page, headers={"Cache-Control": "no-store"})


@bp.get("/admin/jobs")
def admin_jobs() -> Response:
    records = appstate.get().records
    wanted = request.args.get("status")
    instances = records.listed_instances()  # first: the live ones spare the jobs' EXISTS
    docs = records.recent_jobs()
    # Over the jobs read (the newest ones), before the filter and cap; a job of a dead
    # instance counts as lost, as it reads, never as running.
    counts = Counter(d["status"] for d in docs)
    if wanted:
        docs = [d for d in docs if d["status"] == wanted]
    listed = []
    for doc in docs[:MAX_LISTED]:
        row = {f: doc.get(f) for f in ADMIN_FIELDS}
        owner = doc.get("owner")
        row["owner"] = owner[:8] if isinstance(owner, str) else None
        row["instance"] = doc.get("instance")
        row["parent"] = doc.get("parent")  # the page lists a parent's children under it
        listed.append(row)
    return _json(
        {
            "now": time.time(),
            "counts": dict(counts),
            "counted": len(docs),
            "window": records.recent_kept if records.store.ranks else None,
            "jobs": listed,
            "instances": instances,
        }
    )


@bp.post("/admin/cancel/<job_id>")
@_same_origin_only
def admin_cancel(job_id: str) -> Response:
    found = appstate.get()
    doc = found.records.status(job_id) if _JOB_ID.fullmatch(job_id) else None
    if doc is None:
        return error(404, "no such job")
    if doc["status"] in FINAL:
        return _json(doc, 202)  # nothing left to cancel: the document says how it ended
    if not found.cancel_job(
        job_id, queued=doc["status"] == "queued", family=doc.get("children") is not None
    ):
        return error(404, "no such job")
    doc = found.records.status(job_id) or doc
    doc["cancel_requested"] = True
    return _json(doc, 202)


@bp.post("/admin/retry/<job_id>")
@_same_origin_only
def admin_retry(job_id: str) -> Response:
    """The operator runs any failed, cancelled or lost job again (its owner's quota applies)."""
    found = appstate.get()
    if not _JOB_ID.fullmatch(job_id) or found.records.status(job_id) is None:
        return error(404, "no such job")
    return _run_again(found, job_id)


# -- the blueprint's hooks and error handlers -------------------------------------------


@bp.before_request
def guarded() -> Response | None:
    """The app's guard before our routes (the admin guard before the operator's page),
    none before our static files."""
    if request.endpoint in _ASSETS:
        return None
    found = appstate.get()
    if request.endpoint in _ADMIN:
        guard = found.admin_guard
        as_page = request.endpoint == "asyncstate.admin"
    else:
        guard, as_page = found.blueprint_guard, False
    if guard is None:
        return None
    refused = verdict(guard, background=not as_page)
    if refused is None or as_page:  # the page passes a refusal on: a redirect to a login page
        return refused
    return _refused(refused)


@bp.after_request
def same_headers(response: Response) -> Response:
    """Flask's automatic OPTIONS answer as JSON (``{"allow": [...]}``), and :func:`harden`."""
    if request.method == "OPTIONS" and response.status_code == 200:
        allow = _allow(response.allow)
        response = _json({"allow": allow})
        response.headers["Allow"] = ", ".join(allow)
    return harden(response)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """An ``abort()`` in our views or hooks (a guard's, say), as JSON."""
    return error(exc.code or 500, exc.description or exc.name)


try:
    from flask_wtf.csrf import CSRFError
except ImportError:  # no Flask-WTF, no CSRFProtect: the same-origin proof stands alone
    pass
else:

    @bp.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> Response:
        """Flask-WTF's ``CSRFProtect`` refused one of our requests: a JSON 403 (its own
        answer is an HTML 400), whatever the app answers for its own views."""
        return error(403, f"CSRF check failed: {exc.description}")


# -- what is answered before the app's own hooks ----------------------------------------


class NotRouted(Exception):
    """A request under our prefix that no route of ours takes, raised by :func:`answer_first`."""

    def __init__(self, routing_error: HTTPException) -> None:
        super().__init__(routing_error)
        #: Werkzeug's routing error, or ``NotFound`` for the operator's page while it is off.
        self.routing_error = routing_error


class SessionStoreDown(Exception):
    """A request under our prefix whose session could not be opened (see
    :mod:`~flask_asyncstate.sessions`), raised by :func:`answer_first`."""


def answer_first(app: Flask, **_extra: Any) -> None:
    """Flask's ``request_started``, sent before the app's ``before_request`` hooks and inside
    its error handling: under our prefix, a failed session store or a request no route of
    ours takes raises here, so it is answered before the app's hooks touch the session or
    see a request that goes nowhere."""
    found = appstate.get(app)
    prefix = found.settings.url_prefix
    if request.path != prefix and not request.path.startswith(prefix + "/"):
        return
    if isinstance(session, UnavailableSession):
        raise SessionStoreDown
    if "csrf" in app.extensions and _malformed_referer():
        # Flask-WTF's CSRFProtect parses it over https and raises ValueError (a 500).
        raise Forbidden("the Referer header is not a URL")
    routing_error = request.routing_exception
    if found.admin_guard is None and _endpoint(routing_error) in _ADMIN:
        raise NotRouted(NotFound())  # no admin guard, no admin page, for every method
    if routing_error is not None:
        raise NotRouted(routing_error)


def _malformed_referer() -> bool:
    """An unsafe request whose ``Referer`` no URL parser takes (``http://[``)."""
    referer = request.headers.get("Referer")
    if not referer or request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return False
    try:
        urlsplit(referer).port  # noqa: B018 - a bad port raises only when read
    except ValueError:
        return True
    return False


def _connect_answer_first(state: BlueprintSetupState) -> None:
    request_started.connect(answer_first, state.app)


bp.record_once(_connect_answer_first)


def _endpoint(routing_error: HTTPException | None) -> str | None:
    """The endpoint of this request's path: routed, or refused only for its method
    (werkzeug's ``MethodNotAllowed`` names the methods, so match again with one)."""
    if routing_error is None:
        return request.endpoint
    if not isinstance(routing_error, MethodNotAllowed) or not routing_error.valid_methods:
        return None
    adapter = current_app.create_url_adapter(request)
    if adapter is None:
        return None
    try:
        return str(adapter.match(method=next(iter(routing_error.valid_methods)))[0])
    except HTTPException:
        return None


@bp.app_errorhandler(NotRouted)
def not_routed(exc: NotRouted) -> Response:
    """A wrong method: a 405 whose ``Allow`` is what werkzeug found the path takes; anything
    else (an unknown path, a redirect ours never need): a 404."""
    routing_error = exc.routing_error
    if isinstance(routing_error, MethodNotAllowed) and routing_error.valid_methods:
        allow = _allow(routing_error.valid_methods)
        taken = [m for m in allow if m != "HEAD"]
        return harden(error(405, f"use {' or '.join(taken)}", Allow=", ".join(allow)))
    return harden(error(404, "not found"))


@bp.app_errorhandler(SessionStoreDown)
def session_store_down(exc: SessionStoreDown) -> Response:
    return harden(store_error(StoreError("the session store is unavailable")))


# -- app-wide error answers -------------------------------------------------------------


@bp.app_errorhandler(InvalidToken)
def invalid_token(exc: InvalidToken) -> Response:
    """App-wide: ``asyncstate.status/cancel/handle`` with a bad token in a user's view -> 404."""
    return error(404, NOT_FOUND)


@bp.app_errorhandler(QuotaExceeded)
def quota_exceeded(exc: QuotaExceeded) -> Response:
    """App-wide: a view whose ``start()`` hit the owner's quota answers 429 (in words for
    the user: ``exc.user_message``)."""
    return error(429, exc.user_message, **{"Retry-After": "5"})


@bp.app_errorhandler(JobNotRetryable)
def not_retryable(exc: JobNotRetryable) -> Response:
    """A "Try again" that cannot be: unfinished, another unique one runs, or unknown here;
    the answer says why in the user's words (the log has the developer's)."""
    log.info("asyncstate: %s", exc)
    return error(409, exc.user_message)


@bp.app_errorhandler(QueueFull)
def queue_full(exc: QueueFull) -> Response:
    """App-wide: this instance has too many jobs waiting; the client should come back later."""
    log.warning("asyncstate admission refused: %s", exc)
    return error(503, exc.user_message, **{"Retry-After": "5"})


@bp.app_errorhandler(StoreError)
def store_error(exc: StoreError) -> Response:
    """App-wide: the shared store is unreachable or failing; try again later."""
    log.warning("asyncstate store error: %s", exc)
    has_state = appstate.EXTENSION_KEY in current_app.extensions
    retry_after = str(appstate.get().retry_after) if has_state else "2"
    return error(
        503, "the job store is unavailable, try again shortly", **{"Retry-After": retry_after}
    )
