"""The app bench/growth.py runs under one gunicorn gevent worker to hold many ``/events`` streams.

``create_app()`` (gunicorn's entry point) builds ``_common.make_app`` with the
jobs in Redis through a client on a ``redis.BlockingConnectionPool`` (100
connections, a 5 s wait for a free one), as ``docs/deployment.rst`` advises for
gevent workers, and Flask's signed-cookie sessions (no Redis for sessions, so
every Redis command the server counts is the extension's). It reads:

- ``BENCH_GROWTH_REDIS_URL``: the job store;
- ``BENCH_GROWTH_MAX_STREAMS``: ``ASYNCSTATE_MAX_STREAMS`` and the tuning keyword
  ``max_streams_per_owner`` (every stream comes from one session);
- ``BENCH_GROWTH_POOL``: the pool's ``max_connections`` (100);
- ``SECRET_KEY``: shared with the benchmark;
- ``sse_max_age`` (a tuning keyword) is raised to 300 s so that no stream is told to
  reconnect during a measurement; every other setting is the library's default
  (flush interval 0.25 s, ping every 15 s).

Routes besides the extension's blueprint:

- ``GET /``: ``ok`` (gunicorn's readiness check);
- ``POST /bench/start?jobs=J&period=P&seconds=S``: starts J ``bench_ticker``
  jobs in this session; each calls ``job.progress(i, message=str(time.time()))``
  every P seconds until ``/bench/stop``, a cancel or S seconds (at most 600);
  answers ``{"tokens": [...]}``;
- ``GET /bench/streams``: ``{"open": streams open in this process, "watched":
  keys with watchers}``;
- ``POST /bench/stop``: ends the jobs.

Bench only: nothing here is part of the library.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import _common
import redis
from flask import Flask, request

from flask_asyncstate import JobContext

#: Longest a bench job may run.
MAX_SECONDS = 600.0


class _QuietCookieWarning(logging.Filter):
    """Drops the library's one-off note that the app uses Flask's cookie session (on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "cookie session" not in record.getMessage()


def create_app() -> Flask:
    logging.getLogger("flask_asyncstate").addFilter(_QuietCookieWarning())
    url = os.environ.get("BENCH_GROWTH_REDIS_URL")
    if not url:
        raise RuntimeError("bench/_growth_app.py needs BENCH_GROWTH_REDIS_URL (growth.py sets it)")
    streams = int(os.environ.get("BENCH_GROWTH_MAX_STREAMS", "100"))
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=int(os.environ.get("BENCH_GROWTH_POOL", "100")),
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    app, ext = _common.make_app(
        "bench-growth-streams",
        redis_client=redis.Redis(connection_pool=pool),
        secret_key=os.environ.get("SECRET_KEY") or _common.SECRET,
        tuning={"max_streams_per_owner": streams, "sse_max_age": 300.0},
        ASYNCSTATE_MAX_STREAMS=streams,
    )
    stop = threading.Event()  # a gevent Event under the gevent worker (patched threading)

    @ext.job(name="bench_ticker")
    def bench_ticker(job: JobContext, period: float, seconds: float) -> dict[str, int]:
        """A progress call every ``period`` s, its wall-clock time in the message."""
        deadline = time.monotonic() + min(seconds, MAX_SECONDS)
        step = 0
        while time.monotonic() < deadline and not stop.is_set():
            step += 1
            job.progress(step, message=f"{time.time():.6f}")
            if job.cancelled.wait(period):
                break
        return {"steps": step}

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.post("/bench/start")
    def bench_start() -> dict[str, Any]:
        jobs = max(1, min(int(request.args.get("jobs", 1)), 4))  # the session's quota is 5
        period = max(0.01, float(request.args.get("period", 0.3)))
        seconds = min(float(request.args.get("seconds", 60)), MAX_SECONDS)
        stop.clear()
        handles = [bench_ticker.start(period, seconds) for _ in range(jobs)]
        return {"tokens": [h.token for h in handles]}

    @app.get("/bench/streams")
    def bench_streams() -> dict[str, int]:
        found = ext.app_state()
        return {"open": found.streams.count(), "watched": found.store.watched_keys()}

    @app.post("/bench/stop")
    def bench_stop() -> dict[str, bool]:
        stop.set()
        return {"stopped": True}

    return app
