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

**htmx.** :func:`fragment` renders a job's widget complete on the server, for htmx:
``<prefix>/fragment/<token>`` answers it, it polls that URL itself while the job is
unfinished (``hx-get``, ``hx-trigger="every 1s"``, ``hx-swap="outerHTML"``), and its
Cancel and "Try again" buttons post with ``hx-post``. ``asyncstate_widget(token,
client="htmx")`` renders its first state inline (:func:`htmx_widget`), and the
``/events`` stream carries it for htmx's SSE extension (``?format=html``).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
from .security import csrf_header, csrf_token, visible_job
from .status import FINAL, JobStatus

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
    "children": _("{done} of {total} done"),
    "childrenFailed": _("{count} failed"),
    "childrenCancelled": _("{count} cancelled"),
    "childrenLost": _("{count} lost"),
    "stages": _("Steps"),
    "stageDone": _("(done)"),
    "stageCurrent": _("(current step)"),
    "stageFailed": _("(failed)"),
    "stageCancelled": _("(cancelled)"),
    "stageToCome": _("(to come)"),
    "showDetails": _("Show details"),
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


#: The front ends ``asyncstate_widget(token, client=...)`` renders for.
CLIENTS = ("jquery", "htmx")


def widget(
    app_state: AppState,
    token: str,
    labels: dict[str, str] | None = None,
    client: str = "jquery",
    **options: Any,
) -> Markup:
    """``asyncstate_widget(token)``: the progress bar, cancel and "Try again" buttons, result
    slot and assets.

    ``labels`` replaces any of the widget's texts (keys: :data:`DEFAULT_LABELS`; the rest
    come through Flask-Babel when it is set up). Other options go to the macro in
    ``asyncstate/widget.html`` (``interval``, ``mode``, ``include_assets``, ``jquery_url``,
    ``notify``...). ``client="htmx"``: the widget for htmx instead (:func:`htmx_widget`).
    """
    if client not in CLIENTS:
        raise ValueError(f"asyncstate_widget(client={client!r}): use one of {CLIENTS}")
    if client == "htmx":
        if labels is not None:
            raise TypeError(
                "asyncstate_widget(client='htmx') takes no labels=: every update is rendered"
                " on the server, with the server's labels (translate them with Flask-Babel)"
            )
        return htmx_widget(app_state, token, **options)
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


# -- htmx: the widget rendered on the server ----------------------------------------------

#: The status that tells htmx to stop polling (its own convention): the fragment of a final
#: job, or of a token that shows none, answers it.
STOP_POLLING = 286
#: How often an htmx widget polls, in milliseconds: the default and the bounds of
#: ``interval=`` (``?interval=`` on its URL), outside which the nearest bound is used.
DEFAULT_INTERVAL, MIN_INTERVAL, MAX_INTERVAL = 1000, 250, 60_000
#: A final document's ``reason`` whose label replaces its status text (as in the script).
_REASON_LABELS = {"shutdown": "reasonShutdown", "timeout": "reasonTimeout"}
#: Between the elapsed time and the ETA (as in the script).
_SEPARATOR = " \u00b7 "
#: A ``reason`` fit for a class name (as in the script).
_CLASS_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: The fragment's live modes: polling itself, on an ``/events`` stream, or not at all.
LIVE = ("poll", "sse", None)


def interval_of(value: Any) -> int:
    """A poll interval in milliseconds from an option or a query value: the default for
    anything that is not a number, else clamped to [MIN_INTERVAL, MAX_INTERVAL]."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_INTERVAL
    return min(MAX_INTERVAL, max(MIN_INTERVAL, number))


def htmx_widget(
    app_state: AppState,
    token: str,
    interval: Any = DEFAULT_INTERVAL,
    mode: str = "poll",
    include_assets: bool | None = None,
    css_url: str | None = None,
    steps: Sequence[str] = (),
) -> Markup:
    """``asyncstate_widget(token, client="htmx")``: the job's fragment as it is now, which
    then follows the job by itself with htmx (the page loads htmx; no other script).

    ``interval``: milliseconds between polls. ``mode="sse"`` (or ``"auto"``): follow the
    job on its ``/events`` stream with htmx's SSE extension (``htmx-ext-sse``) where this
    process serves streams, else poll. ``include_assets``: the stylesheet, by default
    only with the first widget of a page; ``css_url``: another stylesheet. ``steps``: the
    names of the job's stages, so that the ones to come are listed too.
    """
    options: dict[str, Any] = {"mode": mode}
    _poll_without_streams(app_state, options)
    try:
        doc = visible_job(app_state, token)[1] if token else None
    except InvalidToken:
        doc = None
    # StoreError: the app's 503, as for any view whose store is away.
    live = "sse" if options["mode"] in ("auto", "sse") else "poll"
    if include_assets is None:
        include_assets = not g.get("_asyncstate_assets", False) and not g.get(
            "_asyncstate_stylesheet", False
        )
    g._asyncstate_stylesheet = True
    if live == "sse":
        html = streamed_fragment(app_state, token, doc, interval=interval, steps=steps)
    else:
        html = fragment(app_state, token, doc, interval=interval, steps=steps)
    if include_assets:
        sheet = get_template_attribute("asyncstate/assets.html", "asyncstate_stylesheet")
        html = Markup(sheet(prefix=prefix_url(), css_url=css_url)) + Markup("\n") + html
    return html


def fragment(
    app_state: AppState,
    token: str,
    doc: dict[str, Any] | None,
    interval: Any = DEFAULT_INTERVAL,
    live: str | None = "poll",
    details: bool = False,
    steps: Sequence[str] = (),
) -> Markup:
    """The htmx widget of a visible job's document (None: the job is not to be seen).

    ``live="poll"``: while the job is unfinished, the root polls its own URL; ``"sse"``:
    it is on an ``/events`` stream, which brings the changes (so the Cancel button swaps
    nothing); None: it stays as it is. "Try again" swaps in a polling fragment.
    ``details``: the trail is open; ``steps``: the names of the job's stages, so the ones
    to come are listed (both kept in the URLs the fragment asks, ``?details=1&step=...``).
    """
    if live not in LIVE:
        raise ValueError(f"live={live!r}: use one of {LIVE}")
    labels = translated()
    macro = get_template_attribute("asyncstate/fragment.html", "asyncstate_fragment")
    if doc is None:
        return Markup(macro({"not_found": True}, labels=labels))
    every = interval_of(interval)
    steps = step_names(steps)
    query: dict[str, Any] = {} if every == DEFAULT_INTERVAL else {"interval": every}
    if steps:
        query["step"] = steps
    view = fragment_view(doc, labels, render_result(app_state, doc), steps=steps)
    view["details"] = bool(details)
    polls = live == "poll" and not view["final"]
    opened = {**query, "details": 1} if details else query
    # Opening or closing the trail asks the server for the fragment so (the next polls keep
    # it); on a stream, for the stream's container, which then follows the job so.
    toggled = {**query} if details else {**query, "details": 1}
    streamed = live == "sse" and not view["final"]  # a final one has no stream left
    if streamed:
        toggled["live"] = "sse"
    return Markup(
        macro(
            view,
            poll_url=url_for("asyncstate.fragment", token=token, **opened) if polls else None,
            trigger=f"every {every // 1000}s" if every % 1000 == 0 else f"every {every}ms",
            cancel_url=url_for("asyncstate.cancel", token=token, format="html", **opened),
            cancel_swap="none" if live == "sse" else "outerHTML",
            retry_url=url_for("asyncstate.retry", token=token, format="html", **query),
            details_url=url_for("asyncstate.fragment", token=token, **toggled),
            details_target=".asyncstate-stream" if streamed else ".asyncstate",
            headers=_proof_headers(),
            labels=labels,
        )
    )


def streamed_fragment(
    app_state: AppState,
    token: str,
    doc: dict[str, Any] | None,
    interval: Any = DEFAULT_INTERVAL,
    details: bool = False,
    steps: Sequence[str] = (),
) -> Markup:
    """The htmx widget on the job's ``/events`` stream (htmx's SSE extension): its
    container, which the stream's events fill; a final job's fragment alone."""
    html = fragment(app_state, token, doc, interval, "sse", details=details, steps=steps)
    if doc is None or doc["status"] in FINAL:
        return html
    query: dict[str, Any] = {"format": "html", "step": step_names(steps)}
    if details:
        query["details"] = 1
    events = url_for("asyncstate.events", token=token, **query)
    stream = get_template_attribute("asyncstate/fragment.html", "asyncstate_fragment_stream")
    return Markup(stream(events, html))


def step_names(names: Any) -> list[str]:
    """The names of ``steps=`` (or ``?step=``) as the widget lists them: strings, at most as
    many and as long as a job's stages may be, and together short enough to ride in every
    URL the htmx widget asks (``?step=...``: a server refuses a request line over 4 KiB)."""
    from .jobs import MAX_STAGE_NAME, MAX_STAGES  # jobs imports the app state, which imports us

    if names is None:
        return []
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, Iterable):
        raise TypeError(f"steps= takes a list of stage names, got {type(names).__name__}")
    kept: list[str] = []
    room = _STEPS_IN_URL
    for name in itertools.islice(names, MAX_STAGES):
        text = str(name)[:MAX_STAGE_NAME]
        if not text:
            continue
        room -= len(quote(text)) + len("&step=")
        if room < 0:
            break
        kept.append(text)
    return kept


def fragment_view(
    doc: dict[str, Any],
    labels: Mapping[str, str],
    result_html: Markup | None = None,
    now: float | None = None,
    steps: Sequence[str] = (),
) -> dict[str, Any]:
    """What the htmx widget shows of ``doc``: the script's rendering, done on the server
    (plain text everywhere but ``result_html``)."""
    from .lifecycle import RETRYABLE  # "Try again"'s statuses (lifecycle imports this module)

    status = str(doc.get("status"))
    final = status in FINAL
    message = "" if doc.get("message") is None else str(doc["message"])
    shown = _shown_percent(doc, final)
    status_text = _status_text(doc, labels, final)
    classes = ["asyncstate"]
    if status in JobStatus._value2member_map_:
        classes.append(f"asyncstate--{status}")
    if shown is None and not final:
        classes.append("asyncstate--indeterminate")
    cancelling = not final and bool(doc.get("cancel_requested"))
    if cancelling:
        classes.append("asyncstate--cancelling")
    reason = doc.get("reason")
    if isinstance(reason, str) and _CLASS_WORD.fullmatch(reason):
        classes.append(f"asyncstate--reason-{reason}")
    if final:
        value_text = status_text
    elif shown is not None:
        value_text = f"{shown}%" + (f" ({message})" if message else "")
    else:
        value_text = message or status_text
    if shown is not None:
        fill: int | None = shown
    elif final:  # a job that ended having done nothing shows an empty bar, not a full grey one
        fill = 100 if (_finite(doc.get("current")) or 0) > 0 else 0
    else:
        fill = None  # the sliding segment (CSS)
    return {
        "status": status,
        "final": final,
        "classes": classes,
        "shown": shown,
        "fill": fill,
        "value_text": value_text,
        "bar_label": str(doc.get("label") or doc.get("name") or labels["progress"]),
        "message": message,
        "eta_text": _eta_text(doc, labels, final, time.time() if now is None else now),
        "status_text": status_text,
        "cancel": None if final else ("cancelling" if cancelling else "offer"),
        "retry": status in RETRYABLE,
        "result_html": result_html,
        "not_found": False,
        "id": str(doc.get("id") or ""),
        "children_text": _children_text(doc.get("children"), labels),
        "stages": _stages_of(doc, labels, steps),
        "log": _trail_of(doc),
        "details": False,
    }


#: Most characters the ``steps=`` names take in a URL, percent-encoded (see step_names).
_STEPS_IN_URL = 1024

#: A parent's non-zero counts shown after its totals, and their labels (as in the script).
_CHILD_LABELS = (
    ("failed", "childrenFailed"),
    ("cancelled", "childrenCancelled"),
    ("lost", "childrenLost"),
)
#: A stage's status -> its state in the list (anything else: to come), and their labels.
_STAGE_STATES = {"done": "done", "running": "current", "failed": "failed", "cancelled": "cancelled"}
_STAGE_LABELS = {
    "done": "stageDone",
    "current": "stageCurrent",
    "failed": "stageFailed",
    "cancelled": "stageCancelled",
    "todo": "stageToCome",
}


def _fill(template: str, values: Mapping[str, Any]) -> str:
    """``{name}`` fields of a label filled in (unknown ones left as they are)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m[1], m[0])), template)


def _children_text(counts: Any, labels: Mapping[str, str]) -> str:
    """ "31 of 40 done, 1 failed": a parent's totals, '' for a job with no children."""
    if not isinstance(counts, dict) or not (_finite(counts.get("total")) or 0) > 0:
        return ""
    n = {k: int(_finite(v) or 0) for k, v in counts.items()}
    done = max(0, n["total"] - n.get("queued", 0) - n.get("running", 0))
    text = _fill(labels["children"], {**n, "done": done})
    for key, label in _CHILD_LABELS:
        if n.get(key, 0) > 0:
            text += ", " + _fill(labels[label], {"count": n[key]})
    return text


def _stages_of(
    doc: dict[str, Any], labels: Mapping[str, str], steps: Sequence[str]
) -> list[dict[str, str]]:
    """The steps to list: the document's stages, then the named ``steps`` not begun."""
    out = [
        {"name": str(s.get("name") or ""), "state": _STAGE_STATES.get(str(s.get("status")), "todo")}
        for s in doc.get("stages") or ()
        if isinstance(s, dict)
    ]
    begun = {s["name"] for s in out}
    out += [{"name": name, "state": "todo"} for name in steps if name not in begun]
    for step in out:
        step["word"] = labels[_STAGE_LABELS[step["state"]]]
    return out


def _trail_of(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The log's lines as shown: the time since the job started (m:ss), its ISO form, text."""
    started = _finite(doc.get("started_at"))
    out = []
    for line in doc.get("log") or ():
        if not isinstance(line, dict):
            continue
        at = _finite(line.get("at"))
        since = None if at is None else at - (started if started is not None else at)
        out.append(
            {
                "time": "" if since is None else _clock(max(0.0, since)),
                "iso": "" if at is None else datetime.fromtimestamp(at, UTC).isoformat(),
                "text": "" if line.get("text") is None else str(line["text"]),
            }
        )
    return out


def _finite(value: Any) -> float | None:
    """``value`` when it is a finite number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _shown_percent(doc: dict[str, Any], final: bool) -> int | None:
    """The whole percentage the bar shows; never 100 before the job is done."""
    if doc.get("status") == JobStatus.SUCCEEDED:
        return 100
    percent = _finite(doc.get("percent"))
    if percent is None:
        return None
    shown = math.floor(min(100.0, max(0.0, percent)))
    return shown if final or shown <= 99 else 99


def _status_text(doc: dict[str, Any], labels: Mapping[str, str], final: bool) -> str:
    status = str(doc.get("status"))
    reason = doc.get("reason")
    if final and reason in _REASON_LABELS:
        return labels[_REASON_LABELS[reason]]
    if status == JobStatus.FAILED:
        error = doc.get("error")
        kind = message = ""
        if isinstance(error, dict):
            kind, message = str(error.get("type") or ""), str(error.get("message") or "")
        detail = f"{kind}: {message}" if kind and message else kind or message
        return f"{labels['failed']}: {detail}" if detail else labels["failed"]
    if not final and doc.get("cancel_requested"):
        return labels["cancelling"]
    return labels.get(status, status)


def _eta_text(doc: dict[str, Any], labels: Mapping[str, str], final: bool, now: float) -> str:
    """ "0:42 elapsed · about 30 s left", as the script writes it, from the server's clock."""
    started = _finite(doc.get("started_at"))
    if doc.get("status") == JobStatus.QUEUED or started is None:
        return ""
    updated = _finite(doc.get("updated_at")) or started
    elapsed = max(0.0, (updated if final else now) - started)
    text = labels["elapsed"].replace("{time}", _clock(elapsed))
    eta = _finite(doc.get("eta"))
    if not final and doc.get("status") == JobStatus.RUNNING and eta is not None and eta >= 0:
        left = max(0.0, eta - max(0.0, now - updated))
        if left < 60:
            shown = labels["etaSeconds"].replace("{seconds}", str(max(1, math.ceil(left))))
        else:
            shown = labels["etaMinutes"].replace("{minutes}", str(max(1, round(left / 60))))
        text += _SEPARATOR + shown
    return text


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _proof_headers() -> dict[str, str]:
    """What the htmx buttons send with their posts (``hx-headers``): the same-origin
    header, and Flask-WTF's CSRF token under the first of its ``WTF_CSRF_HEADERS``."""
    headers = {"X-Requested-With": "XMLHttpRequest"}
    token, header = csrf_token(), csrf_header(current_app)
    if token and header:
        headers[header] = token
    return headers


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
