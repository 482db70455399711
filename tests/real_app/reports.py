"""The reports: an export runs as a tracked job and ends with a download link."""

from __future__ import annotations

import re
import time

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask_login import current_user, login_required

from flask_asyncstate import JobContext, QuotaExceeded

from .extensions import asyncstate

bp = Blueprint("reports", __name__, url_prefix="/reports")

_NAME = re.compile(r"[a-z]+-[0-9a-f]{8}\.csv")


@asyncstate.job(name="export_report", render_result="reports/_download.html")
def export_report(job: JobContext, kind: str) -> dict[str, str]:
    """Build the report section by section; the link to it is the result."""
    steps = current_app.config["REPORTS_STEPS"]
    delay = current_app.config["REPORTS_STEP_DELAY"]
    for _section in job.iter(range(steps), message="{current} of {total} sections"):
        time.sleep(delay)  # stands in for a query per section
    name = f"{kind}-{job.id[:8]}.csv"
    return {"url": url_for("reports.download", name=name, _external=True), "name": name}


def _no_store(body: str) -> Response:
    response = make_response(body)
    response.headers["Cache-Control"] = "no-store"  # carries a job token and a CSRF token
    return response


@bp.get("/")
@login_required
def index() -> Response:
    return _no_store(render_template("reports/index.html"))


@bp.post("/export")
@login_required
def export() -> Response:
    try:
        handle = export_report.start("sales")
    except QuotaExceeded:
        flash("You have too many exports running; wait for one to finish.")
        return redirect(url_for("reports.index"))
    return redirect(url_for("reports.show", token=handle.token))  # post/redirect/get


@bp.get("/<token>")
@login_required
def show(token: str) -> Response:
    return _no_store(render_template("reports/show.html", token=token))


@bp.get("/download/<name>")
@login_required
def download(name: str) -> Response:
    if not _NAME.fullmatch(name):
        abort(404)
    body = f"region,total\nnorth,1200\nsouth,980\n# for {current_user.get_id()}\n"
    response = make_response(body)
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
