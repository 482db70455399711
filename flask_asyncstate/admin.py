"""The operator's page, ``<prefix>/admin``: every job of every instance and the instances'
heartbeats, with cancel; on only once ``AsyncState.admin_guard`` was called.

The page polls ``<prefix>/admin/jobs``: the newest jobs of the store (at most
:data:`~flask_asyncstate.records.RECENT_JOBS`, read through a ranked list, never a scan of
the store, so a poll costs the same however many jobs it holds), :data:`MAX_LISTED` of them
listed, newest first, with the count of each status over the jobs read (``counted`` of
them; ``window`` is the most a poll reads), and the instances that beat lately.
``flask asyncstate list`` and ``instances`` still scan the whole store.
Cancel is ``POST <prefix>/admin/cancel/<job_id>``, with the same-origin and CSRF
proofs of the user's cancel route.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from . import appstate, csrf, guards
from .labels import translated
from .status import FINAL

#: Every method is routed to the views, so that a wrong one gets a JSON 405 (as elsewhere).
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: What each admin route accepts, for the ``Allow`` header of a method no route knows.
ALLOWED = {
    "asyncstate.admin": ("GET",),
    "asyncstate.admin_jobs": ("GET",),
    "asyncstate.admin_cancel": ("POST",),
}
#: Most jobs the page lists (the newest); the CLI lists them all.
MAX_LISTED = 500
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = (
    "id",
    "name",
    "label",
    "status",
    "current",
    "total",
    "percent",
    "message",
    "error",
    "reason",
    "cancel_requested",
    "created_at",
    "updated_at",
    "started_at",
    "rate",
    "eta",
)


def register(
    bp: Blueprint,
    allowed: Callable[..., Response | None],
    json: Callable[..., Response],
    error: Callable[..., Response],
    statuses: Callable[[], dict[str, list[str]]],
) -> None:
    """Add the admin routes to our blueprint (``allowed``, ``json`` and ``error`` are the
    views module's method check and answer makers)."""

    def _off() -> Response | None:
        """No admin guard, no admin page: every method answers 404, OPTIONS included."""
        return (
            error(404, "not found") if appstate.get().extension.admin_page_guard is None else None
        )

    def closed(as_page: bool) -> Response | None:
        guard = appstate.get().extension.admin_page_guard
        if guard is None:
            return error(404, "not found")
        refused = guards.verdict(guard, background=not as_page)
        if refused is None:
            return None
        return refused if as_page else guards.as_json(refused, error)

    @bp.route("/admin", methods=ANY_METHOD, provide_automatic_options=False)
    def admin() -> Any:
        refused = _off() or allowed("GET") or closed(as_page=True)
        if refused is not None:
            return refused
        token = None
        if "csrf" in current_app.extensions:
            from flask_wtf.csrf import generate_csrf

            token = generate_csrf()
        prefix = request.script_root + (bp.url_prefix or "")
        page = render_template(
            "asyncstate/admin.html",
            prefix=prefix,
            csrf_token=token,
            statuses=statuses(),
            labels=translated(),
        )
        return Response(page, headers={"Cache-Control": "no-store"})

    @bp.route("/admin/jobs", methods=ANY_METHOD, provide_automatic_options=False)
    def admin_jobs() -> Response:
        refused = _off() or allowed("GET") or closed(as_page=False)
        if refused is not None:
            return refused
        found = appstate.get()
        wanted = request.args.get("status")
        records = found.records
        instances = records.listed_instances()  # first: the live ones spare the jobs' EXISTS
        docs = records.recent_jobs()
        # Over the jobs read (the newest ones), before the filter and cap; a job of a dead
        # instance counts as lost, as it reads, never as running.
        counts = Counter(d["status"] for d in docs)
        if wanted:
            docs = [d for d in docs if d["status"] == wanted]
        jobs = []
        for doc in docs[:MAX_LISTED]:
            row = {f: doc.get(f) for f in _FIELDS}
            owner = doc.get("owner")
            row["owner"] = owner[:8] if isinstance(owner, str) else None
            row["instance"] = doc.get("instance")
            jobs.append(row)
        return json(
            {
                "now": time.time(),
                "counts": dict(counts),
                "counted": len(docs),
                "window": records.recent_kept if records.store.ranks else None,
                "jobs": jobs,
                "instances": instances,
            }
        )

    @bp.route("/admin/cancel/<job_id>", methods=ANY_METHOD, provide_automatic_options=False)
    def admin_cancel(job_id: str) -> Response:
        refused = _off() or allowed("POST") or closed(as_page=False) or csrf.refusal(error)
        if refused is not None:
            return refused
        found = appstate.get()
        doc = found.records.status(job_id) if _JOB_ID.fullmatch(job_id) else None
        if doc is None:
            return error(404, "no such job")
        if doc["status"] in FINAL:
            return json(doc, 202)  # nothing left to cancel: the document says how it ended
        if not found.cancel_job(job_id, queued=doc["status"] == "queued"):
            return error(404, "no such job")
        doc = found.records.status(job_id) or doc
        doc["cancel_requested"] = True
        return json(doc, 202)
