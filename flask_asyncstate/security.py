"""Who may do what on our routes: the app's guards, the owner check of a token, and the
proofs a state-changing request carries.

**Guards.** The check given to ``@asyncstate.guard`` runs before every route of the
blueprint but its static files, the one given to ``@asyncstate.admin_guard`` before the
operator's page. A guard is either a view decorator such as Flask-Login's
``login_required`` (it takes one argument) or a check of no arguments. A check returns
``True`` or ``None`` to allow, ``False`` to refuse with a 403, or anything a view may
return (a response, a string and a status...) to refuse with that; an ``abort()`` inside
it refuses too. Nothing a guard returns gives a 500: a value Flask cannot make a
response of refuses with a 403 and an error in the log. Our JSON routes answer a
refusal as JSON (:func:`json_refusal`).

**Owners.** A job is visible only when its token verifies *and* its owner is the
requesting user or session (:func:`visible_job`); both failures are the same
:exc:`~flask_asyncstate.errors.InvalidToken`, so tokens cannot be used to probe for jobs.

**Proofs.** Cancel, "Try again", dismiss and the operator's cancel and run-again need a
same-origin request (:func:`same_origin`: a header only same-origin JavaScript can add,
or our own ``Origin``). When Flask-WTF's ``CSRFProtect`` is set up on the app, it checks their CSRF
token too, as it checks the app's own views, following its ``WTF_CSRF_*`` settings and
its exemptions; the views module answers its ``CSRFError`` as a JSON 403 under our
prefix. :func:`csrf_token` gives the pages the token to send.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Flask, Response, current_app, has_request_context, request, session

from .errors import InvalidToken

if TYPE_CHECKING:
    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")

#: The one answer for a token that does not show a job (whatever the reason).
NOT_FOUND = "no such job in this session"

_ALLOWED = object()
_MISSING = object()
#: Session keys Flask-Login's refusal writes (its flashed "Please log in" message, and the
#: ``next`` page under ``USE_SESSION_FOR_NEXT``): a background request must not leave them.
_REFUSAL_KEYS = ("_flashes", "next", "_id")


# -- guards -----------------------------------------------------------------------------


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


def json_refusal(refused: Response) -> tuple[int, dict[str, str]]:
    """A guard's refusal as the status and body of our JSON error: a redirect (to a login
    page) becomes a 401 whose ``login_url`` sends the user back to the page they were on,
    not to our JSON route."""
    if 300 <= refused.status_code < 400:
        body = {"error": "login required"}
        location = refused.headers.get("Location")
        if location:
            body["login_url"] = _back_to_page(location)
        return 401, body
    said = refused.get_json(silent=True) if refused.is_json else None
    message = str(said.get("error", "not allowed")) if isinstance(said, dict) else "not allowed"
    # A refusal is never a success: a body returned with no status (Flask's 200) is a 403.
    return (refused.status_code if refused.status_code >= 400 else 403), {"error": message}


def _allow() -> object:
    return _ALLOWED


def _is_decorator(guard: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(guard).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: take it for a check
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and p.default is p.empty for p in parameters)


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


# -- owners -----------------------------------------------------------------------------


def visible_job(app_state: AppState, token: str) -> tuple[str, dict[str, Any]]:
    """The job id and public document of ``token`` if it verifies and this request's owner
    (user or session) owns the job.

    Anything else raises :class:`InvalidToken` (the same 404 for every reason). The owner
    is compared before anything else is done with the job: another owner's job costs one
    read, as a job that does not exist does, and its expiry is not restarted.
    """
    job_id = app_state.signer.unsign(token)
    owner = app_state.request_owner(create=False)
    records = app_state.records
    doc = records.status(job_id, internal=True, owner=owner) if owner is not None else None
    if doc is None:
        raise InvalidToken(NOT_FOUND)
    for internal in ("owner", "instance", "unique"):
        doc.pop(internal)
    return job_id, doc


# -- proofs -----------------------------------------------------------------------------


def same_origin() -> bool:
    """The request proves it comes from our own pages: it carries ``X-Requested-With`` (a
    header a cross-site form cannot set), or an ``Origin`` of our scheme and host."""
    if request.headers.get("X-Requested-With"):
        return True
    origin = request.headers.get("Origin")
    if not origin:
        return False
    try:  # a malformed URL (``http://[``) is not ours
        theirs, mine = urlsplit(origin), urlsplit(request.host_url)
    except ValueError:
        return False
    return (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc)


def csrf_token() -> str | None:
    """Flask-WTF's CSRF token for the page being rendered when ``CSRFProtect`` is on the
    app (the widget and the operator's page send it with their cancels), else None."""
    if not has_request_context() or "csrf" not in current_app.extensions:
        return None
    from flask_wtf.csrf import generate_csrf  # installed: CSRFProtect is set up

    return str(generate_csrf())


def csrf_header(app: Flask) -> str | None:
    """The header Flask-WTF reads the CSRF token from (the first of its
    ``WTF_CSRF_HEADERS``), while its ``CSRFProtect`` is on the app; else None."""
    if "csrf" not in app.extensions:
        return None
    names = app.config.get("WTF_CSRF_HEADERS") or ["X-CSRFToken"]
    return str(names[0])
