"""``flask asyncstate ...``: look at and manage the jobs of every instance sharing the store."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import click
from flask.cli import AppGroup

from . import appstate
from .appstate import AppState
from .status import FINAL, UNFINISHED, JobStatus

asyncstate_cli = AppGroup("asyncstate", help="Inspect and manage flask-asyncstate jobs.")


def _app_state() -> AppState:
    return appstate.get()


def _age(since: float | None) -> str:
    if not since:
        return "-"
    seconds = max(0, int(time.time() - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@asyncstate_cli.command("list")
@click.option(
    "--status", "statuses", multiple=True, help="Only jobs with this status (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_jobs(statuses: tuple[str, ...], as_json: bool) -> None:
    """List live jobs of every instance, newest first."""
    jobs = [j for j in _app_state().records.all_jobs() if not statuses or j["status"] in statuses]
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
    if not jobs:
        click.echo("No live jobs.")
        return
    rows = [
        [
            j["id"],
            str(j["name"]),
            j["status"],
            "-" if j["percent"] is None else f"{j['percent']:.0f}%",
            _age(j["created_at"]),
            str(
                j.get("instance") or ("(waiting for a worker)" if j["status"] == "queued" else "-")
            ),
        ]
        for j in jobs
    ]
    _table(["ID", "NAME", "STATUS", "PERCENT", "AGE", "INSTANCE"], rows)


def _job(job_id: str) -> dict[str, Any]:
    doc = _app_state().records.status(job_id)
    if doc is None:
        raise click.ClickException(f"no live job with id {job_id!r} (finished jobs expire)")
    return doc


@asyncstate_cli.command("show")
@click.argument("job_id")
def show(job_id: str) -> None:
    """Print one job's progress document as JSON."""
    click.echo(json.dumps(_job(job_id), indent=2))


@asyncstate_cli.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Request cancellation of a job, wherever it runs."""
    doc = _job(job_id)
    if doc["status"] in FINAL:
        raise click.ClickException(f"job {job_id} already ended: {doc['status']}")
    if not _app_state().cancel_job(job_id):
        raise click.ClickException(f"job {job_id} vanished before it could be cancelled")
    click.echo(f"Cancel requested for job {job_id} ({doc['name']}).")


@asyncstate_cli.command("purge")
@click.option("--all", "include_lost", is_flag=True, help="Also remove lost jobs.")
@click.option(
    "--older-than",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Only jobs whose last update is at least this old.",
)
def purge(include_lost: bool, older_than: float) -> None:
    """Remove finished job entries (succeeded, failed, cancelled)."""
    found = _app_state()
    removable = FINAL if include_lost else FINAL - {JobStatus.LOST}
    cutoff = time.time() - older_than
    removed = 0
    for job in found.records.all_jobs():
        if job["status"] in removable and job["updated_at"] <= cutoff:
            removed += found.records.remove(job["id"])
    click.echo(f"Removed {removed} finished job(s).")


@asyncstate_cli.command("instances")
def instances() -> None:
    """List live instances (those heartbeating) and how many unfinished jobs each holds."""
    records = _app_state().records
    found = sorted(records.instances(), key=lambda i: i.get("started_at", 0))
    if not found:
        click.echo("No live instances.")
        return
    # Heartbeats carry no job list (their size must not grow with the jobs): count from the jobs.
    held: Counter[str] = Counter(
        str(j.get("instance")) for j in records.all_jobs() if j["status"] in UNFINISHED
    )
    rows = [
        [
            str(i["id"]),
            str(i.get("host")),
            str(i.get("pid")),
            _age(i.get("started_at")),
            _age(i.get("beat_at")),
            str(i.get("role", "web")),
            str(held[str(i["id"])]),
        ]
        for i in found
    ]
    _table(["INSTANCE", "HOST", "PID", "UP", "LAST BEAT", "ROLE", "JOBS"], rows)


@asyncstate_cli.command("acl")
@click.option("--user", default="asyncstate", show_default=True, help="The ACL user's name.")
def acl(user: str) -> None:
    """Print the least-privilege Redis ACL rule for this app's key prefix."""
    from .stores.redis import acl_setuser

    click.echo(acl_setuser(user, _app_state().settings.key_prefix))


@asyncstate_cli.command("worker")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="RQ queue to take jobs from (repeatable; default ASYNCSTATE_RQ_QUEUE).",
)
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
@click.option("--simple", is_flag=True, help="Run jobs in this process, without forking.")
@click.option("--name", default=None, help="RQ worker name (default: RQ's own).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on this port (the forking worker needs"
    " PROMETHEUS_MULTIPROC_DIR).",
)
def worker(
    queues: tuple[str, ...], burst: bool, simple: bool, name: str | None, metrics_port: int | None
) -> None:
    """Run an RQ worker for this app's jobs (ASYNCSTATE_EXECUTOR = "rq")."""
    found = _app_state()
    if found.settings.executor != "rq":
        raise click.UsageError(
            f"ASYNCSTATE_EXECUTOR is {found.settings.executor!r}: the worker runs jobs queued"
            " with 'rq' (Celery users run 'celery -A MODULE worker')"
        )
    try:
        from .workers import run_worker
    except ImportError as exc:  # pragma: no cover - the rq extra is missing
        raise click.ClickException(f"the RQ worker needs the rq extra: {exc}") from None
    if metrics_port is not None:
        from . import metrics

        try:
            metrics.serve(metrics_port, forking=not simple)
        except RuntimeError as exc:
            raise click.UsageError(str(exc)) from None
    found.role = "rq worker"
    run_worker(
        found, list(queues) or [found.settings.rq_queue], burst=burst, simple=simple, name=name
    )
