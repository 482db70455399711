"""Small app factories shared by in-process tests and the child processes of cross-process tests."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from flask import Flask

from flask_asyncstate import AsyncState, JobContext

SECRET = "test-secret-not-for-production"


#: Gates of ``blocked`` jobs, by name (job arguments must be JSON).
GATES: dict[str, threading.Event] = {}


class Gate:
    """An Event a ``blocked`` job waits on, passed to it by name: ``start(gate.name)``."""

    def __init__(self) -> None:
        self.name = secrets.token_hex(6)
        self.event = GATES[self.name] = threading.Event()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


#: Keywords of :func:`make_app` that call the extension's decorator of that name.
DECORATORS = ("guard", "admin_guard", "owner_loader")


def make_app(redis_url: str | None = None, **config: Any) -> tuple[Flask, AsyncState]:
    """An app with the tests' defaults: ``ASYNCSTATE_*`` (upper case) keywords go to
    ``app.config``; ``guard``, ``admin_guard`` and ``owner_loader`` to those decorators;
    other lower-case keywords (``sse_max_age=1.0``, ``celery=``) to ``AsyncState``."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET,
        TESTING=True,
        ASYNCSTATE_KEY_PREFIX="test:",
        ASYNCSTATE_FLUSH_INTERVAL=0.05,
        ASYNCSTATE_HEARTBEAT_INTERVAL=0.5,
        # The test client and dev server start a thread per request: streams cost no
        # shared pool there, so the tests turn them on (the default is off on threads).
        ASYNCSTATE_MAX_STREAMS=100,
    )
    if redis_url:
        app.config["ASYNCSTATE_REDIS_URL"] = redis_url
    decorated = {name: config.pop(name) for name in DECORATORS if name in config}
    keywords = {name: config.pop(name) for name in list(config) if name.islower()}
    app.config.update(config)
    ext = AsyncState()
    for name, fn in decorated.items():
        getattr(ext, name)(fn)
    ext.init_app(app, **keywords)
    return app, ext


def define_jobs(ext: AsyncState) -> dict[str, Any]:
    """The jobs the tests start, registered on ``ext``."""
    jobs: dict[str, Any] = {}

    @ext.job
    def count(job: JobContext, n: int, sleep: float = 0.0) -> dict[str, int]:
        for i in range(1, n + 1):
            job.check_cancelled()
            job.progress(i, total=n, message=f"{i:,} of {n:,} rows")
            if sleep:
                time.sleep(sleep)  # a slow job, as the caller asked
        return {"rows": n}

    @ext.job
    def until_cancelled(job: JobContext, limit: float = 60.0) -> str:
        deadline = time.monotonic() + limit
        i = 0
        while not job.cancelled.wait(0.01):
            i += 1
            job.progress(i, message=f"tick {i}")
            if time.monotonic() > deadline:
                return "timed out"
        return "stopped early"

    @ext.job(name="stubborn")
    def ignores_cancel(job: JobContext, seconds: float) -> None:
        time.sleep(seconds)  # never looks at job.cancelled: only shutdown or the clock ends it

    @ext.job
    def blocked(job: JobContext, gate: str) -> str:
        GATES[gate].wait(30)  # job arguments are JSON: the gate is named, not passed
        return "released"

    @ext.job
    def fails(job: JobContext) -> None:
        job.progress(1, total=2)
        raise ValueError("bad row 7")

    @ext.job
    def returns_set(job: JobContext) -> set[int]:
        return {1, 2}

    jobs.update(
        count=count,
        until_cancelled=until_cancelled,
        stubborn=ignores_cancel,
        blocked=blocked,
        fails=fails,
        returns_set=returns_set,
    )
    return jobs
