"""Every string the widget shows a user, in one place, and their translation.

The defaults are English. The script route tells the widget these defaults
(``window.asyncstateLabels``, so the JavaScript keeps no copy), and the
server-rendered widgets carry their own set in ``data-asyncstate-labels``:
the defaults passed through Flask-Babel's ``gettext`` when Flask-Babel is set
up on the app, then the ``labels={...}`` a template passed. ``{name}`` fields
are filled in by the widget and must survive translation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app, has_app_context


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
    "quotaExceeded": _(
        "You already have {limit} jobs in progress. Wait for one to finish, or cancel one,"
        " then try again."
    ),
    "busy": _("The server is busy, try again shortly"),
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
