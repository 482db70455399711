"""The app of ``bench/workers.py``'s tracked jobs: its workers and the bench process import it.

Worker processes find their settings in the environment (``BW_REDIS_URL``,
``BW_PREFIX``, ``BW_EXECUTOR``, ``BW_QUEUE``), so every process of one
measurement shares one store and one queue:

- on RQ: ``flask --app _worker_app asyncstate worker --queue Q [--simple]``;
- on Celery: ``celery -A _worker_app:celery_app worker ...`` (the Celery app
  that ``AsyncState(app, celery=...)`` registered its task on).

The bench process calls :func:`create_app` with arguments instead. The bare
side (plain RQ functions, a Celery app without flask-asyncstate) is in
``_worker_jobs.py``; the jobs here do the same work and answer the same way.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from _worker_jobs import JOB_LIMIT, bare_trivial, gate, make_celery, reply
from flask import Flask

from flask_asyncstate import AsyncState, JobContext


def create_app(
    url: str | None = None,
    prefix: str | None = None,
    executor: str | None = None,
    queue: str | None = None,
) -> Flask:
    """The tracked jobs' app; arguments default to the ``BW_*`` environment (workers).

    Everything else (flush and heartbeat intervals included) at the library's
    defaults, except ``ASYNCSTATE_MAX_QUEUED``: the bench queues thousands of
    jobs for workers at once on purpose.
    """
    url = url or os.environ["BW_REDIS_URL"]
    prefix = prefix or os.environ["BW_PREFIX"]
    executor = executor or os.environ["BW_EXECUTOR"]
    queue = queue or os.environ.get("BW_QUEUE", "asyncstate")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench-workers-secret",
        ASYNCSTATE_REDIS_URL=url,
        ASYNCSTATE_KEY_PREFIX=prefix,
        ASYNCSTATE_EXECUTOR=executor,
        ASYNCSTATE_RQ_QUEUE=queue,
        ASYNCSTATE_MAX_QUEUED=1_000_000,
    )
    celery = make_celery(url, queue, "bench_workers") if executor == "celery" else None
    ext = AsyncState(app, celery=celery)
    if celery is not None:  # holds a pool process during the throughput runs
        celery.task(name="bench.gate", ignore_result=True, shared=False)(gate)

    @ext.job(name="bench_wait_cancel")
    def wait_cancel(job: JobContext, reply_key: str) -> str:
        """Say "ready" once this process's cancel listener is subscribed, then wait on the Event."""
        ext.app_state().store.subscribed.wait(5)  # type: ignore[attr-defined]
        reply(reply_key, "ready", os.getpid())
        seen = job.cancelled.wait(JOB_LIMIT)
        reply(reply_key, "seen", time.monotonic(), seen)
        return "stopped"

    @ext.job(name="bench_trivial")
    def trivial(job: JobContext, counter: str) -> None:
        bare_trivial(counter)

    @ext.job(name="bench_progress_loop")
    def progress_loop(job: JobContext, n: int) -> float:
        """µs per call of ``n`` ``job.progress(i)`` calls, timed here (GC paused)."""
        progress, clock = job.progress, time.perf_counter
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = clock()
            for i in range(n):
                progress(i)
            took = clock() - start
        finally:
            if was_enabled:
                gc.enable()
        return took / n * 1e6

    return app


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``app`` and ``celery_app`` for the worker commands, built on first use from the
    environment (so the bench process can import the module without it)."""
    if name not in ("app", "celery_app"):
        raise AttributeError(name)
    if not _built:
        _built["app"] = create_app()
        _built["celery_app"] = getattr(
            _built["app"].extensions["asyncstate"].executor, "celery", None
        )
    return _built[name]
