"""The result slot: what a succeeded job shows under its bar (a download link, a summary).

A job declares it with ``@asyncstate.job(render_result=...)``: a template name,
rendered with ``result`` (the job's return value) and ``job`` (its document), or a
callable taking the result. A callable's ``Markup`` is used as is and a plain
``str`` is escaped, so a value from the job can never inject markup by accident.
The widget fetches it from ``<prefix>/result/<token>`` when the job succeeds, and
``asyncstate_widget`` renders it straight away for a job that had already
succeeded (a reload).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, render_template
from markupsafe import Markup, escape

from . import appstate
from .status import JobStatus

log = logging.getLogger("flask_asyncstate")


def renderer(name: Any) -> Any:
    """The ``render_result`` of the job named ``name``, or None."""
    job = appstate.get().extension.registered_job(name) if isinstance(name, str) else None
    return getattr(job, "render_result", None)


def render(doc: dict[str, Any]) -> Markup | None:
    """The slot's HTML for a visible job's document; None unless it succeeded and has one."""
    render_result = renderer(doc.get("name"))
    if render_result is None or doc.get("status") != JobStatus.SUCCEEDED:
        return None
    if isinstance(render_result, str):
        if not autoescaped(render_result):
            log.error(
                "render_result=%r is not rendered with autoescape on by this app's Jinja"
                " environment (jinja_options / autoescape): the result slot stays empty",
                render_result,
            )
            return None
        return Markup(render_template(render_result, result=doc.get("result"), job=doc))
    return escape(render_result(doc.get("result")))


def autoescaped(template: str) -> bool:
    """Whether the app's Jinja environment escapes values in ``template`` (its real
    setting, which an app may change with ``jinja_options``, not a guess from the name)."""
    setting = current_app.jinja_env.autoescape
    return bool(setting(template) if callable(setting) else setting)
