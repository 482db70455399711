"""The Jinja globals: ``asyncstate_widget(token)``, ``asyncstate_jobs()`` and
``asyncstate_assets()``.

Assets (stylesheet, jQuery when needed, the plugin) go on a page once: with the first
widget of a request, or earlier with ``asyncstate_assets()`` in the layout's
``<head>``; widgets rendered after that include none unless asked to
(``include_assets=True``).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, get_template_attribute, has_request_context, url_for
from markupsafe import Markup

from . import appstate, results, views
from .errors import InvalidToken, StoreError
from .labels import translated


def widget(token: str, labels: dict[str, str] | None = None, **options: Any) -> Markup:
    """``asyncstate_widget(token)``: the progress bar, cancel button, result slot and assets.

    ``labels`` replaces any of the widget's texts (keys: :data:`labels.DEFAULT_LABELS
    <flask_asyncstate.labels.DEFAULT_LABELS>`; the rest come through Flask-Babel when it is
    set up). Other options go to the macro in ``asyncstate/widget.html`` (``interval``,
    ``mode``, ``include_assets``, ``jquery_url``, ``notify``...).
    """
    result_html, has_result = _result_of(token)
    macro = get_template_attribute("asyncstate/widget.html", "asyncstate_widget")
    return Markup(
        macro(
            token,
            prefix=_prefix(),
            statuses=views.statuses(),
            labels=translated(labels),
            result_html=result_html,
            has_result=has_result,
            csrf_token=_csrf_token(),
            **_assets_once(options),
        )
    )


def jobs_panel(labels: dict[str, str] | None = None, **options: Any) -> Markup:
    """``asyncstate_jobs()``: the current owner's jobs, newest first, each with a live bar,
    a cancel button and its result (options as for ``asyncstate_widget``)."""
    jobs = appstate.get().extension.jobs()
    # Every job that shows a result gets a slot: filled if it succeeded, else fetched later.
    shown = {
        job["id"]: results.render(job) or Markup("")
        for job in jobs
        if results.renderer(job.get("name")) is not None
    }
    macro = get_template_attribute("asyncstate/jobs.html", "asyncstate_jobs")
    return Markup(
        macro(
            jobs,
            prefix=_prefix(),
            statuses=views.statuses(),
            labels=translated(labels),
            results=shown,
            csrf_token=_csrf_token(),
            **_assets_once(options),
        )
    )


def assets(**options: Any) -> Markup:
    """``asyncstate_assets()``, for the layout's ``<head>``: the stylesheet, jQuery only when
    the page has none (``jquery="auto"``; ``True``: always, ``False``: never) and the plugin.
    Widgets rendered later in the request include no assets of their own."""
    if has_request_context():
        g._asyncstate_assets = True
    macro = get_template_attribute("asyncstate/assets.html", "asyncstate_assets")
    return Markup(macro(prefix=_prefix(), statuses=views.statuses(), **options))


def _assets_once(options: dict[str, Any]) -> dict[str, Any]:
    """``include_assets`` for this widget: as asked, else only if the page has none yet."""
    if "include_assets" not in options and has_request_context():
        options["include_assets"] = not g.get("_asyncstate_assets", False)
        g._asyncstate_assets = True
    return options


def _result_of(token: str | None) -> tuple[Markup | None, bool]:
    """The result slot of a token's job: (its HTML if the job succeeded already, whether
    the job shows a result at all). Reads the job only when some job shows results."""
    extension = appstate.get().extension
    if not token or not has_request_context() or not extension.has_results():
        return None, False
    try:
        _job_id, doc = views.visible_job(token)
    except (InvalidToken, StoreError):  # the widget itself says "Not found" or retries
        return None, False
    if results.renderer(doc.get("name")) is None:
        return None, False
    return results.render(doc), True


def _csrf_token() -> str | None:
    """Flask-WTF's token for this page when ``CSRFProtect`` is on the app, so the widget's
    cancel passes without a ``<meta name="csrf-token">`` in the layout."""
    if not has_request_context() or "csrf" not in current_app.extensions:
        return None
    from flask_wtf.csrf import generate_csrf

    return str(generate_csrf())


def _prefix() -> str:
    return url_for("asyncstate.not_found", rest="").rstrip("/")
