"""The app of the worker tests: web instances (``flask run``) and workers (RQ, Celery) import it.

Configured from the environment (``WT_REDIS_URL``, ``WT_PREFIX``, ``WT_EXECUTOR``,
``WT_QUEUE``), so every process of one test shares one store and one queue.
Jobs leave markers in Redis (``<prefix>mark:called:<id>``, ``...:seen-cancel:<id>``)
that show the test what ran where.

With ``WT_AGAIN=1`` the app also declares the jobs that run again (issue 24, used by
``tests/test_again_procs.py``): ``flaky`` (``retries=2``) and ``import_items``
(``resumable=True``). They count their runs (``<prefix>mark:runs:<id>``, an ``INCR``), list
each run (``...:run-log:<id>``: attempt, resumed, cursor, pid, parent pid, instance) and each item
processed (``...:items:<id>``), so a test sees every run and every item, wherever it ran.
Only then does the app's writer look for due jobs: the other worker tests' apps stay as
they were.

that show the test what ran where. With ``WT_SPANS`` (a file) every process writes its
spans there (``support.observing``); with ``WT_METRICS_PORT`` a Celery worker's main
process serves ``/metrics`` there (an RQ worker: ``--metrics-port``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import redis
from flask import Flask, request

from flask_asyncstate import AsyncState, JobContext


def _celery(url: str, queue: str) -> Any:
    from celery import Celery

    celery = Celery("worker_app", broker=url, set_as_current=False)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


def _serve_metrics_from_celery(port: int) -> None:
    from celery.signals import worker_init

    from flask_asyncstate import metrics

    def serve(**kw: Any) -> None:  # the worker's main process, before its pool forks
        metrics.serve(port, "127.0.0.1")

    worker_init.connect(serve, weak=False)


class _MarkFields(logging.Handler):
    """Marks the job fields of each record it handles: ``<prefix>mark:log:<asyncstate_job_id>``."""

    def __init__(self, marks: redis.Redis, prefix: str) -> None:
        super().__init__()
        self.marks, self.prefix = marks, prefix

    def emit(self, record: logging.LogRecord) -> None:
        job_id, name = record.asyncstate_job_id, record.asyncstate_job_name
        self.marks.set(f"{self.prefix}mark:log:{job_id}", f"{name} {record.getMessage()}", ex=600)


def create_app() -> Flask:
    url = os.environ["WT_REDIS_URL"]
    prefix = os.environ["WT_PREFIX"]
    executor = os.environ["WT_EXECUTOR"]
    if os.environ.get("WT_SPANS"):
        from support.observing import export_spans_to

        export_spans_to(os.environ["WT_SPANS"])
    if os.environ.get("WT_METRICS_PORT") and executor == "celery":
        _serve_metrics_from_celery(int(os.environ["WT_METRICS_PORT"]))
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="worker-test-secret",
        ASYNCSTATE_REDIS_URL=url,
        ASYNCSTATE_KEY_PREFIX=prefix,
        ASYNCSTATE_EXECUTOR=executor,
        ASYNCSTATE_RQ_QUEUE=os.environ["WT_QUEUE"],
        ASYNCSTATE_HEARTBEAT_INTERVAL=float(os.environ.get("WT_HEARTBEAT", "0.5")),
        ASYNCSTATE_FLUSH_INTERVAL=0.05,
    )
    celery = _celery(url, os.environ["WT_QUEUE"]) if executor == "celery" else None
    ext = AsyncState(app, celery=celery, timeout_grace=0.5)
    marks = redis.Redis.from_url(url)

    def mark(what: str, job: JobContext, value: Any = 1) -> None:
        marks.set(f"{prefix}mark:{what}:{job.id}", value, ex=600)

    job_log = logging.getLogger("worker_app.jobs")
    job_log.addHandler(_MarkFields(marks, prefix))
    job_log.setLevel(logging.INFO)
    job_log.propagate = False

    @ext.job
    def observed(job: JobContext) -> int:
        mark("called", job)
        mark("pid", job, os.getpid())
        job_log.info("converting")
        return 1

    @ext.job
    def until_cancelled(job: JobContext) -> str:
        mark("called", job)
        mark("pid", job, os.getpid())
        i = 0
        while not job.cancelled.wait(0.02):
            i += 1
            job.progress(i, message=f"step {i}")
        mark("seen-cancel", job, repr(time.time()))
        return "stopped"

    @ext.job
    def double(job: JobContext, x: int) -> int:
        mark("called", job)
        job.progress(1, total=1)
        return 2 * x

    @ext.job
    def fails(job: JobContext) -> None:
        mark("called", job)
        raise ValueError("bad row 7")

    @ext.job(timeout=1)
    def stubborn(job: JobContext) -> None:
        mark("called", job)
        end = time.monotonic() + 30
        while time.monotonic() < end:  # never looks at its Event: the limits stop it
            time.sleep(0.01)

    @ext.job(timeout=1)
    def polite(job: JobContext) -> str:
        mark("called", job)
        job.cancelled.wait(30)
        return "stopped at the deadline"

    @ext.job(cancel_grace=1)
    def deaf(job: JobContext) -> str:
        mark("called", job)
        mark("pid", job, os.getpid())
        end = time.monotonic() + 8
        i = 0
        while time.monotonic() < end:  # never looks at its Event: only its process's end stops it
            i += 1
            job.progress(i)
            time.sleep(0.02)
        mark("ran-out", job)
        return "ignored the cancel"

    @ext.job
    def unstored(job: JobContext) -> str:
        """Its final document meets an outage (in this process only: an RQ work horse's)
        that outlasts the shutdown timeout (1 s here): the horse exits without storing it."""
        from flask_asyncstate.errors import StoreUnavailable
        from flask_asyncstate.status import FINAL

        app_state = ext.app_state()
        store, key = app_state.store, app_state.records.job_key(job.id)
        write = store.write

        def failing(at: str, doc: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if at == key and doc.get("status") in FINAL:
                raise StoreUnavailable("test: an outage for this job's final document")
            return write(at, doc, *args, **kwargs)

        store.write = failing  # type: ignore[method-assign]
        # This process only: retry the outage for 1 s, not the default 10 (the test's time).
        settings = app_state.settings
        tuning = dataclasses.replace(settings.tuning, shutdown_timeout=1.0)
        app_state.settings = dataclasses.replace(settings, tuning=tuning)
        mark("called", job)
        return "done, never stored"

    @ext.job
    def leaf(job: JobContext, n: int, pause: float = 0.0) -> int:
        marks.rpush(f"{prefix}leaf-pids", os.getpid())
        if pause:
            end = time.monotonic() + pause
            while time.monotonic() < end and not job.cancelled.is_set():
                time.sleep(0.01)
            job.check_cancelled()
        if n % 10 == 7:
            raise ValueError(f"file {n} is broken")
        return n

    @ext.job
    def batch(job: JobContext, count: int, pause: float = 0.0) -> dict[str, int]:
        with job.stage("spawn"):
            for n in range(count):
                job.spawn(leaf, n, pause)
        with job.stage("wait"):
            return job.wait_children(120)

    if os.environ.get("WT_AGAIN") == "1":
        _define_again(ext, marks, prefix)

    @app.post("/start/<name>")
    def start(name: str) -> Any:
        job = ext.registered_job(name)
        if job is None:
            return {"error": "no such job"}, 404
        handle = job.start(*(request.get_json(silent=True) or []))
        return {"token": handle.token, "id": handle.id}, 202

    return app


def _define_again(ext: AsyncState, marks: redis.Redis, prefix: str) -> None:
    """The jobs that run again (see the module docstring)."""

    def log_run(job: JobContext) -> int:
        """Count this run and list it; the run's number (1 for the first, whoever ran it)."""
        run = {
            "attempt": job.attempt,
            "resumed": job.resumed,
            "cursor": job.cursor,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "instance": ext.app_state().instance_id,
            "at": time.time(),
        }
        with marks.pipeline() as pipe:
            pipe.incr(f"{prefix}mark:runs:{job.id}")
            pipe.rpush(f"{prefix}mark:run-log:{job.id}", json.dumps(run))
            pipe.expire(f"{prefix}mark:runs:{job.id}", 600)
            pipe.expire(f"{prefix}mark:run-log:{job.id}", 600)
            return int(pipe.execute()[0])

    @ext.job(retries=2, backoff=0.2)
    def flaky(job: JobContext, fail_runs: int) -> dict[str, int]:
        """Raises ``ConnectionError`` on its first ``fail_runs`` runs, then succeeds."""
        run = log_run(job)
        if run <= fail_runs:
            raise ConnectionError(f"flaky dependency (run {run})")
        return {"attempt": job.attempt, "run": run, "pid": os.getpid()}

    @ext.job(resumable=True)
    def import_items(job: JobContext, count: int, pause: float) -> int:
        """``count`` items through ``job.iter`` (a resumed run skips those done), each pushed
        to ``...:items:<id>`` once processed, ``pause`` s apiece."""
        log_run(job)
        key = f"{prefix}mark:items:{job.id}"
        done = 0
        for i in job.iter(range(count)):
            with marks.pipeline() as pipe:
                pipe.rpush(key, i)
                pipe.expire(key, 600)
                pipe.execute()
            done += 1
            time.sleep(pause)  # the work an item takes
        return done


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``app`` and ``celery_app`` for ``flask --app support.worker_app`` and ``celery -A
    support.worker_app:celery_app``, built on first use (so the test process can import the module)."""
    if name not in ("app", "celery_app"):
        raise AttributeError(name)
    if not _built:
        _built["app"] = create_app()
        _built["celery_app"] = getattr(
            _built["app"].extensions["asyncstate"].executor, "celery", None
        )
    return _built[name]
