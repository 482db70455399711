"""The app bench/topologies.py runs under gunicorn, once on a single redis-server, once on a cluster.

One app, two job stores: :func:`build_app` passes ``AsyncState(app, redis=client)``
either ``redis.Redis.from_url(<single server>)`` or a ``RedisCluster`` on the
given nodes; nothing else differs. Sessions live on the single server in both
cases (Flask-Session, not permanent, a blocking pool as in the example app):
Flask-Session's Redis backend takes a ``redis.Redis`` only, not a
``RedisCluster`` (``tests/test_topologies_jobs.py`` shows it falling back), so a
cluster deployment keeps its sessions on a plain Redis beside it.

``create_app()`` (gunicorn's entry point) reads the environment:

- ``BENCH_SESSIONS_URL``: the single server (sessions; and jobs when no nodes are given);
- ``BENCH_CLUSTER_NODES``: ``host:port,host:port,...`` of the cluster (jobs), or empty;
- ``SECRET_KEY``: shared with the benchmark.

Routes besides the extension's blueprint:

- ``GET /``: ``ok`` (gunicorn's readiness check);
- ``POST /bench/start?seconds=S``: starts ``bench_watch``, a job reporting progress
  every 0.1 s until cancelled or ``S`` seconds pass (at most 600), bound to the
  session as any ``start()`` in a request is; answers ``{"token", "job_id"}``.

There is no Flask-WTF on this app, so ``POST /asyncstate/cancel/<token>`` needs
``X-Requested-With`` only. Bench only: nothing here is part of the library.
"""

from __future__ import annotations

import os
import time
from typing import Any

import _common
import redis
from flask import Flask, request

from flask_asyncstate import AsyncState, JobContext

#: Longest a bench job may run (it is cancelled when the benchmark ends).
MAX_SECONDS = 600.0


#: ``CLIENT SETNAME`` of the sessions' connections (topologies.py tells them from the store's).
SESSIONS_CLIENT_NAME = "bench-sessions"


def store_client(sessions_url: str, cluster_nodes: list[tuple[str, int]] | None) -> Any:
    """The job store's client: the single server, or a ``RedisCluster`` on ``cluster_nodes``."""
    if cluster_nodes:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes])
    return redis.Redis.from_url(sessions_url)


def build_app(
    sessions_url: str,
    cluster_nodes: list[tuple[str, int]] | None,
    secret_key: str = _common.SECRET,
) -> tuple[Flask, AsyncState]:
    """The app and its extension: jobs on the single server or the cluster, sessions on the former."""
    from flask_session import Session

    app, ext = _common.make_app(
        "bench-topology",
        redis_client=store_client(sessions_url, cluster_nodes),
        secret_key=secret_key,
    )
    sessions = redis.BlockingConnectionPool.from_url(
        sessions_url, max_connections=100, timeout=5, client_name=SESSIONS_CLIENT_NAME
    )
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(connection_pool=sessions),
        SESSION_PERMANENT=False,
        SESSION_KEY_PREFIX=f"{_common.KEY_PREFIX}session:",
    )
    Session(app)

    @ext.job(name="bench_watch")
    def bench_watch(job: JobContext, seconds: float) -> dict[str, int]:
        """A job being watched: a progress report every 0.1 s until cancelled or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            step += 1
            job.progress(step, message=f"step {step:,}")
            if job.cancelled.wait(0.1):
                break
        return {"steps": step}

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.post("/bench/start")
    def bench_start() -> dict[str, str]:
        seconds = min(float(request.args.get("seconds", 60)), MAX_SECONDS)
        handle = bench_watch.start(seconds)
        return {"token": handle.token, "job_id": handle.id}

    return app, ext


def parse_nodes(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as a list of (host, port)."""
    nodes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        nodes.append((host, int(port)))
    return nodes


def create_app() -> Flask:
    sessions_url = os.environ.get("BENCH_SESSIONS_URL")
    if not sessions_url:
        raise RuntimeError(
            "bench/_topology_app.py needs BENCH_SESSIONS_URL (topologies.py sets it)"
        )
    nodes = parse_nodes(os.environ.get("BENCH_CLUSTER_NODES", ""))
    app, _ext = build_app(
        sessions_url, nodes or None, secret_key=os.environ.get("SECRET_KEY") or _common.SECRET
    )
    return app
