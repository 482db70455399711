"""The exports: the job, and the blueprint with its start, show and download views."""

import contextlib
import csv
import os
import time

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask_login import login_required

from flask_asyncstate import QueueFull, QuotaExceeded

from .extensions import asyncstate

bp = Blueprint("exports", __name__, url_prefix="/exports")


@bp.before_request
@login_required
def signed_in_only():
    """Every view of the blueprint is for signed-in users."""


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"  # pages carry job and CSRF tokens
    return response


def export_name(job_id):
    return f"{job_id}.csv"


def export_path(job_id):
    return os.path.join(current_app.config["EXPORT_DIR"], export_name(job_id))


@asyncstate.job(render_result="exports/_download.html")  # shown under the bar when done
def export_orders(job, year):
    rows, pause = current_app.config["EXPORT_ROWS"], current_app.config["EXPORT_PAUSE"]
    path = export_path(job.id)
    try:
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["order", "year"])
            for order in job.iter(range(1, rows + 1), message="{current} of {total} orders"):
                writer.writerow([order, year])  # stands in for a query per order
                time.sleep(pause)
    except BaseException:  # cancelled, failed, or stopped: no half-written file stays
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise
    # The job runs in a request context at the starting request's address: this is the
    # link the view would have built (for an e-mail, or an API client). It carries the
    # job's token, which the download view checks with asyncstate.owned().
    token = job.token
    return {"rows": rows, "url": url_for("exports.download", token=token, _external=True)}


@bp.get("/")
def index():
    return render_template("exports/index.html")


@bp.post("/")
def start():
    year = request.form.get("year", type=int)
    if year is None:
        abort(400)
    try:
        handle = export_orders.start(year)
    except (QuotaExceeded, QueueFull) as exc:
        flash(exc.user_message)  # for the user (translated by Flask-Babel); str(exc): the log
        return redirect(url_for("exports.index"))  # post/redirect/get, refused or not
    return redirect(url_for("exports.show", token=handle.token))


@bp.get("/<token>")
def show(token):
    return render_template("exports/show.html", token=token)


@bp.get("/<token>/download")
def download(token):
    handle = asyncstate.owned(token)  # None: forged, expired, or someone else's
    doc = handle.status() if handle is not None else None
    if doc is None or doc["status"] != "succeeded":
        abort(404)  # not theirs, gone, or not done
    return send_from_directory(  # 404 too if the file was cleaned up
        current_app.config["EXPORT_DIR"],
        export_name(handle.id),
        mimetype="text/csv",
        as_attachment=True,
        download_name="orders.csv",
    )
