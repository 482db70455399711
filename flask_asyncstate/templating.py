"""What flask-asyncstate puts on a page: the Jinja globals, the widget's labels, the
result slot.

**Jinja globals.** ``asyncstate_widget(token)``, ``asyncstate_jobs()`` and
``asyncstate_assets()`` render the macros in ``templates/asyncstate/``. Assets
(stylesheet, jQuery when needed, the plugin) go on a page once: with the first widget of
a request, or earlier with ``asyncstate_assets()`` in the layout's ``<head>``; widgets
rendered after that include none unless asked to (``include_assets=True``).

**Labels.** Every string the widget shows a user is in :data:`DEFAULT_LABELS`, in
English. The script route tells the widget these defaults (``window.asyncstateLabels``,
so the JavaScript keeps no copy), and the server-rendered widgets carry their own set in
``data-asyncstate-labels``: the defaults passed through Flask-Babel's ``gettext`` when
Flask-Babel is set up on the app, then the ``labels={...}`` a template passed
(:func:`translated`). ``{name}`` fields are filled in by the widget and must survive
translation. The refusals of a start (:exc:`~flask_asyncstate.QuotaExceeded`,
:exc:`~flask_asyncstate.QueueFull`) take their ``user_message`` from here too.

**The result slot.** What a succeeded job shows under its bar (a download link, a
summary). A job declares it with ``@asyncstate.job(render_result=...)``: a template
name, rendered with ``result`` (the job's return value) and ``job`` (its document), or
a callable taking the result. A callable's ``Markup`` is used as is and a plain ``str``
is escaped, so a value from the job can never inject markup by accident. The widget
fetches it from ``<prefix>/result/<token>`` when the job succeeds, and
``asyncstate_widget`` renders it straight away for a job that had already succeeded (a
reload).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import (
    current_app,
    g,
    get_template_attribute,
    has_app_context,
    has_request_context,
    render_template,
    url_for,
)
from markupsafe import Markup, escape

from .errors import InvalidToken, StoreError
from .security import csrf_token, visible_job
from .status import JobStatus

if TYPE_CHECKING:
    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")


# -- labels -----------------------------------------------------------------------------


def _(text: str) -> str:
    """Marks a default for message extraction (``pybabel extract -k _``); translated later."""
    return text


#: Label key -> English text. Keys are the widget's ``texts``/``labels`` option names.
DEFAULT_LABELS: dict[str, str] = {
    "progress": _("Progress"),
    "cancel": _("Cancel"),
    "queued": _("Queued"),
    "running": _("Running"),
    "succeeded": _("Done"),
    "failed": _("Failed"),
    "cancelled": _("Cancelled"),
    "lost": _("Lost: the server running this job stopped"),
    "cancelling": _("Cancelling\u2026"),
    "cancelFailed": _("Could not cancel"),
    "cancelRetrying": _("Could not cancel right now, retrying\u2026"),
    "notFound": _("Not found"),
    "forbidden": _("Not allowed to see this job"),
    "error": _("Error"),
    "retrying": _("Connection problem, retrying in {seconds} s\u2026"),
    "reconnecting": _("Reconnecting\u2026"),
    "noToken": _("No job token"),
    "elapsed": _("{time} elapsed"),
    "etaSeconds": _("about {seconds} s left"),
    "etaMinutes": _("about {minutes} min left"),
    "noJobs": _("No jobs yet"),
    "reasonShutdown": _("Stopped by a server restart"),
    "reasonTimeout": _("Stopped: it took too long"),
    "retryScheduled": _("Failed, will try again"),
    "retryingIn": _("Retrying in {seconds} s (attempt {attempt} of {max})"),
    "resumed": _("Resumed after a server restart"),
    "tryAgain": _("Try again"),
    "tryAgainFailed": _("Could not try again"),
    "quotaExceeded": _(
        "You already have {limit} jobs in progress. Wait for one to finish, or cancel one,"
        " then try again."
    ),
    "busy": _("The server is busy, try again shortly"),
    "duplicate": _("The same job is already in progress; wait for it to finish"),
    "tryAgainUnfinished": _("This job is still in progress"),
    "tryAgainRefused": _("This job cannot be run again"),
}


def translated(overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The labels for a page rendered now: defaults (through Flask-Babel when it is set
    up), then ``overrides``. An unknown key in ``overrides`` raises ``KeyError``, so a
    typo does not pass silently."""
    gettext = _babel_gettext()
    out = {key: gettext(text) for key, text in DEFAULT_LABELS.items()}
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_LABELS:
            known = ", ".join(sorted(DEFAULT_LABELS))
            raise KeyError(f"unknown widget label {key!r}; the labels are: {known}")
        out[key] = str(value)
    return out


def _babel_gettext() -> Any:
    if not has_app_context() or "babel" not in current_app.extensions:
        return str
    try:
        from flask_babel import gettext
    except ImportError:  # pragma: no cover - registered under that name by Flask-Babel only
        return str
    return gettext


# -- the Jinja globals (init_app binds widget and jobs_panel to its app's AppState) -----


def widget(
    app_state: AppState, token: str, labels: dict[str, str] | None = None, **options: Any
) -> Markup:
    """``asyncstate_widget(token)``: the progress bar, cancel and "Try again" buttons, result
    slot and assets.

    ``labels`` replaces any of the widget's texts (keys: :data:`DEFAULT_LABELS`; the rest
    come through Flask-Babel when it is set up). Other options go to the macro in
    ``asyncstate/widget.html`` (``interval``, ``mode``, ``include_assets``, ``jquery_url``,
    ``notify``...).
    """
    result_html, has_result = _result_of(app_state, token)
    _poll_without_streams(app_state, options)
    macro = get_template_attribute("asyncstate/widget.html", "asyncstate_widget")
    return Markup(
        macro(
            token,
            prefix=prefix_url(),
            statuses=statuses(),
            labels=translated(labels),
            result_html=result_html,
            has_result=has_result,
            csrf_token=csrf_token(),
            **_assets_once(options),
        )
    )


def jobs_panel(app_state: AppState, labels: dict[str, str] | None = None, **options: Any) -> Markup:
    """``asyncstate_jobs()``: the current owner's jobs, newest first, each with a live bar,
    a cancel button, "Try again" once it failed, and its result (options as for
    ``asyncstate_widget``)."""
    jobs = app_state.extension.jobs()
    # Every job that shows a result gets a slot: filled if it succeeded, else fetched later.
    shown = {
        job["id"]: render_result(app_state, job) or Markup("")
        for job in jobs
        if result_renderer(app_state, job.get("name")) is not None
    }
    _poll_without_streams(app_state, options)
    macro = get_template_attribute("asyncstate/jobs.html", "asyncstate_jobs")
    return Markup(
        macro(
            jobs,
            prefix=prefix_url(),
            statuses=statuses(),
            labels=translated(labels),
            results=shown,
            csrf_token=csrf_token(),
            **_assets_once(options),
        )
    )


def _poll_without_streams(app_state: AppState, options: dict[str, Any]) -> None:
    """Where this process serves no streams (the default on a threaded server), a widget
    asked for ``mode="auto"`` or ``"sse"`` polls from the start: no refused stream first."""
    if str(options.get("mode", "")).lower() in ("auto", "sse") and not app_state.streams.on():
        options["mode"] = "poll"


def assets(**options: Any) -> Markup:
    """``asyncstate_assets()``, for the layout's ``<head>``: the stylesheet, jQuery only when
    the page has none (``jquery="auto"``; ``True``: always, ``False``: never) and the plugin.
    Widgets rendered later in the request include no assets of their own."""
    if has_request_context():
        g._asyncstate_assets = True
    macro = get_template_attribute("asyncstate/assets.html", "asyncstate_assets")
    return Markup(macro(prefix=prefix_url(), statuses=statuses(), **options))


def statuses() -> dict[str, list[str]]:
    """The job statuses as the widget needs them (from :class:`JobStatus`, never a copy)."""
    return {
        "all": [s.value for s in JobStatus],
        "final": [s.value for s in JobStatus if s.is_final],
    }


def prefix_url() -> str:
    """Where the blueprint answers for this request (script root and URL prefix): the root of
    the ``/jobs`` route."""
    return url_for("asyncstate.jobs").removesuffix("/jobs")


def _assets_once(options: dict[str, Any]) -> dict[str, Any]:
    """``include_assets`` for this widget: as asked, else only if the page has none yet."""
    if "include_assets" not in options and has_request_context():
        options["include_assets"] = not g.get("_asyncstate_assets", False)
        g._asyncstate_assets = True
    return options


def _result_of(app_state: AppState, token: str | None) -> tuple[Markup | None, bool]:
    """The result slot of a token's job: (its HTML if the job succeeded already, whether
    the job shows a result at all). Reads the job only when some job shows results."""
    if not token or not has_request_context() or not app_state.extension.has_results():
        return None, False
    try:
        _job_id, doc = visible_job(app_state, token)
    except (InvalidToken, StoreError):  # the widget itself says "Not found" or retries
        return None, False
    if result_renderer(app_state, doc.get("name")) is None:
        return None, False
    return render_result(app_state, doc), True


# -- the result slot ----------------------------------------------------------------------


def result_renderer(app_state: AppState, name: Any) -> Any:
    """The ``render_result`` of the job named ``name``, or None."""
    job = app_state.extension.registered_job(name) if isinstance(name, str) else None
    return getattr(job, "render_result", None)


def render_result(app_state: AppState, doc: dict[str, Any]) -> Markup | None:
    """The slot's HTML for a visible job's document; None unless it succeeded and has one."""
    renderer = result_renderer(app_state, doc.get("name"))
    if renderer is None or doc.get("status") != JobStatus.SUCCEEDED:
        return None
    if isinstance(renderer, str):
        if not autoescaped(renderer):
            log.error(
                "render_result=%r is not rendered with autoescape on by this app's Jinja"
                " environment (jinja_options / autoescape): the result slot stays empty",
                renderer,
            )
            return None
        return Markup(render_template(renderer, result=doc.get("result"), job=doc))
    return escape(renderer(doc.get("result")))


def autoescaped(template: str) -> bool:
    """Whether the app's Jinja environment escapes values in ``template`` (its real
    setting, which an app may change with ``jinja_options``, not a guess from the name)."""
    setting = current_app.jinja_env.autoescape
    return bool(setting(template) if callable(setting) else setting)
