"""An app serving Prometheus metrics in multiprocess mode, for gunicorn with several workers.

``python -m gunicorn -c python:support.metrics_app ... 'support.metrics_app:create_app()'``
with ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory), ``MA_REDIS_URL`` and
``MA_PREFIX`` set: the module is both the app and gunicorn's configuration (its
``child_exit`` hook, as prometheus_client's multiprocess documentation says). ``POST
/start/<name>`` starts one of the jobs ``ok``, ``boom`` (fails) or ``quit`` (cancels
itself) and answers its id and the worker's pid; ``GET /metrics`` serves every worker's
values together, as docs/operating.rst shows.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response

from flask_asyncstate import AsyncState, JobCancelled


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook in the master: a worker that exited leaves the live gauges' sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def create_app() -> Flask:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    from flask_asyncstate.metrics import StoreCollector

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ["SECRET_KEY"],
        ASYNCSTATE_REDIS_URL=os.environ["MA_REDIS_URL"],
        ASYNCSTATE_KEY_PREFIX=os.environ["MA_PREFIX"],
        ASYNCSTATE_FLUSH_INTERVAL=0.05,
        ASYNCSTATE_HEARTBEAT_INTERVAL=0.5,
    )
    ext = AsyncState(app)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(StoreCollector())

    @ext.job
    def ok(job: Any) -> int:
        return 1

    @ext.job
    def boom(job: Any) -> None:
        raise ValueError("bad row 7")

    @ext.job(name="quit")
    def quits(job: Any) -> None:
        raise JobCancelled("stopped itself")

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.post("/start/<name>")
    def start(name: str) -> Any:
        job = ext.registered_job(name)
        if job is None:
            return {"error": "no such job"}, 404
        return {"id": job.start().id, "pid": os.getpid()}, 202

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
