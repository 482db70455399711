"""What the alternatives run: plain job functions for RQ and Celery, and a bare Celery app.

No flask-asyncstate here, so a bare worker loads nothing of ours: RQ's forking
worker imports a job's module in each work horse, and this one imports only
redis (already loaded by RQ; rq itself only where a job needs it). RQ refuses
functions defined in ``__main__`` and imports them by dotted name, hence this
importable module (the scripts put ``bench/`` on ``sys.path``; spawned
processes inherit it). The bare Celery worker is
``celery -A _alt_jobs:bare_celery worker``. Settings come from the environment
in worker processes (``BW_REDIS_URL``, ``BW_BARE_QUEUE``), from arguments in
the bench process.

Jobs answer the bench through Redis lists it ``BLPOP``\\ s (no polling):
"ready" with the process id, then what they saw and when (``time.monotonic()``,
one system-wide clock on Linux, so readings from two processes compare).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

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


def noop() -> None:
    """The function of the RQ job whose meta progress.py saves (never run)."""


def progress_job(n: int, pace: float) -> int:
    """Report ``n`` progress steps through ``job.meta``; sleep ``pace`` s every 100 steps."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    for i in range(1, n + 1):
        job.meta["progress"] = {"current": i, "total": n, "message": f"{i:,} of {n:,} rows"}
        job.save_meta()
        if pace and i % 100 == 0:
            time.sleep(pace)
    return n


def wait_job(url: str, running_key: str, seconds: float) -> str:
    """Say "running" through ``running_key``, then sleep until stopped (or ``seconds`` pass)."""
    client = redis.Redis.from_url(url)
    client.set(running_key, "1", ex=60)
    client.close()
    time.sleep(seconds)
    return "not stopped"


def bare_trivial(counter: str) -> None:
    """The trivial work of the throughput runs, ours and bare alike: one ``INCR``."""
    client().incr(counter)


def bare_wait(reply_key: str, seconds: float) -> str:
    """Say "ready" with this process's id, then sleep until stopped (or ``seconds`` pass)."""
    reply(reply_key, "ready", os.getpid())
    time.sleep(seconds)
    return "not stopped"


#: Seconds between two checks of ``again_hold``'s release key (one step of its work).
HOLD_STEP = 0.02


def again_hold(reply_key: str, release_key: str, attempt: int = 0, steps: Any = iter) -> None:
    """Say "started" (``time.monotonic()``, this process's id, ``attempt``), then work in
    steps of :data:`HOLD_STEP` s until ``release_key`` exists; say "done". ``again.py``
    kills the process running it and times the run that follows (``steps``: ours passes
    ``job.iter``)."""
    reply(reply_key, "started", time.monotonic(), os.getpid(), attempt)
    for _ in steps(range(int(JOB_LIMIT / HOLD_STEP))):
        if client().exists(release_key):
            break
        time.sleep(HOLD_STEP)
    reply(reply_key, "done", time.monotonic(), os.getpid(), attempt)


def gate(release_key: str, reply_key: str) -> None:
    """Hold this worker (process) until the bench pushes to ``release_key``."""
    reply(reply_key, "gated", os.getpid())
    client().blpop([release_key], timeout=int(JOB_LIMIT))


def make_celery(url: str, queue: str, name: str, backend: str | None = None) -> Any:
    """A Celery app on the Redis broker, JSON only, ``queue`` its default queue."""
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


def make_bare_celery(
    url: str | None = None, queue: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """A Celery app without flask-asyncstate (Redis broker and result backend, JSON) and its
    tasks: ``trivial``, ``wait`` (for ``revoke(terminate=True)``), ``abortable`` (an
    ``AbortableTask`` polling ``is_aborted()``), ``gate`` and ``again`` (``again_hold``,
    ``acks_late`` with ``reject_on_worker_lost``)."""
    from celery.contrib.abortable import AbortableTask

    url = url or os.environ["BW_REDIS_URL"]
    queue = queue or os.environ["BW_BARE_QUEUE"]
    celery = make_celery(url, queue, "bench_workers_bare", backend=url)
    tasks = {
        "trivial": celery.task(name="bench.bare_trivial", ignore_result=True, shared=False)(
            bare_trivial
        ),
        # Celery's own way to run a task again after its process died: acknowledged at its
        # end, and requeued when the worker loses the process running it.
        "again": celery.task(
            name="bench.again_hold",
            ignore_result=True,
            acks_late=True,
            reject_on_worker_lost=True,
            shared=False,
        )(again_hold),
        "wait": celery.task(name="bench.bare_wait", ignore_result=True, shared=False)(bare_wait),
        "gate": celery.task(name="bench.gate", ignore_result=True, shared=False)(gate),
    }

    @celery.task(name="bench.abortable_wait", bind=True, base=AbortableTask, shared=False)
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
    """``bare_celery`` for ``celery -A _alt_jobs:bare_celery``, built on first use."""
    if name != "bare_celery":
        raise AttributeError(name)
    if name not in _built:
        _built[name] = make_bare_celery()[0]
    return _built[name]
