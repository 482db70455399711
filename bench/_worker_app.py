"""The app of ``bench/workers.py``: what its worker processes and the bench process import.

Worker processes find their settings in the environment (``BW_REDIS_URL``,
``BW_PREFIX``, ``BW_EXECUTOR``, ``BW_QUEUE``, ``BW_BARE_QUEUE``), so every
process of one measurement shares one store and one queue:

- ours on RQ: ``flask --app _worker_app asyncstate worker --queue Q [--simple]``;
- ours on Celery: ``celery -A _worker_app:celery_app worker ...`` (the Celery app
  that ``AsyncState(app, celery=...)`` registered its task on);
- bare RQ: ``python -m rq.cli worker -S json [-w rq.worker.SimpleWorker] Q``,
  running the plain functions below;
- bare Celery: ``celery -A _worker_app:bare_celery worker ...``, a Celery app
  without flask-asyncstate, with the same trivial work as plain tasks.

The bench process calls :func:`create_app` and :func:`make_bare_celery` with
arguments instead. Jobs answer the bench through Redis lists it ``BLPOP``\\ s
(no polling): "ready" with the process id, then what they saw and when
(``time.monotonic()``, one system-wide clock on Linux, so readings from two
processes compare).
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

import redis
from flask import Flask

from flask_asyncstate import AsyncState, JobContext

#: Longest a bench job waits for its cancel, its gate or anything else.
JOB_LIMIT = 30.0

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str | None = None) -> redis.Redis:
    """One redis-py client per process (a forked work horse gets its own) for the jobs' replies."""
    url = url or os.environ["BW_REDIS_URL"]
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url)
    return found


def reply(key: str, *values: Any) -> None:
    client().rpush(key, json.dumps(list(values)))


# -- plain functions: bare RQ jobs, and the gate that holds a worker ----------------------


def bare_trivial(counter: str) -> None:
    """The trivial work of the throughput runs, ours and bare alike: one ``INCR``."""
    client().incr(counter)


def bare_wait(reply_key: str, seconds: float) -> str:
    """Say "ready" with this process's id, then sleep until stopped (or ``seconds`` pass)."""
    reply(reply_key, "ready", os.getpid())
    time.sleep(seconds)
    return "not stopped"


def gate(release_key: str, reply_key: str) -> None:
    """Hold this worker (process) until the bench pushes to ``release_key``."""
    reply(reply_key, "gated", os.getpid())
    client().blpop([release_key], timeout=int(JOB_LIMIT))


# -- ours -----------------------------------------------------------------------------------


def _celery(url: str, queue: str, name: str, backend: str | None = None) -> Any:
    from celery import Celery

    celery = Celery(name, broker=url, backend=backend, set_as_current=False)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


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
    celery = _celery(url, queue, "bench_workers") if executor == "celery" else None
    ext = AsyncState(app, celery=celery)
    if celery is not None:
        celery.task(name="bench.gate", ignore_result=True)(gate)

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


# -- bare Celery ----------------------------------------------------------------------------


def make_bare_celery(url: str | None = None, queue: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A Celery app without flask-asyncstate (Redis broker and result backend, JSON) and its
    tasks: ``trivial``, ``wait`` (for ``revoke(terminate=True)``), ``abortable`` (an
    ``AbortableTask`` polling ``is_aborted()``) and ``gate``."""
    from celery.contrib.abortable import AbortableTask

    url = url or os.environ["BW_REDIS_URL"]
    queue = queue or os.environ["BW_BARE_QUEUE"]
    celery = _celery(url, queue, "bench_workers_bare", backend=url)
    tasks = {
        "trivial": celery.task(name="bench.bare_trivial", ignore_result=True)(bare_trivial),
        "wait": celery.task(name="bench.bare_wait", ignore_result=True)(bare_wait),
        "gate": celery.task(name="bench.gate", ignore_result=True)(gate),
    }

    @celery.task(name="bench.abortable_wait", bind=True, base=AbortableTask)
    def abortable_wait(self: Any, reply_key: str, poll: float) -> str:
        """What the Celery docs suggest: check ``is_aborted()`` between units of work."""
        reply(reply_key, "ready", os.getpid())
        deadline = time.monotonic() + JOB_LIMIT
        while not self.is_aborted():
            if time.monotonic() > deadline:
                reply(reply_key, "seen", time.monotonic(), False)
                return "not aborted"
            time.sleep(poll)
        reply(reply_key, "seen", time.monotonic(), True)
        return "aborted"

    tasks["abortable"] = abortable_wait
    return celery, tasks


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``app``, ``celery_app`` and ``bare_celery`` for the worker commands, built on first use
    from the environment (so the bench process can import the module without it)."""
    if name in ("app", "celery_app"):
        if "app" not in _built:
            _built["app"] = create_app()
            _built["celery_app"] = getattr(
                _built["app"].extensions["asyncstate"].executor, "celery", None
            )
        return _built[name]
    if name == "bare_celery":
        if name not in _built:
            _built[name] = make_bare_celery()[0]
        return _built[name]
    raise AttributeError(name)
